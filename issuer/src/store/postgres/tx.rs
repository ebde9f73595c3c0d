//! PostgreSQL's statements for the shared transaction bodies (`store::shared`).

use deadpool_postgres::Transaction;
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};
use tessera_common::ids::{ClientId, TenantId};
use tessera_common::keys::KeySetName;
use tessera_common::revocation::RevocationEntry;

use super::error::PgFailure;
use super::queries::{AUDIT_LOCK, execute, insert_events, latest_revision, query_opt, write_key};
use super::rows::{credential_kind_to_column, to_column, to_json};
use super::sessions::{end_sessions, insert_token};
use crate::audit::ChainHead;
use crate::store::columns::{chain_head_from_columns, revocation_kind_to_column};
use crate::store::emergency::DeactivatedCredentials;
use crate::store::shared::WriteTx;
use crate::store::{
    AuditRecord, ClientRecord, KeyWrite, RefreshTokenRecord, RevocationEffect, SessionRecord,
};

/// An open PostgreSQL transaction, as the shared bodies use it.
pub(super) struct PgTx<'a, 't>(pub(super) &'a Transaction<'t>);

impl WriteTx for PgTx<'_, '_> {
    type Failure = PgFailure;

    async fn bump_generation(&self, key_set: KeySetName, expected: i64) -> Result<bool, PgFailure> {
        execute(
            self.0,
            "INSERT INTO key_sets (name, generation) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
            &[&key_set.as_str()],
        )
        .await?;
        // Of two transactions expecting the same generation, the second waits for the
        // first's row lock, re-reads the row, finds the generation moved and matches nothing.
        let n_bumped = execute(
            self.0,
            "UPDATE key_sets SET generation = generation + 1 WHERE name = $1 AND generation = $2",
            &[&key_set.as_str(), &expected],
        )
        .await?;
        Ok(n_bumped == 1)
    }

    async fn write_key(&self, write: &KeyWrite) -> Result<u64, PgFailure> {
        write_key(self.0, write).await
    }

    async fn insert_events(
        &self,
        changes: &[BundleChange],
        at: UnixMillis,
    ) -> Result<Option<Revision>, PgFailure> {
        insert_events(self.0, changes, at).await
    }

    async fn latest_revision(&self) -> Result<Revision, PgFailure> {
        latest_revision(self.0).await
    }

    async fn lock_audit_head(&self) -> Result<Option<ChainHead>, PgFailure> {
        // Held until commit: appends from every replica form one linear chain. Taken
        // after the events lock by every transaction that takes both.
        execute(self.0, "SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK]).await?;
        let head = query_opt(
            self.0,
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await?;
        match head {
            Some(row) => Ok(Some(chain_head_from_columns(
                row.try_get(0)?,
                row.try_get(1)?,
            )?)),
            None => Ok(None),
        }
    }

    async fn insert_audit(&self, record: &AuditRecord) -> Result<(), PgFailure> {
        let stored = &record.entry;
        execute(
            self.0,
            "INSERT INTO audit_log (seq, at, actor, action, target, request_id, reason, \
             outcome, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        Ok(())
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), PgFailure> {
        let expires_at = session.expires_at.map(|at| at.0);
        let revoked_at = session.revoked_at.map(|at| at.0);
        execute(
            self.0,
            "INSERT INTO sessions (session_id, tenant_id, subject, family_id, created_at, \
             expires_at, revoked_at, claims_template) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &session.session_id.as_str(),
                &session.tenant_id.as_str(),
                &session.subject.as_str(),
                &session.family_id,
                &session.created_at.0,
                &expires_at,
                &revoked_at,
                &session.claims_template,
            ],
        )
        .await?;
        Ok(())
    }

    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), PgFailure> {
        insert_token(self.0, token).await
    }

    async fn end_sessions(
        &self,
        effect: &RevocationEffect,
        at: UnixMillis,
    ) -> Result<u64, PgFailure> {
        end_sessions(self.0, effect, at).await
    }

    async fn insert_revocation(&self, entry: &RevocationEntry) -> Result<(), PgFailure> {
        execute(
            self.0,
            "INSERT INTO revocations (kind, value, tenant_id, revoked_at, drop_after) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &revocation_kind_to_column(entry.kind),
                &entry.value,
                &entry.tenant_id,
                &entry.revoked_at.0,
                &entry.drop_after.0,
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_revocations_until(&self, now: UnixMillis) -> Result<u64, PgFailure> {
        execute(
            self.0,
            "DELETE FROM revocations WHERE drop_after <= $1",
            &[&now.0],
        )
        .await
    }

    async fn delete_refresh_tokens_until(&self, cutoff: UnixMillis) -> Result<(), PgFailure> {
        execute(
            self.0,
            "DELETE FROM refresh_tokens WHERE expires_at <= $1",
            &[&cutoff.0],
        )
        .await?;
        Ok(())
    }

    async fn insert_client(&self, client: &ClientRecord) -> Result<(), PgFailure> {
        let scopes = to_json(&client.scopes)?;
        let tenants = to_json(&client.tenants)?;
        let disabled_at = client.disabled_at.map(|at| at.0);
        execute(
            self.0,
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
        Ok(())
    }

    async fn disable_client(&self, client_id: &ClientId, at: UnixMillis) -> Result<u64, PgFailure> {
        // COALESCE keeps the first disabling instant: disabling twice changes nothing.
        execute(
            self.0,
            "UPDATE api_clients SET disabled_at = COALESCE(disabled_at, $2) WHERE client_id = $1",
            &[&client_id.as_str(), &at.0],
        )
        .await
    }

    async fn insert_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<bool, PgFailure> {
        // A concurrent insert of the same name makes this one wait for its commit: then it
        // inserts nothing, or, if that transaction rolled back, inserts.
        let n_inserted = execute(
            self.0,
            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &value],
        )
        .await?;
        Ok(n_inserted == 1)
    }

    async fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, PgFailure> {
        // A fresh snapshot per statement: it sees the value of an insert that won a race.
        let row = query_opt(self.0, "SELECT value FROM meta WHERE name = $1", &[&name]).await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    async fn deactivate_tenant_credentials(
        &self,
        tenant_id: &TenantId,
        at: UnixMillis,
    ) -> Result<DeactivatedCredentials, PgFailure> {
        super::opaque_tokens::deactivate_tenant_credentials(self.0, tenant_id, at).await
    }
}
