//! Key vocabulary: key sets, algorithms, lifecycle states, the schedule of a key (what
//! verifiers receive for a published key) and each set's rotation policy.
//!
//! Two kinds of key set share this model: the JWS sets (`access`, `action`), whose public
//! keys are published in the JWKS and the trust bundle, and the HMAC set (`webhook`),
//! whose keys are symmetric secrets that never leave the issuer (`KeySetName::is_published`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::ids::KeyId;
use crate::jwk::Jwk;

/// A family of keys with one purpose and one rotation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySetName {
    /// Signs JWT access tokens.
    Access,
    /// Signs action links, password-reset and email-verification tokens.
    Action,
    /// MACs webhook payloads (HMAC-SHA256). Symmetric: never published.
    Webhook,
}

impl KeySetName {
    /// Every key set, in a stable order.
    pub const ALL: [KeySetName; 3] = [KeySetName::Access, KeySetName::Action, KeySetName::Webhook];

    /// The sets whose public keys verifiers receive (JWKS, trust bundle), in a stable order.
    pub const PUBLISHED: [KeySetName; 2] = [KeySetName::Access, KeySetName::Action];

    /// Returns the wire and database name.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeySetName::Access => "access",
            KeySetName::Action => "action",
            KeySetName::Webhook => "webhook",
        }
    }

    /// Returns true when the set's keys are asymmetric and their public halves go to
    /// verifiers. An HMAC key has no public half: publishing it would hand out the secret.
    pub const fn is_published(self) -> bool {
        match self {
            KeySetName::Access | KeySetName::Action => true,
            KeySetName::Webhook => false,
        }
    }

    /// Returns true when keys of this set may use `algorithm`: the JWS sets sign with an
    /// asymmetric algorithm only (a verifier must never need the signing secret), the
    /// HMAC set with HS256 only.
    pub const fn allows(self, algorithm: Algorithm) -> bool {
        self.is_published() != algorithm.is_symmetric()
    }
}

impl std::str::FromStr for KeySetName {
    type Err = UnknownName;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "access" => Ok(KeySetName::Access),
            "action" => Ok(KeySetName::Action),
            "webhook" => Ok(KeySetName::Webhook),
            other => Err(UnknownName {
                kind: "key set",
                value: other.chars().take(64).collect(),
            }),
        }
    }
}

impl std::fmt::Display for KeySetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that matched no known variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

/// An algorithm Tessera signs or MACs with. Each key is pinned to exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// HMAC with SHA-256 and a 256-bit secret (webhook payloads; never a JWS verifiers
    /// accept).
    #[serde(rename = "HS256")]
    Hs256,
}

impl Algorithm {
    /// Returns the JOSE `alg` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Hs256 => "HS256",
        }
    }

    /// Returns true for a symmetric (MAC) algorithm, whose key must stay secret.
    pub const fn is_symmetric(self) -> bool {
        matches!(self, Algorithm::Hs256)
    }
}

impl std::str::FromStr for Algorithm {
    type Err = UnknownName;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "RS256" => Ok(Algorithm::Rs256),
            "ES256" => Ok(Algorithm::Es256),
            "EdDSA" => Ok(Algorithm::EdDsa),
            "HS256" => Ok(Algorithm::Hs256),
            other => Err(UnknownName {
                kind: "algorithm",
                value: other.chars().take(64).collect(),
            }),
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a key stands in its lifecycle at some instant. Each variant carries only what
/// that state needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published, signs from `activates_at`.
    Pending { activates_at: UnixMillis },
    /// The signer of its set since `since`.
    Active { since: UnixMillis },
    /// Verify-only until `verify_until`.
    Retiring { verify_until: UnixMillis },
    /// Unpublished since `since`; kept for audit only.
    Retired { since: UnixMillis },
    /// Compromised or withdrawn at `at`: every token it signed is rejected.
    Revoked { at: UnixMillis },
}

impl KeyState {
    /// Returns the lowercase state name used in the CLI, logs and metrics.
    pub const fn name(&self) -> &'static str {
        match self {
            KeyState::Pending { .. } => "pending",
            KeyState::Active { .. } => "active",
            KeyState::Retiring { .. } => "retiring",
            KeyState::Retired { .. } => "retired",
            KeyState::Revoked { .. } => "revoked",
        }
    }

    /// Returns true when verifiers should hold the key (pending, active or retiring).
    pub const fn is_published(&self) -> bool {
        matches!(
            self,
            KeyState::Pending { .. } | KeyState::Active { .. } | KeyState::Retiring { .. }
        )
    }
}

