//! Tenant API keys (`tbk_`, DESIGN §4): create, list, get, rotate with a grace period,
//! revoke, validate, the `expiring` warning and expiry, and usage counted in memory and
//! written in batches.
//!
//! A key is `tbk_<id>_<secret><checksum>` with a 256-bit secret, stored only as
//! HMAC-SHA256 under the current pepper (`credentials.rs`). Validation parses and checks
//! the checksum before anything else (a typo never reaches the database), looks the
//! record up by the id the key carries, compares the secret in constant time under the
//! record's pepper version, and only then judges the record's state: a key of a tenant
//! the caller may not see is answered exactly like an unknown one.
//!
//! Rotation is a conditional write (`ApiKeyStore::rotate_api_key`): of any number of
//! concurrent rotations of one key, on any replica, one makes the successor and the
//! others are told the key is no longer active. The predecessor keeps working until its
//! grace ends (default 24 h), then is refused as `GraceEnded`.
//!
//! Rate limits (per minute, hour and day, fixed UTC windows; `ratelimit.rs`): a real,
//! working key's validation costs one admission, spent from this replica's ledger
//! (`ledger.rs`), which leases slices from the store; over a limit the validation is
//! [`ApiKeyError::RateLimited`]. Verifiers that cache answers lease admissions with a
//! validation or by [`ApiKeys::lease`]; every lease is charged to the store at once.
//!
//! Usage (`last_used_at`, `usage_count`) is gathered in memory and written by
//! [`ApiKeys::flush_usage`] as one multi-row update every flush interval and on graceful
//! shutdown: a crash loses at most one interval of counts, a clean stop none.

mod ledger;
pub mod ratelimit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tessera_common::bundle::{CredentialChange, StandingKind};
use tessera_common::credential::{Credential, CredentialError, CredentialKind, PepperVersion};
use tessera_common::ids::TenantId;
use tessera_common::limits::{MAX_ID_BYTES, MAX_LIST_ENTRIES, MAX_LIST_ENTRY_BYTES, check_text};
use tessera_common::{Clock, UnixMillis};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::audit::{Actor, AuditAction};
use crate::credentials::{CredentialRecord, Credentials};
use crate::keyring::KeyringError;
use crate::store::{ApiKeyRecord, ApiKeyState, ApiKeyStore, ApiKeyUsage, StoreError};
use ledger::Ledger;
use ratelimit::{Lease, RateLimits, Window};

/// Lifetime of a key created without an expiry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Longest lifetime a key may be given (two years).
pub const MAX_TTL: Duration = Duration::from_secs(2 * 366 * 24 * 3600);
/// How long a rotated-out key keeps working by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The longest grace a rotation may grant.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
/// A key is `expiring` from this long before its expiry.
pub const EXPIRING_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest key name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest role, in bytes.
pub const MAX_ROLE_BYTES: usize = 128;
/// The `scope` label of the rate-limit metrics for API keys.
const RATE_LIMIT_SCOPE: &str = "api_key";

/// Why an API key was refused, as the caller learns it. Deliberately coarse where it
/// matters: a wrong secret and a key of another tenant are both `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not the shape of a `tbk_` key.
    Malformed,
    /// The shape of a key whose checksum does not match (a typo or a forgery).
    BadChecksum,
    /// No such key (or a wrong secret, or a key the caller may not see).
    Unknown,
    Revoked,
    Expired,
    /// Rotated, and its grace period is over.
    GraceEnded,
    /// Valid, but without a required permission or role.
    InsufficientPermissions,
}

/// What a valid key says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidKey {
    pub key_id: String,
    pub tenant_id: TenantId,
    pub permissions: Vec<String>,
    pub role: String,
    pub expires_at: UnixMillis,
    /// Set when the key was rotated and works only until then.
    pub grace_until: Option<UnixMillis>,
}

/// A valid key and the admissions leased with its validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    pub key: ValidKey,
    /// Admissions leased to the caller (at most the key's slice).
    pub leased_admissions: u32,
    /// Until when they may be spent (the end of the minute window, issuer's clock).
    pub lease_valid_until: UnixMillis,
}

