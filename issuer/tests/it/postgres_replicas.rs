//! Several issuer replicas on one PostgreSQL: LISTEN/NOTIFY fan-out of stream events and
//! exactly-once scheduled rotation. Runs when the test database answers
//! ([`crate::test_database`]); fails (never skips) when TESSERA_REQUIRE_POSTGRES=1 and
//! it does not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_common::keys::KeySetName;
use tessera_common::{Clock, ManualClock, SystemClock, UnixMillis};
use tessera_issuer::config::{IssuerConfig, KekSource, StoreConfig};
use tessera_issuer::store::postgres::PostgresOptions;
use tessera_proto::v1 as pb;
use tessera_proto::v1::trust_bundle_update::Kind;

use crate::assert_eventually;
use crate::harness::{TestIssuer, issue_request};
use crate::test_database::database_url;

/// Creates a fresh schema and returns its name.
pub async fn fresh_schema(url: &str) -> String {
    let name = format!("tessera_it_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("create schema");
    name
}

/// Two replica configs sharing one schema and one KEK.
pub fn replica_configs(
    url: &str,
    schema: &str,
    kek_dir: &std::path::Path,
) -> Vec<(IssuerConfig, tempfile::TempDir)> {
    let kek_path = kek_dir.join("kek");
    tessera_issuer::kek::Kek::load_or_create(&kek_path).expect("kek");
    (0..2)
        .map(|_| {
            let data_dir = tempfile::tempdir().expect("tempdir");
            let mut config = IssuerConfig::development(data_dir.path());
            config.store = StoreConfig::Postgres(PostgresOptions {
                url: url.to_owned(),
                pool_size: 4,
                ca_file: None,
                schema: Some(schema.to_owned()),
            });
            config.kek = KekSource::File(kek_path.clone());
            (config, data_dir)
        })
        .collect()
}

#[tokio::test]
async fn rotation_on_replica_a_reaches_a_subscriber_on_replica_b() {
    let Some(url) = database_url() else { return };
    let schema = fresh_schema(&url).await;
    let kek_dir = tempfile::tempdir().expect("tempdir");
    let mut configs = replica_configs(&url, &schema, kek_dir.path());
    let (config_b, dir_b) = configs.pop().expect("b");
    let (config_a, dir_a) = configs.pop().expect("a");
    let replica_a = TestIssuer::start_in(config_a, dir_a, Arc::new(SystemClock)).await;
    let replica_b = TestIssuer::start_in(config_b, dir_b, Arc::new(SystemClock)).await;

    let mut stream = replica_b
        .bundle()
        .await
        .watch_trust_bundle(replica_b.as_admin(pb::WatchTrustBundleRequest::default()))
        .await
        .expect("watch on B")
        .into_inner();
    let first = stream.message().await.expect("ok").expect("snapshot");
    assert!(matches!(first.kind, Some(Kind::Snapshot(_))));

    let started = Instant::now();
    let rotated = replica_a
        .keys()
        .await
        .rotate_keys(replica_a.as_admin(pb::RotateKeysRequest {
            key_set: "access".into(),
            reason: "cross-replica".into(),
            ..Default::default()
        }))
        .await
        .expect("rotate on A")
        .into_inner();
    let delivered = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let update = stream.message().await.expect("ok").expect("open");
            if let Some(Kind::Delta(delta)) = update.kind
                && delta.changes.iter().any(|change| {
                    matches!(&change.change, Some(pb::bundle_change::Change::KeyUpserted(key)) if key.kid == rotated.new_kid)
                })
            {
                return started.elapsed();
            }
        }
    })
    .await
    .expect("B's subscriber receives A's rotation within 2 s");
    eprintln!("cross-replica propagation: {delivered:?}");

    // B signs with the new key too, once it has reloaded.
    assert_eventually!(
        replica_b
            .tokens()
            .await
            .issue_access_token(replica_b.as_admin(issue_request("acme")))
            .await
            .map(|response| response.into_inner().kid == rotated.new_kid)
            .unwrap_or(false),
        Duration::from_secs(3),
        "replica B signs with the rotated key"
    );
    replica_a.stop().await;
    replica_b.stop().await;
}

#[tokio::test]
async fn concurrent_bootstrap_and_scheduled_rotation_on_two_replicas_happen_exactly_once() {
    let Some(url) = database_url() else { return };
    let schema = fresh_schema(&url).await;
    let kek_dir = tempfile::tempdir().expect("tempdir");
    let start = UnixMillis::from_secs(1_800_000_000);
    let clock = ManualClock::new(start);
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut configs = replica_configs(&url, &schema, kek_dir.path());
    let (config_b, dir_b) = configs.pop().expect("b");
    let (config_a, dir_a) = configs.pop().expect("a");
    let (replica_a, replica_b) = tokio::join!(
        TestIssuer::start_in(config_a, dir_a, shared.clone()),
        TestIssuer::start_in(config_b, dir_b, shared.clone())
    );
    let n_access_keys = || async {
        replica_a
            .app
            .keys
            .list(Some(KeySetName::Access))
            .await
            .expect("list")
            .len()
    };
    assert_eq!(
        n_access_keys().await,
        1,
        "concurrent bootstrap created one access key"
    );

    // One hour before the 90-day rotation is due, both schedulers run at once.
    clock.set(start.plus(Duration::from_secs(90 * 24 * 3600 - 3600)));
    for _ in 0..3 {
        let (a, b) = tokio::join!(
            replica_a.app.keys.run_scheduled(),
            replica_b.app.keys.run_scheduled()
        );
        a.expect("scheduler A");
        b.expect("scheduler B");
    }
    assert_eq!(n_access_keys().await, 2, "exactly one successor");
    let mut rotated_sets: Vec<String> = replica_a
        .app
        .store
        .audit_page(None, 1000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|record| record.entry.action == "key.rotate.scheduled")
        .map(|record| record.entry.target)
        .collect();
    rotated_sets.sort();
    // The webhook set (30 days) is late by then and rotates once too.
    assert_eq!(
        rotated_sets,
        ["access", "action", "webhook"],
        "one scheduled rotation per key set"
    );
    replica_a.stop().await;
    replica_b.stop().await;
}
