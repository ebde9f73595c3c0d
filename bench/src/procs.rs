//! The programs under test, run as separate processes (DESIGN §10, "How to measure"):
//! the release `tessera-issuer serve` and `tessera-sidecar` binaries, the empty-RPC
//! server (`tessera-bench serve-empty`) and the raw crypto loops (`tessera-bench
//! raw-sign|raw-verify --threads 1`), each started under `taskset -c <server cpus>`,
//! while the load generator (this process) pins itself to the client cpus. Binaries are
//! taken from the directory of this executable (the same `target/release`), or from
//! `TESSERA_BIN_DIR`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use tessera_common::keys::Algorithm;
use tonic::metadata::{Ascii, MetadataValue};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::noop::Canned;
use crate::report::Measurement;
use crate::transport::{self, Target, Transport};

/// How long a server may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which cpus the servers and the load generator run on (`taskset -c` lists).
#[derive(Clone, Debug, Default)]
pub struct Pinning {
    pub server: Option<String>,
    pub client: Option<String>,
}

static PINNING: OnceLock<Pinning> = OnceLock::new();

/// Records the pinning for every process started later.
pub fn set_pinning(pinning: Pinning) {
    let _ = PINNING.set(pinning);
}

/// Returns the pinning in force.
pub fn pinning() -> Pinning {
    PINNING.get().cloned().unwrap_or_default()
}

/// Pins this process (all its threads: call it before any thread starts) to `cpus`.
pub fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux) to pin the load generator")?;
    anyhow::ensure!(status.success(), "taskset -p -c {cpus} failed: {status}");
    Ok(())
}

/// Prints the command line and the pinning, so a result carries how it was produced.
pub fn print_setup() {
    let pinning = pinning();
    let args: Vec<String> = std::env::args().collect();
    println!("command: {}", args.join(" "));
    println!(
        "pinning: servers (issuer, sidecar, empty server, raw crypto) {}; load generator {} (pid {})",
        pinning
            .server
            .as_deref()
            .map_or("unpinned".to_owned(), |cpus| format!("taskset -c {cpus}")),
        pinning
            .client
            .as_deref()
            .map_or("unpinned".to_owned(), |cpus| format!("taskset -c {cpus}")),
        std::process::id()
    );
}

/// The pinning as JSON, for the result lines.
pub fn pinning_json() -> serde_json::Value {
    let pinning = pinning();
    serde_json::json!({ "server_cpus": pinning.server, "client_cpus": pinning.client })
}

/// Returns the path of the sibling binary `name`.
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("TESSERA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()?
            .parent()
            .context("the executable has no directory")?
            .to_owned(),
    };
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it (cargo build --release -p tessera-issuer -p tessera-sidecar) \
         or set TESSERA_BIN_DIR",
        path.display()
    );
    Ok(path)
}

