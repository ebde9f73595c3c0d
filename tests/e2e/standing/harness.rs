//! Machinery of the standing-credential tests: an issuer with a verifier credential for
//! sidecars (`bundle:read`, `introspect` and `issue`: the sidecar subscribes to the
//! stream, verifies first sights and fetches service tokens with it), several real
//! `tessera-sidecar` processes on it, gRPC clients of the issuer's services and of a
//! sidecar's socket, and polls that measure how long a refusal took to arrive.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tessera_common::credential::{Credential, CredentialKind};
use tessera_proto::v1 as pb;
use tessera_proto::v1::api_key_service_client::ApiKeyServiceClient;
use tessera_proto::v1::service_token_service_client::ServiceTokenServiceClient;
use tessera_proto::v1::token_service_client::TokenServiceClient;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tessera_proto::v1::webhook_service_client::WebhookServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::sidecar::harness::{Sidecar, SidecarBuilder, parse_metrics};
use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::http;
use crate::support::issuer::{Issuer, read_trimmed};

/// The sidecar flag naming the service identity whose tokens `FetchServiceToken` hands
/// out, and the flag naming its tenant.
pub const SERVICE_IDENTITY_FLAG: &str = "--service-identity";
pub const SERVICE_TENANT_FLAG: &str = "--service-tenant";
/// The longest a pushed deactivation may take to reach every sidecar (issue 10).
pub const PROPAGATION_LIMIT: Duration = Duration::from_secs(1);
/// How often the propagation polls ask a sidecar.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Rate limits high enough that a test's polling never meets them.
pub const GENEROUS: pb::RateLimits = pb::RateLimits {
    per_minute: 1_000_000,
    per_hour: 1_000_000,
    per_day: 1_000_000,
};

/// An issuer (started with extra `serve` arguments), its admin credential, a verifier
/// credential file for sidecars, a runtime and a channel to the issuer. Fields drop in
/// order: the issuer stops before its directory goes.
pub struct Standing {
    pub runtime: tokio::runtime::Runtime,
    pub channel: Channel,
    pub admin: String,
    /// `bundle:read`, `introspect` and `issue`, every tenant (mode 0600).
    pub verifier: PathBuf,
    pub issuer: Issuer,
    pub root: TempDir,
}

impl Standing {
    /// Starts an issuer (SQLite in the tempdir unless `issuer_args` say otherwise).
    pub fn start(issuer_args: &[&str]) -> Standing {
        let root = tempfile::tempdir().expect("tempdir");
        let issuer = Issuer::builder(root.path(), "issuer")
            .args(issuer_args.iter().copied())
            .start();
        let verifier = credential_file(
            &issuer,
            root.path(),
            "verifier",
            &["bundle:read", "introspect", "issue"],
            &[],
        );
        let runtime = runtime();
        let channel = runtime.block_on(connect(issuer.grpc_addr));
        Standing {
            runtime,
            channel,
            admin: issuer.admin_token(),
            verifier,
            issuer,
            root,
        }
    }

    /// A sidecar named `name` with the verifier credential.
    pub fn sidecar(&self, name: &str) -> SidecarBuilder {
        self.sidecar_with(name, &self.verifier)
    }

    /// A sidecar named `name` presenting `credential_file` to the issuer.
    pub fn sidecar_with(&self, name: &str, credential_file: &Path) -> SidecarBuilder {
        Sidecar::builder(
            self.root.path(),
            name,
            &self.issuer.grpc_url(),
            credential_file,
        )
    }

    /// `n` sidecars `sidecar-0` … started one after the other.
    pub fn sidecars(&self, n: usize) -> Vec<Sidecar> {
        (0..n)
            .map(|index| self.sidecar(&format!("sidecar-{index}")).start())
            .collect()
    }

    pub fn api_keys(&self) -> ApiKeyServiceClient<Channel> {
        ApiKeyServiceClient::new(self.channel.clone())
    }

    pub fn service_tokens(&self) -> ServiceTokenServiceClient<Channel> {
        ServiceTokenServiceClient::new(self.channel.clone())
    }

    pub fn webhooks(&self) -> WebhookServiceClient<Channel> {
        WebhookServiceClient::new(self.channel.clone())
    }

