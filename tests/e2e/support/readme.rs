//! The README's shell journeys as a test runs them: the fenced shell blocks under chosen
//! headings, split into commands, laid out as one bash script whose line numbers are the
//! README's, run in a scratch directory, and read back command by command, so that a
//! failure names the README line that broke.
//!
//! The contract with the README: a block fenced as `sh`, `bash` or `shell` is a script; a
//! command is one line, or several when a line ends with `\`, `|`, `&&` or `||`; a command
//! whose comment lines directly above say "until interrupted" streams, so it runs under a
//! deadline ([`STREAM_SECONDS_VAR`]) and must still be running when the deadline ends it.
//! Heredocs and quotes spanning lines are not understood. `alias` is refused: bash expands
//! aliases only in interactive shells, so a script could not use it.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use super::process::wait_with_timeout;
use super::wait::poll_until;

/// The environment variable holding how long a streaming command runs, in seconds.
pub const STREAM_SECONDS_VAR: &str = "README_STREAM_SECONDS";

/// The marker line the script prints before each command (followed by its README line).
const MARKER: &str = "@@readme-line ";
/// How long the process group gets after SIGTERM before SIGKILL.
const GROUP_GRACE: Duration = Duration::from_secs(5);

/// One command of a README block.
#[derive(Clone, Debug)]
pub struct ShellCommand {
    /// The README line (1-based) the command starts on.
    pub line: usize,
    /// The command as written, continuation lines included.
    pub text: String,
    /// Whether the comment above it says it streams until interrupted.
    pub streams: bool,
}

/// A fenced shell block.
#[derive(Clone, Debug)]
pub struct ShellBlock {
    /// The title of the nearest heading above the block.
    pub heading: String,
    /// The README line (1-based) of the block's first line inside the fence.
    pub first_line: usize,
    /// The lines inside the fence.
    pub lines: Vec<String>,
    /// The commands among those lines.
    pub commands: Vec<ShellCommand>,
}

/// The shell blocks of a Markdown document, in order. Errors name the line: an unclosed
/// fence, a continuation running past the end of its block, an `alias`.
pub fn shell_blocks(source: &str, markdown: &str) -> Result<Vec<ShellBlock>, String> {
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut open: Option<(usize, bool, Vec<String>)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let line_number = index + 1;
        let trimmed = line.trim_start();
        match open.take() {
            Some((fence_line, runnable, lines)) if trimmed.starts_with("```") => {
                if runnable {
                    let first_line = fence_line + 1;
                    let commands = split_commands(source, first_line, &lines)?;
                    blocks.push(ShellBlock {
                        heading: heading.clone(),
                        first_line,
                        lines,
                        commands,
                    });
                }
            }
            Some((fence_line, runnable, mut lines)) => {
                lines.push(line.to_owned());
                open = Some((fence_line, runnable, lines));
            }
            None if trimmed.starts_with("```") => {
                let language = trimmed.trim_start_matches('`').split_whitespace().next();
                let runnable = matches!(language, Some("sh" | "bash" | "shell"));
                open = Some((line_number, runnable, Vec::new()));
            }
            None => {
                if let Some(title) = heading_title(line) {
                    heading = title.to_owned();
                }
            }
        }
    }
    match open {
        Some((fence_line, _, _)) => Err(format!("{source} line {fence_line}: unclosed fence")),
        None => Ok(blocks),
    }
}

/// The commands of the shell blocks under each of `headings` (every heading must have at
/// least one), in README order.
pub fn journey(source: &str, markdown: &str, headings: &[&str]) -> Result<Journey, String> {
    let blocks = shell_blocks(source, markdown)?;
    for heading in headings {
        if !blocks.iter().any(|block| block.heading == *heading) {
            return Err(format!(
                "{source} has no shell block under a heading {heading:?}"
            ));
        }
    }
    Ok(Journey {
        source: source.to_owned(),
        n_lines: markdown.lines().count(),
        blocks: blocks
            .into_iter()
            .filter(|block| headings.contains(&block.heading.as_str()))
            .collect(),
    })
}

/// The blocks a test runs, as one script.
#[derive(Clone, Debug)]
pub struct Journey {
    source: String,
    n_lines: usize,
    blocks: Vec<ShellBlock>,
}

impl Journey {
    /// Every command, in order.
    pub fn commands(&self) -> impl Iterator<Item = &ShellCommand> {
        self.blocks.iter().flat_map(|block| &block.commands)
    }