/// The public, schedule-carrying description of a key: what the trust bundle carries and
/// what the issuer stores next to the wrapped private key.
///
/// The state is not stored: it is a function of the schedule and the instant asked about
/// (`state_at`), so a key becomes active at `activates_at` on every replica and every
/// sidecar without any write or message at that instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySchedule {
    pub kid: KeyId,
    pub key_set: KeySetName,
    pub algorithm: Algorithm,
    pub created_at: UnixMillis,
    /// First instant the key signs.
    pub activates_at: UnixMillis,
    /// First instant a successor signs instead; `None` while no successor is scheduled.
    pub deactivates_at: Option<UnixMillis>,
    /// End of the overlap window; set together with `deactivates_at`.
    pub verify_until: Option<UnixMillis>,
    /// Set when the key is revoked; overrides every other state.
    pub revoked_at: Option<UnixMillis>,
    pub public_jwk: Jwk,
}

impl KeySchedule {
    /// Returns the key's state at `now`.
    pub fn state_at(&self, now: UnixMillis) -> KeyState {
        if let Some(at) = self.revoked_at {
            return KeyState::Revoked { at };
        }
        if now < self.activates_at {
            return KeyState::Pending {
                activates_at: self.activates_at,
            };
        }
        match (self.deactivates_at, self.verify_until) {
            (Some(deactivates_at), Some(verify_until)) if now >= deactivates_at => {
                if now < verify_until {
                    KeyState::Retiring { verify_until }
                } else {
                    KeyState::Retired {
                        since: verify_until,
                    }
                }
            }
            _ => KeyState::Active {
                since: self.activates_at,
            },
        }
    }
}

/// The rotation policy of one key set (DESIGN §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySetPolicy {
    pub algorithm: Algorithm,
    /// A key signs for this long before its successor takes over.
    pub rotate_every: Duration,
    /// A replaced key keeps verifying this long; ≥ `max_token_ttl`.
    pub overlap: Duration,
    /// A successor is published this long before it signs.
    pub prepublish: Duration,
    /// The longest lifetime of a token signed by this set.
    pub max_token_ttl: Duration,
}

/// A policy that cannot be used: tokens would outlive their key, a successor would never
/// be prepublished, or the algorithm does not fit the set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "key set `{key_set}`: overlap ({overlap_secs} s) is shorter than the longest token lifetime ({max_ttl_secs} s); tokens would outlive their key"
    )]
    OverlapTooShort {
        key_set: KeySetName,
        overlap_secs: u64,
        max_ttl_secs: u64,
    },
    #[error(
        "key set `{key_set}`: prepublish ({prepublish_secs} s) must be shorter than the rotation interval ({rotate_every_secs} s)"
    )]
    PrepublishTooLong {
        key_set: KeySetName,
        prepublish_secs: u64,
        rotate_every_secs: u64,
    },
    #[error("key set `{key_set}`: rotation interval must be positive")]
    ZeroInterval { key_set: KeySetName },
    #[error("key set `{key_set}`: algorithm {algorithm} is not allowed (allowed: {allowed})")]
    AlgorithmNotAllowed {
        key_set: KeySetName,
        algorithm: Algorithm,
        allowed: &'static str,
    },
}

/// The part of a policy a [`PolicyError`] is about, so configuration can name its field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicySetting {
    Algorithm,
    RotateEvery,
    Overlap,
    Prepublish,
}

