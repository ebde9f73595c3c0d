//! `ValidateApiKey` at the sidecar (issue 10): the issuer's contract, answered mostly
//! from memory.
//!
//! - Bounds, shape and checksum are checked here ([`crate::credential_request`]): a typo
//!   or a forgery never leaves the pod, and another kind of credential is MALFORMED.
//! - The first sight of a key (by its keyed digest, [`crate::credcache`]) is verified by
//!   the issuer — one call however many requests present it at once — asking for
//!   [`LEASE_REQUEST`] admissions of rate-limit budget with it. The answer is cached for
//!   `--api-key-cache-ttl-seconds`, never past the key's expiry or grace period, and
//!   dropped when the issuer pushes a change of the key or an emergency revocation of
//!   its tenant, or after a snapshot.
//! - Permissions and role are checked locally against the cached answer, after the
//!   admission is spent (as at the issuer: a working key's call costs its admission).
//! - Every other validation of a working key spends one admission of the lease ([`crate::lease`]);
//!   an empty or expired lease asks the issuer for more (one call per key at a time).
//!   Nothing granted: RESOURCE_EXHAUSTED with `retry-after` and `tessera-refusal:
//!   RATE_LIMITED` trailers, remembered until `retry-after`. The issuer's own
//!   RESOURCE_EXHAUSTED on a first sight is passed on (its `retry-after`, and
//!   `tessera-refusal`, nothing else of its metadata) and remembered the same way.
//!   Without an issuer to lease from, a key whose lease is spent is UNAVAILABLE: its
//!   limits cannot be enforced.
//! - Refusals that cannot change (revoked, expired, grace ended) and unknown keys are
//!   cached for [`NEGATIVE_TTL`]: a client replaying one bogus or dead key costs the
//!   issuer one call per few seconds, not one per request. (Distinct bogus keys each
//!   cost a call; the issuer's own limits bound those.) An unknown key cannot become
//!   valid later: keys are created with a fresh random id and secret.
//! - No answer is ever made up: an issuer that cannot be asked on a miss is UNAVAILABLE.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_common::credential::CredentialKind;
use tessera_common::{Clock, UnixMillis};
use tessera_proto::v1 as pb;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::convert::millis;
use crate::credcache::{CredentialCache, Entry, Purges, bounded_ttl};
use crate::credential_request::{Shape, check_bounds, satisfies, shape};
use crate::issuer_client::IssuerClient;
use crate::lease::{Budget, Spend};
use crate::metrics;

/// Admissions asked for with a first sight and with each lease: the most the issuer grants
/// (it caps a grant at the key's slice, 5 % of its per-minute limit), so a busy key costs
/// as few lease round trips as its limits allow.
pub const LEASE_REQUEST: u32 = 1_000;
/// The `tessera-refusal` trailer of a rate-limited validation, as the issuer sends it.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// How long a refusal is cached.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The cached answer about one key.
// Lives behind the cache's `Arc`, built once and never moved: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum KeyAnswer {
    Valid {
        /// The answer as the issuer gave it, without its lease.
        response: pb::ValidateApiKeyResponse,
        /// `response` protobuf-encoded once: a cache hit copies these bytes into the
        /// frame instead of cloning and encoding the message per call.
        encoded: Arc<[u8]>,
        expires_at: Option<UnixMillis>,
        grace_until: Option<UnixMillis>,
        budget: Budget,
    },
    Refused(pb::ApiKeyRefusal),
    /// The issuer refused the first sight over a rate limit: remembered until its
    /// `retry-after`, so a hammering client costs no issuer call per request.
    Throttled {
        until: Instant,
    },
}

impl KeyAnswer {
    /// A positive answer is usable until the key expires or its grace period ends.
    fn usable(&self, now: UnixMillis) -> bool {
        match self {
            KeyAnswer::Valid {
                expires_at,
                grace_until,
                ..
            } => [expires_at, grace_until]
                .into_iter()
                .flatten()
                .all(|deadline| now < *deadline),
            KeyAnswer::Refused(_) | KeyAnswer::Throttled { .. } => true,
        }
    }
}

/// A `ValidateApiKeyResponse` as sent: a positive answer's bytes encoded once when the
/// issuer's answer was cached, or a message built for this call (refusals).
#[derive(Clone, Debug)]
pub enum ApiKeyAnswer {
    Encoded(Arc<[u8]>),
    Message(pb::ValidateApiKeyResponse),
}

impl From<pb::ValidateApiKeyResponse> for ApiKeyAnswer {
    fn from(message: pb::ValidateApiKeyResponse) -> Self {
        ApiKeyAnswer::Message(message)
    }
}

