//! Fixtures of the store conformance suite: a store per test (a temp SQLite file, or a
//! fresh PostgreSQL schema dropped afterwards), raw SQL access behind the store's back,
//! and sample records.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, ValidationPolicy};
use tessera_common::ids::{ClientId, KeyId};
use tessera_common::jwk::Jwk;
use tessera_common::keys::{Algorithm, KeySchedule, KeySetName};
use tessera_common::revocation::{RevocationEntry, RevocationKind};
use tessera_issuer::audit::{Actor, AuditAction, GENESIS_HASH, chain_hash};
use tessera_issuer::store::postgres::{PostgresOptions, PostgresStore};
use tessera_issuer::store::sqlite::SqliteStore;
use tessera_issuer::store::{
    ApiKeyStore, AuditEntry, AuditRecord, ClientRecord, KeyCommit, KeyWrite, OneTimeTokenStore,
    OpaqueTokenStore, Revocation, RevocationEffect, SessionStore, Store, StoredKey, WrappedKey,
};
use tokio::sync::Notify;

/// One test's store and the database behind it.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    /// The same store, seen through its session aggregate.
    pub sessions: Arc<dyn SessionStore>,
    /// The same store, seen through its API-key aggregate.
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// The same store, seen through its service-identity and opaque-token aggregate.
    pub opaque_tokens: Arc<dyn OpaqueTokenStore>,
    target: Target,
}

enum Target {
    Sqlite { path: PathBuf, _dir: TempDir },
    Postgres { schema: SchemaGuard },
}

/// Returns a fixture on a fresh SQLite file in a temp directory.
pub async fn sqlite() -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tessera.db");
    let store = Arc::new(SqliteStore::open(&path).expect("open sqlite store"));
    Some(Fixture {
        store: Arc::clone(&store) as Arc<dyn Store>,
        sessions: Arc::clone(&store) as Arc<dyn SessionStore>,
        api_keys: Arc::clone(&store) as Arc<dyn ApiKeyStore>,
        opaque_tokens: store,
        target: Target::Sqlite { path, _dir: dir },
    })
}

/// Returns a fixture on a fresh schema of the test database, or `None` (after saying
/// so) when no database answers. Panics when a database is required but missing.
pub async fn postgres() -> Option<Fixture> {
    let url = postgres_url()?;
    let schema = fresh_schema(&url).await;
    let store = Arc::new(connect_postgres(&schema).await);
    Some(Fixture {
        store: Arc::clone(&store) as Arc<dyn Store>,
        sessions: Arc::clone(&store) as Arc<dyn SessionStore>,
        api_keys: Arc::clone(&store) as Arc<dyn ApiKeyStore>,
        opaque_tokens: store,
        target: Target::Postgres { schema },
    })
}

/// Returns the test database URL; `None` (after printing the skip line) when it does not
/// answer and is not required ([`crate::test_database`]).
pub fn postgres_url() -> Option<String> {
    crate::test_database::database_url()
}

/// Connects a store (a "replica") to the schema `schema` names.
pub async fn connect_postgres(schema: &SchemaGuard) -> PostgresStore {
    PostgresStore::connect(&schema.options())
        .await
        .expect("connect postgres store")
}

impl Fixture {
    /// Returns the backend's name.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Opens a second store on the same database: another connection to the SQLite
    /// file, or another replica on the PostgreSQL schema.
    pub async fn open_replica(&self) -> Arc<dyn Store> {
        match &self.target {
            Target::Sqlite { path, .. } => {
                Arc::new(SqliteStore::open(path).expect("reopen sqlite store"))
            }
            Target::Postgres { schema } => Arc::new(connect_postgres(schema).await),
        }
    }

    /// Opens a second store on the same database, like [`Fixture::open_replica`], and
    /// returns it through both of its traits.
    pub async fn open_session_replica(&self) -> (Arc<dyn Store>, Arc<dyn SessionStore>) {
        match &self.target {
            Target::Sqlite { path, .. } => {
                let store = Arc::new(SqliteStore::open(path).expect("reopen sqlite store"));
                (Arc::clone(&store) as Arc<dyn Store>, store)
            }
            Target::Postgres { schema } => {
                let store = Arc::new(connect_postgres(schema).await);
                (Arc::clone(&store) as Arc<dyn Store>, store)
            }
        }
    }

