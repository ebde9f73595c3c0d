//! Every audited action and outcome, each with the name stored in the audit log.
//!
//! The names are part of the hash chain of rows already written: a name here never
//! changes and a variant is never removed (a retired action stays, so old rows still
//! parse). A new kind of credential adds its actions here, and nowhere else spells them.

use tessera_common::revocation::RevocationKind;

/// What an audit event records. [`AuditAction::as_str`] is the one table of stored names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A call was refused: bad or missing credential (one summary row per burst), scope
    /// or tenant.
    AuthDenied,
    /// An API client was created.
    ClientCreate,
    /// An API client was disabled.
    ClientDisable,
    /// A login session started.
    SessionCreate,
    /// A rotated refresh token was presented again; its family was revoked.
    RefreshReuseDetected,
    /// A revocation entry of each kind was filed (`revoke.<kind>`).
    RevokeJti,
    RevokeSession,
    RevokeUser,
    RevokeTenant,
    RevokeFamily,
    RevokeKey,
    RevokeAll,
    /// A signing key was created.
    KeyCreate,
    /// A signing key was revoked (compromised, or replaced in an emergency).
    KeyRevoke,
    /// A signing key was retired (unpublished after its verification window).
    KeyRetire,
    /// A key set was rotated by an operator.
    KeyRotate,
    /// A key set was rotated in emergency mode (its keys revoked).
    KeyRotateEmergency,
    /// A key set was rotated by the scheduler (or a scheduled run failed).
    KeyRotateScheduled,
    /// A tenant's webhook secrets were handed to a caller (the secrets are never logged).
    WebhookSecretsRead,
    /// A secret was added to the inventory (issue 12; its name, never a value).
    SecretRegister,
    /// A step of a secret's rotation (`create`, `set`, `test`, `finish`, `discard`,
    /// `revoke_previous`), with the version; a failed step has outcome `failed`.
    SecretRotate,
    /// An operator recorded a new value of a secret (its version, never the value).
    SecretPut,
    /// A secret's previous version was made current again.
    SecretRollback,
    /// A secret's value was handed to a caller (name and versions only).
    SecretRead,
    /// A secret passed 80 % of its cadence (recorded once per version).
    SecretWarning,
    /// An API key was created (its id, never its secret).
    ApiKeyCreate,
    /// An API key was rotated: a successor made, the key valid until its grace ends.
    ApiKeyRotate,
    /// An API key was revoked.
    ApiKeyRevoke,
    /// An API key entered the warning window before its expiry (once per key).
    ApiKeyExpiring,
    /// An API key passed its expiry and was deactivated.
    ApiKeyExpire,
    /// An API key's rate limits were replaced.
    ApiKeyLimits,
    /// A service identity was created.
    ServiceIdentityCreate,
    /// A service identity was disabled (its live tokens revoked with it).
    ServiceIdentityDisable,
    /// A service token was issued (its id, never the token).
    ServiceTokenIssue,
    /// A confirmed service token revoked the token it replaces.
    ServiceTokenRotate,
    /// A service token was revoked.
    ServiceTokenRevoke,
    /// A webhook token was issued.
    WebhookTokenIssue,
    /// A webhook token was revoked.
    WebhookTokenRevoke,
    /// A one-time challenge (OTP or magic link) was started (its id; never the code or
    /// the destination).
    ChallengeStart,
    /// A challenge was verified (once).
    ChallengeVerified,
    /// A challenge's last attempt failed: it is dead.
    ChallengeExhausted,
    /// Live challenges and one-time tokens were invalidated in an emergency.
    ChallengeEmergencyInvalidate,
    /// A delivery provider was disabled at runtime.
    ProviderDisable,
    /// A delivery provider was enabled again.
    ProviderEnable,
    /// A delivery passed over its primary provider (disabled or failing) to the backup.
    ProviderFailover,
    /// A password-reset token was issued (the user's older ones superseded).
    PasswordResetIssue,
    /// A password reset was completed: the change recorded, the user's earlier tokens
    /// revoked.
    PasswordChange,
    /// A tenant's action-link settings (base URL, lifetimes) were replaced.
    ActionSettingsSet,
}

