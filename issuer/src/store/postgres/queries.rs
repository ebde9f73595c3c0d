//! The statements behind the PostgreSQL store: transaction bodies and the statements
//! several of them share. Every statement is prepared once per connection and cached.

use deadpool_postgres::{GenericClient, Transaction};
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::error::PgFailure;
use super::listener::CHANNEL;
use super::rows::{
    credential_kind_to_column, revision_from_column, to_column, to_json, wrapped_key_to_columns,
};
use crate::store::columns::chain_head_from_columns;
use crate::store::{AuditEntry, AuditRecord, ClientRecord, KeyCommit, KeyWrite, StoreError};
use tessera_common::ids::ClientId;

/// Serializes event appends across replicas (`"tessevnt"`): taken before the first
/// `nextval`, held until commit, so revisions commit, and become visible, in order.
const EVENTS_LOCK: i64 = 0x7465_7373_6576_6e74;

/// Serializes audit appends across replicas (`"tessaudt"`), so the hash chain is linear.
/// Always taken after [`EVENTS_LOCK`] when a transaction takes both.
const AUDIT_LOCK: i64 = 0x7465_7373_6175_6474;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn query<C: GenericClient>(
    client: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, PgFailure> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query(&statement, params).await?)
}

pub(super) async fn query_one<C: GenericClient>(
    client: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, PgFailure> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query_one(&statement, params).await?)
}

pub(super) async fn query_opt<C: GenericClient>(
    client: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, PgFailure> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query_opt(&statement, params).await?)
}

pub(super) async fn execute<C: GenericClient>(
    client: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, PgFailure> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.execute(&statement, params).await?)
}

// === transaction bodies ===

/// Checks and bumps the set's generation, then writes keys, events and audit entries.
pub(super) async fn commit_keys(
    tx: &Transaction<'_>,
    commit: KeyCommit,
) -> Result<Revision, PgFailure> {
    let key_set = commit.key_set.as_str();
    execute(
        tx,
        "INSERT INTO key_sets (name, generation) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
        &[&key_set],
    )
    .await?;
    // Of two transactions expecting the same generation, the second waits for the
    // first's row lock, re-reads the row, finds the generation moved and matches nothing.
    let n_bumped = execute(
        tx,
        "UPDATE key_sets SET generation = generation + 1 WHERE name = $1 AND generation = $2",
        &[&key_set, &commit.expected_generation],
    )
    .await?;
    if n_bumped == 0 {
        return Err(StoreError::Conflict.into());
    }
    for write in &commit.writes {
        write_key(tx, write).await?;
    }
    let revision = match insert_events(tx, &commit.changes, commit.at).await? {
        Some(revision) => revision,
        None => latest_revision(tx).await?,
    };
    for entry in &commit.audit {
        insert_audit(tx, entry).await?;
    }
    Ok(revision)
}

pub(super) async fn append_events(
    tx: &Transaction<'_>,
    changes: Vec<BundleChange>,
    at: UnixMillis,
) -> Result<Option<Revision>, PgFailure> {
    insert_events(tx, &changes, at).await
}

pub(super) async fn append_audit(
    tx: &Transaction<'_>,
    entry: AuditEntry,
) -> Result<AuditRecord, PgFailure> {
    insert_audit(tx, &entry).await
}

pub(super) async fn insert_client(
    tx: &Transaction<'_>,
    client: ClientRecord,
    audit: AuditEntry,
) -> Result<(), PgFailure> {
    let scopes = to_json(&client.scopes)?;
    let tenants = to_json(&client.tenants)?;
    let disabled_at = client.disabled_at.map(|at| at.0);
    execute(
        tx,
        "INSERT INTO api_clients (client_id, name, scopes, tenants, secret_hash, \
         pepper_version, created_at, disabled_at, credential_prefix) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &client.client_id.as_str(),
            &client.name,
            &scopes,
            &tenants,
            &client.secret_hash,
            &client.pepper_version.get(),
            &client.created_at.0,
            &disabled_at,
            &credential_kind_to_column(client.credential_kind),
        ],
    )
    .await?;
    insert_audit(tx, &audit).await?;
    Ok(())
}

pub(super) async fn disable_client(
    tx: &Transaction<'_>,
    client_id: ClientId,
    at: UnixMillis,
    audit: AuditEntry,
) -> Result<(), PgFailure> {
    // COALESCE keeps the first disabling instant: disabling twice changes nothing.
    let n_matched = execute(
        tx,
        "UPDATE api_clients SET disabled_at = COALESCE(disabled_at, $2) WHERE client_id = $1",
        &[&client_id.as_str(), &at.0],
    )
    .await?;
    if n_matched == 0 {
        return Err(StoreError::NotFound.into());
    }
    insert_audit(tx, &audit).await?;
    Ok(())
}

