//! Declared clients (`--bootstrap-clients`) over real sockets: on first start the issuer
//! writes each credential, mode 0600, before it serves, and each works with exactly its
//! declared scopes and tenants; a restart keeps a working credential byte for byte; a
//! credential whose client was disabled is replaced on the next start by a working one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_common::SystemClock;
use tessera_issuer::auth::Scope;
use tessera_issuer::config::{BootstrapClient, IssuerConfig};
use tessera_proto::v1 as pb;
use tonic::Code;

use crate::harness::{TestIssuer, issue_request, with_credential};

/// An issuer whose data and credential files live under `root` (kept across restarts).
async fn start(root: &Path) -> TestIssuer {
    let mut config = IssuerConfig::development(&root.join("data"));
    config.bootstrap_clients = vec![
        BootstrapClient {
            name: "sidecar".into(),
            scopes: vec![Scope::BundleRead],
            tenants: Vec::new(),
            file: sidecar_file(root),
        },
        BootstrapClient {
            name: "demo-app".into(),
            scopes: vec![Scope::Issue],
            tenants: vec!["demo".into()],
            file: demo_file(root),
        },
    ];
    // The harness keeps this directory alive for the server; the state lives in `root`.
    let unused = tempfile::tempdir().expect("tempdir");
    TestIssuer::start_in(config, unused, Arc::new(SystemClock)).await
}

fn sidecar_file(root: &Path) -> PathBuf {
    root.join("credentials/sidecar.token")
}

fn demo_file(root: &Path) -> PathBuf {
    root.join("credentials/demo.token")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .trim()
        .to_owned()
}

/// Whether `credential` may subscribe to the trust bundle (its first update arrives).
async fn can_read_bundle(issuer: &TestIssuer, credential: &str) -> Result<(), Code> {
    let mut stream = issuer
        .bundle()
        .await
        .watch_trust_bundle(with_credential(
            pb::WatchTrustBundleRequest {
                since_revision: 0,
                subscriber_id: "bootstrap-test".into(),
                credential_changes: false,
                secret_changes: false,
            },
            credential,
        ))
        .await
        .map_err(|status| status.code())?
        .into_inner();
    let first = stream.message().await.map_err(|status| status.code())?;
    assert!(first.is_some(), "the stream ended before its snapshot");
    Ok(())
}

/// Whether `credential` may issue an access token for `tenant`.
async fn can_issue(issuer: &TestIssuer, credential: &str, tenant: &str) -> Result<(), Code> {
    issuer
        .tokens()
        .await
        .issue_access_token(with_credential(issue_request(tenant), credential))
        .await
        .map(drop)
        .map_err(|status| status.code())
}

#[tokio::test]
async fn declared_clients_are_written_once_with_their_scopes_and_replaced_when_disabled() {
    let root = tempfile::tempdir().expect("tempdir");

    let issuer = start(root.path()).await;
    for path in [sidecar_file(root.path()), demo_file(root.path())] {
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("{} not written: {error}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
    let sidecar = read(&sidecar_file(root.path()));
    let demo = read(&demo_file(root.path()));
    assert_eq!(can_read_bundle(&issuer, &sidecar).await, Ok(()));
    assert_eq!(
        can_issue(&issuer, &sidecar, "demo").await,
        Err(Code::PermissionDenied),
        "bundle:read must not issue"
    );
    assert_eq!(can_issue(&issuer, &demo, "demo").await, Ok(()));
    assert_eq!(
        can_issue(&issuer, &demo, "acme").await,
        Err(Code::PermissionDenied),
        "the demo client is confined to its tenant"
    );
    issuer.stop().await;

    // A restart leaves working credentials alone and creates no client.
    let issuer = start(root.path()).await;
    assert_eq!(read(&sidecar_file(root.path())), sidecar);
    assert_eq!(read(&demo_file(root.path())), demo);
    let listed = issuer
        .admin()
        .await
        .list_clients(issuer.as_admin(pb::ListClientsRequest {}))
        .await
        .expect("list clients")
        .into_inner();
    let names: Vec<&str> = listed
        .clients
        .iter()
        .map(|client| client.name.as_str())
        .collect();
    assert_eq!(
        names.iter().filter(|name| **name == "sidecar").count(),
        1,
        "{names:?}"
    );

    // Disabled by an operator: the next start writes a new, working credential.
    let sidecar_id = listed
        .clients
        .iter()
        .find(|client| client.name == "sidecar")
        .map(|client| client.client_id.clone())
        .expect("the sidecar client is listed");
    issuer
        .admin()
        .await
        .disable_client(issuer.as_admin(pb::DisableClientRequest {
            client_id: sidecar_id,
            reason: "test".into(),
        }))
        .await
        .expect("disable");
    assert_eq!(
        can_read_bundle(&issuer, &sidecar).await,
        Err(Code::Unauthenticated)
    );
    issuer.stop().await;

    let issuer = start(root.path()).await;
    let renewed = read(&sidecar_file(root.path()));
    assert_ne!(renewed, sidecar, "a disabled credential must be replaced");
    assert_eq!(can_read_bundle(&issuer, &renewed).await, Ok(()));
    assert_eq!(read(&demo_file(root.path())), demo);
    issuer.stop().await;
}
