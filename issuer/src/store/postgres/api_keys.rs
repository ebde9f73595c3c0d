//! The API-key aggregate on PostgreSQL. A state change is a conditional `UPDATE … WHERE
//! state = …`: concurrent writers of one key queue on its row lock and re-check the
//! condition once the first commits, so of any number of rotations on any number of
//! replicas exactly one finds the key active.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, CredentialChange};
use tessera_common::ids::TenantId;
use tokio_postgres::Row;

use super::error::{PgFailure, corrupt};
use super::queries::execute;
use super::tx::PgTx;
use super::{DB_SYSTEM, PostgresStore};
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

#[async_trait]
impl ApiKeyStore for PostgresStore {
    #[tracing::instrument(name = "store.insert_api_key", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_api_key", otel.kind = "client"))]
    async fn insert_api_key(&self, key: ApiKeyRecord, audit: AuditEntry) -> Result<(), StoreError> {
        self.write(|tx| {
            let (key, audit) = (key.clone(), audit.clone());
            Box::pin(async move {
                insert_api_key(tx, &key).await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(())
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.api_key", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "api_key", otel.kind = "client"))]
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_id = $1");
        self.read_rows(&sql, &[&key_id], api_key_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.list_api_keys", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "list_api_keys", otel.kind = "client"))]
    async fn list_api_keys(
        &self,
        tenant_id: Option<&TenantId>,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        match tenant_id {
            Some(tenant_id) => {
                let sql = format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 \
                     ORDER BY created_at, key_id"
                );
                self.read_rows(&sql, &[&tenant_id.as_str()], api_key_from_row)
                    .await
            }
            None => {
                let sql =
                    format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id");
                self.read_rows(&sql, &[], api_key_from_row).await
            }
        }
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
        let changes = vec![BundleChange::CredentialChanged { change: event }];
        self.write_publishing(true, |tx| {
            let (old_key_id, successor, audit, changes) = (
                old_key_id.to_owned(),
                successor.clone(),
                audit.clone(),
                changes.clone(),
            );
            Box::pin(async move {
                let n_rotated = execute(
                    tx,
                    "UPDATE api_keys SET state = 'rotated', state_at = $2, successor_id = $3, \
                     grace_until = $4 WHERE key_id = $1 AND state = 'active'",
                    &[
                        &old_key_id,
                        &successor.created_at.0,
                        &successor.key_id,
                        &grace_until.0,
                    ],
                )
                .await?;
                if n_rotated == 0 {
                    return Ok(false);
                }
                insert_api_key(tx, &successor).await?;
                // Events before audit: the lock order of every transaction taking both.
                shared::append_events(&PgTx(tx), &changes, successor.created_at).await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(true)
            })
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
            "UPDATE api_keys SET state = 'revoked', state_at = $2 \
             WHERE key_id = $1 AND state IN ('active', 'rotated')",
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
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE state = 'active' AND expires_at <= $1 \
             ORDER BY expires_at, key_id"
        );
        self.read_rows(&sql, &[&until.0], api_key_from_row).await
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
            "UPDATE api_keys SET expiring_at = $2 \
             WHERE key_id = $1 AND state = 'active' AND expiring_at IS NULL",
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
            "UPDATE api_keys SET state = 'expired', state_at = $2 \
             WHERE key_id = $1 AND state = 'active' AND expires_at <= $2",
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
        self.write(|tx| {
            let (key_id, audit) = (key_id.to_owned(), audit.clone());
            Box::pin(async move {
                let n_changed = execute(
                    tx,
                    "UPDATE api_keys SET rate_per_minute = $2, rate_per_hour = $3, \
                     rate_per_day = $4 WHERE key_id = $1 AND expires_at > $5 \
                     AND (state = 'active' OR (state = 'rotated' AND grace_until > $5))",
                    &[
                        &key_id,
                        &i64::from(limits.per_minute),
                        &i64::from(limits.per_hour),
                        &i64::from(limits.per_day),
                        &at.0,
                    ],
                )
                .await?;
                if n_changed == 0 {
                    return Ok(false);
                }
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(true)
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.record_api_key_usage", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "record_api_key_usage", otel.kind = "client"))]
    async fn record_api_key_usage(&self, usage: Vec<ApiKeyUsage>) -> Result<(), StoreError> {
        if usage.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = usage.iter().map(|use_| use_.key_id.clone()).collect();
        let counts: Vec<i64> = usage
            .iter()
            .map(|use_| i64::try_from(use_.count).unwrap_or(i64::MAX))
            .collect();
        let lasts: Vec<i64> = usage.iter().map(|use_| use_.last_used_at.0).collect();
        self.write(|tx| {
            let (ids, counts, lasts) = (ids.clone(), counts.clone(), lasts.clone());
            Box::pin(async move {
                // One statement for the whole batch, the uses passed as three arrays.
                execute(
                    tx,
                    "UPDATE api_keys SET usage_count = api_keys.usage_count + batch.n, \
                     last_used_at = GREATEST(COALESCE(api_keys.last_used_at, 0), batch.last) \
                     FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS batch (key_id, n, last) \
                     WHERE api_keys.key_id = batch.key_id",
                    &[&ids, &counts, &lasts],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }
}

impl PostgresStore {
    /// Runs `sql` (parameters: `$1` the key id, `$2` the instant) and, when it changed a
    /// row, appends `event` and `audit` (in the lock order: events, then audit), in one
    /// transaction; returns whether it changed one.
    async fn conditional(
        &self,
        sql: &'static str,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        let changes = vec![BundleChange::CredentialChanged { change: event }];
        self.write_publishing(true, |tx| {
            let (key_id, audit, changes) = (key_id.to_owned(), audit.clone(), changes.clone());
            Box::pin(async move {
                let n_changed = execute(tx, sql, &[&key_id, &at.0]).await?;
                if n_changed == 0 {
                    return Ok(false);
                }
                shared::append_events(&PgTx(tx), &changes, at).await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(true)
            })
        })
        .await
    }
}

async fn insert_api_key(tx: &Transaction<'_>, key: &ApiKeyRecord) -> Result<(), PgFailure> {
    let permissions = serde_json::to_string(&key.permissions).map_err(corrupt)?;
    let usage_count = i64::try_from(key.usage_count).unwrap_or(i64::MAX);
    execute(
        tx,
        &format!(
            "INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
             $20)"
        ),
        &[
            &key.key_id,
            &key.tenant_id.as_str(),
            &key.name,
            &permissions,
            &key.role,
            &key.secret_hash,
            &key.pepper_version.get(),
            &key.created_at.0,
            &key.expires_at.0,
            &key.state.as_str(),
            &key.state_at.map(|at| at.0),
            &key.predecessor_id,
            &key.successor_id,
            &key.grace_until.map(|at| at.0),
            &key.expiring_at.map(|at| at.0),
            &key.last_used_at.map(|at| at.0),
            &usage_count,
            &i64::from(key.rate_limits.per_minute),
            &i64::from(key.rate_limits.per_hour),
            &i64::from(key.rate_limits.per_day),
        ],
    )
    .await?;
    Ok(())
}

fn api_key_from_row(row: &Row) -> Result<ApiKeyRecord, PgFailure> {
    let tenant_id: String = row.try_get(1)?;
    let permissions: String = row.try_get(3)?;
    let state: String = row.try_get(9)?;
    let usage_count: i64 = row.try_get(16)?;
    Ok(ApiKeyRecord {
        key_id: row.try_get(0)?,
        tenant_id: TenantId::new(tenant_id).map_err(corrupt)?,
        name: row.try_get(2)?,
        permissions: serde_json::from_str(&permissions).map_err(corrupt)?,
        role: row.try_get(4)?,
        secret_hash: row.try_get(5)?,
        pepper_version: pepper_version_from_column(row.try_get(6)?)?,
        created_at: UnixMillis(row.try_get(7)?),
        expires_at: UnixMillis(row.try_get(8)?),
        state: ApiKeyState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown api key state `{state}`")))?,
        state_at: row.try_get::<_, Option<i64>>(10)?.map(UnixMillis),
        predecessor_id: row.try_get(11)?,
        successor_id: row.try_get(12)?,
        grace_until: row.try_get::<_, Option<i64>>(13)?.map(UnixMillis),
        expiring_at: row.try_get::<_, Option<i64>>(14)?.map(UnixMillis),
        last_used_at: row.try_get::<_, Option<i64>>(15)?.map(UnixMillis),
        usage_count: u64::try_from(usage_count).unwrap_or(0),
        rate_limits: RateLimits {
            per_minute: limit_from_column(row.try_get(17)?)?,
            per_hour: limit_from_column(row.try_get(18)?)?,
            per_day: limit_from_column(row.try_get(19)?)?,
        },
    })
}

fn limit_from_column(value: i64) -> Result<u32, PgFailure> {
    u32::try_from(value).map_err(|_| corrupt(format!("rate limit {value} out of range")))
}
