//! Machinery of the sidecar tests: the real `tessera-sidecar` as a process guard (start on
//! a socket in the test's tempdir, wait for `/readyz`, SIGTERM then SIGKILL on drop), an
//! issuer restarted on the same ports and data dir, the bundle-reader credential, a tonic
//! client over the Unix socket, `/metrics` and VmRSS readings, and the token forgeries the
//! tests need (tampered signature, `alg: none`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tempfile::TempDir;
use tessera_proto::v1 as pb;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::support::binaries::binary;
use crate::support::grpc::runtime;
use crate::support::http;
use crate::support::issuer::{Issuer, issuer_binary};
use crate::support::process::{clean_command, free_local_addr, send_sigterm, wait_with_timeout};
use crate::support::wait::{patience, poll_until};

/// How long `Drop` waits after SIGTERM before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(5);
/// Attempts at start-up when a port picked as free was taken in between.
const BIND_ATTEMPTS: u32 = 3;
/// Metric: the revision of the bundle the sidecar holds.
pub const REVISION: &str = "tessera_trust_bundle_revision";
/// Metric: resyncs started by an unknown kid.
pub const RESYNCS: &str = "tessera_sidecar_resync_total";
/// Metric: successful subscriptions to the issuer's trust-bundle stream.
pub const SUBSCRIBED: &str = "tessera_sidecar_subscription_attempts_total{result=\"ok\"}";
/// Metric: failed attempts to subscribe to the issuer's trust-bundle stream.
pub const SUBSCRIPTION_FAILED: &str =
    "tessera_sidecar_subscription_attempts_total{result=\"error\"}";
/// The tenant of every token the sidecar tests issue.
pub const TENANT: &str = "acme";

/// The sidecar binary (built on first use).
pub fn sidecar_binary() -> PathBuf {
    binary("tessera-sidecar")
}

/// An issuer with a `bundle:read` credential for sidecars, in a fresh tempdir. Fields drop
/// in order: the issuer stops before its directory goes.
pub struct Stack {
    pub issuer: Issuer,
    /// File holding the sidecars' credential (mode 0600).
    pub credential: PathBuf,
    pub root: TempDir,
}

impl Stack {
    /// Starts an issuer with extra `serve` arguments and creates the sidecar credential.
    pub fn start(issuer_args: &[&str]) -> Stack {
        let root = tempfile::tempdir().expect("tempdir");
        let issuer = Issuer::builder(root.path(), "issuer")
            .args(issuer_args.iter().copied())
            .start();
        let credential = bundle_reader_credential(&issuer, root.path());
        Stack {
            issuer,
            credential,
            root,
        }
    }

    /// A sidecar named `name` subscribed to this stack's issuer.
    pub fn sidecar(&self, name: &str) -> SidecarBuilder {
        Sidecar::builder(
            self.root.path(),
            name,
            &self.issuer.grpc_url(),
            &self.credential,
        )
    }
}

/// Creates an API client with the single scope `bundle:read` through the CLI and writes
/// its credential to `<dir>/sidecar.credential` (mode 0600).
pub fn bundle_reader_credential(issuer: &Issuer, dir: &Path) -> PathBuf {
    let created = issuer.cli_json(&[
        "clients",
        "create",
        "--name",
        "e2e-sidecar",
        "--scope",
        "bundle:read",
    ]);
    let credential = created["credential"]
        .as_str()
        .filter(|credential| !credential.is_empty())
        .unwrap_or_else(|| panic!("`clients create` printed no credential: {created}"));
    let path = dir.join("sidecar.credential");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
    writeln!(file, "{credential}").expect("write the credential");
    path
}

/// A token issued through the CLI.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: String,
    pub kid: String,
    pub jti: String,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
}

/// `tessera-issuer token issue --subject SUBJECT --tenant acme --ttl-seconds TTL EXTRA…`.
pub fn issue(issuer: &Issuer, subject: &str, ttl_seconds: u32, extra: &[&str]) -> Issued {
    let ttl = ttl_seconds.to_string();
    let mut args = vec![
        "token",
        "issue",
        "--subject",
        subject,
        "--tenant",
        TENANT,
        "--ttl-seconds",
        &ttl,
    ];
    args.extend_from_slice(extra);
    let issued = issuer.cli_json(&args);
    let field = |name: &str| {
        issued[name]
            .as_str()
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| panic!("`token issue` printed no {name}: {issued}"))
            .to_owned()
    };
    Issued {
        token: field("token"),
        kid: field("kid"),
        jti: field("jti"),
        expires_at: issued["expires_at"]
            .as_i64()
            .unwrap_or_else(|| panic!("`token issue` printed no expires_at: {issued}")),
    }
}