/// Why an API-key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// A request field is out of bounds; names the field.
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// No such key, or one of a tenant the caller may not see.
    #[error("api key not found")]
    NotFound,
    /// The key is no longer active (already rotated, revoked or expired).
    #[error("api key is {0}, not active")]
    NotActive(&'static str),
    /// The key exists but no longer works (revoked, expired, grace ended): nothing can
    /// be leased or changed for it.
    #[error("api key is {0}, no longer valid")]
    NotValid(&'static str),
    /// Over one of the key's limits: `window` is spent for `retry_after_seconds` more
    /// (whole seconds, at least 1). The message names the window, never the key.
    #[error("api key rate limit exceeded: the {} window is spent", .window.as_str())]
    RateLimited {
        window: Window,
        retry_after_seconds: u32,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> ApiKeyError {
    ApiKeyError::InvalidArgument {
        field,
        message: message.into(),
    }
}

/// A key to create.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub tenant_id: TenantId,
    pub name: String,
    pub permissions: Vec<String>,
    pub role: String,
    /// Absolute expiry; `None` for [`DEFAULT_TTL`] from now.
    pub expires_at: Option<UnixMillis>,
    /// Admissions per window (checked by [`RateLimits::from_request`]).
    pub rate_limits: RateLimits,
}

impl CredentialRecord for ApiKeyRecord {
    fn accepts(&self, kind: CredentialKind) -> bool {
        kind == CredentialKind::ApiKey
    }

    fn pepper_version(&self) -> PepperVersion {
        self.pepper_version
    }

    fn secret_hash(&self) -> &[u8] {
        &self.secret_hash
    }
}

/// Returns true when an active key is within [`EXPIRING_WINDOW`] of its expiry at `now`.
pub fn is_expiring(record: &ApiKeyRecord, now: UnixMillis) -> bool {
    record.state == ApiKeyState::Active
        && now < record.expires_at
        && now.plus(EXPIRING_WINDOW) >= record.expires_at
}

/// What one expiry pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiryPass {
    /// Keys newly marked `expiring`.
    pub marked_expiring: usize,
    /// Keys deactivated as expired.
    pub expired: usize,
    /// Active keys within the warning window after the pass.
    pub expiring_now: usize,
}

/// The API-key model over its store.
pub struct ApiKeys {
    store: Arc<dyn ApiKeyStore>,
    credentials: Arc<Credentials>,
    clock: Arc<dyn Clock>,
    /// Uses since the last flush: key id → (count, latest use).
    usage: Mutex<HashMap<String, (u64, UnixMillis)>>,
    /// This replica's leased admissions per key.
    ledger: Ledger,
}

impl ApiKeys {
    pub fn new(
        store: Arc<dyn ApiKeyStore>,
        credentials: Arc<Credentials>,
        clock: Arc<dyn Clock>,
    ) -> ApiKeys {
        ApiKeys {
            ledger: Ledger::new(store.clone()),
            store,
            credentials,
            clock,
            usage: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the current time.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Creates a key; returns its record and the key itself (show it once, never log it).
    pub async fn create(
        &self,
        actor: &Actor,
        new: NewApiKey,
    ) -> Result<(ApiKeyRecord, Credential), ApiKeyError> {
        check_name(&new.name)?;
        check_permissions(&new.permissions)?;
        check_role(&new.role)?;
        let now = self.now();
        let expires_at = match new.expires_at {
            None => now.plus(DEFAULT_TTL),
            Some(at) if at <= now => return Err(invalid("expires_at", "must be in the future")),
            Some(at) if at > now.plus(MAX_TTL) => {
                return Err(invalid("expires_at", "must be within two years"));
            }
            Some(at) => at,
        };
        let (credential, hashed) = self.credentials.issue(CredentialKind::ApiKey)?;
        let record = ApiKeyRecord {
            key_id: credential.id.clone(),
            tenant_id: new.tenant_id,
            name: new.name,
            permissions: new.permissions,
            role: new.role,
            secret_hash: hashed.hash,
            pepper_version: hashed.pepper_version,
            created_at: now,
            expires_at,
            state: ApiKeyState::Active,
            state_at: None,
            predecessor_id: None,
            successor_id: None,
            grace_until: None,
            expiring_at: None,
            last_used_at: None,
            usage_count: 0,
            rate_limits: new.rate_limits,
        };
        let audit = actor.entry(now, AuditAction::ApiKeyCreate, audit_target(&record));
        self.store.insert_api_key(record.clone(), audit).await?;
        metrics::counter!("tessera_api_keys_created_total").increment(1);
        Ok((record, credential))
    }

    /// Returns key `key_id` when `visible` admits its tenant; `NotFound` otherwise.
    pub async fn get(
        &self,
        key_id: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Result<ApiKeyRecord, ApiKeyError> {
        if key_id.is_empty() || key_id.len() > MAX_ID_BYTES {
            return Err(ApiKeyError::NotFound);
        }
        match self.store.api_key(key_id).await? {
            Some(record) if visible(record.tenant_id.as_str()) => Ok(record),
            _ => Err(ApiKeyError::NotFound),
        }
    }

    /// Returns the keys of `tenant_id` (every tenant's when `None`) that `visible` admits.
    pub async fn list(
        &self,
        tenant_id: Option<&TenantId>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Vec<ApiKeyRecord>, ApiKeyError> {
        let mut records = self.store.list_api_keys(tenant_id).await?;
        records.retain(|record| visible(record.tenant_id.as_str()));
        Ok(records)
    }

    /// Rotates key `key_id`: a successor with the same tenant, name, permissions, role
    /// and lifetime, returned once; the old key works for `grace` more (default 24 h).
    pub async fn rotate(
        &self,
        actor: &Actor,
        key_id: &str,
        grace: Option<Duration>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<(ApiKeyRecord, Credential), ApiKeyError> {
        let grace = grace.unwrap_or(DEFAULT_GRACE);
        if grace > MAX_GRACE {
            return Err(invalid("grace_seconds", "must be at most 30 days"));
        }
        let old = self.get(key_id, visible).await?;
        let now = self.now();
        if old.state != ApiKeyState::Active || old.expires_at <= now {
            return Err(ApiKeyError::NotActive(state_name(&old, now)));
        }
        let lifetime = old.expires_at.since(old.created_at);
        let (credential, hashed) = self.credentials.issue(CredentialKind::ApiKey)?;
        let successor = ApiKeyRecord {
            key_id: credential.id.clone(),
            tenant_id: old.tenant_id.clone(),
            name: old.name.clone(),
            permissions: old.permissions.clone(),
            role: old.role.clone(),
            secret_hash: hashed.hash,
            pepper_version: hashed.pepper_version,
            created_at: now,
            expires_at: now.plus(lifetime),
            state: ApiKeyState::Active,
            state_at: None,
            predecessor_id: Some(old.key_id.clone()),
            successor_id: None,
            grace_until: None,
            expiring_at: None,
            last_used_at: None,
            usage_count: 0,
            rate_limits: old.rate_limits,
        };
        let grace_until = now.plus(grace);
        let audit = actor
            .with_reason(format!(
                "{}successor {}, grace until {grace_until}",
                reason_prefix(actor),
                successor.key_id
            ))
            .entry(now, AuditAction::ApiKeyRotate, audit_target(&old));
        if !self
            .store
            .rotate_api_key(
                &old.key_id,
                successor.clone(),
                grace_until,
                audit,
                change_of(&old, "rotated", Some(grace_until)),
            )
            .await?
        {
            return Err(ApiKeyError::NotActive("rotated"));
        }
        metrics::counter!("tessera_api_keys_rotated_total").increment(1);
        Ok((successor, credential))
    }

    /// Revokes key `key_id` (active or in its grace period); refused from then on.
    pub async fn revoke(
        &self,
        actor: &Actor,
        key_id: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Result<ApiKeyRecord, ApiKeyError> {
        let record = self.get(key_id, visible).await?;
        let now = self.now();
        let audit = actor.entry(now, AuditAction::ApiKeyRevoke, audit_target(&record));
        if !self
            .store
            .revoke_api_key(
                &record.key_id,
                now,
                audit,
                change_of(&record, "revoked", None),
            )
            .await?
        {
            return Err(ApiKeyError::NotActive(state_name(&record, now)));
        }
        metrics::counter!("tessera_api_keys_revoked_total").increment(1);
        self.get(key_id, |_| true).await
    }

    /// Validates `text` as an API key holding every one of `required_permissions` and,
    /// when `required_role` is not empty, that role. A key whose tenant `visible` does
    /// not admit is `Unknown`. A valid key's use is counted (written in the next batch).
    /// Costs one admission against the key's limits, like [`ApiKeys::validate_leasing`].
    pub async fn validate(
        &self,
        text: &str,
        required_permissions: &[String],
        required_role: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Result<ValidKey, Refusal>, ApiKeyError> {
        let verdict = self
            .validate_leasing(text, required_permissions, required_role, 0, visible)
            .await?;
        Ok(verdict.map(|validated| validated.key))
    }

    /// Validates `text` as [`ApiKeys::validate`] does and leases up to `lease_admissions`
    /// more admissions (capped at the key's slice) to the caller. A real, working key —
    /// found, its secret matching, its state valid — costs one admission before its
    /// permissions are judged, so a call lacking a permission is still counted; over a
    /// limit the answer is [`ApiKeyError::RateLimited`].
    pub async fn validate_leasing(
        &self,
        text: &str,
        required_permissions: &[String],
        required_role: &str,
        lease_admissions: u32,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Result<Validated, Refusal>, ApiKeyError> {
        // Shape and checksum first: a typo or forgery costs no database read.
        let presented = match Credential::parse(text.trim()) {
            Ok(credential) if credential.kind == CredentialKind::ApiKey => credential,
            Ok(_) | Err(CredentialError::Malformed) => return Ok(Err(Refusal::Malformed)),
            Err(CredentialError::BadChecksum) => return Ok(Err(Refusal::BadChecksum)),
        };
        let Some(record) = self.store.api_key(&presented.id).await? else {
            return Ok(Err(Refusal::Unknown));
        };
        // The secret is checked whatever the tenant, so both refusals cost the same.
        let secret_matches = self.credentials.verify(&presented, &record).await;
        if !secret_matches || !visible(record.tenant_id.as_str()) {
            return Ok(Err(Refusal::Unknown));
        }
        let now = self.now();
        if let Some(refusal) = state_refusal(&record, now) {
            return Ok(Err(refusal));
        }
        let has_permissions = required_permissions
            .iter()
            .all(|required| record.permissions.contains(required))
            && (required_role.is_empty() || required_role == record.role);
        // A refused call still costs its admission, but leases nothing: the caller
        // caches no refusal to spend a lease on.
        let lease = if has_permissions {
            lease_admissions.min(record.rate_limits.slice())
        } else {
            0
        };
        metrics::counter!("tessera_ratelimit_attempts_total", "scope" => RATE_LIMIT_SCOPE)
            .increment(1);
        let granted = match self
            .ledger
            .admit(&record.key_id, record.rate_limits, lease, now)
            .await?
        {
            Ok(granted) => granted,
            Err(exhausted) => {
                metrics::counter!("tessera_ratelimit_exceeded_total", "scope" => RATE_LIMIT_SCOPE)
                    .increment(1);
                return Err(ApiKeyError::RateLimited {
                    window: exhausted.window,
                    retry_after_seconds: exhausted.retry_after_seconds(now),
                });
            }
        };
        if !has_permissions {
            return Ok(Err(Refusal::InsufficientPermissions));
        }
        self.count_use(&record.key_id, now);
        Ok(Ok(Validated {
            leased_admissions: granted.leased,
            lease_valid_until: granted.valid_until,
            key: ValidKey {
                key_id: record.key_id,
                tenant_id: record.tenant_id,
                permissions: record.permissions,
                role: record.role,
                expires_at: record.expires_at,
                grace_until: match record.state {
                    ApiKeyState::Rotated => record.grace_until,
                    _ => None,
                },
            },
        }))
    }

    /// Leases up to `requested` admissions of key `key_id` (capped at its slice) to a
    /// verifier that caches answers, charged to the store at once. `NotFound` for a key
    /// `visible` does not admit (as for a missing one); `NotValid` for a key that no
    /// longer works; `requested` must be 1 to [`ratelimit::MAX_LEASE_REQUEST`].
    pub async fn lease(
        &self,
        key_id: &str,
        requested: u32,
        visible: impl Fn(&str) -> bool,
    ) -> Result<(Lease, UnixMillis), ApiKeyError> {
        if requested == 0 || requested > ratelimit::MAX_LEASE_REQUEST {
            return Err(invalid(
                "requested",
                format!("must be 1 to {}", ratelimit::MAX_LEASE_REQUEST),
            ));
        }
        let record = self.get(key_id, visible).await?;
        let now = self.now();
        if let Some(refusal) = state_refusal(&record, now) {
            return Err(ApiKeyError::NotValid(refusal_name(refusal)));
        }
        let want = requested.min(record.rate_limits.slice());
        let lease = self
            .store
            .lease(&record.key_id, record.rate_limits, want, now)
            .await?;
        Ok((lease, now))
    }

    /// Replaces the limits of key `key_id` (audited `apikey.limits`), only while the key
    /// still works; returns the updated record.
    pub async fn set_rate_limits(
        &self,
        actor: &Actor,
        key_id: &str,
        limits: RateLimits,
        visible: impl Fn(&str) -> bool,
    ) -> Result<ApiKeyRecord, ApiKeyError> {
        let record = self.get(key_id, visible).await?;
        let now = self.now();
        let audit = actor
            .with_reason(format!(
                "{}limits {}/min {}/h {}/day",
                reason_prefix(actor),
                limits.per_minute,
                limits.per_hour,
                limits.per_day
            ))
            .entry(now, AuditAction::ApiKeyLimits, audit_target(&record));
        if !self
            .store
            .set_api_key_rate_limits(&record.key_id, limits, now, audit)
            .await?
        {
            let refusal = state_refusal(&record, now).unwrap_or(Refusal::Unknown);
            return Err(ApiKeyError::NotValid(refusal_name(refusal)));
        }
        self.get(key_id, |_| true).await
    }

    fn count_use(&self, key_id: &str, now: UnixMillis) {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = usage.entry(key_id.to_owned()).or_insert((0, now));
        entry.0 += 1;
        entry.1 = entry.1.max(now);
    }

    /// Writes the uses gathered since the last flush, in one statement; on failure they
    /// are kept for the next one. Returns how many keys it wrote.
    pub async fn flush_usage(&self) -> Result<usize, StoreError> {
        let pending: Vec<ApiKeyUsage> = {
            let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
            usage
                .drain()
                .map(|(key_id, (count, last_used_at))| ApiKeyUsage {
                    key_id,
                    count,
                    last_used_at,
                })
                .collect()
        };
        let n_keys = pending.len();
        if n_keys == 0 {
            return Ok(0);
        }
        if let Err(error) = self.store.record_api_key_usage(pending.clone()).await {
            let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
            for use_ in pending {
                let entry = usage.entry(use_.key_id).or_insert((0, use_.last_used_at));
                entry.0 += use_.count;
                entry.1 = entry.1.max(use_.last_used_at);
            }
            return Err(error);
        }
        Ok(n_keys)
    }

    /// Flushes usage every `interval` until `shutdown` fires, then once more.
    pub async fn run_usage_flusher(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => break,
            }
            if let Err(error) = self.flush_usage().await {
                warn!(%error, "api key usage flush failed; kept for the next one");
            }
        }
        if let Err(error) = self.flush_usage().await {
            warn!(%error, "api key usage flush at shutdown failed");
        }
    }

    /// One expiry pass at the current time: active keys past their expiry become
    /// `expired`, keys entering the warning window are marked `expiring` (once each),
    /// each change audited; sets the `tessera_api_keys_expiring` gauge.
    pub async fn run_expiry(&self) -> Result<ExpiryPass, StoreError> {
        let now = self.now();
        let candidates = self
            .store
            .api_keys_expiring_by(now.plus(EXPIRING_WINDOW))
            .await?;
        let mut pass = ExpiryPass::default();
        let actor = Actor::system(uuid::Uuid::now_v7().to_string(), "api key expiry");
        for record in candidates {
            if record.expires_at <= now {
                let audit = actor.entry(now, AuditAction::ApiKeyExpire, audit_target(&record));
                if self
                    .store
                    .expire_api_key(
                        &record.key_id,
                        now,
                        audit,
                        change_of(&record, "expired", None),
                    )
                    .await?
                {
                    info!(key_id = %record.key_id, tenant = %record.tenant_id, "api key expired");
                    pass.expired += 1;
                }
                continue;
            }
            pass.expiring_now += 1;
            if record.expiring_at.is_none() {
                let audit = actor
                    .with_reason(format!(
                        "api key expiring; expires at {}",
                        record.expires_at
                    ))
                    .entry(now, AuditAction::ApiKeyExpiring, audit_target(&record));
                if self
                    .store
                    .mark_api_key_expiring(
                        &record.key_id,
                        now,
                        audit,
                        change_of(&record, "expiring", None),
                    )
                    .await?
                {
                    info!(key_id = %record.key_id, tenant = %record.tenant_id, "api key expiring");
                    metrics::counter!("tessera_api_keys_expiring_marked_total").increment(1);
                    pass.marked_expiring += 1;
                }
            }
        }
        metrics::gauge!("tessera_api_keys_expiring").set(pass.expiring_now as f64);
        Ok(pass)
    }
}

/// The event a verifier learns a key's new `state` from (public fields only).
fn change_of(
    record: &ApiKeyRecord,
    state: &str,
    grace_until: Option<UnixMillis>,
) -> CredentialChange {
    CredentialChange {
        kind: StandingKind::ApiKey,
        credential_id: record.key_id.clone(),
        tenant_id: record.tenant_id.as_str().to_owned(),
        state: state.to_owned(),
        grace_until,
        expires_at: record.expires_at,
    }
}

/// The audit target of a key: its tenant and public id (never the secret or its hash).
fn audit_target(record: &ApiKeyRecord) -> String {
    format!("apikey:{}/{}", record.tenant_id, record.key_id)
}

fn reason_prefix(actor: &Actor) -> String {
    if actor.reason.is_empty() {
        String::new()
    } else {
        format!("{}; ", actor.reason)
    }
}

/// Returns why a found key with a matching secret is refused at `now`, if it is.
fn state_refusal(record: &ApiKeyRecord, now: UnixMillis) -> Option<Refusal> {
    match record.state {
        ApiKeyState::Revoked => Some(Refusal::Revoked),
        ApiKeyState::Expired => Some(Refusal::Expired),
        _ if record.expires_at <= now => Some(Refusal::Expired),
        ApiKeyState::Rotated if record.grace_until.is_none_or(|until| until <= now) => {
            Some(Refusal::GraceEnded)
        }
        ApiKeyState::Active | ApiKeyState::Rotated => None,
    }
}

/// Names why a key no longer works, for an error message.
fn refusal_name(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Revoked => "revoked",
        Refusal::Expired => "expired",
        Refusal::GraceEnded => "rotated and past its grace",
        _ => "changed meanwhile",
    }
}

/// Returns the state a caller is told a key is in at `now` (an active key past its
/// expiry that the scheduler has not yet deactivated is already `expired`).
pub fn state_name(record: &ApiKeyRecord, now: UnixMillis) -> &'static str {
    match record.state {
        ApiKeyState::Active if record.expires_at <= now => "expired",
        state => state.as_str(),
    }
}

fn check_name(name: &str) -> Result<(), ApiKeyError> {
    if name.trim().is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    check_text("name", name, MAX_NAME_BYTES).map_err(|error| invalid("name", error.to_string()))
}

fn check_role(role: &str) -> Result<(), ApiKeyError> {
    check_text("role", role, MAX_ROLE_BYTES).map_err(|error| invalid("role", error.to_string()))
}

/// Checks a list of permissions (also the required ones of a validation).
pub fn check_permissions(permissions: &[String]) -> Result<(), ApiKeyError> {
    if permissions.len() > MAX_LIST_ENTRIES {
        return Err(invalid(
            "permissions",
            format!("at most {MAX_LIST_ENTRIES} entries"),
        ));
    }
    for permission in permissions {
        if permission.is_empty() {
            return Err(invalid("permissions", "entries must not be empty"));
        }
        check_text("permissions", permission, MAX_LIST_ENTRY_BYTES)
            .map_err(|error| invalid("permissions", error.to_string()))?;
    }
    Ok(())
}

/// Checks a role asked for in a validation.
pub fn check_required_role(role: &str) -> Result<(), ApiKeyError> {
    check_role(role)
}