pub(super) async fn put_meta_if_absent(
    tx: &Transaction<'_>,
    name: String,
    value: Vec<u8>,
) -> Result<Vec<u8>, PgFailure> {
    execute(
        tx,
        "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&name, &value],
    )
    .await?;
    // A concurrent insert of the same name made ours wait and do nothing; this
    // statement's fresh snapshot sees the value that won.
    let row = query_one(tx, "SELECT value FROM meta WHERE name = $1", &[&name]).await?;
    Ok(row.try_get(0)?)
}

pub(super) async fn prune_events(tx: &Transaction<'_>, before: Revision) -> Result<u64, PgFailure> {
    execute(
        tx,
        "DELETE FROM events WHERE revision < $1",
        &[&to_column(before.0)],
    )
    .await
}

// === statements shared by several transactions ===

/// Inserts or updates one key row. An update of a key that does not exist in its set
/// fails with [`StoreError::NotFound`].
async fn write_key(tx: &Transaction<'_>, write: &KeyWrite) -> Result<(), PgFailure> {
    let (sql, key) = match write {
        KeyWrite::Insert(key) => (
            "INSERT INTO signing_keys (kid, key_set, algorithm, created_at, activates_at, \
             deactivates_at, verify_until, revoked_at, public_jwk, wrapped_private, \
             kek_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            key,
        ),
        KeyWrite::Update(key) => (
            "UPDATE signing_keys SET algorithm = $3, created_at = $4, activates_at = $5, \
             deactivates_at = $6, verify_until = $7, revoked_at = $8, public_jwk = $9, \
             wrapped_private = $10, kek_version = $11 WHERE kid = $1 AND key_set = $2",
            key,
        ),
    };
    let schedule = &key.schedule;
    let public_jwk = to_json(&schedule.public_jwk)?;
    let deactivates_at = schedule.deactivates_at.map(|at| at.0);
    let verify_until = schedule.verify_until.map(|at| at.0);
    let revoked_at = schedule.revoked_at.map(|at| at.0);
    let (kek_version, wrapped_private) = wrapped_key_to_columns(key.wrapped_private.as_ref());
    let n_written = execute(
        tx,
        sql,
        &[
            &schedule.kid.as_str(),
            &schedule.key_set.as_str(),
            &schedule.algorithm.as_str(),
            &schedule.created_at.0,
            &schedule.activates_at.0,
            &deactivates_at,
            &verify_until,
            &revoked_at,
            &public_jwk,
            &wrapped_private,
            &kek_version,
        ],
    )
    .await?;
    if n_written == 0 {
        return Err(StoreError::NotFound.into());
    }
    Ok(())
}

/// Appends one event per change under [`EVENTS_LOCK`] and NOTIFYs [`CHANNEL`] (delivered
/// at commit); returns the last revision, `None` if there was no change.
pub(super) async fn insert_events(
    tx: &Transaction<'_>,
    changes: &[BundleChange],
    at: UnixMillis,
) -> Result<Option<Revision>, PgFailure> {
    if changes.is_empty() {
        return Ok(None);
    }
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK]).await?;
    let mut last = 0_i64;
    for change in changes {
        let payload = to_json(change)?;
        let row = query_one(
            tx,
            "INSERT INTO events (at, payload) VALUES ($1, $2) RETURNING revision",
            &[&at.0, &payload],
        )
        .await?;
        last = row.try_get(0)?;
    }
    let notify = format!(
        "SELECT pg_notify('{CHANNEL}', coalesce(current_schema(), '') || ':' || $1::bigint::text)"
    );
    execute(tx, &notify, &[&last]).await?;
    Ok(Some(revision_from_column(last)?))
}

pub(super) async fn latest_revision<C: GenericClient>(client: &C) -> Result<Revision, PgFailure> {
    let row = query_one(client, "SELECT COALESCE(MAX(revision), 0) FROM events", &[]).await?;
    Ok(revision_from_column(row.try_get(0)?)?)
}

/// Appends `entry` to the audit chain under [`AUDIT_LOCK`]: reads the last link,
/// chains, inserts.
pub(super) async fn insert_audit(
    tx: &Transaction<'_>,
    entry: &AuditEntry,
) -> Result<AuditRecord, PgFailure> {
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK]).await?;
    let head = query_opt(
        tx,
        "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
        &[],
    )
    .await?
    .map(|row| Ok::<_, PgFailure>(chain_head_from_columns(row.try_get(0)?, row.try_get(1)?)?))
    .transpose()?;
    let record = AuditRecord::following(head, entry);
    let stored = &record.entry;
    execute(
        tx,
        "INSERT INTO audit_log (seq, at, actor, action, target, request_id, reason, outcome, \
         prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &to_column(record.seq),
            &stored.at.0,
            &stored.actor,
            &stored.action,
            &stored.target,
            &stored.request_id,
            &stored.reason,
            &stored.outcome,
            &record.prev_hash.as_slice(),
            &record.hash.as_slice(),
        ],
    )
    .await?;
    Ok(record)
}