/// `token` with one character in the middle of its signature changed (a whole base64url
/// digit, so six signature bits really change).
pub fn tamper_signature(token: &str) -> String {
    let (signing_input, signature) = token.rsplit_once('.').expect("a compact JWS");
    let mut bytes = signature.as_bytes().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
    let signature = String::from_utf8(bytes).expect("base64url is ASCII");
    assert_ne!(signature, token.rsplit_once('.').unwrap().1);
    format!("{signing_input}.{signature}")
}

/// `token` with its header's `kid` replaced by `kid` (payload and signature unchanged).
pub fn with_kid(token: &str, kid: &str) -> String {
    rewrite_header(token, |header| header["kid"] = Value::from(kid))
}

/// `token` with its header rewritten by `edit`; the rest unchanged.
fn rewrite_header(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let (header, rest) = token.split_once('.').expect("a compact JWS");
    let header_bytes = URL_SAFE_NO_PAD.decode(header).expect("base64url header");
    let mut header: Value = serde_json::from_slice(&header_bytes).expect("JSON header");
    edit(&mut header);
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("JSON"));
    format!("{header}.{rest}")
}

/// The classic `alg: none` forgery of `token`: the same header (kid included) with `alg`
/// set to `none`, the same payload, and an empty signature.
pub fn with_alg_none(token: &str) -> String {
    let unsigned = rewrite_header(token, |header| {
        assert!(
            header["kid"].is_string(),
            "issued header lacks kid: {header}"
        );
        header["alg"] = Value::from("none");
    });
    let (signing_input, _) = unsigned.rsplit_once('.').expect("a compact JWS");
    format!("{signing_input}.")
}

/// Milliseconds since the epoch by the wall clock.
pub fn now_unix_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_millis()).expect("fits in i64")
}

/// One line describing a verdict, for failure messages.
pub fn describe(response: &pb::ValidateTokenResponse) -> String {
    format!(
        "valid={} reason={} kid={:?} subject={:?}",
        response.valid,
        response.reason().as_str_name(),
        response.claims.as_ref().map(|claims| claims.kid.as_str()),
        response
            .claims
            .as_ref()
            .map(|claims| claims.subject.as_str()),
    )
}

/// Asserts a valid verdict whose claims carry `kid`; returns the claims.
pub fn assert_valid<'a>(
    response: &'a pb::ValidateTokenResponse,
    kid: &str,
    what: &str,
) -> &'a pb::TokenClaims {
    assert!(
        response.valid && response.reason() == pb::Reason::Unspecified,
        "{what}: expected valid, got {}",
        describe(response)
    );
    let claims = response
        .claims
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: a valid verdict without claims"));
    assert_eq!(claims.kid, kid, "{what}: signed by another key");
    claims
}

/// Asserts a rejection with `reason` and no claims.
pub fn assert_rejected(response: &pb::ValidateTokenResponse, reason: pb::Reason, what: &str) {
    assert!(
        !response.valid && response.reason() == reason,
        "{what}: expected {}, got {}",
        reason.as_str_name(),
        describe(response)
    );
    assert!(
        response.claims.is_none() && response.claims_json.is_empty(),
        "{what}: a rejection must not carry claims: {response:?}"
    );
}

/// Configures a sidecar process before it starts.
pub struct SidecarBuilder {
    name: String,
    root: PathBuf,
    issuer_url: String,
    credential_file: PathBuf,
    bundle_cache: PathBuf,
    args: Vec<OsString>,
}

impl SidecarBuilder {
    /// Adds flags (after those the harness sets).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The bundle cache file (default `<root>/<name>.bundle.json`).
    pub fn bundle_cache(mut self, path: &Path) -> Self {
        self.bundle_cache = path.to_path_buf();
        self
    }

