//! The subscription over TLS with a client certificate (mTLS): with the certificate the
//! sidecar receives its bundle, without one the issuer refuses it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::fake_issuer::FakeIssuer;
use crate::harness::{Sidecar, eventually, validate, wait_serving};
use crate::keys::{TestKey, claims};

/// Writes a CA, a server certificate for 127.0.0.1 and a client certificate to `dir`.
fn make_certificates(dir: &Path) {
    let script = r#"
set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 \
  -subj /CN=sidecar-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
for name in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $name.key -out $name.csr -subj /CN=$name 2>/dev/null
done
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > server.ext
printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' > client.ext
for name in server client; do
  openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $name.pem -days 1 -extfile $name.ext 2>/dev/null
done
"#;
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("openssl is installed");
    assert!(status.success(), "certificate generation failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_over_mtls_and_is_refused_without_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let read = |name: &str| std::fs::read(certs.path().join(name)).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("server.pem"), read("server.key")))
        .client_ca_root(Certificate::from_pem(read("ca.pem")));
    let ed = TestKey::eddsa("ed-tls");
    let issuer = FakeIssuer::start_tls(&[&ed], tls).await;
    let url = format!("https://127.0.0.1:{}", issuer.addr.port());
    let path = |name: &str| certs.path().join(name).display().to_string();

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let args = [
        "--issuer-ca-file",
        &ca,
        "--client-cert-file",
        &cert,
        "--client-key-file",
        &key,
    ];
    let sidecar = Sidecar::start(&url, dir.path(), &args).await;
    wait_serving(&sidecar).await;
    assert!(
        validate(&mut sidecar.client().await, &ed.sign(&claims("sam")))
            .await
            .valid
    );
    sidecar.stop().await;

    // Without a client certificate: wait until the sidecar has connected twice (its
    // first attempt and a retry), so "no second subscription" means refused, not "not
    // tried yet".
    let n_connections_before = issuer.n_connections();
    let bare_dir = tempfile::tempdir().unwrap();
    let bare = Sidecar::start(&url, bare_dir.path(), &["--issuer-ca-file", &ca]).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            issuer.n_connections() >= n_connections_before + 2
        })
        .await,
        "the sidecar without a client certificate never tried to connect"
    );
    assert_eq!(bare.health().await, ServingStatus::NotServing);
    assert_eq!(
        issuer.n_subscriptions(),
        1,
        "a subscription without a client certificate got through"
    );
    bare.stop().await;
}
