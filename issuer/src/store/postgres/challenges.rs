//! Challenges, provider states and one-time rate windows on PostgreSQL. An attempt is
//! ONE conditional `UPDATE … SET attempts = attempts + 1 WHERE attempts < max_attempts
//! AND` live `RETURNING …`: concurrent attempts on any replica queue on the row lock and
//! re-check the condition once the first commits, so no more than `max_attempts` are
//! ever counted. Marking a challenge verified is the same kind of write, so exactly one
//! of concurrent right answers wins. Rate windows are charged by one multi-row upsert.

use async_trait::async_trait;
use tessera_common::UnixMillis;
use tessera_common::ids::TenantId;
use tokio_postgres::Row;

use super::error::{PgFailure, corrupt};
use super::queries::{execute, query, query_opt};
use super::tx::PgTx;
use super::{DB_SYSTEM, PostgresStore};
use crate::challenges::{ChallengeId, ChallengeMethod};
use crate::store::challenges::{
    AttemptCount, ChallengeRecord, ChallengeStore, ProviderState, WindowCharge, WindowCount,
};
use crate::store::columns::pepper_version_from_column;
use crate::store::shared::{self, SPAN_TARGET};
use crate::store::{AuditEntry, StoreError};

/// The columns [`challenge_from_row`] reads, in order.
const COLUMNS: &str = "challenge_id, tenant_id, user_id, method, code_hash, pepper_version, \
     attempts, max_attempts, created_at, expires_at, verified_at, invalidated_at";

/// The attempt statement: counts one attempt of a live challenge. The durability of this
/// one statement is relaxed (`synchronous_commit` off for its transaction only): a
/// database crash may forget the last milliseconds of counted attempts, which gives a
/// guesser at most that many attempts again; a verification is always durable.
const COUNT_ATTEMPT_SQL: &str = "WITH durability AS (SELECT set_config('synchronous_commit', 'off', true)) \
     UPDATE challenges SET attempts = attempts + 1 FROM durability \
     WHERE challenge_id = $1 AND tenant_id = $2 AND attempts < max_attempts \
     AND verified_at IS NULL AND invalidated_at IS NULL AND expires_at > $3 \
     RETURNING challenge_id, tenant_id, user_id, method, code_hash, pepper_version, \
     attempts, max_attempts, created_at, expires_at, verified_at, invalidated_at";

