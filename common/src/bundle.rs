//! The trust bundle: what a verifier holds (published keys, live revocations, policy) and
//! the changes the issuer streams to keep it current.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::claims::TokenType;
use crate::clock::UnixMillis;
use crate::ids::KeyId;
use crate::keys::{KeySchedule, KeySetName};
use crate::revocation::{RevocationEntry, RevocationSet};

/// A position in the issuer's event log. Revisions only grow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

/// The rules verifiers apply to every token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationPolicy {
    /// Expected `iss`.
    pub issuer: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Clock leeway for `exp` and `nbf`, seconds.
    pub leeway_seconds: u32,
    /// Longest access-token lifetime the issuer signs, seconds.
    pub max_token_ttl_seconds: u32,
    /// Longest lifetime of each token type, seconds. A type missing here (a bundle from
    /// an issuer that predates the field) falls back to `max_token_ttl_seconds` for
    /// access tokens and to [`TokenType::default_max_lifetime`] for the others; a type
    /// this build does not know is skipped when read.
    #[serde(default, deserialize_with = "known_token_types")]
    pub token_lifetimes: BTreeMap<TokenType, u32>,
}

/// Returns the longest lifetime of every token type: `max_access_ttl` for access tokens,
/// the DESIGN §4 default for the others. What the issuer publishes.
pub fn token_lifetimes(max_access_ttl: Duration) -> BTreeMap<TokenType, u32> {
    TokenType::ALL
        .into_iter()
        .map(|token_type| {
            let lifetime = match token_type {
                TokenType::Access => max_access_ttl,
                other => other.default_max_lifetime(),
            };
            (token_type, seconds(lifetime))
        })
        .collect()
}

fn seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

/// Reads the lifetime map, skipping types this build does not know (published by a newer
/// issuer): they cannot be asked for here, and refusing the whole bundle would stop
/// validation of every type this build does know.
fn known_token_types<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<TokenType, u32>, D::Error> {
    let named = BTreeMap::<String, u32>::deserialize(deserializer)?;
    Ok(named
        .into_iter()
        .filter_map(|(name, seconds)| Some((name.parse().ok()?, seconds)))
        .collect())
}

// === impl ValidationPolicy ===

impl ValidationPolicy {
    /// Returns the policy of an issuer named `issuer`, with every token type's longest
    /// lifetime (access tokens: `max_access_ttl`).
    pub fn new(
        issuer: String,
        audiences: Vec<String>,
        leeway: Duration,
        max_access_ttl: Duration,
    ) -> Self {
        ValidationPolicy {
            issuer,
            audiences,
            leeway_seconds: seconds(leeway),
            max_token_ttl_seconds: seconds(max_access_ttl),
            token_lifetimes: token_lifetimes(max_access_ttl),
        }
    }

    /// Returns the clock leeway.
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(u64::from(self.leeway_seconds))
    }

    /// Returns the longest lifetime of a token of `token_type`.
    pub fn max_lifetime(&self, token_type: TokenType) -> Duration {
        match self.token_lifetimes.get(&token_type) {
            Some(&seconds) => Duration::from_secs(u64::from(seconds)),
            None if token_type == TokenType::Access => {
                Duration::from_secs(u64::from(self.max_token_ttl_seconds))
            }
            None => token_type.default_max_lifetime(),
        }
    }

    /// Returns the longest lifetime of a token signed by `key_set` (zero for a set that
    /// signs no token).
    pub fn key_set_max_lifetime(&self, key_set: KeySetName) -> Duration {
        TokenType::signed_by(key_set)
            .map(|token_type| self.max_lifetime(token_type))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Returns how long a revocation entry must outlive its instant: the longest lifetime
    /// of any token type any key set signs, plus the leeway. An entry names a user,
    /// session, tenant… whose tokens may be of any type, so it lives as long as the
    /// longest-lived of them (a 24 h email-verification token, not a 15 min access token).
    ///
    /// Action links are left out: one is honoured only by the issuer's conditional write
    /// on its single-use record, which an emergency invalidates for good, so verifiers need
    /// not keep every revocation entry for an action link's seven days. (A `user` or
    /// `session` entry stops that user's links for the horizon, not for their whole life.)
    pub fn revocation_horizon(&self) -> Duration {
        let longest = TokenType::ALL
            .into_iter()
            .filter(|token_type| *token_type != TokenType::Action)
            .map(|token_type| self.max_lifetime(token_type))
            .max()
            .unwrap_or(Duration::ZERO);
        longest.saturating_add(self.leeway())
    }
}

