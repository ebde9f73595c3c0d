//! The pure part of refresh handling: what to do with a presented refresh token, and the
//! deterministic successor credential.

use std::time::Duration;

use aws_lc_rs::hmac;
use tessera_common::UnixMillis;
use tessera_common::credential::{Credential, CredentialKind, base62_from_blocks};

use crate::store::{RefreshState, RefreshTokenRecord, SessionRecord};

/// Session and refresh-token lifetimes.
#[derive(Clone, Copy, Debug)]
pub struct SessionPolicy {
    /// Lifetime of each refresh token (sliding: every rotation gets a fresh one).
    pub refresh_ttl: Duration,
    /// A rotated token presented again within this window returns the same successor
    /// (concurrent tabs); later it is reuse. Zero disables the window.
    pub reuse_grace: Duration,
    /// How long a revocation entry must outlive its instant: the bundle policy's
    /// `revocation_horizon` (the longest lifetime of any token type a key set signs, plus
    /// clock leeway), so an entry outlives every token it can match.
    pub revocation_horizon: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            reuse_grace: Duration::from_secs(30),
            // 24 h (email verification, service tokens) and 30 s of leeway.
            revocation_horizon: Duration::from_secs(24 * 3600 + 30),
        }
    }
}

/// Why a refresh token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefreshRejection {
    #[error("refresh token is invalid")]
    Invalid,
    #[error("refresh token has expired")]
    Expired,
    #[error("refresh token or its session has been revoked")]
    Revoked,
    #[error("session has reached its absolute lifetime")]
    SessionExpired,
}

/// What to do with a presented (authentic) refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Rotate it: derive and record the successor.
    Rotate,
    /// It was just rotated (within the grace window) and its successor is still current:
    /// return that successor again.
    ReturnSuccessor,
    /// Reuse of a rotated token: revoke the family and its session.
    Reuse,
    /// Refuse without side effects.
    Refuse(RefreshRejection),
}

/// Decides how to treat `token` (already matched against its hash) at `now`.
/// `successor` is the record the token was rotated to, if any.
pub fn decide(
    token: &RefreshTokenRecord,
    successor: Option<&RefreshTokenRecord>,
    session: &SessionRecord,
    policy: &SessionPolicy,
    now: UnixMillis,
) -> RefreshDecision {
    if session.revoked_at.is_some() {
        return RefreshDecision::Refuse(RefreshRejection::Revoked);
    }
    if session.expires_at.is_some_and(|end| now >= end) {
        return RefreshDecision::Refuse(RefreshRejection::SessionExpired);
    }
    match &token.state {
        RefreshState::Revoked { .. } => RefreshDecision::Refuse(RefreshRejection::Revoked),
        RefreshState::Active if now >= token.expires_at => {
            RefreshDecision::Refuse(RefreshRejection::Expired)
        }
        RefreshState::Active => RefreshDecision::Rotate,
        RefreshState::Rotated { at, .. } => {
            let within_grace =
                now.since(*at) <= policy.reuse_grace && !policy.reuse_grace.is_zero();
            let successor_current =
                successor.is_some_and(|next| next.state == RefreshState::Active);
            if within_grace && successor_current {
                RefreshDecision::ReturnSuccessor
            } else {
                RefreshDecision::Reuse
            }
        }
    }
}

/// Derives the successor of `presented`: the same bytes for every caller that presents
/// the same token, and unguessable without its secret.
/// `key` is the successor key of the pepper version that hashed `presented`.
pub fn successor_credential(key: &hmac::Key, presented: &Credential) -> Credential {
    let kind = CredentialKind::Refresh;
    // Block `counter` of the keyed stream for `label`, fed to the one base62 encoder.
    let stream = |label: &str, n: usize| {
        let mut counter = 0u32;
        base62_from_blocks(n, |block| {
            let mut context = hmac::Context::with_key(key);
            context.update(label.as_bytes());
            context.update(&counter.to_be_bytes());
            context.update(presented.id.as_bytes());
            context.update(b"_");
            context.update(presented.secret.expose().as_bytes());
            block.copy_from_slice(context.sign().as_ref());
            counter += 1;
        })
    };
    Credential::from_parts(
        kind,
        stream("tessera-refresh-successor-id", kind.id_chars()),
        stream("tessera-refresh-successor-secret", kind.secret_chars()),
    )
}

#[cfg(test)]
mod tests {
    use tessera_common::ids::{SessionId, Subject, TenantId};

    use super::*;

