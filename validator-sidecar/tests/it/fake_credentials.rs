//! The fake issuer's `ApiKeyService` and `ServiceTokenService`: what the sidecar calls on
//! first sights, for leases and for its service token, behaving per the proto contract
//! (refusals are answers, RESOURCE_EXHAUSTED with `retry-after` and `tessera-refusal`
//! over a limit, NOT_FOUND for a lease of an unknown key, FAILED_PRECONDITION for a
//! revoked one, confirmation revokes the predecessor and pushes it). Every call is
//! counted, so tests can tell what reached the issuer. Only the methods the sidecar calls
//! are implemented; the others answer UNIMPLEMENTED.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_common::credential::{Credential, CredentialKind};
use tessera_proto::v1 as pb;
use tessera_proto::v1::api_key_service_server::ApiKeyService;
use tessera_proto::v1::service_token_service_server::ServiceTokenService;
use tonic::{Request, Response, Status};

use crate::fake_issuer::{CREDENTIAL, timestamp};
use crate::keys::now_ms;

/// Pushes a `CredentialChanged` event on the fake's trust-bundle stream.
pub type Push = Box<dyn Fn(pb::CredentialChange) + Send + Sync>;

/// How many calls of each RPC reached the fake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub validate_api_key: usize,
    pub lease: usize,
    pub validate_service_token: usize,
    pub issue: usize,
    pub confirm: usize,
}

struct FakeKey {
    answer: pb::ValidateApiKeyResponse,
    /// Set once refused for good (revoked, expired).
    refusal: Option<pb::ApiKeyRefusal>,
    /// Admissions left (`None`: unlimited).
    budget: Option<u32>,
    retry_after_seconds: u32,
    lease_valid_for_ms: u32,
}

struct FakeIdentity {
    permissions: Vec<String>,
    role: String,
    ttl_ms: i64,
}

struct FakeToken {
    text: String,
    info: pb::OpaqueTokenInfo,
}

/// The state behind both services.
pub struct FakeCredentials {
    keys: Mutex<HashMap<String, FakeKey>>,
    identities: Mutex<HashMap<(String, String), FakeIdentity>>,
    /// By token id.
    tokens: Mutex<HashMap<String, FakeToken>>,
    validate_api_key: AtomicUsize,
    lease: AtomicUsize,
    validate_service_token: AtomicUsize,
    issue: AtomicUsize,
    confirm: AtomicUsize,
    pub issues: Mutex<Vec<pb::IssueServiceTokenRequest>>,
    pub confirms: Mutex<Vec<String>>,
    /// Every credential RPC answers UNAVAILABLE.
    failing: AtomicBool,
    /// IssueServiceToken answers UNAVAILABLE.
    issue_failing: AtomicBool,
    /// Each validation takes this long (makes concurrent first sights overlap).
    delay: Mutex<Duration>,
    push: Push,
}

fn authorized<T>(request: &Request<T>) -> Result<(), Status> {
    let expected = format!("Bearer {CREDENTIAL}");
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    if presented != Some(expected.as_str()) {
        return Err(Status::unauthenticated("bad credential"));
    }
    Ok(())
}

impl FakeCredentials {
    pub fn new(push: Push) -> Arc<Self> {
        Arc::new(FakeCredentials {
            keys: Mutex::default(),
            identities: Mutex::default(),
            tokens: Mutex::default(),
            validate_api_key: AtomicUsize::new(0),
            lease: AtomicUsize::new(0),
            validate_service_token: AtomicUsize::new(0),
            issue: AtomicUsize::new(0),
            confirm: AtomicUsize::new(0),
            issues: Mutex::default(),
            confirms: Mutex::default(),
            failing: AtomicBool::new(false),
            issue_failing: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
            push,
        })
    }

    /// Returns the calls so far.
    pub fn calls(&self) -> Calls {
        Calls {
            validate_api_key: self.validate_api_key.load(Ordering::SeqCst),
            lease: self.lease.load(Ordering::SeqCst),
            validate_service_token: self.validate_service_token.load(Ordering::SeqCst),
            issue: self.issue.load(Ordering::SeqCst),
            confirm: self.confirm.load(Ordering::SeqCst),
        }
    }

    /// Makes every credential RPC fail (UNAVAILABLE), or work again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes IssueServiceToken fail (UNAVAILABLE), or work again.
    pub fn set_issue_failing(&self, failing: bool) {
        self.issue_failing.store(failing, Ordering::SeqCst);
    }