    /// Starts the sidecar and waits until `/readyz` answers 200 and the socket exists.
    /// Panics with the log if it exits or is not ready within the (patience-scaled)
    /// deadline.
    pub fn start(self) -> Sidecar {
        let socket = self.root.join(format!("{}.sock", self.name));
        let log_path = self.root.join(format!("{}.stderr.log", self.name));
        for attempt in 1..=BIND_ATTEMPTS {
            let http_addr = free_local_addr();
            let mut command = clean_command(sidecar_binary());
            command
                .arg("--issuer-addr")
                .arg(&self.issuer_url)
                .arg("--socket")
                .arg(&socket)
                .arg("--http-addr")
                .arg(http_addr.to_string())
                .arg("--issuer-token-file")
                .arg(&self.credential_file)
                .arg("--bundle-cache")
                .arg(&self.bundle_cache)
                .args(&self.args)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log_path).expect("create the sidecar log"));
            let started = Instant::now();
            let child = command
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start tessera-sidecar: {error}"));
            let mut sidecar = Sidecar {
                name: self.name.clone(),
                child,
                exit: None,
                socket: socket.clone(),
                http_addr,
                log_path: log_path.clone(),
                started,
                ready_after: Duration::ZERO,
            };
            match sidecar.wait_ready() {
                Ok(()) => return sidecar,
                Err(message) if attempt < BIND_ATTEMPTS && message.contains("cannot bind") => {
                    continue;
                }
                Err(message) => panic!("{message}"),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }
}

/// A running `tessera-sidecar`.
pub struct Sidecar {
    name: String,
    child: Child,
    exit: Option<ExitStatus>,
    pub socket: PathBuf,
    pub http_addr: SocketAddr,
    pub log_path: PathBuf,
    started: Instant,
    /// From spawn to the first 200 from `/readyz`.
    pub ready_after: Duration,
}

