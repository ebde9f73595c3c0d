//! One-time login challenges (issue 11, seed 002): OTP codes by e-mail or SMS and magic
//! links — started, delivered (to the caller or through a provider), verified, pruned
//! and, in an emergency, invalidated.
//!
//! Contract:
//! - A code is 6 digits (OTP, 5 minutes) or 32 random bytes in hex (magic link, 15
//!   minutes), from the OS CSPRNG (`code.rs`). It is stored only as HMAC-SHA256 under the
//!   current credential pepper, bound to the challenge id, with the pepper's version, and
//!   compared in constant time. A slow hash (the seed's bcrypt) buys nothing here: the
//!   pepper is what keeps a stolen row from being brute-forced (10^6 codes fall to any
//!   hash), and the attempt limit is what keeps an online guesser out.
//! - At most [`MAX_ATTEMPTS`] verifications per challenge, counted exactly once by one
//!   conditional write before the code is compared; the fifth wrong one kills it.
//! - Verified once: of concurrent right answers on any replicas exactly one is
//!   `Verified`, the others `AlreadyUsed`.
//! - Tenant isolation: a challenge is found by (tenant, id); another tenant's is
//!   `NotFound`, exactly like an unknown id.
//! - The code never reaches a log, an audit entry, an error or a `Debug`; the destination
//!   is neither stored nor audited.
//! - Rate limits (`one_time_limits.rs`) come before any other work of a call.
//! - Audited: starts, dead challenges, emergency invalidations, provider switches and
//!   failovers; a successful verification is counted and logged (see `verify`).

pub mod code;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_common::credential::{Credential, CredentialKind, Secret, random_base62};
use tessera_common::ids::TenantId;
use tessera_common::{Clock, UnixMillis};
use tracing::{info, warn};

use self::code::Code;
use crate::audit::{Actor, AuditAction};
use crate::delivery::{Delivery, DeliveryError, Message, Sent};
use crate::keyring::{self, Keyring, KeyringError};
use crate::one_time_limits::{LimitError, LimitSubject, LimitedOperation, OneTimeLimits};
use crate::store::challenges::{AttemptCount, ChallengeRecord, ChallengeStore};
use crate::store::{OneTimeTokenStore, Store, StoreError};

/// Verification attempts per challenge (seed 002).
pub const MAX_ATTEMPTS: u32 = 5;
/// Lifetime of an OTP.
pub const OTP_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Lifetime of a magic link.
pub const MAGIC_LINK_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long used and expired challenges are kept before the scheduler deletes them.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The longest presented code read (a magic-link token is 64 characters).
pub const MAX_CODE_BYTES: usize = 128;
/// The longest user id.
pub const MAX_USER_ID_BYTES: usize = 128;
/// The longest e-mail address (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Prefix of challenge ids.
pub const ID_PREFIX: &str = "chl_";
/// Random base62 characters of an id (~155 bits).
const ID_CHARS: usize = 26;

/// The kind of challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChallengeMethod {
    OtpEmail,
    OtpSms,
    MagicLink,
}

impl ChallengeMethod {
    /// Every method.
    pub const ALL: [ChallengeMethod; 3] = [
        ChallengeMethod::OtpEmail,
        ChallengeMethod::OtpSms,
        ChallengeMethod::MagicLink,
    ];

    /// Returns the stored (and configuration) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChallengeMethod::OtpEmail => "otp_email",
            ChallengeMethod::OtpSms => "otp_sms",
            ChallengeMethod::MagicLink => "magic_link",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<ChallengeMethod> {
        ChallengeMethod::ALL
            .into_iter()
            .find(|method| method.as_str() == text)
    }

    /// Returns how long a challenge of this method lives.
    pub const fn lifetime(self) -> Duration {
        match self {
            ChallengeMethod::MagicLink => MAGIC_LINK_LIFETIME,
            _ => OTP_LIFETIME,
        }
    }
}

/// A challenge id: `chl_` and 26 base62 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChallengeId(String);

impl ChallengeId {
    /// Returns a fresh random id.
    pub fn generate() -> ChallengeId {
        ChallengeId(format!("{ID_PREFIX}{}", random_base62(ID_CHARS)))
    }

