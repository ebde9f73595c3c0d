//! Service identities and opaque tokens on SQLite. Every write is one `BEGIN IMMEDIATE`
//! transaction, so checks and writes inside one (the identity is enabled, the predecessor
//! is live, the token is still active) cannot be overtaken by another connection.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use tessera_common::UnixMillis;
use tessera_common::bundle::BundleChange;
use tessera_common::bundle::CredentialChange;
use tessera_common::ids::TenantId;

use super::error::SqliteFailure;
use super::tx::{SqliteTx, complete};
use super::{DB_SYSTEM, SqliteStore};
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
impl OpaqueTokenStore for SqliteStore {
    #[tracing::instrument(name = "store.insert_service_identity", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_service_identity", otel.kind = "client"))]
    async fn insert_service_identity(
        &self,
        identity: ServiceIdentityRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO service_identities ({IDENTITY_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))?
            .execute(params![
                identity.tenant_id.as_str(),
                identity.name,
                to_json(&identity.permissions)?,
                identity.role,
                identity.token_ttl_seconds,
                identity.created_at.0,
                identity.disabled_at.map(|at| at.0),
            ])?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(())
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
            "SELECT {IDENTITY_COLUMNS} FROM service_identities WHERE tenant_id = ?1 AND name = ?2"
        );
        let params = vec![tenant_id.as_str().to_owned().into(), name.to_owned().into()];
        self.read_rows(sql, params, identity_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.list_service_identities", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "list_service_identities", otel.kind = "client"))]
    async fn list_service_identities(
        &self,
        tenant_id: Option<&TenantId>,
    ) -> Result<Vec<ServiceIdentityRecord>, StoreError> {
        let (sql, params): (String, Vec<Value>) = match tenant_id {
            Some(tenant_id) => (
                format!(
                    "SELECT {IDENTITY_COLUMNS} FROM service_identities WHERE tenant_id = ?1 \
                     ORDER BY name"
                ),
                vec![tenant_id.as_str().to_owned().into()],
            ),
            None => (
                format!(
                    "SELECT {IDENTITY_COLUMNS} FROM service_identities ORDER BY tenant_id, name"
                ),
                Vec::new(),
            ),
        };
        self.read_rows(sql, params, identity_from_row).await
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
        let (tenant_id, name) = (tenant_id.as_str().to_owned(), name.to_owned());
        self.write_publishing(true, move |tx| {
            let n_disabled = tx
                .prepare_cached(
                    "UPDATE service_identities SET disabled_at = ?3 \
                     WHERE tenant_id = ?1 AND name = ?2 AND disabled_at IS NULL",
                )?
                .execute(params![tenant_id, name, at.0])?;
            if n_disabled == 0 {
                return Ok(None);
            }
            let revoked = {
                let mut statement = tx.prepare_cached(&format!(
                    "UPDATE opaque_tokens SET state = 'revoked', state_at = ?3 \
                     WHERE kind = 'service' AND tenant_id = ?1 AND subject = ?2 \
                     AND state = 'active' RETURNING {TOKEN_COLUMNS}"
                ))?;
                let mut rows = statement.query(params![tenant_id, name, at.0])?;
                let mut revoked = Vec::new();
                while let Some(row) = rows.next()? {
                    revoked.push(token_from_row(row)?);
                }
                revoked
            };
            let (changes, mut audits): (Vec<BundleChange>, Vec<AuditEntry>) = revoked
                .iter()
                .map(|token| {
                    let (change, audit) = records(token);
                    (BundleChange::CredentialChanged { change }, audit)
                })
                .unzip();
            audits.insert(0, audit);
            complete(shared::append_events(&SqliteTx(tx), &changes, at))?;
            complete(shared::append_audit(&SqliteTx(tx), &audits))?;
            Ok(Some(
                revoked.into_iter().map(|token| token.token_id).collect(),
            ))
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
        self.write(move |tx| {
            let disabled_at: Option<Option<i64>> = tx
                .prepare_cached(
                    "SELECT disabled_at FROM service_identities WHERE tenant_id = ?1 AND name = ?2",
                )?
                .query_row(params![token.tenant_id.as_str(), token.subject], |row| {
                    row.get(0)
                })
                .optional()?;
            match disabled_at {
                None => return Ok(ServiceTokenInsert::NoIdentity),
                Some(Some(_)) => return Ok(ServiceTokenInsert::Disabled),
                Some(None) => {}
            }
            if let Some(replaces) = &token.replaces {
                let live: Option<i64> = tx
                    .prepare_cached(
                        "SELECT 1 FROM opaque_tokens WHERE token_id = ?1 AND kind = 'service' \
                         AND tenant_id = ?2 AND subject = ?3 AND state = 'active' \
                         AND expires_at > ?4",
                    )?
                    .query_row(
                        params![
                            replaces,
                            token.tenant_id.as_str(),
                            token.subject,
                            token.issued_at.0
                        ],
                        |row| row.get(0),
                    )
                    .optional()?;
                if live.is_none() {
                    return Ok(ServiceTokenInsert::ReplacesNotLive);
                }
            }
            insert_token(tx, &token)?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(ServiceTokenInsert::Inserted)
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
        self.write(move |tx| {
            insert_token(tx, &token)?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(name = "store.opaque_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "opaque_token", otel.kind = "client"))]
    async fn opaque_token(&self, token_id: &str) -> Result<Option<OpaqueTokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM opaque_tokens WHERE token_id = ?1");
        self.read_rows(sql, vec![token_id.to_owned().into()], token_from_row)
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
        let token_id = token_id.to_owned();
        let changes = vec![BundleChange::CredentialChanged { change: event }];
        self.write_publishing(true, move |tx| {
            let n_revoked = tx
                .prepare_cached(
                    "UPDATE opaque_tokens SET state = 'revoked', state_at = ?2 \
                     WHERE token_id = ?1 AND state = 'active'",
                )?
                .execute(params![token_id, at.0])?;
            if n_revoked == 0 {
                return Ok(false);
            }
            complete(shared::append_events(&SqliteTx(tx), &changes, at))?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(true)
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
        self.write(move |tx| {
            let n_expired = tx
                .prepare_cached(
                    "UPDATE opaque_tokens SET state = 'expired', state_at = ?1 \
                     WHERE state = 'active' AND expires_at <= ?1",
                )?
                .execute([now.0])?;
            let n_deleted = tx
                .prepare_cached("DELETE FROM opaque_tokens WHERE expires_at <= ?1")?
                .execute([delete_until.0])?;
            Ok((n_expired as u64, n_deleted as u64))
        })
        .await
    }
}

/// Revokes every live API key, service token and webhook token of `tenant_id` (an
/// emergency tenant revocation, inside its transaction); returns how many of each.
pub(super) fn deactivate_tenant_credentials(
    tx: &rusqlite::Connection,
    tenant_id: &TenantId,
    at: UnixMillis,
) -> Result<DeactivatedCredentials, SqliteFailure> {
    let api_keys = tx
        .prepare_cached(
            "UPDATE api_keys SET state = 'revoked', state_at = ?2 \
             WHERE tenant_id = ?1 AND state IN ('active', 'rotated')",
        )?
        .execute(params![tenant_id.as_str(), at.0])?;
    let revoke_tokens = |kind: OpaqueTokenKind| -> Result<usize, SqliteFailure> {
        Ok(tx
            .prepare_cached(
                "UPDATE opaque_tokens SET state = 'revoked', state_at = ?3 \
                 WHERE tenant_id = ?1 AND kind = ?2 AND state = 'active'",
            )?
            .execute(params![tenant_id.as_str(), kind.as_str(), at.0])?)
    };
    let service_tokens = revoke_tokens(OpaqueTokenKind::Service)?;
    let webhook_tokens = revoke_tokens(OpaqueTokenKind::Webhook)?;
    Ok(DeactivatedCredentials {
        api_keys: api_keys as u64,
        service_tokens: service_tokens as u64,
        webhook_tokens: webhook_tokens as u64,
    })
}

fn to_json(values: &[String]) -> Result<String, SqliteFailure> {
    serde_json::to_string(values)
        .map_err(|error| SqliteFailure::from(StoreError::Corrupt(error.to_string())))
}

fn insert_token(tx: &Transaction<'_>, token: &OpaqueTokenRecord) -> Result<(), SqliteFailure> {
    tx.prepare_cached(&format!(
        "INSERT INTO opaque_tokens ({TOKEN_COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?
    .execute(params![
        token.token_id,
        token.kind.as_str(),
        token.tenant_id.as_str(),
        token.subject,
        to_json(&token.permissions)?,
        token.role,
        token.secret_hash,
        token.pepper_version.get(),
        token.issued_at.0,
        token.expires_at.0,
        token.state.as_str(),
        token.state_at.map(|at| at.0),
        token.replaces,
        token.holder,
    ])?;
    Ok(())
}

fn corrupt(what: String) -> SqliteFailure {
    SqliteFailure::from(StoreError::Corrupt(what))
}

fn identity_from_row(row: &Row<'_>) -> Result<ServiceIdentityRecord, SqliteFailure> {
    let tenant_id: String = row.get(0)?;
    let permissions: String = row.get(2)?;
    let ttl: i64 = row.get(4)?;
    Ok(ServiceIdentityRecord {
        tenant_id: TenantId::new(tenant_id).map_err(|error| corrupt(error.to_string()))?,
        name: row.get(1)?,
        permissions: serde_json::from_str(&permissions)
            .map_err(|error| corrupt(error.to_string()))?,
        role: row.get(3)?,
        token_ttl_seconds: u32::try_from(ttl)
            .map_err(|_| corrupt(format!("token ttl {ttl} out of range")))?,
        created_at: UnixMillis(row.get(5)?),
        disabled_at: row.get::<_, Option<i64>>(6)?.map(UnixMillis),
    })
}

fn token_from_row(row: &Row<'_>) -> Result<OpaqueTokenRecord, SqliteFailure> {
    let kind: String = row.get(1)?;
    let tenant_id: String = row.get(2)?;
    let permissions: String = row.get(4)?;
    let state: String = row.get(10)?;
    Ok(OpaqueTokenRecord {
        token_id: row.get(0)?,
        kind: OpaqueTokenKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("unknown opaque token kind `{kind}`")))?,
        tenant_id: TenantId::new(tenant_id).map_err(|error| corrupt(error.to_string()))?,
        subject: row.get(3)?,
        permissions: serde_json::from_str(&permissions)
            .map_err(|error| corrupt(error.to_string()))?,
        role: row.get(5)?,
        secret_hash: row.get(6)?,
        pepper_version: pepper_version_from_column(row.get(7)?)?,
        issued_at: UnixMillis(row.get(8)?),
        expires_at: UnixMillis(row.get(9)?),
        state: OpaqueTokenState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown opaque token state `{state}`")))?,
        state_at: row.get::<_, Option<i64>>(11)?.map(UnixMillis),
        replaces: row.get(12)?,
        holder: row.get(13)?,
    })
}