/// One committed change of the bundle, as recorded in the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BundleChange {
    /// A key was published, or its schedule changed.
    KeyUpserted { key: KeySchedule },
    /// A key passed its overlap window and is no longer published.
    KeyUnpublished { kid: KeyId },
    /// A key was revoked: its tokens are rejected from now on.
    KeyRevoked { key: KeySchedule },
    /// A revocation entry was added.
    RevocationAdded { entry: RevocationEntry },
    /// The validation policy changed.
    PolicyChanged { policy: ValidationPolicy },
    /// A standing opaque credential (API key, service token, webhook token) stopped being
    /// valid, or soon will: a verifier caching answers for it drops them by id. Public
    /// fields only (never the secret, its hash or the pepper). Not part of the bundle
    /// itself: applying it only advances the revision. Read under its first name too,
    /// so event logs written before service and webhook tokens existed still load.
    #[serde(alias = "api_key_changed")]
    CredentialChanged { change: CredentialChange },
    /// A managed secret's stages changed (rotation finished, rollback, put, emergency
    /// revocation of `previous`): a verifier caching its value fetches it again. Names and
    /// versions only, never a value. Not part of the bundle itself.
    SecretRotated { change: SecretRotation },
}

/// What [`BundleChange::SecretRotated`] says about one secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRotation {
    pub name: String,
    /// The version now `current`.
    pub current_version: u64,
    /// The version still valid as `previous`, if any.
    pub previous_version: Option<u64>,
}

/// The standing opaque credentials a verifier may cache answers for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StandingKind {
    /// `tbk_`. The default, for events recorded when API keys were the only kind.
    #[default]
    ApiKey,
    /// `tbs_`.
    ServiceToken,
    /// `tbw_`.
    WebhookToken,
}

/// What [`BundleChange::CredentialChanged`] says about one credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialChange {
    #[serde(default)]
    pub kind: StandingKind,
    /// The credential's public id.
    #[serde(alias = "key_id")]
    pub credential_id: String,
    pub tenant_id: String,
    /// `expiring`, `rotated`, `revoked` or `expired`.
    pub state: String,
    /// For `rotated`: until when the key still works.
    pub grace_until: Option<UnixMillis>,
    pub expires_at: UnixMillis,
}

/// A change together with the revision it committed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEvent {
    pub revision: Revision,
    pub at: UnixMillis,
    pub change: BundleChange,
}

/// Everything a verifier needs, at one revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    pub revision: Revision,
    /// Published keys, and revoked keys until their tokens have all expired.
    pub keys: BTreeMap<KeyId, KeySchedule>,
    pub revocations: RevocationSet,
    pub policy: ValidationPolicy,
}

impl TrustBundle {
    /// Returns an empty bundle at revision 0 with `policy`.
    pub fn empty(policy: ValidationPolicy) -> Self {
        TrustBundle {
            revision: Revision(0),
            keys: BTreeMap::new(),
            revocations: RevocationSet::default(),
            policy,
        }
    }

    /// Applies `event` if it is newer than the bundle; returns whether it was applied.
    pub fn apply(&mut self, event: &BundleEvent) -> bool {
        if event.revision <= self.revision {
            return false;
        }
        match &event.change {
            BundleChange::KeyUpserted { key } | BundleChange::KeyRevoked { key } => {
                self.keys.insert(key.kid.clone(), key.clone());
            }
            BundleChange::KeyUnpublished { kid } => {
                self.keys.remove(kid);
            }
            BundleChange::RevocationAdded { entry } => self.revocations.insert(entry.clone()),
            BundleChange::PolicyChanged { policy } => self.policy = policy.clone(),
            BundleChange::CredentialChanged { .. } | BundleChange::SecretRotated { .. } => {}
        }
        self.revision = event.revision;
        true
    }

