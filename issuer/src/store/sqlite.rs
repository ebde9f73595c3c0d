//! The SQLite backend: the embedded default store for a single issuer replica. One
//! connection behind a mutex; every call runs on tokio's blocking pool.

mod api_keys;
mod challenges;
mod error;
mod migrations;
mod one_time_tokens;
mod opaque_tokens;
mod queries;
mod rate_limits;
mod rows;
mod secrets;
mod sessions;
mod tx;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{
    Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params_from_iter,
};
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, BundleEvent, Revision};
use tessera_common::ids::ClientId;
use tessera_common::keys::KeySetName;
use tokio::sync::Notify;

use self::error::SqliteFailure;
use self::queries::latest_revision;
use self::rows::{
    AUDIT_COLUMNS, CLIENT_COLUMNS, KEY_COLUMNS, audit_from_row, client_from_row, event_from_row,
    key_from_row, limit_to_column, revision_from_column, revision_to_column, to_column,
};
use self::tx::{SqliteTx, complete};
use crate::store::shared::{self, SPAN_TARGET, WriteTx, at_most_one};
use crate::store::{
    AuditEntry, AuditRecord, ClientRecord, KeyCommit, KeySetState, Store, StoreError,
};

/// `db.system` of this backend's spans (OpenTelemetry's name for it).
const DB_SYSTEM: &str = "sqlite";

/// How long a write waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store. Cheap to share behind an `Arc<dyn Store>`; not `Clone`.
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    change_signal: Arc<Notify>,
    location: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

// === impl SqliteStore ===

