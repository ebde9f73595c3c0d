//! Runs the real `tessera-issuer serve` in a test's temporary directory on free ports,
//! waits for `/readyz`, captures its stderr to a file for log assertions, drives its admin
//! CLI, and stops it when dropped (SIGTERM, then SIGKILL after a grace period).

use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::binaries::binary;
use super::http;
use super::process::{
    Output, clean_command, free_local_addr, run_with_timeout, send_sigterm, wait_with_timeout,
};
use super::wait::{patience, poll_until};

/// How long `Drop` waits after SIGTERM before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(5);
/// Attempts at start-up when a port picked as free was taken in between.
const BIND_ATTEMPTS: u32 = 3;

/// The issuer binary (built on first use).
pub fn issuer_binary() -> PathBuf {
    binary("tessera-issuer")
}

/// Runs `tessera-issuer ARGS` (for commands expected to exit on their own, such as a
/// `serve` with a bad configuration) in a clean environment plus `env`.
pub fn run_issuer_command(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut command = clean_command(issuer_binary());
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    run_with_timeout(command, timeout)
}

/// Configures an issuer process before it starts.
pub struct IssuerBuilder {
    name: String,
    root: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    credential_file: Option<PathBuf>,
}

impl IssuerBuilder {
    /// Adds `serve` arguments (after the address and data-dir flags the harness sets).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the issuer process (e.g. `RUST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The credential file the CLI helpers use (default `<data-dir>/admin.token`).
    pub fn credential_file(mut self, path: &Path) -> Self {
        self.credential_file = Some(path.to_path_buf());
        self
    }

    /// Starts the issuer and waits until `/readyz` answers 200. Panics with the captured
    /// log if it exits or does not become ready within the (patience-scaled) deadline.
    pub fn start(self) -> Issuer {
        let data_dir = self.root.join(&self.name);
        let log_path = self.root.join(format!("{}.stderr.log", self.name));
        let stdout_path = self.root.join(format!("{}.stdout.log", self.name));
        let credential_file = self
            .credential_file
            .clone()
            .unwrap_or_else(|| data_dir.join("admin.token"));
        for attempt in 1..=BIND_ATTEMPTS {
            let grpc_addr = free_local_addr();
            let http_addr = free_local_addr();
            let mut command = clean_command(issuer_binary());
            command
                .arg("serve")
                .arg("--grpc-addr")
                .arg(grpc_addr.to_string())
                .arg("--http-addr")
                .arg(http_addr.to_string())
                .arg("--data-dir")
                .arg(&data_dir)
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(File::create(&stdout_path).expect("create stdout log"))
                .stderr(File::create(&log_path).expect("create stderr log"));
            if !self.env.iter().any(|(key, _)| key == "RUST_LOG") {
                command.env("RUST_LOG", "info");
            }
            command.envs(self.env.iter().map(|(key, value)| (key, value)));
            let child = command
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start tessera-issuer: {error}"));
            let mut issuer = Issuer {
                name: self.name.clone(),
                child,
                exit: None,
                grpc_addr,
                http_addr,
                data_dir: data_dir.clone(),
                log_path: log_path.clone(),
                credential_file: credential_file.clone(),
            };
            match issuer.wait_ready() {
                Ok(()) => return issuer,
                Err(message) if attempt < BIND_ATTEMPTS && message.contains("cannot bind") => {
                    continue;
                }
                Err(message) => panic!("{message}"),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }
}

/// A running `tessera-issuer serve`.
pub struct Issuer {
    name: String,
    child: Child,
    exit: Option<ExitStatus>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    credential_file: PathBuf,
}

impl Issuer {
    /// An issuer named `name` with data dir `<root>/<name>` and log
    /// `<root>/<name>.stderr.log`.
    pub fn builder(root: &Path, name: &str) -> IssuerBuilder {
        IssuerBuilder {
            name: name.to_owned(),
            root: root.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            credential_file: None,
        }
    }

    /// Starts a default issuer (SQLite in `<root>/issuer`).
    pub fn start(root: &Path) -> Issuer {
        Issuer::builder(root, "issuer").start()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = patience(Duration::from_secs(60));
        let ready = poll_until(deadline, Duration::from_millis(50), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return Some(Err(format!(
                    "issuer `{}` exited ({status}) before becoming ready; log:\n{}",
                    self.name,
                    self.log()
                )));
            }
            match http::get(self.http_addr, "/readyz", &[]) {
                Ok(response) if response.status == 200 => Some(Ok(())),
                _ => None,
            }
        });
        ready.unwrap_or_else(|| {
            Err(format!(
                "issuer `{}` not ready within {deadline:?} (raise TESSERA_E2E_PATIENCE); log:\n{}",
                self.name,
                self.log()
            ))
        })
    }

    /// `http://<grpc addr>`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// `http://<http addr><path>`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin credential the issuer created at `<data-dir>/admin.token`.
    pub fn admin_token(&self) -> String {
        read_trimmed(&self.data_dir.join("admin.token"))
    }

    /// The captured stderr (the log) so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Runs `tessera-issuer ARGS --addr … --data-dir … --token-file <credential file>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(&self.credential_file, args)
    }

    /// Like [`Issuer::cli`] with another credential file.
    pub fn cli_as(&self, credential_file: &Path, args: &[&str]) -> Output {
        let mut command = clean_command(issuer_binary());
        command
            .args(args)
            .arg("--addr")
            .arg(self.grpc_url())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--token-file")
            .arg(credential_file);
        run_with_timeout(command, patience(Duration::from_secs(30)))
    }

    /// Runs a CLI command with `--json`, asserts it succeeded and parses its output.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let output = self.cli(&with_json);
        output.assert_success(&format!("tessera-issuer {}", with_json.join(" ")));
        serde_json::from_str(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "`tessera-issuer {}` did not print JSON ({error}): {}",
                with_json.join(" "),
                output.stdout
            )
        })
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        assert!(
            send_sigterm(self.pid()),
            "kill -s TERM {} failed",
            self.pid()
        );
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = wait_with_timeout(&mut self.child, timeout);
        }
        self.exit
    }

    /// SIGTERM, then waits up to `timeout`; panics with the log if it does not exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if self.exit.is_none() {
            self.sigterm();
        }
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "issuer `{}` still running {timeout:?} after SIGTERM; log:\n{}",
                self.name,
                self.log()
            )
        })
    }
}

impl Drop for Issuer {
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

/// Reads a text file and trims it; panics naming the file.
pub fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
        .trim()
        .to_owned()
}
