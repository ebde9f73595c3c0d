//! The secrets inventory on PostgreSQL. A commit's first statement is the conditional
//! `UPDATE … WHERE generation = $expected`: concurrent writers of one secret queue on its
//! row lock and re-check the generation once the first commits, so exactly one commits.
//! Reads take the row before its versions: a version newer than the row read only makes
//! the reader's later commit fail its generation check, never succeed on stale data.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tessera_common::UnixMillis;
use tokio_postgres::Row;

use super::error::{PgFailure, corrupt};
use super::queries::execute;
use super::rows::{to_column, to_json};
use super::tx::PgTx;
use super::{DB_SYSTEM, PostgresStore};
use crate::store::columns::{limit_to_column, wrapped_key_from_columns};
use crate::store::secrets::{
    SecretCommit, SecretHistoryRecord, SecretRecord, SecretStage, SecretState, SecretStore,
    SecretVersionRecord,
};
use crate::store::shared::{self, SPAN_TARGET, at_most_one};
use crate::store::{StoreError, WrappedKey};

const SECRET_COLUMNS: &str = "name, kind, tier, cadence_days, owner, description, tags, \
     rotator, created_at, last_rotated_at, warned_at, generation, rotation";
const VERSION_COLUMNS: &str = "name, version, stage, kek_version, wrapped_key, sealed_value, \
     label, created_at, activated_at, retired_at";
const HISTORY_COLUMNS: &str = "name, at, step, version, outcome, actor, request_id, detail";

