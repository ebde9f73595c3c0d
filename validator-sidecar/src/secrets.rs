//! `GetSecret` at the sidecar (issue 12, seed 003 "cached secret reads with outage
//! fallback"): managed secrets read from the issuer once, then answered from memory.
//!
//! - A name outside the `--secret` allow list ([`allow`]) is PERMISSION_DENIED here,
//!   before anything reaches the issuer: one application cannot read another's secrets
//!   through a shared issuer credential. A malformed name is INVALID_ARGUMENT.
//! - The first read of a name asks the issuer (`SecretService.ReadSecret`, always with
//!   `previous`) with the sidecar's own credential; concurrent first reads make one call
//!   between them. The issuer refusing that credential is PERMISSION_DENIED and nothing
//!   is cached; an unknown secret is NOT_FOUND, remembered for [`NEGATIVE_TTL`].
//! - Values live in memory only (never in the persisted bundle), as the answer encoded
//!   once per fetched version ([`answer`]) in memory wiped when the version is dropped.
//! - A `secret_rotated` event on the trust-bundle stream whose versions differ from the
//!   cached ones makes the cached answer outdated: it is fetched again at once in the
//!   background, and a read that comes first waits for that fetch.
//! - A cached value is *confirmed* while the stream is live (any rotation would have
//!   been pushed): its age is the time since it was fetched or the issuer was last heard
//!   from, whichever is later — unless a snapshot replaced the bundle since the fetch
//!   (events may have been missed in the gap: every cached value is then fetched again,
//!   and until that succeeds its age runs from its fetch).
//! - While the issuer is unreachable, a cached value is served with its growing
//!   `staleness_seconds` up to `--secret-max-staleness-seconds`; then the read needs
//!   the issuer again, and fails closed (UNAVAILABLE) without it. An outdated value is
//!   served during an outage only while the latest event still names it valid.

pub mod allow;
pub mod answer;
pub mod client;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tessera_common::bundle::{BundleChange, BundleEvent, TrustBundle};
use tessera_common::{Clock, UnixMillis};
use tessera_proto::v1 as pb;
use tonic::Status;
use zeroize::Zeroize;

use crate::config::IssuerConfig;
use crate::listen::BundleListener;
use crate::state::BundleState;
pub use allow::AllowList;
pub use answer::{SecretAnswer, SecretBytes};
use client::SecretClient;

/// Default of `--secret-max-staleness-seconds`.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(300);
/// A value confirmed this recently reports `staleness_seconds` 0: the issuer's default
/// heartbeat (5 s) and a margin, so a live stream always reads 0.
pub const HEARTBEAT_ALLOWANCE: Duration = Duration::from_secs(6);
/// How long an unknown secret is remembered (a secret registered since is found after
/// at most this long; its rotation event clears it sooner).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// An issuer that could not be reached is asked again for a name after this long at the
/// earliest, so an outage costs no call per read.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Most names cached; past it, names without a value are forgotten, then reads go to the
/// issuer uncached.
pub const MAX_SLOTS: usize = 10_000;
/// Largest value accepted from the issuer (its own bound).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// `GetSecret`'s settings.
#[derive(Clone, Debug)]
pub struct SecretsConfig {
    pub allow: AllowList,
    /// How long a cached value may be served without the issuer confirming it.
    pub max_staleness: Duration,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            allow: AllowList::default(),
            max_staleness: DEFAULT_MAX_STALENESS,
        }
    }
}

/// Why a read has no value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("malformed secret name")]
    BadName,
    #[error("this sidecar is not configured to read the secret")]
    NotAllowed,
    #[error("the issuer refused the sidecar's credential for this secret")]
    Refused,
    #[error("no such secret")]
    NotFound,
    #[error("the issuer is unreachable and no cached value is recent enough")]
    Unavailable,
    #[error("the issuer's answer about the secret was unusable")]
    BadAnswer,
}

impl From<SecretError> for Status {
    fn from(error: SecretError) -> Self {
        let message = error.to_string();
        match error {
            SecretError::BadName => Status::invalid_argument(message),
            SecretError::NotAllowed | SecretError::Refused => Status::permission_denied(message),
            SecretError::NotFound => Status::not_found(message),
            SecretError::Unavailable | SecretError::BadAnswer => Status::unavailable(message),
        }
    }
}

