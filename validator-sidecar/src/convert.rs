//! Conversions at the gRPC edge: trust-bundle messages into domain types, and verdicts
//! into `ValidateToken` responses. Nothing past this module (and `answer`, which writes
//! the same responses without building them) sees a proto type.

use std::collections::BTreeMap;

use prost_types::Timestamp;
use tessera_common::UnixMillis;
use tessera_common::bundle::{
    BundleChange, BundleEvent, CredentialChange, Revision, SecretRotation, StandingKind,
    TrustBundle, ValidationPolicy,
};
use tessera_common::claims::{TokenClaims, TokenType};
use tessera_common::ids::KeyId;
use tessera_common::jwk::Jwk;
use tessera_common::keys::KeySchedule;
use tessera_common::revocation::{RevocationEntry, RevocationKind, RevocationSet};
use tessera_common::verify::Rejection;
use tessera_proto::v1 as pb;

use crate::cache::VerifiedToken;
use crate::validator::{TokenQuery, Verdict};

/// A bundle message the sidecar cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid {field}: {detail}")]
    Invalid { field: &'static str, detail: String },
}

fn invalid(field: &'static str, detail: impl std::fmt::Display) -> ConvertError {
    ConvertError::Invalid {
        field,
        detail: detail.to_string(),
    }
}

/// One update of the stream, in domain terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Snapshot(TrustBundle),
    Delta {
        revision: Revision,
        events: Vec<BundleEvent>,
    },
    Heartbeat {
        revision: Revision,
    },
}

/// Converts a stream message.
pub fn update_from_proto(update: pb::TrustBundleUpdate) -> Result<Update, ConvertError> {
    let revision = Revision(update.revision);
    let sent_at = update.sent_at.as_ref().map(millis).unwrap_or(UnixMillis(0));
    match update.kind.ok_or(ConvertError::Missing("kind"))? {
        pb::trust_bundle_update::Kind::Snapshot(snapshot) => {
            snapshot_from_proto(revision, snapshot).map(Update::Snapshot)
        }
        pb::trust_bundle_update::Kind::Delta(delta) => {
            let events = delta
                .changes
                .into_iter()
                .map(|change| event_from_proto(change, revision, sent_at))
                .collect::<Result<_, _>>()?;
            Ok(Update::Delta { revision, events })
        }
        pb::trust_bundle_update::Kind::Heartbeat(_) => Ok(Update::Heartbeat { revision }),
    }
}

fn snapshot_from_proto(
    revision: Revision,
    snapshot: pb::TrustBundleSnapshot,
) -> Result<TrustBundle, ConvertError> {
    let policy = policy_from_proto(snapshot.policy.ok_or(ConvertError::Missing("policy"))?);
    let mut keys = BTreeMap::new();
    for key in snapshot.keys {
        match key_from_proto(key) {
            Ok(schedule) => {
                keys.insert(schedule.kid.clone(), schedule);
            }
            // One unusable key must not cost the sidecar every other key.
            Err(error) => tracing::warn!(%error, "skipping a key of the snapshot"),
        }
    }
    let revocations = snapshot
        .revocations
        .into_iter()
        .map(revocation_from_proto)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TrustBundle {
        revision,
        keys,
        revocations: RevocationSet::from(revocations),
        policy,
    })
}

fn event_from_proto(
    change: pb::BundleChange,
    update_revision: Revision,
    at: UnixMillis,
) -> Result<BundleEvent, ConvertError> {
    use pb::bundle_change::Change;
    // An issuer that leaves the per-change revision unset commits the change at the
    // message's revision.
    let revision = if change.revision == 0 {
        update_revision
    } else {
        Revision(change.revision)
    };
    let change = match change.change.ok_or(ConvertError::Missing("change"))? {
        Change::KeyUpserted(key) => BundleChange::KeyUpserted {
            key: key_from_proto(key)?,
        },
        Change::KeyUnpublished(kid) => BundleChange::KeyUnpublished {
            kid: KeyId::new(kid).map_err(|error| invalid("key_unpublished", error))?,
        },
        Change::KeyRevoked(key) => {
            let mut key = key_from_proto(key)?;
            // A revoked key is revoked even if the message forgot the instant.
            key.revoked_at.get_or_insert(at);
            BundleChange::KeyRevoked { key }
        }
        Change::RevocationAdded(entry) => BundleChange::RevocationAdded {
            entry: revocation_from_proto(entry)?,
        },
        Change::PolicyChanged(policy) => BundleChange::PolicyChanged {
            policy: policy_from_proto(policy),
        },
        Change::CredentialChanged(change) => BundleChange::CredentialChanged {
            change: credential_from_proto(change),
        },
        Change::SecretRotated(change) => BundleChange::SecretRotated {
            change: SecretRotation {
                name: change.name,
                current_version: change.current_version,
                previous_version: (change.previous_version != 0).then_some(change.previous_version),
            },
        },
    };
    Ok(BundleEvent {
        revision,
        at,
        change,
    })
}

