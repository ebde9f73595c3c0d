//! The session aggregate on SQLite: sessions, rotating refresh tokens and revocation
//! entries. Every write is one `BEGIN IMMEDIATE` transaction, so of any number of
//! concurrent rotations of one token (on any connection to the file) exactly one wins.

use async_trait::async_trait;
use rusqlite::{Connection, Row, ToSql, params};
use tessera_common::UnixMillis;
use tessera_common::bundle::Revision;
use tessera_common::ids::{SessionId, Subject, TenantId};
use tessera_common::revocation::RevocationEntry;

use super::error::SqliteFailure;
use super::tx::{SqliteTx, complete};
use super::{DB_SYSTEM, SqliteStore};
use crate::store::columns::{
    pepper_version_from_column, refresh_state_from_columns, refresh_state_to_columns,
    revocation_kind_from_column,
};
use crate::store::shared::{self, SPAN_TARGET, at_most_one, where_equal};
use crate::store::{
    AuditEntry, EmergencyCommit, EmergencyCommitted, RefreshTokenRecord, Revocation,
    RevocationEffect, SessionRecord, SessionStore, StoreError,
};

/// The columns [`session_from_row`] reads, in order.
const SESSION_COLUMNS: &str = "session_id, tenant_id, subject, family_id, created_at, \
     expires_at, revoked_at, claims_template";

/// The columns [`token_from_row`] reads, in order.
const TOKEN_COLUMNS: &str = "token_id, family_id, session_id, tenant_id, parent_id, \
     secret_hash, pepper_version, issued_at, expires_at, state, state_at, successor_id";

// === impl SessionStore for SqliteStore ===