    /// Forgets revoked keys and revocation entries that can no longer match a live token.
    /// A revoked key is kept as long as a token of its set could live, so its tokens stay
    /// `KEY_REVOKED` rather than an unknown kid (which would start a resync).
    pub fn prune(&mut self, now: UnixMillis) {
        let policy = &self.policy;
        self.keys.retain(|_, key| {
            let lifetime = policy
                .key_set_max_lifetime(key.key_set)
                .saturating_add(policy.leeway());
            key.revoked_at
                .is_none_or(|revoked_at| revoked_at >= now.minus(lifetime))
        });
        self.revocations.prune(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ValidationPolicy {
        ValidationPolicy::new(
            "tessera".into(),
            vec!["tessera-api".into()],
            Duration::from_secs(30),
            Duration::from_secs(900),
        )
    }

    #[test]
    fn the_revocation_horizon_covers_the_longest_lived_token_type_of_every_key_set() {
        let policy = policy();
        assert_eq!(
            policy.max_lifetime(TokenType::Access),
            Duration::from_secs(900)
        );
        assert_eq!(
            policy.key_set_max_lifetime(KeySetName::Action),
            Duration::from_secs(7 * 86_400)
        );
        // Not 15 min 30 s: an email-verification token lives 24 h, and a user revoked
        // now must stay revoked for as long as such a token issued before could live.
        // Not seven days either: action links are held back by their single-use records.
        assert_eq!(
            policy.revocation_horizon(),
            Duration::from_secs(86_400 + 30)
        );
    }

    #[test]
    fn a_policy_without_lifetimes_falls_back_and_unknown_types_are_skipped() {
        // As written by an issuer that predates `token_lifetimes`, with a longer access
        // bound, and as written by a newer one that knows a type this build does not.
        let old: ValidationPolicy = serde_json::from_value(serde_json::json!({
            "issuer": "tessera", "audiences": [], "leeway_seconds": 30,
            "max_token_ttl_seconds": 1_800,
        }))
        .unwrap();
        assert_eq!(
            old.max_lifetime(TokenType::Access),
            Duration::from_secs(1_800)
        );
        assert_eq!(
            old.max_lifetime(TokenType::Reset),
            Duration::from_secs(3_600)
        );
        assert_eq!(old.revocation_horizon(), Duration::from_secs(86_430));
        let newer: ValidationPolicy = serde_json::from_value(serde_json::json!({
            "issuer": "tessera", "audiences": [], "leeway_seconds": 30,
            "max_token_ttl_seconds": 900,
            "token_lifetimes": {"access": 600, "otp": 300},
        }))
        .unwrap();
        assert_eq!(
            newer.max_lifetime(TokenType::Access),
            Duration::from_secs(600)
        );
        assert_eq!(newer.token_lifetimes.len(), 1);
        let round_trip: ValidationPolicy =
            serde_json::from_str(&serde_json::to_string(&policy()).unwrap()).unwrap();
        assert_eq!(round_trip, policy());
    }

    #[test]
    fn revoked_keys_are_kept_while_a_token_of_their_set_can_live() {
        let mut bundle = TrustBundle::empty(policy());
        let revoked_at = UnixMillis::from_secs(1_000_000);
        for (kid, key_set) in [
            ("access-1", KeySetName::Access),
            ("action-1", KeySetName::Action),
        ] {
            let kid = KeyId::new(kid).unwrap();
            let key = KeySchedule {
                kid: kid.clone(),
                key_set,
                algorithm: crate::keys::Algorithm::EdDsa,
                created_at: UnixMillis(0),
                activates_at: UnixMillis(0),
                deactivates_at: None,
                verify_until: None,
                revoked_at: Some(revoked_at),
                public_jwk: crate::jwk::Jwk {
                    kty: "OKP".into(),
                    kid: kid.to_string(),
                    alg: "EdDSA".into(),
                    use_: "sig".into(),
                    n: None,
                    e: None,
                    crv: Some("Ed25519".into()),
                    x: Some(String::new()),
                    y: None,
                },
            };
            bundle.keys.insert(kid, key);
        }
        // Both sets sign a 24 h token type (service, email verification): a revoked key
        // outlives the 15 min access bound, so its tokens stay KEY_REVOKED.
        bundle.prune(revoked_at.plus(Duration::from_secs(3_600)));
        let kept: Vec<_> = bundle.keys.keys().map(KeyId::as_str).collect();
        assert_eq!(kept, ["access-1", "action-1"]);
        bundle.prune(revoked_at.plus(Duration::from_secs(86_431)));
        // An action link lives up to seven days: its set's revoked key stays that long.
        let kept: Vec<_> = bundle.keys.keys().map(KeyId::as_str).collect();
        assert_eq!(kept, ["action-1"]);
        bundle.prune(revoked_at.plus(Duration::from_secs(7 * 86_400 + 31)));
        assert!(bundle.keys.is_empty());
    }
}