    /// Opens a second store on the same database, like [`Fixture::open_replica`], seen
    /// through its API-key aggregate.
    pub async fn open_api_key_replica(&self) -> Arc<dyn ApiKeyStore> {
        match &self.target {
            Target::Sqlite { path, .. } => {
                Arc::new(SqliteStore::open(path).expect("reopen sqlite store"))
            }
            Target::Postgres { schema } => Arc::new(connect_postgres(schema).await),
        }
    }

    /// Opens a second store on the same database, like [`Fixture::open_replica`], seen
    /// through its opaque-token aggregate.
    pub async fn open_opaque_token_replica(&self) -> Arc<dyn OpaqueTokenStore> {
        match &self.target {
            Target::Sqlite { path, .. } => {
                Arc::new(SqliteStore::open(path).expect("reopen sqlite store"))
            }
            Target::Postgres { schema } => Arc::new(connect_postgres(schema).await),
        }
    }

    /// Opens a store on the same database, like [`Fixture::open_replica`], seen through
    /// its single-use token aggregate.
    pub async fn open_one_time_token_replica(&self) -> Arc<dyn OneTimeTokenStore> {
        match &self.target {
            Target::Sqlite { path, .. } => {
                Arc::new(SqliteStore::open(path).expect("reopen sqlite store"))
            }
            Target::Postgres { schema } => Arc::new(connect_postgres(schema).await),
        }
    }

    /// Opens a store on the same database, like [`Fixture::open_replica`], seen through
    /// its challenge aggregate (challenges, provider states, one-time rate windows).
    pub async fn open_challenge_replica(
        &self,
    ) -> Arc<dyn tessera_issuer::store::challenges::ChallengeStore> {
        match &self.target {
            Target::Sqlite { path, .. } => {
                Arc::new(SqliteStore::open(path).expect("reopen sqlite store"))
            }
            Target::Postgres { schema } => Arc::new(connect_postgres(schema).await),
        }
    }

    /// Opens a store on the same database, like [`Fixture::open_replica`], seen through
    /// its secrets-inventory aggregate.
    pub async fn open_secret_replica(&self) -> Arc<dyn tessera_issuer::store::SecretStore> {
        match &self.target {
            Target::Sqlite { path, .. } => {
                Arc::new(SqliteStore::open(path).expect("reopen sqlite store"))
            }
            Target::Postgres { schema } => Arc::new(connect_postgres(schema).await),
        }
    }

    /// Returns the PostgreSQL schema under test, if this is the PostgreSQL fixture.
    pub fn postgres_schema(&self) -> Option<&SchemaGuard> {
        match &self.target {
            Target::Postgres { schema } => Some(schema),
            Target::Sqlite { .. } => None,
        }
    }

    /// Executes `sql` on a separate connection, behind the store's back; returns the
    /// number of rows changed or the database's error message.
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, String> {
        match &self.target {
            Target::Sqlite { path, .. } => {
                let path = path.clone();
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || {
                    let connection = rusqlite::Connection::open(&path).expect("open sqlite file");
                    connection
                        .busy_timeout(Duration::from_secs(5))
                        .expect("busy timeout");
                    connection
                        .execute(&sql, [])
                        .map(|n_rows| n_rows as u64)
                        .map_err(|error| error.to_string())
                })
                .await
                .expect("raw sqlite task")
            }
            Target::Postgres { schema } => {
                let client = schema.raw_client().await;
                client.execute(sql, &[]).await.map_err(|error| {
                    error
                        .as_db_error()
                        .map_or_else(|| error.to_string(), |db| db.message().to_owned())
                })
            }
        }
    }
}

/// A fresh schema of the test database, dropped (with everything in it) on drop.
pub struct SchemaGuard {
    url: String,
    name: String,
}