    /// Makes each validation take `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Creates an API key of `tenant` (unlimited budget) and returns its text.
    pub fn add_api_key(&self, tenant: &str, permissions: &[&str], role: &str) -> String {
        let credential = Credential::generate(CredentialKind::ApiKey);
        let answer = pb::ValidateApiKeyResponse {
            valid: true,
            key_id: credential.id.clone(),
            tenant_id: tenant.into(),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            role: role.into(),
            expires_at: Some(timestamp(now_ms() + 86_400_000)),
            ..Default::default()
        };
        let text = credential.expose();
        self.keys.lock().unwrap().insert(
            text.clone(),
            FakeKey {
                answer,
                refusal: None,
                budget: None,
                retry_after_seconds: 7,
                lease_valid_for_ms: 60_000,
            },
        );
        text
    }

    /// Limits `key` to `admissions` more admissions; over them the issuer says retry
    /// after `retry_after_seconds`.
    pub fn set_budget(&self, key: &str, admissions: u32, retry_after_seconds: u32) {
        let mut keys = self.keys.lock().unwrap();
        let fake = keys.get_mut(key).unwrap();
        fake.budget = Some(admissions);
        fake.retry_after_seconds = retry_after_seconds;
    }

    /// Revokes `key` and pushes the change.
    pub fn revoke_api_key(&self, key: &str) {
        let change = {
            let mut keys = self.keys.lock().unwrap();
            let fake = keys.get_mut(key).unwrap();
            fake.refusal = Some(pb::ApiKeyRefusal::Revoked);
            pb::CredentialChange {
                kind: pb::CredentialKind::ApiKey as i32,
                credential_id: fake.answer.key_id.clone(),
                tenant_id: fake.answer.tenant_id.clone(),
                state: "revoked".into(),
                grace_until: None,
                expires_at: fake.answer.expires_at,
            }
        };
        (self.push)(change);
    }

    /// Declares a service identity whose tokens live `ttl`.
    pub fn add_identity(&self, tenant: &str, service: &str, permissions: &[&str], ttl: Duration) {
        self.identities.lock().unwrap().insert(
            (tenant.into(), service.into()),
            FakeIdentity {
                permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
                role: "service".into(),
                ttl_ms: ttl.as_millis() as i64,
            },
        );
    }

    /// Issues a token of `kind` (service or webhook) for `subject` of `tenant`, living
    /// `ttl`, and returns its text.
    pub fn add_opaque_token(
        &self,
        kind: CredentialKind,
        tenant: &str,
        subject: &str,
        permissions: &[&str],
        ttl: Duration,
    ) -> String {
        let (text, info) = self.mint(
            kind,
            tenant,
            subject,
            permissions.iter().map(|p| (*p).to_owned()).collect(),
            "hook".into(),
            ttl.as_millis() as i64,
        );
        self.tokens.lock().unwrap().insert(
            info.token_id.clone(),
            FakeToken {
                text: text.clone(),
                info,
            },
        );
        text
    }

    fn mint(
        &self,
        kind: CredentialKind,
        tenant: &str,
        subject: &str,
        permissions: Vec<String>,
        role: String,
        ttl_ms: i64,
    ) -> (String, pb::OpaqueTokenInfo) {
        let credential = Credential::generate(kind);
        let now = now_ms();
        let info = pb::OpaqueTokenInfo {
            token_id: credential.id.clone(),
            kind: if kind == CredentialKind::Webhook {
                "webhook".into()
            } else {
                "service".into()
            },
            tenant_id: tenant.into(),
            subject: subject.into(),
            permissions,
            role,
            state: "active".into(),
            issued_at: Some(timestamp(now)),
            expires_at: Some(timestamp(now + ttl_ms)),
            renew_at: Some(timestamp(now + ttl_ms * 8 / 10)),
            ..Default::default()
        };
        (credential.expose(), info)
    }

    /// Revokes the token `token_id` and pushes the change.
    pub fn revoke_token(&self, token_id: &str) {
        let change = {
            let mut tokens = self.tokens.lock().unwrap();
            let token = tokens.get_mut(token_id).unwrap();
            token.info.state = "revoked".into();
            change_of(&token.info)
        };
        (self.push)(change);
    }

    /// Revokes the token `token_id` without pushing it (as if the event were lost).
    pub fn revoke_token_quietly(&self, token_id: &str) {
        let mut tokens = self.tokens.lock().unwrap();
        tokens.get_mut(token_id).unwrap().info.state = "revoked".into();
    }

    /// Returns the info of token `token_id`.
    pub fn token_info(&self, token_id: &str) -> Option<pb::OpaqueTokenInfo> {
        self.tokens
            .lock()
            .unwrap()
            .get(token_id)
            .map(|token| token.info.clone())
    }

    async fn enter<T>(&self, request: &Request<T>, counter: &AtomicUsize) -> Result<(), Status> {
        authorized(request)?;
        counter.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(Status::unavailable("fake issuer: failing on purpose"));
        }
        Ok(())
    }
}