    /// Returns the id if `text` has the shape of one (anything else cannot exist).
    pub fn parse(text: &str) -> Option<ChallengeId> {
        let rest = text.strip_prefix(ID_PREFIX)?;
        (rest.len() == ID_CHARS && rest.bytes().all(|byte| byte.is_ascii_alphanumeric()))
            .then(|| ChallengeId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChallengeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a code goes: an e-mail address or an E.164 phone number. Personal data, so its
/// `Debug` is redacted; it is never stored, logged or audited.
#[derive(Clone, PartialEq, Eq)]
pub struct Destination(String);

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Destination(<redacted>)")
    }
}

impl Destination {
    /// Checks `text` as a destination of `method`.
    pub fn parse(method: ChallengeMethod, text: &str) -> Result<Destination, ChallengeError> {
        let ok = match method {
            ChallengeMethod::OtpSms => {
                let digits = text.strip_prefix('+').unwrap_or("");
                (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            }
            ChallengeMethod::OtpEmail | ChallengeMethod::MagicLink => {
                text.len() <= MAX_EMAIL_BYTES
                    && text.bytes().all(|b| b.is_ascii_graphic())
                    && matches!(text.split_once('@'), Some((local, domain))
                        if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                            && !domain.starts_with('.') && !domain.ends_with('.'))
            }
        };
        if ok {
            Ok(Destination(text.to_owned()))
        } else {
            Err(ChallengeError::Invalid(match method {
                ChallengeMethod::OtpSms => {
                    "destination: a phone number in E.164 form (+ and 8 to 15 digits)"
                }
                _ => "destination: an e-mail address of at most 254 printable ASCII bytes",
            }))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who sends the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    ReturnToCaller,
    Provider,
}

/// Checks a user id: 1 to 128 bytes of `[A-Za-z0-9._:@+-]`.
pub fn check_user_id(user_id: &str) -> Result<(), ChallengeError> {
    let ok = !user_id.is_empty()
        && user_id.len() <= MAX_USER_ID_BYTES
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:@_+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ChallengeError::Invalid(
            "user_id: 1 to 128 bytes of A-Z a-z 0-9 . _ : @ + -",
        ))
    }
}

/// A request to start a challenge, checked at the edge.
#[derive(Clone, Debug)]
pub struct StartChallenge {
    pub tenant_id: TenantId,
    pub user_id: String,
    pub method: ChallengeMethod,
    pub destination: Option<Destination>,
    pub delivery: DeliveryMode,
    pub client_ip: Option<IpAddr>,
}

/// A started challenge.
#[derive(Debug)]
pub struct Started {
    pub challenge_id: ChallengeId,
    pub expires_at: UnixMillis,
    /// Returned to the caller only (RETURN_TO_CALLER).
    pub code: Option<Code>,
    pub link: Option<String>,
    /// The provider that took it (PROVIDER).
    pub provider: Option<String>,
}

/// A verification request, checked at the edge.
#[derive(Clone, Debug)]
pub struct VerifyChallenge {
    pub tenant_id: TenantId,
    pub challenge_id: String,
    pub code: Code,
    pub client_ip: Option<IpAddr>,
}

/// Why a challenge did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Expired,
    TooManyAttempts,
    WrongCode,
    Invalidated,
    AlreadyUsed,
}

impl Refusal {
    /// Returns the `outcome` label of `tessera_auth_validation_attempt_total` (the seed's
    /// `invalid_otp` for a wrong code).
    pub const fn outcome(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::Expired => "expired",
            Refusal::TooManyAttempts => "too_many_attempts",
            Refusal::WrongCode => "invalid_otp",
            Refusal::Invalidated => "invalidated",
            Refusal::AlreadyUsed => "already_used",
        }
    }
}

/// The answer to a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// The user and method of the verified challenge, or why not.
    pub outcome: Result<(String, ChallengeMethod), Refusal>,
    pub attempts_left: u32,
}