impl PolicyError {
    /// Returns the setting to change to fix the policy.
    pub const fn setting(&self) -> PolicySetting {
        match self {
            PolicyError::OverlapTooShort { .. } => PolicySetting::Overlap,
            PolicyError::PrepublishTooLong { .. } => PolicySetting::Prepublish,
            PolicyError::ZeroInterval { .. } => PolicySetting::RotateEvery,
            PolicyError::AlgorithmNotAllowed { .. } => PolicySetting::Algorithm,
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl KeySetPolicy {
    /// Returns the default policy of `key_set` (DESIGN §3, the seeds'): `access` and
    /// `action` rotate every 90 days with a 7-day overlap (15-minute access tokens,
    /// 24-hour action tokens), `webhook` every 30 days with a 3-day overlap; every set
    /// prepublishes its successor 1 hour ahead.
    pub const fn default_for(key_set: KeySetName) -> Self {
        match key_set {
            KeySetName::Access => KeySetPolicy {
                algorithm: Algorithm::Rs256,
                rotate_every: Duration::from_secs(90 * DAY.as_secs()),
                overlap: Duration::from_secs(7 * DAY.as_secs()),
                prepublish: HOUR,
                max_token_ttl: Duration::from_secs(15 * 60),
            },
            KeySetName::Action => KeySetPolicy {
                // Email verification links live 24 h (DESIGN §4).
                max_token_ttl: DAY,
                ..KeySetPolicy::default_for(KeySetName::Access)
            },
            KeySetName::Webhook => KeySetPolicy {
                algorithm: Algorithm::Hs256,
                rotate_every: Duration::from_secs(30 * DAY.as_secs()),
                overlap: Duration::from_secs(3 * DAY.as_secs()),
                prepublish: HOUR,
                // A receiver checks a delivery's signature when it arrives; retried
                // deliveries are signed again, so an hour covers any one attempt.
                max_token_ttl: HOUR,
            },
        }
    }

    /// Refuses a policy under which a token could outlive its key, or whose algorithm
    /// does not fit the set.
    pub fn validate(&self, key_set: KeySetName) -> Result<(), PolicyError> {
        if !key_set.allows(self.algorithm) {
            return Err(PolicyError::AlgorithmNotAllowed {
                key_set,
                algorithm: self.algorithm,
                allowed: if key_set.is_published() {
                    "RS256, ES256, EdDSA"
                } else {
                    "HS256"
                },
            });
        }
        if self.rotate_every.is_zero() {
            return Err(PolicyError::ZeroInterval { key_set });
        }
        if self.overlap < self.max_token_ttl {
            return Err(PolicyError::OverlapTooShort {
                key_set,
                overlap_secs: self.overlap.as_secs(),
                max_ttl_secs: self.max_token_ttl.as_secs(),
            });
        }
        if self.prepublish >= self.rotate_every {
            return Err(PolicyError::PrepublishTooLong {
                key_set,
                prepublish_secs: self.prepublish.as_secs(),
                rotate_every_secs: self.rotate_every.as_secs(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> KeySchedule {
        KeySchedule {
            kid: KeyId::new("k1").unwrap(),
            key_set: KeySetName::Access,
            algorithm: Algorithm::Es256,
            created_at: UnixMillis(0),
            activates_at: UnixMillis(100),
            deactivates_at: Some(UnixMillis(200)),
            verify_until: Some(UnixMillis(300)),
            revoked_at: None,
            public_jwk: Jwk {
                kty: "EC".into(),
                kid: "k1".into(),
                alg: "ES256".into(),
                use_: "sig".into(),
                n: None,
                e: None,
                crv: Some("P-256".into()),
                x: Some(String::new()),
                y: Some(String::new()),
            },
        }
    }

    #[test]
    fn state_follows_the_schedule() {
        let key = schedule();
        assert_eq!(key.state_at(UnixMillis(99)).name(), "pending");
        assert_eq!(key.state_at(UnixMillis(100)).name(), "active");
        assert_eq!(key.state_at(UnixMillis(200)).name(), "retiring");
        assert_eq!(key.state_at(UnixMillis(300)).name(), "retired");
        let revoked = KeySchedule {
            revoked_at: Some(UnixMillis(150)),
            ..key
        };
        assert_eq!(revoked.state_at(UnixMillis(99)).name(), "revoked");
    }

    #[test]
    fn policy_refuses_overlap_shorter_than_token_lifetime() {
        let mut policy = KeySetPolicy::default_for(KeySetName::Access);
        assert_eq!(policy.validate(KeySetName::Access), Ok(()));
        policy.overlap = Duration::from_secs(600);
        let message = policy.validate(KeySetName::Access).unwrap_err().to_string();
        assert!(message.contains("600 s"), "{message}");
        assert!(message.contains("900 s"), "{message}");
    }

    #[test]
    fn webhook_set_is_hmac_unpublished_with_its_own_default_policy() {
        assert!(KeySetName::ALL.contains(&KeySetName::Webhook));
        assert!(!KeySetName::PUBLISHED.contains(&KeySetName::Webhook));
        assert!(!KeySetName::Webhook.is_published());
        assert_eq!("webhook".parse(), Ok(KeySetName::Webhook));
        assert_eq!("HS256".parse(), Ok(Algorithm::Hs256));
        let policy = KeySetPolicy::default_for(KeySetName::Webhook);
        assert_eq!(policy.algorithm, Algorithm::Hs256);
        assert_eq!(policy.rotate_every, 30 * DAY);
        assert_eq!(policy.overlap, 3 * DAY);
        assert_eq!(policy.validate(KeySetName::Webhook), Ok(()));
        let access = KeySetPolicy::default_for(KeySetName::Access);
        assert_eq!((access.rotate_every, access.overlap), (90 * DAY, 7 * DAY));
    }

    #[test]
    fn policy_refuses_an_algorithm_of_the_other_kind() {
        // An HMAC key in a published set would hand its secret to every verifier; an
        // asymmetric key in the webhook set is not what receivers check.
        for (key_set, algorithm) in [
            (KeySetName::Access, Algorithm::Hs256),
            (KeySetName::Action, Algorithm::Hs256),
            (KeySetName::Webhook, Algorithm::Rs256),
            (KeySetName::Webhook, Algorithm::EdDsa),
        ] {
            let policy = KeySetPolicy {
                algorithm,
                ..KeySetPolicy::default_for(key_set)
            };
            let error = policy.validate(key_set).unwrap_err();
            assert_eq!(error.setting(), PolicySetting::Algorithm, "{error}");
        }
    }
}
