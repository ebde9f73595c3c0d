//! Signing-key vocabulary: key sets, algorithms, lifecycle states and the public record
//! of a key that verifiers receive.

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
}

impl KeySetName {
    /// Every key set, in a stable order.
    pub const ALL: [KeySetName; 2] = [KeySetName::Access, KeySetName::Action];

    /// Returns the wire and database name.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeySetName::Access => "access",
            KeySetName::Action => "action",
        }
    }
}

impl std::str::FromStr for KeySetName {
    type Err = UnknownName;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "access" => Ok(KeySetName::Access),
            "action" => Ok(KeySetName::Action),
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

/// A JWS signature algorithm Tessera signs with. Each key is pinned to exactly one.
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
}

impl Algorithm {
    /// Returns the JOSE `alg` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = UnknownName;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "RS256" => Ok(Algorithm::Rs256),
            "ES256" => Ok(Algorithm::Es256),
            "EdDSA" => Ok(Algorithm::EdDsa),
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

/// A policy that would let tokens outlive their key's overlap window.
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
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl KeySetPolicy {
    /// Returns the default policy of `key_set` (the seed's: 90-day rotation, 7-day
    /// overlap, 1-hour prepublish; 15-minute access tokens, 24-hour action tokens).
    pub const fn default_for(key_set: KeySetName) -> Self {
        let max_token_ttl = match key_set {
            KeySetName::Access => Duration::from_secs(15 * 60),
            // Email verification links live 24 h (DESIGN §4).
            KeySetName::Action => DAY,
        };
        KeySetPolicy {
            algorithm: Algorithm::Rs256,
            rotate_every: Duration::from_secs(90 * 24 * 3600),
            overlap: Duration::from_secs(7 * 24 * 3600),
            prepublish: Duration::from_secs(3600),
            max_token_ttl,
        }
    }

    /// Refuses a policy under which a token could outlive its key.
    pub fn validate(&self, key_set: KeySetName) -> Result<(), PolicyError> {
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
}
