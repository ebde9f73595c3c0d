//! `tessera.v1.ChallengeService` at the gRPC edge: OTP and magic-link challenges, their
//! providers and the emergency invalidation. Converts requests into the domain's checked
//! types (bounds first: a code over 128 bytes, a destination over 254, an id over 64 are
//! INVALID_ARGUMENT before any work), authorizes (`issue` for start/verify, `admin` for
//! providers and the emergency; tenant confinement on every call), and maps the domain's
//! errors once, in [`from_challenge`]. The orchestration is `crate::challenges`.

use std::net::IpAddr;
use std::sync::Arc;

use tessera_common::ids::TenantId;
use tessera_proto::v1 as pb;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::timestamp;
use super::reason::required_reason;
use super::status::from_store;
use crate::app::{App, request_id};
use crate::audit::{Actor, AuditAction};
use crate::auth::{Caller, Scope};
use crate::challenges::code::Code;
use crate::challenges::{
    ChallengeError, ChallengeMethod, DeliveryMode, Destination, MAX_CODE_BYTES, Refusal,
    StartChallenge, VerifyChallenge, check_user_id,
};
use crate::delivery::DeliveryError;
use crate::one_time_limits::LimitError;

const START: &str = "ChallengeService/StartChallenge";
const VERIFY: &str = "ChallengeService/VerifyChallenge";
const LIST_PROVIDERS: &str = "ChallengeService/ListProviders";
const SET_PROVIDER: &str = "ChallengeService/SetProviderEnabled";
const EMERGENCY: &str = "ChallengeService/EmergencyInvalidateChallenges";

/// The longest challenge id read (a real one is 30 bytes).
const MAX_CHALLENGE_ID_BYTES: usize = 64;
/// The longest destination read (e-mail addresses are at most 254 bytes).
const MAX_DESTINATION_BYTES: usize = 254;
/// The longest client IP text read.
const MAX_IP_BYTES: usize = 64;

/// The ChallengeService implementation.
pub struct ChallengeServiceImpl {
    pub app: Arc<App>,
}

impl ChallengeServiceImpl {
    /// Authorizes `rpc` with `scope` and checks the caller may act on `tenant_id`.
    async fn caller_for<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        scope: Scope,
        tenant_id: &str,
    ) -> Result<(Caller, TenantId, String), Status> {
        let caller = self.app.authorize(request, rpc, scope).await?;
        let tenant = TenantId::new(tenant_id)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let request_id = request_id(request);
        self.app
            .check_tenant(&caller, tenant.as_str(), rpc, &request_id)
            .await?;
        Ok((caller, tenant, request_id))
    }
}

/// Maps a challenge error to its status (the one table for this service).
pub fn from_challenge(error: ChallengeError) -> Status {
    match error {
        ChallengeError::Invalid(message) => Status::invalid_argument(message),
        ChallengeError::NotConfigured(method) => {
            Status::failed_precondition(format!("no delivery provider is configured for {method}"))
        }
        ChallengeError::Limit(LimitError::Limited { scope, retry_after }) => {
            rate_limited(scope, retry_after)
        }
        ChallengeError::Limit(LimitError::Store(error)) | ChallengeError::Store(error) => {
            from_store(error)
        }
        ChallengeError::Delivery(DeliveryError::NotConfigured(method)) => {
            Status::failed_precondition(format!("no delivery provider is configured for {method}"))
        }
        ChallengeError::Delivery(DeliveryError::AllDisabled(method)) => {
            Status::unavailable(format!("every delivery provider of {method} is disabled"))
        }
        ChallengeError::Delivery(DeliveryError::Failed(_)) => {
            Status::unavailable("delivery failed at every provider")
        }
        ChallengeError::Delivery(DeliveryError::Store(error)) => from_store(error),
        ChallengeError::Keyring(error) => {
            tracing::error!(%error, "challenge pepper unavailable");
            Status::unavailable("credential pepper unavailable")
        }
    }
}

