//! The API-key aggregate on SQLite. Every write is one `BEGIN IMMEDIATE` transaction, so
//! of any number of concurrent rotations of one key (on any connection to the file)
//! exactly one finds it active.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Row, Transaction, params, params_from_iter};
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, CredentialChange};
use tessera_common::ids::TenantId;

use super::error::SqliteFailure;
use super::tx::{SqliteTx, complete};
use super::{DB_SYSTEM, SqliteStore};
use crate::api_keys::ratelimit::RateLimits;
use crate::store::api_keys::{ApiKeyRecord, ApiKeyState, ApiKeyStore, ApiKeyUsage};
use crate::store::columns::pepper_version_from_column;
use crate::store::shared::{self, SPAN_TARGET, at_most_one};
use crate::store::{AuditEntry, StoreError};

/// The columns [`api_key_from_row`] reads, in order.
const API_KEY_COLUMNS: &str = "key_id, tenant_id, name, permissions, role, secret_hash, \
     pepper_version, created_at, expires_at, state, state_at, predecessor_id, successor_id, \
     grace_until, expiring_at, last_used_at, usage_count, rate_per_minute, rate_per_hour, \
     rate_per_day";

/// Keys per usage statement: 3 parameters each, well under SQLite's 32766.
const USAGE_ROWS_PER_STATEMENT: usize = 4096;

#[async_trait]
impl ApiKeyStore for SqliteStore {
    #[tracing::instrument(name = "store.insert_api_key", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_api_key", otel.kind = "client"))]
    async fn insert_api_key(&self, key: ApiKeyRecord, audit: AuditEntry) -> Result<(), StoreError> {
        self.write(move |tx| {
            insert_api_key(tx, &key)?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(name = "store.api_key", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "api_key", otel.kind = "client"))]
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_id = ?1");
        self.read_rows(sql, vec![key_id.to_owned().into()], api_key_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.list_api_keys", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "list_api_keys", otel.kind = "client"))]
    async fn list_api_keys(
        &self,
        tenant_id: Option<&TenantId>,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let (sql, params): (String, Vec<Value>) = match tenant_id {
            Some(tenant_id) => (
                format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 \
                     ORDER BY created_at, key_id"
                ),
                vec![tenant_id.as_str().to_owned().into()],
            ),
            None => (
                format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id"),
                Vec::new(),
            ),
        };
        self.read_rows(sql, params, api_key_from_row).await
    }

    #[tracing::instrument(name = "store.rotate_api_key", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "rotate_api_key", otel.kind = "client"))]
    async fn rotate_api_key(
        &self,
        old_key_id: &str,
        successor: ApiKeyRecord,
        grace_until: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        let old_key_id = old_key_id.to_owned();
        let changes = vec![BundleChange::CredentialChanged { change: event }];
        self.write_publishing(true, move |tx| {
            let n_rotated = tx
                .prepare_cached(
                    "UPDATE api_keys SET state = 'rotated', state_at = ?2, successor_id = ?3, \
                     grace_until = ?4 WHERE key_id = ?1 AND state = 'active'",
                )?
                .execute(params![
                    old_key_id,
                    successor.created_at.0,
                    successor.key_id,
                    grace_until.0
                ])?;
            if n_rotated == 0 {
                return Ok(false);
            }
            insert_api_key(tx, &successor)?;
            complete(shared::append_events(
                &SqliteTx(tx),
                &changes,
                successor.created_at,
            ))?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(true)
        })
        .await
    }

    #[tracing::instrument(name = "store.revoke_api_key", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "revoke_api_key", otel.kind = "client"))]
    async fn revoke_api_key(
        &self,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        self.conditional(
            "UPDATE api_keys SET state = 'revoked', state_at = ?2 \
             WHERE key_id = ?1 AND state IN ('active', 'rotated')",
            key_id,
            at,
            audit,
            event,
        )
        .await
    }

    #[tracing::instrument(name = "store.api_keys_expiring_by", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "api_keys_expiring_by", otel.kind = "client"))]
    async fn api_keys_expiring_by(
        &self,
        until: UnixMillis,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE state = 'active' AND expires_at <= ?1 \
             ORDER BY expires_at, key_id"
        );
        self.read_rows(sql, vec![until.0.into()], api_key_from_row)
            .await
    }

    #[tracing::instrument(name = "store.mark_api_key_expiring", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "mark_api_key_expiring", otel.kind = "client"))]
    async fn mark_api_key_expiring(
        &self,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        self.conditional(
            "UPDATE api_keys SET expiring_at = ?2 \
             WHERE key_id = ?1 AND state = 'active' AND expiring_at IS NULL",
            key_id,
            at,
            audit,
            event,
        )
        .await
    }

    #[tracing::instrument(name = "store.expire_api_key", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "expire_api_key", otel.kind = "client"))]
    async fn expire_api_key(
        &self,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        self.conditional(
            "UPDATE api_keys SET state = 'expired', state_at = ?2 \
             WHERE key_id = ?1 AND state = 'active' AND expires_at <= ?2",
            key_id,
            at,
            audit,
            event,
        )
        .await
    }

