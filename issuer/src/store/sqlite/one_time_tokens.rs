//! Single-use tokens on SQLite. Every write is one `BEGIN IMMEDIATE` transaction, and a
//! consumption inside it is the same conditional `UPDATE … WHERE used_at IS NULL AND
//! invalidated_at IS NULL` as on PostgreSQL: writers queue on the database's write lock,
//! so exactly one of any number of concurrent consumers sees a row changed.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Row, Transaction, params};
use tessera_common::UnixMillis;
use tessera_common::ids::TenantId;

use super::error::SqliteFailure;
use super::rows::to_json;
use super::tx::{SqliteTx, complete};
use super::{DB_SYSTEM, SqliteStore};
use crate::store::one_time_tokens::{
    ActionSettingsRecord, Consumption, OneTimeKind, OneTimeTokenRecord, OneTimeTokenStore,
    explain_refusal,
};
use crate::store::shared::{self, SPAN_TARGET, at_most_one};
use crate::store::{AuditEntry, StoreError};

/// The columns [`record_from_row`] reads, in order.
const COLUMNS: &str = "jti, kind, tenant_id, user_id, action, resource_id, issued_at, \
     expires_at, used_at, invalidated_at, invalidation_reason, parent_jti";

/// The one conditional write that consumes a token.
const CONSUME_SQL: &str = "UPDATE one_time_tokens SET used_at = ?4 \
     WHERE jti = ?1 AND tenant_id = ?2 AND kind = ?3 \
     AND used_at IS NULL AND invalidated_at IS NULL";

