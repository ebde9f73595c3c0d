//! `tessera-issuer scan`: finds leaked Tessera credentials in files, directories, a git
//! repository's history (`--git`) or its staged changes (`--staged`), and with `--revoke`
//! asks the issuer to revoke the live ones. The matching itself is
//! `tessera_common::scan` (no I/O); this module reads the bytes and reports.
//!
//! A finding is reported as `[commit:]path:line:column: prefix kind id=… fingerprint=…`
//! (or one JSON document with `--json`): never the secret.
//!
//! Exit codes (a pre-commit hook or CI step blocks on anything but 0):
//! - 0: the scan completed and found no credential;
//! - 1: the scan completed and found at least one credential (with `--revoke`, whether or
//!   not it was live: the credential is still in the files);
//! - 2: the scan could not complete — a path could not be read, git failed, or `--revoke`
//!   could not reach the issuer — whatever was found;
//! - 64: invalid command line (as for every subcommand).

mod git;
mod revoke;
mod walk;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use tessera_common::scan::Found;
use zeroize::Zeroizing;

use crate::cli::ConnectArgs;

/// Exit code: the scan found a credential.
pub const EXIT_FOUND: u8 = 1;
/// Exit code: the scan could not complete.
pub const EXIT_INCOMPLETE: u8 = 2;

/// Files larger than this are skipped unless `--max-file-size` says otherwise.
const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 20;

/// `tessera-issuer scan …`
#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Files and directories to scan (directories recursively, skipping .git, target and
    /// node_modules, binary files and files over --max-file-size); with --git or
    /// --staged, the repositories. Default: the current directory.
    pub paths: Vec<PathBuf>,
    /// Scan every commit of the repository's history (`git log -p --all`): the lines each
    /// commit added, reported with the commit hash.
    #[arg(long, conflicts_with = "staged")]
    pub git: bool,
    /// Scan the lines staged for the next commit (`git diff --cached`): for a pre-commit
    /// hook.
    #[arg(long)]
    pub staged: bool,
    /// Ask the issuer (--addr, --token-file; admin scope) to revoke every credential found;
    /// each finding then says revoked, already_dead (it was dead already), unknown (not
    /// this issuer's, or outside the caller's tenants) or unsupported_kind.
    #[arg(long)]
    pub revoke: bool,
    /// Skip files larger than this many bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FILE_BYTES)]
    pub max_file_size: u64,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Where a finding is.
#[derive(Clone, Debug)]
pub struct Location {
    /// The commit that added the line (`--git` only).
    pub commit: Option<String>,
    pub path: String,
    pub line: usize,
    pub column: usize,
}

/// One credential found. `credential` holds the full text only while `--revoke` needs it;
/// it is never printed.
pub struct Finding {
    pub location: Location,
    pub found: Found,
    pub credential: Option<Zeroizing<String>>,
}

/// What a scan saw, besides its findings.
#[derive(Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub n_files: u64,
    pub n_bytes: u64,
    /// Paths skipped on purpose, with why (binary, too large).
    pub skipped: Vec<(String, String)>,
    /// What could not be read: the scan is incomplete.
    pub errors: Vec<String>,
    /// Whether findings keep their credential text (for `--revoke`).
    keep_credentials: bool,
}

impl Report {
    /// Scans `text` (one file, or one added line of a diff) and records what it finds;
    /// `location` gives the path and the position of `text`'s first byte.
    pub fn scan(&mut self, text: &[u8], at: &Location) {
        for found in tessera_common::scan::find_credentials(text) {
            let credential = self.keep_credentials.then(|| {
                Zeroizing::new(String::from_utf8_lossy(&text[found.start..found.end]).into())
            });
            let column = if found.line == 1 {
                at.column + found.column - 1
            } else {
                found.column
            };
            self.findings.push(Finding {
                location: Location {
                    commit: at.commit.clone(),
                    path: at.path.clone(),
                    line: at.line + found.line - 1,
                    column,
                },
                found,
                credential,
            });
        }
    }
}

/// Runs `tessera-issuer scan` and returns its exit code (see the module comment).
pub async fn run(args: ScanArgs) -> ExitCode {
    let mut report = Report {
        keep_credentials: args.revoke,
        ..Report::default()
    };
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    for path in &paths {
        if args.git {
            git::scan_history(path, &mut report);
        } else if args.staged {
            git::scan_staged(path, &mut report);
        } else {
            walk::scan_path(path, args.max_file_size, &mut report);
        }
    }
    let revocations = if args.revoke && !report.findings.is_empty() {
        match revoke::revoke_found(&args.connect, &report.findings).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                let error = match error.downcast_ref::<tonic::Status>() {
                    Some(status) => format!("{} ({:?})", status.message(), status.code()),
                    None => format!("{error:#}"),
                };
                report.errors.push(format!("--revoke: {error}"));
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    print_report(&report, &revocations, args.connect.json);
    if !report.errors.is_empty() {
        ExitCode::from(EXIT_INCOMPLETE)
    } else if !report.findings.is_empty() {
        ExitCode::from(EXIT_FOUND)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_report(report: &Report, revocations: &[String], json: bool) {
    if json {
        let findings: Vec<Value> = report
            .findings
            .iter()
            .enumerate()
            .map(|(index, finding)| {
                let mut value = json!({
                    "path": finding.location.path,
                    "line": finding.location.line,
                    "column": finding.location.column,
                    "kind": finding.found.kind.name(),
                    "prefix": finding.found.kind.prefix(),
                    "id": finding.found.id,
                    "fingerprint": finding.found.fingerprint,
                });
                if let Some(commit) = &finding.location.commit {
                    value["commit"] = json!(commit);
                }
                if let Some(outcome) = revocations.get(index) {
                    value["revocation"] = json!(outcome);
                }
                value
            })
            .collect();
        let skipped: Vec<Value> = report
            .skipped
            .iter()
            .map(|(path, reason)| json!({"path": path, "reason": reason}))
            .collect();
        let document = json!({
            "findings": findings,
            "files_scanned": report.n_files,
            "bytes_scanned": report.n_bytes,
            "skipped": skipped,
            "errors": report.errors,
        });
        println!("{document}");
        return;
    }
    for (index, finding) in report.findings.iter().enumerate() {
        let location = &finding.location;
        let commit = location
            .commit
            .as_deref()
            .map(|commit| format!("{commit}:"))
            .unwrap_or_default();
        let revocation = revocations
            .get(index)
            .map(|outcome| format!(" revocation={outcome}"))
            .unwrap_or_default();
        println!(
            "{commit}{}:{}:{}: {} {} id={} fingerprint={}{revocation}",
            location.path,
            location.line,
            location.column,
            finding.found.kind.prefix(),
            finding.found.kind.name(),
            finding.found.id,
            finding.found.fingerprint,
        );
    }
    for (path, reason) in &report.skipped {
        eprintln!("tessera-issuer: scan: skipped {path}: {reason}");
    }
    for error in &report.errors {
        eprintln!("tessera-issuer: error: {error}");
    }
    eprintln!(
        "tessera-issuer: scan: {} credential(s) found in {} file(s), {} byte(s) scanned{}",
        report.findings.len(),
        report.n_files,
        report.n_bytes,
        if report.errors.is_empty() {
            ""
        } else {
            " (incomplete)"
        }
    );
}