impl Sidecar {
    /// A sidecar named `name`: socket `<root>/<name>.sock`, log `<root>/<name>.stderr.log`.
    pub fn builder(
        root: &Path,
        name: &str,
        issuer_url: &str,
        credential_file: &Path,
    ) -> SidecarBuilder {
        SidecarBuilder {
            name: name.to_owned(),
            root: root.to_path_buf(),
            issuer_url: issuer_url.to_owned(),
            credential_file: credential_file.to_path_buf(),
            bundle_cache: root.join(format!("{name}.bundle.json")),
            args: Vec::new(),
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = patience(Duration::from_secs(30));
        let ready = poll_until(deadline, Duration::from_millis(10), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return Some(Err(format!(
                    "sidecar `{}` exited ({status}) before becoming ready; log:\n{}",
                    self.name,
                    self.log()
                )));
            }
            (self.readyz() == Some(200) && self.socket.exists()).then_some(Ok(()))
        });
        self.ready_after = self.started.elapsed();
        ready.unwrap_or_else(|| {
            Err(format!(
                "sidecar `{}` not ready within {deadline:?} (raise TESSERA_E2E_PATIENCE); \
                 /readyz {:?}; log:\n{}",
                self.name,
                self.readyz(),
                self.log()
            ))
        })
    }

    /// The status `/readyz` answers, if it answers.
    pub fn readyz(&self) -> Option<u16> {
        http::get(self.http_addr, "/readyz", &[])
            .ok()
            .map(|response| response.status)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The captured stderr (the log) so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The resident set size from `/proc/<pid>/status` (VmRSS), in KiB: anonymous memory
    /// plus the mapped pages of the binary and its libraries.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS")
    }

    /// The resident anonymous memory from `/proc/<pid>/status` (RssAnon), in KiB: heap
    /// and stacks, what the sidecar's data and threads cost whatever the build profile.
    pub fn rss_anon_kib(&self) -> u64 {
        self.proc_status_kib("RssAnon")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} line in:\n{status}"))
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> String {
        let response = http::get(self.http_addr, "/metrics", &[])
            .unwrap_or_else(|error| panic!("GET /metrics on `{}`: {error}", self.name));
        assert_eq!(response.status, 200, "/metrics: {}", response.text());
        response.text()
    }

    /// The value of the series `series` (a metric name, with its labels as rendered, e.g.
    /// `name{result="ok"}`) in `/metrics`; 0 when absent (a counter never incremented).
    pub fn metric(&self, series: &str) -> f64 {
        parse_metrics(&self.metrics())
            .get(series)
            .copied()
            .unwrap_or(0.0)
    }

    /// A tonic client over the socket.
    pub fn client(&self) -> SocketClient {
        SocketClient::connect(&self.socket)
    }

    /// SIGTERM, then waits up to `timeout`; panics with the log unless it exits with
    /// status 0 and removes its socket file.
    pub fn stop(&mut self, timeout: Duration) {
        if self.exit.is_none() {
            assert!(send_sigterm(self.pid()), "kill -s TERM {}", self.pid());
            self.exit = wait_with_timeout(&mut self.child, timeout);
        }
        let status = self.exit.unwrap_or_else(|| {
            panic!(
                "sidecar `{}` still running {timeout:?} after SIGTERM; log:\n{}",
                self.name,
                self.log()
            )
        });
        assert!(
            status.success(),
            "sidecar `{}` exited with {status} on SIGTERM; log:\n{}",
            self.name,
            self.log()
        );
        assert!(
            !self.socket.exists(),
            "sidecar `{}` left its socket file {} behind",
            self.name,
            self.socket.display()
        );
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if self.exit.is_some() || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = send_sigterm(self.pid());
        if wait_with_timeout(&mut self.child, DROP_GRACE).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses Prometheus text into `series → value` (comments skipped).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Sends SIGKILL to `pid` through kill(1).
pub fn send_sigkill(pid: u32) {
    let killed = Command::new("kill")
        .args(["-s", "KILL", &pid.to_string()])
        .status()
        .is_ok_and(|status| status.success());
    assert!(killed, "kill -s KILL {pid} failed");
}

/// Whether something accepts TCP connections at `addr`.
pub fn accepts_connections(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// A `tessera-issuer serve` started again on a (killed) issuer's ports and data dir, so
/// that sidecars configured with its address reconnect and `Issuer::cli` keeps working.
pub struct RestartedIssuer {
    child: Child,
    exit: Option<ExitStatus>,
    log_path: PathBuf,
}

impl RestartedIssuer {
    /// Starts `serve` on `issuer`'s addresses and data dir (the old process must be gone)
    /// and waits for `/readyz`; retries a few times while the ports are still being
    /// released.
    pub fn start(issuer: &Issuer, log_path: &Path) -> RestartedIssuer {
        let deadline = patience(Duration::from_secs(60));
        let begun = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut command = clean_command(issuer_binary());
            command
                .arg("serve")
                .arg("--grpc-addr")
                .arg(issuer.grpc_addr.to_string())
                .arg("--http-addr")
                .arg(issuer.http_addr.to_string())
                .arg("--data-dir")
                .arg(&issuer.data_dir)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(log_path).expect("create the restarted issuer's log"));
            let child = command
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start tessera-issuer: {error}"));
            let mut restarted = RestartedIssuer {
                child,
                exit: None,
                log_path: log_path.to_path_buf(),
            };
            let left = deadline.saturating_sub(begun.elapsed());
            let outcome = poll_until(left, Duration::from_millis(50), || {
                if let Ok(Some(status)) = restarted.child.try_wait() {
                    restarted.exit = Some(status);
                    return Some(false);
                }
                http::get(issuer.http_addr, "/readyz", &[])
                    .is_ok_and(|response| response.status == 200)
                    .then_some(true)
            });
            match outcome {
                Some(true) => return restarted,
                Some(false) if attempt < 10 && begun.elapsed() < deadline => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                _ => panic!(
                    "the issuer did not come back on {} / {} within {deadline:?} \
                     (attempt {attempt}); log:\n{}",
                    issuer.grpc_addr,
                    issuer.http_addr,
                    restarted.log()
                ),
            }
        }
    }

    /// The captured stderr (the log) so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }
}

