//! Conversions between SQLite rows and the store's domain records.

use rusqlite::Row;
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, BundleEvent, Revision};
use tessera_common::ids::{ClientId, KeyId};
use tessera_common::jwk::Jwk;
use tessera_common::keys::KeySchedule;

use super::error::SqliteFailure;
use crate::store::{AuditRecord, ClientRecord, StoreError, StoredAuditEntry, StoredKey};

use crate::store::columns::{
    credential_kind_from_column, pepper_version_from_column, wrapped_key_from_columns,
};
pub(super) use crate::store::columns::{
    credential_kind_to_column, hash_from_column, limit_to_column, revision_from_column,
    wrapped_key_to_columns,
};

/// The columns [`key_from_row`] reads, in order.
pub(super) const KEY_COLUMNS: &str = "kid, key_set, algorithm, created_at, activates_at, \
     deactivates_at, verify_until, revoked_at, public_jwk, wrapped_private, kek_version";

/// The columns [`audit_from_row`] reads, in order.
pub(super) const AUDIT_COLUMNS: &str =
    "seq, at, actor, action, target, request_id, reason, outcome, prev_hash, hash";

/// The columns [`client_from_row`] reads, in order.
pub(super) const CLIENT_COLUMNS: &str = "client_id, name, scopes, tenants, secret_hash, \
     pepper_version, created_at, disabled_at, credential_prefix";

pub(super) fn key_from_row(row: &Row<'_>) -> Result<StoredKey, SqliteFailure> {
    let kid: String = row.get(0)?;
    let key_set: String = row.get(1)?;
    let algorithm: String = row.get(2)?;
    let public_jwk: String = row.get(8)?;
    let schedule = KeySchedule {
        kid: KeyId::new(kid).map_err(corrupt)?,
        key_set: key_set.parse().map_err(corrupt)?,
        algorithm: algorithm.parse().map_err(corrupt)?,
        created_at: UnixMillis(row.get(3)?),
        activates_at: UnixMillis(row.get(4)?),
        deactivates_at: row.get::<_, Option<i64>>(5)?.map(UnixMillis),
        verify_until: row.get::<_, Option<i64>>(6)?.map(UnixMillis),
        revoked_at: row.get::<_, Option<i64>>(7)?.map(UnixMillis),
        public_jwk: serde_json::from_str::<Jwk>(&public_jwk).map_err(corrupt)?,
    };
    Ok(StoredKey {
        schedule,
        wrapped_private: wrapped_key_from_columns(row.get(10)?, row.get(9)?)?,
    })
}

pub(super) fn event_from_row(row: &Row<'_>) -> Result<BundleEvent, SqliteFailure> {
    let payload: String = row.get(2)?;
    Ok(BundleEvent {
        revision: revision_from_column(row.get(0)?)?,
        at: UnixMillis(row.get(1)?),
        change: serde_json::from_str::<BundleChange>(&payload).map_err(corrupt)?,
    })
}

pub(super) fn audit_from_row(row: &Row<'_>) -> Result<AuditRecord, SqliteFailure> {
    let seq: i64 = row.get(0)?;
    Ok(AuditRecord {
        seq: u64::try_from(seq).map_err(corrupt)?,
        entry: StoredAuditEntry {
            at: UnixMillis(row.get(1)?),
            actor: row.get(2)?,
            action: row.get(3)?,
            target: row.get(4)?,
            request_id: row.get(5)?,
            reason: row.get(6)?,
            outcome: row.get(7)?,
        },
        prev_hash: hash_from_column(row.get(8)?)?,
        hash: hash_from_column(row.get(9)?)?,
    })
}

pub(super) fn client_from_row(row: &Row<'_>) -> Result<ClientRecord, SqliteFailure> {
    let client_id: String = row.get(0)?;
    let scopes: String = row.get(2)?;
    let tenants: String = row.get(3)?;
    Ok(ClientRecord {
        client_id: ClientId::new(client_id).map_err(corrupt)?,
        name: row.get(1)?,
        scopes: serde_json::from_str(&scopes).map_err(corrupt)?,
        tenants: serde_json::from_str(&tenants).map_err(corrupt)?,
        secret_hash: row.get(4)?,
        credential_kind: credential_kind_from_column(&row.get::<_, String>(8)?)?,
        pepper_version: pepper_version_from_column(row.get(5)?)?,
        created_at: UnixMillis(row.get(6)?),
        disabled_at: row.get::<_, Option<i64>>(7)?.map(UnixMillis),
    })
}

/// Returns `value` as JSON text.
pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, SqliteFailure> {
    serde_json::to_string(value)
        .map_err(|error| SqliteFailure::Store(StoreError::Corrupt(error.to_string())))
}

/// Returns a revision as stored (revisions past `i64::MAX` cannot exist, so they clamp).
pub(super) fn revision_to_column(revision: Revision) -> i64 {
    i64::try_from(revision.0).unwrap_or(i64::MAX)
}

/// Returns a count or sequence number as stored, clamped to `i64::MAX`.
pub(super) fn to_column(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn corrupt(error: impl std::fmt::Display) -> SqliteFailure {
    SqliteFailure::Store(StoreError::Corrupt(error.to_string()))
}
