//! Running child processes: a clean environment (no inherited `TESSERA_*` settings), runs
//! with a timeout and captured output, signals, and free ports.

use std::ffi::OsStr;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::wait::poll_until;

/// A command for `program` whose environment carries none of the caller's `TESSERA_*`,
/// `OTEL_*` or `RUST_LOG` settings (they would silently change what is tested), with
/// colourless logs.
pub fn clean_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("TESSERA_")
            || key_text.starts_with("OTEL_")
            || key_text == "RUST_LOG"
        {
            command.env_remove(&key);
        }
    }
    command.env("NO_COLOR", "1");
    command
}

/// What a finished (or timed-out) command produced.
#[derive(Debug)]
pub struct Output {
    /// `None` when the command was killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// The exit code, if the command exited on its own.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|status| status.code())
    }

    /// Panics with both streams unless the command succeeded.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.success(),
            "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `command` to completion with captured output, killing it after `timeout`.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_with_timeout(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    poll_until(timeout, Duration::from_millis(20), || {
        child.try_wait().ok().flatten()
    })
}

/// Sends SIGTERM to `pid` through kill(1) (the crate has no libc binding); returns
/// whether the signal was delivered.
pub fn send_sigterm(pid: u32) -> bool {
    Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A loopback address with a port that was free a moment ago (bound to port 0, then
/// released for the child to take).
pub fn free_local_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind a loopback port")
}