/// Why a challenge call failed (an answer such as a wrong code is not an error).
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("no delivery provider is configured for {0}")]
    NotConfigured(&'static str),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Returns why a stored challenge that was not counted is not live at `now`.
pub fn refusal_of(record: &ChallengeRecord, now: UnixMillis) -> Refusal {
    if record.verified_at.is_some() {
        Refusal::AlreadyUsed
    } else if record.invalidated_at.is_some() {
        Refusal::Invalidated
    } else if record.expires_at <= now {
        Refusal::Expired
    } else {
        Refusal::TooManyAttempts
    }
}

/// What an emergency invalidation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Invalidated {
    pub n_challenges: u64,
    pub n_one_time_tokens: u64,
}

/// The challenge service: storage, pepper, delivery, limits and the clock.
pub struct Challenges {
    store: Arc<dyn ChallengeStore>,
    /// For the pepper versions another replica introduced, and for audit entries that
    /// belong to no challenge write.
    main_store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    delivery: Arc<Delivery>,
    limits: Arc<OneTimeLimits>,
    clock: Arc<dyn Clock>,
    link_base_url: Option<String>,
    one_time_tokens: Arc<dyn OneTimeTokenStore>,
}

/// What [`Challenges::new`] takes.
pub struct ChallengeParts {
    pub store: Arc<dyn ChallengeStore>,
    pub main_store: Arc<dyn Store>,
    pub keyring: Arc<Keyring>,
    pub delivery: Arc<Delivery>,
    pub limits: Arc<OneTimeLimits>,
    pub clock: Arc<dyn Clock>,
    pub link_base_url: Option<String>,
    /// The action-link, reset and verification records an emergency invalidates too.
    pub one_time_tokens: Arc<dyn OneTimeTokenStore>,
}

// === impl Challenges ===

impl Challenges {
    pub fn new(parts: ChallengeParts) -> Challenges {
        Challenges {
            store: parts.store,
            main_store: parts.main_store,
            keyring: parts.keyring,
            delivery: parts.delivery,
            limits: parts.limits,
            clock: parts.clock,
            link_base_url: parts.link_base_url,
            one_time_tokens: parts.one_time_tokens,
        }
    }

    /// Returns the delivery (providers list and switch).
    pub fn delivery(&self) -> &Arc<Delivery> {
        &self.delivery
    }

    /// Returns the one-time rate limiter (shared with password-reset and
    /// email-verification requests).
    pub fn limits(&self) -> &Arc<OneTimeLimits> {
        &self.limits
    }

    /// Starts a challenge (see the module contract).
    pub async fn start(
        &self,
        request: StartChallenge,
        actor: &Actor,
    ) -> Result<Started, ChallengeError> {
        let method = request.method;
        if request.delivery == DeliveryMode::Provider {
            if !self.delivery.serves(method) {
                return Err(ChallengeError::NotConfigured(method.as_str()));
            }
            if request.destination.is_none() {
                return Err(ChallengeError::Invalid(
                    "destination: required when the issuer delivers",
                ));
            }
        }
        let now = self.clock.now();
        self.limits
            .admit(
                LimitedOperation::ChallengeStart,
                &LimitSubject {
                    tenant_id: &request.tenant_id,
                    user_id: &request.user_id,
                    client_ip: request.client_ip,
                },
                now,
            )
            .await?;
        let began = Instant::now();
        let challenge_id = ChallengeId::generate();
        let code = code::generate(method);
        let pepper = self.keyring.current_pepper()?;
        let secret = secret_of(&challenge_id, &code);
        let expires_at = now.plus(method.lifetime());
        let record = ChallengeRecord {
            challenge_id: challenge_id.clone(),
            tenant_id: request.tenant_id.clone(),
            user_id: request.user_id.clone(),
            method,
            code_hash: pepper.hash(&secret).to_vec(),
            pepper_version: pepper.version(),
            attempts: 0,
            max_attempts: MAX_ATTEMPTS,
            created_at: now,
            expires_at,
            verified_at: None,
            invalidated_at: None,
        };
        let delivery = match request.delivery {
            DeliveryMode::ReturnToCaller => "return_to_caller",
            DeliveryMode::Provider => "provider",
        };
        let audit = Actor {
            reason: format!(
                "tenant={} user={} method={} delivery={delivery}",
                request.tenant_id,
                request.user_id,
                method.as_str()
            ),
            ..actor.clone()
        }
        .entry(now, AuditAction::ChallengeStart, challenge_id.as_str());
        self.store.insert_challenge(record, audit).await?;
        metrics::counter!("tessera_token_generation_total", "method" => method.as_str())
            .increment(1);
        metrics::histogram!("tessera_token_generation_duration_seconds", "method" => method.as_str())
            .record(began.elapsed().as_secs_f64());
        let link = match method {
            ChallengeMethod::MagicLink => self.link_base_url.as_ref().map(|base| {
                format!(
                    "{base}?challenge={}&token={}",
                    challenge_id.as_str(),
                    code.expose()
                )
            }),
            _ => None,
        };
        let mut started = Started {
            challenge_id: challenge_id.clone(),
            expires_at,
            code: None,
            link: None,
            provider: None,
        };
        match (request.delivery, request.destination) {
            (DeliveryMode::Provider, Some(destination)) => {
                let message = Message {
                    tenant_id: request.tenant_id.clone(),
                    challenge_id,
                    method,
                    destination,
                    code,
                    link,
                    expires_at,
                    now,
                };
                let sent = self.delivery.send(&message).await?;
                self.audit_failover(&message, &sent, actor).await;
                started.provider = Some(sent.provider);
            }
            _ => {
                started.code = Some(code);
                started.link = link;
            }
        }
        Ok(started)
    }

