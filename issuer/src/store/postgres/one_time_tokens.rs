//! Single-use tokens on PostgreSQL. Consuming a token without confirmation is ONE
//! statement on a pooled connection (`UPDATE … WHERE used_at IS NULL AND invalidated_at
//! IS NULL`): concurrent consumers of one jti on any number of replicas queue on the
//! row lock, and each re-checks the condition once the first commits, so exactly one
//! sees a row affected. A two-step consumption updates both rows in one transaction and
//! rolls back unless both changed.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tessera_common::UnixMillis;
use tessera_common::ids::TenantId;
use tokio_postgres::Row;

use super::error::{PgFailure, corrupt};
use super::queries::execute;
use super::tx::PgTx;
use super::{DB_SYSTEM, PostgresStore};
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
const CONSUME_SQL: &str = "UPDATE one_time_tokens SET used_at = $4 \
     WHERE jti = $1 AND tenant_id = $2 AND kind = $3 \
     AND used_at IS NULL AND invalidated_at IS NULL";

/// Consumes a confirmation token bound to `$5`.
const CONSUME_CONFIRMATION_SQL: &str = "UPDATE one_time_tokens SET used_at = $4 \
     WHERE jti = $1 AND tenant_id = $2 AND kind = $3 AND parent_jti = $5 \
     AND used_at IS NULL AND invalidated_at IS NULL";

