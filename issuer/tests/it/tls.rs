//! gRPC over TLS and mTLS: a caller identified by its client certificate (no bearer
//! credential), bearer credentials over TLS, and refusal of certificate-less calls.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tessera_common::SystemClock;
use tessera_issuer::config::{MtlsClientConfig, TlsConfig};
use tessera_proto::v1 as pb;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::harness::{TestIssuer, issue_request, with_credential};

/// Writes a CA, a server certificate for 127.0.0.1 and a client certificate to `dir`.
fn make_certificates(dir: &Path) {
    let script = r#"
set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 \
  -subj /CN=tessera-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
for name in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $name.key -out $name.csr -subj /CN=$name 2>/dev/null
done
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > server.ext
printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' > client.ext
for name in server client; do
  openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $name.pem -days 1 -extfile $name.ext 2>/dev/null
done
openssl x509 -in client.pem -outform der | sha256sum | cut -d' ' -f1 > client.fingerprint
"#;
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("openssl is installed (Debian package `openssl`)");
    assert!(status.success(), "certificate generation failed");
}

async fn tls_channel(
    issuer: &TestIssuer,
    dir: &Path,
    with_client_certificate: bool,
) -> Result<Channel, tonic::transport::Error> {
    let ca = std::fs::read(dir.join("ca.pem")).expect("ca");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if with_client_certificate {
        let cert = std::fs::read(dir.join("client.pem")).expect("cert");
        let key = std::fs::read(dir.join("client.key")).expect("key");
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", issuer.grpc_addr.port()))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn mtls_client_certificate_identifies_a_caller_and_bearer_works_over_tls() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path());
    let fingerprint = std::fs::read_to_string(certs.path().join("client.fingerprint"))
        .expect("fingerprint")
        .trim()
        .to_owned();
    let dir = certs.path().to_path_buf();
    let issuer = TestIssuer::start_with(
        move |config| {
            config.tls = Some(TlsConfig {
                cert_file: dir.join("server.pem"),
                key_file: dir.join("server.key"),
                client_ca_file: Some(dir.join("ca.pem")),
                mtls_clients: vec![MtlsClientConfig {
                    fingerprint_sha256: fingerprint,
                    name: "billing".into(),
                    scopes: vec!["issue".into()],
                    tenants: vec!["acme".into()],
                }],
            });
        },
        Arc::new(SystemClock),
    )
    .await;

    let channel = tls_channel(&issuer, certs.path(), true)
        .await
        .expect("mTLS connect");
    let mut tokens = pb::token_service_client::TokenServiceClient::new(channel.clone());
    let issued = tokens
        .issue_access_token(tonic::Request::new(issue_request("acme")))
        .await
        .expect("certificate identity may issue for acme")
        .into_inner();
    assert!(!issued.token.is_empty());
    let status = tokens
        .issue_access_token(tonic::Request::new(issue_request("globex")))
        .await
        .expect_err("certificate identity is confined to acme");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = pb::key_service_client::KeyServiceClient::new(channel)
        .list_keys(tonic::Request::new(pb::ListKeysRequest::default()))
        .await
        .expect_err("issue scope only");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Without a client certificate: the bearer credential still works over TLS, and a
    // call with neither is unauthenticated.
    let channel = tls_channel(&issuer, certs.path(), false)
        .await
        .expect("TLS connect");
    let mut tokens = pb::token_service_client::TokenServiceClient::new(channel);
    tokens
        .issue_access_token(with_credential(
            issue_request("globex"),
            &issuer.admin_token,
        ))
        .await
        .expect("bearer over TLS");
    let status = tokens
        .issue_access_token(tonic::Request::new(issue_request("acme")))
        .await
        .expect_err("no identity");
    assert_eq!(status.code(), Code::Unauthenticated);

    // Plaintext to a TLS port fails.
    let plaintext = Channel::from_shared(format!("http://{}", issuer.grpc_addr))
        .expect("uri")
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let result = pb::token_service_client::TokenServiceClient::new(channel)
            .issue_access_token(with_credential(issue_request("acme"), &issuer.admin_token))
            .await;
        assert!(result.is_err(), "plaintext call to a TLS server must fail");
    }
    issuer.stop().await;
}
