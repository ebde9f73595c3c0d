//! Locates the real binaries in the target directory this test binary was built into, and
//! builds each one once per test run (`cargo build -p NAME --bin NAME`), so that
//! `cargo test --workspace` alone is enough. `TESSERA_E2E_SKIP_BUILD=1` uses whatever is
//! already there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// The profile directory (`<target>/debug`) holding this test binary, which cargo puts in
/// `<target>/<profile>/deps/`. Following the running executable respects
/// `CARGO_TARGET_DIR`, `--target-dir` and the profile without re-deriving them.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The target directory (parent of the profile directory).
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("the profile directory has a parent")
        .to_path_buf()
}

/// Builds (once) and returns the path of the workspace binary `name`, which is also the
/// name of its package (`tessera-issuer`, `tessera-sidecar`). Panics with cargo's output
/// when the build fails.
pub fn binary(name: &'static str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<&'static str, Result<PathBuf, String>>> =
        Mutex::new(BTreeMap::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let result = built.entry(name).or_insert_with(|| build(name));
    match result {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn build(name: &str) -> Result<PathBuf, String> {
    let profile_dir = profile_dir();
    let path = profile_dir.join(name);
    if std::env::var_os("TESSERA_E2E_SKIP_BUILD").is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                name,
                "--bin",
                name,
                "--target-dir",
            ])
            .arg(target_dir());
        match profile_dir.file_name().and_then(|dir| dir.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                command.arg("--release");
            }
            Some(profile) => {
                command.args(["--profile", profile]);
            }
        }
        let output = command
            .output()
            .map_err(|error| format!("cannot run cargo to build {name}: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "`cargo build -p {name} --bin {name}` failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    if !path.is_file() {
        return Err(format!("{} does not exist after the build", path.display()));
    }
    Ok(path)
}
