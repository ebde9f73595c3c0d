//! The session aggregate on PostgreSQL: sessions, rotating refresh tokens and revocation
//! entries.
//!
//! A rotation is one statement (one round trip, no advisory lock, no event): the
//! conditional update of the old token and the insert of its successor, atomic together.
//! It takes a share lock on the session row, and a revocation updates that row before it
//! revokes the session's tokens (in a later statement, with a fresh snapshot), so a
//! rotation racing a revocation either sees the session ended and writes nothing, or
//! commits first and has its successor revoked with the rest.

use std::sync::LazyLock;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tessera_common::UnixMillis;
use tessera_common::bundle::Revision;
use tessera_common::ids::{SessionId, Subject, TenantId};
use tessera_common::revocation::RevocationEntry;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::error::{PgFailure, corrupt};
use super::queries::{execute, query, query_opt};
use super::tx::PgTx;
use super::{DB_SYSTEM, PostgresStore};
use crate::store::columns::{
    pepper_version_from_column, refresh_state_from_columns, refresh_state_to_columns,
    revocation_kind_from_column,
};
use crate::store::shared::{self, SPAN_TARGET, at_most_one, where_equal};
use crate::store::{
    AuditEntry, EmergencyCommit, EmergencyCommitted, RefreshContext, RefreshTokenRecord,
    Revocation, RevocationEffect, SessionRecord, SessionStore, StoreError,
};

/// The columns [`session_from_row`] reads, in order.
const SESSION_COLUMNS: &str = "session_id, tenant_id, subject, family_id, created_at, \
     expires_at, revoked_at, claims_template";

/// The columns [`token_from_row`] reads, in order.
const TOKEN_COLUMNS: &str = "token_id, family_id, session_id, tenant_id, parent_id, \
     secret_hash, pepper_version, issued_at, expires_at, state, state_at, successor_id";

/// The token, its session and its successor (if any), in one statement: the columns of
/// [`TOKEN_COLUMNS`], then [`SESSION_COLUMNS`], then [`TOKEN_COLUMNS`] again (all null when
/// there is no successor).
static REFRESH_CONTEXT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {}, {} FROM refresh_tokens t \
         JOIN sessions s ON s.session_id = t.session_id \
         LEFT JOIN refresh_tokens u ON u.token_id = t.successor_id \
         WHERE t.token_id = $1",
        qualified("t", TOKEN_COLUMNS),
        qualified("s", SESSION_COLUMNS),
        qualified("u", TOKEN_COLUMNS),
    )
});

/// Where the session's columns start in a [`REFRESH_CONTEXT`] row.
const CONTEXT_SESSION_AT: usize = 12;
/// Where the successor's columns start in a [`REFRESH_CONTEXT`] row.
const CONTEXT_SUCCESSOR_AT: usize = CONTEXT_SESSION_AT + 8;