#[async_trait]
impl SessionStore for SqliteStore {
    #[tracing::instrument(name = "store.create_session", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "create_session", otel.kind = "client"))]
    async fn create_session(
        &self,
        session: SessionRecord,
        first_token: RefreshTokenRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            complete(shared::create_session(
                &SqliteTx(tx),
                &session,
                &first_token,
                &audit,
            ))
        })
        .await
    }

    #[tracing::instrument(name = "store.session", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "session", otel.kind = "client"))]
    async fn session(&self, session_id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?1");
        let params = vec![session_id.to_string().into()];
        self.read_rows(sql, params, session_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.session_of_family", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "session_of_family", otel.kind = "client"))]
    async fn session_of_family(
        &self,
        family_id: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE family_id = ?1");
        self.read_rows(sql, vec![family_id.to_owned().into()], session_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.refresh_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "refresh_token", otel.kind = "client"))]
    async fn refresh_token(
        &self,
        token_id: &str,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM refresh_tokens WHERE token_id = ?1");
        self.read_rows(sql, vec![token_id.to_owned().into()], token_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.rotate_refresh_token", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "rotate_refresh_token", otel.kind = "client"))]
    async fn rotate_refresh_token(
        &self,
        old_token_id: &str,
        successor: RefreshTokenRecord,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let old_token_id = old_token_id.to_owned();
        let rotated = self
            .write(move |tx| {
                let n_rotated = tx
                    .prepare_cached(
                        "UPDATE refresh_tokens SET state = 'rotated', state_at = ?2, \
                         successor_id = ?3 \
                         WHERE token_id = ?1 AND state = 'active' AND EXISTS (\
                             SELECT 1 FROM sessions \
                             WHERE sessions.session_id = refresh_tokens.session_id \
                             AND sessions.revoked_at IS NULL)",
                    )?
                    .execute(params![old_token_id, at.0, successor.token_id])?;
                if n_rotated == 0 {
                    return Ok(false);
                }
                // A duplicate successor fails with `AlreadyExists`, rolling the rotation back.
                insert_token(tx, &successor)?;
                Ok(true)
            })
            .await;
        match rotated {
            // Someone else inserted this successor first: nothing was written, they won.
            Err(StoreError::AlreadyExists) => Ok(false),
            other => other,
        }
    }

    #[tracing::instrument(name = "store.revoke", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "revoke", otel.kind = "client"))]
    async fn revoke(&self, revocation: Revocation) -> Result<(Revision, u64), StoreError> {
        self.write_publishing(revocation.appends_events(), move |tx| {
            complete(shared::revoke(&SqliteTx(tx), &revocation))
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
        let drops_material = commit.drops_material();
        let committed = self
            .write(move |tx| complete(shared::commit_emergency(&SqliteTx(tx), &commit)))
            .await?;
        if committed == EmergencyCommitted::AlreadyRecorded {
            return Ok(committed);
        }
        shared::signal_if(&self.change_signal, appends_events);
        if drops_material {
            self.truncate_wal().await;
        }
        Ok(committed)
    }

    #[tracing::instrument(name = "store.live_revocations", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "live_revocations", otel.kind = "client"))]
    async fn live_revocations(&self, now: UnixMillis) -> Result<Vec<RevocationEntry>, StoreError> {
        let sql = "SELECT kind, value, tenant_id, revoked_at, drop_after FROM revocations \
                   WHERE drop_after > ?1 ORDER BY id";
        self.read_rows(sql.to_owned(), vec![now.0.into()], revocation_from_row)
            .await
    }

    #[tracing::instrument(name = "store.prune_revocations", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "prune_revocations", otel.kind = "client"))]
    async fn prune_revocations(&self, now: UnixMillis) -> Result<u64, StoreError> {
        self.write(move |tx| complete(shared::prune_revocations(&SqliteTx(tx), now)))
            .await
    }
}

// === statements ===

pub(super) fn insert_token(
    connection: &Connection,
    token: &RefreshTokenRecord,
) -> Result<(), SqliteFailure> {
    let (state, state_at, successor_id) = refresh_state_to_columns(&token.state);
    connection
        .prepare_cached(
            "INSERT INTO refresh_tokens (token_id, family_id, session_id, tenant_id, parent_id, \
             secret_hash, pepper_version, issued_at, expires_at, state, state_at, successor_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            token.token_id,
            token.family_id,
            token.session_id.as_str(),
            token.tenant_id.as_str(),
            token.parent_id,
            token.secret_hash,
            token.pepper_version.get(),
            token.issued_at.0,
            token.expires_at.0,
            state,
            state_at,
            successor_id,
        ])?;
    Ok(())
}

/// Ends the sessions `effect` selects that are still open, and revokes the active and
/// rotated refresh tokens of every session it selects; returns how many sessions ended.
pub(super) fn end_sessions(
    connection: &Connection,
    effect: &RevocationEffect,
    at: UnixMillis,
) -> Result<u64, SqliteFailure> {
    let conditions = effect.session_conditions();
    let selector = where_equal(&conditions, |index| format!("?{index}"));
    let mut bound: Vec<&dyn ToSql> = vec![&at.0];
    bound.extend(conditions.iter().map(|(_, value)| value as &dyn ToSql));
    let n_ended = connection
        .prepare_cached(&format!(
            "UPDATE sessions SET revoked_at = ?1 WHERE revoked_at IS NULL AND {selector}"
        ))?
        .execute(bound.as_slice())?;
    // Every selected session, not only the ones ended now: a token a racing rotation
    // left active in an already-ended session is revoked too.
    connection
        .prepare_cached(&format!(
            "UPDATE refresh_tokens SET state = 'revoked', state_at = ?1 \
             WHERE state IN ('active', 'rotated') \
             AND session_id IN (SELECT session_id FROM sessions WHERE {selector})"
        ))?
        .execute(bound.as_slice())?;
    Ok(n_ended as u64)
}

// === rows ===

fn session_from_row(row: &Row<'_>) -> Result<SessionRecord, SqliteFailure> {
    Ok(SessionRecord {
        session_id: SessionId::new(row.get::<_, String>(0)?).map_err(corrupt)?,
        tenant_id: TenantId::new(row.get::<_, String>(1)?).map_err(corrupt)?,
        subject: Subject::new(row.get::<_, String>(2)?).map_err(corrupt)?,
        family_id: row.get(3)?,
        created_at: UnixMillis(row.get(4)?),
        expires_at: row.get::<_, Option<i64>>(5)?.map(UnixMillis),
        revoked_at: row.get::<_, Option<i64>>(6)?.map(UnixMillis),
        claims_template: row.get(7)?,
    })
}

fn token_from_row(row: &Row<'_>) -> Result<RefreshTokenRecord, SqliteFailure> {
    let state: String = row.get(9)?;
    Ok(RefreshTokenRecord {
        token_id: row.get(0)?,
        family_id: row.get(1)?,
        session_id: SessionId::new(row.get::<_, String>(2)?).map_err(corrupt)?,
        tenant_id: TenantId::new(row.get::<_, String>(3)?).map_err(corrupt)?,
        parent_id: row.get(4)?,
        secret_hash: row.get(5)?,
        pepper_version: pepper_version_from_column(row.get(6)?)?,
        issued_at: UnixMillis(row.get(7)?),
        expires_at: UnixMillis(row.get(8)?),
        state: refresh_state_from_columns(&state, row.get(10)?, row.get(11)?)?,
    })
}

fn revocation_from_row(row: &Row<'_>) -> Result<RevocationEntry, SqliteFailure> {
    let kind: String = row.get(0)?;
    Ok(RevocationEntry {
        kind: revocation_kind_from_column(&kind)?,
        value: row.get(1)?,
        tenant_id: row.get(2)?,
        revoked_at: UnixMillis(row.get(3)?),
        drop_after: UnixMillis(row.get(4)?),
    })
}

fn corrupt(error: impl std::fmt::Display) -> SqliteFailure {
    SqliteFailure::Store(StoreError::Corrupt(error.to_string()))
}
