//! Challenges, provider states and one-time rate windows on SQLite. Every write is one
//! `BEGIN IMMEDIATE` transaction (the conditional attempt count, the verification mark,
//! the window charge), so writers on any connection to the file queue on the write lock
//! and each sees the previous one's result.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use tessera_common::UnixMillis;
use tessera_common::ids::TenantId;

use super::error::SqliteFailure;
use super::tx::{SqliteTx, complete};
use super::{DB_SYSTEM, SqliteStore};
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

#[async_trait]
impl ChallengeStore for SqliteStore {
    #[tracing::instrument(name = "store.insert_challenge", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_challenge", otel.kind = "client"))]
    async fn insert_challenge(
        &self,
        record: ChallengeRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO challenges ({COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?
            .execute(params![
                record.challenge_id.as_str(),
                record.tenant_id.as_str(),
                record.user_id,
                record.method.as_str(),
                record.code_hash,
                record.pepper_version.get(),
                record.attempts,
                record.max_attempts,
                record.created_at.0,
                record.expires_at.0,
                record.verified_at.map(|at| at.0),
                record.invalidated_at.map(|at| at.0),
            ])?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(())
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
            format!("SELECT {COLUMNS} FROM challenges WHERE challenge_id = ?1 AND tenant_id = ?2");
        let params = vec![
            challenge_id.as_str().to_owned().into(),
            tenant_id.as_str().to_owned().into(),
        ];
        self.read_rows(sql, params, challenge_from_row)
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
        let (tenant, id) = (
            tenant_id.as_str().to_owned(),
            challenge_id.as_str().to_owned(),
        );
        self.write(move |tx| {
            let counted = tx
                .prepare_cached(&format!(
                    "UPDATE challenges SET attempts = attempts + 1 \
                     WHERE challenge_id = ?1 AND tenant_id = ?2 AND attempts < max_attempts \
                     AND verified_at IS NULL AND invalidated_at IS NULL AND expires_at > ?3 \
                     RETURNING {COLUMNS}"
                ))?
                .query_row(params![id, tenant, now.0], |row| {
                    Ok(challenge_from_row(row))
                })
                .optional()?
                .transpose()?;
            if let Some(record) = counted {
                return Ok(AttemptCount::Counted(record));
            }
            Ok(match read_one(tx, &tenant, &id)? {
                Some(record) => AttemptCount::NotLive(record),
                None => AttemptCount::NotFound,
            })
        })
        .await
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
        let (tenant, id) = (
            tenant_id.as_str().to_owned(),
            challenge_id.as_str().to_owned(),
        );
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE challenges SET verified_at = ?3 WHERE challenge_id = ?1 \
                     AND tenant_id = ?2 AND verified_at IS NULL AND invalidated_at IS NULL",
                )?
                .execute(params![id, tenant, now.0])?;
            if let (1, Some(audit)) = (n, &audit) {
                complete(shared::append_audit_entry(&SqliteTx(tx), audit))?;
            }
            Ok(n == 1)
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
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE challenges SET invalidated_at = ?1 \
                     WHERE (?2 IS NULL OR tenant_id = ?2) AND verified_at IS NULL \
                     AND invalidated_at IS NULL AND expires_at > ?1",
                )?
                .execute(params![at.0, tenant])?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(n as u64)
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
        self.write(move |tx| {
            let n = tx
                .prepare_cached("DELETE FROM challenges WHERE expires_at < ?1")?
                .execute(params![expired_before.0])?;
            tx.prepare_cached("DELETE FROM one_time_rate_windows WHERE window_end < ?1")?
                .execute(params![now.0])?;
            Ok(n as u64)
        })
        .await
    }

    #[tracing::instrument(name = "store.charge_windows", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "charge_windows", otel.kind = "client"))]
    async fn charge_windows(
        &self,
        charges: &[WindowCharge],
    ) -> Result<Vec<WindowCount>, StoreError> {
        let charges = charges.to_vec();
        self.write(move |tx| {
            let mut counts = Vec::with_capacity(charges.len());
            for charge in &charges {
                let (used, window_end): (i64, i64) = tx
                    .prepare_cached(
                        "INSERT INTO one_time_rate_windows AS w (bucket, window_start, window_end, used) \
                         VALUES (?1, ?2, ?3, 1) \
                         ON CONFLICT (bucket) DO UPDATE SET \
                         used = CASE WHEN w.window_end > excluded.window_start THEN w.used + 1 ELSE 1 END, \
                         window_start = CASE WHEN w.window_end > excluded.window_start THEN w.window_start ELSE excluded.window_start END, \
                         window_end = CASE WHEN w.window_end > excluded.window_start THEN w.window_end ELSE excluded.window_end END \
                         RETURNING used, window_end",
                    )?
                    .query_row(
                        params![charge.bucket, charge.window_start.0, charge.window_end.0],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )?;
                counts.push(WindowCount {
                    bucket: charge.bucket.clone(),
                    used: u64::try_from(used).unwrap_or(0),
                    window_end: UnixMillis(window_end),
                });
            }
            Ok(counts)
        })
        .await
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
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO delivery_providers (name, enabled, changed_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, \
                 changed_at = excluded.changed_at",
            )?
            .execute(params![name, enabled, at.0])?;
            complete(shared::append_audit_entry(&SqliteTx(tx), &audit))?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(name = "store.provider_states", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "provider_states", otel.kind = "client"))]
    async fn provider_states(&self) -> Result<Vec<ProviderState>, StoreError> {
        self.read_rows(
            "SELECT name, enabled, changed_at FROM delivery_providers ORDER BY name".to_owned(),
            Vec::new(),
            |row| {
                Ok(ProviderState {
                    name: row.get(0)?,
                    enabled: row.get(1)?,
                    changed_at: UnixMillis(row.get(2)?),
                })
            },
        )
        .await
    }
}

fn read_one(
    tx: &Transaction<'_>,
    tenant: &str,
    id: &str,
) -> Result<Option<ChallengeRecord>, SqliteFailure> {
    tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM challenges WHERE challenge_id = ?1 AND tenant_id = ?2"
    ))?
    .query_row(params![id, tenant], |row| Ok(challenge_from_row(row)))
    .optional()?
    .transpose()
}

fn corrupt(what: &str) -> SqliteFailure {
    SqliteFailure::from(StoreError::Corrupt(what.to_owned()))
}

fn challenge_from_row(row: &Row<'_>) -> Result<ChallengeRecord, SqliteFailure> {
    let id: String = row.get(0)?;
    let tenant: String = row.get(1)?;
    let method: String = row.get(3)?;
    Ok(ChallengeRecord {
        challenge_id: ChallengeId::parse(&id).ok_or_else(|| corrupt("challenge id"))?,
        tenant_id: TenantId::new(tenant).map_err(|_| corrupt("challenge tenant"))?,
        user_id: row.get(2)?,
        method: ChallengeMethod::parse(&method).ok_or_else(|| corrupt("challenge method"))?,
        code_hash: row.get(4)?,
        pepper_version: pepper_version_from_column(row.get(5)?)?,
        attempts: row.get(6)?,
        max_attempts: row.get(7)?,
        created_at: UnixMillis(row.get(8)?),
        expires_at: UnixMillis(row.get(9)?),
        verified_at: row.get::<_, Option<i64>>(10)?.map(UnixMillis),
        invalidated_at: row.get::<_, Option<i64>>(11)?.map(UnixMillis),
    })
}
