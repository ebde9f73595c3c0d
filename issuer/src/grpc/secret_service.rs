//! `tessera.v1.SecretService`: the secrets inventory (see `secrets.rs` and the proto's
//! comments). Writes and metadata need `admin` from an unconfined caller (secrets are the
//! platform's, not a tenant's); ReadSecret needs a `secrets:read:` scope covering the
//! name, and `admin` alone never reads a value. Every refusal of an authenticated caller
//! is audited; no answer, error or log line carries a value.

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::timestamp;
use super::status::from_store;
use crate::app::{App, request_id};
use crate::audit::Actor;
use crate::auth::{Caller, Scope};
use crate::secrets::rotators::RotatorConfig;
use crate::secrets::rotators::external::ExternalConfig;
use crate::secrets::rotators::postgres::PostgresConfig;
use crate::secrets::rotators::random::RandomConfig;
use crate::secrets::rotators::redis::RedisConfig;
use crate::secrets::{Registration, SecretError, SecretValue, SecretView, Secrets};
use crate::store::{SecretHistoryRecord, SecretStage};

const REGISTER: &str = "SecretService/RegisterSecret";
const LIST: &str = "SecretService/ListSecrets";
const GET: &str = "SecretService/GetSecret";
const PUT: &str = "SecretService/PutSecretVersion";
const ROTATE: &str = "SecretService/RotateSecret";
const ROLLBACK: &str = "SecretService/RollbackSecret";
const HISTORY: &str = "SecretService/SecretHistory";
const READ: &str = "SecretService/ReadSecret";

/// Default and largest history page.
const DEFAULT_HISTORY: usize = 100;
const MAX_HISTORY: usize = 1000;
/// Longest reason kept in the audit log.
const MAX_REASON_BYTES: usize = 512;

/// The SecretService implementation.
pub struct SecretServiceImpl {
    pub app: Arc<App>,
    pub secrets: Arc<Secrets>,
}

/// Maps a secrets failure to its status (messages never hold a value).
pub fn from_secret(error: SecretError) -> Status {
    match error {
        SecretError::InvalidArgument(_) => Status::invalid_argument(error.to_string()),
        SecretError::NotFound => Status::not_found(error.to_string()),
        SecretError::AlreadyExists => Status::already_exists(error.to_string()),
        SecretError::FailedPrecondition(_) | SecretError::Rotator { .. } => {
            Status::failed_precondition(error.to_string())
        }
        SecretError::Conflict => Status::aborted(error.to_string()),
        SecretError::Sealing => {
            tracing::error!("a secret value could not be sealed or opened");
            Status::internal("a secret value could not be sealed or opened")
        }
        SecretError::Store(error) => from_store(error),
    }
}

fn stage(stage: SecretStage) -> pb::SecretStage {
    match stage {
        SecretStage::Current => pb::SecretStage::Current,
        SecretStage::Pending => pb::SecretStage::Pending,
        SecretStage::Previous => pb::SecretStage::Previous,
        SecretStage::Retired => pb::SecretStage::Retired,
    }
}

fn kind(config: &RotatorConfig) -> pb::RotatorKind {
    match config {
        RotatorConfig::Random(_) => pb::RotatorKind::Random,
        RotatorConfig::Postgres(_) => pb::RotatorKind::Postgres,
        RotatorConfig::Redis(_) => pb::RotatorKind::Redis,
        RotatorConfig::External(_) => pb::RotatorKind::External,
    }
}

fn rotator_message(config: &RotatorConfig) -> pb::RotatorConfig {
    use pb::rotator_config::Config;
    let config = match config {
        RotatorConfig::Random(random) => Config::Random(pb::RandomRotator {
            length: random.length,
            alphabet: random.alphabet.clone(),
        }),
        RotatorConfig::Postgres(postgres) => Config::Postgres(pb::PostgresRotator {
            url: postgres.url.clone(),
            role_a: postgres.role_a.clone(),
            role_b: postgres.role_b.clone(),
        }),
        RotatorConfig::Redis(redis) => Config::Redis(pb::RedisRotator {
            url: redis.url.clone(),
            username: redis.username.clone(),
        }),
        RotatorConfig::External(external) => Config::External(pb::ExternalRotator {
            instructions: external.instructions.clone(),
        }),
    };
    pb::RotatorConfig {
        config: Some(config),
    }
}

/// Returns a secret's metadata as sent: never a value.
pub fn secret_info(view: &SecretView) -> pb::SecretInfo {
    let record = &view.record;
    pb::SecretInfo {
        name: record.name.clone(),
        kind: kind(&view.rotator).into(),
        tier: u32::from(record.tier),
        cadence_days: record.cadence_days,
        owner: record.owner.clone(),
        description: record.description.clone(),
        tags: record.tags.clone().into_iter().collect(),
        created_at: Some(timestamp(record.created_at)),
        last_rotated_at: record.last_rotated_at.map(timestamp),
        next_rotation_at: Some(timestamp(view.next_rotation_at)),
        warning: view.warning,
        overdue: view.overdue,
        versions: view
            .versions
            .iter()
            .map(|version| pb::SecretVersion {
                version: version.version,
                stage: stage(version.stage).into(),
                created_at: Some(timestamp(version.created_at)),
                activated_at: version.activated_at.map(timestamp),
                retired_at: version.retired_at.map(timestamp),
            })
            .collect(),
        rotator: Some(rotator_message(&view.rotator)),
        rotation_in_progress: view.rotation_step.clone().unwrap_or_default(),
    }
}

