//! SQLite's statements for the shared transaction bodies (`store::shared`), and the
//! one-poll driver that runs those bodies on the blocking thread holding the connection.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rusqlite::{Connection, OptionalExtension, params};
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};
use tessera_common::ids::{ClientId, TenantId};
use tessera_common::keys::KeySetName;
use tessera_common::revocation::RevocationEntry;

use super::error::SqliteFailure;
use super::queries::{insert_events, latest_revision, write_key};
use super::rows::{credential_kind_to_column, to_column, to_json};
use super::sessions::{end_sessions, insert_token};
use crate::audit::ChainHead;
use crate::store::columns::{chain_head_from_columns, revocation_kind_to_column};
use crate::store::emergency::DeactivatedCredentials;
use crate::store::shared::WriteTx;
use crate::store::{
    AuditRecord, ClientRecord, KeyWrite, RefreshTokenRecord, RevocationEffect, SessionRecord,
    StoreError,
};

/// An open SQLite transaction (or a connection inside one), as the shared bodies use it.
pub(super) struct SqliteTx<'c>(pub(super) &'c Connection);

/// Runs a shared transaction body to completion on this thread.
///
/// Every [`SqliteTx`] statement is synchronous, so the body never waits and one poll
/// completes it; the no-op waker is never woken. A body that did wait would be a bug in
/// this backend, reported as a failure rather than a hang.
pub(super) fn complete<T>(
    body: impl Future<Output = Result<T, SqliteFailure>>,
) -> Result<T, SqliteFailure> {
    let mut body = pin!(body);
    match body.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(StoreError::Unavailable(
            "sqlite transaction body waited on something other than sqlite".to_owned(),
        )
        .into()),
    }
}

impl WriteTx for SqliteTx<'_> {
    type Failure = SqliteFailure;

    async fn bump_generation(
        &self,
        key_set: KeySetName,
        expected: i64,
    ) -> Result<bool, SqliteFailure> {
        self.0
            .prepare_cached(
                "INSERT INTO key_sets (name, generation) VALUES (?1, 0) \
                 ON CONFLICT (name) DO NOTHING",
            )?
            .execute([key_set.as_str()])?;
        let n_bumped = self
            .0
            .prepare_cached(
                "UPDATE key_sets SET generation = generation + 1 \
                 WHERE name = ?1 AND generation = ?2",
            )?
            .execute(params![key_set.as_str(), expected])?;
        Ok(n_bumped == 1)
    }

    async fn write_key(&self, write: &KeyWrite) -> Result<u64, SqliteFailure> {
        write_key(self.0, write)
    }

    async fn insert_events(
        &self,
        changes: &[BundleChange],
        at: UnixMillis,
    ) -> Result<Option<Revision>, SqliteFailure> {
        // The caller holds the write lock (`BEGIN IMMEDIATE`): revisions are consecutive.
        insert_events(self.0, changes, at)
    }

    async fn latest_revision(&self) -> Result<Revision, SqliteFailure> {
        latest_revision(self.0)
    }

    async fn lock_audit_head(&self) -> Result<Option<ChainHead>, SqliteFailure> {
        // `BEGIN IMMEDIATE` already made this transaction the only writer.
        let head = self
            .0
            .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        Ok(head
            .map(|(seq, hash)| chain_head_from_columns(seq, hash))
            .transpose()?)
    }

    async fn insert_audit(&self, record: &AuditRecord) -> Result<(), SqliteFailure> {
        let stored = &record.entry;
        self.0
            .prepare_cached(
                "INSERT INTO audit_log (seq, at, actor, action, target, request_id, reason, \
                 outcome, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
        Ok(())
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), SqliteFailure> {
        self.0
            .prepare_cached(
                "INSERT INTO sessions (session_id, tenant_id, subject, family_id, created_at, \
                 expires_at, revoked_at, claims_template) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                session.session_id.as_str(),
                session.tenant_id.as_str(),
                session.subject.as_str(),
                session.family_id,
                session.created_at.0,
                session.expires_at.map(|at| at.0),
                session.revoked_at.map(|at| at.0),
                session.claims_template,
            ])?;
        Ok(())
    }

    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), SqliteFailure> {
        insert_token(self.0, token)
    }

    async fn end_sessions(
        &self,
        effect: &RevocationEffect,
        at: UnixMillis,
    ) -> Result<u64, SqliteFailure> {
        end_sessions(self.0, effect, at)
    }

    async fn insert_revocation(&self, entry: &RevocationEntry) -> Result<(), SqliteFailure> {
        self.0
            .prepare_cached(
                "INSERT INTO revocations (kind, value, tenant_id, revoked_at, drop_after) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                revocation_kind_to_column(entry.kind),
                entry.value,
                entry.tenant_id,
                entry.revoked_at.0,
                entry.drop_after.0,
            ])?;
        Ok(())
    }

    async fn delete_revocations_until(&self, now: UnixMillis) -> Result<u64, SqliteFailure> {
        let n_deleted = self
            .0
            .prepare_cached("DELETE FROM revocations WHERE drop_after <= ?1")?
            .execute([now.0])?;
        Ok(n_deleted as u64)
    }

    async fn delete_refresh_tokens_until(&self, cutoff: UnixMillis) -> Result<(), SqliteFailure> {
        self.0
            .prepare_cached("DELETE FROM refresh_tokens WHERE expires_at <= ?1")?
            .execute([cutoff.0])?;
        Ok(())
    }

    async fn insert_client(&self, client: &ClientRecord) -> Result<(), SqliteFailure> {
        self.0
            .prepare_cached(
                "INSERT INTO api_clients (client_id, name, scopes, tenants, secret_hash, \
                 pepper_version, created_at, disabled_at, credential_prefix) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                client.client_id.as_str(),
                client.name,
                to_json(&client.scopes)?,
                to_json(&client.tenants)?,
                client.secret_hash,
                client.pepper_version.get(),
                client.created_at.0,
                client.disabled_at.map(|at| at.0),
                credential_kind_to_column(client.credential_kind),
            ])?;
        Ok(())
    }

    async fn disable_client(
        &self,
        client_id: &ClientId,
        at: UnixMillis,
    ) -> Result<u64, SqliteFailure> {
        // COALESCE keeps the first disabling instant: disabling twice changes nothing.
        let n_matched = self
            .0
            .prepare_cached(
                "UPDATE api_clients SET disabled_at = COALESCE(disabled_at, ?2) \
                 WHERE client_id = ?1",
            )?
            .execute(params![client_id.as_str(), at.0])?;
        Ok(n_matched as u64)
    }

    async fn insert_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<bool, SqliteFailure> {
        let n_inserted = self
            .0
            .prepare_cached(
                "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![name, value])?;
        Ok(n_inserted == 1)
    }

    async fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, SqliteFailure> {
        Ok(self
            .0
            .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
            .query_row([name], |row| row.get(0))
            .optional()?)
    }

    async fn deactivate_tenant_credentials(
        &self,
        tenant_id: &TenantId,
        at: UnixMillis,
    ) -> Result<DeactivatedCredentials, SqliteFailure> {
        super::opaque_tokens::deactivate_tenant_credentials(self.0, tenant_id, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that waits is reported, not polled forever or left half done.
    #[test]
    fn a_body_that_waits_fails_instead_of_hanging() {
        let waited = complete(std::future::pending::<Result<(), SqliteFailure>>());
        assert!(matches!(
            waited.map_err(SqliteFailure::into_store),
            Err(StoreError::Unavailable(_))
        ));
        assert_eq!(complete(async { Ok::<_, SqliteFailure>(7) }).ok(), Some(7));
    }
}