    pub fn tokens(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel.clone())
    }

    /// Creates an API key of `tenant` with `limits` (defaults when `None`) as admin.
    pub fn create_key(
        &self,
        tenant: &str,
        limits: Option<pb::RateLimits>,
    ) -> pb::CreateApiKeyResponse {
        let request = with_bearer(
            pb::CreateApiKeyRequest {
                tenant_id: tenant.to_owned(),
                name: format!("{tenant} e2e key"),
                permissions: vec!["invoices:read".into()],
                role: "billing".into(),
                reason: "e2e".into(),
                rate_limits: limits,
                ..Default::default()
            },
            &self.admin,
        );
        let mut client = self.api_keys();
        self.runtime
            .block_on(client.create_api_key(request))
            .unwrap_or_else(|status| panic!("CreateApiKey({tenant}) failed: {status:?}"))
            .into_inner()
    }

    /// `ValidateApiKey(key)` at the issuer as admin.
    pub fn validate_at_issuer(&self, key: &str) -> pb::ValidateApiKeyResponse {
        let mut client = self.api_keys();
        let request = with_bearer(
            pb::ValidateApiKeyRequest {
                key: key.to_owned(),
                ..Default::default()
            },
            &self.admin,
        );
        self.runtime
            .block_on(client.validate_api_key(request))
            .unwrap_or_else(|status| panic!("ValidateApiKey at the issuer failed: {status:?}"))
            .into_inner()
    }

    /// `ValidateServiceToken(token)` at the issuer as admin.
    pub fn validate_opaque_at_issuer(&self, token: &str) -> pb::ValidateOpaqueTokenResponse {
        let mut client = self.service_tokens();
        let request = with_bearer(
            pb::ValidateOpaqueTokenRequest {
                token: token.to_owned(),
                ..Default::default()
            },
            &self.admin,
        );
        self.runtime
            .block_on(client.validate_service_token(request))
            .unwrap_or_else(|status| panic!("ValidateServiceToken failed: {status:?}"))
            .into_inner()
    }

    /// Creates a service identity as admin.
    pub fn create_identity(
        &self,
        tenant: &str,
        name: &str,
        token_ttl_seconds: u32,
    ) -> pb::ServiceIdentity {
        let mut client = self.service_tokens();
        let request = with_bearer(
            pb::CreateServiceIdentityRequest {
                tenant_id: tenant.to_owned(),
                name: name.to_owned(),
                permissions: vec!["orders:write".into()],
                role: "service".into(),
                token_ttl_seconds,
                reason: "e2e".into(),
            },
            &self.admin,
        );
        self.runtime
            .block_on(client.create_service_identity(request))
            .unwrap_or_else(|status| panic!("CreateServiceIdentity failed: {status:?}"))
            .into_inner()
    }

    /// Issues a service token of `tenant`/`service` as admin.
    pub fn issue_service_token(
        &self,
        tenant: &str,
        service: &str,
    ) -> pb::IssueServiceTokenResponse {
        let mut client = self.service_tokens();
        let request = with_bearer(
            pb::IssueServiceTokenRequest {
                tenant_id: tenant.to_owned(),
                service: service.to_owned(),
                holder: "e2e".into(),
                ..Default::default()
            },
            &self.admin,
        );
        self.runtime
            .block_on(client.issue_service_token(request))
            .unwrap_or_else(|status| panic!("IssueServiceToken failed: {status:?}"))
            .into_inner()
    }

    /// Issues a webhook token of `tenant` for `endpoint` as admin.
    pub fn issue_webhook_token(
        &self,
        tenant: &str,
        endpoint: &str,
    ) -> pb::IssueWebhookTokenResponse {
        let mut client = self.webhooks();
        let request = with_bearer(
            pb::IssueWebhookTokenRequest {
                tenant_id: tenant.to_owned(),
                endpoint: endpoint.to_owned(),
                permissions: vec!["callbacks:post".into()],
                ttl_seconds: 0,
            },
            &self.admin,
        );
        self.runtime
            .block_on(client.issue_webhook_token(request))
            .unwrap_or_else(|status| panic!("IssueWebhookToken failed: {status:?}"))
            .into_inner()
    }

    /// The value of `series` in the issuer's `/metrics` (0 when absent).
    pub fn issuer_metric(&self, series: &str) -> f64 {
        let response = http::get(self.issuer.http_addr, "/metrics", &[])
            .unwrap_or_else(|error| panic!("GET /metrics on the issuer: {error}"));
        assert_eq!(response.status, 200, "/metrics: {}", response.text());
        parse_metrics(&response.text())
            .get(series)
            .copied()
            .unwrap_or(0.0)
    }

    /// A `ValidatorService` client over `sidecar`'s socket.
    pub fn validator(&self, sidecar: &Sidecar) -> ValidatorServiceClient<Channel> {
        self.runtime.block_on(validator(&sidecar.socket))
    }
}

/// Creates an API client through the CLI and writes its credential to
/// `<dir>/<name>.credential` (mode 0600, written by the CLI's `--out`).
pub fn credential_file(
    issuer: &Issuer,
    dir: &Path,
    name: &str,
    scopes: &[&str],
    tenants: &[&str],
) -> PathBuf {
    let path = dir.join(format!("{name}.credential"));
    let out = path.to_str().expect("UTF-8 path").to_owned();
    let mut args = vec!["clients", "create", "--name", name];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    for tenant in tenants {
        args.extend(["--tenant", tenant]);
    }
    args.extend(["--out", &out]);
    issuer
        .cli(&args)
        .assert_success(&format!("clients create {name}"));
    assert!(!read_trimmed(&path).is_empty(), "{name}: empty credential");
    path
}

