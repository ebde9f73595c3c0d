//! Test support: a CA and a serving certificate made with `openssl` at test time, the
//! real `tessera-injector` binary started on `127.0.0.1:0` (its bound address read from
//! its JSON log), and an HTTPS client (rustls, hyper) trusting only the test CA.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The DNS name the API server uses for the webhook (deploy/k8s/injector.yaml).
pub const SERVICE_DNS: &str = "tessera-injector.tessera-system.svc";

/// A CA and a server certificate it signed, in a directory.
pub struct Pki {
    pub ca_pem: Vec<u8>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Makes a CA and a certificate for [`SERVICE_DNS`] and 127.0.0.1 under `dir`, files
/// named with `tag` (so a second set can replace the first).
pub fn make_pki(dir: &Path, tag: &str) -> Pki {
    let path = |name: &str| dir.join(format!("{tag}-{name}"));
    let ext = path("ext.cnf");
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n\
             subjectAltName=DNS:{SERVICE_DNS},IP:127.0.0.1\n"
        ),
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-keyout",
            path("ca.key").to_str().unwrap(),
            "-out",
            path("ca.pem").to_str().unwrap(),
            "-days",
            "2",
            "-subj",
            &format!("/CN=tessera injector test CA {tag}"),
        ],
    ]);
    openssl(&[
        &["req"],
        &ec[..],
        &[
            "-keyout",
            path("tls.key").to_str().unwrap(),
            "-out",
            path("tls.csr").to_str().unwrap(),
            "-subj",
            &format!("/CN={SERVICE_DNS}"),
        ],
    ]);
    openssl(&[&[
        "x509",
        "-req",
        "-in",
        path("tls.csr").to_str().unwrap(),
        "-CA",
        path("ca.pem").to_str().unwrap(),
        "-CAkey",
        path("ca.key").to_str().unwrap(),
        "-CAcreateserial",
        "-out",
        path("tls.crt").to_str().unwrap(),
        "-days",
        "2",
        "-extfile",
        ext.to_str().unwrap(),
    ]]);
    Pki {
        ca_pem: std::fs::read(path("ca.pem")).unwrap(),
        cert_file: path("tls.crt"),
        key_file: path("tls.key"),
    }
}

fn openssl(parts: &[&[&str]]) {
    let args: Vec<&str> = parts.concat();
    let output = Command::new("openssl")
        .args(&args)
        .output()
        .unwrap_or_else(|error| panic!("these tests need openssl on PATH: {error}"));
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The running binary; killed on drop.
pub struct Injector {
    pub child: Child,
    pub addr: SocketAddr,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// The flags every test passes; `extra` adds or overrides.
fn base_args(pki: &Pki) -> Vec<String> {
    [
        "--listen=127.0.0.1:0",
        "--sidecar-image=registry.example.com/tessera:0.1.0",
        "--issuer-addr=https://tessera-issuer.identity.svc:50051",
        "--log-json=true",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        format!("--tls-cert-file={}", pki.cert_file.display()),
        format!("--tls-key-file={}", pki.key_file.display()),
    ])
    .collect()
}

/// Returns a command for the binary with a clean environment (no TESSERA_* from the
/// caller's shell).
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera-injector"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TESSERA_") || name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
            command.env_remove(name);
        }
    }
    command
}

impl Injector {
    /// Starts the binary with a fresh certificate and `extra` flags, and waits until it
    /// reports its address.
    pub fn start(extra: &[&str]) -> Injector {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "first");
        let mut child = command()
            .args(base_args(&pki))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(log) = serde_json::from_str::<Value>(&line)
                    && log["fields"]["message"] == "serving the webhook over https"
                    && let Some(addr) = log["fields"]["addr"].as_str()
                {
                    let _ = addr_tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("the injector did not start: {:?}", stderr.lock().unwrap());
            }
        };
        Injector {
            child,
            addr,
            pki,
            dir,
            stderr,
        }
    }

    /// Returns the log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Returns an HTTP/1.1 client for this injector, trusting the test CA.
    pub fn client(&self) -> Client {
        Client::new(self.addr, &self.pki.ca_pem, &[b"http/1.1"])
    }

    /// Returns a client that offers only HTTP/2 in ALPN.
    pub fn client_h2(&self) -> Client {
        Client::new(self.addr, &self.pki.ca_pem, &[b"h2"])
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS client: one TLS connection per request, HTTP/2 if both sides offered it.
pub struct Client {
    addr: SocketAddr,
    connector: TlsConnector,
}

/// A response: status, headers of interest, body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    /// Parses the body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Client {
    pub fn new(addr: SocketAddr, ca_pem: &[u8], alpn: &[&[u8]]) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Client {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// Opens a TLS connection, verifying the certificate for [`SERVICE_DNS`].
    pub async fn connect(&self) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from(SERVICE_DNS).unwrap();
        self.connector.connect(name, tcp).await
    }

    /// Sends one request (HTTP/2 when the server agreed to it in ALPN).
    pub async fn request(&self, method: &str, path: &str, body: Vec<u8>) -> Reply {
        let tls = self.connect().await.expect("tls handshake");
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("https://{SERVICE_DNS}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let io = hyper_util::rt::TokioIo::new(tls);
        let response = if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            content_type,
            body,
        }
    }

    /// Posts an AdmissionReview to the webhook path.
    pub async fn review(&self, review: &Value) -> Reply {
        self.request(
            "POST",
            tessera_injector::server::MUTATE_PATH,
            serde_json::to_vec(review).unwrap(),
        )
        .await
    }
}

/// An `AdmissionReview` v1 as the API server sends it for a pod CREATE (fields as in the
/// Kubernetes documentation's example, with `object` the pod).
pub fn admission_review(uid: &str, pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "name": "",
            "namespace": "billing",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "0b0f6a3c-4c8e-4f8a-9c54-0f0c5a6d0e6b",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" },
        },
    })
}

/// Decodes the response's base64 JSON Patch; `None` when there is none.
pub fn patch_of(response: &Value) -> Option<Value> {
    use base64::Engine;
    let patch = response["response"]["patch"].as_str()?;
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("the patch is base64");
    Some(serde_json::from_slice(&bytes).expect("the patch is JSON"))
}

/// Polls `check` until it returns true or `patience` passes.
pub async fn eventually(patience: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