impl AuditAction {
    /// Every action, in a fixed order.
    pub const ALL: [AuditAction; 48] = [
        AuditAction::AuthDenied,
        AuditAction::ClientCreate,
        AuditAction::ClientDisable,
        AuditAction::SessionCreate,
        AuditAction::RefreshReuseDetected,
        AuditAction::RevokeJti,
        AuditAction::RevokeSession,
        AuditAction::RevokeUser,
        AuditAction::RevokeTenant,
        AuditAction::RevokeFamily,
        AuditAction::RevokeKey,
        AuditAction::RevokeAll,
        AuditAction::KeyCreate,
        AuditAction::KeyRevoke,
        AuditAction::KeyRetire,
        AuditAction::KeyRotate,
        AuditAction::KeyRotateEmergency,
        AuditAction::KeyRotateScheduled,
        AuditAction::WebhookSecretsRead,
        AuditAction::SecretRegister,
        AuditAction::SecretRotate,
        AuditAction::SecretPut,
        AuditAction::SecretRollback,
        AuditAction::SecretRead,
        AuditAction::SecretWarning,
        AuditAction::ApiKeyCreate,
        AuditAction::ApiKeyRotate,
        AuditAction::ApiKeyRevoke,
        AuditAction::ApiKeyExpiring,
        AuditAction::ApiKeyExpire,
        AuditAction::ApiKeyLimits,
        AuditAction::ServiceIdentityCreate,
        AuditAction::ServiceIdentityDisable,
        AuditAction::ServiceTokenIssue,
        AuditAction::ServiceTokenRotate,
        AuditAction::ServiceTokenRevoke,
        AuditAction::WebhookTokenIssue,
        AuditAction::WebhookTokenRevoke,
        AuditAction::ChallengeStart,
        AuditAction::ChallengeVerified,
        AuditAction::ChallengeExhausted,
        AuditAction::ChallengeEmergencyInvalidate,
        AuditAction::ProviderDisable,
        AuditAction::ProviderEnable,
        AuditAction::ProviderFailover,
        AuditAction::PasswordResetIssue,
        AuditAction::PasswordChange,
        AuditAction::ActionSettingsSet,
    ];