    /// The bash script: a preamble on line 1, then every block line on its own README line
    /// (so bash's own messages name README lines), each command prefixed with the marker
    /// call and, if it streams, the deadline. `rewrites` replace text in the blocks (the
    /// test's addresses for the README's); each must apply at least once.
    pub fn script(&self, rewrites: &[(&str, &str)]) -> Result<String, String> {
        for (from, _) in rewrites {
            let applies = self
                .blocks
                .iter()
                .flat_map(|block| &block.lines)
                .any(|line| line.contains(from));
            if !applies {
                return Err(format!(
                    "the journey in {} never mentions {from:?}, which the test rewrites",
                    self.source
                ));
            }
        }
        let mut lines = vec![String::new(); self.n_lines.max(1)];
        lines[0] = preamble();
        for block in &self.blocks {
            for (offset, line) in block.lines.iter().enumerate() {
                let line_number = block.first_line + offset;
                let mut text = line.clone();
                for (from, to) in rewrites {
                    text = text.replace(from, to);
                }
                if let Some(command) = block.commands.iter().find(|c| c.line == line_number) {
                    let stream = if command.streams {
                        "readme_stream "
                    } else {
                        ""
                    };
                    text = format!("readme_at {line_number}; {stream}{text}");
                }
                lines[line_number - 1] = text;
            }
        }
        Ok(lines.join("\n") + "\n")
    }

    /// Writes the script to `script_path` and runs it with `bash` (`command` carries the
    /// environment and working directory) in a process group of its own, with stdout and
    /// stderr in `log_path`. Once the script ends, or `timeout` passes, the group is ended
    /// (SIGTERM, then SIGKILL): that stops whatever the README started in the background.
    pub fn run(
        &self,
        script: &str,
        mut command: Command,
        script_path: &Path,
        log_path: &Path,
        timeout: Duration,
    ) -> JourneyRun {
        std::fs::write(script_path, script)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", script_path.display()));
        let log = File::create(log_path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", log_path.display()));
        let log_for_stderr = log.try_clone().expect("clone the log file handle");
        command
            .arg(script_path)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);
        let mut group = ProcessGroup::spawn(command);
        let status = group.wait(timeout);
        drop(group);
        let log =
            String::from_utf8_lossy(&std::fs::read(log_path).unwrap_or_default()).into_owned();
        JourneyRun {
            status,
            outputs: split_log(&log),
            log,
            timeout,
        }
    }

    /// Ok when `run` exited 0 after running every command; otherwise a message naming the
    /// README line that failed, the command and what it printed.
    pub fn check(&self, run: &JourneyRun) -> Result<(), String> {
        let last = run.outputs.last();
        let failed = |reason: String| {
            let Some((line, output)) = last else {
                return format!(
                    "the script of {} failed before its first command ({reason}):\n{}",
                    self.source, run.log
                );
            };
            let text = self
                .command_at(*line)
                .map_or("(no command starts on that line)", |command| &command.text);
            format!(
                "{} line {line} failed ({reason}):\n{}\nits output:\n{}",
                self.source,
                indent(text),
                indent(output)
            )
        };
        match run.status {
            None => Err(failed(format!("still running after {:?}", run.timeout))),
            Some(status) if !status.success() => Err(failed(describe(status))),
            Some(_) => {
                let expected: Vec<usize> = self.commands().map(|command| command.line).collect();
                let ran: Vec<usize> = run.outputs.iter().map(|(line, _)| *line).collect();
                if ran == expected {
                    Ok(())
                } else {
                    Err(format!(
                        "the script of {} exited 0 but ran the commands of lines {ran:?}, not \
                         {expected:?}",
                        self.source
                    ))
                }
            }
        }
    }

    /// The command starting on README line `line`.
    pub fn command_at(&self, line: usize) -> Option<&ShellCommand> {
        self.commands().find(|command| command.line == line)
    }
}

/// What a journey script did.
#[derive(Debug)]
pub struct JourneyRun {
    /// `None` when it was still running at the deadline.
    pub status: Option<ExitStatus>,
    /// The whole log (stdout and stderr).
    pub log: String,
    /// Per command that started: its README line and its output.
    pub outputs: Vec<(usize, String)>,
    timeout: Duration,
}

impl JourneyRun {
    /// The output of the command starting on README line `line`.
    pub fn output_of(&self, line: usize) -> Option<&str> {
        self.outputs
            .iter()
            .find(|(started, _)| *started == line)
            .map(|(_, output)| output.as_str())
    }
}