#[async_trait]
impl OneTimeTokenStore for SqliteStore {
    #[tracing::instrument(name = "store.insert_one_time_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_one_time_token", otel.kind = "client"))]
    async fn insert_one_time_token(
        &self,
        record: OneTimeTokenRecord,
        supersede: bool,
        audit: Option<AuditEntry>,
    ) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let n_superseded = if supersede {
                tx.prepare_cached(
                    "UPDATE one_time_tokens SET invalidated_at = ?4, \
                     invalidation_reason = 'superseded' \
                     WHERE tenant_id = ?1 AND user_id = ?2 AND kind = ?3 \
                     AND used_at IS NULL AND invalidated_at IS NULL",
                )?
                .execute(params![
                    record.tenant_id.as_str(),
                    record.user_id,
                    record.kind.as_str(),
                    record.issued_at.0,
                ])?
            } else {
                0
            };
            insert_record(tx, &record)?;
            if let Some(audit) = &audit {
                complete(shared::append_audit_entry(&SqliteTx(tx), audit))?;
            }
            Ok(n_superseded as u64)
        })
        .await
    }

    #[tracing::instrument(name = "store.one_time_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "one_time_token", otel.kind = "client"))]
    async fn one_time_token(
        &self,
        tenant_id: &TenantId,
        jti: &str,
    ) -> Result<Option<OneTimeTokenRecord>, StoreError> {
        self.read_rows(
            format!("SELECT {COLUMNS} FROM one_time_tokens WHERE jti = ?1 AND tenant_id = ?2"),
            vec![
                Value::Text(jti.to_owned()),
                Value::Text(tenant_id.as_str().to_owned()),
            ],
            record_from_row,
        )
        .await
        .map(at_most_one)
    }

    #[tracing::instrument(name = "store.consume_one_time_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "consume_one_time_token", otel.kind = "client"))]
    async fn consume_one_time_token(
        &self,
        tenant_id: &TenantId,
        kind: OneTimeKind,
        jti: &str,
        confirmation: Option<&str>,
        now: UnixMillis,
    ) -> Result<Consumption, StoreError> {
        let (tenant, jti_owned, confirmation_owned) = (
            tenant_id.as_str().to_owned(),
            jti.to_owned(),
            confirmation.map(str::to_owned),
        );
        let consumed = self
            .write(move |tx| {
                if let Some(confirmation) = &confirmation_owned {
                    let n_confirmation = tx
                        .prepare_cached(
                            "UPDATE one_time_tokens SET used_at = ?4 \
                             WHERE jti = ?1 AND tenant_id = ?2 AND kind = ?3 \
                             AND parent_jti = ?5 AND used_at IS NULL AND invalidated_at IS NULL",
                        )?
                        .execute(params![
                            confirmation,
                            tenant,
                            OneTimeKind::Confirmation.as_str(),
                            now.0,
                            jti_owned,
                        ])?;
                    if n_confirmation != 1 {
                        return Ok(false);
                    }
                }
                let n_consumed = tx.prepare_cached(CONSUME_SQL)?.execute(params![
                    jti_owned,
                    tenant,
                    kind.as_str(),
                    now.0
                ])?;
                if n_consumed != 1 {
                    if let Some(confirmation) = &confirmation_owned {
                        // Both or neither: undo the confirmation before committing.
                        tx.prepare_cached(
                            "UPDATE one_time_tokens SET used_at = NULL \
                             WHERE jti = ?1 AND used_at = ?2",
                        )?
                        .execute(params![confirmation, now.0])?;
                    }
                    return Ok(false);
                }
                Ok(true)
            })
            .await?;
        if consumed {
            return Ok(Consumption::Consumed);
        }
        self.why_not_consumed(tenant_id, jti, confirmation).await
    }

    #[tracing::instrument(name = "store.complete_password_reset", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "complete_password_reset", otel.kind = "client"))]
    async fn complete_password_reset(
        &self,
        tenant_id: &TenantId,
        user_id: &str,
        jti: &str,
        now: UnixMillis,
        audit: AuditEntry,
    ) -> Result<Consumption, StoreError> {
        let (tenant, user, jti_owned) = (
            tenant_id.as_str().to_owned(),
            user_id.to_owned(),
            jti.to_owned(),
        );
        let consumed = self
            .write(move |tx| {
                let n_consumed = tx
                    .prepare_cached(
                        "UPDATE one_time_tokens SET used_at = ?4 \
                         WHERE jti = ?1 AND tenant_id = ?2 AND user_id = ?3 AND kind = 'reset' \
                         AND used_at IS NULL AND invalidated_at IS NULL",
                    )?
                    .execute(params![jti_owned, tenant, user, now.0])?;
                if n_consumed != 1 {
                    return Ok(false);
                }
                tx.prepare_cached(
                    "INSERT INTO password_changes (tenant_id, user_id, changed_at) \
                     VALUES (?1, ?2, ?3) ON CONFLICT (tenant_id, user_id) \
                     DO UPDATE SET changed_at = MAX(changed_at, excluded.changed_at)",
                )?
                .execute(params![tenant, user, now.0])?;
                complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
                Ok(true)
            })
            .await?;
        if consumed {
            return Ok(Consumption::Consumed);
        }
        self.why_not_consumed(tenant_id, jti, None).await
    }

    #[tracing::instrument(name = "store.password_changed_at", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "password_changed_at", otel.kind = "client"))]
    async fn password_changed_at(
        &self,
        tenant_id: &TenantId,
        user_id: &str,
    ) -> Result<Option<UnixMillis>, StoreError> {
        self.read_rows(
            "SELECT changed_at FROM password_changes WHERE tenant_id = ?1 AND user_id = ?2"
                .to_owned(),
            vec![
                Value::Text(tenant_id.as_str().to_owned()),
                Value::Text(user_id.to_owned()),
            ],
            |row| Ok(UnixMillis(row.get(0)?)),
        )
        .await
        .map(at_most_one)
    }

    #[tracing::instrument(name = "store.invalidate_one_time_tokens", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "invalidate_one_time_tokens", otel.kind = "client"))]
    async fn invalidate_one_time_tokens(
        &self,
        tenant_id: Option<&str>,
        at: UnixMillis,
    ) -> Result<u64, StoreError> {
        let tenant_id = tenant_id.map(str::to_owned);
        self.write(move |tx| {
            // `?2 IS NULL` selects every tenant.
            let n_invalidated = tx
                .prepare_cached(
                    "UPDATE one_time_tokens SET invalidated_at = ?1, \
                     invalidation_reason = 'emergency' \
                     WHERE (?2 IS NULL OR tenant_id = ?2) \
                     AND used_at IS NULL AND invalidated_at IS NULL AND expires_at > ?1",
                )?
                .execute(params![at.0, tenant_id])?;
            Ok(n_invalidated as u64)
        })
        .await
    }

    #[tracing::instrument(name = "store.prune_one_time_tokens", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "prune_one_time_tokens", otel.kind = "client"))]
    async fn prune_one_time_tokens(&self, expired_before: UnixMillis) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let n_deleted = tx
                .prepare_cached("DELETE FROM one_time_tokens WHERE expires_at <= ?1")?
                .execute(params![expired_before.0])?;
            Ok(n_deleted as u64)
        })
        .await
    }

    #[tracing::instrument(name = "store.action_settings", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "action_settings", otel.kind = "client"))]
    async fn action_settings(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<ActionSettingsRecord>, StoreError> {
        self.read_rows(
            "SELECT tenant_id, base_url, lifetimes, updated_at FROM action_link_settings \
             WHERE tenant_id = ?1"
                .to_owned(),
            vec![Value::Text(tenant_id.as_str().to_owned())],
            settings_from_row,
        )
        .await
        .map(at_most_one)
    }

    #[tracing::instrument(name = "store.put_action_settings", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "put_action_settings", otel.kind = "client"))]
    async fn put_action_settings(
        &self,
        settings: ActionSettingsRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO action_link_settings (tenant_id, base_url, lifetimes, updated_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tenant_id) DO UPDATE SET \
                 base_url = excluded.base_url, lifetimes = excluded.lifetimes, \
                 updated_at = excluded.updated_at",
            )?
            .execute(params![
                settings.tenant_id.as_str(),
                settings.base_url,
                to_json(&settings.lifetimes)?,
                settings.updated_at.0,
            ])?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(())
        })
        .await
    }
}