impl Drop for RestartedIssuer {
    fn drop(&mut self) {
        if self.exit.is_some() || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = send_sigterm(self.child.id());
        if wait_with_timeout(&mut self.child, DROP_GRACE).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `ValidatorService` client over a Unix socket, with its own runtime so that tests
/// stay blocking.
pub struct SocketClient {
    runtime: tokio::runtime::Runtime,
    client: ValidatorServiceClient<Channel>,
}

impl SocketClient {
    /// Connects over `socket` (tonic's `unix:` endpoint).
    pub fn connect(socket: &Path) -> SocketClient {
        let runtime = runtime();
        let endpoint = format!("unix:{}", socket.display());
        let channel = runtime.block_on(async {
            Endpoint::from_shared(endpoint.clone())
                .expect("a unix: endpoint")
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .unwrap_or_else(|error| panic!("cannot connect to {endpoint}: {error}"))
        });
        SocketClient {
            runtime,
            client: ValidatorServiceClient::new(channel),
        }
    }

    /// `ValidateToken{token, audience}`; panics on an RPC error (a rejection is a verdict,
    /// never an error).
    pub fn validate_for(&self, token: &str, audience: &str) -> pb::ValidateTokenResponse {
        self.validate_request(pb::ValidateTokenRequest {
            token: token.to_owned(),
            audience: audience.to_owned(),
            ..Default::default()
        })
    }

    /// `ValidateToken{token}` for any accepted audience.
    pub fn validate(&self, token: &str) -> pb::ValidateTokenResponse {
        self.validate_for(token, "")
    }

    /// `ValidateToken(request)`.
    pub fn validate_request(&self, request: pb::ValidateTokenRequest) -> pb::ValidateTokenResponse {
        let mut client = self.client.clone();
        self.runtime
            .block_on(client.validate_token(request))
            .unwrap_or_else(|status| panic!("ValidateToken failed: {status:?}"))
            .into_inner()
    }

    /// Sends `requests` on one `ValidateStream`, closes the sending side, and collects
    /// every response until the server ends the stream.
    pub fn validate_stream(
        &self,
        requests: Vec<pb::ValidateStreamRequest>,
    ) -> Vec<pb::ValidateStreamResponse> {
        let mut client = self.client.clone();
        self.runtime.block_on(async move {
            let outbound = tonic::codegen::tokio_stream::iter(requests);
            let mut inbound = client
                .validate_stream(outbound)
                .await
                .unwrap_or_else(|status| panic!("ValidateStream failed: {status:?}"))
                .into_inner();
            let mut responses = Vec::new();
            while let Some(response) =
                tokio::time::timeout(Duration::from_secs(10), inbound.message())
                    .await
                    .expect("a ValidateStream response within 10 s")
                    .unwrap_or_else(|status| panic!("ValidateStream broke: {status:?}"))
            {
                responses.push(response);
            }
            responses
        })
    }

    /// Validates `token` every `interval` until `wanted` holds or `deadline` passes.
    /// Returns when the wanted verdict arrived (taken after the response), the verdict and
    /// the number of calls; on timeout, the last verdict.
    pub fn poll(
        &self,
        token: &str,
        deadline: Duration,
        interval: Duration,
        wanted: fn(&pb::ValidateTokenResponse) -> bool,
    ) -> PollOutcome {
        self.runtime.block_on(poll_verdicts(
            self.client.clone(),
            token.to_owned(),
            deadline,
            interval,
            wanted,
        ))
    }

    /// Like [`SocketClient::poll`], on this client's runtime while the test thread does
    /// something else (runs a CLI command); collect the outcome with
    /// [`SocketClient::join`].
    pub fn poll_in_background(
        &self,
        token: &str,
        deadline: Duration,
        interval: Duration,
        wanted: fn(&pb::ValidateTokenResponse) -> bool,
    ) -> tokio::task::JoinHandle<PollOutcome> {
        self.runtime.spawn(poll_verdicts(
            self.client.clone(),
            token.to_owned(),
            deadline,
            interval,
            wanted,
        ))
    }

    /// Waits for a background poll.
    pub fn join(&self, poll: tokio::task::JoinHandle<PollOutcome>) -> PollOutcome {
        self.runtime
            .block_on(poll)
            .unwrap_or_else(|error| panic!("the background poll failed: {error}"))
    }
}

/// When the wanted verdict arrived, the verdict and the number of calls; or the last
/// verdict at the deadline.
pub type PollOutcome =
    Result<(Instant, pb::ValidateTokenResponse, u32), Box<pb::ValidateTokenResponse>>;

async fn poll_verdicts(
    client: ValidatorServiceClient<Channel>,
    token: String,
    deadline: Duration,
    interval: Duration,
    wanted: fn(&pb::ValidateTokenResponse) -> bool,
) -> PollOutcome {
    let end = Instant::now() + deadline;
    let mut calls = 0;
    loop {
        let mut client = client.clone();
        let response = client
            .validate_token(pb::ValidateTokenRequest {
                token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("ValidateToken failed: {status:?}"))
            .into_inner();
        let at = Instant::now();
        calls += 1;
        if wanted(&response) {
            return Ok((at, response, calls));
        }
        if at >= end {
            return Err(Box::new(response));
        }
        tokio::time::sleep(interval).await;
    }
}
