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

use crate::support::grpc::{BundleWatch, runtime};
use crate::support::issuer::Issuer;
use crate::support::scratch_database::ScratchDatabase;
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
    let database = ScratchDatabase::create(&server_url, "tessera_e2e");
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