/// Connects a `ValidatorService` client to a sidecar's Unix socket.
pub async fn validator(socket: &Path) -> ValidatorServiceClient<Channel> {
    let endpoint = format!("unix:{}", socket.display());
    let channel = Endpoint::from_shared(endpoint.clone())
        .expect("a unix: endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {endpoint}: {error}"));
    ValidatorServiceClient::new(channel)
}

/// `ValidateApiKey(key)` at a sidecar.
pub async fn sidecar_validate_key(
    client: &mut ValidatorServiceClient<Channel>,
    key: &str,
) -> Result<pb::ValidateApiKeyResponse, Status> {
    client
        .validate_api_key(pb::ValidateApiKeyRequest {
            key: key.to_owned(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// `ValidateOpaqueToken(token)` at a sidecar.
pub async fn sidecar_validate_opaque(
    client: &mut ValidatorServiceClient<Channel>,
    token: &str,
) -> Result<pb::ValidateOpaqueTokenResponse, Status> {
    client
        .validate_opaque_token(pb::ValidateOpaqueTokenRequest {
            token: token.to_owned(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A standing credential of either family, as a verifier answers for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    ApiKey,
    Opaque,
}

/// One verdict reduced to what the polls compare: valid, or the refusal's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Refused(String),
    Error(Code, String),
}

/// Asks `client` about `credential` once.
pub async fn verdict(
    client: &mut ValidatorServiceClient<Channel>,
    family: Family,
    credential: &str,
) -> Verdict {
    match family {
        Family::ApiKey => match sidecar_validate_key(client, credential).await {
            Ok(answer) if answer.valid => Verdict::Valid,
            Ok(answer) => Verdict::Refused(answer.refusal().as_str_name().to_owned()),
            Err(status) => Verdict::Error(status.code(), status.message().to_owned()),
        },
        Family::Opaque => match sidecar_validate_opaque(client, credential).await {
            Ok(answer) if answer.valid => Verdict::Valid,
            Ok(answer) => Verdict::Refused(answer.refusal().as_str_name().to_owned()),
            Err(status) => Verdict::Error(status.code(), status.message().to_owned()),
        },
    }
}

/// What a poll saw: when the wanted verdict arrived, after how many calls; or the last
/// verdict at the deadline.
#[derive(Debug)]
pub struct Arrival {
    pub at: Option<Instant>,
    pub calls: u32,
    pub last: Verdict,
}

impl Arrival {
    /// Milliseconds from `since` to the arrival (None if it never arrived).
    pub fn millis_since(&self, since: Instant) -> Option<f64> {
        self.at
            .map(|at| at.saturating_duration_since(since).as_secs_f64() * 1000.0)
    }
}

/// Asks `socket`'s sidecar about `credential` every [`POLL_INTERVAL`] until the answer
/// is `wanted` or `deadline` has passed.
pub async fn poll_for(
    socket: PathBuf,
    family: Family,
    credential: String,
    wanted: Verdict,
    deadline: Duration,
) -> Arrival {
    let mut client = validator(&socket).await;
    let end = Instant::now() + deadline;
    let mut calls = 0;
    loop {
        let answer = verdict(&mut client, family, &credential).await;
        let at = Instant::now();
        calls += 1;
        if answer == wanted {
            return Arrival {
                at: Some(at),
                calls,
                last: answer,
            };
        }
        if at >= end {
            return Arrival {
                at: None,
                calls,
                last: answer,
            };
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `Verdict::Refused` of an API-key refusal.
pub fn refused_key(refusal: pb::ApiKeyRefusal) -> Verdict {
    Verdict::Refused(refusal.as_str_name().to_owned())
}

/// `Verdict::Refused` of an opaque-token refusal.
pub fn refused_opaque(refusal: pb::OpaqueTokenRefusal) -> Verdict {
    Verdict::Refused(refusal.as_str_name().to_owned())
}

/// `credential` with its last checksum character changed: a typo or a forgery.
pub fn bad_checksum(credential: &str) -> String {
    let mut forged = credential.to_owned();
    let last = forged.pop().expect("a non-empty credential");
    forged.push(if last == 'Z' { 'Y' } else { 'Z' });
    forged
}

/// A well-formed credential of `kind` with the real public `id` and a wrong secret (a
/// valid checksum over it).
pub fn wrong_secret(kind: CredentialKind, id: &str) -> String {
    Credential::from_parts(kind, id.to_owned(), "0".repeat(kind.secret_chars())).expose()
}

/// The public id of a `tbk_`/`tbs_`/`tbw_` credential.
pub fn public_id(credential: &str) -> String {
    Credential::parse(credential)
        .unwrap_or_else(|error| panic!("not a credential ({error:?})"))
        .id
}

/// Seconds since the epoch by the wall clock, as a float.
pub fn now_unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// An `Option<Timestamp>` field as seconds since the epoch (0 when unset); a macro
/// because this crate does not name prost's `Timestamp` type.
macro_rules! unix_seconds {
    ($timestamp:expr) => {
        $timestamp.as_ref().map_or(0.0, |timestamp| {
            timestamp.seconds as f64 + f64::from(timestamp.nanos) / 1e9
        })
    };
}
pub(crate) use unix_seconds;