fn credential_from_proto(change: pb::CredentialChange) -> CredentialChange {
    let kind = match pb::CredentialKind::try_from(change.kind) {
        Ok(pb::CredentialKind::ServiceToken) => StandingKind::ServiceToken,
        Ok(pb::CredentialKind::WebhookToken) => StandingKind::WebhookToken,
        // An unknown kind is treated as an API key: dropping a cached answer by mistake
        // costs one issuer round trip, keeping one by mistake could keep a revoked key.
        _ => StandingKind::ApiKey,
    };
    CredentialChange {
        kind,
        credential_id: change.credential_id,
        tenant_id: change.tenant_id,
        state: change.state,
        grace_until: change.grace_until.as_ref().map(millis),
        expires_at: change.expires_at.as_ref().map_or(UnixMillis(0), millis),
    }
}

fn key_from_proto(key: pb::Key) -> Result<KeySchedule, ConvertError> {
    let kid = KeyId::new(key.kid).map_err(|error| invalid("kid", error))?;
    let public_jwk: Jwk = serde_json::from_str(&key.public_jwk_json)
        .map_err(|error| invalid("public_jwk_json", error))?;
    let revoked_at = key.revoked_at.as_ref().map(millis).or_else(|| {
        // State REVOKED without an instant: revoked since forever.
        (key.state == pb::KeyState::Revoked as i32).then_some(UnixMillis(0))
    });
    Ok(KeySchedule {
        kid,
        key_set: key
            .key_set
            .parse()
            .map_err(|error| invalid("key_set", error))?,
        algorithm: key
            .algorithm
            .parse()
            .map_err(|error| invalid("algorithm", error))?,
        created_at: key.created_at.as_ref().map_or(UnixMillis(0), millis),
        activates_at: key.activates_at.as_ref().map_or(UnixMillis(0), millis),
        deactivates_at: key.deactivates_at.as_ref().map(millis),
        verify_until: key.verify_until.as_ref().map(millis),
        revoked_at,
        public_jwk,
    })
}

fn revocation_from_proto(entry: pb::RevocationEntry) -> Result<RevocationEntry, ConvertError> {
    let kind = match pb::RevocationKind::try_from(entry.kind) {
        Ok(pb::RevocationKind::Jti) => RevocationKind::Jti,
        Ok(pb::RevocationKind::Session) => RevocationKind::Session,
        Ok(pb::RevocationKind::User) => RevocationKind::User,
        Ok(pb::RevocationKind::Tenant) => RevocationKind::Tenant,
        Ok(pb::RevocationKind::Family) => RevocationKind::Family,
        Ok(pb::RevocationKind::Key) => RevocationKind::Key,
        Ok(pb::RevocationKind::All) => RevocationKind::All,
        Ok(pb::RevocationKind::Unspecified) | Err(_) => {
            return Err(invalid("revocation kind", entry.kind));
        }
    };
    let revoked_at = entry
        .revoked_at
        .as_ref()
        .map(millis)
        .ok_or(ConvertError::Missing("revoked_at"))?;
    Ok(RevocationEntry {
        kind,
        value: entry.value,
        tenant_id: Some(entry.tenant_id).filter(|tenant| !tenant.is_empty()),
        revoked_at,
        // Without a drop instant the entry is kept (the bundle prunes it by policy).
        drop_after: entry
            .drop_after
            .as_ref()
            .map_or(UnixMillis(i64::MAX), millis),
    })
}

fn policy_from_proto(policy: pb::ValidationPolicy) -> ValidationPolicy {
    // A type this build does not know (from a newer issuer) cannot be asked for here:
    // skipped, like an unknown field.
    let token_lifetimes = policy
        .token_lifetimes
        .into_iter()
        .filter_map(|lifetime| {
            let token_type = lifetime.token_type.parse::<TokenType>().ok()?;
            Some((token_type, lifetime.max_ttl_seconds))
        })
        .collect();
    ValidationPolicy {
        issuer: policy.issuer,
        audiences: policy.audiences,
        leeway_seconds: policy.leeway_seconds,
        max_token_ttl_seconds: policy.max_token_ttl_seconds,
        token_lifetimes,
    }
}

pub(crate) fn millis(timestamp: &Timestamp) -> UnixMillis {
    UnixMillis(
        timestamp
            .seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(timestamp.nanos / 1_000_000)),
    )
}