    /// Verifies a code against a challenge (see the module contract).
    pub async fn verify(
        &self,
        request: VerifyChallenge,
        actor: &Actor,
    ) -> Result<Verification, ChallengeError> {
        let now = self.clock.now();
        let Some(challenge_id) = ChallengeId::parse(&request.challenge_id) else {
            // No such id can exist; the per-IP limit still counts the probe.
            self.admit_verify(&request, None, now).await?;
            return Ok(self.answer(Err(Refusal::NotFound), 0, None));
        };
        let stored = self
            .store
            .challenge(&request.tenant_id, &challenge_id)
            .await?;
        self.admit_verify(&request, stored.as_ref().map(|r| r.user_id.as_str()), now)
            .await?;
        if stored.is_none() {
            return Ok(self.answer(Err(Refusal::NotFound), 0, None));
        }
        let record = match self
            .store
            .count_attempt(&request.tenant_id, &challenge_id, now)
            .await?
        {
            AttemptCount::NotFound => return Ok(self.answer(Err(Refusal::NotFound), 0, None)),
            AttemptCount::NotLive(record) => {
                return Ok(self.answer(Err(refusal_of(&record, now)), 0, Some(record.method)));
            }
            AttemptCount::Counted(record) => record,
        };
        let attempts_left = record.max_attempts.saturating_sub(record.attempts);
        let matches = code::well_formed(record.method, request.code.expose())
            && self.code_matches(&record, &request.code).await?;
        if !matches {
            if attempts_left == 0 {
                let audit =
                    actor.entry(now, AuditAction::ChallengeExhausted, challenge_id.as_str());
                if let Err(error) = self.main_store.append_audit(audit).await {
                    warn!(%error, challenge = %challenge_id, "auditing a dead challenge failed");
                }
                metrics::counter!("tessera_token_invalidation_total", "reason" => "too_many_attempts")
                    .increment(1);
            }
            return Ok(self.answer(Err(Refusal::WrongCode), attempts_left, Some(record.method)));
        }
        // A verification is a login, not a change an operator acts on: it is counted
        // (`tessera_auth_validation_attempt_total{outcome="success"}`) and logged, not
        // appended to the hash-chained audit log, whose one lock would serialize every
        // login behind a WAL flush (as API-key validations are counted, not audited).
        // Starts, dead challenges, invalidations and provider switches are audited.
        if self
            .store
            .mark_verified(&request.tenant_id, &challenge_id, now, None)
            .await?
        {
            info!(challenge = %challenge_id, tenant = %request.tenant_id, principal = %actor.principal,
                "challenge verified");
            Ok(self.answer(Ok((record.user_id, record.method)), 0, Some(record.method)))
        } else {
            // A concurrent right answer won (or an emergency came in between).
            let refusal = match self
                .store
                .challenge(&request.tenant_id, &challenge_id)
                .await?
            {
                Some(latest) => refusal_of(&latest, now),
                None => Refusal::NotFound,
            };
            Ok(self.answer(Err(refusal), 0, Some(record.method)))
        }
    }