#[async_trait]
impl ChallengeStore for PostgresStore {
    #[tracing::instrument(name = "store.insert_challenge", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_challenge", otel.kind = "client"))]
    async fn insert_challenge(
        &self,
        record: ChallengeRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let (record, audit) = (record.clone(), audit.clone());
            Box::pin(async move {
                let attempts = i32::try_from(record.attempts).map_err(corrupt)?;
                let max_attempts = i32::try_from(record.max_attempts).map_err(corrupt)?;
                execute(
                    tx,
                    &format!(
                        "INSERT INTO challenges ({COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                    ),
                    &[
                        &record.challenge_id.as_str(),
                        &record.tenant_id.as_str(),
                        &record.user_id,
                        &record.method.as_str(),
                        &record.code_hash,
                        &record.pepper_version.get(),
                        &attempts,
                        &max_attempts,
                        &record.created_at.0,
                        &record.expires_at.0,
                        &record.verified_at.map(|at| at.0),
                        &record.invalidated_at.map(|at| at.0),
                    ],
                )
                .await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(())
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.challenge", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "challenge", otel.kind = "client"))]
    async fn challenge(
        &self,
        tenant_id: &TenantId,
        challenge_id: &ChallengeId,
    ) -> Result<Option<ChallengeRecord>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM challenges WHERE challenge_id = $1 AND tenant_id = $2");
        self.read_rows(
            &sql,
            &[&challenge_id.as_str(), &tenant_id.as_str()],
            challenge_from_row,
        )
        .await
        .map(|rows| rows.into_iter().next())
    }

    #[tracing::instrument(name = "store.count_attempt", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "count_attempt", otel.kind = "client"))]
    async fn count_attempt(
        &self,
        tenant_id: &TenantId,
        challenge_id: &ChallengeId,
        now: UnixMillis,
    ) -> Result<AttemptCount, StoreError> {
        let client = self.client().await?;
        let counted = async {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                [&challenge_id.as_str(), &tenant_id.as_str(), &now.0];
            if let Some(row) = query_opt(&client, COUNT_ATTEMPT_SQL, &params).await? {
                return Ok(AttemptCount::Counted(challenge_from_row(&row)?));
            }
            let sql = format!(
                "SELECT {COLUMNS} FROM challenges WHERE challenge_id = $1 AND tenant_id = $2"
            );
            Ok(
                match query_opt(
                    &client,
                    &sql,
                    &[&challenge_id.as_str(), &tenant_id.as_str()],
                )
                .await?
                {
                    Some(row) => AttemptCount::NotLive(challenge_from_row(&row)?),
                    None => AttemptCount::NotFound,
                },
            )
        };
        counted.await.map_err(PgFailure::into_store)
    }

    #[tracing::instrument(name = "store.mark_verified", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "mark_verified", otel.kind = "client"))]
    async fn mark_verified(
        &self,
        tenant_id: &TenantId,
        challenge_id: &ChallengeId,
        now: UnixMillis,
        audit: Option<AuditEntry>,
    ) -> Result<bool, StoreError> {
        let (id, tenant) = (
            challenge_id.as_str().to_owned(),
            tenant_id.as_str().to_owned(),
        );
        self.write(|tx| {
            let (id, tenant, audit) = (id.clone(), tenant.clone(), audit.clone());
            Box::pin(async move {
                let n = execute(
                    tx,
                    "UPDATE challenges SET verified_at = $3 WHERE challenge_id = $1 \
                     AND tenant_id = $2 AND verified_at IS NULL AND invalidated_at IS NULL",
                    &[&id, &tenant, &now.0],
                )
                .await?;
                if let (1, Some(audit)) = (n, &audit) {
                    shared::append_audit_entry(&PgTx(tx), audit).await?;
                }
                Ok(n == 1)
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.invalidate_challenges", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "invalidate_challenges", otel.kind = "client"))]
    async fn invalidate_challenges(
        &self,
        tenant_id: Option<&TenantId>,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<u64, StoreError> {
        let tenant = tenant_id.map(|tenant| tenant.as_str().to_owned());
        self.write(|tx| {
            let (tenant, audit) = (tenant.clone(), audit.clone());
            Box::pin(async move {
                let n = execute(
                    tx,
                    "UPDATE challenges SET invalidated_at = $1 \
                     WHERE ($2::text IS NULL OR tenant_id = $2) AND verified_at IS NULL \
                     AND invalidated_at IS NULL AND expires_at > $1",
                    &[&at.0, &tenant],
                )
                .await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(n)
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.prune_challenges", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "prune_challenges", otel.kind = "client"))]
    async fn prune_challenges(
        &self,
        expired_before: UnixMillis,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                let n = execute(
                    tx,
                    "DELETE FROM challenges WHERE expires_at < $1",
                    &[&expired_before.0],
                )
                .await?;
                execute(
                    tx,
                    "DELETE FROM one_time_rate_windows WHERE window_end < $1",
                    &[&now.0],
                )
                .await?;
                Ok(n)
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.charge_windows", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "charge_windows", otel.kind = "client"))]
    async fn charge_windows(
        &self,
        charges: &[WindowCharge],
    ) -> Result<Vec<WindowCount>, StoreError> {
        if charges.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let buckets: Vec<&str> = charges.iter().map(|c| c.bucket.as_str()).collect();
        let starts: Vec<i64> = charges.iter().map(|c| c.window_start.0).collect();
        let ends: Vec<i64> = charges.iter().map(|c| c.window_end.0).collect();
        // One statement for every bucket: the rows are locked in the (sorted) order
        // given, so two calls sharing buckets never deadlock. A stored window that ended
        // restarts at 1; one that is current (or later: a replica whose clock runs ahead)
        // grows by 1. Durability relaxed as for the API-key windows.
        let charged = async {
            let rows = query(
                &client,
                "WITH durability AS (SELECT set_config('synchronous_commit', 'off', true)) \
                 INSERT INTO one_time_rate_windows AS w (bucket, window_start, window_end, used) \
                 SELECT b, s, e, 1 FROM durability, \
                 unnest($1::text[], $2::bigint[], $3::bigint[]) AS input(b, s, e) \
                 ON CONFLICT (bucket) DO UPDATE SET \
                 used = CASE WHEN w.window_end > excluded.window_start THEN w.used + 1 ELSE 1 END, \
                 window_start = CASE WHEN w.window_end > excluded.window_start THEN w.window_start ELSE excluded.window_start END, \
                 window_end = CASE WHEN w.window_end > excluded.window_start THEN w.window_end ELSE excluded.window_end END \
                 RETURNING bucket, used, window_end",
                &[&buckets, &starts, &ends],
            )
            .await?;
            let mut counts = Vec::with_capacity(charges.len());
            for charge in charges {
                let row = rows
                    .iter()
                    .find(|row| row.try_get::<_, &str>(0).ok() == Some(charge.bucket.as_str()))
                    .ok_or_else(|| corrupt("a charged window returned no row"))?;
                counts.push(WindowCount {
                    bucket: charge.bucket.clone(),
                    used: u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
                    window_end: UnixMillis(row.try_get(2)?),
                });
            }
            Ok::<_, PgFailure>(counts)
        };
        charged.await.map_err(PgFailure::into_store)
    }

    #[tracing::instrument(name = "store.set_provider_enabled", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "set_provider_enabled", otel.kind = "client"))]
    async fn set_provider_enabled(
        &self,
        name: &str,
        enabled: bool,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write(|tx| {
            let (name, audit) = (name.clone(), audit.clone());
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO delivery_providers (name, enabled, changed_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, \
                     changed_at = excluded.changed_at",
                    &[&name, &enabled, &at.0],
                )
                .await?;
                shared::append_audit_entry(&PgTx(tx), &audit).await?;
                Ok(())
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.provider_states", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "provider_states", otel.kind = "client"))]
    async fn provider_states(&self) -> Result<Vec<ProviderState>, StoreError> {
        self.read_rows(
            "SELECT name, enabled, changed_at FROM delivery_providers ORDER BY name",
            &[],
            |row| {
                Ok(ProviderState {
                    name: row.try_get(0)?,
                    enabled: row.try_get(1)?,
                    changed_at: UnixMillis(row.try_get(2)?),
                })
            },
        )
        .await
    }
}

fn challenge_from_row(row: &Row) -> Result<ChallengeRecord, PgFailure> {
    let method: &str = row.try_get(3)?;
    let count = |index: usize| -> Result<u32, PgFailure> {
        u32::try_from(row.try_get::<_, i32>(index)?).map_err(corrupt)
    };
    Ok(ChallengeRecord {
        challenge_id: ChallengeId::parse(row.try_get(0)?).ok_or_else(|| corrupt("challenge id"))?,
        tenant_id: TenantId::new(row.try_get::<_, String>(1)?).map_err(corrupt)?,
        user_id: row.try_get(2)?,
        method: ChallengeMethod::parse(method).ok_or_else(|| corrupt("challenge method"))?,
        code_hash: row.try_get(4)?,
        pepper_version: pepper_version_from_column(row.try_get(5)?)?,
        attempts: count(6)?,
        max_attempts: count(7)?,
        created_at: UnixMillis(row.try_get(8)?),
        expires_at: UnixMillis(row.try_get(9)?),
        verified_at: row.try_get::<_, Option<i64>>(10)?.map(UnixMillis),
        invalidated_at: row.try_get::<_, Option<i64>>(11)?.map(UnixMillis),
    })
}
