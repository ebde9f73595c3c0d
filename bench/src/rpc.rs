//! The RPC scenarios over the unary load generator: real issuance against a
//! `tessera-issuer` process, and the empty baselines (the no-op `IssueAccessToken` and
//! `ValidateToken`, and `grpc.health.v1` Check) on a `serve-empty` process — all sent
//! with the same connections, concurrency and pre-built request messages.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use tessera_common::claims::ACCESS_TOKEN_TYP;
use tessera_common::keys::Algorithm;
use tessera_proto::v1 as pb;
use tessera_proto::v1::token_service_client::TokenServiceClient;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::fixtures::{self, BenchKey};
use crate::load::{UnaryPlan, run_unary};
use crate::noop::Canned;
use crate::procs::{EmptyProcess, IssuerProcess};
use crate::report::Measurement;
use crate::transport::{self, Target, Transport};

/// How an RPC scenario is driven.
#[derive(Clone, Copy, Debug)]
pub struct RpcPlan {
    pub concurrency: usize,
    pub connections: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Empty servers set TCP_NODELAY on accepted connections (as the issuer does).
    pub server_nodelay: bool,
    /// Calls per second for an open-loop (paced) run; `None` runs flat out.
    pub rate: Option<f64>,
}

impl RpcPlan {
    fn unary(self) -> UnaryPlan {
        UnaryPlan {
            concurrency: self.concurrency,
            warmup: self.warmup,
            measure: self.measure,
            rate: self.rate,
        }
    }
}

/// Which empty RPC to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmptyService {
    /// `TokenService/IssueAccessToken` answering a canned token (the issuance baseline).
    Token,
    /// `ValidatorService/ValidateToken` answering a canned verdict (the sidecar baseline).
    Validate,
    /// `grpc.health.v1.Health/Check`.
    Health,
}

/// Measures real issuance against a fresh `tessera-issuer` process signing with
/// `algorithm`.
pub async fn issue(algorithm: Algorithm, plan: RpcPlan) -> anyhow::Result<Measurement> {
    let issuer = IssuerProcess::start(algorithm).await?;
    issue_against(&issuer, algorithm, plan).await
}

/// Measures `IssueAccessToken` against `issuer`.
pub async fn issue_against(
    issuer: &IssuerProcess,
    algorithm: Algorithm,
    plan: RpcPlan,
) -> anyhow::Result<Measurement> {
    let name = format!(
        "issue {algorithm} (tcp, c={}, k={})",
        plan.concurrency, plan.connections
    );
    let target = Target::Tcp(issuer.grpc_addr);
    token_calls(&name, &target, issuer.authorization.clone(), plan).await
}

/// One real `IssueAccessToken` answer of `issuer` (the empty server answers its copy).
pub async fn one_issue(issuer: &IssuerProcess) -> anyhow::Result<pb::IssueAccessTokenResponse> {
    let channel = transport::connect(&Target::Tcp(issuer.grpc_addr), 1)
        .await?
        .pop()
        .context("no channel")?;
    let mut request = Request::new(fixtures::issue_request());
    request
        .metadata_mut()
        .insert("authorization", issuer.authorization.clone());
    Ok(TokenServiceClient::new(channel)
        .issue_access_token(request)
        .await?
        .into_inner())
}

/// Measures an empty RPC on a `serve-empty` process over `transport` (the command-line
/// scenario); canned answers carry a token of `algorithm` so message sizes match the real
/// path.
pub async fn empty(
    transport: Transport,
    service: EmptyService,
    algorithm: Algorithm,
    plan: RpcPlan,
) -> anyhow::Result<Measurement> {
    let canned = canned(algorithm)?;
    let server = EmptyProcess::start(transport, &canned, plan.server_nodelay).await?;
    let name = empty_name(service, &format!("{algorithm}-sized"), transport, plan);
    // A credential header of the real length, so request bytes match too.
    let authorization: MetadataValue<Ascii> =
        "Bearer tbc_benchmark.0000000000000000000000000000000000000000000".parse()?;
    let tokens = Arc::new(vec![canned.issue.token.clone()]);
    empty_calls(&name, &server.target, service, authorization, tokens, plan).await
}

/// Drives the empty `service` at `target` with the real path's request: the issuance
/// request with `authorization`, or `ValidateToken` of `tokens` in turn.
pub async fn empty_calls(
    name: &str,
    target: &Target,
    service: EmptyService,
    authorization: MetadataValue<Ascii>,
    tokens: Arc<Vec<String>>,
    plan: RpcPlan,
) -> anyhow::Result<Measurement> {
    match service {
        EmptyService::Token => token_calls(name, target, authorization, plan).await,
        EmptyService::Validate => validate_calls(name, target, tokens, plan).await,
        EmptyService::Health => health_calls(name, target, plan).await,
    }
}

/// The name of an empty-RPC measurement.
pub fn empty_name(
    service: EmptyService,
    sized: &str,
    transport: Transport,
    plan: RpcPlan,
) -> String {
    let nodelay = if plan.server_nodelay && transport == Transport::Tcp {
        " nodelay"
    } else {
        ""
    };
    let paced = plan
        .rate
        .map_or(String::new(), |rate| format!(" paced {rate:.0}/s"));
    format!(
        "empty {} {sized}{paced} ({}{nodelay}, c={}, k={})",
        service_name(service),
        transport.as_str(),
        plan.concurrency,
        plan.connections
    )
}

