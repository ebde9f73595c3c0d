//! Scans a git repository's history (`--git`: the lines every commit added, on every ref,
//! from `git log -p --all`) or its staged changes (`--staged`: `git diff --cached`), by
//! running the `git` binary and reading its unified diff with no context lines. Every
//! credential ever committed was added by some commit, so reading only added lines finds
//! them all, deleted ones included, and reports the commit that added each.
//!
//! Not seen: binary files (git prints no text diff for them) and lines that appear only
//! in a merge commit's conflict resolution (`git log -p` shows no diff for merges).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Location, Report};

/// Marks a commit header in the log output; diff lines start with `+`, `-`, ` `, `\`,
/// `@@` or a git header word, never with this.
const COMMIT_MARKER: &str = "tessera-scan-commit ";

/// Scans every commit reachable from any ref of the repository at `repository`.
pub fn scan_history(repository: &Path, report: &mut Report) {
    let format = format!("--format={COMMIT_MARKER}%H");
    run_diff(
        repository,
        &[
            "log",
            "-p",
            "--all",
            "--unified=0",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            &format,
        ],
        report,
    );
}

/// Scans the changes staged for the next commit.
pub fn scan_staged(repository: &Path, report: &mut Report) {
    run_diff(
        repository,
        &[
            "diff",
            "--cached",
            "--unified=0",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
        ],
        report,
    );
}

fn run_diff(repository: &Path, arguments: &[&str], report: &mut Report) {
    let shown = repository.display();
    let mut child = match Command::new("git")
        .arg("-C")
        .arg(repository)
        .args(["-c", "core.quotePath=false"])
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            report
                .errors
                .push(format!("{shown}: cannot run git: {error}"));
            return;
        }
    };
    let Some(stdout) = child.stdout.take() else {
        report.errors.push(format!("{shown}: git gave no output"));
        return;
    };
    let mut reader = DiffReader::default();
    let mut stdout = BufReader::with_capacity(1 << 20, stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match stdout.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => reader.line(&line, report),
            Err(error) => {
                report
                    .errors
                    .push(format!("{shown}: reading git output: {error}"));
                break;
            }
        }
    }
    match child.wait_with_output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => report.errors.push(format!(
            "{shown}: git {} failed: {}",
            arguments[0],
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => report.errors.push(format!("{shown}: git: {error}")),
    }
}

/// Follows a unified diff (`--unified=0`) line by line: which commit and file it is in,
/// and the new-file line number of each added line.
#[derive(Default)]
struct DiffReader {
    commit: Option<String>,
    path: Option<String>,
    /// Line number, in the new file, of the next added line.
    next_line: usize,
    /// Added and removed lines left in the current hunk: while any are left, a line
    /// starting with `+`/`-` is content (even `+++ …`), not a file header.
    added_left: usize,
    removed_left: usize,
}

impl DiffReader {
    fn line(&mut self, raw: &[u8], report: &mut Report) {
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        if self.added_left > 0 || self.removed_left > 0 {
            match line.first() {
                Some(b'+') => {
                    self.added_left -= 1;
                    if let Some(path) = &self.path {
                        report.n_bytes += line.len() as u64 - 1;
                        let at = Location {
                            commit: self.commit.clone(),
                            path: path.clone(),
                            line: self.next_line,
                            column: 1,
                        };
                        report.scan(&line[1..], &at);
                    }
                    self.next_line += 1;
                    return;
                }
                Some(b'-') => {
                    self.removed_left = self.removed_left.saturating_sub(1);
                    return;
                }
                // `\ No newline at end of file`.
                Some(b'\\') => return,
                _ => {
                    // Malformed counts: fall back to reading headers.
                    self.added_left = 0;
                    self.removed_left = 0;
                }
            }
        }
        let text = String::from_utf8_lossy(line);
        if let Some(commit) = text.strip_prefix(COMMIT_MARKER) {
            self.commit = Some(commit.trim().to_owned());
            self.path = None;
        } else if let Some(path) = text.strip_prefix("+++ ") {
            self.path = if path == "/dev/null" {
                None
            } else {
                report.n_files += 1;
                // Git ends a path holding a space with a tab.
                let path = path.trim_end_matches('\t');
                Some(path.strip_prefix("b/").unwrap_or(path).to_owned())
            };
        } else if text.starts_with("diff --git ") {
            self.path = None;
        } else if let Some(hunk) = text.strip_prefix("@@ ")
            && let Some((removed, start, added)) = parse_hunk_header(hunk)
        {
            self.removed_left = removed;
            self.added_left = added;
            self.next_line = start;
        }
    }
}

/// Parses `-a[,b] +c[,d] @@…` into (b, c, d); a missing count is 1.
fn parse_hunk_header(hunk: &str) -> Option<(usize, usize, usize)> {
    let mut parts = hunk.split(' ');
    let old = parts.next()?.strip_prefix('-')?;
    let new = parts.next()?.strip_prefix('+')?;
    let count = |range: &str| -> Option<(usize, usize)> {
        match range.split_once(',') {
            Some((start, count)) => Some((start.parse().ok()?, count.parse().ok()?)),
            None => Some((range.parse().ok()?, 1)),
        }
    };
    let (_, removed) = count(old)?;
    let (start, added) = count(new)?;
    Some((removed, start, added))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_common::credential::{Credential, CredentialKind};

    fn read(diff: &str) -> Report {
        let mut report = Report::default();
        let mut reader = DiffReader::default();
        for line in diff.split_inclusive('\n') {
            reader.line(line.as_bytes(), &mut report);
        }
        report
    }

    #[test]
    fn added_lines_are_scanned_with_their_commit_path_and_line() {
        let credential = Credential::generate(CredentialKind::Refresh).expose();
        let other = Credential::generate(CredentialKind::IssuerCaller).expose();
        let diff = format!(
            "{COMMIT_MARKER}abc123\n\ndiff --git a/x.env b/x.env\nindex 1..2 100644\n--- a/x.env\n+++ b/x.env\n\
             @@ -3,2 +10,3 @@ fn context\n-{other}\n-old\n+one\n++++ {credential}\n+three\n\
             {COMMIT_MARKER}def456\n\ndiff --git a/y b/y\ndeleted file mode 100644\n--- a/y\n+++ /dev/null\n\
             @@ -1 +0,0 @@\n-{credential}\n"
        );
        let report = read(&diff);
        assert_eq!(report.findings.len(), 1, "removed lines are not reported");
        let location = &report.findings[0].location;
        assert_eq!(location.commit.as_deref(), Some("abc123"));
        assert_eq!(location.path, "x.env");
        assert_eq!((location.line, location.column), (11, 5));
    }

    #[test]
    fn hunk_headers_parse_with_and_without_counts() {
        assert_eq!(parse_hunk_header("-3,2 +10,3 @@ fn x"), Some((2, 10, 3)));
        assert_eq!(parse_hunk_header("-1 +0,0 @@"), Some((1, 0, 0)));
        assert_eq!(parse_hunk_header("-0,0 +1 @@"), Some((0, 1, 1)));
        assert_eq!(parse_hunk_header("garbage"), None);
    }
}
