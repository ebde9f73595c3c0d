//! Service identities and opaque tokens on PostgreSQL. A state change is a conditional
//! `UPDATE … WHERE state = 'active'`: concurrent writers of one token queue on its row
//! lock and re-check the condition once the first commits, so of any number of
//! confirmations on any number of replicas exactly one revokes the predecessor. Issuing a
//! service token reads its identity `FOR SHARE`, so it waits for a concurrent disabling
//! and then sees the identity disabled.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, CredentialChange};
use tessera_common::ids::TenantId;
use tokio_postgres::Row;

use super::error::{PgFailure, corrupt};
use super::queries::{execute, query, query_opt};
use super::tx::PgTx;
use super::{DB_SYSTEM, PostgresStore};
use crate::store::columns::pepper_version_from_column;
use crate::store::emergency::DeactivatedCredentials;
use crate::store::opaque_tokens::{
    OpaqueTokenKind, OpaqueTokenRecord, OpaqueTokenState, OpaqueTokenStore, RevocationRecords,
    ServiceIdentityRecord, ServiceTokenInsert,
};
use crate::store::shared::{self, SPAN_TARGET, at_most_one};
use crate::store::{AuditEntry, StoreError};

/// The columns [`identity_from_row`] reads, in order.
const IDENTITY_COLUMNS: &str =
    "tenant_id, name, permissions, role, token_ttl_seconds, created_at, disabled_at";

/// The columns [`token_from_row`] reads, in order.
const TOKEN_COLUMNS: &str = "token_id, kind, tenant_id, subject, permissions, role, \
     secret_hash, pepper_version, issued_at, expires_at, state, state_at, replaces, holder";