#[async_trait]
impl SecretStore for PostgresStore {
    #[tracing::instrument(name = "store.secret", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "secret", otel.kind = "client"))]
    async fn secret(&self, name: &str) -> Result<Option<SecretState>, StoreError> {
        let sql = format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE name = $1");
        let Some(record) = self
            .read_rows(&sql, &[&name], secret_from_row)
            .await
            .map(at_most_one)?
        else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM secret_versions WHERE name = $1 ORDER BY version DESC"
        );
        let versions = self.read_rows(&sql, &[&name], version_from_row).await?;
        Ok(Some(SecretState { record, versions }))
    }

    #[tracing::instrument(name = "store.list_secrets", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "list_secrets", otel.kind = "client"))]
    async fn list_secrets(&self) -> Result<Vec<SecretState>, StoreError> {
        let sql = format!("SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name");
        let records = self.read_rows(&sql, &[], secret_from_row).await?;
        let sql =
            format!("SELECT {VERSION_COLUMNS} FROM secret_versions ORDER BY name, version DESC");
        let mut versions: BTreeMap<String, Vec<SecretVersionRecord>> = BTreeMap::new();
        for version in self.read_rows(&sql, &[], version_from_row).await? {
            versions
                .entry(version.name.clone())
                .or_default()
                .push(version);
        }
        Ok(records
            .into_iter()
            .map(|record| SecretState {
                versions: versions.remove(&record.name).unwrap_or_default(),
                record,
            })
            .collect())
    }

    #[tracing::instrument(name = "store.secret_history", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "secret_history", otel.kind = "client"))]
    async fn secret_history(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<SecretHistoryRecord>, StoreError> {
        let sql = format!(
            "SELECT {HISTORY_COLUMNS} FROM secret_history WHERE name = $1 \
             ORDER BY seq DESC LIMIT $2"
        );
        self.read_rows(&sql, &[&name, &limit_to_column(limit)], history_from_row)
            .await
    }

    #[tracing::instrument(name = "store.commit_secret", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "commit_secret", otel.kind = "client"))]
    async fn commit_secret(&self, commit: SecretCommit) -> Result<bool, StoreError> {
        let appends_events = !commit.changes.is_empty();
        self.write_publishing(appends_events, |tx| {
            let commit = commit.clone();
            Box::pin(async move {
                if !write_record(tx, &commit).await? {
                    return Ok(false);
                }
                for version in &commit.versions {
                    write_version(tx, version).await?;
                }
                for entry in &commit.history {
                    execute(
                        tx,
                        &format!(
                            "INSERT INTO secret_history ({HISTORY_COLUMNS}) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                        ),
                        &[
                            &entry.name,
                            &entry.at.0,
                            &entry.step,
                            &to_column(entry.version),
                            &entry.outcome,
                            &entry.actor,
                            &entry.request_id,
                            &entry.detail,
                        ],
                    )
                    .await?;
                }
                // Events before audit: the lock order of every transaction taking both.
                if !commit.changes.is_empty() {
                    shared::append_events(&PgTx(tx), &commit.changes, commit.at).await?;
                }
                for entry in &commit.audit {
                    shared::append_audit_entry(&PgTx(tx), entry).await?;
                }
                Ok(true)
            })
        })
        .await
    }
}

async fn write_record(tx: &Transaction<'_>, commit: &SecretCommit) -> Result<bool, PgFailure> {
    let record = &commit.record;
    let tags = to_json(&record.tags)?;
    let tier = i32::from(record.tier);
    let cadence = i32::try_from(record.cadence_days).map_err(|_| corrupt("cadence"))?;
    let last_rotated_at = record.last_rotated_at.map(|at| at.0);
    let warned_at = record.warned_at.map(|at| at.0);
    match commit.expected_generation {
        None => {
            execute(
                tx,
                &format!(
                    "INSERT INTO secrets ({SECRET_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12)"
                ),
                &[
                    &record.name,
                    &record.kind,
                    &tier,
                    &cadence,
                    &record.owner,
                    &record.description,
                    &tags,
                    &record.rotator,
                    &record.created_at.0,
                    &last_rotated_at,
                    &warned_at,
                    &record.rotation,
                ],
            )
            .await?;
            Ok(true)
        }
        Some(expected) => {
            let n_updated = execute(
                tx,
                "UPDATE secrets SET tier = $3, cadence_days = $4, owner = $5, \
                 description = $6, tags = $7, rotator = $8, last_rotated_at = $9, \
                 warned_at = $10, rotation = $11, generation = generation + 1 \
                 WHERE name = $1 AND generation = $2",
                &[
                    &record.name,
                    &expected,
                    &tier,
                    &cadence,
                    &record.owner,
                    &record.description,
                    &tags,
                    &record.rotator,
                    &last_rotated_at,
                    &warned_at,
                    &record.rotation,
                ],
            )
            .await?;
            Ok(n_updated == 1)
        }
    }
}

async fn write_version(
    tx: &Transaction<'_>,
    version: &SecretVersionRecord,
) -> Result<(), PgFailure> {
    execute(
        tx,
        &format!(
            "INSERT INTO secret_versions ({VERSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (name, version) DO UPDATE SET stage = excluded.stage, \
             activated_at = excluded.activated_at, retired_at = excluded.retired_at"
        ),
        &[
            &version.name,
            &to_column(version.version),
            &version.stage.as_str(),
            &version.data_key.kek_version.get(),
            &version.data_key.sealed,
            &version.sealed_value,
            &version.label,
            &version.created_at.0,
            &version.activated_at.map(|at| at.0),
            &version.retired_at.map(|at| at.0),
        ],
    )
    .await?;
    Ok(())
}

fn secret_from_row(row: &Row) -> Result<SecretRecord, PgFailure> {
    let tags: String = row.try_get(6)?;
    let tags: BTreeMap<String, String> =
        serde_json::from_str(&tags).map_err(|error| corrupt(format!("secret tags: {error}")))?;
    let tier: i32 = row.try_get(2)?;
    let cadence: i32 = row.try_get(3)?;
    Ok(SecretRecord {
        name: row.try_get(0)?,
        kind: row.try_get(1)?,
        tier: u8::try_from(tier).map_err(|_| corrupt("secret tier"))?,
        cadence_days: u32::try_from(cadence).map_err(|_| corrupt("secret cadence"))?,
        owner: row.try_get(4)?,
        description: row.try_get(5)?,
        tags,
        rotator: row.try_get(7)?,
        created_at: UnixMillis(row.try_get(8)?),
        last_rotated_at: row.try_get::<_, Option<i64>>(9)?.map(UnixMillis),
        warned_at: row.try_get::<_, Option<i64>>(10)?.map(UnixMillis),
        generation: row.try_get(11)?,
        rotation: row.try_get(12)?,
    })
}

fn version_from_row(row: &Row) -> Result<SecretVersionRecord, PgFailure> {
    let stage: String = row.try_get(2)?;
    let version: i64 = row.try_get(1)?;
    let data_key: Option<WrappedKey> =
        wrapped_key_from_columns(row.try_get(3)?, Some(row.try_get(4)?))?;
    Ok(SecretVersionRecord {
        name: row.try_get(0)?,
        version: u64::try_from(version).map_err(|_| corrupt("secret version"))?,
        stage: SecretStage::parse(&stage).ok_or_else(|| corrupt("secret stage"))?,
        data_key: data_key.ok_or_else(|| corrupt("secret data key"))?,
        sealed_value: row.try_get(5)?,
        label: row.try_get(6)?,
        created_at: UnixMillis(row.try_get(7)?),
        activated_at: row.try_get::<_, Option<i64>>(8)?.map(UnixMillis),
        retired_at: row.try_get::<_, Option<i64>>(9)?.map(UnixMillis),
    })
}

fn history_from_row(row: &Row) -> Result<SecretHistoryRecord, PgFailure> {
    let version: i64 = row.try_get(3)?;
    Ok(SecretHistoryRecord {
        name: row.try_get(0)?,
        at: UnixMillis(row.try_get(1)?),
        step: row.try_get(2)?,
        version: u64::try_from(version).map_err(|_| corrupt("secret version"))?,
        outcome: row.try_get(4)?,
        actor: row.try_get(5)?,
        request_id: row.try_get(6)?,
        detail: row.try_get(7)?,
    })
}
