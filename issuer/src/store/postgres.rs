//! The PostgreSQL backend: the production store, shared by any number of issuer
//! replicas. Event appends are serialized by an advisory lock and NOTIFYed; every
//! replica LISTENs and pokes its change signal, so a change made on one replica reaches
//! the subscribers of all of them.

mod api_keys;
mod challenges;
mod error;
mod listener;
mod migrations;
mod one_time_tokens;
mod opaque_tokens;
mod options;
mod queries;
mod rate_limits;
mod rows;
mod secrets;
mod sessions;
mod tls;
mod tx;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction};
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, BundleEvent, Revision};
use tessera_common::ids::ClientId;
use tessera_common::keys::KeySetName;
use tokio::sync::Notify;
use tokio_postgres::{IsolationLevel, NoTls, Row};

pub use self::options::PostgresOptions;

use self::error::PgFailure;
use self::options::check_schema_name;
use self::queries::{Params, query, query_one, query_opt};
use self::rows::{
    AUDIT_COLUMNS, CLIENT_COLUMNS, KEY_COLUMNS, audit_from_row, client_from_row, event_from_row,
    key_from_row, limit_to_column, revision_from_column, to_column,
};
use self::tls::Tls;
use self::tx::PgTx;
use crate::store::shared::{self, SPAN_TARGET, at_most_one};
use crate::store::{
    AuditEntry, AuditRecord, ClientRecord, KeyCommit, KeySetState, Store, StoreError,
};

/// `db.system` of this backend's spans (OpenTelemetry's name for it).
const DB_SYSTEM: &str = "postgresql";

/// How long opening one connection may take, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a free pooled connection.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a transaction that hit a serialization failure or a deadlock runs.
const MAX_TX_ATTEMPTS: u32 = 3;

/// The PostgreSQL store: a connection pool, the change signal and the LISTEN task
/// (stopped when the store is dropped). Share it behind an `Arc<dyn Store>`.
pub struct PostgresStore {
    pool: Pool,
    change_signal: Arc<Notify>,
    schema: Option<String>,
    _listener: listener::ListenerTask,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .finish_non_exhaustive()
    }
}

/// A transaction body, as [`PostgresStore::write`] runs it.
type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, PgFailure>> + Send + 't>>;

// === impl PostgresStore ===

impl PostgresStore {
    /// Builds the pool (TLS through rustls when the URL says `sslmode=require` or
    /// `ca_file` is set, plain otherwise), applies the embedded migrations under an
    /// advisory lock, and starts listening for other replicas' events.
    pub async fn connect(options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|error| StoreError::Unavailable(format!("invalid database url: {error}")))?;
        if options.pool_size == 0 {
            return Err(StoreError::Unavailable(
                "database pool_size must be at least 1".to_owned(),
            ));
        }
        if let Some(schema) = &options.schema {
            check_schema_name(schema)?;
            let search_path = format!("-csearch_path={schema}");
            let connection_options = match config.get_options() {
                Some(existing) if !existing.is_empty() => format!("{existing} {search_path}"),
                _ => search_path,
            };
            config.options(connection_options);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let tls = tls::configure(&mut config, options.ca_file.as_deref())?;
        let pool = build_pool(config.clone(), &tls, options.pool_size)?;
        migrations::apply(&pool).await?;
        let change_signal = Arc::new(Notify::new());
        let listener = listener::start(config, tls.clone(), Arc::clone(&change_signal)).await?;
        tracing::info!(
            schema = options.schema.as_deref().unwrap_or("(default)"),
            tls = matches!(tls, Tls::Rustls(_)),
            pool_size = options.pool_size,
            "postgres store connected"
        );
        Ok(PostgresStore {
            pool,
            change_signal,
            schema: options.schema.clone(),
            _listener: listener,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|error| PgFailure::from(error).into_store())
    }

    /// Returns every row `sql` selects with `params`, read by `from_row`.
    async fn read_rows<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        from_row: fn(&Row) -> Result<T, PgFailure>,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.client().await?;
        let read = async {
            query(&client, sql, params)
                .await?
                .iter()
                .map(from_row)
                .collect::<Result<Vec<_>, _>>()
        };
        read.await.map_err(PgFailure::into_store)
    }