fn history_entry(entry: &SecretHistoryRecord) -> pb::SecretHistoryEntry {
    pb::SecretHistoryEntry {
        at: Some(timestamp(entry.at)),
        step: entry.step.clone(),
        version: entry.version,
        outcome: entry.outcome.clone(),
        actor: entry.actor.clone(),
        request_id: entry.request_id.clone(),
        detail: entry.detail.clone(),
    }
}

/// Reads the request's rotator settings, checking they agree with `kind`.
fn rotator_config(
    kind: pb::RotatorKind,
    message: Option<pb::RotatorConfig>,
) -> Result<RotatorConfig, Status> {
    use pb::rotator_config::Config;
    let config = match (kind, message.and_then(|message| message.config)) {
        (pb::RotatorKind::Random | pb::RotatorKind::Unspecified, Some(Config::Random(random))) => {
            RotatorConfig::Random(RandomConfig::with_defaults(random.length, &random.alphabet))
        }
        (pb::RotatorKind::Random, None) => RotatorConfig::Random(RandomConfig::default()),
        (pb::RotatorKind::Postgres | pb::RotatorKind::Unspecified, Some(Config::Postgres(pg))) => {
            RotatorConfig::Postgres(PostgresConfig {
                url: pg.url,
                role_a: pg.role_a,
                role_b: pg.role_b,
            })
        }
        (pb::RotatorKind::Redis | pb::RotatorKind::Unspecified, Some(Config::Redis(redis))) => {
            RotatorConfig::Redis(RedisConfig {
                url: redis.url,
                username: redis.username,
            })
        }
        (
            pb::RotatorKind::External | pb::RotatorKind::Unspecified,
            Some(Config::External(external)),
        ) => RotatorConfig::External(ExternalConfig {
            instructions: external.instructions,
        }),
        (pb::RotatorKind::External, None) => RotatorConfig::External(ExternalConfig::default()),
        (pb::RotatorKind::Unspecified, None) => {
            return Err(Status::invalid_argument("kind: required"));
        }
        _ => {
            return Err(Status::invalid_argument(
                "rotator: settings do not match the kind",
            ));
        }
    };
    config.validate().map_err(Status::invalid_argument)?;
    Ok(config)
}

fn reason(text: &str) -> Result<String, Status> {
    if text.len() > MAX_REASON_BYTES {
        return Err(Status::invalid_argument(format!(
            "reason: longer than {MAX_REASON_BYTES} bytes"
        )));
    }
    Ok(text.to_owned())
}

impl SecretServiceImpl {
    /// Authorizes an administrative call: `admin`, not confined to tenants.
    async fn admin<T>(&self, request: &Request<T>, rpc: &str) -> Result<(Caller, String), Status> {
        let caller = self.app.authorize(request, rpc, Scope::Admin).await?;
        let request_id = request_id(request);
        self.app
            .require_unconfined(&caller, rpc, &request_id)
            .await?;
        Ok((caller, request_id))
    }
}

#[tonic::async_trait]
impl pb::secret_service_server::SecretService for SecretServiceImpl {
    #[instrument(name = "SecretService/RegisterSecret", skip_all)]
    async fn register_secret(
        &self,
        request: Request<pb::RegisterSecretRequest>,
    ) -> Result<Response<pb::SecretInfo>, Status> {
        let (caller, request_id) = self.admin(&request, REGISTER).await?;
        let message = request.into_inner();
        let kind = pb::RotatorKind::try_from(message.kind)
            .map_err(|_| Status::invalid_argument("kind: unknown"))?;
        let rotator = rotator_config(kind, message.rotator)?;
        let tier =
            u8::try_from(message.tier).map_err(|_| Status::invalid_argument("tier: 1, 2 or 3"))?;
        let actor = Actor::client(caller.client_id, request_id, reason(&message.reason)?);
        let registration = Registration {
            name: message.name,
            rotator,
            tier,
            cadence_days: message.cadence_days,
            owner: message.owner,
            description: message.description,
            tags: message.tags.into_iter().collect::<BTreeMap<_, _>>(),
            initial_value: (!message.initial_value.is_empty())
                .then(|| SecretValue::new(message.initial_value)),
        };
        let view = self
            .secrets
            .register(registration, &actor)
            .await
            .map_err(from_secret)?;
        Ok(Response::new(secret_info(&view)))
    }

