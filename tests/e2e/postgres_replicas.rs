//! Two issuer replicas on one PostgreSQL database: a rotation made through replica A
//! reaches a WatchTrustBundle subscriber of replica B as a delta within 2 s (LISTEN/NOTIFY
//! fan-out), and B signs with the new key shortly after. Runs when the test database
//! answers (`crate::support::test_database`); `TESSERA_REQUIRE_POSTGRES=1` makes its
//! absence a failure.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tessera_proto::v1::bundle_change::Change;
use tessera_proto::v1::trust_bundle_update::Kind;
use tokio_postgres::NoTls;

use crate::support::grpc::{BundleWatch, runtime};
use crate::support::issuer::Issuer;
use crate::support::test_database::database_url;
use crate::support::wait::poll_until;

/// Longest time from a committed rotation to B's subscriber seeing it.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(2);
/// Longest time after the rotation until B signs with the new key.
const SIGNER_RELOAD_LIMIT: Duration = Duration::from_secs(2);

#[test]
fn postgres_two_replicas_share_keys_and_stream() {
    let Some(server_url) = database_url() else {
        return;
    };
    let database = ScratchDatabase::create(&server_url);
    let root = tempfile::tempdir().unwrap();

    // One KEK for both replicas, as in production.
    let kek_file = root.path().join("shared.kek");
    let mut kek = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut kek).unwrap();
    std::fs::write(&kek_file, STANDARD.encode(kek)).unwrap();

    let replica = |name: &str, credential: Option<&std::path::Path>| {
        let mut builder = Issuer::builder(root.path(), name).args([
            "--database-url",
            database.url.as_str(),
            "--kek-file",
            kek_file.to_str().unwrap(),
        ]);
        if let Some(path) = credential {
            builder = builder.credential_file(path);
        }
        builder.start()
    };
    let a = replica("replica-a", None);
    let admin_file = a.data_dir.join("admin.token");
    let b = replica("replica-b", Some(&admin_file));
    let admin = a.admin_token();

    let kid_on = |issuer: &Issuer| -> String {
        issuer.cli_json(&["token", "issue", "--subject", "alice", "--tenant", "acme"])["kid"]
            .as_str()
            .expect("kid")
            .to_owned()
    };
    let before = kid_on(&b);
    assert_eq!(
        before,
        kid_on(&a),
        "both replicas must sign with the same key"
    );

    let runtime = runtime();
    let watch = BundleWatch::open(&runtime, b.grpc_addr, &admin, "e2e-replica-b")
        .unwrap_or_else(|status| panic!("WatchTrustBundle on B refused: {status:?}"));
    let (_, snapshot) = watch
        .wait_for(Duration::from_secs(10), |update| {
            matches!(update.kind, Some(Kind::Snapshot(_)))
        })
        .expect("B's stream starts with a snapshot");

    let rotate_started = Instant::now();
    let rotated = a.cli_json(&["keys", "rotate", "--reason", "replica test"]);
    let rotated_at = Instant::now();
    let new_kid = rotated["new_kid"].as_str().expect("new_kid").to_owned();
    assert_eq!(rotated["previous_kid"], before.as_str(), "{rotated}");

    let (seen_at, delta) = watch
        .wait_for(PROPAGATION_LIMIT, |update| {
            update.revision > snapshot.revision
                && match &update.kind {
                    Some(Kind::Delta(delta)) => delta.changes.iter().any(|change| {
                        matches!(&change.change, Some(Change::KeyUpserted(key)) if key.kid == new_kid)
                    }),
                    _ => false,
                }
        })
        .unwrap_or_else(|seen| {
            panic!(
                "B's subscriber got no delta with {new_kid} within {PROPAGATION_LIMIT:?} of \
                 the rotation on A: {seen}\nB's log:\n{}",
                b.log()
            )
        });
    eprintln!(
        "delta rev {} reached B's subscriber {:?} after `keys rotate` on A started (the \
         command took {:?})",
        delta.revision,
        seen_at.saturating_duration_since(rotate_started),
        rotated_at.duration_since(rotate_started)
    );

    let signed_by_new = poll_until(SIGNER_RELOAD_LIMIT, Duration::from_millis(100), || {
        let kid = kid_on(&b);
        (kid == new_kid).then_some(kid)
    });
    assert!(
        signed_by_new.is_some(),
        "B still signs with {} {SIGNER_RELOAD_LIMIT:?} after the rotation on A (expected \
         {new_kid}); B's log:\n{}",
        kid_on(&b),
        b.log()
    );
    assert_eq!(kid_on(&a), new_kid);
}

/// A fresh database `tessera_e2e_<random>` on the test server, dropped (with its
/// connections) when this guard goes, after the issuers that use it.
struct ScratchDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    fn create(server_url: &str) -> ScratchDatabase {
        let name = format!("tessera_e2e_{}", uuid::Uuid::new_v4().simple());
        execute(server_url, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
        ScratchDatabase {
            server_url: server_url.to_owned(),
            url: with_database(server_url, &name),
            name,
        }
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let drop_sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(error) = execute(&self.server_url, &drop_sql) {
            eprintln!("could not drop {}: {error}", self.name);
        }
    }
}

/// Runs one statement on its own connection and runtime (also usable from `Drop`).
fn execute(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = client.batch_execute(sql).await;
        drop(client);
        let _ = driver.await;
        result
    })
}

/// `url` with its database name replaced by `database` (query string kept).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

#[test]
fn scratch_database_url_keeps_server_and_options_no_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/test?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgresql://u@h", "x"), "postgresql://u@h/x");
}
