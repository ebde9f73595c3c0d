//! `tessera.v1.ApiKeyService`: tenant API keys (see `api_keys.rs` and the proto's
//! comments). Administration (and SetApiKeyRateLimits) needs `admin`, validation and
//! LeaseApiKeyBudget `introspect`; a tenant-confined caller sees only its own tenants'
//! keys, and another tenant's key is answered like one that does not exist. A validation
//! over a key's limit is RESOURCE_EXHAUSTED with `retry-after` and `tessera-refusal:
//! RATE_LIMITED` in its trailing metadata; LeaseApiKeyBudget of a key that no longer
//! works (revoked, expired, grace ended) is FAILED_PRECONDITION.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::credential::MAX_CREDENTIAL_BYTES;
use tessera_common::ids::TenantId;
use tessera_proto::v1 as pb;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::timestamp;
use super::status::from_store;
use crate::api_keys::ratelimit::{MAX_LEASE_REQUEST, RateLimits};
use crate::api_keys::{
    self, ApiKeyError, NewApiKey, Refusal, Validated, check_permissions, check_required_role,
    is_expiring,
};
use crate::app::{App, request_id};
use crate::audit::Actor;
use crate::auth::{Caller, Scope};
use crate::store::ApiKeyRecord;

const CREATE: &str = "ApiKeyService/CreateApiKey";
const LIST: &str = "ApiKeyService/ListApiKeys";
const GET: &str = "ApiKeyService/GetApiKey";
const ROTATE: &str = "ApiKeyService/RotateApiKey";
const REVOKE: &str = "ApiKeyService/RevokeApiKey";
const VALIDATE: &str = "ApiKeyService/ValidateApiKey";
const LEASE: &str = "ApiKeyService/LeaseApiKeyBudget";
const SET_LIMITS: &str = "ApiKeyService/SetApiKeyRateLimits";

/// The ApiKeyService implementation.
pub struct ApiKeyServiceImpl {
    pub app: Arc<App>,
}

/// Maps an API-key failure to its status.
pub fn from_api_key(error: ApiKeyError) -> Status {
    match error {
        ApiKeyError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
        ApiKeyError::NotFound => Status::not_found(error.to_string()),
        ApiKeyError::NotActive(_) | ApiKeyError::NotValid(_) => {
            Status::failed_precondition(error.to_string())
        }
        ApiKeyError::RateLimited {
            retry_after_seconds,
            ..
        } => {
            let mut status = Status::resource_exhausted(error.to_string());
            // Digits and an enum name always make valid metadata values.
            let metadata = status.metadata_mut();
            if let Ok(value) = retry_after_seconds.to_string().parse() {
                metadata.insert("retry-after", value);
            }
            metadata.insert(
                "tessera-refusal",
                MetadataValue::from_static("RATE_LIMITED"),
            );
            status
        }
        ApiKeyError::Store(error) => from_store(error),
        ApiKeyError::Keyring(error) => {
            tracing::error!(%error, "api key hashing failed");
            Status::unavailable("the issuer cannot hash credentials now")
        }
    }
}

/// Returns a key's metadata as sent: never the secret or its hash.
pub fn api_key(record: &ApiKeyRecord, now: UnixMillis) -> pb::ApiKey {
    pb::ApiKey {
        key_id: record.key_id.clone(),
        tenant_id: record.tenant_id.as_str().to_owned(),
        name: record.name.clone(),
        permissions: record.permissions.clone(),
        role: record.role.clone(),
        state: api_keys::state_name(record, now).to_owned(),
        expiring: is_expiring(record, now),
        created_at: Some(timestamp(record.created_at)),
        expires_at: Some(timestamp(record.expires_at)),
        grace_until: record.grace_until.map(timestamp),
        successor_id: record.successor_id.clone().unwrap_or_default(),
        predecessor_id: record.predecessor_id.clone().unwrap_or_default(),
        last_used_at: record.last_used_at.map(timestamp),
        usage_count: record.usage_count,
        state_changed_at: record.state_at.map(timestamp),
        rate_limits: Some(rate_limits_message(record.rate_limits)),
    }
}

fn refusal_code(refusal: Refusal) -> pb::ApiKeyRefusal {
    match refusal {
        Refusal::Malformed => pb::ApiKeyRefusal::Malformed,
        Refusal::BadChecksum => pb::ApiKeyRefusal::BadChecksum,
        Refusal::Unknown => pb::ApiKeyRefusal::Unknown,
        Refusal::Revoked => pb::ApiKeyRefusal::Revoked,
        Refusal::Expired => pb::ApiKeyRefusal::Expired,
        Refusal::GraceEnded => pb::ApiKeyRefusal::GraceEnded,
        Refusal::InsufficientPermissions => pb::ApiKeyRefusal::InsufficientPermissions,
    }
}

/// Reads limits as a request states them (unset or 0: the defaults).
fn rate_limits(limits: Option<&pb::RateLimits>) -> Result<RateLimits, Status> {
    let limits = limits.copied().unwrap_or_default();
    RateLimits::from_request(limits.per_minute, limits.per_hour, limits.per_day)
        .map_err(|error| Status::invalid_argument(error.to_string()))
}