/// Creates a schema named `tessera_test_<uuid>`.
pub async fn fresh_schema(url: &str) -> SchemaGuard {
    let name = format!("tessera_test_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("create test schema");
    SchemaGuard {
        url: url.to_owned(),
        name,
    }
}

impl SchemaGuard {
    /// Returns store options pointing at this schema.
    pub fn options(&self) -> PostgresOptions {
        PostgresOptions {
            pool_size: 4,
            schema: Some(self.name.clone()),
            ..PostgresOptions::new(self.url.clone())
        }
    }

    /// Returns a plain client whose `search_path` is this schema.
    pub async fn raw_client(&self) -> tokio_postgres::Client {
        let mut config: tokio_postgres::Config = self.url.parse().expect("test database url");
        config.options(format!("-csearch_path={}", self.name));
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("raw connection to the test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        // Drop cannot await, and may run while the test's runtime unwinds: the schema is
        // dropped from a thread with a runtime of its own.
        let url = self.url.clone();
        let sql = format!(
            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        );
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|error| error.to_string())?;
                tokio::spawn(connection);
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|error| error.to_string())
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test schema {}: {error}", self.name),
            Err(_panic) => eprintln!("could not drop test schema {}: cleanup panicked", self.name),
        }
    }
}

/// A CA certificate (P-256, valid until 2126) that signed nothing the test database
/// presents; its key was discarded.
pub const UNRELATED_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIIBijCCATGgAwIBAgIUDGf7NjmEzoH6WlQDtn/yORLAkiYwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPdGVzc2VyYS10ZXN0LWNhMCAXDTI2MTEyMzExNDczOVoYDzIx
MjYxMDMwMTE0NzM5WjAaMRgwFgYDVQQDDA90ZXNzZXJhLXRlc3QtY2EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAARXjc5k03jArf7hns+epK7ipkRSchhXsyw+XJ50
Q8WBufC2ZBzXF4zRlVogN+ICRqSFXidFtFgbR3cGQb/t7S+Xo1MwUTAdBgNVHQ4E
FgQUWJf3Ux0ddUX10OElWmYDyRYWNMowHwYDVR0jBBgwFoAUWJf3Ux0ddUX10OEl
WmYDyRYWNMowDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiAkqkZA
ZggOs76xekO3cteiIau+N5U0qMONm4csOv7gFAIgMcc8pDnwegCwaJjAtGeO6L8H
vIBP5Tbu4JCFGLYob9Q=
-----END CERTIFICATE-----
";

// === sample records ===

/// Returns a public JWK for `kid`.
pub fn jwk(kid: &str) -> Jwk {
    Jwk {
        kty: "EC".into(),
        kid: kid.into(),
        alg: "ES256".into(),
        use_: "sig".into(),
        n: None,
        e: None,
        crv: Some("P-256".into()),
        x: Some(format!("x-of-{kid}")),
        y: Some(format!("y-of-{kid}")),
    }
}

/// Returns a key of `key_set` created at `created_at` ms with every optional schedule
/// field set and a wrapped private key.
pub fn full_key(kid: &str, key_set: KeySetName, created_at: i64) -> StoredKey {
    StoredKey {
        schedule: KeySchedule {
            kid: KeyId::new(kid).expect("kid"),
            key_set,
            algorithm: Algorithm::Es256,
            created_at: UnixMillis(created_at),
            activates_at: UnixMillis(created_at + 3_600_000),
            deactivates_at: Some(UnixMillis(created_at + 7_200_000)),
            verify_until: Some(UnixMillis(created_at + 9_000_000)),
            revoked_at: Some(UnixMillis(created_at + 8_000_000)),
            public_jwk: jwk(kid),
        },
        wrapped_private: Some(WrappedKey {
            kek_version: tessera_issuer::kek::KekVersion::new(2).unwrap(),
            sealed: format!("sealed:{kid}").into_bytes(),
        }),
    }
}

/// Returns a pending key with no optional schedule field and no private key.
pub fn bare_key(kid: &str, key_set: KeySetName, created_at: i64) -> StoredKey {
    StoredKey {
        schedule: KeySchedule {
            kid: KeyId::new(kid).expect("kid"),
            key_set,
            algorithm: Algorithm::Rs256,
            created_at: UnixMillis(created_at),
            activates_at: UnixMillis(created_at),
            deactivates_at: None,
            verify_until: None,
            revoked_at: None,
            public_jwk: jwk(kid),
        },
        wrapped_private: None,
    }
}