    #[tracing::instrument(name = "store.set_api_key_rate_limits", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "set_api_key_rate_limits", otel.kind = "client"))]
    async fn set_api_key_rate_limits(
        &self,
        key_id: &str,
        limits: RateLimits,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let key_id = key_id.to_owned();
        self.write(move |tx| {
            let n_changed = tx
                .prepare_cached(
                    "UPDATE api_keys SET rate_per_minute = ?2, rate_per_hour = ?3, \
                     rate_per_day = ?4 WHERE key_id = ?1 AND expires_at > ?5 \
                     AND (state = 'active' OR (state = 'rotated' AND grace_until > ?5))",
                )?
                .execute(params![
                    key_id,
                    limits.per_minute,
                    limits.per_hour,
                    limits.per_day,
                    at.0
                ])?;
            if n_changed == 0 {
                return Ok(false);
            }
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(true)
        })
        .await
    }

    #[tracing::instrument(name = "store.record_api_key_usage", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "record_api_key_usage", otel.kind = "client"))]
    async fn record_api_key_usage(&self, usage: Vec<ApiKeyUsage>) -> Result<(), StoreError> {
        if usage.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            // One statement per flush — the uses joined as a VALUES list — unless the batch
            // is larger than SQLite's bound on parameters allows, then one per chunk, all
            // in this one transaction.
            for chunk in usage.chunks(USAGE_ROWS_PER_STATEMENT) {
                let rows = (0..chunk.len())
                    .map(|i| format!("(?{}, ?{}, ?{})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "WITH batch (key_id, n, last) AS (VALUES {rows}) \
                     UPDATE api_keys SET usage_count = usage_count + batch.n, \
                     last_used_at = MAX(COALESCE(api_keys.last_used_at, 0), batch.last) \
                     FROM batch WHERE api_keys.key_id = batch.key_id"
                );
                let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 3);
                for use_ in chunk {
                    params.push(use_.key_id.clone().into());
                    params.push(i64::try_from(use_.count).unwrap_or(i64::MAX).into());
                    params.push(use_.last_used_at.0.into());
                }
                tx.prepare(&sql)?.execute(params_from_iter(params))?;
            }
            Ok(())
        })
        .await
    }
}

impl SqliteStore {
    /// Runs `sql` (parameters: `?1` the key id, `?2` the instant) and, when it changed a
    /// row, appends `event` and `audit`, in one transaction; returns whether it changed
    /// one.
    async fn conditional(
        &self,
        sql: &'static str,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        let key_id = key_id.to_owned();
        let changes = vec![BundleChange::CredentialChanged { change: event }];
        self.write_publishing(true, move |tx| {
            let n_changed = tx.prepare_cached(sql)?.execute(params![key_id, at.0])?;
            if n_changed == 0 {
                return Ok(false);
            }
            complete(shared::append_events(&SqliteTx(tx), &changes, at))?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(true)
        })
        .await
    }
}

fn insert_api_key(tx: &Transaction<'_>, key: &ApiKeyRecord) -> Result<(), SqliteFailure> {
    let permissions = serde_json::to_string(&key.permissions)
        .map_err(|error| SqliteFailure::from(StoreError::Corrupt(error.to_string())))?;
    tx.prepare_cached(&format!(
        "INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
         ?20)"
    ))?
    .execute(params![
        key.key_id,
        key.tenant_id.as_str(),
        key.name,
        permissions,
        key.role,
        key.secret_hash,
        key.pepper_version.get(),
        key.created_at.0,
        key.expires_at.0,
        key.state.as_str(),
        key.state_at.map(|at| at.0),
        key.predecessor_id,
        key.successor_id,
        key.grace_until.map(|at| at.0),
        key.expiring_at.map(|at| at.0),
        key.last_used_at.map(|at| at.0),
        i64::try_from(key.usage_count).unwrap_or(i64::MAX),
        key.rate_limits.per_minute,
        key.rate_limits.per_hour,
        key.rate_limits.per_day,
    ])?;
    Ok(())
}

fn api_key_from_row(row: &Row<'_>) -> Result<ApiKeyRecord, SqliteFailure> {
    let corrupt = |what: String| SqliteFailure::from(StoreError::Corrupt(what));
    let tenant_id: String = row.get(1)?;
    let permissions: String = row.get(3)?;
    let state: String = row.get(9)?;
    let usage_count: i64 = row.get(16)?;
    Ok(ApiKeyRecord {
        key_id: row.get(0)?,
        tenant_id: TenantId::new(tenant_id).map_err(|error| corrupt(error.to_string()))?,
        name: row.get(2)?,
        permissions: serde_json::from_str(&permissions)
            .map_err(|error| corrupt(error.to_string()))?,
        role: row.get(4)?,
        secret_hash: row.get(5)?,
        pepper_version: pepper_version_from_column(row.get(6)?)?,
        created_at: UnixMillis(row.get(7)?),
        expires_at: UnixMillis(row.get(8)?),
        state: ApiKeyState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown api key state `{state}`")))?,
        state_at: row.get::<_, Option<i64>>(10)?.map(UnixMillis),
        predecessor_id: row.get(11)?,
        successor_id: row.get(12)?,
        grace_until: row.get::<_, Option<i64>>(13)?.map(UnixMillis),
        expiring_at: row.get::<_, Option<i64>>(14)?.map(UnixMillis),
        last_used_at: row.get::<_, Option<i64>>(15)?.map(UnixMillis),
        usage_count: u64::try_from(usage_count).unwrap_or(0),
        rate_limits: RateLimits {
            per_minute: row.get(17)?,
            per_hour: row.get(18)?,
            per_day: row.get(19)?,
        },
    })
}