#[async_trait]
impl OpaqueTokenStore for PostgresStore {
    #[tracing::instrument(name = "store.insert_service_identity", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_service_identity", otel.kind = "client"))]
    async fn insert_service_identity(
        &self,
        identity: ServiceIdentityRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let (identity, audit) = (identity.clone(), audit.clone());
            Box::pin(async move {
                let permissions = serde_json::to_string(&identity.permissions).map_err(corrupt)?;
                let ttl = i32::try_from(identity.token_ttl_seconds).map_err(corrupt)?;
                execute(
                    tx,
                    &format!(
                        "INSERT INTO service_identities ({IDENTITY_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    ),
                    &[
                        &identity.tenant_id.as_str(),
                        &identity.name,
                        &permissions,
                        &identity.role,
                        &ttl,
                        &identity.created_at.0,
                        &identity.disabled_at.map(|at| at.0),
                    ],
                )
                .await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(())
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.service_identity", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "service_identity", otel.kind = "client"))]
    async fn service_identity(
        &self,
        tenant_id: &TenantId,
        name: &str,
    ) -> Result<Option<ServiceIdentityRecord>, StoreError> {
        let sql = format!(
            "SELECT {IDENTITY_COLUMNS} FROM service_identities WHERE tenant_id = $1 AND name = $2"
        );
        self.read_rows(&sql, &[&tenant_id.as_str(), &name], identity_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.list_service_identities", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "list_service_identities", otel.kind = "client"))]
    async fn list_service_identities(
        &self,
        tenant_id: Option<&TenantId>,
    ) -> Result<Vec<ServiceIdentityRecord>, StoreError> {
        match tenant_id {
            Some(tenant_id) => {
                let sql = format!(
                    "SELECT {IDENTITY_COLUMNS} FROM service_identities WHERE tenant_id = $1 \
                     ORDER BY name"
                );
                self.read_rows(&sql, &[&tenant_id.as_str()], identity_from_row)
                    .await
            }
            None => {
                let sql = format!(
                    "SELECT {IDENTITY_COLUMNS} FROM service_identities ORDER BY tenant_id, name"
                );
                self.read_rows(&sql, &[], identity_from_row).await
            }
        }
    }

    #[tracing::instrument(name = "store.disable_service_identity", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "disable_service_identity", otel.kind = "client"))]
    async fn disable_service_identity(
        &self,
        tenant_id: &TenantId,
        name: &str,
        at: UnixMillis,
        audit: AuditEntry,
        records: RevocationRecords,
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.write_publishing(true, |tx| {
            let (tenant_id, name, audit, records) = (
                tenant_id.as_str().to_owned(),
                name.to_owned(),
                audit.clone(),
                records.clone(),
            );
            Box::pin(async move {
                let n_disabled = execute(
                    tx,
                    "UPDATE service_identities SET disabled_at = $3 \
                     WHERE tenant_id = $1 AND name = $2 AND disabled_at IS NULL",
                    &[&tenant_id, &name, &at.0],
                )
                .await?;
                if n_disabled == 0 {
                    return Ok(None);
                }
                let revoked = query(
                    tx,
                    &format!(
                        "UPDATE opaque_tokens SET state = 'revoked', state_at = $3 \
                         WHERE kind = 'service' AND tenant_id = $1 AND subject = $2 \
                         AND state = 'active' RETURNING {TOKEN_COLUMNS}"
                    ),
                    &[&tenant_id, &name, &at.0],
                )
                .await?
                .iter()
                .map(token_from_row)
                .collect::<Result<Vec<_>, _>>()?;
                let (changes, mut audits): (Vec<BundleChange>, Vec<AuditEntry>) = revoked
                    .iter()
                    .map(|token| {
                        let (change, audit) = records(token);
                        (BundleChange::CredentialChanged { change }, audit)
                    })
                    .unzip();
                audits.insert(0, audit);
                // Events before audit: the lock order of every transaction taking both.
                shared::append_events(&PgTx(tx), &changes, at).await?;
                shared::append_audit(&PgTx(tx), &audits).await?;
                Ok(Some(
                    revoked.into_iter().map(|token| token.token_id).collect(),
                ))
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.insert_service_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_service_token", otel.kind = "client"))]
    async fn insert_service_token(
        &self,
        token: OpaqueTokenRecord,
        audit: AuditEntry,
    ) -> Result<ServiceTokenInsert, StoreError> {
        self.write(|tx| {
            let (token, audit) = (token.clone(), audit.clone());
            Box::pin(async move {
                // FOR SHARE: a concurrent disabling holds the row; this waits for it and
                // then reads the identity as disabled, so no token outlives its identity.
                let identity = query_opt(
                    tx,
                    "SELECT disabled_at FROM service_identities \
                     WHERE tenant_id = $1 AND name = $2 FOR SHARE",
                    &[&token.tenant_id.as_str(), &token.subject],
                )
                .await?;
                let Some(identity) = identity else {
                    return Ok(ServiceTokenInsert::NoIdentity);
                };
                if identity.try_get::<_, Option<i64>>(0)?.is_some() {
                    return Ok(ServiceTokenInsert::Disabled);
                }
                if let Some(replaces) = &token.replaces {
                    let live = query_opt(
                        tx,
                        "SELECT 1 FROM opaque_tokens WHERE token_id = $1 AND kind = 'service' \
                         AND tenant_id = $2 AND subject = $3 AND state = 'active' \
                         AND expires_at > $4",
                        &[
                            replaces,
                            &token.tenant_id.as_str(),
                            &token.subject,
                            &token.issued_at.0,
                        ],
                    )
                    .await?;
                    if live.is_none() {
                        return Ok(ServiceTokenInsert::ReplacesNotLive);
                    }
                }
                insert_token(tx, &token).await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(ServiceTokenInsert::Inserted)
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.insert_webhook_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_webhook_token", otel.kind = "client"))]
    async fn insert_webhook_token(
        &self,
        token: OpaqueTokenRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let (token, audit) = (token.clone(), audit.clone());
            Box::pin(async move {
                insert_token(tx, &token).await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(())
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.opaque_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "opaque_token", otel.kind = "client"))]
    async fn opaque_token(&self, token_id: &str) -> Result<Option<OpaqueTokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM opaque_tokens WHERE token_id = $1");
        self.read_rows(&sql, &[&token_id], token_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.revoke_opaque_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "revoke_opaque_token", otel.kind = "client"))]
    async fn revoke_opaque_token(
        &self,
        token_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        let changes = vec![BundleChange::CredentialChanged { change: event }];
        self.write_publishing(true, |tx| {
            let (token_id, audit, changes) = (token_id.to_owned(), audit.clone(), changes.clone());
            Box::pin(async move {
                let n_revoked = execute(
                    tx,
                    "UPDATE opaque_tokens SET state = 'revoked', state_at = $2 \
                     WHERE token_id = $1 AND state = 'active'",
                    &[&token_id, &at.0],
                )
                .await?;
                if n_revoked == 0 {
                    return Ok(false);
                }
                shared::append_events(&PgTx(tx), &changes, at).await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(true)
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.sweep_opaque_tokens", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "sweep_opaque_tokens", otel.kind = "client"))]
    async fn sweep_opaque_tokens(
        &self,
        now: UnixMillis,
        delete_until: UnixMillis,
    ) -> Result<(u64, u64), StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                let n_expired = execute(
                    tx,
                    "UPDATE opaque_tokens SET state = 'expired', state_at = $1 \
                     WHERE state = 'active' AND expires_at <= $1",
                    &[&now.0],
                )
                .await?;
                let n_deleted = execute(
                    tx,
                    "DELETE FROM opaque_tokens WHERE expires_at <= $1",
                    &[&delete_until.0],
                )
                .await?;
                Ok((n_expired, n_deleted))
            })
        })
        .await
    }
}

/// Revokes every live API key, service token and webhook token of `tenant_id` (an
/// emergency tenant revocation, inside its transaction); returns how many of each.
pub(super) async fn deactivate_tenant_credentials(
    tx: &Transaction<'_>,
    tenant_id: &TenantId,
    at: UnixMillis,
) -> Result<DeactivatedCredentials, PgFailure> {
    let api_keys = execute(
        tx,
        "UPDATE api_keys SET state = 'revoked', state_at = $2 \
         WHERE tenant_id = $1 AND state IN ('active', 'rotated')",
        &[&tenant_id.as_str(), &at.0],
    )
    .await?;
    let mut counts = [0_u64; 2];
    for (count, kind) in counts
        .iter_mut()
        .zip([OpaqueTokenKind::Service, OpaqueTokenKind::Webhook])
    {
        *count = execute(
            tx,
            "UPDATE opaque_tokens SET state = 'revoked', state_at = $3 \
             WHERE tenant_id = $1 AND kind = $2 AND state = 'active'",
            &[&tenant_id.as_str(), &kind.as_str(), &at.0],
        )
        .await?;
    }
    Ok(DeactivatedCredentials {
        api_keys,
        service_tokens: counts[0],
        webhook_tokens: counts[1],
    })
}

async fn insert_token(tx: &Transaction<'_>, token: &OpaqueTokenRecord) -> Result<(), PgFailure> {
    let permissions = serde_json::to_string(&token.permissions).map_err(corrupt)?;
    execute(
        tx,
        &format!(
            "INSERT INTO opaque_tokens ({TOKEN_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ),
        &[
            &token.token_id,
            &token.kind.as_str(),
            &token.tenant_id.as_str(),
            &token.subject,
            &permissions,
            &token.role,
            &token.secret_hash,
            &token.pepper_version.get(),
            &token.issued_at.0,
            &token.expires_at.0,
            &token.state.as_str(),
            &token.state_at.map(|at| at.0),
            &token.replaces,
            &token.holder,
        ],
    )
    .await?;
    Ok(())
}

fn identity_from_row(row: &Row) -> Result<ServiceIdentityRecord, PgFailure> {
    let tenant_id: String = row.try_get(0)?;
    let permissions: String = row.try_get(2)?;
    let ttl: i32 = row.try_get(4)?;
    Ok(ServiceIdentityRecord {
        tenant_id: TenantId::new(tenant_id).map_err(corrupt)?,
        name: row.try_get(1)?,
        permissions: serde_json::from_str(&permissions).map_err(corrupt)?,
        role: row.try_get(3)?,
        token_ttl_seconds: u32::try_from(ttl).map_err(corrupt)?,
        created_at: UnixMillis(row.try_get(5)?),
        disabled_at: row.try_get::<_, Option<i64>>(6)?.map(UnixMillis),
    })
}

fn token_from_row(row: &Row) -> Result<OpaqueTokenRecord, PgFailure> {
    let kind: String = row.try_get(1)?;
    let tenant_id: String = row.try_get(2)?;
    let permissions: String = row.try_get(4)?;
    let state: String = row.try_get(10)?;
    Ok(OpaqueTokenRecord {
        token_id: row.try_get(0)?,
        kind: OpaqueTokenKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("unknown opaque token kind `{kind}`")))?,
        tenant_id: TenantId::new(tenant_id).map_err(corrupt)?,
        subject: row.try_get(3)?,
        permissions: serde_json::from_str(&permissions).map_err(corrupt)?,
        role: row.try_get(5)?,
        secret_hash: row.try_get(6)?,
        pepper_version: pepper_version_from_column(row.try_get(7)?)?,
        issued_at: UnixMillis(row.try_get(8)?),
        expires_at: UnixMillis(row.try_get(9)?),
        state: OpaqueTokenState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown opaque token state `{state}`")))?,
        state_at: row.try_get::<_, Option<i64>>(11)?.map(UnixMillis),
        replaces: row.try_get(12)?,
        holder: row.try_get(13)?,
    })
}