    /// Records provider `name` as enabled or disabled (audited by `audit`), for every
    /// replica: sends read the state on each delivery.
    pub async fn set_provider_enabled(
        &self,
        name: &str,
        enabled: bool,
        audit: crate::audit::AuditEntry,
    ) -> Result<(), StoreError> {
        info!(provider = name, enabled, "delivery provider switched");
        self.store
            .set_provider_enabled(name, enabled, audit.at, audit)
            .await
    }

    /// Invalidates every live challenge and unused one-time token of `tenant` (or of
    /// everyone), audited.
    pub async fn invalidate_all(
        &self,
        tenant: Option<&TenantId>,
        actor: &Actor,
    ) -> Result<Invalidated, ChallengeError> {
        let now = self.clock.now();
        let target = tenant.map_or("*".to_owned(), |tenant| tenant.to_string());
        let n_one_time_tokens = self
            .one_time_tokens
            .invalidate_one_time_tokens(tenant.map(TenantId::as_str), now)
            .await?;
        let audit = Actor {
            reason: format!(
                "{} (one-time tokens invalidated: {n_one_time_tokens})",
                actor.reason
            ),
            ..actor.clone()
        }
        .entry(now, AuditAction::ChallengeEmergencyInvalidate, target);
        let n_challenges = self.store.invalidate_challenges(tenant, now, audit).await?;
        for (reason, n) in [
            ("emergency_challenge", n_challenges),
            ("emergency_one_time_token", n_one_time_tokens),
        ] {
            if n > 0 {
                metrics::counter!("tessera_token_invalidation_total", "reason" => reason)
                    .increment(n);
            }
        }
        info!(
            tenant = tenant.map(TenantId::as_str).unwrap_or("*"),
            n_challenges, n_one_time_tokens, "challenges and one-time tokens invalidated"
        );
        Ok(Invalidated {
            n_challenges,
            n_one_time_tokens,
        })
    }

    /// Deletes challenges past expiry by more than [`RETENTION`] and ended rate windows;
    /// returns the number of challenges deleted.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let expired_before = UnixMillis(now.0 - RETENTION.as_millis() as i64);
        let n = self.store.prune_challenges(expired_before, now).await?;
        if n > 0 {
            metrics::counter!("tessera_token_invalidation_total", "reason" => "expired_cleanup")
                .increment(n);
        }
        Ok(n)
    }

    /// Charges the verify limit: the challenge's user (when it exists) and the IP.
    async fn admit_verify(
        &self,
        request: &VerifyChallenge,
        user_id: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), ChallengeError> {
        if user_id.is_none() && request.client_ip.is_none() {
            return Ok(());
        }
        // An unknown challenge has no user: its probes are charged to a per-tenant
        // bucket of unknown ids, besides the IP.
        let subject = LimitSubject {
            tenant_id: &request.tenant_id,
            user_id: user_id.unwrap_or("\u{1}unknown"),
            client_ip: request.client_ip,
        };
        self.limits
            .admit(LimitedOperation::ChallengeVerify, &subject, now)
            .await?;
        Ok(())
    }

    async fn code_matches(
        &self,
        record: &ChallengeRecord,
        code: &Code,
    ) -> Result<bool, ChallengeError> {
        let secret = secret_of(&record.challenge_id, code);
        match self
            .keyring
            .secret_matches(&secret, record.pepper_version, &record.code_hash)
        {
            Err(KeyringError::UnknownPepper(_)) => {
                keyring::load_stored_peppers(&self.keyring, self.main_store.as_ref())
                    .await
                    .map_err(ChallengeError::Keyring)?;
                Ok(self.keyring.secret_matches(
                    &secret,
                    record.pepper_version,
                    &record.code_hash,
                )?)
            }
            other => Ok(other?),
        }
    }

    fn answer(
        &self,
        outcome: Result<(String, ChallengeMethod), Refusal>,
        attempts_left: u32,
        method: Option<ChallengeMethod>,
    ) -> Verification {
        let label = match &outcome {
            Ok(_) => "success",
            Err(refusal) => refusal.outcome(),
        };
        metrics::counter!("tessera_auth_validation_attempt_total", "outcome" => label).increment(1);
        tracing::debug!(
            outcome = label,
            method = method.map(ChallengeMethod::as_str),
            "challenge verification"
        );
        Verification {
            outcome,
            attempts_left,
        }
    }

    async fn audit_failover(&self, message: &Message, sent: &Sent, actor: &Actor) {
        if sent.passed_over.is_empty() {
            return;
        }
        let passed: Vec<String> = sent
            .passed_over
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect();
        let audit = Actor {
            reason: format!(
                "method={} passed over [{}]; sent by {}",
                message.method.as_str(),
                passed.join("; "),
                sent.provider
            ),
            ..actor.clone()
        }
        .entry(
            message.now,
            AuditAction::ProviderFailover,
            message.challenge_id.as_str(),
        );
        metrics::counter!("tessera_challenge_failovers_total", "provider" => sent.provider.clone())
            .increment(1);
        if let Err(error) = self.main_store.append_audit(audit).await {
            warn!(%error, "auditing a provider failover failed");
        }
    }
}

