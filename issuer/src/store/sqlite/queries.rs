//! The statements several SQLite transactions share: key writes and event appends.
//! Callers hold the write lock (`BEGIN IMMEDIATE`).

use rusqlite::{Connection, params};
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};

use super::error::SqliteFailure;
use super::rows::{revision_from_column, to_json, wrapped_key_to_columns};
use crate::store::KeyWrite;

/// Inserts or updates one key row; returns the rows written (0 for an update of a key
/// that is not in its set).
pub(super) fn write_key(connection: &Connection, write: &KeyWrite) -> Result<u64, SqliteFailure> {
    let (sql, key) = match write {
        KeyWrite::Insert(key) => (
            "INSERT INTO signing_keys (kid, key_set, algorithm, created_at, activates_at, \
             deactivates_at, verify_until, revoked_at, public_jwk, wrapped_private, \
             kek_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            key,
        ),
        KeyWrite::Update(key) => (
            "UPDATE signing_keys SET algorithm = ?3, created_at = ?4, activates_at = ?5, \
             deactivates_at = ?6, verify_until = ?7, revoked_at = ?8, public_jwk = ?9, \
             wrapped_private = ?10, kek_version = ?11 WHERE kid = ?1 AND key_set = ?2",
            key,
        ),
    };
    let schedule = &key.schedule;
    let (kek_version, wrapped_private) = wrapped_key_to_columns(key.wrapped_private.as_ref());
    let n_written = connection.prepare_cached(sql)?.execute(params![
        schedule.kid.as_str(),
        schedule.key_set.as_str(),
        schedule.algorithm.as_str(),
        schedule.created_at.0,
        schedule.activates_at.0,
        schedule.deactivates_at.map(|at| at.0),
        schedule.verify_until.map(|at| at.0),
        schedule.revoked_at.map(|at| at.0),
        to_json(&schedule.public_jwk)?,
        wrapped_private,
        kek_version,
    ])?;
    Ok(n_written as u64)
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