/// The secret reader; clones share one cache.
#[derive(Clone)]
pub struct Secrets {
    inner: Arc<Inner>,
}

struct Inner {
    config: SecretsConfig,
    client: SecretClient,
    slots: RwLock<HashMap<Box<str>, Arc<Slot>>>,
    bundle: Arc<BundleState>,
    clock: Arc<dyn Clock>,
    /// Snapshots applied so far.
    snapshots: AtomicU64,
}

/// One name's cache.
struct Slot {
    name: Box<str>,
    cached: RwLock<Option<Arc<Cached>>>,
    /// Held by the one fetch in flight.
    fetching: tokio::sync::Mutex<()>,
    /// A background refresh is spawned.
    refreshing: AtomicBool,
    /// Rotation events that did not match the cached versions.
    events: AtomicU64,
    /// The latest event's `(current, previous)` versions.
    latest_event: Mutex<Option<(u64, Option<u64>)>>,
    /// Fetches finished so far.
    fetches: AtomicU64,
    /// The latest failed fetch: its number, when, and why.
    failure: Mutex<Option<(u64, UnixMillis, SecretError)>>,
}

/// What one fetch found.
struct Cached {
    /// `None`: the issuer knows no such secret.
    versions: Option<Versions>,
    /// The sidecar's clock when the fetch started.
    fetched_at: UnixMillis,
    /// The slot's `events` when the fetch started.
    events: u64,
    /// The number of snapshots when the fetch started.
    snapshots: u64,
}

struct Versions {
    current: u64,
    previous: Option<u64>,
    /// The answer without `previous`.
    plain: Arc<SecretBytes>,
    /// The answer with `previous` (the plain one when there is none).
    with_previous: Arc<SecretBytes>,
}

// === impl Secrets ===

impl Secrets {
    /// Returns a reader of the secrets `config` allows, from the issuer `issuer` names.
    pub fn new(
        config: SecretsConfig,
        issuer: &IssuerConfig,
        bundle: Arc<BundleState>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, tonic::transport::Error> {
        Ok(Secrets {
            inner: Arc::new(Inner {
                config,
                client: SecretClient::new(issuer)?,
                slots: RwLock::new(HashMap::new()),
                bundle,
                clock,
                snapshots: AtomicU64::new(0),
            }),
        })
    }

    /// Answers from the cache when it can without waiting (the fast path); `None` when
    /// the read needs [`Secrets::get`].
    pub fn try_cached(
        &self,
        request: &pb::GetSecretValueRequest,
    ) -> Option<Result<SecretAnswer, Status>> {
        let inner = &self.inner;
        let slot = inner.find(&request.name)?;
        let cached = slot.cached()?;
        let now = inner.clock.now();
        let age = inner.usable_age(&slot, &cached, now)?;
        if age > HEARTBEAT_ALLOWANCE {
            self.refresh_in_background(&slot);
        }
        Some(answer(&cached, request.include_previous, age).map_err(Status::from))
    }

    /// Answers `GetSecret`.
    pub async fn get(&self, request: &pb::GetSecretValueRequest) -> Result<SecretAnswer, Status> {
        if let Some(answered) = self.try_cached(request) {
            return answered;
        }
        let name = request.name.as_str();
        if !allow::is_name(name) {
            return Err(SecretError::BadName.into());
        }
        if !self.inner.config.allow.allows(name) {
            tracing::debug!(secret = name, "secret outside the allow list");
            return Err(SecretError::NotAllowed.into());
        }
        let slot = self.inner.find_or_insert(name);
        let inner = &self.inner;
        match inner.fetch(&slot).await {
            Ok(cached) => {
                let age = inner.clock.now().since(cached.fetched_at);
                answer(&cached, request.include_previous, age).map_err(Status::from)
            }
            Err(SecretError::Unavailable) => inner
                .outage_answer(&slot, request.include_previous)
                .ok_or_else(|| SecretError::Unavailable.into()),
            Err(error) => Err(error.into()),
        }
    }

    /// Fetches `slot` again in a task of its own, unless one is already doing so.
    fn refresh_in_background(&self, slot: &Arc<Slot>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if slot.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        let slot = slot.clone();
        runtime.spawn(async move {
            let _ = inner.fetch(&slot).await;
            slot.refreshing.store(false, Ordering::Release);
        });
    }
}

impl BundleListener for Secrets {
    fn on_snapshot(&self, _now: UnixMillis, _bundle: &TrustBundle) {
        // Rotation events may have been missed in the gap: no cached value is confirmed
        // by the stream until it has been fetched again.
        self.inner.snapshots.fetch_add(1, Ordering::AcqRel);
        let slots: Vec<Arc<Slot>> = read(&self.inner.slots).values().cloned().collect();
        for slot in slots {
            if slot
                .cached()
                .is_some_and(|cached| cached.versions.is_some())
            {
                self.refresh_in_background(&slot);
            }
        }
    }

