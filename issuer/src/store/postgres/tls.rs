//! TLS to PostgreSQL with rustls: when the URL says `sslmode=require` or a CA file is
//! configured, connections are encrypted and the server certificate is always verified
//! (chain and host name) against the configured CA.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// How the store's connections are made.
#[derive(Clone)]
pub(super) enum Tls {
    /// Plain TCP or a Unix socket (`sslmode` absent, `disable` or `prefer` without a CA).
    Plain,
    /// TLS through rustls, verified against the configured CA.
    Rustls(MakeRustlsConnect),
}

/// Decides the transport from the URL's `sslmode` and `ca_file`, and pins `sslmode` to
/// `require` whenever TLS is used so a connection can never fall back to plain text.
///
/// `sslmode=require` without `ca_file` is refused: this build bundles no system trust
/// roots and never connects without verifying the server (point `ca_file` at the system
/// bundle, e.g. `/etc/ssl/certs/ca-certificates.crt`, for a publicly-signed server).
pub(super) fn configure(
    config: &mut tokio_postgres::Config,
    ca_file: Option<&Path>,
) -> Result<Tls, StoreError> {
    let ssl_mode = config.get_ssl_mode();
    match ca_file {
        Some(_) if ssl_mode == SslMode::Disable => Err(StoreError::Unavailable(
            "ca_file is set but the database url says sslmode=disable".to_owned(),
        )),
        Some(ca_file) => {
            config.ssl_mode(SslMode::Require);
            Ok(Tls::Rustls(connector(ca_file)?))
        }
        None if ssl_mode == SslMode::Require => Err(StoreError::Unavailable(
            "sslmode=require needs ca_file: the server certificate is always verified".to_owned(),
        )),
        None => {
            // `prefer` would try TLS with a connector that cannot do it: make it explicit.
            config.ssl_mode(SslMode::Disable);
            Ok(Tls::Plain)
        }
    }
}

fn connector(ca_file: &Path) -> Result<MakeRustlsConnect, StoreError> {
    let unreadable = |error: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!(
            "cannot read database ca_file {}: {error}",
            ca_file.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    let certificates =
        CertificateDer::pem_file_iter(ca_file).map_err(|error| unreadable(&error))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|error| unreadable(&error))?;
        roots.add(certificate).map_err(|error| unreadable(&error))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"no certificate in the file"));
    }
    // The provider is named explicitly so the store does not depend on a process-wide
    // default having been installed.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| StoreError::Unavailable(format!("tls configuration: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(client_config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> tokio_postgres::Config {
        url.parse().unwrap()
    }

    #[test]
    fn plain_unless_tls_is_asked_for() {
        let mut plain = config("postgres://u@localhost/db");
        assert!(matches!(configure(&mut plain, None), Ok(Tls::Plain)));
        assert_eq!(plain.get_ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn require_without_a_ca_is_refused() {
        let mut require = config("postgres://u@localhost/db?sslmode=require");
        assert!(matches!(
            configure(&mut require, None),
            Err(StoreError::Unavailable(message)) if message.contains("ca_file")
        ));
    }

    #[test]
    fn ca_file_with_sslmode_disable_is_refused() {
        let mut disable = config("postgres://u@localhost/db?sslmode=disable");
        assert!(configure(&mut disable, Some(Path::new("/nonexistent"))).is_err());
    }

    #[test]
    fn a_ca_file_turns_tls_on_and_pins_require() {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, TEST_CA_PEM).unwrap();
        let mut prefer = config("postgres://u@localhost/db");
        assert!(matches!(
            configure(&mut prefer, Some(&ca_file)),
            Ok(Tls::Rustls(_))
        ));
        assert_eq!(prefer.get_ssl_mode(), SslMode::Require);

        std::fs::write(&ca_file, "no certificate here").unwrap();
        assert!(configure(&mut prefer, Some(&ca_file)).is_err());
    }

    /// A throwaway CA certificate (its key was discarded).
    const TEST_CA_PEM: &str = "\
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

    #[test]
    fn a_missing_ca_file_is_reported_by_name() {
        let mut prefer = config("postgres://u@localhost/db");
        let Err(StoreError::Unavailable(message)) =
            configure(&mut prefer, Some(Path::new("/nonexistent/ca.pem")))
        else {
            panic!("a missing ca file must fail");
        };
        assert!(message.contains("/nonexistent/ca.pem"), "{message}");
    }
}