    #[instrument(name = "SecretService/ListSecrets", skip_all)]
    async fn list_secrets(
        &self,
        request: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        self.admin(&request, LIST).await?;
        let due_only = request.get_ref().due_only;
        let secrets = self
            .secrets
            .list()
            .await
            .map_err(from_secret)?
            .iter()
            .filter(|view| !due_only || view.warning || view.overdue)
            .map(secret_info)
            .collect();
        Ok(Response::new(pb::ListSecretsResponse { secrets }))
    }

    #[instrument(name = "SecretService/GetSecret", skip_all)]
    async fn get_secret(
        &self,
        request: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::SecretInfo>, Status> {
        self.admin(&request, GET).await?;
        let view = self
            .secrets
            .get(&request.get_ref().name)
            .await
            .map_err(from_secret)?;
        Ok(Response::new(secret_info(&view)))
    }

    #[instrument(name = "SecretService/PutSecretVersion", skip_all)]
    async fn put_secret_version(
        &self,
        request: Request<pb::PutSecretVersionRequest>,
    ) -> Result<Response<pb::SecretInfo>, Status> {
        let (caller, request_id) = self.admin(&request, PUT).await?;
        let message = request.into_inner();
        let actor = Actor::client(caller.client_id, request_id, reason(&message.reason)?);
        let view = self
            .secrets
            .put(&message.name, SecretValue::new(message.value), &actor)
            .await
            .map_err(from_secret)?;
        Ok(Response::new(secret_info(&view)))
    }

    #[instrument(name = "SecretService/RotateSecret", skip_all)]
    async fn rotate_secret(
        &self,
        request: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        let (caller, request_id) = self.admin(&request, ROTATE).await?;
        let message = request.into_inner();
        let actor = Actor::client(caller.client_id, request_id, reason(&message.reason)?);
        let outcome = self
            .secrets
            .rotate(&message.name, message.emergency, &actor)
            .await
            .map_err(from_secret)?;
        let view = self.secrets.get(&message.name).await.map_err(from_secret)?;
        Ok(Response::new(pb::RotateSecretResponse {
            secret: Some(secret_info(&view)),
            version: outcome.version,
            steps: outcome
                .steps
                .iter()
                .map(|step| (*step).to_owned())
                .collect(),
            resumed: outcome.resumed,
        }))
    }

    #[instrument(name = "SecretService/RollbackSecret", skip_all)]
    async fn rollback_secret(
        &self,
        request: Request<pb::RollbackSecretRequest>,
    ) -> Result<Response<pb::SecretInfo>, Status> {
        let (caller, request_id) = self.admin(&request, ROLLBACK).await?;
        let message = request.into_inner();
        let actor = Actor::client(caller.client_id, request_id, reason(&message.reason)?);
        let view = self
            .secrets
            .rollback(&message.name, &actor)
            .await
            .map_err(from_secret)?;
        Ok(Response::new(secret_info(&view)))
    }

    #[instrument(name = "SecretService/SecretHistory", skip_all)]
    async fn secret_history(
        &self,
        request: Request<pb::SecretHistoryRequest>,
    ) -> Result<Response<pb::SecretHistoryResponse>, Status> {
        self.admin(&request, HISTORY).await?;
        let message = request.get_ref();
        let limit = match usize::try_from(message.limit).unwrap_or(usize::MAX) {
            0 => DEFAULT_HISTORY,
            limit => limit.min(MAX_HISTORY),
        };
        let entries = self
            .secrets
            .history(&message.name, limit)
            .await
            .map_err(from_secret)?
            .iter()
            .map(history_entry)
            .collect();
        Ok(Response::new(pb::SecretHistoryResponse { entries }))
    }

    #[instrument(name = "SecretService/ReadSecret", skip_all)]
    async fn read_secret(
        &self,
        request: Request<pb::ReadSecretRequest>,
    ) -> Result<Response<pb::ReadSecretResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, READ, Scope::SecretReader)
            .await?;
        let request_id = request_id(&request);
        let message = request.into_inner();
        crate::secrets::check_name(&message.name).map_err(from_secret)?;
        if !caller.may_read_secret(&message.name) {
            return Err(self
                .app
                .deny(
                    &caller,
                    READ,
                    &request_id,
                    &format!("no secrets:read scope covers {}", message.name),
                    "this credential may not read that secret",
                )
                .await);
        }
        let actor = Actor::client(caller.client_id, request_id, String::new());
        let outcome = self
            .secrets
            .read(&message.name, message.include_previous, &actor)
            .await
            .map_err(from_secret)?;
        let value = |read: crate::secrets::ReadVersion| pb::SecretValue {
            version: read.version,
            stage: stage(read.stage).into(),
            value: read.value.expose().to_vec(),
        };
        Ok(Response::new(pb::ReadSecretResponse {
            name: message.name,
            current: Some(value(outcome.current)),
            previous: outcome.previous.map(value),
        }))
    }
}