/// Returns a bundle change tagged with `tag` (carried as the policy's issuer).
pub fn tagged_change(tag: &str) -> BundleChange {
    BundleChange::PolicyChanged {
        policy: ValidationPolicy {
            issuer: tag.to_owned(),
            audiences: vec!["api".into()],
            leeway_seconds: 30,
            max_token_ttl_seconds: 900,
            token_lifetimes: Default::default(),
        },
    }
}

/// Returns the tag of a change made by [`tagged_change`].
pub fn tag_of(change: &BundleChange) -> &str {
    match change {
        BundleChange::PolicyChanged { policy } => &policy.issuer,
        other => panic!("not a tagged change: {other:?}"),
    }
}

/// Returns a revocation change for `value`.
pub fn revocation_change(value: &str, at: i64) -> BundleChange {
    BundleChange::RevocationAdded {
        entry: RevocationEntry {
            kind: RevocationKind::Session,
            value: value.to_owned(),
            tenant_id: Some("acme".into()),
            revoked_at: UnixMillis(at),
            drop_after: UnixMillis(at + 960_000),
        },
    }
}

/// Returns an audit entry whose fields all carry `n`.
pub fn audit_entry(n: u64) -> AuditEntry {
    let client_id = ClientId::new(format!("client-{n}")).expect("client id");
    Actor::client(client_id, format!("req-{n}"), format!("reason {n}")).entry(
        UnixMillis(1_700_000_000_000 + n as i64),
        AuditAction::KeyRotate,
        format!("access/{n}"),
    )
}

/// Returns a revocation of `entries` ending the sessions `effects` select.
pub fn revocation(
    entries: Vec<RevocationEntry>,
    effects: Vec<RevocationEffect>,
    at: UnixMillis,
    audit: Vec<AuditEntry>,
) -> Revocation {
    Revocation {
        entries,
        effects,
        audit,
        at,
    }
}

/// Returns an API client created at `created_at` ms.
pub fn client(id: &str, created_at: i64) -> ClientRecord {
    ClientRecord {
        client_id: ClientId::new(id).expect("client id"),
        name: format!("{id} service"),
        scopes: vec!["tokens:issue".into(), "keys:read".into()],
        tenants: vec!["acme".into(), "globex".into()],
        secret_hash: vec![0xA5; 32],
        credential_kind: tessera_common::credential::CredentialKind::IssuerCaller,
        pepper_version: tessera_common::credential::PepperVersion::new(3).unwrap(),
        created_at: UnixMillis(created_at),
        disabled_at: None,
    }
}

/// Returns a commit to `key_set` expecting `expected_generation`.
pub fn commit(
    key_set: KeySetName,
    expected_generation: i64,
    writes: Vec<KeyWrite>,
    changes: Vec<BundleChange>,
    audit: Vec<AuditEntry>,
) -> KeyCommit {
    KeyCommit {
        key_set,
        expected_generation,
        writes,
        changes,
        audit,
        at: UnixMillis(1_700_000_000_000),
    }
}

/// Asserts `records` are consecutive links of the hash chain from seq 1: each
/// `prev_hash` is the previous `hash`, and each `hash` recomputes.
pub fn assert_chain(records: &[AuditRecord]) {
    let mut prev_hash = GENESIS_HASH;
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.seq, index as u64 + 1, "audit seqs must run 1, 2, 3…");
        assert_eq!(record.prev_hash, prev_hash, "seq {} prev_hash", record.seq);
        assert_eq!(
            record.hash,
            chain_hash(&prev_hash, record.seq, &record.entry),
            "seq {} hash",
            record.seq
        );
        prev_hash = record.hash;
    }
}

/// Returns whether `signal` is notified within `patience`.
pub async fn notified_within(signal: &Notify, patience: Duration) -> bool {
    tokio::time::timeout(patience, signal.notified())
        .await
        .is_ok()
}

/// Consumes a pending wake-up of `signal`, if any arrives within `patience`.
pub async fn drain(signal: &Notify, patience: Duration) {
    let _ = notified_within(signal, patience).await;
}