/// `a, b` → `alias.a, alias.b`.
fn qualified(alias: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Marks `$1` rotated into `$3` if it is active and its session open (share-locking the
/// session row), and inserts the successor `$3..$14` only if it did. Returns the
/// successor's id when the rotation happened, no row otherwise.
const ROTATE: &str = "\
WITH rotated AS (
    UPDATE refresh_tokens SET state = 'rotated', state_at = $2, successor_id = $3
    WHERE token_id = $1 AND state = 'active' AND EXISTS (
        SELECT 1 FROM sessions
        WHERE sessions.session_id = refresh_tokens.session_id AND sessions.revoked_at IS NULL
        FOR SHARE)
    RETURNING token_id
)
INSERT INTO refresh_tokens (token_id, family_id, session_id, tenant_id, parent_id, secret_hash,
    pepper_version, issued_at, expires_at, state, state_at, successor_id)
SELECT $3::text, $4::text, $5::text, $6::text, $7::text, $8::bytea, $9::integer, $10::bigint,
    $11::bigint, $12::text, $13::bigint, $14::text
FROM rotated
RETURNING token_id";

// === impl SessionStore for PostgresStore ===

#[async_trait]
impl SessionStore for PostgresStore {
    #[tracing::instrument(name = "store.create_session", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "create_session", otel.kind = "client"))]
    async fn create_session(
        &self,
        session: SessionRecord,
        first_token: RefreshTokenRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let (session, token, audit) = (session.clone(), first_token.clone(), audit.clone());
            Box::pin(
                async move { shared::create_session(&PgTx(tx), &session, &token, &audit).await },
            )
        })
        .await
    }

    #[tracing::instrument(name = "store.session", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "session", otel.kind = "client"))]
    async fn session(&self, session_id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1");
        self.read_rows(&sql, &[&session_id.as_str()], session_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.session_of_family", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "session_of_family", otel.kind = "client"))]
    async fn session_of_family(
        &self,
        family_id: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE family_id = $1");
        self.read_rows(&sql, &[&family_id], session_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.refresh_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "refresh_token", otel.kind = "client"))]
    async fn refresh_token(
        &self,
        token_id: &str,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM refresh_tokens WHERE token_id = $1");
        self.read_rows(&sql, &[&token_id], token_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.refresh_context", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "refresh_context", otel.kind = "client"))]
    async fn refresh_context(&self, token_id: &str) -> Result<Option<RefreshContext>, StoreError> {
        let client = self.client().await?;
        let read = async {
            let Some(row) = query_opt(&client, &REFRESH_CONTEXT, &[&token_id]).await? else {
                return Ok(None);
            };
            let successor = match row.try_get::<_, Option<String>>(CONTEXT_SUCCESSOR_AT)? {
                Some(_) => Some(token_from_row_at(&row, CONTEXT_SUCCESSOR_AT)?),
                None => None,
            };
            Ok(Some(RefreshContext {
                token: token_from_row_at(&row, 0)?,
                session: session_from_row_at(&row, CONTEXT_SESSION_AT)?,
                successor,
            }))
        };
        read.await.map_err(PgFailure::into_store)
    }

    #[tracing::instrument(name = "store.rotate_refresh_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "rotate_refresh_token", otel.kind = "client"))]
    async fn rotate_refresh_token(
        &self,
        old_token_id: &str,
        successor: RefreshTokenRecord,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let (state, state_at, successor_id) = refresh_state_to_columns(&successor.state);
        // One statement is one (implicit) transaction: on any error nothing is written.
        let rotated = query(
            &client,
            ROTATE,
            &[
                &old_token_id,
                &at.0,
                &successor.token_id,
                &successor.family_id,
                &successor.session_id.as_str(),
                &successor.tenant_id.as_str(),
                &successor.parent_id,
                &successor.secret_hash,
                &successor.pepper_version.get(),
                &successor.issued_at.0,
                &successor.expires_at.0,
                &state,
                &state_at,
                &successor_id,
            ],
        )
        .await;
        match rotated {
            Ok(rows) => Ok(!rows.is_empty()),
            // Someone else inserted this successor first: nothing was written, they won.
            Err(PgFailure::Db(error)) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Ok(false)
            }
            Err(failure) => Err(failure.into_store()),
        }
    }

    #[tracing::instrument(name = "store.revoke", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "revoke", otel.kind = "client"))]
    async fn revoke(&self, revocation: Revocation) -> Result<(Revision, u64), StoreError> {
        self.write_publishing(revocation.appends_events(), |tx| {
            let revocation = revocation.clone();
            Box::pin(async move { shared::revoke(&PgTx(tx), &revocation).await })
        })
        .await
    }

    #[tracing::instrument(name = "store.commit_emergency", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "commit_emergency", otel.kind = "client"))]
    async fn commit_emergency(
        &self,
        commit: EmergencyCommit,
    ) -> Result<EmergencyCommitted, StoreError> {
        let appends_events = commit.appends_events();
        let committed = self
            .write(|tx| {
                let commit = commit.clone();
                Box::pin(async move { shared::commit_emergency(&PgTx(tx), &commit).await })
            })
            .await?;
        let published = committed != EmergencyCommitted::AlreadyRecorded;
        shared::signal_if(&self.change_signal, appends_events && published);
        Ok(committed)
    }

    #[tracing::instrument(name = "store.live_revocations", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "live_revocations", otel.kind = "client"))]
    async fn live_revocations(&self, now: UnixMillis) -> Result<Vec<RevocationEntry>, StoreError> {
        let sql = "SELECT kind, value, tenant_id, revoked_at, drop_after FROM revocations \
                   WHERE drop_after > $1 ORDER BY id";
        self.read_rows(sql, &[&now.0], revocation_from_row).await
    }

    #[tracing::instrument(name = "store.prune_revocations", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "prune_revocations", otel.kind = "client"))]
    async fn prune_revocations(&self, now: UnixMillis) -> Result<u64, StoreError> {
        self.write(|tx| Box::pin(async move { shared::prune_revocations(&PgTx(tx), now).await }))
            .await
    }
}

// === statements ===

pub(super) async fn insert_token(
    tx: &Transaction<'_>,
    token: &RefreshTokenRecord,
) -> Result<(), PgFailure> {
    let (state, state_at, successor_id) = refresh_state_to_columns(&token.state);
    execute(
        tx,
        "INSERT INTO refresh_tokens (token_id, family_id, session_id, tenant_id, parent_id, \
         secret_hash, pepper_version, issued_at, expires_at, state, state_at, successor_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &token.token_id,
            &token.family_id,
            &token.session_id.as_str(),
            &token.tenant_id.as_str(),
            &token.parent_id,
            &token.secret_hash,
            &token.pepper_version.get(),
            &token.issued_at.0,
            &token.expires_at.0,
            &state,
            &state_at,
            &successor_id,
        ],
    )
    .await?;
    Ok(())
}