impl SqliteStore {
    /// Opens the database file at `path`, creating it if needed, with the WAL journal,
    /// foreign keys on and a busy timeout, and applies the embedded migrations.
    ///
    /// The file holds wrapped private keys and credential hashes, so it is created with
    /// mode 0600 before SQLite opens it (SQLite would use 0644 less the umask, and gives
    /// the `-wal` and `-shm` files the database file's mode); an existing looser file is
    /// tightened, with a warning.
    ///
    /// Blocks on file I/O: call it at start-up (or from `spawn_blocking`).
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        make_database_files_private(path)?;
        let connection = Connection::open(path).map_err(open_error)?;
        Self::configure(connection, true, path.display().to_string())
    }

    /// Opens a private in-memory database with the embedded migrations applied; its
    /// contents vanish with the store. For tests and throwaway runs.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let connection = Connection::open_in_memory().map_err(open_error)?;
        Self::configure(connection, false, ":memory:".to_owned())
    }

    fn configure(
        mut connection: Connection,
        wal: bool,
        location: String,
    ) -> Result<SqliteStore, StoreError> {
        let setup = |connection: &Connection| -> Result<(), SqliteFailure> {
            connection.busy_timeout(BUSY_TIMEOUT)?;
            connection.pragma_update(None, "foreign_keys", true)?;
            // Deleted content (a revoked key's wrapped private key) is overwritten with
            // zeros instead of lingering in free space where a copy of the file finds it.
            connection.pragma_update(None, "secure_delete", true)?;
            if wal {
                let mode: String =
                    connection
                        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(StoreError::Unavailable(format!(
                        "sqlite refused the WAL journal (got `{mode}`)"
                    ))
                    .into());
                }
            }
            Ok(())
        };
        setup(&connection).map_err(SqliteFailure::into_store)?;
        migrations::apply(&mut connection)?;
        tracing::info!(location = %location, "sqlite store open");
        Ok(SqliteStore {
            connection: Arc::new(Mutex::new(connection)),
            change_signal: Arc::new(Notify::new()),
            location,
        })
    }

    /// Runs `operation` on the connection, on the blocking pool.
    async fn with_connection<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, SqliteFailure> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        let joined = tokio::task::spawn_blocking(move || {
            // A panic while the lock was held leaves no open transaction behind (a dropped
            // `Transaction` rolls back), so a poisoned connection is still consistent.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            operation(&mut connection)
        })
        .await;
        match joined {
            Ok(result) => result.map_err(SqliteFailure::into_store),
            Err(join_error) => {
                tracing::error!(error = %join_error, "sqlite task failed");
                Err(StoreError::Unavailable("sqlite task failed".to_owned()))
            }
        }
    }

    /// Returns every row `sql` selects with `params`, read by `from_row`.
    async fn read_rows<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Value>,
        from_row: fn(&Row<'_>) -> Result<T, SqliteFailure>,
    ) -> Result<Vec<T>, StoreError> {
        self.with_connection(move |connection| {
            let mut statement = connection.prepare_cached(&sql)?;
            let mut rows = statement.query(params_from_iter(params))?;
            let mut records = Vec::new();
            while let Some(row) = rows.next()? {
                records.push(from_row(row)?);
            }
            Ok(records)
        })
        .await
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction, committed when `body` returns
    /// `Ok` and rolled back otherwise. Every multi-statement write goes through here.
    async fn write<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, SqliteFailure> + Send + 'static,
    {
        self.with_connection(move |connection| {
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = body(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
    }

    /// Runs `body` as [`Self::write`] does and, when it `appends_events`, pokes the change
    /// signal once it has committed.
    async fn write_publishing<T, F>(&self, appends_events: bool, body: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, SqliteFailure> + Send + 'static,
    {
        let value = self.write(body).await?;
        shared::signal_if(&self.change_signal, appends_events);
        Ok(value)
    }

    /// Copies the WAL into the database and truncates it. The WAL still holds the frames
    /// that once wrote a now-deleted wrapped key; `secure_delete` only zeroes the database
    /// pages, so without this the key stays readable in `-wal` until the next automatic
    /// checkpoint happens to overwrite it. Best effort: a busy reader only delays it.
    async fn truncate_wal(&self) {
        let checkpoint = self
            .with_connection(|connection| {
                let busy: i64 =
                    connection
                        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
                Ok(busy)
            })
            .await;
        match checkpoint {
            Ok(0) => {}
            Ok(_) => {
                tracing::warn!("wal checkpoint blocked by a reader; retried on the next key change")
            }
            Err(error) => tracing::warn!(error = %error, "wal checkpoint failed"),
        }
    }
}

/// Creates the database file 0600 or tightens it and any `-wal`/`-shm` left by an
/// earlier run (files created before this check existed kept the default mode).
fn make_database_files_private(path: &Path) -> Result<(), StoreError> {
    warn_if_tightened(path, crate::files::ensure_private_file(path))?;
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let companion = PathBuf::from(name);
        warn_if_tightened(&companion, crate::files::tighten_if_present(&companion))?;
    }
    Ok(())
}

fn warn_if_tightened(path: &Path, changed: std::io::Result<Option<u32>>) -> Result<(), StoreError> {
    let changed = changed.map_err(|error| {
        StoreError::Unavailable(format!("cannot secure {}: {error}", path.display()))
    })?;
    if let Some(old_mode) = changed {
        tracing::warn!(
            path = %path.display(),
            old_mode = format_args!("{old_mode:o}"),
            "database file was readable by others; changed its mode to 0600"
        );
    }
    Ok(())
}

fn open_error(error: rusqlite::Error) -> StoreError {
    SqliteFailure::from(error).into_store()
}

// === impl Store for SqliteStore ===

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn change_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.change_signal)
    }

    #[tracing::instrument(name = "store.key_set", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "key_set", otel.kind = "client"))]
    async fn key_set(&self, key_set: KeySetName) -> Result<KeySetState, StoreError> {
        self.with_connection(move |connection| {
            let generation: Option<i64> = connection
                .prepare_cached("SELECT generation FROM key_sets WHERE name = ?1")?
                .query_row([key_set.as_str()], |row| row.get(0))
                .optional()?;
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM signing_keys WHERE key_set = ?1 ORDER BY created_at, kid"
            );
            let mut statement = connection.prepare_cached(&sql)?;
            let mut rows = statement.query([key_set.as_str()])?;
            let mut keys = Vec::new();
            while let Some(row) = rows.next()? {
                keys.push(key_from_row(row)?);
            }
            Ok(KeySetState {
                generation: generation.unwrap_or(0),
                keys,
            })
        })
        .await
    }

    #[tracing::instrument(name = "store.commit_keys", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "commit_keys", otel.kind = "client"))]
    async fn commit_keys(&self, commit: KeyCommit) -> Result<Revision, StoreError> {
        let drops_material = commit.drops_material();
        let revision = self
            .write_publishing(commit.appends_events(), move |tx| {
                complete(shared::commit_keys(&SqliteTx(tx), &commit))
            })
            .await?;
        if drops_material {
            self.truncate_wal().await;
        }
        Ok(revision)
    }

    #[tracing::instrument(name = "store.append_events", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "append_events", otel.kind = "client"))]
    async fn append_events(
        &self,
        changes: Vec<BundleChange>,
        at: UnixMillis,
    ) -> Result<Revision, StoreError> {
        self.write_publishing(!changes.is_empty(), move |tx| {
            complete(shared::append_events(&SqliteTx(tx), &changes, at))
        })
        .await
    }

    #[tracing::instrument(name = "store.events_after", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "events_after", otel.kind = "client"))]
    async fn events_after(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<BundleEvent>, StoreError> {
        let sql = "SELECT revision, at, payload FROM events WHERE revision > ?1 \
                   ORDER BY revision LIMIT ?2";
        let params = vec![
            revision_to_column(after).into(),
            limit_to_column(limit).into(),
        ];
        self.read_rows(sql.to_owned(), params, event_from_row).await
    }

    #[tracing::instrument(name = "store.latest_revision", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "latest_revision", otel.kind = "client"))]
    async fn latest_revision(&self) -> Result<Revision, StoreError> {
        self.with_connection(|connection| latest_revision(connection))
            .await
    }

    #[tracing::instrument(name = "store.oldest_revision", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "oldest_revision", otel.kind = "client"))]
    async fn oldest_revision(&self) -> Result<Revision, StoreError> {
        self.with_connection(|connection| {
            let oldest: i64 = connection
                .prepare_cached("SELECT COALESCE(MIN(revision), 0) FROM events")?
                .query_row([], |row| row.get(0))?;
            Ok(revision_from_column(oldest)?)
        })
        .await
    }

    #[tracing::instrument(name = "store.prune_events", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "prune_events", otel.kind = "client"))]
    async fn prune_events(&self, before: Revision) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let n_deleted = tx
                .prepare_cached("DELETE FROM events WHERE revision < ?1")?
                .execute([revision_to_column(before)])?;
            Ok(n_deleted as u64)
        })
        .await
    }

    #[tracing::instrument(name = "store.append_audit", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "append_audit", otel.kind = "client"))]
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        self.write(move |tx| complete(shared::append_audit_entry(&SqliteTx(tx), &entry)))
            .await
    }

    #[tracing::instrument(name = "store.audit_page", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "audit_page", otel.kind = "client"))]
    async fn audit_page(
        &self,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let before = before_seq.map_or(i64::MAX, to_column);
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"
        );
        let params = vec![before.into(), limit_to_column(limit).into()];
        self.read_rows(sql, params, audit_from_row).await
    }

    #[tracing::instrument(name = "store.audit_after", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "audit_after", otel.kind = "client"))]
    async fn audit_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        let params = vec![to_column(after_seq).into(), limit_to_column(limit).into()];
        self.read_rows(sql, params, audit_from_row).await
    }

    #[tracing::instrument(name = "store.insert_client", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_client", otel.kind = "client"))]
    async fn insert_client(
        &self,
        client: ClientRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(move |tx| complete(shared::insert_client(&SqliteTx(tx), &client, &audit)))
            .await
    }

    #[tracing::instrument(name = "store.client", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "client", otel.kind = "client"))]
    async fn client(&self, client_id: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM api_clients WHERE client_id = ?1");
        let params = vec![client_id.to_string().into()];
        self.read_rows(sql, params, client_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.list_clients", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "list_clients", otel.kind = "client"))]
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let sql =
            format!("SELECT {CLIENT_COLUMNS} FROM api_clients ORDER BY created_at, client_id");
        self.read_rows(sql, Vec::new(), client_from_row).await
    }

    #[tracing::instrument(name = "store.disable_client", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "disable_client", otel.kind = "client"))]
    async fn disable_client(
        &self,
        client_id: &ClientId,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let client_id = client_id.clone();
        self.write(move |tx| {
            complete(shared::disable_client(
                &SqliteTx(tx),
                &client_id,
                at,
                &audit,
            ))
        })
        .await
    }

    #[tracing::instrument(name = "store.meta", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "meta", otel.kind = "client"))]
    async fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_owned();
        self.with_connection(move |connection| complete(SqliteTx(connection).meta(&name)))
            .await
    }

    #[tracing::instrument(name = "store.put_meta_if_absent", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "put_meta_if_absent", otel.kind = "client"))]
    async fn put_meta_if_absent(&self, name: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let name = name.to_owned();
        self.write(move |tx| complete(shared::put_meta_if_absent(&SqliteTx(tx), &name, &value)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_is_migrated_and_empty() {
        let store = SqliteStore::open_in_memory().unwrap();
        assert_eq!(store.latest_revision().await.unwrap(), Revision(0));
        assert_eq!(
            store.key_set(KeySetName::Access).await.unwrap().generation,
            0
        );
        let version: i64 = store
            .with_connection(|connection| {
                Ok(connection.pragma_query_value(None, "user_version", |row| row.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(version, 9);
    }

    /// A span opened: name, target, level and fields.
    type Opened = (String, String, tracing::Level, Vec<(String, String)>);

    /// Records the spans opened.
    #[derive(Clone, Default)]
    struct SpanLog(Arc<Mutex<Vec<Opened>>>);

    impl tracing::field::Visit for FieldList<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    struct FieldList<'a>(&'a mut Vec<(String, String)>);

    impl tracing::Subscriber for SpanLog {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            let mut fields = Vec::new();
            span.record(&mut FieldList(&mut fields));
            let metadata = span.metadata();
            let mut log = self.0.lock().unwrap();
            log.push((
                metadata.name().to_owned(),
                metadata.target().to_owned(),
                *metadata.level(),
                fields,
            ));
            tracing::span::Id::from_u64(log.len() as u64)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[tokio::test]
    async fn every_call_opens_a_debug_span_naming_the_operation_and_no_argument() {
        let store = SqliteStore::open_in_memory().unwrap();
        let spans = SpanLog::default();
        let _guard = tracing::subscriber::set_default(spans.clone());
        // Another test's thread may have cached these callsites as disabled meanwhile.
        tracing::callsite::rebuild_interest_cache();
        let client_id = ClientId::new("client-whose-id-must-stay-out").unwrap();
        assert!(store.client(&client_id).await.unwrap().is_none());
        store.latest_revision().await.unwrap();
        let log = spans.0.lock().unwrap().clone();
        let opened: Vec<&str> = log.iter().map(|(name, ..)| name.as_str()).collect();
        assert_eq!(
            opened,
            ["store.client", "store.latest_revision"],
            "spans: {log:?}"
        );
        for (name, target, level, fields) in &log {
            assert_eq!(target, SPAN_TARGET);
            assert_eq!(*level, tracing::Level::DEBUG);
            let operation = name.strip_prefix("store.").unwrap();
            let expected = [
                ("db.system", "\"sqlite\""),
                ("db.operation.name", &format!("{operation:?}")),
                ("otel.kind", "\"client\""),
            ];
            let fields: Vec<(&str, &str)> = fields
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str()))
                .collect();
            assert_eq!(fields, expected, "{name}");
        }
    }

    #[tokio::test]
    async fn reopening_a_file_does_not_migrate_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.db");
        let first = SqliteStore::open(&path).unwrap();
        first.put_meta_if_absent("k", b"v".to_vec()).await.unwrap();
        drop(first);
        let second = SqliteStore::open(&path).unwrap();
        assert_eq!(second.meta("k").await.unwrap(), Some(b"v".to_vec()));
    }
}