/// RESOURCE_EXHAUSTED with `retry-after` (whole seconds, at least 1) and
/// `tessera-refusal: RATE_LIMITED`.
fn rate_limited(scope: &str, retry_after: std::time::Duration) -> Status {
    let seconds = retry_after
        .as_secs()
        .saturating_add(u64::from(retry_after.subsec_nanos() > 0))
        .max(1);
    let mut status = Status::resource_exhausted(format!(
        "too many one-time requests for this {scope}: retry after {seconds} s"
    ));
    if let Ok(value) = seconds.to_string().parse() {
        status.metadata_mut().insert("retry-after", value);
    }
    status.metadata_mut().insert(
        "tessera-refusal",
        MetadataValue::from_static("RATE_LIMITED"),
    );
    status
}

/// Charges one call of a rate-limited one-time `operation` (password-reset and
/// email-verification requests) for the user and, when given, the end user's IP: the
/// one call ActionLinkService's handlers make before minting. Over a limit:
/// RESOURCE_EXHAUSTED with `retry-after`. A user id that is no identifier is refused
/// here, before it names a bucket.
pub async fn admit_one_time(
    app: &App,
    operation: crate::one_time_limits::LimitedOperation,
    tenant_id: &TenantId,
    user_id: &str,
    client_ip: Option<IpAddr>,
) -> Result<(), Status> {
    tessera_common::ids::check_identifier("user_id", user_id)
        .map_err(|error| Status::invalid_argument(error.to_string()))?;
    let subject = crate::one_time_limits::LimitSubject {
        tenant_id,
        user_id,
        client_ip,
    };
    app.challenges
        .limits()
        .admit(operation, &subject, app.now())
        .await
        .map_err(|error| from_challenge(ChallengeError::Limit(error)))
}

fn method_of(method: i32) -> Result<ChallengeMethod, Status> {
    match pb::ChallengeMethod::try_from(method) {
        Ok(pb::ChallengeMethod::OtpEmail) => Ok(ChallengeMethod::OtpEmail),
        Ok(pb::ChallengeMethod::OtpSms) => Ok(ChallengeMethod::OtpSms),
        Ok(pb::ChallengeMethod::MagicLink) => Ok(ChallengeMethod::MagicLink),
        _ => Err(Status::invalid_argument(
            "method: OTP_EMAIL, OTP_SMS or MAGIC_LINK",
        )),
    }
}

fn method_to_proto(method: ChallengeMethod) -> pb::ChallengeMethod {
    match method {
        ChallengeMethod::OtpEmail => pb::ChallengeMethod::OtpEmail,
        ChallengeMethod::OtpSms => pb::ChallengeMethod::OtpSms,
        ChallengeMethod::MagicLink => pb::ChallengeMethod::MagicLink,
    }
}

fn refusal_to_proto(refusal: Refusal) -> pb::ChallengeRefusal {
    match refusal {
        Refusal::NotFound => pb::ChallengeRefusal::NotFound,
        Refusal::Expired => pb::ChallengeRefusal::Expired,
        Refusal::TooManyAttempts => pb::ChallengeRefusal::TooManyAttempts,
        Refusal::WrongCode => pb::ChallengeRefusal::WrongCode,
        Refusal::Invalidated => pb::ChallengeRefusal::Invalidated,
        Refusal::AlreadyUsed => pb::ChallengeRefusal::AlreadyUsed,
    }
}

fn client_ip(text: &str) -> Result<Option<IpAddr>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_IP_BYTES {
        return Err(Status::invalid_argument("client_ip: too long"));
    }
    text.parse()
        .map(Some)
        .map_err(|_| Status::invalid_argument("client_ip: not an IP address"))
}

