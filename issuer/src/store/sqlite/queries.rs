//! The statements several SQLite transactions share: key writes, event appends and
//! audit appends. Callers hold the write lock (`BEGIN IMMEDIATE`).

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};

use super::error::SqliteFailure;
use super::rows::{revision_from_column, to_column, to_json, wrapped_key_to_columns};
use crate::store::columns::chain_head_from_columns;
use crate::store::{AuditEntry, AuditRecord, KeyCommit, KeyWrite, StoreError};

/// Inserts or updates one key row. An update of a key that does not exist in its set
/// fails with [`StoreError::NotFound`].
pub(super) fn write_key(tx: &Transaction<'_>, write: &KeyWrite) -> Result<(), SqliteFailure> {
    match write {
        KeyWrite::Insert(key) => {
            let schedule = &key.schedule;
            tx.prepare_cached(
                "INSERT INTO signing_keys (kid, key_set, algorithm, created_at, activates_at, \
                 deactivates_at, verify_until, revoked_at, public_jwk, wrapped_private, \
                 kek_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                schedule.kid.as_str(),
                schedule.key_set.as_str(),
                schedule.algorithm.as_str(),
                schedule.created_at.0,
                schedule.activates_at.0,
                schedule.deactivates_at.map(|at| at.0),
                schedule.verify_until.map(|at| at.0),
                schedule.revoked_at.map(|at| at.0),
                to_json(&schedule.public_jwk)?,
                wrapped_key_to_columns(key.wrapped_private.as_ref()).1,
                wrapped_key_to_columns(key.wrapped_private.as_ref()).0,
            ])?;
        }
        KeyWrite::Update(key) => {
            let schedule = &key.schedule;
            let n_updated = tx
                .prepare_cached(
                    "UPDATE signing_keys SET algorithm = ?3, created_at = ?4, activates_at = ?5, \
                     deactivates_at = ?6, verify_until = ?7, revoked_at = ?8, public_jwk = ?9, \
                     wrapped_private = ?10, kek_version = ?11 \
                     WHERE kid = ?1 AND key_set = ?2",
                )?
                .execute(params![
                    schedule.kid.as_str(),
                    schedule.key_set.as_str(),
                    schedule.algorithm.as_str(),
                    schedule.created_at.0,
                    schedule.activates_at.0,
                    schedule.deactivates_at.map(|at| at.0),
                    schedule.verify_until.map(|at| at.0),
                    schedule.revoked_at.map(|at| at.0),
                    to_json(&schedule.public_jwk)?,
                    wrapped_key_to_columns(key.wrapped_private.as_ref()).1,
                    wrapped_key_to_columns(key.wrapped_private.as_ref()).0,
                ])?;
            if n_updated == 0 {
                return Err(StoreError::NotFound.into());
            }
        }
    }
    Ok(())
}

/// Applies a key commit inside `tx`: bumps the set's generation if it is still the
/// expected one ([`StoreError::Conflict`] otherwise), writes the keys, appends the events
/// and the audit entries. Returns the last event's revision (the current one when none).
pub(super) fn commit_keys(
    tx: &Transaction<'_>,
    commit: &KeyCommit,
) -> Result<Revision, SqliteFailure> {
    let key_set = commit.key_set.as_str();
    tx.prepare_cached(
        "INSERT INTO key_sets (name, generation) VALUES (?1, 0) \
         ON CONFLICT (name) DO NOTHING",
    )?
    .execute([key_set])?;
    let n_bumped = tx
        .prepare_cached(
            "UPDATE key_sets SET generation = generation + 1 \
             WHERE name = ?1 AND generation = ?2",
        )?
        .execute(params![key_set, commit.expected_generation])?;
    if n_bumped == 0 {
        return Err(StoreError::Conflict.into());
    }
    for write in &commit.writes {
        write_key(tx, write)?;
    }
    let revision = match insert_events(tx, &commit.changes, commit.at)? {
        Some(revision) => revision,
        None => latest_revision(tx)?,
    };
    for entry in &commit.audit {
        insert_audit(tx, entry)?;
    }
    Ok(revision)
}

/// Appends one event per change; returns the last revision, `None` if there was none.
/// The caller holds the write lock (`BEGIN IMMEDIATE`), so revisions are consecutive.
pub(super) fn insert_events(
    connection: &Connection,
    changes: &[BundleChange],
    at: UnixMillis,
) -> Result<Option<Revision>, SqliteFailure> {
    let mut last = None;
    let mut statement =
        connection.prepare_cached("INSERT INTO events (at, payload) VALUES (?1, ?2)")?;
    for change in changes {
        statement.execute(params![at.0, to_json(change)?])?;
        last = Some(revision_from_column(connection.last_insert_rowid())?);
    }
    Ok(last)
}

pub(super) fn latest_revision(connection: &Connection) -> Result<Revision, SqliteFailure> {
    let latest: i64 = connection
        .prepare_cached("SELECT COALESCE(MAX(revision), 0) FROM events")?
        .query_row([], |row| row.get(0))?;
    Ok(revision_from_column(latest)?)
}

/// Appends `entry` to the audit chain: reads the last link, chains, inserts.
pub(super) fn insert_audit(
    connection: &Connection,
    entry: &AuditEntry,
) -> Result<AuditRecord, SqliteFailure> {
    let head = connection
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .map(|(seq, hash)| chain_head_from_columns(seq, hash))
        .transpose()?;
    let record = AuditRecord::following(head, entry);
    let stored = &record.entry;
    connection
        .prepare_cached(
            "INSERT INTO audit_log (seq, at, actor, action, target, request_id, reason, outcome, \
             prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            to_column(record.seq),
            stored.at.0,
            stored.actor,
            stored.action,
            stored.target,
            stored.request_id,
            stored.reason,
            stored.outcome,
            record.prev_hash.as_slice(),
            record.hash.as_slice(),
        ])?;
    Ok(record)
}