impl crate::answer::EncodeAnswer for ApiKeyAnswer {
    fn encode(&self, buf: &mut impl prost::bytes::BufMut) {
        match self {
            ApiKeyAnswer::Encoded(bytes) => buf.put_slice(bytes),
            ApiKeyAnswer::Message(message) => {
                // The frame buffer grows as needed; encoding cannot run out of room.
                let _ = prost::Message::encode(message, buf);
            }
        }
    }
}

/// The API-key validator.
#[derive(Debug)]
pub struct ApiKeys {
    cache: Arc<CredentialCache<KeyAnswer>>,
    issuer: IssuerClient,
    ttl: Duration,
}

/// What spending from a key's lease came to.
enum Admission {
    Admitted,
    Exhausted(u64),
    /// The issuer no longer knows the key as valid: verify it again.
    Revalidate,
    Failed(Status),
}

impl ApiKeys {
    /// Returns a validator caching answers for `ttl`.
    pub fn new(
        issuer: IssuerClient,
        purges: Arc<Purges>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
    ) -> Self {
        ApiKeys {
            cache: CredentialCache::new(purges, clock),
            issuer,
            ttl,
        }
    }

    /// Answers one `ValidateApiKey`.
    pub async fn validate(
        &self,
        request: &pb::ValidateApiKeyRequest,
    ) -> Result<ApiKeyAnswer, Status> {
        check_bounds(
            &request.key,
            &request.required_permissions,
            &[("required_role", &request.required_role)],
        )?;
        let text = request.key.trim();
        let key_id = match shape(text, &[CredentialKind::ApiKey]) {
            Shape::Ok { id, .. } => id,
            Shape::Malformed => return Ok(local(pb::ApiKeyRefusal::Malformed).into()),
            Shape::BadChecksum => return Ok(local(pb::ApiKeyRefusal::BadChecksum).into()),
        };
        // A second round only when a lease call finds the key no longer valid.
        for _ in 0..2 {
            let found = self
                .cache
                .get_or_fetch(
                    text,
                    key_id,
                    |entry, now| entry.value.usable(now),
                    |now| self.fetch(text, key_id, now),
                )
                .await?;
            let source = if found.fetched_here {
                "issuer"
            } else {
                "cache"
            };
            metrics::record_credential_validation("api_key", source);
            let (response, encoded, budget) = match &found.entry.value {
                KeyAnswer::Refused(refusal) => return Ok(refused(*refusal).into()),
                KeyAnswer::Throttled { until } => {
                    metrics::record_api_key_admission(false);
                    let left = until.saturating_duration_since(Instant::now());
                    return Err(rate_limited(whole_seconds(left)));
                }
                KeyAnswer::Valid {
                    response,
                    encoded,
                    budget,
                    ..
                } => (response, encoded, budget),
            };
            // The issuer counted this validation's admission when it verified the key.
            // As at the issuer, a working key's call costs its admission before its
            // permissions are judged: a caller probing permissions spends its budget too.
            let admission = if found.fetched_here {
                Admission::Admitted
            } else {
                self.admit(key_id, budget).await
            };
            match admission {
                Admission::Admitted => {
                    metrics::record_api_key_admission(true);
                    if !satisfies(
                        &response.permissions,
                        &response.role,
                        &request.required_permissions,
                        &request.required_role,
                    ) {
                        return Ok(refused(pb::ApiKeyRefusal::InsufficientPermissions).into());
                    }
                    return Ok(ApiKeyAnswer::Encoded(Arc::clone(encoded)));
                }
                Admission::Exhausted(retry_after_secs) => {
                    metrics::record_api_key_admission(false);
                    return Err(rate_limited(retry_after_secs));
                }
                Admission::Revalidate => self.cache.forget(text).await,
                Admission::Failed(status) => return Err(status),
            }
        }
        Err(Status::unavailable(
            "the issuer's answers about this key keep changing; retry",
        ))
    }