fn change_of(info: &pb::OpaqueTokenInfo) -> pb::CredentialChange {
    let kind = if info.kind == "webhook" {
        pb::CredentialKind::WebhookToken
    } else {
        pb::CredentialKind::ServiceToken
    };
    pb::CredentialChange {
        kind: kind as i32,
        credential_id: info.token_id.clone(),
        tenant_id: info.tenant_id.clone(),
        state: info.state.clone(),
        grace_until: None,
        expires_at: info.expires_at,
    }
}

fn rate_limited(retry_after_seconds: u32) -> Status {
    let mut status = Status::resource_exhausted("over the key's rate limit");
    status.metadata_mut().insert(
        "retry-after",
        retry_after_seconds.to_string().parse().unwrap(),
    );
    status
        .metadata_mut()
        .insert("tessera-refusal", "RATE_LIMITED".parse().unwrap());
    // An issuer trailer the sidecar must not pass on.
    status
        .metadata_mut()
        .insert("x-issuer-internal", "secret-ish".parse().unwrap());
    status
}

/// The `ApiKeyService` face.
pub struct ApiKeys(pub Arc<FakeCredentials>);

#[tonic::async_trait]
impl ApiKeyService for ApiKeys {
    async fn create_api_key(
        &self,
        _: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_api_keys(
        &self,
        _: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_api_key(
        &self,
        _: Request<pb::GetApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn rotate_api_key(
        &self,
        _: Request<pb::RotateApiKeyRequest>,
    ) -> Result<Response<pb::RotateApiKeyResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn revoke_api_key(
        &self,
        _: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn validate_api_key(
        &self,
        request: Request<pb::ValidateApiKeyRequest>,
    ) -> Result<Response<pb::ValidateApiKeyResponse>, Status> {
        let fake = &self.0;
        fake.enter(&request, &fake.validate_api_key).await?;
        let request = request.into_inner();
        let refused = |refusal: pb::ApiKeyRefusal| {
            Ok(Response::new(pb::ValidateApiKeyResponse {
                valid: false,
                refusal: refusal as i32,
                ..Default::default()
            }))
        };
        let mut keys = fake.keys.lock().unwrap();
        let Some(key) = keys.get_mut(&request.key) else {
            return refused(pb::ApiKeyRefusal::Unknown);
        };
        if let Some(refusal) = key.refusal {
            return refused(refusal);
        }
        let leased = match &mut key.budget {
            None => request.lease_admissions,
            Some(0) => return Err(rate_limited(key.retry_after_seconds)),
            Some(left) => {
                *left -= 1;
                let leased = request.lease_admissions.min(*left);
                *left -= leased;
                leased
            }
        };
        let has = request
            .required_permissions
            .iter()
            .all(|p| key.answer.permissions.contains(p));
        if !has || (!request.required_role.is_empty() && request.required_role != key.answer.role) {
            return refused(pb::ApiKeyRefusal::InsufficientPermissions);
        }
        Ok(Response::new(pb::ValidateApiKeyResponse {
            leased_admissions: leased,
            lease_valid_for_ms: if leased > 0 {
                key.lease_valid_for_ms
            } else {
                0
            },
            ..key.answer.clone()
        }))
    }

    async fn lease_api_key_budget(
        &self,
        request: Request<pb::LeaseApiKeyBudgetRequest>,
    ) -> Result<Response<pb::LeaseApiKeyBudgetResponse>, Status> {
        let fake = &self.0;
        fake.enter(&request, &fake.lease).await?;
        let request = request.into_inner();
        let mut keys = fake.keys.lock().unwrap();
        let Some(key) = keys
            .values_mut()
            .find(|key| key.answer.key_id == request.key_id)
        else {
            return Err(Status::not_found("no such key"));
        };
        if key.refusal.is_some() {
            return Err(Status::failed_precondition("the key no longer works"));
        }
        let granted = match &mut key.budget {
            None => request.requested,
            Some(left) => {
                let granted = request.requested.min(*left);
                *left -= granted;
                granted
            }
        };
        Ok(Response::new(pb::LeaseApiKeyBudgetResponse {
            granted,
            valid_for_ms: key.lease_valid_for_ms,
            retry_after_seconds: if granted == 0 {
                key.retry_after_seconds
            } else {
                0
            },
            exhausted_window: if granted == 0 {
                "minute".into()
            } else {
                String::new()
            },
        }))
    }

    async fn set_api_key_rate_limits(
        &self,
        _: Request<pb::SetApiKeyRateLimitsRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// The `ServiceTokenService` face.
pub struct ServiceTokens(pub Arc<FakeCredentials>);

#[tonic::async_trait]
impl ServiceTokenService for ServiceTokens {
    async fn create_service_identity(
        &self,
        _: Request<pb::CreateServiceIdentityRequest>,
    ) -> Result<Response<pb::ServiceIdentity>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_service_identities(
        &self,
        _: Request<pb::ListServiceIdentitiesRequest>,
    ) -> Result<Response<pb::ListServiceIdentitiesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn disable_service_identity(
        &self,
        _: Request<pb::DisableServiceIdentityRequest>,
    ) -> Result<Response<pb::ServiceIdentity>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::IssueServiceTokenResponse>, Status> {
        let fake = &self.0;
        fake.enter(&request, &fake.issue).await?;
        let request = request.into_inner();
        fake.issues.lock().unwrap().push(request.clone());
        if fake.issue_failing.load(Ordering::SeqCst) {
            return Err(Status::unavailable(
                "fake issuer: issuance failing on purpose",
            ));
        }
        let (permissions, role, ttl_ms) = {
            let identities = fake.identities.lock().unwrap();
            let identity = identities
                .get(&(request.tenant_id.clone(), request.service.clone()))
                .ok_or_else(|| Status::not_found("no such identity"))?;
            (
                identity.permissions.clone(),
                identity.role.clone(),
                identity.ttl_ms,
            )
        };
        if !request.replaces.is_empty() {
            let tokens = fake.tokens.lock().unwrap();
            let live = tokens.get(&request.replaces).is_some_and(|token| {
                token.info.state == "active"
                    && token.info.subject == request.service
                    && token.info.tenant_id == request.tenant_id
            });
            if !live {
                return Err(Status::failed_precondition("replaces no live token"));
            }
        }
        let (text, mut info) = fake.mint(
            CredentialKind::Service,
            &request.tenant_id,
            &request.service,
            permissions,
            role,
            ttl_ms,
        );
        info.replaces = request.replaces;
        info.holder = request.holder;
        fake.tokens.lock().unwrap().insert(
            info.token_id.clone(),
            FakeToken {
                text: text.clone(),
                info: info.clone(),
            },
        );
        Ok(Response::new(pb::IssueServiceTokenResponse {
            token: text,
            info: Some(info),
        }))
    }

    async fn confirm_service_token(
        &self,
        request: Request<pb::ConfirmServiceTokenRequest>,
    ) -> Result<Response<pb::ConfirmServiceTokenResponse>, Status> {
        let fake = &self.0;
        fake.enter(&request, &fake.confirm).await?;
        let token_id = request.into_inner().token_id;
        fake.confirms.lock().unwrap().push(token_id.clone());
        let replaced = {
            let tokens = fake.tokens.lock().unwrap();
            let token = tokens
                .get(&token_id)
                .ok_or_else(|| Status::not_found("no such token"))?;
            token.info.replaces.clone()
        };
        let live = fake
            .token_info(&replaced)
            .is_some_and(|info| info.state == "active");
        if !live {
            return Ok(Response::new(pb::ConfirmServiceTokenResponse::default()));
        }
        fake.revoke_token(&replaced);
        Ok(Response::new(pb::ConfirmServiceTokenResponse {
            revoked_token_id: replaced,
        }))
    }

    async fn revoke_service_token(
        &self,
        _: Request<pb::RevokeServiceTokenRequest>,
    ) -> Result<Response<pb::OpaqueTokenInfo>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn validate_service_token(
        &self,
        request: Request<pb::ValidateOpaqueTokenRequest>,
    ) -> Result<Response<pb::ValidateOpaqueTokenResponse>, Status> {
        let fake = &self.0;
        fake.enter(&request, &fake.validate_service_token).await?;
        let presented = request.into_inner().token;
        let refused = |refusal: pb::OpaqueTokenRefusal| {
            Ok(Response::new(pb::ValidateOpaqueTokenResponse {
                valid: false,
                refusal: refusal as i32,
                info: None,
            }))
        };
        let tokens = fake.tokens.lock().unwrap();
        let Some(token) = tokens.values().find(|token| token.text == presented) else {
            return refused(pb::OpaqueTokenRefusal::Unknown);
        };
        if token.info.state == "revoked" {
            return refused(pb::OpaqueTokenRefusal::Revoked);
        }
        let expires_ms = token
            .info
            .expires_at
            .as_ref()
            .map_or(0, |at| at.seconds * 1000 + i64::from(at.nanos / 1_000_000));
        if expires_ms <= now_ms() {
            return refused(pb::OpaqueTokenRefusal::Expired);
        }
        Ok(Response::new(pb::ValidateOpaqueTokenResponse {
            valid: true,
            refusal: 0,
            info: Some(token.info.clone()),
        }))
    }
}