/// A command running `program` on the server cpus.
fn on_server_cpus(program: &Path) -> Command {
    match pinning().server {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Returns a free TCP port on 127.0.0.1 (bound then released).
fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A server process, killed when dropped. Its output goes to `log`.
pub struct ServerProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> anyhow::Result<Self> {
        let file = File::create(&log)?;
        command
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SERVER_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        eprintln!("  [start {name}] {}", describe(&command));
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        crate::cpu::watch_pid(child.id());
        Ok(ServerProcess { name, child, log })
    }

    /// Fails with the end of its log when the process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!("{} exited ({status}):\n{}", self.name, tail.join("\n"));
        }
        Ok(())
    }

    /// Waits until `target` answers a health check with SERVING.
    async fn wait_serving(&mut self, target: &Target) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if let Ok(channel) = transport::try_connect(target).await {
                let status = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|response| response.into_inner().status);
                if matches!(status, Ok(status) if status == ServingStatus::Serving as i32) {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} did not serve within {START_TIMEOUT:?} (log: {})",
                self.name,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl ServerProcess {
    /// The process id (of `taskset`'s exec'd program: taskset execs, keeping the pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        crate::cpu::unwatch_pid(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tessera-issuer serve` on its own temporary data directory (SQLite, development KEK,
/// admin credential), gRPC and HTTP on free 127.0.0.1 ports.
pub struct IssuerProcess {
    pub grpc_addr: SocketAddr,
    /// `/metrics`, `/readyz`.
    pub http_addr: SocketAddr,
    /// `Bearer <admin credential>` from `<data-dir>/admin.token`.
    pub authorization: MetadataValue<Ascii>,
    data_dir: PathBuf,
    _server: ServerProcess,
    // Declared last: removed after the process is killed.
    dir: tempfile::TempDir,
}

impl IssuerProcess {
    /// Starts an issuer whose `access` keys use `algorithm` and waits until it serves.
    pub async fn start(algorithm: Algorithm) -> anyhow::Result<IssuerProcess> {
        IssuerProcess::start_with(algorithm, &[]).await
    }

    /// Like [`IssuerProcess::start`] with extra `serve` arguments (e.g. `--database-url`).
    pub async fn start_with(
        algorithm: Algorithm,
        extra_args: &[String],
    ) -> anyhow::Result<IssuerProcess> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        let grpc_addr = free_addr()?;
        let http_addr = free_addr()?;
        let mut command = on_server_cpus(&binary("tessera-issuer")?);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--grpc-addr")
            .arg(grpc_addr.to_string())
            .arg("--http-addr")
            .arg(http_addr.to_string())
            .arg("--access-algorithm")
            .arg(algorithm.to_string())
            .args(extra_args);
        let mut server =
            ServerProcess::spawn("tessera-issuer", command, dir.path().join("issuer.log"))?;
        server.wait_serving(&Target::Tcp(grpc_addr)).await?;
        let credential = std::fs::read_to_string(data_dir.join("admin.token"))
            .context("reading the issuer's admin.token")?;
        let authorization = format!("Bearer {}", credential.trim())
            .parse()
            .context("the admin credential is not valid header text")?;
        Ok(IssuerProcess {
            grpc_addr,
            http_addr,
            authorization,
            data_dir,
            _server: server,
            dir,
        })
    }

    /// Creates a `bundle:read` API client with the issuer's CLI (admin credential) and
    /// returns the file holding its credential.
    pub fn bundle_reader(&self, name: &str) -> anyhow::Result<PathBuf> {
        self.client_credential(name, &["bundle:read"])
    }

    /// The issuer's process id.
    pub fn pid(&self) -> u32 {
        self._server.pid()
    }

    /// The issuer's data directory (its SQLite database is `tessera.db` there).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Creates an API client holding `scopes` (every tenant) with the issuer's CLI and
    /// returns the file holding its credential.
    pub fn client_credential(&self, name: &str, scopes: &[&str]) -> anyhow::Result<PathBuf> {
        let out = self.dir.path().join(format!("{name}.token"));
        let mut command = Command::new(binary("tessera-issuer")?);
        command.args(["clients", "create", "--name", name]);
        for scope in scopes {
            command.args(["--scope", scope]);
        }
        let output = command
            .arg("--out")
            .arg(&out)
            .arg("--addr")
            .arg(format!("http://{}", self.grpc_addr))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .context("running tessera-issuer clients create")?;
        anyhow::ensure!(
            output.status.success(),
            "tessera-issuer clients create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(out)
    }
}

/// `tessera-sidecar` subscribed to an [`IssuerProcess`] with a `bundle:read` credential,
/// serving on a Unix socket in a temporary directory.
pub struct SidecarProcess {
    pub socket: PathBuf,
    _server: ServerProcess,
    _dir: tempfile::TempDir,
}

impl SidecarProcess {
    /// Starts a sidecar with a verified-token cache of `cache_capacity` entries (0
    /// disables it) and waits until it serves (it holds a bundle).
    pub async fn start(
        issuer: &IssuerProcess,
        cache_capacity: u64,
    ) -> anyhow::Result<SidecarProcess> {
        let credential =
            issuer.bundle_reader(&format!("bench-sidecar-{}", uuid::Uuid::new_v4().simple()))?;
        SidecarProcess::start_with(issuer, cache_capacity, &credential, &[]).await
    }

    /// Like [`SidecarProcess::start`] presenting `credential` (a file) to the issuer,
    /// with extra flags.
    pub async fn start_with(
        issuer: &IssuerProcess,
        cache_capacity: u64,
        credential: &Path,
        extra_args: &[String],
    ) -> anyhow::Result<SidecarProcess> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("s.sock");
        let mut command = on_server_cpus(&binary("tessera-sidecar")?);
        command
            .arg("--issuer-addr")
            .arg(format!("http://{}", issuer.grpc_addr))
            .arg("--issuer-token-file")
            .arg(credential)
            .arg("--socket")
            .arg(&socket)
            .arg("--cache-capacity")
            .arg(cache_capacity.to_string())
            .arg("--subscriber-id")
            .arg("tessera-bench")
            .args(extra_args);
        let mut server =
            ServerProcess::spawn("tessera-sidecar", command, dir.path().join("sidecar.log"))?;
        server.wait_serving(&Target::Uds(socket.clone())).await?;
        Ok(SidecarProcess {
            socket,
            _server: server,
            _dir: dir,
        })
    }

    /// The sidecar's process id.
    pub fn pid(&self) -> u32 {
        self._server.pid()
    }

    /// Returns the socket as a load-generator target.
    pub fn target(&self) -> Target {
        Target::Uds(self.socket.clone())
    }
}