    /// Asks the issuer about `text` (a first sight), at `now` on the sidecar's clock.
    async fn fetch(
        &self,
        text: &str,
        key_id: &str,
        now: UnixMillis,
    ) -> Result<Entry<KeyAnswer>, Status> {
        let request = pb::ValidateApiKeyRequest {
            key: text.to_owned(),
            required_permissions: Vec::new(),
            required_role: String::new(),
            lease_admissions: LEASE_REQUEST,
        };
        let mut response = match self.issuer.validate_api_key(request).await {
            Ok(response) => response,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                let retry_after = Duration::from_secs(retry_after_of(&status));
                return Ok(Entry {
                    value: KeyAnswer::Throttled {
                        until: Instant::now() + retry_after,
                    },
                    credential_id: key_id.to_owned(),
                    tenant_id: None,
                    verified_at: now,
                    ttl: retry_after,
                });
            }
            Err(status) => return Err(unavailable(&status)),
        };
        let received = Instant::now();
        if !response.valid {
            let refusal =
                pb::ApiKeyRefusal::try_from(response.refusal).unwrap_or(pb::ApiKeyRefusal::Unknown);
            return Ok(Entry {
                value: KeyAnswer::Refused(refusal),
                credential_id: key_id.to_owned(),
                tenant_id: None,
                verified_at: now,
                ttl: negative_ttl(refusal),
            });
        }
        let expires_at = response.expires_at.as_ref().map(millis);
        let grace_until = response.grace_until.as_ref().map(millis);
        let budget = Budget::new(
            received,
            response.leased_admissions,
            Duration::from_millis(response.lease_valid_for_ms.into()),
        );
        // The lease is the sidecar's, not the application's.
        response.leased_admissions = 0;
        response.lease_valid_for_ms = 0;
        Ok(Entry {
            tenant_id: Some(response.tenant_id.clone()),
            credential_id: key_id.to_owned(),
            verified_at: now,
            ttl: bounded_ttl(now, self.ttl, &[expires_at, grace_until]),
            value: KeyAnswer::Valid {
                encoded: prost::Message::encode_to_vec(&response).into(),
                response,
                expires_at,
                grace_until,
                budget,
            },
        })
    }

    /// Spends one admission of `key_id`'s lease, leasing more when it is spent.
    async fn admit(&self, key_id: &str, budget: &Budget) -> Admission {
        let spent = |spend| match spend {
            Spend::Admitted => Some(Admission::Admitted),
            Spend::Exhausted { retry_after_secs } => Some(Admission::Exhausted(retry_after_secs)),
            Spend::NeedLease => None,
        };
        if let Some(admission) = spent(budget.try_spend(Instant::now())) {
            return admission;
        }
        // One lease call per key at a time; who waited finds the new lease.
        let _refill = budget.refill.lock().await;
        if let Some(admission) = spent(budget.try_spend(Instant::now())) {
            return admission;
        }
        let request = pb::LeaseApiKeyBudgetRequest {
            key_id: key_id.to_owned(),
            requested: LEASE_REQUEST,
        };
        match self.issuer.lease_api_key_budget(request).await {
            Ok(lease) if lease.granted > 0 => {
                let valid_for = Duration::from_millis(lease.valid_for_ms.into());
                budget.grant(Instant::now(), lease.granted, valid_for);
                Admission::Admitted
            }
            Ok(lease) => {
                Admission::Exhausted(budget.refuse(Instant::now(), lease.retry_after_seconds))
            }
            // Revoked, expired or gone since it was cached: the issuer says which.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) =>
            {
                Admission::Revalidate
            }
            Err(status) => Admission::Failed(unavailable(&status)),
        }
    }
}

fn negative_ttl(refusal: pb::ApiKeyRefusal) -> Duration {
    match refusal {
        pb::ApiKeyRefusal::Unknown
        | pb::ApiKeyRefusal::Revoked
        | pb::ApiKeyRefusal::Expired
        | pb::ApiKeyRefusal::GraceEnded => NEGATIVE_TTL,
        // Not expected without required permissions: never kept.
        _ => Duration::ZERO,
    }
}

/// A refusal decided locally.
fn local(refusal: pb::ApiKeyRefusal) -> pb::ValidateApiKeyResponse {
    metrics::record_credential_validation("api_key", "local");
    refused(refusal)
}

fn refused(refusal: pb::ApiKeyRefusal) -> pb::ValidateApiKeyResponse {
    pb::ValidateApiKeyResponse {
        valid: false,
        refusal: refusal as i32,
        ..Default::default()
    }
}

/// RESOURCE_EXHAUSTED with the issuer's trailers: `retry-after` (whole seconds) and
/// `tessera-refusal: RATE_LIMITED`.
pub fn rate_limited(retry_after_secs: u64) -> Status {
    let seconds = retry_after_secs.max(1);
    let mut status = Status::resource_exhausted(format!(
        "the key is over its rate limit: retry after {seconds} s"
    ));
    // Digits and an enum name always make valid header values.
    if let Ok(value) = seconds.to_string().parse() {
        status.metadata_mut().insert("retry-after", value);
    }
    status
        .metadata_mut()
        .insert("tessera-refusal", MetadataValue::from_static(RATE_LIMITED));
    status
}

/// Rounds `duration` up to whole seconds, at least 1.
fn whole_seconds(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}

/// Reads the issuer's `retry-after` (1 s when absent or unreadable; at most a day, the
/// longest window). Only that value is
/// passed on: the issuer's other trailers are not the application's business.
fn retry_after_of(status: &Status) -> u64 {
    status
        .metadata()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(1)
        .clamp(1, 86_400)
}

/// UNAVAILABLE for an issuer that could not answer (its status is logged by the client).
pub fn unavailable(status: &Status) -> Status {
    Status::unavailable(format!(
        "the issuer could not verify the credential ({:?}); retry",
        status.code()
    ))
}
