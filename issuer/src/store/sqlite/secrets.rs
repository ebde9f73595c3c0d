//! The secrets inventory on SQLite. A commit is one `BEGIN IMMEDIATE` transaction whose
//! first statement is the generation check, so of concurrent writers of one secret
//! exactly one commits.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::{Row, Transaction, params};
use tessera_common::UnixMillis;

use super::error::SqliteFailure;
use super::rows::{to_column, to_json};
use super::tx::{SqliteTx, complete};
use super::{DB_SYSTEM, SqliteStore};
use crate::store::columns::{limit_to_column, wrapped_key_from_columns};
use crate::store::secrets::{
    SecretCommit, SecretHistoryRecord, SecretRecord, SecretStage, SecretState, SecretStore,
    SecretVersionRecord,
};
use crate::store::shared::{self, SPAN_TARGET};
use crate::store::{StoreError, WrappedKey};

const SECRET_COLUMNS: &str = "name, kind, tier, cadence_days, owner, description, tags, \
     rotator, created_at, last_rotated_at, warned_at, generation, rotation";
const VERSION_COLUMNS: &str = "name, version, stage, kek_version, wrapped_key, sealed_value, \
     label, created_at, activated_at, retired_at";
const HISTORY_COLUMNS: &str = "name, at, step, version, outcome, actor, request_id, detail";

#[async_trait]
impl SecretStore for SqliteStore {
    #[tracing::instrument(name = "store.secret", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "secret", otel.kind = "client"))]
    async fn secret(&self, name: &str) -> Result<Option<SecretState>, StoreError> {
        let name = name.to_owned();
        self.with_connection(move |connection| {
            let tx = connection.transaction()?;
            let record = {
                let mut statement = tx.prepare_cached(&format!(
                    "SELECT {SECRET_COLUMNS} FROM secrets WHERE name = ?1"
                ))?;
                let mut rows = statement.query([&name])?;
                match rows.next()? {
                    Some(row) => secret_from_row(row)?,
                    None => return Ok(None),
                }
            };
            let versions = versions_of(&tx, &name)?;
            Ok(Some(SecretState { record, versions }))
        })
        .await
    }

    #[tracing::instrument(name = "store.list_secrets", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "list_secrets", otel.kind = "client"))]
    async fn list_secrets(&self) -> Result<Vec<SecretState>, StoreError> {
        self.with_connection(move |connection| {
            let tx = connection.transaction()?;
            let records = {
                let mut statement = tx.prepare_cached(&format!(
                    "SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name"
                ))?;
                let mut rows = statement.query([])?;
                let mut records = Vec::new();
                while let Some(row) = rows.next()? {
                    records.push(secret_from_row(row)?);
                }
                records
            };
            let mut states = Vec::with_capacity(records.len());
            for record in records {
                let versions = versions_of(&tx, &record.name)?;
                states.push(SecretState { record, versions });
            }
            Ok(states)
        })
        .await
    }