/// `tessera-bench serve-empty`: the no-op server, answering `canned` (written to files it
/// reads), over `transport`.
pub struct EmptyProcess {
    pub target: Target,
    _server: ServerProcess,
    _dir: tempfile::TempDir,
}

impl EmptyProcess {
    /// Starts the empty server and waits until it serves.
    pub async fn start(
        transport: Transport,
        canned: &Canned,
        tcp_nodelay: bool,
    ) -> anyhow::Result<EmptyProcess> {
        let dir = tempfile::tempdir()?;
        let issue = dir.path().join("issue.pb");
        let validate = dir.path().join("validate.pb");
        std::fs::write(&issue, canned.issue.encode_to_vec())?;
        std::fs::write(&validate, canned.validate.encode_to_vec())?;
        let (target, listen) = match transport {
            Transport::Tcp => {
                let addr = free_addr()?;
                (Target::Tcp(addr), addr.to_string())
            }
            Transport::Uds => {
                let path = dir.path().join("empty.sock");
                (
                    Target::Uds(path.clone()),
                    path.to_string_lossy().into_owned(),
                )
            }
        };
        let mut command = on_server_cpus(&std::env::current_exe()?);
        command
            .args(["--no-telemetry", "serve-empty", "--transport"])
            .arg(transport.as_str())
            .arg("--listen")
            .arg(listen)
            .arg("--issue-response")
            .arg(&issue)
            .arg("--validate-response")
            .arg(&validate);
        if tcp_nodelay {
            command.arg("--server-nodelay");
        }
        let mut server = ServerProcess::spawn(
            "tessera-bench serve-empty",
            command,
            dir.path().join("empty.log"),
        )?;
        server.wait_serving(&target).await?;
        Ok(EmptyProcess {
            target,
            _server: server,
            _dir: dir,
        })
    }
}

/// Which raw crypto loop to run.
#[derive(Clone, Copy, Debug)]
pub enum RawKind {
    Sign,
    Verify,
}

/// Runs `tessera-bench raw-sign|raw-verify --threads 1` on the server cpus (one thread,
/// pinned as the server is) and returns its measurement.
pub async fn raw_on_server_cpus(
    kind: RawKind,
    algorithm: Algorithm,
    timing: crate::Timing,
) -> anyhow::Result<Measurement> {
    let mut command = on_server_cpus(&std::env::current_exe()?);
    command
        .arg("--no-telemetry")
        .arg(match kind {
            RawKind::Sign => "raw-sign",
            RawKind::Verify => "raw-verify",
        })
        .args(["--threads", "1", "--alg"])
        .arg(algorithm.to_string())
        .arg("--seconds")
        .arg(timing.seconds.to_string())
        .arg("--warmup")
        .arg(timing.warmup.to_string());
    if matches!(kind, RawKind::Sign) {
        command.arg("--signer-only");
    }
    let described = describe(&command);
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    anyhow::ensure!(
        output.status.success(),
        "{described} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .context("the raw measurement printed no JSON line")?;
    let value: serde_json::Value = serde_json::from_str(line)?;
    let mut measurement: Measurement = serde_json::from_value(
        value["results"]
            .get(0)
            .cloned()
            .context("the raw measurement has no result")?,
    )?;
    if let Some(cpus) = pinning().server {
        measurement.name = format!("{} on cpu {cpus}", measurement.name);
    }
    Ok(measurement)
}
