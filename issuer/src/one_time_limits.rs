//! Rate limits of one-time credentials (issue 11): starting and verifying challenges and
//! requesting password-reset and email-verification tokens, each counted per user
//! (tenant + user id) and per client IP in fixed windows aligned to the epoch.
//!
//! Contract:
//! - A call charges its user bucket and, when the application passed the end user's IP,
//!   its IP bucket, in ONE atomic store write (`ChallengeStore::charge_windows`): on
//!   PostgreSQL every replica charges the same rows, so of any number of concurrent
//!   calls exactly `limit` are admitted per window — exactly once across replicas.
//! - Every call is charged, admitted or not, so a hammering client keeps its window full;
//!   the window still ends on time (fixed, not sliding), and `retry-after` says when.
//! - Defaults (per window of 15 minutes for challenges, 1 hour for tokens):
//!   | operation            | per user | per IP | window |
//!   |----------------------|---------:|-------:|-------:|
//!   | challenge start      |       10 |     50 | 15 min |
//!   | challenge verify     |       30 |    100 | 15 min |
//!   | password reset       |        5 |     20 |    1 h |
//!   | email verification   |        5 |     20 |    1 h |
//!   Configurable in the `[limits.<operation>]` tables of `--challenge-config`
//!   (`per_user`, `per_ip`, `window_seconds`; bounds in [`LimitRule::validate`]).
//!
//! Metrics: `tessera_ratelimit_attempts_total{scope, operation}` per bucket charged and
//! `tessera_ratelimit_exceeded_total{scope, operation}` per bucket over its limit, with
//! `scope` = `user` or `ip` (the seed's labels).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tessera_common::UnixMillis;
use tessera_common::ids::TenantId;

use crate::store::StoreError;
use crate::store::challenges::{ChallengeStore, WindowCharge};

/// A rate-limited operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitedOperation {
    ChallengeStart,
    ChallengeVerify,
    PasswordReset,
    EmailVerification,
}

impl LimitedOperation {
    /// Returns the name used in buckets, metrics and configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitedOperation::ChallengeStart => "challenge_start",
            LimitedOperation::ChallengeVerify => "challenge_verify",
            LimitedOperation::PasswordReset => "password_reset",
            LimitedOperation::EmailVerification => "email_verification",
        }
    }
}

/// The limits of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRule {
    /// Calls per user per window.
    pub per_user: u32,
    /// Calls per client IP per window.
    pub per_ip: u32,
    /// Window length, seconds.
    pub window_seconds: u32,
}

impl LimitRule {
    /// The largest limit accepted (per user or per IP).
    pub const MAX_LIMIT: u32 = 10_000_000;
    /// The longest window accepted: one day.
    pub const MAX_WINDOW_SECONDS: u32 = 86_400;

    /// Checks the bounds: limits 1 to [`Self::MAX_LIMIT`], window 1 s to 1 day.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [("per_user", self.per_user), ("per_ip", self.per_ip)] {
            if value == 0 || value > Self::MAX_LIMIT {
                return Err(format!("{name} must be 1 to {}", Self::MAX_LIMIT));
            }
        }
        if self.window_seconds == 0 || self.window_seconds > Self::MAX_WINDOW_SECONDS {
            return Err(format!(
                "window_seconds must be 1 to {}",
                Self::MAX_WINDOW_SECONDS
            ));
        }
        Ok(())
    }

    fn window(&self) -> i64 {
        i64::from(self.window_seconds) * 1000
    }
}

/// The limits of every operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    pub challenge_start: LimitRule,
    pub challenge_verify: LimitRule,
    pub password_reset: LimitRule,
    pub email_verification: LimitRule,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let rule = |per_user, per_ip, window_seconds| LimitRule {
            per_user,
            per_ip,
            window_seconds,
        };
        LimitSettings {
            challenge_start: rule(10, 50, 900),
            challenge_verify: rule(30, 100, 900),
            password_reset: rule(5, 20, 3600),
            email_verification: rule(5, 20, 3600),
        }
    }
}

impl LimitSettings {
    /// Returns the rule of `operation`.
    pub fn rule(&self, operation: LimitedOperation) -> LimitRule {
        match operation {
            LimitedOperation::ChallengeStart => self.challenge_start,
            LimitedOperation::ChallengeVerify => self.challenge_verify,
            LimitedOperation::PasswordReset => self.password_reset,
            LimitedOperation::EmailVerification => self.email_verification,
        }
    }

    /// Checks every rule, naming the offending one.
    pub fn validate(&self) -> Result<(), String> {
        for operation in [
            LimitedOperation::ChallengeStart,
            LimitedOperation::ChallengeVerify,
            LimitedOperation::PasswordReset,
            LimitedOperation::EmailVerification,
        ] {
            self.rule(operation)
                .validate()
                .map_err(|error| format!("limits.{}.{error}", operation.as_str()))?;
        }
        Ok(())
    }
}