    fn on_event(&self, _now: UnixMillis, event: &BundleEvent) {
        let BundleChange::SecretRotated { change } = &event.change else {
            return;
        };
        let Some(slot) = self.inner.find(&change.name) else {
            return;
        };
        let versions = (change.current_version, change.previous_version);
        *lock(&slot.latest_event) = Some(versions);
        let held = slot.cached().and_then(|cached| {
            let held = cached.versions.as_ref()?;
            Some((held.current, held.previous))
        });
        if held == Some(versions) {
            return;
        }
        tracing::debug!(
            secret = %change.name,
            version = change.current_version,
            "secret rotated; fetching it again"
        );
        slot.events.fetch_add(1, Ordering::AcqRel);
        self.refresh_in_background(&slot);
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("allow", &self.inner.config.allow)
            .field("max_staleness", &self.inner.config.max_staleness)
            .field("n_names", &read(&self.inner.slots).len())
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl Inner {
    fn find(&self, name: &str) -> Option<Arc<Slot>> {
        read(&self.slots).get(name).cloned()
    }

    /// Returns `name`'s slot, made when absent (not kept when the map is full).
    fn find_or_insert(&self, name: &str) -> Arc<Slot> {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(name) {
            return slot.clone();
        }
        if slots.len() >= MAX_SLOTS {
            slots.retain(|_, slot| slot.cached().is_some_and(|c| c.versions.is_some()));
        }
        let slot = Arc::new(Slot::new(name));
        if slots.len() < MAX_SLOTS {
            slots.insert(name.into(), slot.clone());
        }
        slot
    }

    /// Returns how long ago `cached` was last confirmed, when it may be served at `now`
    /// without asking the issuer.
    fn usable_age(&self, slot: &Slot, cached: &Cached, now: UnixMillis) -> Option<Duration> {
        if cached.events < slot.events.load(Ordering::Acquire) {
            return None;
        }
        if cached.versions.is_none() {
            let age = now.since(cached.fetched_at);
            return (age <= NEGATIVE_TTL).then_some(age);
        }
        let age = self.age(cached, now);
        (age <= self.config.max_staleness).then_some(age)
    }

    /// Time since `cached` was fetched or, while no snapshot came since, since the
    /// stream last confirmed it.
    fn age(&self, cached: &Cached, now: UnixMillis) -> Duration {
        let mut confirmed = cached.fetched_at;
        if cached.snapshots == self.snapshots.load(Ordering::Acquire)
            && let Some(contact) = self.bundle.last_contact()
        {
            confirmed = confirmed.max(contact);
        }
        now.since(confirmed)
    }

    /// The cached answer while the issuer is unreachable: within the staleness bound,
    /// and, when events outdated it, only while the latest one names it valid.
    fn outage_answer(&self, slot: &Slot, include_previous: bool) -> Option<SecretAnswer> {
        let cached = slot.cached()?;
        let versions = cached.versions.as_ref()?;
        let age = self.age(&cached, self.clock.now());
        if age > self.config.max_staleness {
            return None;
        }
        if cached.events < slot.events.load(Ordering::Acquire) {
            let (current, previous) = (*lock(&slot.latest_event))?;
            if versions.current != current && Some(versions.current) != previous {
                return None;
            }
            // Its own `previous` may be retired by now: the current value only.
            return answer(&cached, false, age).ok();
        }
        answer(&cached, include_previous, age).ok()
    }

    /// Fetches `slot` (one fetch at a time; who waited on another's fetch takes its
    /// outcome) and caches the result.
    async fn fetch(&self, slot: &Slot) -> Result<Arc<Cached>, SecretError> {
        let seen = slot.fetches.load(Ordering::Acquire);
        let _fetching = slot.fetching.lock().await;
        let now = self.clock.now();
        let finished = slot.fetches.load(Ordering::Acquire);
        let failure = lock(&slot.failure).clone();
        if finished != seen {
            match (&failure, slot.cached()) {
                (Some((number, _, error)), _) if *number == finished => return Err(error.clone()),
                (_, Some(cached)) if cached.events == slot.events.load(Ordering::Acquire) => {
                    return Ok(cached);
                }
                _ => {}
            }
        }
        if let Some((_, at, SecretError::Unavailable)) = failure
            && now.since(at) < RETRY_AFTER_FAILURE
        {
            return Err(SecretError::Unavailable);
        }
        let events = slot.events.load(Ordering::Acquire);
        let snapshots = self.snapshots.load(Ordering::Acquire);
        let outcome = self.read_from_issuer(&slot.name).await;
        let number = slot.fetches.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::counter!(FETCHES, "outcome" => outcome_label(&outcome)).increment(1);
        match outcome {
            Ok(versions) => {
                let cached = Arc::new(Cached {
                    versions,
                    fetched_at: now,
                    events,
                    snapshots,
                });
                *write(&slot.cached) = Some(cached.clone());
                *lock(&slot.failure) = None;
                Ok(cached)
            }
            Err(error) => {
                if error == SecretError::Refused {
                    // The credential lost the scope: nothing of it may be served.
                    *write(&slot.cached) = None;
                }
                *lock(&slot.failure) = Some((number, self.clock.now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Asks the issuer for `name`: its versions, or `None` for an unknown secret.
    async fn read_from_issuer(&self, name: &str) -> Result<Option<Versions>, SecretError> {
        let response = match self.client.read(name).await {
            Ok(response) => response,
            Err(status) => {
                return match status.code() {
                    tonic::Code::NotFound => Ok(None),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                        tracing::warn!(
                            secret = name,
                            code = ?status.code(),
                            "the issuer refused the sidecar's credential for a secret (it needs `secrets:read:<name>`)"
                        );
                        Err(SecretError::Refused)
                    }
                    tonic::Code::InvalidArgument => Err(SecretError::BadName),
                    code => {
                        tracing::warn!(
                            secret = name,
                            ?code,
                            "cannot read a secret from the issuer"
                        );
                        Err(SecretError::Unavailable)
                    }
                };
            }
        };
        versions_of(name, response).map(Some)
    }
}

/// Builds the encoded answers of `response`, wiping its values.
fn versions_of(name: &str, mut response: pb::ReadSecretResponse) -> Result<Versions, SecretError> {
    let mut current = response.current.take();
    let mut previous = response.previous.take().filter(|value| value.version != 0);
    let usable =
        |value: &pb::SecretValue| value.version != 0 && value.value.len() <= MAX_VALUE_BYTES;
    let versions = match (&current, &previous) {
        (Some(now), previous)
            if response.name == name && usable(now) && previous.as_ref().is_none_or(usable) =>
        {
            let plain = answer::encode(pb::GetSecretValueResponse {
                name: name.to_owned(),
                version: now.version,
                value: now.value.clone(),
                ..Default::default()
            });
            let with_previous = match previous {
                Some(before) => answer::encode(pb::GetSecretValueResponse {
                    name: name.to_owned(),
                    version: now.version,
                    value: now.value.clone(),
                    previous_version: before.version,
                    previous_value: before.value.clone(),
                    staleness_seconds: 0,
                }),
                None => plain.clone(),
            };
            Ok(Versions {
                current: now.version,
                previous: previous.as_ref().map(|before| before.version),
                plain,
                with_previous,
            })
        }
        _ => {
            tracing::warn!(secret = name, "the issuer's ReadSecret answer is unusable");
            Err(SecretError::BadAnswer)
        }
    };
    for value in [&mut current, &mut previous].into_iter().flatten() {
        value.value.zeroize();
    }
    versions
}

/// The answer `cached` gives, `age` after its last confirmation.
fn answer(
    cached: &Cached,
    include_previous: bool,
    age: Duration,
) -> Result<SecretAnswer, SecretError> {
    let versions = cached.versions.as_ref().ok_or(SecretError::NotFound)?;
    let body = if include_previous {
        &versions.with_previous
    } else {
        &versions.plain
    };
    let staleness_seconds = if age <= HEARTBEAT_ALLOWANCE {
        0
    } else {
        u32::try_from(age.as_secs()).unwrap_or(u32::MAX)
    };
    Ok(SecretAnswer {
        body: body.clone(),
        staleness_seconds,
    })
}

/// Issuer reads of secrets, by outcome.
const FETCHES: &str = "tessera_sidecar_secret_fetches_total";

fn outcome_label(outcome: &Result<Option<Versions>, SecretError>) -> &'static str {
    match outcome {
        Ok(Some(_)) => "ok",
        Ok(None) => "not_found",
        Err(SecretError::Refused) => "refused",
        Err(SecretError::Unavailable) => "unavailable",
        Err(_) => "error",
    }
}

// === impl Slot ===

impl Slot {
    fn new(name: &str) -> Self {
        Slot {
            name: name.into(),
            cached: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
            events: AtomicU64::new(0),
            latest_event: Mutex::new(None),
            fetches: AtomicU64::new(0),
            failure: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<Arc<Cached>> {
        read(&self.cached).clone()
    }
}

// A poisoned lock only means a writer panicked between two complete assignments: what
// it holds is still whole.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_code() {
        let code = |error| Status::from(error).code();
        assert_eq!(code(SecretError::BadName), tonic::Code::InvalidArgument);
        assert_eq!(code(SecretError::NotAllowed), tonic::Code::PermissionDenied);
        assert_eq!(code(SecretError::Refused), tonic::Code::PermissionDenied);
        assert_eq!(code(SecretError::NotFound), tonic::Code::NotFound);
        assert_eq!(code(SecretError::Unavailable), tonic::Code::Unavailable);
        assert_eq!(code(SecretError::BadAnswer), tonic::Code::Unavailable);
    }

    #[test]
    fn an_unusable_answer_is_refused_and_a_good_one_encoded_with_and_without_previous() {
        let value = |version, value: &[u8]| pb::SecretValue {
            version,
            stage: 0,
            value: value.to_vec(),
        };
        let response = |name: &str, current, previous| pb::ReadSecretResponse {
            name: name.into(),
            current,
            previous,
        };
        assert!(versions_of("a", response("a", None, None)).is_err());
        assert!(versions_of("a", response("b", Some(value(1, b"x")), None)).is_err());
        assert!(versions_of("a", response("a", Some(value(0, b"x")), None)).is_err());
        let big = vec![0; MAX_VALUE_BYTES + 1];
        assert!(versions_of("a", response("a", Some(value(1, &big)), None)).is_err());
        let versions = versions_of(
            "a",
            response("a", Some(value(2, b"new")), Some(value(1, b"old"))),
        )
        .unwrap();
        assert_eq!((versions.current, versions.previous), (2, Some(1)));
        let decode = |bytes: &SecretBytes| {
            <pb::GetSecretValueResponse as prost::Message>::decode(bytes.as_bytes()).unwrap()
        };
        let plain = decode(&versions.plain);
        assert_eq!((plain.version, plain.value.as_slice()), (2, &b"new"[..]));
        assert_eq!(plain.previous_version, 0);
        let both = decode(&versions.with_previous);
        assert_eq!(both.previous_value, b"old");
        let only = versions_of("a", response("a", Some(value(3, b"v")), None)).unwrap();
        assert_eq!(decode(&only.with_previous).previous_version, 0);
    }
}