#[async_trait]
impl OneTimeTokenStore for PostgresStore {
    #[tracing::instrument(name = "store.insert_one_time_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_one_time_token", otel.kind = "client"))]
    async fn insert_one_time_token(
        &self,
        record: OneTimeTokenRecord,
        supersede: bool,
        audit: Option<AuditEntry>,
    ) -> Result<u64, StoreError> {
        if !supersede && audit.is_none() {
            // One statement, no transaction: the hot path of issuing links.
            let client = self.client().await?;
            return insert_record(&client, &record)
                .await
                .map(|_| 0)
                .map_err(PgFailure::into_store);
        }
        self.write(|tx| {
            let (record, audit) = (record.clone(), audit.clone());
            Box::pin(async move {
                let n_superseded = if supersede {
                    execute(
                        tx,
                        "UPDATE one_time_tokens SET invalidated_at = $4, \
                         invalidation_reason = 'superseded' \
                         WHERE tenant_id = $1 AND user_id = $2 AND kind = $3 \
                         AND used_at IS NULL AND invalidated_at IS NULL",
                        &[
                            &record.tenant_id.as_str(),
                            &record.user_id,
                            &record.kind.as_str(),
                            &record.issued_at.0,
                        ],
                    )
                    .await?
                } else {
                    0
                };
                insert_record(tx, &record).await?;
                if let Some(audit) = &audit {
                    shared::append_audit_entry(&PgTx(tx), audit).await?;
                }
                Ok(n_superseded)
            })
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
        let sql =
            format!("SELECT {COLUMNS} FROM one_time_tokens WHERE jti = $1 AND tenant_id = $2");
        self.read_rows(&sql, &[&jti, &tenant_id.as_str()], record_from_row)
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
        let consumed = match confirmation {
            None => {
                let client = self.client().await?;
                execute(
                    &client,
                    CONSUME_SQL,
                    &[&jti, &tenant_id.as_str(), &kind.as_str(), &now.0],
                )
                .await
                .map_err(PgFailure::into_store)?
                    == 1
            }
            Some(confirmation) => {
                self.write(|tx| {
                    let (tenant, jti, confirmation) = (
                        tenant_id.as_str().to_owned(),
                        jti.to_owned(),
                        confirmation.to_owned(),
                    );
                    Box::pin(async move {
                        consume_pair(tx, &tenant, kind, &jti, &confirmation, now).await
                    })
                })
                .await?
            }
        };
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
        let consumed = self
            .write(|tx| {
                let (tenant, user, jti, audit) = (
                    tenant_id.as_str().to_owned(),
                    user_id.to_owned(),
                    jti.to_owned(),
                    audit.clone(),
                );
                Box::pin(async move {
                    let n_consumed = execute(
                        tx,
                        "UPDATE one_time_tokens SET used_at = $4 \
                         WHERE jti = $1 AND tenant_id = $2 AND user_id = $3 AND kind = 'reset' \
                         AND used_at IS NULL AND invalidated_at IS NULL",
                        &[&jti, &tenant, &user, &now.0],
                    )
                    .await?;
                    if n_consumed != 1 {
                        return Ok(false);
                    }
                    execute(
                        tx,
                        "INSERT INTO password_changes (tenant_id, user_id, changed_at) \
                         VALUES ($1, $2, $3) ON CONFLICT (tenant_id, user_id) \
                         DO UPDATE SET changed_at = GREATEST(password_changes.changed_at, $3)",
                        &[&tenant, &user, &now.0],
                    )
                    .await?;
                    shared::append_audit_entry(&PgTx(tx), &audit).await?;
                    Ok(true)
                })
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
            "SELECT changed_at FROM password_changes WHERE tenant_id = $1 AND user_id = $2",
            &[&tenant_id.as_str(), &user_id],
            |row| Ok(UnixMillis(row.try_get(0)?)),
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
        let client = self.client().await?;
        let invalidated = match tenant_id {
            Some(tenant_id) => {
                execute(
                    &client,
                    "UPDATE one_time_tokens SET invalidated_at = $2, \
                     invalidation_reason = 'emergency' WHERE tenant_id = $1 \
                     AND used_at IS NULL AND invalidated_at IS NULL AND expires_at > $2",
                    &[&tenant_id, &at.0],
                )
                .await
            }
            None => {
                execute(
                    &client,
                    "UPDATE one_time_tokens SET invalidated_at = $1, \
                     invalidation_reason = 'emergency' \
                     WHERE used_at IS NULL AND invalidated_at IS NULL AND expires_at > $1",
                    &[&at.0],
                )
                .await
            }
        };
        invalidated.map_err(PgFailure::into_store)
    }

    #[tracing::instrument(name = "store.prune_one_time_tokens", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "prune_one_time_tokens", otel.kind = "client"))]
    async fn prune_one_time_tokens(&self, expired_before: UnixMillis) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM one_time_tokens WHERE expires_at <= $1",
            &[&expired_before.0],
        )
        .await
        .map_err(PgFailure::into_store)
    }

    #[tracing::instrument(name = "store.action_settings", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "action_settings", otel.kind = "client"))]
    async fn action_settings(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<ActionSettingsRecord>, StoreError> {
        self.read_rows(
            "SELECT tenant_id, base_url, lifetimes, updated_at FROM action_link_settings \
             WHERE tenant_id = $1",
            &[&tenant_id.as_str()],
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
        self.write(|tx| {
            let (settings, audit) = (settings.clone(), audit.clone());
            Box::pin(async move {
                let lifetimes = serde_json::to_string(&settings.lifetimes).map_err(corrupt)?;
                execute(
                    tx,
                    "INSERT INTO action_link_settings (tenant_id, base_url, lifetimes, updated_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET \
                     base_url = EXCLUDED.base_url, lifetimes = EXCLUDED.lifetimes, \
                     updated_at = EXCLUDED.updated_at",
                    &[
                        &settings.tenant_id.as_str(),
                        &settings.base_url,
                        &lifetimes,
                        &settings.updated_at.0,
                    ],
                )
                .await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(())
            })
        })
        .await
    }
}

// === impl PostgresStore ===

impl PostgresStore {
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

/// Consumes the token and its bound confirmation in `tx`; true when both changed. When
/// only the confirmation changed, its change is undone before the transaction commits:
/// the rows stay locked by `tx` until then, so no other consumer ever sees the half.
async fn consume_pair(
    tx: &Transaction<'_>,
    tenant: &str,
    kind: OneTimeKind,
    jti: &str,
    confirmation: &str,
    now: UnixMillis,
) -> Result<bool, PgFailure> {
    // The confirmation first: it is locked before the original, in every transaction.
    let n_confirmation = execute(
        tx,
        CONSUME_CONFIRMATION_SQL,
        &[
            &confirmation,
            &tenant,
            &OneTimeKind::Confirmation.as_str(),
            &now.0,
            &jti,
        ],
    )
    .await?;
    if n_confirmation != 1 {
        return Ok(false);
    }
    let n_original = execute(tx, CONSUME_SQL, &[&jti, &tenant, &kind.as_str(), &now.0]).await?;
    if n_original != 1 {
        // Undo the confirmation's consumption: the pair is consumed together or not at all.
        execute(
            tx,
            "UPDATE one_time_tokens SET used_at = NULL WHERE jti = $1 AND used_at = $2",
            &[&confirmation, &now.0],
        )
        .await?;
        return Ok(false);
    }
    Ok(true)
}

async fn insert_record<C: deadpool_postgres::GenericClient>(
    client: &C,
    record: &OneTimeTokenRecord,
) -> Result<u64, PgFailure> {
    execute(
        client,
        &format!(
            "INSERT INTO one_time_tokens ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ),
        &[
            &record.jti,
            &record.kind.as_str(),
            &record.tenant_id.as_str(),
            &record.user_id,
            &record.action,
            &record.resource_id,
            &record.issued_at.0,
            &record.expires_at.0,
            &record.used_at.map(|at| at.0),
            &record.invalidated_at.map(|at| at.0),
            &record.invalidation_reason,
            &record.parent_jti,
        ],
    )
    .await
}

fn record_from_row(row: &Row) -> Result<OneTimeTokenRecord, PgFailure> {
    let kind: String = row.try_get(1)?;
    let tenant_id: String = row.try_get(2)?;
    Ok(OneTimeTokenRecord {
        jti: row.try_get(0)?,
        kind: OneTimeKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("unknown one-time token kind `{kind}`")))?,
        tenant_id: TenantId::new(tenant_id).map_err(corrupt)?,
        user_id: row.try_get(3)?,
        action: row.try_get(4)?,
        resource_id: row.try_get(5)?,
        issued_at: UnixMillis(row.try_get(6)?),
        expires_at: UnixMillis(row.try_get(7)?),
        used_at: row.try_get::<_, Option<i64>>(8)?.map(UnixMillis),
        invalidated_at: row.try_get::<_, Option<i64>>(9)?.map(UnixMillis),
        invalidation_reason: row.try_get(10)?,
        parent_jti: row.try_get(11)?,
    })
}

fn settings_from_row(row: &Row) -> Result<ActionSettingsRecord, PgFailure> {
    let tenant_id: String = row.try_get(0)?;
    let lifetimes: String = row.try_get(2)?;
    Ok(ActionSettingsRecord {
        tenant_id: TenantId::new(tenant_id).map_err(corrupt)?,
        base_url: row.try_get(1)?,
        lifetimes: serde_json::from_str(&lifetimes).map_err(corrupt)?,
        updated_at: UnixMillis(row.try_get(3)?),
    })
}
