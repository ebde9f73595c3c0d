//! How long each kind of single-use token lives: the seed's per-action defaults
//! (confirm_payment 60 min, approve_estimate 7 days, verify_email 24 h, any other action
//! 30 min; password reset 1 h, email verification 24 h), a tenant's overrides, and the
//! caller's `expires_in`, all bounded by [`MIN_LIFETIME`] and by the longest lifetime
//! the trust bundle publishes for the token type (what verifiers accept). Pure.
//!
//! The published bound wins over a default: the bundle publishes seven days for action
//! tokens (approve_estimate's default), 1 h for resets and 24 h for verifications.

use std::collections::BTreeMap;
use std::time::Duration;

/// The shortest lifetime any single-use token may be given.
pub const MIN_LIFETIME: Duration = Duration::from_secs(60);
/// The name under which a tenant overrides the password-reset lifetime.
pub const PASSWORD_RESET: &str = "password_reset";
/// The name under which a tenant overrides the email-verification lifetime.
pub const EMAIL_VERIFICATION: &str = "email_verification";
/// Most overrides a tenant may set.
pub const MAX_OVERRIDES: usize = 64;

/// How long a confirmation token (the second step of a two-step action) lives, at most:
/// the user confirms on the page the first step showed.
pub const CONFIRMATION_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Returns the default lifetime of `name` (an action, [`PASSWORD_RESET`] or
/// [`EMAIL_VERIFICATION`]).
pub fn default_lifetime(name: &str) -> Duration {
    const MINUTE: u64 = 60;
    Duration::from_secs(match name {
        "confirm_payment" => 60 * MINUTE,
        "approve_estimate" => 7 * 24 * 60 * MINUTE,
        "verify_email" | EMAIL_VERIFICATION => 24 * 60 * MINUTE,
        PASSWORD_RESET => 60 * MINUTE,
        _ => 30 * MINUTE,
    })
}

/// A lifetime outside its bounds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lifetime of `{name}` must be between {min} and {max} seconds, got {got}")]
pub struct LifetimeOutOfBounds {
    pub name: String,
    pub min: u64,
    pub max: u64,
    pub got: u64,
}

/// Checks a lifetime someone asked for (a caller's `expires_in`, a tenant override).
pub fn check(name: &str, lifetime: Duration, max: Duration) -> Result<(), LifetimeOutOfBounds> {
    if lifetime < MIN_LIFETIME || lifetime > max {
        return Err(LifetimeOutOfBounds {
            name: name.chars().take(64).collect(),
            min: MIN_LIFETIME.as_secs(),
            max: max.as_secs(),
            got: lifetime.as_secs(),
        });
    }
    Ok(())
}

/// Returns the lifetime of a token for `name`: the caller's `requested` (checked), else
/// the tenant's override, else the default — the last two cut to `max`.
pub fn resolve(
    name: &str,
    requested: Option<Duration>,
    overrides: Option<&BTreeMap<String, u32>>,
    max: Duration,
) -> Result<Duration, LifetimeOutOfBounds> {
    if let Some(requested) = requested {
        check(name, requested, max)?;
        return Ok(requested);
    }
    let configured = overrides
        .and_then(|overrides| overrides.get(name))
        .map(|seconds| Duration::from_secs(u64::from(*seconds)))
        .unwrap_or_else(|| default_lifetime(name));
    Ok(configured.clamp(MIN_LIFETIME, max.max(MIN_LIFETIME)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn defaults_follow_the_seed() {
        assert_eq!(default_lifetime("confirm_payment").as_secs(), 3_600);
        assert_eq!(default_lifetime("approve_estimate").as_secs(), 7 * 86_400);
        assert_eq!(default_lifetime("verify_email").as_secs(), 86_400);
        assert_eq!(default_lifetime("cancel_booking").as_secs(), 1_800);
        assert_eq!(default_lifetime(PASSWORD_RESET).as_secs(), 3_600);
        assert_eq!(default_lifetime(EMAIL_VERIFICATION).as_secs(), 86_400);
    }

    #[test]
    fn requested_lifetimes_are_bounded_and_defaults_cut_to_the_published_bound() {
        assert_eq!(resolve("x", None, None, DAY).unwrap().as_secs(), 1_800);
        assert_eq!(resolve("approve_estimate", None, None, DAY).unwrap(), DAY);
        assert_eq!(
            resolve("approve_estimate", None, None, 7 * DAY)
                .unwrap()
                .as_secs(),
            7 * 86_400
        );
        assert_eq!(
            resolve("x", Some(Duration::from_secs(120)), None, DAY).unwrap(),
            Duration::from_secs(120)
        );
        assert!(resolve("x", Some(Duration::from_secs(59)), None, DAY).is_err());
        assert!(resolve("x", Some(DAY + Duration::from_secs(1)), None, DAY).is_err());
        let overrides = BTreeMap::from([("x".to_owned(), 600_u32)]);
        assert_eq!(
            resolve("x", None, Some(&overrides), DAY).unwrap().as_secs(),
            600
        );
    }
}
