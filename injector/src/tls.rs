//! The webhook's TLS: the certificate and key loaded from PEM files at start (a bad file
//! stops the injector before it binds) and re-read every `tls_reload_interval`, so a
//! renewed certificate (cert-manager rewrites the mounted Secret) is served without a
//! restart. A reload that fails keeps the previous certificate and logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// A certificate or key file that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The served certificate, swapped whole when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    /// The file contents the key was built from, to notice a change.
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    certified_key: Arc<CertifiedKey>,
}

/// Builds the server configuration (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`) serving
/// `resolver`'s certificate.
pub fn server_config(resolver: Arc<ReloadingCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(resolver.provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

// === impl ReloadingCert ===

impl ReloadingCert {
    /// Loads the certificate chain and key, checking that they belong together.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert_pem = read(cert_file)?;
        let key_pem = read(key_file)?;
        let certified_key = certified_key(&provider, cert_file, &cert_pem, key_file, &key_pem)?;
        Ok(ReloadingCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            current: RwLock::new(Loaded {
                cert_pem,
                key_pem,
                certified_key,
            }),
        })
    }

    /// Re-reads the files; returns `Ok(true)` when a new certificate is now served.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = read(&self.cert_file)?;
        let key_pem = read(&self.key_file)?;
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.cert_pem == cert_pem && current.key_pem == key_pem {
                return Ok(false);
            }
        }
        let certified_key = certified_key(
            &self.provider,
            &self.cert_file,
            &cert_pem,
            &self.key_file,
            &key_pem,
        )?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Loaded {
            cert_pem,
            key_pem,
            certified_key,
        };
        Ok(true)
    }

    /// Reloads every `interval` until `shutdown` changes.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            match self.reload() {
                Ok(true) => tracing::info!(
                    cert_file = %self.cert_file.display(),
                    "serving a renewed certificate"
                ),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "certificate reload failed; still serving the previous one")
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Some(current.certified_key.clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::File {
        path: path.to_owned(),
        detail: error.to_string(),
    })
}

fn certified_key(
    provider: &CryptoProvider,
    cert_file: &Path,
    cert_pem: &[u8],
    key_file: &Path,
    key_pem: &[u8],
) -> Result<Arc<CertifiedKey>, TlsError> {
    let file_error = |path: &Path, detail: String| TlsError::File {
        path: path.to_owned(),
        detail,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(cert_file, format!("not a PEM certificate chain: {error}")))?;
    if chain.is_empty() {
        return Err(file_error(cert_file, "holds no certificate".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|error| file_error(key_file, format!("not a PEM private key: {error}")))?;
    let certified_key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|error| file_error(key_file, format!("unusable with the certificate: {error}")))?;
    Ok(Arc::new(certified_key))
}