#[tonic::async_trait]
impl pb::challenge_service_server::ChallengeService for ChallengeServiceImpl {
    #[instrument(skip(self, request), fields(rpc = START))]
    async fn start_challenge(
        &self,
        request: Request<pb::StartChallengeRequest>,
    ) -> Result<Response<pb::StartChallengeResponse>, Status> {
        let (caller, tenant_id, request_id) = self
            .caller_for(
                &request,
                START,
                Scope::Issue,
                &request.get_ref().tenant_id.clone(),
            )
            .await?;
        let message = request.into_inner();
        let method = method_of(message.method)?;
        check_user_id(&message.user_id).map_err(from_challenge)?;
        if message.destination.len() > MAX_DESTINATION_BYTES {
            return Err(Status::invalid_argument("destination: too long"));
        }
        let destination = match message.destination.as_str() {
            "" => None,
            text => Some(Destination::parse(method, text).map_err(from_challenge)?),
        };
        let delivery = match pb::ChallengeDelivery::try_from(message.delivery) {
            Ok(pb::ChallengeDelivery::Provider) => DeliveryMode::Provider,
            Ok(_) => DeliveryMode::ReturnToCaller,
            Err(_) => return Err(Status::invalid_argument("delivery: unknown value")),
        };
        let request = StartChallenge {
            tenant_id,
            user_id: message.user_id,
            method,
            destination,
            delivery,
            client_ip: client_ip(&message.client_ip)?,
        };
        let actor = Actor::client(caller.client_id.clone(), request_id, String::new());
        let started = self
            .app
            .challenges
            .start(request, &actor)
            .await
            .map_err(from_challenge)?;
        Ok(Response::new(pb::StartChallengeResponse {
            challenge_id: started.challenge_id.to_string(),
            expires_at: Some(timestamp(started.expires_at)),
            code: started
                .code
                .as_ref()
                .map(|code| code.expose().to_owned())
                .unwrap_or_default(),
            link: started.link.unwrap_or_default(),
            provider: started.provider.unwrap_or_default(),
            max_attempts: crate::challenges::MAX_ATTEMPTS,
        }))
    }

    #[instrument(skip(self, request), fields(rpc = VERIFY))]
    async fn verify_challenge(
        &self,
        request: Request<pb::VerifyChallengeRequest>,
    ) -> Result<Response<pb::VerifyChallengeResponse>, Status> {
        let message = request.get_ref();
        if message.code.len() > MAX_CODE_BYTES {
            return Err(Status::invalid_argument("code: longer than 128 bytes"));
        }
        if message.challenge_id.len() > MAX_CHALLENGE_ID_BYTES {
            return Err(Status::invalid_argument(
                "challenge_id: longer than 64 bytes",
            ));
        }
        let (caller, tenant_id, request_id) = self
            .caller_for(&request, VERIFY, Scope::Issue, &message.tenant_id.clone())
            .await?;
        let message = request.into_inner();
        let request = VerifyChallenge {
            tenant_id,
            challenge_id: message.challenge_id,
            code: Code::presented(&message.code),
            client_ip: client_ip(&message.client_ip)?,
        };
        let actor = Actor::client(caller.client_id.clone(), request_id, String::new());
        let verification = self
            .app
            .challenges
            .verify(request, &actor)
            .await
            .map_err(from_challenge)?;
        Ok(Response::new(match verification.outcome {
            Ok((user_id, method)) => pb::VerifyChallengeResponse {
                verified: true,
                reason: pb::ChallengeRefusal::Unspecified as i32,
                user_id,
                method: method_to_proto(method) as i32,
                attempts_left: 0,
            },
            Err(refusal) => pb::VerifyChallengeResponse {
                verified: false,
                reason: refusal_to_proto(refusal) as i32,
                user_id: String::new(),
                method: pb::ChallengeMethod::Unspecified as i32,
                attempts_left: verification.attempts_left,
            },
        }))
    }

