//! `tessera.v1.AdminService`: API clients (who may call the issuer) and the audit log.

use std::sync::Arc;

use tessera_common::ids::{ClientId, check_identifier};
use tessera_common::limits::MAX_LIST_ENTRIES;
use tessera_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert;
use super::status::from_store;
use crate::app::{App, request_id};
use crate::audit::{Actor, AuditAction, ChainVerifier};
use crate::auth::Scope;
use crate::store::{AuditRecord, ClientRecord};

mod leaked;

/// Events read per batch when verifying the chain.
const VERIFY_BATCH: usize = 1000;

/// The RPC name CreateClient audits its refusals under.
const CREATE_CLIENT: &str = "AdminService/CreateClient";

/// The AdminService implementation.
pub struct AdminServiceImpl {
    pub app: Arc<App>,
}

fn client(record: &ClientRecord) -> pb::Client {
    pb::Client {
        client_id: record.client_id.to_string(),
        name: record.name.clone(),
        scopes: record.scopes.clone(),
        tenants: record.tenants.clone(),
        created_at: Some(convert::timestamp(record.created_at)),
        disabled_at: record.disabled_at.map(convert::timestamp),
    }
}

fn audit_event(record: &AuditRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        seq: record.seq,
        at: Some(convert::timestamp(record.entry.at)),
        actor: record.entry.actor.clone(),
        action: record.entry.action.clone(),
        target: record.entry.target.clone(),
        request_id: record.entry.request_id.clone(),
        reason: record.entry.reason.clone(),
        outcome: record.entry.outcome.clone(),
        hash: record
            .hash
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminServiceImpl {
    #[instrument(skip_all, name = "AdminService/CreateClient")]
    async fn create_client(
        &self,
        request: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, CREATE_CLIENT, Scope::Admin)
            .await?;
        let request_id = request_id(&request);
        let message = request.into_inner();
        check_identifier("name", &message.name)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        if message.name.len() > 128 {
            return Err(Status::invalid_argument("name: longer than 128 bytes"));
        }
        if message.scopes.is_empty() {
            return Err(Status::invalid_argument(
                "scopes: at least one of admin, issue, introspect, bundle:read",
            ));
        }
        let scopes = message
            .scopes
            .iter()
            .map(|scope| {
                Scope::parse(scope).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "scopes: unknown scope `{}`",
                        scope.chars().take(64).collect::<String>()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if message.tenants.len() > MAX_LIST_ENTRIES {
            return Err(Status::invalid_argument(format!(
                "tenants: more than {MAX_LIST_ENTRIES} entries"
            )));
        }
        for tenant in &message.tenants {
            check_identifier("tenants", tenant)
                .map_err(|error| Status::invalid_argument(error.to_string()))?;
        }
        if !caller.may_grant(&scopes, &message.tenants) {
            return Err(self
                .app
                .deny(
                    &caller,
                    CREATE_CLIENT,
                    &request_id,
                    "client with scopes or tenants beyond the caller's refused",
                    "a new client may hold only scopes and tenants the caller holds",
                )
                .await);
        }
        let reason = format!("name={} scopes={}", message.name, message.scopes.join(","));
        let audit = Actor::client(caller.client_id.clone(), request_id, reason).entry(
            self.app.now(),
            AuditAction::ClientCreate,
            String::new(),
        );
        let (record, credential) = self
            .app
            .auth
            .create_client(message.name, scopes, message.tenants, audit)
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::CreateClientResponse {
            client_id: record.client_id.to_string(),
            credential: credential.expose(),
        }))
    }

    #[instrument(skip_all, name = "AdminService/ListClients")]
    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, "AdminService/ListClients", Scope::Admin)
            .await?;
        let clients = self.app.store.list_clients().await.map_err(from_store)?;
        // A confined admin sees only the clients confined within its own tenants.
        Ok(Response::new(pb::ListClientsResponse {
            clients: clients
                .iter()
                .filter(|record| caller.covers_tenants(&record.tenants))
                .map(client)
                .collect(),
        }))
    }

    #[instrument(skip_all, name = "AdminService/DisableClient")]
    async fn disable_client(
        &self,
        request: Request<pb::DisableClientRequest>,
    ) -> Result<Response<pb::DisableClientResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, "AdminService/DisableClient", Scope::Admin)
            .await?;
        let request_id = request_id(&request);
        let message = request.into_inner();
        let client_id = ClientId::new(message.client_id)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        // Optional, but refused (not truncated or cleaned) when unfit for the audit log.
        super::reason::optional_reason(&message.reason)?;
        // Another tenant's client (or an unconfined one) is answered like an unknown id,
        // so a confined admin learns nothing of clients outside its tenants.
        let visible = self
            .app
            .store
            .client(&client_id)
            .await
            .map_err(from_store)?
            .is_some_and(|record| caller.covers_tenants(&record.tenants));
        if !visible {
            return Err(Status::not_found("client_id: no such client"));
        }
        let now = self.app.now();
        let audit = Actor::client(caller.client_id.clone(), request_id, message.reason).entry(
            now,
            AuditAction::ClientDisable,
            client_id.to_string(),
        );
        self.app
            .store
            .disable_client(&client_id, now, audit)
            .await
            .map_err(from_store)?;
        self.app.auth.forget(&client_id).await;
        Ok(Response::new(pb::DisableClientResponse {}))
    }

    #[instrument(skip_all, name = "AdminService/RevokeLeakedCredentials")]
    async fn revoke_leaked_credentials(
        &self,
        request: Request<pb::RevokeLeakedCredentialsRequest>,
    ) -> Result<Response<pb::RevokeLeakedCredentialsResponse>, Status> {
        let caller = self
            .app
            .authorize(
                &request,
                "AdminService/RevokeLeakedCredentials",
                Scope::Admin,
            )
            .await?;
        let request_id = request_id(&request);
        let message = request.into_inner();
        leaked::check_limits(&message)?;
        let reason = if message.reason.is_empty() {
            "leaked credential".to_owned()
        } else {
            format!("leaked credential: {}", message.reason)
        };
        let actor = Actor::client(caller.client_id.clone(), request_id, reason);
        let mut outcomes = Vec::with_capacity(message.credentials.len());
        for presented in &message.credentials {
            let outcome = leaked::revoke_one(&self.app, &caller, &actor, presented).await?;
            outcomes.push(outcome as i32);
        }
        Ok(Response::new(pb::RevokeLeakedCredentialsResponse {
            outcomes,
        }))
    }

    #[instrument(skip_all, name = "AdminService/ListAuditEvents")]
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, "AdminService/ListAuditEvents", Scope::Admin)
            .await?;
        // Audit entries carry no tenant to filter by: the log is the platform's.
        self.app
            .require_unconfined(
                &caller,
                "AdminService/ListAuditEvents",
                &request_id(&request),
            )
            .await?;
        let message = request.into_inner();
        let limit = match message.limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let before = (message.before_seq > 0).then_some(message.before_seq);
        let records = self
            .app
            .store
            .audit_page(before, limit)
            .await
            .map_err(from_store)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: records.iter().map(audit_event).collect(),
        }))
    }

    #[instrument(skip_all, name = "AdminService/VerifyAuditLog")]
    async fn verify_audit_log(
        &self,
        request: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::VerifyAuditLogResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, "AdminService/VerifyAuditLog", Scope::Admin)
            .await?;
        // Audit entries carry no tenant to filter by: the log is the platform's.
        self.app
            .require_unconfined(
                &caller,
                "AdminService/VerifyAuditLog",
                &request_id(&request),
            )
            .await?;
        let mut verifier = ChainVerifier::default();
        let mut after = 0u64;
        loop {
            let batch = self
                .app
                .store
                .audit_after(after, VERIFY_BATCH)
                .await
                .map_err(from_store)?;
            if batch.is_empty() {
                break;
            }
            for record in &batch {
                if !verifier.check(record) {
                    return Ok(Response::new(pb::VerifyAuditLogResponse {
                        intact: false,
                        n_events: verifier.n_events(),
                        first_broken_seq: record.seq,
                    }));
                }
                after = record.seq;
            }
        }
        Ok(Response::new(pb::VerifyAuditLogResponse {
            intact: true,
            n_events: verifier.n_events(),
            first_broken_seq: 0,
        }))
    }
}