pub(crate) fn timestamp(instant: UnixMillis) -> Timestamp {
    Timestamp {
        seconds: instant.0.div_euclid(1000),
        nanos: (instant.0.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Returns the protocol's reason code for `rejection`.
pub fn reason(rejection: Rejection) -> pb::Reason {
    match rejection {
        Rejection::Malformed => pb::Reason::Malformed,
        Rejection::TooLarge => pb::Reason::TooLarge,
        Rejection::UnknownKid => pb::Reason::UnknownKid,
        Rejection::AlgorithmMismatch => pb::Reason::AlgorithmMismatch,
        Rejection::BadSignature => pb::Reason::BadSignature,
        Rejection::Expired => pb::Reason::Expired,
        Rejection::NotYetValid => pb::Reason::NotYetValid,
        Rejection::WrongIssuer => pb::Reason::WrongIssuer,
        Rejection::WrongAudience => pb::Reason::WrongAudience,
        Rejection::WrongTokenType => pb::Reason::WrongTokenType,
        Rejection::Revoked => pb::Reason::Revoked,
        Rejection::KeyRevoked => pb::Reason::KeyRevoked,
        Rejection::InsufficientPermissions => pb::Reason::InsufficientPermissions,
        Rejection::WrongRole => pb::Reason::WrongRole,
        Rejection::BundleStale => pb::Reason::BundleStale,
        Rejection::LifetimeTooLong => pb::Reason::LifetimeTooLong,
        Rejection::KeyNotActive => pb::Reason::KeyNotActive,
        Rejection::WrongTenant => pb::Reason::WrongTenant,
        Rejection::UnknownTokenType => pb::Reason::UnknownTokenType,
    }
}

/// Returns the typed claims of a verified token: the claims every type carries, and the
/// access-only ones (role, session, MFA, features) for access tokens; a service token's
/// scopes are its permissions. Every claim of every type is in `claims_json`.
pub fn token_claims(token: &VerifiedToken) -> pb::TokenClaims {
    let token = &token.verified;
    let registered = token.claims.registered();
    let mut claims = pb::TokenClaims {
        subject: registered.sub.to_owned(),
        tenant_id: registered.tenant_id.to_owned(),
        role: token.claims.role().unwrap_or_default().to_owned(),
        permissions: token.claims.permissions().to_vec(),
        session_id: token.claims.session_id().unwrap_or_default().to_owned(),
        jti: registered.jti.to_owned(),
        expires_at: Some(timestamp(UnixMillis::from_secs(registered.exp))),
        issued_at: Some(timestamp(UnixMillis(registered.iat_ms))),
        issuer: registered.iss.to_owned(),
        audience: registered.aud.to_owned(),
        token_type: registered.token_type.to_owned(),
        mfa_verified: false,
        features: Vec::new(),
        kid: token.kid.clone(),
    };
    if let Some(access) = token.claims.as_access() {
        claims.mfa_verified = access.mfa_verified;
        claims.features = access.features.clone();
    }
    claims
}

/// Returns the `ValidateToken` response for `verdict`. The server writes its answers with
/// `crate::answer` instead, byte for byte what prost writes for this message (tested).
pub fn response(verdict: &Verdict) -> pb::ValidateTokenResponse {
    match verdict {
        Ok(token) => pb::ValidateTokenResponse {
            valid: true,
            reason: pb::Reason::Unspecified as i32,
            claims: Some(token_claims(token)),
            claims_json: token.verified.claims_json.clone(),
        },
        Err(rejection) => pb::ValidateTokenResponse {
            valid: false,
            reason: reason(*rejection) as i32,
            claims: None,
            claims_json: String::new(),
        },
    }
}

/// Returns the stream response for request `request_id` (the reference for
/// `crate::answer`, like [`response`]).
pub fn stream_response(request_id: u64, verdict: &Verdict) -> pb::ValidateStreamResponse {
    let pb::ValidateTokenResponse {
        valid,
        reason,
        claims,
        claims_json,
    } = response(verdict);
    pb::ValidateStreamResponse {
        request_id,
        valid,
        reason,
        claims,
        claims_json,
    }
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// Returns the token type a request asks for: `access` when empty, a typed rejection
/// when it names no type (the caller's mistake, answered like any other reason).
fn token_type(name: &str) -> Result<TokenType, Rejection> {
    match non_empty(name) {
        None => Ok(TokenType::Access),
        Some(name) => name.parse().map_err(|_| Rejection::UnknownTokenType),
    }
}

/// Returns the query of a `ValidateToken` request.
pub fn query(request: &pb::ValidateTokenRequest) -> Result<TokenQuery<'_>, Rejection> {
    Ok(TokenQuery {
        token: &request.token,
        audience: non_empty(&request.audience),
        required_permissions: &request.required_permissions,
        required_role: non_empty(&request.required_role),
        token_type: token_type(&request.token_type)?,
        tenant_id: non_empty(&request.tenant_id),
    })
}

/// Returns the query of a stream request.
pub fn stream_query(request: &pb::ValidateStreamRequest) -> Result<TokenQuery<'_>, Rejection> {
    Ok(TokenQuery {
        token: &request.token,
        audience: non_empty(&request.audience),
        required_permissions: &request.required_permissions,
        required_role: non_empty(&request.required_role),
        token_type: token_type(&request.token_type)?,
        tenant_id: non_empty(&request.tenant_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_maps_to_its_reason() {
        let table = [
            (Rejection::Malformed, "MALFORMED"),
            (Rejection::TooLarge, "TOO_LARGE"),
            (Rejection::UnknownKid, "UNKNOWN_KID"),
            (Rejection::AlgorithmMismatch, "ALGORITHM_MISMATCH"),
            (Rejection::BadSignature, "BAD_SIGNATURE"),
            (Rejection::Expired, "EXPIRED"),
            (Rejection::NotYetValid, "NOT_YET_VALID"),
            (Rejection::WrongIssuer, "WRONG_ISSUER"),
            (Rejection::WrongAudience, "WRONG_AUDIENCE"),
            (Rejection::WrongTokenType, "WRONG_TOKEN_TYPE"),
            (Rejection::Revoked, "REVOKED"),
            (Rejection::KeyRevoked, "KEY_REVOKED"),
            (
                Rejection::InsufficientPermissions,
                "INSUFFICIENT_PERMISSIONS",
            ),
            (Rejection::WrongRole, "WRONG_ROLE"),
            (Rejection::BundleStale, "BUNDLE_STALE"),
            (Rejection::LifetimeTooLong, "LIFETIME_TOO_LONG"),
            (Rejection::KeyNotActive, "KEY_NOT_ACTIVE"),
            (Rejection::WrongTenant, "WRONG_TENANT"),
            (Rejection::UnknownTokenType, "UNKNOWN_TOKEN_TYPE"),
        ];
        for (rejection, name) in table {
            assert_eq!(reason(rejection).as_str_name(), name);
            assert_eq!(rejection.as_str().to_uppercase(), name);
        }
    }

    #[test]
    fn the_requested_token_type_selects_the_pipelines_type_and_an_unknown_one_is_refused() {
        assert_eq!(token_type(""), Ok(TokenType::Access));
        for kind in TokenType::ALL {
            assert_eq!(token_type(kind.as_str()), Ok(kind));
        }
        for unknown in ["refresh", "Access", "at+jwt", "x"] {
            assert_eq!(
                token_type(unknown),
                Err(Rejection::UnknownTokenType),
                "{unknown}"
            );
        }
    }

    #[test]
    fn published_lifetimes_are_read_and_unknown_types_skipped() {
        let policy = policy_from_proto(pb::ValidationPolicy {
            issuer: "tessera".into(),
            audiences: vec![],
            leeway_seconds: 30,
            max_token_ttl_seconds: 900,
            token_lifetimes: vec![
                pb::TokenLifetime {
                    token_type: "reset".into(),
                    max_ttl_seconds: 600,
                },
                pb::TokenLifetime {
                    token_type: "otp".into(),
                    max_ttl_seconds: 300,
                },
            ],
        });
        assert_eq!(
            policy.max_lifetime(TokenType::Reset),
            std::time::Duration::from_secs(600)
        );
        assert_eq!(policy.token_lifetimes.len(), 1);
    }

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        for instant in [UnixMillis(0), UnixMillis(1_700_000_000_123), UnixMillis(-1)] {
            assert_eq!(millis(&timestamp(instant)), instant);
        }
    }

    #[test]
    fn revocation_entries_need_a_kind_and_an_instant() {
        let entry = pb::RevocationEntry {
            kind: pb::RevocationKind::User as i32,
            value: "u1".into(),
            tenant_id: String::new(),
            revoked_at: Some(timestamp(UnixMillis(5_000))),
            drop_after: None,
        };
        let converted = revocation_from_proto(entry.clone()).unwrap();
        assert_eq!(converted.tenant_id, None);
        assert_eq!(converted.revoked_at, UnixMillis(5_000));
        let unspecified = pb::RevocationEntry {
            kind: 0,
            ..entry.clone()
        };
        assert!(revocation_from_proto(unspecified).is_err());
        let no_instant = pb::RevocationEntry {
            revoked_at: None,
            ..entry
        };
        assert_eq!(
            revocation_from_proto(no_instant),
            Err(ConvertError::Missing("revoked_at"))
        );
    }
}