    #[instrument(skip(self, request), fields(rpc = LIST_PROVIDERS))]
    async fn list_providers(
        &self,
        request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        self.app
            .authorize(&request, LIST_PROVIDERS, Scope::Admin)
            .await?;
        let providers = self
            .app
            .challenges
            .delivery()
            .list()
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::ListProvidersResponse {
            providers: providers.into_iter().map(provider_info).collect(),
        }))
    }

    #[instrument(skip(self, request), fields(rpc = SET_PROVIDER))]
    async fn set_provider_enabled(
        &self,
        request: Request<pb::SetProviderEnabledRequest>,
    ) -> Result<Response<pb::ProviderInfo>, Status> {
        let caller = self
            .app
            .authorize(&request, SET_PROVIDER, Scope::Admin)
            .await?;
        let request_id = request_id(&request);
        // Providers serve every tenant: switching one is a platform decision.
        self.app
            .require_unconfined(&caller, SET_PROVIDER, &request_id)
            .await?;
        let message = request.into_inner();
        let reason = required_reason(&message.reason)?;
        let delivery = self.app.challenges.delivery();
        if message.name.len() > 64 || !delivery.knows(&message.name) {
            return Err(Status::not_found("no provider of that name is configured"));
        }
        let actor = Actor::client(caller.client_id.clone(), request_id, reason);
        let action = if message.enabled {
            AuditAction::ProviderEnable
        } else {
            AuditAction::ProviderDisable
        };
        let now = self.app.now();
        self.app
            .challenges
            .set_provider_enabled(
                &message.name,
                message.enabled,
                actor.entry(now, action, message.name.clone()),
            )
            .await
            .map_err(from_store)?;
        let listing = delivery
            .list()
            .await
            .map_err(from_store)?
            .into_iter()
            .find(|provider| provider.name == message.name)
            .ok_or_else(|| Status::not_found("no provider of that name is configured"))?;
        Ok(Response::new(provider_info(listing)))
    }

    #[instrument(skip(self, request), fields(rpc = EMERGENCY))]
    async fn emergency_invalidate_challenges(
        &self,
        request: Request<pb::EmergencyInvalidateChallengesRequest>,
    ) -> Result<Response<pb::EmergencyInvalidateChallengesResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, EMERGENCY, Scope::Admin)
            .await?;
        let request_id = request_id(&request);
        let message = request.get_ref();
        let reason = required_reason(&message.reason)?;
        let tenant = if message.tenant_id.is_empty() {
            self.app
                .require_unconfined(&caller, EMERGENCY, &request_id)
                .await?;
            None
        } else {
            let tenant = TenantId::new(message.tenant_id.clone())
                .map_err(|error| Status::invalid_argument(error.to_string()))?;
            self.app
                .check_tenant(&caller, tenant.as_str(), EMERGENCY, &request_id)
                .await?;
            Some(tenant)
        };
        let actor = Actor::client(caller.client_id.clone(), request_id, reason);
        let invalidated = self
            .app
            .challenges
            .invalidate_all(tenant.as_ref(), &actor)
            .await
            .map_err(from_challenge)?;
        Ok(Response::new(pb::EmergencyInvalidateChallengesResponse {
            n_challenges: invalidated.n_challenges,
            n_one_time_tokens: invalidated.n_one_time_tokens,
        }))
    }
}

fn provider_info(listing: crate::delivery::ProviderListing) -> pb::ProviderInfo {
    pb::ProviderInfo {
        name: listing.name,
        kind: listing.kind.to_owned(),
        enabled: listing.enabled,
        roles: listing.roles,
        changed_at: listing.changed_at.map(timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_challenge_error_maps_to_a_deliberate_code() {
        use tonic::Code as C;
        let limited = from_challenge(ChallengeError::Limit(LimitError::Limited {
            scope: "user",
            retry_after: Duration::from_millis(1500),
        }));
        assert_eq!(limited.code(), C::ResourceExhausted);
        assert_eq!(limited.metadata().get("retry-after").unwrap(), "2");
        assert_eq!(
            limited.metadata().get("tessera-refusal").unwrap(),
            "RATE_LIMITED"
        );
        let cases = [
            (ChallengeError::Invalid("x"), C::InvalidArgument),
            (
                ChallengeError::NotConfigured("otp_sms"),
                C::FailedPrecondition,
            ),
            (
                ChallengeError::Delivery(DeliveryError::AllDisabled("otp_sms")),
                C::Unavailable,
            ),
            (
                ChallengeError::Delivery(DeliveryError::Failed(
                    crate::delivery::SendError::Timeout,
                )),
                C::Unavailable,
            ),
            (
                ChallengeError::Store(crate::store::StoreError::NotFound),
                C::NotFound,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(from_challenge(error).code(), code);
        }
    }
}