// === impl SqliteStore ===

impl SqliteStore {
    /// Reads why a consumption changed nothing (after the conditional write, never before).
    async fn why_not_consumed(
        &self,
        tenant_id: &TenantId,
        jti: &str,
        confirmation: Option<&str>,
    ) -> Result<Consumption, StoreError> {
        let confirmation = match confirmation {
            Some(confirmation) => Some(self.one_time_token(tenant_id, confirmation).await?),
            None => None,
        };
        let token = self.one_time_token(tenant_id, jti).await?;
        Ok(explain_refusal(
            token.as_ref(),
            confirmation.as_ref().map(Option::as_ref),
            jti,
        ))
    }
}

fn insert_record(tx: &Transaction<'_>, record: &OneTimeTokenRecord) -> Result<(), SqliteFailure> {
    tx.prepare_cached(&format!(
        "INSERT INTO one_time_tokens ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?
    .execute(params![
        record.jti,
        record.kind.as_str(),
        record.tenant_id.as_str(),
        record.user_id,
        record.action,
        record.resource_id,
        record.issued_at.0,
        record.expires_at.0,
        record.used_at.map(|at| at.0),
        record.invalidated_at.map(|at| at.0),
        record.invalidation_reason,
        record.parent_jti,
    ])?;
    Ok(())
}

fn corrupt(what: String) -> SqliteFailure {
    SqliteFailure::from(StoreError::Corrupt(what))
}

fn record_from_row(row: &Row<'_>) -> Result<OneTimeTokenRecord, SqliteFailure> {
    let kind: String = row.get(1)?;
    let tenant_id: String = row.get(2)?;
    Ok(OneTimeTokenRecord {
        jti: row.get(0)?,
        kind: OneTimeKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("unknown one-time token kind `{kind}`")))?,
        tenant_id: TenantId::new(tenant_id).map_err(|error| corrupt(error.to_string()))?,
        user_id: row.get(3)?,
        action: row.get(4)?,
        resource_id: row.get(5)?,
        issued_at: UnixMillis(row.get(6)?),
        expires_at: UnixMillis(row.get(7)?),
        used_at: row.get::<_, Option<i64>>(8)?.map(UnixMillis),
        invalidated_at: row.get::<_, Option<i64>>(9)?.map(UnixMillis),
        invalidation_reason: row.get(10)?,
        parent_jti: row.get(11)?,
    })
}

fn settings_from_row(row: &Row<'_>) -> Result<ActionSettingsRecord, SqliteFailure> {
    let tenant_id: String = row.get(0)?;
    let lifetimes: String = row.get(2)?;
    Ok(ActionSettingsRecord {
        tenant_id: TenantId::new(tenant_id).map_err(|error| corrupt(error.to_string()))?,
        base_url: row.get(1)?,
        lifetimes: serde_json::from_str(&lifetimes).map_err(|error| corrupt(error.to_string()))?,
        updated_at: UnixMillis(row.get(3)?),
    })
}