/// Returns limits as sent.
fn rate_limits_message(limits: RateLimits) -> pb::RateLimits {
    pb::RateLimits {
        per_minute: limits.per_minute,
        per_hour: limits.per_hour,
        per_day: limits.per_day,
    }
}

/// A duration in whole milliseconds as sent (a lease lasts at most a minute).
fn millis_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

fn millis(at: &prost_types::Timestamp) -> Result<UnixMillis, Status> {
    at.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(at.nanos / 1_000_000)))
        .map(UnixMillis)
        .ok_or_else(|| Status::invalid_argument("expires_at: out of range"))
}

impl ApiKeyServiceImpl {
    async fn caller<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        scope: Scope,
    ) -> Result<(Caller, String), Status> {
        let caller = self.app.authorize(request, rpc, scope).await?;
        Ok((caller, request_id(request)))
    }
}

#[tonic::async_trait]
impl pb::api_key_service_server::ApiKeyService for ApiKeyServiceImpl {
    #[instrument(skip(self, request))]
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let (caller, request_id) = self.caller(&request, CREATE, Scope::Admin).await?;
        let message = request.into_inner();
        let tenant = TenantId::new(&message.tenant_id)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        self.app
            .check_tenant(&caller, tenant.as_str(), CREATE, &request_id)
            .await?;
        super::reason::optional_reason(&message.reason)?;
        let expires_at = message.expires_at.as_ref().map(millis).transpose()?;
        let rate_limits = rate_limits(message.rate_limits.as_ref())?;
        let actor = Actor::client(caller.client_id.clone(), request_id, message.reason);
        let (record, credential) = self
            .app
            .api_keys
            .create(
                &actor,
                NewApiKey {
                    tenant_id: tenant,
                    name: message.name,
                    permissions: message.permissions,
                    role: message.role,
                    expires_at,
                    rate_limits,
                },
            )
            .await
            .map_err(from_api_key)?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(api_key(&record, self.app.now())),
            key: credential.expose(),
        }))
    }

    #[instrument(skip(self, request))]
    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let (caller, request_id) = self.caller(&request, LIST, Scope::Admin).await?;
        let message = request.into_inner();
        let tenant = if message.tenant_id.is_empty() {
            None
        } else {
            let tenant = TenantId::new(&message.tenant_id)
                .map_err(|error| Status::invalid_argument(error.to_string()))?;
            self.app
                .check_tenant(&caller, tenant.as_str(), LIST, &request_id)
                .await?;
            Some(tenant)
        };
        let visible = |tenant: &str| caller.may_act_on(tenant);
        let records = match tenant {
            // A confined caller's keys are read tenant by tenant, never every tenant's.
            None if caller.is_confined() => {
                let mut records = Vec::new();
                for tenant in caller.tenants.iter().filter_map(|t| TenantId::new(t).ok()) {
                    records.extend(
                        self.app
                            .api_keys
                            .list(Some(&tenant), visible)
                            .await
                            .map_err(from_api_key)?,
                    );
                }
                records
            }
            tenant => self
                .app
                .api_keys
                .list(tenant.as_ref(), visible)
                .await
                .map_err(from_api_key)?,
        };
        let now = self.app.now();
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: records.iter().map(|record| api_key(record, now)).collect(),
        }))
    }

    #[instrument(skip(self, request))]
    async fn get_api_key(
        &self,
        request: Request<pb::GetApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let (caller, _) = self.caller(&request, GET, Scope::Admin).await?;
        let record = self
            .app
            .api_keys
            .get(&request.get_ref().key_id, |tenant| {
                caller.may_act_on(tenant)
            })
            .await
            .map_err(from_api_key)?;
        Ok(Response::new(api_key(&record, self.app.now())))
    }

    #[instrument(skip(self, request))]
    async fn rotate_api_key(
        &self,
        request: Request<pb::RotateApiKeyRequest>,
    ) -> Result<Response<pb::RotateApiKeyResponse>, Status> {
        let (caller, request_id) = self.caller(&request, ROTATE, Scope::Admin).await?;
        let message = request.into_inner();
        super::reason::optional_reason(&message.reason)?;
        let grace = (message.grace_seconds > 0).then(|| Duration::from_secs(message.grace_seconds));
        let actor = Actor::client(caller.client_id.clone(), request_id, message.reason);
        let visible = |tenant: &str| caller.may_act_on(tenant);
        let (successor, credential) = self
            .app
            .api_keys
            .rotate(&actor, &message.key_id, grace, visible)
            .await
            .map_err(from_api_key)?;
        let predecessor = self
            .app
            .api_keys
            .get(&message.key_id, visible)
            .await
            .map_err(from_api_key)?;
        let now = self.app.now();
        Ok(Response::new(pb::RotateApiKeyResponse {
            api_key: Some(api_key(&successor, now)),
            key: credential.expose(),
            predecessor: Some(api_key(&predecessor, now)),
        }))
    }

    #[instrument(skip(self, request))]
    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let (caller, request_id) = self.caller(&request, REVOKE, Scope::Admin).await?;
        let message = request.into_inner();
        super::reason::optional_reason(&message.reason)?;
        let actor = Actor::client(caller.client_id.clone(), request_id, message.reason);
        let record = self
            .app
            .api_keys
            .revoke(&actor, &message.key_id, |tenant| caller.may_act_on(tenant))
            .await
            .map_err(from_api_key)?;
        Ok(Response::new(api_key(&record, self.app.now())))
    }

    #[instrument(skip(self, request))]
    async fn lease_api_key_budget(
        &self,
        request: Request<pb::LeaseApiKeyBudgetRequest>,
    ) -> Result<Response<pb::LeaseApiKeyBudgetResponse>, Status> {
        let (caller, _) = self.caller(&request, LEASE, Scope::Introspect).await?;
        let message = request.into_inner();
        let (lease, now) = self
            .app
            .api_keys
            .lease(&message.key_id, message.requested, |tenant| {
                caller.may_act_on(tenant)
            })
            .await
            .map_err(from_api_key)?;
        Ok(Response::new(pb::LeaseApiKeyBudgetResponse {
            granted: lease.granted,
            valid_for_ms: millis_u32(lease.valid_for(now)),
            retry_after_seconds: lease
                .exhausted
                .map_or(0, |exhausted| exhausted.retry_after_seconds(now)),
            exhausted_window: lease
                .exhausted
                .map(|exhausted| exhausted.window.as_str().to_owned())
                .unwrap_or_default(),
        }))
    }

    #[instrument(skip(self, request))]
    async fn set_api_key_rate_limits(
        &self,
        request: Request<pb::SetApiKeyRateLimitsRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let (caller, request_id) = self.caller(&request, SET_LIMITS, Scope::Admin).await?;
        let message = request.into_inner();
        super::reason::optional_reason(&message.reason)?;
        let limits = rate_limits(message.rate_limits.as_ref())?;
        let actor = Actor::client(caller.client_id.clone(), request_id, message.reason);
        let record = self
            .app
            .api_keys
            .set_rate_limits(&actor, &message.key_id, limits, |tenant| {
                caller.may_act_on(tenant)
            })
            .await
            .map_err(from_api_key)?;
        Ok(Response::new(api_key(&record, self.app.now())))
    }

    #[instrument(skip(self, request))]
    async fn validate_api_key(
        &self,
        request: Request<pb::ValidateApiKeyRequest>,
    ) -> Result<Response<pb::ValidateApiKeyResponse>, Status> {
        let (caller, _) = self.caller(&request, VALIDATE, Scope::Introspect).await?;
        let message = request.into_inner();
        if message.key.len() > MAX_CREDENTIAL_BYTES {
            return Err(Status::invalid_argument(format!(
                "key: at most {MAX_CREDENTIAL_BYTES} bytes"
            )));
        }
        check_permissions(&message.required_permissions)
            .and_then(|()| check_required_role(&message.required_role))
            .map_err(from_api_key)?;
        if message.lease_admissions > MAX_LEASE_REQUEST {
            return Err(Status::invalid_argument(format!(
                "lease_admissions: at most {MAX_LEASE_REQUEST}"
            )));
        }
        let verdict = self
            .app
            .api_keys
            .validate_leasing(
                &message.key,
                &message.required_permissions,
                &message.required_role,
                message.lease_admissions,
                |tenant| caller.may_act_on(tenant),
            )
            .await
            .map_err(|error| {
                if matches!(error, ApiKeyError::RateLimited { .. }) {
                    metrics::counter!("tessera_api_key_validations_total",
                        "outcome" => "api_key_refusal_rate_limited")
                    .increment(1);
                }
                from_api_key(error)
            })?;
        let response = match verdict {
            Ok(Validated {
                key: valid,
                leased_admissions,
                lease_valid_until,
            }) => {
                metrics::counter!("tessera_api_key_validations_total", "outcome" => "valid")
                    .increment(1);
                pb::ValidateApiKeyResponse {
                    valid: true,
                    refusal: pb::ApiKeyRefusal::Unspecified as i32,
                    key_id: valid.key_id,
                    tenant_id: valid.tenant_id.as_str().to_owned(),
                    permissions: valid.permissions,
                    role: valid.role,
                    expires_at: Some(timestamp(valid.expires_at)),
                    grace_until: valid.grace_until.map(timestamp),
                    leased_admissions,
                    lease_valid_for_ms: if leased_admissions > 0 {
                        millis_u32(lease_valid_until.since(self.app.now()))
                    } else {
                        0
                    },
                }
            }
            Err(refusal) => {
                let code = refusal_code(refusal);
                metrics::counter!("tessera_api_key_validations_total",
                    "outcome" => code.as_str_name().to_ascii_lowercase())
                .increment(1);
                pb::ValidateApiKeyResponse {
                    valid: false,
                    refusal: code as i32,
                    ..Default::default()
                }
            }
        };
        Ok(Response::new(response))
    }
}