/// Ends the sessions `effect` selects that are still open (taking their row locks), then
/// revokes the active and rotated refresh tokens of every session it selects; returns
/// how many sessions ended.
///
/// The token update is a second statement on purpose: under READ COMMITTED its snapshot
/// is taken after the session row locks were granted, so it sees the successor of any
/// rotation that held the session's share lock first.
pub(super) async fn end_sessions(
    tx: &Transaction<'_>,
    effect: &RevocationEffect,
    at: UnixMillis,
) -> Result<u64, PgFailure> {
    let conditions = effect.session_conditions();
    let selector = where_equal(&conditions, |index| format!("${index}"));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&at.0];
    params.extend(
        conditions
            .iter()
            .map(|(_, value)| value as &(dyn ToSql + Sync)),
    );
    let n_ended = execute(
        tx,
        &format!("UPDATE sessions SET revoked_at = $1 WHERE revoked_at IS NULL AND {selector}"),
        &params,
    )
    .await?;
    // Every selected session, not only the ones ended now: a token a racing rotation
    // left active in an already-ended session is revoked too.
    execute(
        tx,
        &format!(
            "UPDATE refresh_tokens SET state = 'revoked', state_at = $1 \
             WHERE state IN ('active', 'rotated') \
             AND session_id IN (SELECT session_id FROM sessions WHERE {selector})"
        ),
        &params,
    )
    .await?;
    Ok(n_ended)
}

// === rows ===

fn session_from_row(row: &Row) -> Result<SessionRecord, PgFailure> {
    session_from_row_at(row, 0)
}

/// Reads [`SESSION_COLUMNS`] starting at column `at`.
fn session_from_row_at(row: &Row, at: usize) -> Result<SessionRecord, PgFailure> {
    Ok(SessionRecord {
        session_id: SessionId::new(row.try_get::<_, String>(at)?).map_err(corrupt)?,
        tenant_id: TenantId::new(row.try_get::<_, String>(at + 1)?).map_err(corrupt)?,
        subject: Subject::new(row.try_get::<_, String>(at + 2)?).map_err(corrupt)?,
        family_id: row.try_get(at + 3)?,
        created_at: UnixMillis(row.try_get(at + 4)?),
        expires_at: row.try_get::<_, Option<i64>>(at + 5)?.map(UnixMillis),
        revoked_at: row.try_get::<_, Option<i64>>(at + 6)?.map(UnixMillis),
        claims_template: row.try_get(at + 7)?,
    })
}

fn token_from_row(row: &Row) -> Result<RefreshTokenRecord, PgFailure> {
    token_from_row_at(row, 0)
}

/// Reads [`TOKEN_COLUMNS`] starting at column `at`.
fn token_from_row_at(row: &Row, at: usize) -> Result<RefreshTokenRecord, PgFailure> {
    let state: String = row.try_get(at + 9)?;
    Ok(RefreshTokenRecord {
        token_id: row.try_get(at)?,
        family_id: row.try_get(at + 1)?,
        session_id: SessionId::new(row.try_get::<_, String>(at + 2)?).map_err(corrupt)?,
        tenant_id: TenantId::new(row.try_get::<_, String>(at + 3)?).map_err(corrupt)?,
        parent_id: row.try_get(at + 4)?,
        secret_hash: row.try_get(at + 5)?,
        pepper_version: pepper_version_from_column(row.try_get(at + 6)?)?,
        issued_at: UnixMillis(row.try_get(at + 7)?),
        expires_at: UnixMillis(row.try_get(at + 8)?),
        state: refresh_state_from_columns(&state, row.try_get(at + 10)?, row.try_get(at + 11)?)?,
    })
}

fn revocation_from_row(row: &Row) -> Result<RevocationEntry, PgFailure> {
    let kind: String = row.try_get(0)?;
    Ok(RevocationEntry {
        kind: revocation_kind_from_column(&kind)?,
        value: row.try_get(1)?,
        tenant_id: row.try_get(2)?,
        revoked_at: UnixMillis(row.try_get(3)?),
        drop_after: UnixMillis(row.try_get(4)?),
    })
}