/// Measures `grpc.health.v1` Check against the issuer's own gRPC server.
pub async fn health_on_issuer(
    issuer: &IssuerProcess,
    plan: RpcPlan,
) -> anyhow::Result<Measurement> {
    let name = format!(
        "empty health on the issuer (tcp, c={}, k={})",
        plan.concurrency, plan.connections
    );
    health_calls(&name, &Target::Tcp(issuer.grpc_addr), plan).await
}

fn service_name(service: EmptyService) -> &'static str {
    match service {
        EmptyService::Token => "IssueAccessToken",
        EmptyService::Validate => "ValidateToken",
        EmptyService::Health => "health",
    }
}

pub async fn token_calls(
    name: &str,
    target: &Target,
    authorization: MetadataValue<Ascii>,
    plan: RpcPlan,
) -> anyhow::Result<Measurement> {
    let clients: Arc<Vec<TokenServiceClient<Channel>>> = Arc::new(
        transport::connect(target, plan.connections)
            .await?
            .into_iter()
            .map(TokenServiceClient::new)
            .collect(),
    );
    let message = fixtures::issue_request();
    let request = move || {
        let mut request = Request::new(message.clone());
        request
            .metadata_mut()
            .insert("authorization", authorization.clone());
        request
    };
    // One call first, so a broken setup fails loudly instead of timing errors.
    clients[0].clone().issue_access_token(request()).await?;
    Ok(run_unary(name, plan.unary(), move |task, _| {
        let mut client = clients[task % clients.len()].clone();
        let request = request();
        async move {
            match client.issue_access_token(request).await {
                Ok(response) if !response.get_ref().token.is_empty() => Ok(()),
                Ok(_) => Err("empty token in the response".to_owned()),
                Err(status) => Err(status.to_string()),
            }
        }
    })
    .await)
}

async fn validate_calls(
    name: &str,
    target: &Target,
    tokens: Arc<Vec<String>>,
    plan: RpcPlan,
) -> anyhow::Result<Measurement> {
    let clients: Arc<Vec<ValidatorServiceClient<Channel>>> = Arc::new(
        transport::connect(target, plan.connections)
            .await?
            .into_iter()
            .map(ValidatorServiceClient::new)
            .collect(),
    );
    let requests: Arc<Vec<pb::ValidateTokenRequest>> = Arc::new(
        tokens
            .iter()
            .map(|token| pb::ValidateTokenRequest {
                token: token.clone(),
                ..Default::default()
            })
            .collect(),
    );
    clients[0]
        .clone()
        .validate_token(Request::new(requests[0].clone()))
        .await?;
    Ok(run_unary(name, plan.unary(), move |task, sequence| {
        let mut client = clients[task % clients.len()].clone();
        // Walks the pool as the real path does (validate::unary).
        let index = (task * 7_919 + sequence as usize) % requests.len();
        let request = Request::new(requests[index].clone());
        async move {
            client
                .validate_token(request)
                .await
                .map(drop)
                .map_err(|status| status.to_string())
        }
    })
    .await)
}

async fn health_calls(name: &str, target: &Target, plan: RpcPlan) -> anyhow::Result<Measurement> {
    let clients: Arc<Vec<HealthClient<Channel>>> = Arc::new(
        transport::connect(target, plan.connections)
            .await?
            .into_iter()
            .map(HealthClient::new)
            .collect(),
    );
    let message = HealthCheckRequest {
        service: String::new(),
    };
    clients[0]
        .clone()
        .check(Request::new(message.clone()))
        .await?;
    Ok(run_unary(name, plan.unary(), move |task, _| {
        let mut client = clients[task % clients.len()].clone();
        let request = Request::new(message.clone());
        async move {
            client
                .check(request)
                .await
                .map(drop)
                .map_err(|status| status.to_string())
        }
    })
    .await)
}

/// Builds canned answers around a real token of `algorithm`.
pub fn canned(algorithm: Algorithm) -> anyhow::Result<Canned> {
    let key = BenchKey::generate(algorithm)?;
    let now = fixtures::now();
    let claims = fixtures::claims(now)?;
    let token = key.signer.sign_jws(ACCESS_TOKEN_TYP, &claims)?;
    let timestamp = |seconds: i64| prost_types::Timestamp { seconds, nanos: 0 };
    let typed = pb::TokenClaims {
        subject: claims.sub.clone(),
        tenant_id: claims.tenant_id.clone(),
        role: claims.role.clone(),
        permissions: claims.permissions.clone(),
        session_id: claims.session_id.clone(),
        jti: claims.jti.clone(),
        expires_at: Some(timestamp(claims.exp)),
        issued_at: Some(timestamp(claims.iat)),
        issuer: claims.iss.clone(),
        audience: claims.aud.clone(),
        token_type: claims.token_type.clone(),
        mfa_verified: claims.mfa_verified,
        features: claims.features.clone(),
        kid: key.signer.kid().to_string(),
    };
    Ok(Canned {
        issue: pb::IssueAccessTokenResponse {
            token,
            jti: claims.jti.clone(),
            kid: key.signer.kid().to_string(),
            expires_at: Some(timestamp(claims.exp)),
            refresh_after: Some(timestamp(claims.exp - 300)),
        },
        validate: pb::ValidateTokenResponse {
            valid: true,
            reason: 0,
            claims: Some(typed),
            claims_json: serde_json::to_string(&claims)?,
        },
    })
}
