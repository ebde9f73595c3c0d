//! The statements behind the PostgreSQL store that more than one caller uses (the
//! shared transaction bodies reach them through `tx::PgTx`). Every statement is
//! prepared once per connection and cached.

use deadpool_postgres::{GenericClient, Transaction};
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::error::PgFailure;
use super::listener::CHANNEL;
use super::rows::{revision_from_column, to_column, to_json, wrapped_key_to_columns};
use crate::store::KeyWrite;

/// Serializes event appends across replicas (`"tessevnt"`): taken before the first
/// `nextval`, held until commit, so revisions commit, and become visible, in order.
const EVENTS_LOCK: i64 = 0x7465_7373_6576_6e74;

/// Serializes audit appends across replicas (`"tessaudt"`), so the hash chain is linear.
/// Always taken after [`EVENTS_LOCK`] when a transaction takes both.
pub(super) const AUDIT_LOCK: i64 = 0x7465_7373_6175_6474;

/// Statement parameters, in `$n` order.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Defines `$name(client, sql, params)`: prepares `sql` (cached per connection) and runs
/// it through the client method of the same name.
macro_rules! prepared {
    ($name:ident -> $output:ty) => {
        pub(super) async fn $name<C: GenericClient>(
            client: &C,
            sql: &str,
            params: Params<'_>,
        ) -> Result<$output, PgFailure> {
            let statement = client.prepare_cached(sql).await?;
            Ok(client.$name(&statement, params).await?)
        }
    };
}

prepared!(query -> Vec<Row>);
prepared!(query_one -> Row);
prepared!(query_opt -> Option<Row>);
prepared!(execute -> u64);

// === transaction bodies ===

pub(super) async fn prune_events(tx: &Transaction<'_>, before: Revision) -> Result<u64, PgFailure> {
    execute(
        tx,
        "DELETE FROM events WHERE revision < $1",
        &[&to_column(before.0)],
    )
    .await
}

// === statements shared by several transactions ===

/// Inserts or updates one key row; returns the rows written (0 for an update of a key
/// that is not in its set).
pub(super) async fn write_key(tx: &Transaction<'_>, write: &KeyWrite) -> Result<u64, PgFailure> {
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
    execute(
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
    .await
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