/// Why a call was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Over a limit: retry after the window ends.
    #[error("rate limited ({scope}): retry after {retry_after:?}")]
    Limited {
        scope: &'static str,
        retry_after: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who a call is counted for.
#[derive(Clone, Debug)]
pub struct LimitSubject<'a> {
    pub tenant_id: &'a TenantId,
    pub user_id: &'a str,
    pub client_ip: Option<IpAddr>,
}

/// The limiter: the settings and the store holding the windows.
pub struct OneTimeLimits {
    store: Arc<dyn ChallengeStore>,
    settings: LimitSettings,
}

impl OneTimeLimits {
    /// Builds the limiter over `store`.
    pub fn new(store: Arc<dyn ChallengeStore>, settings: LimitSettings) -> OneTimeLimits {
        OneTimeLimits { store, settings }
    }

    /// Returns the settings.
    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// Charges one call of `operation` for `subject` at `now`; `Limited` when a bucket
    /// is over its limit (the longest wait of those over).
    pub async fn admit(
        &self,
        operation: LimitedOperation,
        subject: &LimitSubject<'_>,
        now: UnixMillis,
    ) -> Result<(), LimitError> {
        let rule = self.settings.rule(operation);
        let charges = charges_of(operation, rule, subject, now);
        let counts = self.store.charge_windows(&charges).await?;
        let mut refusal: Option<(&'static str, Duration)> = None;
        for (charge, count) in charges.iter().zip(&counts) {
            let (scope, limit) = scope_of(&charge.bucket, rule);
            metrics::counter!("tessera_ratelimit_attempts_total",
                "scope" => scope, "operation" => operation.as_str())
            .increment(1);
            if count.used > u64::from(limit) {
                metrics::counter!("tessera_ratelimit_exceeded_total",
                    "scope" => scope, "operation" => operation.as_str())
                .increment(1);
                let wait = Duration::from_millis(
                    u64::try_from(count.window_end.0.saturating_sub(now.0)).unwrap_or(0),
                );
                if refusal.is_none_or(|(_, longest)| wait > longest) {
                    refusal = Some((scope, wait));
                }
            }
        }
        match refusal {
            Some((scope, retry_after)) => {
                tracing::info!(
                    operation = operation.as_str(),
                    scope,
                    tenant = %subject.tenant_id,
                    "one-time rate limit exceeded"
                );
                Err(LimitError::Limited { scope, retry_after })
            }
            None => Ok(()),
        }
    }
}

/// Returns the buckets a call charges, user first, sorted so two calls always lock
/// shared rows in the same order.
fn charges_of(
    operation: LimitedOperation,
    rule: LimitRule,
    subject: &LimitSubject<'_>,
    now: UnixMillis,
) -> Vec<WindowCharge> {
    let window = rule.window();
    let start = now.0.div_euclid(window) * window;
    let charge = |bucket: String| WindowCharge {
        bucket,
        window_start: UnixMillis(start),
        window_end: UnixMillis(start + window),
    };
    // Tenant and user ids hold no control character, so the unit separator (U+001F)
    // keeps the parts apart (NUL cannot be stored in PostgreSQL text).
    let mut charges = vec![charge(format!(
        "{}\u{1f}user\u{1f}{}\u{1f}{}",
        operation.as_str(),
        subject.tenant_id,
        subject.user_id
    ))];
    if let Some(ip) = subject.client_ip {
        charges.push(charge(format!("{}\u{1f}ip\u{1f}{ip}", operation.as_str())));
    }
    charges.sort_by(|a, b| a.bucket.cmp(&b.bucket));
    charges
}

fn scope_of(bucket: &str, rule: LimitRule) -> (&'static str, u32) {
    if bucket.split('\u{1f}').nth(1) == Some("ip") {
        ("ip", rule.per_ip)
    } else {
        ("user", rule.per_user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_refused() {
        LimitSettings::default().validate().unwrap();
        let mut settings = LimitSettings::default();
        settings.password_reset.per_ip = 0;
        assert!(
            settings
                .validate()
                .unwrap_err()
                .starts_with("limits.password_reset.per_ip")
        );
        settings.password_reset.per_ip = 1;
        settings.challenge_verify.window_seconds = 86_401;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn buckets_are_aligned_windows_per_user_and_ip() {
        let tenant = TenantId::new("acme").unwrap();
        let subject = LimitSubject {
            tenant_id: &tenant,
            user_id: "u1",
            client_ip: Some("10.0.0.1".parse().unwrap()),
        };
        let rule = LimitSettings::default().challenge_start;
        let charges = charges_of(
            LimitedOperation::ChallengeStart,
            rule,
            &subject,
            UnixMillis(900_000 * 3 + 5),
        );
        assert_eq!(charges.len(), 2);
        assert!(
            charges
                .iter()
                .all(|c| c.window_start == UnixMillis(2_700_000)
                    && c.window_end == UnixMillis(3_600_000))
        );
        let scopes: Vec<_> = charges.iter().map(|c| scope_of(&c.bucket, rule)).collect();
        assert!(scopes.contains(&("ip", 50)) && scopes.contains(&("user", 10)));
    }
}