/// The secret hashed for a challenge: the code bound to the challenge id (`code.rs`).
fn secret_of(challenge_id: &ChallengeId, code: &Code) -> Secret {
    let input = code::hash_input(challenge_id.as_str(), code);
    // A credential built only to carry the input as a `Secret` (redacted, wiped on
    // drop) to the keyring's HMAC; its kind and id are never used.
    Credential::from_parts(CredentialKind::ApiKey, String::new(), input.to_string()).secret
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(now: i64) -> ChallengeRecord {
        ChallengeRecord {
            challenge_id: ChallengeId::generate(),
            tenant_id: TenantId::new("acme").unwrap(),
            user_id: "u".into(),
            method: ChallengeMethod::OtpSms,
            code_hash: vec![0; 32],
            pepper_version: tessera_common::credential::PepperVersion::FIRST,
            attempts: 5,
            max_attempts: 5,
            created_at: UnixMillis(now),
            expires_at: UnixMillis(now + 300_000),
            verified_at: None,
            invalidated_at: None,
        }
    }

    #[test]
    fn refusals_say_why_a_challenge_is_dead() {
        let mut dead = record(0);
        assert_eq!(refusal_of(&dead, UnixMillis(1)), Refusal::TooManyAttempts);
        assert_eq!(refusal_of(&dead, UnixMillis(300_000)), Refusal::Expired);
        dead.invalidated_at = Some(UnixMillis(2));
        assert_eq!(refusal_of(&dead, UnixMillis(3)), Refusal::Invalidated);
        dead.verified_at = Some(UnixMillis(1));
        assert_eq!(refusal_of(&dead, UnixMillis(3)), Refusal::AlreadyUsed);
    }

    #[test]
    fn ids_and_destinations_are_checked() {
        let id = ChallengeId::generate();
        assert_eq!(ChallengeId::parse(id.as_str()), Some(id));
        assert_eq!(ChallengeId::parse("chl_short"), None);
        assert_eq!(ChallengeId::parse(&format!("chl_{}", "a".repeat(27))), None);
        assert!(Destination::parse(ChallengeMethod::OtpSms, "+4915112345678").is_ok());
        assert!(Destination::parse(ChallengeMethod::OtpSms, "4915112345678").is_err());
        assert!(Destination::parse(ChallengeMethod::OtpEmail, "a@example.com").is_ok());
        assert!(Destination::parse(ChallengeMethod::OtpEmail, "a b@example.com").is_err());
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Destination::parse(ChallengeMethod::MagicLink, &long).is_err());
        assert!(format!("{:?}", Destination("a@b.c".into())).contains("redacted"));
        assert!(check_user_id("alice@example.com").is_ok());
        assert!(check_user_id(&"u".repeat(129)).is_err());
        assert!(check_user_id("bad\nuser").is_err());
    }

    #[test]
    fn a_code_hashes_apart_per_challenge() {
        let code = Code::presented("123456");
        let a = secret_of(&ChallengeId::generate(), &code);
        let b = secret_of(&ChallengeId::generate(), &code);
        assert_ne!(a.expose(), b.expose());
    }
}