    #[tracing::instrument(name = "store.secret_history", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "secret_history", otel.kind = "client"))]
    async fn secret_history(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<SecretHistoryRecord>, StoreError> {
        self.read_rows(
            format!(
                "SELECT {HISTORY_COLUMNS} FROM secret_history WHERE name = ?1 \
                 ORDER BY seq DESC LIMIT ?2"
            ),
            vec![name.to_owned().into(), limit_to_column(limit).into()],
            history_from_row,
        )
        .await
    }

    #[tracing::instrument(name = "store.commit_secret", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "commit_secret", otel.kind = "client"))]
    async fn commit_secret(&self, commit: SecretCommit) -> Result<bool, StoreError> {
        let appends_events = !commit.changes.is_empty();
        self.write_publishing(appends_events, move |tx| {
            if !write_record(tx, &commit)? {
                return Ok(false);
            }
            for version in &commit.versions {
                write_version(tx, version)?;
            }
            for entry in &commit.history {
                tx.prepare_cached(&format!(
                    "INSERT INTO secret_history ({HISTORY_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ))?
                .execute(params![
                    entry.name,
                    entry.at.0,
                    entry.step,
                    to_column(entry.version),
                    entry.outcome,
                    entry.actor,
                    entry.request_id,
                    entry.detail
                ])?;
            }
            if appends_events {
                complete(shared::append_events(
                    &SqliteTx(tx),
                    &commit.changes,
                    commit.at,
                ))?;
            }
            for entry in &commit.audit {
                complete(shared::append_audit_entry(&SqliteTx(tx), entry))?;
            }
            Ok(true)
        })
        .await
    }
}

/// Inserts or conditionally updates the secret's row; `false` when the generation moved.
fn write_record(tx: &Transaction<'_>, commit: &SecretCommit) -> Result<bool, SqliteFailure> {
    let record = &commit.record;
    let tags = to_json(&record.tags)?;
    match commit.expected_generation {
        None => {
            tx.prepare_cached(&format!(
                "INSERT INTO secrets ({SECRET_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12)"
            ))?
            .execute(params![
                record.name,
                record.kind,
                record.tier,
                record.cadence_days,
                record.owner,
                record.description,
                tags,
                record.rotator,
                record.created_at.0,
                record.last_rotated_at.map(|at| at.0),
                record.warned_at.map(|at| at.0),
                record.rotation,
            ])?;
            Ok(true)
        }
        Some(expected) => {
            let n_updated = tx
                .prepare_cached(
                    "UPDATE secrets SET tier = ?3, cadence_days = ?4, owner = ?5, \
                     description = ?6, tags = ?7, rotator = ?8, last_rotated_at = ?9, \
                     warned_at = ?10, rotation = ?11, generation = generation + 1 \
                     WHERE name = ?1 AND generation = ?2",
                )?
                .execute(params![
                    record.name,
                    expected,
                    record.tier,
                    record.cadence_days,
                    record.owner,
                    record.description,
                    tags,
                    record.rotator,
                    record.last_rotated_at.map(|at| at.0),
                    record.warned_at.map(|at| at.0),
                    record.rotation,
                ])?;
            Ok(n_updated == 1)
        }
    }
}

fn write_version(tx: &Transaction<'_>, version: &SecretVersionRecord) -> Result<(), SqliteFailure> {
    tx.prepare_cached(&format!(
        "INSERT INTO secret_versions ({VERSION_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (name, version) DO UPDATE SET stage = excluded.stage, \
         activated_at = excluded.activated_at, retired_at = excluded.retired_at"
    ))?
    .execute(params![
        version.name,
        to_column(version.version),
        version.stage.as_str(),
        version.data_key.kek_version.get(),
        version.data_key.sealed,
        version.sealed_value,
        version.label,
        version.created_at.0,
        version.activated_at.map(|at| at.0),
        version.retired_at.map(|at| at.0),
    ])?;
    Ok(())
}

fn versions_of(
    tx: &Transaction<'_>,
    name: &str,
) -> Result<Vec<SecretVersionRecord>, SqliteFailure> {
    let mut statement = tx.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM secret_versions WHERE name = ?1 ORDER BY version DESC"
    ))?;
    let mut rows = statement.query([name])?;
    let mut versions = Vec::new();
    while let Some(row) = rows.next()? {
        versions.push(version_from_row(row)?);
    }
    Ok(versions)
}

fn corrupt(what: impl std::fmt::Display) -> SqliteFailure {
    SqliteFailure::Store(StoreError::Corrupt(what.to_string()))
}

fn secret_from_row(row: &Row<'_>) -> Result<SecretRecord, SqliteFailure> {
    let tags: String = row.get(6)?;
    let tags: BTreeMap<String, String> =
        serde_json::from_str(&tags).map_err(|error| corrupt(format!("secret tags: {error}")))?;
    Ok(SecretRecord {
        name: row.get(0)?,
        kind: row.get(1)?,
        tier: row.get(2)?,
        cadence_days: row.get(3)?,
        owner: row.get(4)?,
        description: row.get(5)?,
        tags,
        rotator: row.get(7)?,
        created_at: UnixMillis(row.get(8)?),
        last_rotated_at: row.get::<_, Option<i64>>(9)?.map(UnixMillis),
        warned_at: row.get::<_, Option<i64>>(10)?.map(UnixMillis),
        generation: row.get(11)?,
        rotation: row.get(12)?,
    })
}

fn version_from_row(row: &Row<'_>) -> Result<SecretVersionRecord, SqliteFailure> {
    let stage: String = row.get(2)?;
    let version: i64 = row.get(1)?;
    let data_key: Option<WrappedKey> = wrapped_key_from_columns(row.get(3)?, Some(row.get(4)?))?;
    Ok(SecretVersionRecord {
        name: row.get(0)?,
        version: u64::try_from(version).map_err(|_| corrupt("secret version"))?,
        stage: SecretStage::parse(&stage).ok_or_else(|| corrupt("secret stage"))?,
        data_key: data_key.ok_or_else(|| corrupt("secret data key"))?,
        sealed_value: row.get(5)?,
        label: row.get(6)?,
        created_at: UnixMillis(row.get(7)?),
        activated_at: row.get::<_, Option<i64>>(8)?.map(UnixMillis),
        retired_at: row.get::<_, Option<i64>>(9)?.map(UnixMillis),
    })
}

fn history_from_row(row: &Row<'_>) -> Result<SecretHistoryRecord, SqliteFailure> {
    let version: i64 = row.get(3)?;
    Ok(SecretHistoryRecord {
        name: row.get(0)?,
        at: UnixMillis(row.get(1)?),
        step: row.get(2)?,
        version: u64::try_from(version).map_err(|_| corrupt("secret version"))?,
        outcome: row.get(4)?,
        actor: row.get(5)?,
        request_id: row.get(6)?,
        detail: row.get(7)?,
    })
}