    fn token(state: RefreshState) -> RefreshTokenRecord {
        RefreshTokenRecord {
            token_id: "t1".into(),
            family_id: "f1".into(),
            session_id: SessionId::new("s1").unwrap(),
            tenant_id: TenantId::new("acme").unwrap(),
            parent_id: None,
            secret_hash: vec![],
            pepper_version: tessera_common::credential::PepperVersion::FIRST,
            issued_at: UnixMillis(0),
            expires_at: UnixMillis(1_000_000),
            state,
        }
    }

    fn session() -> SessionRecord {
        SessionRecord {
            session_id: SessionId::new("s1").unwrap(),
            tenant_id: TenantId::new("acme").unwrap(),
            subject: Subject::new("alice").unwrap(),
            family_id: "f1".into(),
            created_at: UnixMillis(0),
            expires_at: None,
            revoked_at: None,
            claims_template: "{}".into(),
        }
    }

    #[test]
    fn active_tokens_rotate_until_they_expire() {
        let policy = SessionPolicy::default();
        assert_eq!(
            decide(
                &token(RefreshState::Active),
                None,
                &session(),
                &policy,
                UnixMillis(10)
            ),
            RefreshDecision::Rotate
        );
        assert_eq!(
            decide(
                &token(RefreshState::Active),
                None,
                &session(),
                &policy,
                UnixMillis(1_000_000)
            ),
            RefreshDecision::Refuse(RefreshRejection::Expired)
        );
    }

    #[test]
    fn a_rotated_token_within_grace_returns_the_successor_and_later_is_reuse() {
        let policy = SessionPolicy::default();
        let rotated = token(RefreshState::Rotated {
            at: UnixMillis(1_000),
            successor_id: "t2".into(),
        });
        let successor = RefreshTokenRecord {
            token_id: "t2".into(),
            ..token(RefreshState::Active)
        };
        assert_eq!(
            decide(
                &rotated,
                Some(&successor),
                &session(),
                &policy,
                UnixMillis(31_000)
            ),
            RefreshDecision::ReturnSuccessor
        );
        assert_eq!(
            decide(
                &rotated,
                Some(&successor),
                &session(),
                &policy,
                UnixMillis(31_001)
            ),
            RefreshDecision::Reuse
        );
        // An older ancestor: its successor has itself been rotated.
        let rotated_successor = RefreshTokenRecord {
            state: RefreshState::Rotated {
                at: UnixMillis(2_000),
                successor_id: "t3".into(),
            },
            ..successor
        };
        assert_eq!(
            decide(
                &rotated,
                Some(&rotated_successor),
                &session(),
                &policy,
                UnixMillis(2_500)
            ),
            RefreshDecision::Reuse
        );
        let no_grace = SessionPolicy {
            reuse_grace: Duration::ZERO,
            ..policy
        };
        let successor = RefreshTokenRecord {
            token_id: "t2".into(),
            ..token(RefreshState::Active)
        };
        assert_eq!(
            decide(
                &rotated,
                Some(&successor),
                &session(),
                &no_grace,
                UnixMillis(1_000)
            ),
            RefreshDecision::Reuse
        );
    }

    #[test]
    fn revoked_sessions_and_tokens_and_ended_sessions_are_refused() {
        let policy = SessionPolicy::default();
        let revoked_session = SessionRecord {
            revoked_at: Some(UnixMillis(5)),
            ..session()
        };
        assert_eq!(
            decide(
                &token(RefreshState::Active),
                None,
                &revoked_session,
                &policy,
                UnixMillis(10)
            ),
            RefreshDecision::Refuse(RefreshRejection::Revoked)
        );
        assert_eq!(
            decide(
                &token(RefreshState::Revoked { at: UnixMillis(5) }),
                None,
                &session(),
                &policy,
                UnixMillis(10)
            ),
            RefreshDecision::Refuse(RefreshRejection::Revoked)
        );
        let ended = SessionRecord {
            expires_at: Some(UnixMillis(10)),
            ..session()
        };
        assert_eq!(
            decide(
                &token(RefreshState::Active),
                None,
                &ended,
                &policy,
                UnixMillis(10)
            ),
            RefreshDecision::Refuse(RefreshRejection::SessionExpired)
        );
    }

    #[test]
    fn successors_are_deterministic_well_formed_and_secret_dependent() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let presented = Credential::generate(CredentialKind::Refresh);
        let a = successor_credential(&key, &presented);
        let b = successor_credential(&key, &presented);
        assert_eq!(a.expose(), b.expose());
        assert!(Credential::parse(&a.expose()).is_ok());
        let other = Credential::generate(CredentialKind::Refresh);
        assert_ne!(successor_credential(&key, &other).id, a.id);
        let other_key = hmac::Key::new(hmac::HMAC_SHA256, b"k2");
        assert_ne!(
            successor_credential(&other_key, &presented).secret.expose(),
            a.secret.expose()
        );
    }
}