    /// Runs `body` in one transaction, committed when it returns `Ok` and rolled back
    /// otherwise; a serialization failure or deadlock runs it again, up to
    /// [`MAX_TX_ATTEMPTS`] times in all, then becomes [`StoreError::Conflict`]. Every
    /// multi-statement write goes through here.
    async fn write<T, F>(&self, mut body: F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'t> FnMut(&'t Transaction<'t>) -> TxFuture<'t, T> + Send,
    {
        let mut attempt = 1;
        loop {
            match self.write_once(&mut body).await {
                Err(failure) if failure.is_retryable() && attempt < MAX_TX_ATTEMPTS => {
                    tracing::debug!(attempt, "transaction hit a serialization failure; retrying");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                    attempt += 1;
                }
                result => return result.map_err(PgFailure::into_store),
            }
        }
    }

    async fn write_once<T, F>(&self, body: &mut F) -> Result<T, PgFailure>
    where
        F: for<'t> FnMut(&'t Transaction<'t>) -> TxFuture<'t, T>,
    {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let value = body(&tx).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// Runs `body` as [`Self::write`] does and, when it `appends_events`, pokes the change
    /// signal once it has committed.
    async fn write_publishing<T, F>(&self, appends_events: bool, body: F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'t> FnMut(&'t Transaction<'t>) -> TxFuture<'t, T> + Send,
    {
        let value = self.write(body).await?;
        shared::signal_if(&self.change_signal, appends_events);
        Ok(value)
    }
}

fn build_pool(
    config: tokio_postgres::Config,
    tls: &Tls,
    pool_size: usize,
) -> Result<Pool, StoreError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Tls::Plain => Manager::from_config(config, NoTls, manager_config),
        Tls::Rustls(connector) => Manager::from_config(config, connector.clone(), manager_config),
    };
    Pool::builder(manager)
        .max_size(pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|error| StoreError::Unavailable(format!("database pool: {error}")))
}

// === impl Store for PostgresStore ===

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn change_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.change_signal)
    }

    #[tracing::instrument(name = "store.key_set", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "key_set", otel.kind = "client"))]
    async fn key_set(&self, key_set: KeySetName) -> Result<KeySetState, StoreError> {
        let mut client = self.client().await?;
        let read = async {
            // One snapshot for both reads, so the generation matches the keys.
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let generation = query_opt(
                &tx,
                "SELECT generation FROM key_sets WHERE name = $1",
                &[&key_set.as_str()],
            )
            .await?
            .map(|row| row.try_get::<_, i64>(0))
            .transpose()?;
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM signing_keys WHERE key_set = $1 ORDER BY created_at, kid"
            );
            let keys = query(&tx, &sql, &[&key_set.as_str()])
                .await?
                .iter()
                .map(key_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit().await?;
            Ok::<_, PgFailure>(KeySetState {
                generation: generation.unwrap_or(0),
                keys,
            })
        };
        read.await.map_err(PgFailure::into_store)
    }

    #[tracing::instrument(name = "store.commit_keys", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "commit_keys", otel.kind = "client"))]
    async fn commit_keys(&self, commit: KeyCommit) -> Result<Revision, StoreError> {
        self.write_publishing(commit.appends_events(), |tx| {
            let commit = commit.clone();
            Box::pin(async move { shared::commit_keys(&PgTx(tx), &commit).await })
        })
        .await
    }

    #[tracing::instrument(name = "store.append_events", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "append_events", otel.kind = "client"))]
    async fn append_events(
        &self,
        changes: Vec<BundleChange>,
        at: UnixMillis,
    ) -> Result<Revision, StoreError> {
        self.write_publishing(!changes.is_empty(), |tx| {
            let changes = changes.clone();
            Box::pin(async move { shared::append_events(&PgTx(tx), &changes, at).await })
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
        let sql = "SELECT revision, at, payload FROM events WHERE revision > $1 \
                   ORDER BY revision LIMIT $2";
        let params: Params = &[&to_column(after.0), &limit_to_column(limit)];
        self.read_rows(sql, params, event_from_row).await
    }

    #[tracing::instrument(name = "store.latest_revision", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "latest_revision", otel.kind = "client"))]
    async fn latest_revision(&self) -> Result<Revision, StoreError> {
        let client = self.client().await?;
        queries::latest_revision(&client)
            .await
            .map_err(PgFailure::into_store)
    }

    #[tracing::instrument(name = "store.oldest_revision", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "oldest_revision", otel.kind = "client"))]
    async fn oldest_revision(&self) -> Result<Revision, StoreError> {
        let client = self.client().await?;
        let read = async {
            let row = query_one(
                &client,
                "SELECT COALESCE(MIN(revision), 0) FROM events",
                &[],
            )
            .await?;
            Ok::<_, PgFailure>(revision_from_column(row.try_get(0)?)?)
        };
        read.await.map_err(PgFailure::into_store)
    }

    #[tracing::instrument(name = "store.prune_events", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "prune_events", otel.kind = "client"))]
    async fn prune_events(&self, before: Revision) -> Result<u64, StoreError> {
        self.write(|tx| Box::pin(queries::prune_events(tx, before)))
            .await
    }

    #[tracing::instrument(name = "store.append_audit", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "append_audit", otel.kind = "client"))]
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        self.write(|tx| {
            let entry = entry.clone();
            Box::pin(async move { shared::append_audit_entry(&PgTx(tx), &entry).await })
        })
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
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
        );
        let params: Params = &[&before, &limit_to_column(limit)];
        self.read_rows(&sql, params, audit_from_row).await
    }

    #[tracing::instrument(name = "store.audit_after", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "audit_after", otel.kind = "client"))]
    async fn audit_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
        let params: Params = &[&to_column(after_seq), &limit_to_column(limit)];
        self.read_rows(&sql, params, audit_from_row).await
    }

    #[tracing::instrument(name = "store.insert_client", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "insert_client", otel.kind = "client"))]
    async fn insert_client(
        &self,
        client: ClientRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let (client, audit) = (client.clone(), audit.clone());
            Box::pin(async move { shared::insert_client(&PgTx(tx), &client, &audit).await })
        })
        .await
    }

    #[tracing::instrument(name = "store.client", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "client", otel.kind = "client"))]
    async fn client(&self, client_id: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM api_clients WHERE client_id = $1");
        self.read_rows(&sql, &[&client_id.as_str()], client_from_row)
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.list_clients", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "list_clients", otel.kind = "client"))]
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let sql =
            format!("SELECT {CLIENT_COLUMNS} FROM api_clients ORDER BY created_at, client_id");
        self.read_rows(&sql, &[], client_from_row).await
    }

    #[tracing::instrument(name = "store.disable_client", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "disable_client", otel.kind = "client"))]
    async fn disable_client(
        &self,
        client_id: &ClientId,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let (client_id, audit) = (client_id.clone(), audit.clone());
            Box::pin(async move { shared::disable_client(&PgTx(tx), &client_id, at, &audit).await })
        })
        .await
    }

    #[tracing::instrument(name = "store.meta", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "meta", otel.kind = "client"))]
    async fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = "SELECT value FROM meta WHERE name = $1";
        self.read_rows(sql, &[&name], |row| Ok(row.try_get(0)?))
            .await
            .map(at_most_one)
    }

    #[tracing::instrument(name = "store.put_meta_if_absent", target = SPAN_TARGET, level = "debug", skip_all,
        fields(db.system = DB_SYSTEM, db.operation.name = "put_meta_if_absent", otel.kind = "client"))]
    async fn put_meta_if_absent(&self, name: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        self.write(|tx| {
            let (name, value) = (name.to_owned(), value.clone());
            Box::pin(async move { shared::put_meta_if_absent(&PgTx(tx), &name, &value).await })
        })
        .await
    }
}
