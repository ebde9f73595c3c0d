//! Graceful shutdown: with a trust-bundle stream open, SIGTERM ends the stream (it does
//! not hang) and the process exits 0 well within the grace period.

use std::time::{Duration, Instant};

use tessera_proto::v1::trust_bundle_update::Kind;

use crate::support::grpc::{BundleWatch, StreamEvent, runtime};
use crate::support::issuer::Issuer;

/// The longest a SIGTERMed issuer may take to end its streams and exit.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(15);

#[test]
fn sigterm_shuts_down_gracefully() {
    let root = tempfile::tempdir().unwrap();
    let mut issuer = Issuer::start(root.path());
    let runtime = runtime();
    let watch = BundleWatch::open(
        &runtime,
        issuer.grpc_addr,
        &issuer.admin_token(),
        "e2e-shutdown",
    )
    .unwrap_or_else(|status| panic!("WatchTrustBundle refused: {status:?}"));
    let (_, first) = watch
        .wait_for(Duration::from_secs(10), |_| true)
        .expect("a first message on the stream");
    assert!(
        matches!(first.kind, Some(Kind::Snapshot(_))),
        "the first message of a fresh subscription is a snapshot: {first:?}"
    );

    let signalled = Instant::now();
    issuer.sigterm();
    let ended = loop {
        let left = SHUTDOWN_LIMIT.saturating_sub(signalled.elapsed());
        match watch.next(left) {
            Some((_, StreamEvent::Update(_))) => continue,
            Some((at, StreamEvent::Ended(result))) => break (at, result),
            None => panic!(
                "the trust-bundle stream was still open {SHUTDOWN_LIMIT:?} after SIGTERM; log:\n{}",
                issuer.log()
            ),
        }
    };
    let (ended_at, result) = ended;
    assert!(
        result.is_ok(),
        "the stream should close cleanly (status OK) on shutdown, got {result:?}"
    );
    let status = issuer
        .wait_exit(SHUTDOWN_LIMIT.saturating_sub(signalled.elapsed()))
        .unwrap_or_else(|| {
            panic!(
                "the issuer did not exit within {SHUTDOWN_LIMIT:?} of SIGTERM; log:\n{}",
                issuer.log()
            )
        });
    assert!(status.success(), "exit status after SIGTERM: {status}");
    eprintln!(
        "stream ended {:?} and process exited {:?} after SIGTERM",
        ended_at.duration_since(signalled),
        signalled.elapsed()
    );
}
