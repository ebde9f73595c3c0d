//! Conversions between PostgreSQL rows and the store's domain records.

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, BundleEvent};
use tessera_common::ids::{ClientId, KeyId};
use tessera_common::jwk::Jwk;
use tessera_common::keys::KeySchedule;
use tokio_postgres::Row;

use super::error::{PgFailure, corrupt};
use crate::store::{AuditRecord, ClientRecord, StoredAuditEntry, StoredKey};

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

pub(super) fn key_from_row(row: &Row) -> Result<StoredKey, PgFailure> {
    let kid: String = row.try_get(0)?;
    let key_set: String = row.try_get(1)?;
    let algorithm: String = row.try_get(2)?;
    let public_jwk: String = row.try_get(8)?;
    let schedule = KeySchedule {
        kid: KeyId::new(kid).map_err(corrupt)?,
        key_set: key_set.parse().map_err(corrupt)?,
        algorithm: algorithm.parse().map_err(corrupt)?,
        created_at: UnixMillis(row.try_get(3)?),
        activates_at: UnixMillis(row.try_get(4)?),
        deactivates_at: row.try_get::<_, Option<i64>>(5)?.map(UnixMillis),
        verify_until: row.try_get::<_, Option<i64>>(6)?.map(UnixMillis),
        revoked_at: row.try_get::<_, Option<i64>>(7)?.map(UnixMillis),
        public_jwk: serde_json::from_str::<Jwk>(&public_jwk).map_err(corrupt)?,
    };
    Ok(StoredKey {
        schedule,
        wrapped_private: wrapped_key_from_columns(row.try_get(10)?, row.try_get(9)?)?,
    })
}

pub(super) fn event_from_row(row: &Row) -> Result<BundleEvent, PgFailure> {
    let payload: String = row.try_get(2)?;
    Ok(BundleEvent {
        revision: revision_from_column(row.try_get(0)?)?,
        at: UnixMillis(row.try_get(1)?),
        change: serde_json::from_str::<BundleChange>(&payload).map_err(corrupt)?,
    })
}

pub(super) fn audit_from_row(row: &Row) -> Result<AuditRecord, PgFailure> {
    let seq: i64 = row.try_get(0)?;
    Ok(AuditRecord {
        seq: u64::try_from(seq).map_err(corrupt)?,
        entry: StoredAuditEntry {
            at: UnixMillis(row.try_get(1)?),
            actor: row.try_get(2)?,
            action: row.try_get(3)?,
            target: row.try_get(4)?,
            request_id: row.try_get(5)?,
            reason: row.try_get(6)?,
            outcome: row.try_get(7)?,
        },
        prev_hash: hash_from_column(row.try_get(8)?)?,
        hash: hash_from_column(row.try_get(9)?)?,
    })
}

pub(super) fn client_from_row(row: &Row) -> Result<ClientRecord, PgFailure> {
    let client_id: String = row.try_get(0)?;
    let scopes: String = row.try_get(2)?;
    let tenants: String = row.try_get(3)?;
    Ok(ClientRecord {
        client_id: ClientId::new(client_id).map_err(corrupt)?,
        name: row.try_get(1)?,
        scopes: serde_json::from_str(&scopes).map_err(corrupt)?,
        tenants: serde_json::from_str(&tenants).map_err(corrupt)?,
        secret_hash: row.try_get(4)?,
        credential_kind: credential_kind_from_column(&row.try_get::<_, String>(8)?)?,
        pepper_version: pepper_version_from_column(row.try_get(5)?)?,
        created_at: UnixMillis(row.try_get(6)?),
        disabled_at: row.try_get::<_, Option<i64>>(7)?.map(UnixMillis),
    })
}

/// Returns `value` as JSON text.
pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, PgFailure> {
    serde_json::to_string(value).map_err(corrupt)
}

/// Returns a revision, sequence number or count as stored, clamped to `i64::MAX` (no
/// stored value can exceed it).
pub(super) fn to_column(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