    /// Returns the name stored in the audit log (a dotted verb). Never change one: rows
    /// already written hash these exact bytes.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::AuthDenied => "auth.denied",
            AuditAction::ClientCreate => "client.create",
            AuditAction::ClientDisable => "client.disable",
            AuditAction::SessionCreate => "session.create",
            AuditAction::RefreshReuseDetected => "refresh.reuse_detected",
            AuditAction::RevokeJti => "revoke.jti",
            AuditAction::RevokeSession => "revoke.session",
            AuditAction::RevokeUser => "revoke.user",
            AuditAction::RevokeTenant => "revoke.tenant",
            AuditAction::RevokeFamily => "revoke.family",
            AuditAction::RevokeKey => "revoke.key",
            AuditAction::RevokeAll => "revoke.all",
            AuditAction::KeyCreate => "key.create",
            AuditAction::KeyRevoke => "key.revoke",
            AuditAction::KeyRetire => "key.retire",
            AuditAction::KeyRotate => "key.rotate",
            AuditAction::KeyRotateEmergency => "key.rotate.emergency",
            AuditAction::KeyRotateScheduled => "key.rotate.scheduled",
            AuditAction::WebhookSecretsRead => "webhook.secrets.read",
            AuditAction::SecretRegister => "secret.register",
            AuditAction::SecretRotate => "secret.rotate",
            AuditAction::SecretPut => "secret.put",
            AuditAction::SecretRollback => "secret.rollback",
            AuditAction::SecretRead => "secret.read",
            AuditAction::SecretWarning => "secret.warning",
            AuditAction::ApiKeyCreate => "apikey.create",
            AuditAction::ApiKeyRotate => "apikey.rotate",
            AuditAction::ApiKeyRevoke => "apikey.revoke",
            AuditAction::ApiKeyExpiring => "apikey.expiring",
            AuditAction::ApiKeyExpire => "apikey.expire",
            AuditAction::ServiceIdentityCreate => "service.identity.created",
            AuditAction::ServiceIdentityDisable => "service.identity.disabled",
            AuditAction::ServiceTokenIssue => "service.token.issued",
            AuditAction::ServiceTokenRotate => "service.token.rotated",
            AuditAction::ServiceTokenRevoke => "service.token.revoked",
            AuditAction::WebhookTokenIssue => "webhook.token.issued",
            AuditAction::WebhookTokenRevoke => "webhook.token.revoked",
            AuditAction::ChallengeStart => "challenge.start",
            AuditAction::ChallengeVerified => "challenge.verified",
            AuditAction::ChallengeExhausted => "challenge.exhausted",
            AuditAction::ChallengeEmergencyInvalidate => "challenge.emergency_invalidate",
            AuditAction::ProviderDisable => "provider.disabled",
            AuditAction::ProviderEnable => "provider.enabled",
            AuditAction::ProviderFailover => "provider.failover",
            AuditAction::PasswordResetIssue => "password.reset.issued",
            AuditAction::PasswordChange => "password.changed",
            AuditAction::ActionSettingsSet => "action.settings.set",
            AuditAction::ApiKeyLimits => "apikey.limits",
        }
    }

    /// Returns the action stored as `name`, if this version knows it.
    pub fn from_name(name: &str) -> Option<AuditAction> {
        AuditAction::ALL
            .into_iter()
            .find(|action| action.as_str() == name)
    }

    /// Returns the action of filing a revocation entry of `kind`.
    pub const fn revocation(kind: RevocationKind) -> AuditAction {
        match kind {
            RevocationKind::Jti => AuditAction::RevokeJti,
            RevocationKind::Session => AuditAction::RevokeSession,
            RevocationKind::User => AuditAction::RevokeUser,
            RevocationKind::Tenant => AuditAction::RevokeTenant,
            RevocationKind::Family => AuditAction::RevokeFamily,
            RevocationKind::Key => AuditAction::RevokeKey,
            RevocationKind::All => AuditAction::RevokeAll,
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditOutcome {
    /// It was done.
    Ok,
    /// It was refused (authorization, reuse detection).
    Denied,
    /// It was attempted and failed (a scheduled rotation that could not commit).
    Failed,
}

impl AuditOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [AuditOutcome; 3] =
        [AuditOutcome::Ok, AuditOutcome::Denied, AuditOutcome::Failed];

    /// Returns the name stored in the audit log. Never change one (see [`AuditAction::as_str`]).
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
        }
    }

    /// Returns the outcome stored as `name`, if this version knows it.
    pub fn from_name(name: &str) -> Option<AuditOutcome> {
        AuditOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored names of every action written before actions were typed, byte for byte:
    /// rows holding them are hash-chained, so none may change.
    #[test]
    fn stored_names_of_existing_actions_never_change() {
        let expected = [
            "auth.denied",
            "client.create",
            "client.disable",
            "session.create",
            "refresh.reuse_detected",
            "revoke.jti",
            "revoke.session",
            "revoke.user",
            "revoke.tenant",
            "revoke.family",
            "revoke.key",
            "revoke.all",
            "key.create",
            "key.revoke",
            "key.retire",
            "key.rotate",
            "key.rotate.emergency",
            "key.rotate.scheduled",
        ];
        let names: Vec<&str> = AuditAction::ALL
            .iter()
            .map(|action| action.as_str())
            .collect();
        // Actions added later follow the ones that existed before typing.
        assert_eq!(names[..expected.len()], expected);
        let outcomes: Vec<&str> = AuditOutcome::ALL
            .iter()
            .map(|outcome| outcome.as_str())
            .collect();
        assert_eq!(outcomes, ["ok", "denied", "failed"]);
    }

    #[test]
    fn names_are_unique_and_parse_back() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::from_name(action.as_str()), Some(action));
        }
        let mut names: Vec<&str> = AuditAction::ALL
            .iter()
            .map(|action| action.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AuditAction::ALL.len());
        for outcome in AuditOutcome::ALL {
            assert_eq!(AuditOutcome::from_name(outcome.as_str()), Some(outcome));
        }
        assert_eq!(AuditAction::from_name("key.unknown"), None);
        assert_eq!(AuditOutcome::from_name("maybe"), None);
    }

    /// A revocation's action is `revoke.<kind>` for every kind, as the string built from
    /// the kind's name was before.
    #[test]
    fn revocation_actions_keep_the_kind_name() {
        for kind in RevocationKind::ALL {
            assert_eq!(
                AuditAction::revocation(kind).as_str(),
                format!("revoke.{}", kind.as_str())
            );
        }
    }
}