/// A child started as the leader of its own process group; dropping it ends the group
/// (SIGTERM, then SIGKILL after [`GROUP_GRACE`]), children it left behind included.
pub struct ProcessGroup {
    child: Child,
}

impl ProcessGroup {
    /// Spawns `command` in a new process group; panics naming the program if it cannot.
    pub fn spawn(mut command: Command) -> ProcessGroup {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        ProcessGroup { child }
    }

    /// Waits up to `timeout` for the leader to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_with_timeout(&mut self.child, timeout)
    }

    /// Whether the leader has exited (and how).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args(["-s", signal, "--", &format!("-{}", self.child.id())])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.signal("TERM") {
            let _ = self.child.wait();
            return;
        }
        let _ = wait_with_timeout(&mut self.child, GROUP_GRACE);
        // Members other than the leader are not our children: poll the group instead.
        let gone = poll_until(GROUP_GRACE, Duration::from_millis(50), || {
            (!self.signal("0")).then_some(())
        });
        if gone.is_none() {
            self.signal("KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Line 1 of every script. `readme_at` prints the marker on a line of its own (the output
/// before it may lack a final newline); `readme_stream` runs a command under the deadline
/// and fails unless the deadline is what ended it (timeout(1) exits 124 then).
fn preamble() -> String {
    format!(
        "set -euo pipefail; shopt -s inherit_errexit; \
         readme_at() {{ printf '\\n{MARKER}%s@@\\n' \"$1\"; }}; \
         readme_stream() {{ local status=0; \
         timeout \"${{{STREAM_SECONDS_VAR}:-5}}\" \"$@\" || status=$?; \
         if [ \"$status\" -ne 124 ]; then echo \"expected to stream until interrupted, but \
         it exited (status $status) within ${{{STREAM_SECONDS_VAR}:-5}} s\" >&2; \
         return 1; fi; }}"
    )
}

fn heading_title(line: &str) -> Option<&str> {
    let rest = line.trim_start_matches('#');
    let level = line.len() - rest.len();
    (level > 0 && rest.starts_with(' ')).then(|| rest.trim())
}

fn split_commands(
    source: &str,
    first_line: usize,
    lines: &[String],
) -> Result<Vec<ShellCommand>, String> {
    let mut commands = Vec::new();
    let mut comments: Vec<&str> = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let trimmed = lines[index].trim();
        if trimmed.is_empty() {
            comments.clear();
            index += 1;
            continue;
        }
        if trimmed.starts_with('#') {
            comments.push(trimmed);
            index += 1;
            continue;
        }
        let start = index;
        while continues(&lines[index]) {
            index += 1;
            if index == lines.len() {
                return Err(format!(
                    "{source} line {}: the command continues past the end of its block",
                    first_line + start
                ));
            }
        }
        let text = lines[start..=index].join("\n");
        let line = first_line + start;
        if text.split_whitespace().next() == Some("alias") {
            return Err(format!(
                "{source} line {line}: `alias` works only in interactive shells, not in a \
                 script; use a function, a variable or PATH"
            ));
        }
        let streams = comments
            .iter()
            .any(|comment| comment.to_lowercase().contains("until interrupted"));
        commands.push(ShellCommand {
            line,
            text,
            streams,
        });
        comments.clear();
        index += 1;
    }
    Ok(commands)
}

fn continues(line: &str) -> bool {
    let line = line.trim_end();
    !line.trim_start().starts_with('#')
        && (line.ends_with('\\') || line.ends_with('|') || line.ends_with("&&"))
}

/// Splits the log at the markers: each command's README line and what it printed.
fn split_log(log: &str) -> Vec<(usize, String)> {
    let mut outputs: Vec<(usize, String)> = Vec::new();
    for line in log.lines() {
        let marked = line
            .strip_prefix(MARKER)
            .and_then(|rest| rest.strip_suffix("@@"))
            .and_then(|number| number.parse().ok());
        match (marked, outputs.last_mut()) {
            (Some(number), _) => outputs.push((number, String::new())),
            (None, Some((_, output))) => {
                output.push_str(line);
                output.push('\n');
            }
            (None, None) => {}
        }
    }
    for (_, output) in &mut outputs {
        let trimmed = output.trim_end().to_owned();
        *output = trimmed;
    }
    outputs
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => format!("{status}"),
    }
}

fn indent(text: &str) -> String {
    if text.trim().is_empty() {
        return "    (nothing)".to_owned();
    }
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
