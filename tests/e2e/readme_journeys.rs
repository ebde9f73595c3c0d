//! The README's journeys run as written: command 1 of "Two commands" starts the issuer, then
//! the shell blocks of "Try it", "Validate locally with the sidecar" and "Call the API with
//! grpcurl" run as one bash script (`set -euo pipefail`) in a scratch directory, against the
//! real `tessera-issuer`, `tessera-sidecar` and grpcurl, and the outputs that matter are
//! checked. A README line that fails fails the test, naming the line.
//!
//! What the test changes, and how: nothing in the commands themselves. `cargo` on the
//! script's PATH is a stand-in (`cargo build -p NAME` accepts the two binaries the test
//! built; `cargo run [-q] -p NAME -- ARGS` runs the built NAME), the issuer listens on free
//! ports given through `TESSERA_GRPC_ADDR`/`TESSERA_HTTP_ADDR` and the CLI finds it through
//! `TESSERA_ADDR`; the addresses the README spells out (`127.0.0.1:50051`, `:8080`, the
//! sidecar's `:9090`) are the one text rewrite. The extractor and runner live in
//! `support/readme.rs`; the tests below also show that they report a broken line.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::binaries::{binary, profile_dir, workspace_root};
use crate::support::http;
use crate::support::process::{clean_command, free_local_addr, run_with_timeout};
use crate::support::python::tools;
use crate::support::readme::{self, Journey, JourneyRun, ProcessGroup, STREAM_SECONDS_VAR};
use crate::support::wait::{patience, poll_until};

/// The section whose first command starts the issuer (command 1).
const COMMAND_1_HEADING: &str = "Two commands";
/// The sections whose shell blocks form the journey, in README order.
const JOURNEY_HEADINGS: &[&str] = &[
    "Try it",
    "Validate locally with the sidecar",
    "Call the API with grpcurl",
];
/// The issuer's default gRPC address, as the README writes it.
const README_GRPC_ADDR: &str = "127.0.0.1:50051";
/// The issuer's default HTTP address, as the README writes it.
const README_HTTP_ADDR: &str = "127.0.0.1:8080";
/// The sidecar's HTTP address in the README.
const README_SIDECAR_HTTP_ADDR: &str = "127.0.0.1:9090";
/// Attempts at starting command 1 when a port picked as free was taken in between.
const BIND_ATTEMPTS: u32 = 3;

/// What one README command must print. `command` is a fragment of exactly one command.
struct Expected {
    command: &'static str,
    output: &'static [&'static str],
    streams: bool,
}

const fn prints(command: &'static str, output: &'static [&'static str]) -> Expected {
    Expected {
        command,
        output,
        streams: false,
    }
}

const EXPECTED: &[Expected] = &[
    prints("--tenant acme --role staff --permission", &["eyJ"]),
    prints(
        "token issue --subject alice --tenant acme --json",
        &["\"jti\"", "\"kid\"", "\"refresh_after\""],
    ),
    prints("\"quarterly rotation\"", &["rotated: "]),
    prints("keys list --all", &["retiring"]),
    prints("--emergency", &["revoked key "]),
    prints("token introspect @bob.token", &["\"active\": true"]),
    prints("jwks.json", &["\"keys\"", "\"kid\""]),
    prints("openid-configuration", &["\"jwks_uri\""]),
    prints(
        "--name billing-api",
        &["wrote credential to billing-api.token"],
    ),
    prints("audit verify", &["audit log intact"]),
    prints("session create", &["session_id: "]),
    prints("session refresh", &["session_id: "]),
    prints("session logout @alice.session", &["1 sessions ended"]),
    prints("revoke --jti", &["revoked (revision "]),
    prints("INC-7", &["emergency revocation committed"]),
    prints("INC-8", &["revoked key "]),
    prints(
        "--scope bundle:read",
        &["wrote credential to sidecar.token"],
    ),
    prints("/readyz", &["ready"]),
    prints("$TOKEN", &["\"valid\": true", "\"subject\": \"alice\""]),
    prints("$(cat bob.token)", &["KEY_REVOKED"]),
    prints(
        "ValidateApiKey",
        &["\"valid\": true", "\"tenantId\": \"acme\""],
    ),
    prints(
        "50051 list",
        &["tessera.v1.TokenService", "tessera.v1.TrustBundleService"],
    ),
    prints("describe", &["message IssueAccessTokenRequest"]),
    prints("TokenService/IssueAccessToken", &["\"token\"", "\"kid\""]),
    prints("KeyService/ListKeys", &["KEY_STATE_ACTIVE"]),
    prints("KeyService/RotateKeys", &["\"newKid\""]),
    prints("KeyService/GetJwks", &["\"jwksJson\""]),
    Expected {
        command: "TrustBundleService/WatchTrustBundle",
        output: &["\"snapshot\""],
        streams: true,
    },
];

#[test]
fn readme_journeys_run_against_the_real_binaries() {
    let markdown =
        std::fs::read_to_string(workspace_root().join("README.md")).expect("read README.md");
    let journey = readme::journey("README.md", &markdown, JOURNEY_HEADINGS)
        .unwrap_or_else(|error| panic!("{error}"));
    let expected_lines = expected_commands(&journey);
    let command_1 = command_1(&markdown);

    let scratch = Scratch::new();
    assert_readme_addresses_are_the_defaults(&scratch);
    let (grpc_addr, http_addr, _issuer) = start_command_1(&scratch, &command_1);
    let sidecar_http_addr = free_local_addr();
    let script = journey
        .script(&[
            (README_GRPC_ADDR, &grpc_addr.to_string()),
            (README_HTTP_ADDR, &http_addr.to_string()),
            (README_SIDECAR_HTTP_ADDR, &sidecar_http_addr.to_string()),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
    let mut bash = scratch.command("bash");
    bash.env("TESSERA_ADDR", format!("http://{grpc_addr}"));
    let stream_seconds = patience(Duration::from_secs(5)).as_secs().max(1);
    bash.env(STREAM_SECONDS_VAR, stream_seconds.to_string());
    let run = journey.run(
        &script,
        bash,
        &scratch.root.join("journey.sh"),
        &scratch.root.join("journey.log"),
        patience(Duration::from_secs(180)),
    );
    if let Err(message) = journey.check(&run) {
        panic!("{message}\n{}", scratch.logs());
    }
    assert_created_files_are_git_ignored(&scratch.work);
    for (expected, line) in EXPECTED.iter().zip(expected_lines) {
        let output = run.output_of(line).unwrap_or_default();
        for needle in expected.output {
            assert!(
                output.contains(needle),
                "README.md line {line} ({:?}) should print {needle:?}; it printed:\n{output}",
                expected.command
            );
        }
    }
}

#[test]
fn readme_extractor_finds_the_shell_blocks_under_each_heading() {
    let markdown = "# Title\n\n## Try it\n\n```sh\n# Comment\necho one\nprintf '%s\\n' two \\\n  \
                    three\n\n# streams until interrupted\nsleep 100\n```\n\n```toml\nkey = 1\n\
                    ```\n\n## Elsewhere\n\n```sh\necho not run\n```\n";
    let blocks = readme::shell_blocks("fixture.md", markdown).unwrap();
    let headings: Vec<&str> = blocks.iter().map(|block| block.heading.as_str()).collect();
    assert_eq!(
        headings,
        ["Try it", "Elsewhere"],
        "the toml block is no script"
    );

    let journey = readme::journey("fixture.md", markdown, &["Try it"]).unwrap();
    let commands: Vec<(usize, &str, bool)> = journey
        .commands()
        .map(|command| (command.line, command.text.as_str(), command.streams))
        .collect();
    assert_eq!(
        commands,
        [
            (7, "echo one", false),
            (8, "printf '%s\\n' two \\\n  three", false),
            (12, "sleep 100", true),
        ]
    );
    let script = journey.script(&[("one", "uno")]).unwrap();
    let script_lines: Vec<&str> = script.lines().collect();
    assert_eq!(
        script_lines[6], "readme_at 7; echo uno",
        "README line 7 is script line 7"
    );
    assert_eq!(script_lines[8], "  three");
    assert_eq!(script_lines[11], "readme_at 12; readme_stream sleep 100");
    assert!(!script.contains("not run"), "only the chosen headings run");

    let missing = readme::journey("fixture.md", markdown, &["Try it", "Gone"]).unwrap_err();
    assert!(
        missing.contains("no shell block under a heading \"Gone\""),
        "{missing}"
    );
    let unused = journey.script(&[("127.0.0.1:50051", "x")]).unwrap_err();
    assert!(
        unused.contains("never mentions \"127.0.0.1:50051\""),
        "{unused}"
    );
    let aliased = "## Try it\n\n```sh\nalias t='cargo run -q --'\nt keys list\n```\n";
    let refused = readme::journey("fixture.md", aliased, &["Try it"]).unwrap_err();
    assert!(
        refused.contains("fixture.md line 4: `alias` works only in interactive shells"),
        "{refused}"
    );
    let unclosed = readme::shell_blocks("fixture.md", "## Try it\n```sh\necho\n").unwrap_err();
    assert!(unclosed.contains("line 2: unclosed fence"), "{unclosed}");
}

#[test]
fn readme_journey_failure_names_the_readme_line() {
    let markdown = "## Try it\n\n```sh\necho before\n\n# A broken example\nls /definitely/not/here \
                    \\\n  -l\necho never\n```\n";
    let (journey, run) = run_fixture(markdown, &["Try it"], &[]);
    let message = journey.check(&run).unwrap_err();
    assert!(
        message.starts_with("fixture.md line 7 failed (exit status 2):"),
        "{message}"
    );
    assert!(
        message.contains("    ls /definitely/not/here \\\n      -l"),
        "{message}"
    );
    assert!(message.contains("No such file or directory"), "{message}");
    assert_eq!(run.output_of(4), Some("before"));
    assert_eq!(run.output_of(9), None, "set -e stops at the failure");
    assert!(!run.log.contains("never"), "{}", run.log);

    let working = "## Try it\n\n```sh\necho fine\n```\n";
    let (journey, run) = run_fixture(working, &["Try it"], &[]);
    journey.check(&run).unwrap();
}

#[test]
fn readme_journey_streams_must_run_until_interrupted() {
    let streaming = "## Try it\n\n```sh\n# Streams until interrupted (Ctrl-C)\nsleep 100\n\
                     echo after\n```\n";
    let (journey, run) = run_fixture(streaming, &["Try it"], &[(STREAM_SECONDS_VAR, "1")]);
    journey.check(&run).unwrap();
    assert_eq!(run.output_of(6), Some("after"));

    let exiting = "## Try it\n\n```sh\n# Streams until interrupted (Ctrl-C)\ntrue\n```\n";
    let (journey, run) = run_fixture(exiting, &["Try it"], &[(STREAM_SECONDS_VAR, "5")]);
    let message = journey.check(&run).unwrap_err();
    assert!(message.starts_with("fixture.md line 5 failed"), "{message}");
    assert!(
        message.contains("expected to stream until interrupted, but it exited (status 0)"),
        "{message}"
    );
}

/// The sidecar example the README carried before this test existed: grpcurl takes its
/// flags before the socket path, so `-d` after it is refused, and the test says where.
#[test]
fn readme_journey_reports_the_old_sidecar_grpcurl_example() {
    let markdown = "## Validate locally with the sidecar\n\n```sh\n\
                    tessera() { echo header.payload.signature; }\n\
                    grpcurl -plaintext -unix -authority localhost ./tessera-sidecar.sock \\\n  \
                    -d \"{\\\"token\\\":\\\"$(tessera token issue --subject alice --tenant acme)\
                    \\\"}\" \\\n  tessera.v1.ValidatorService/ValidateToken\n```\n";
    let (journey, run) = run_fixture(markdown, &["Validate locally with the sidecar"], &[]);
    let message = journey.check(&run).unwrap_err();
    assert!(message.starts_with("fixture.md line 5 failed"), "{message}");
    assert!(message.contains("Too many arguments"), "{message}");
}

#[test]
fn readme_cargo_stand_in_runs_the_built_binaries_and_refuses_the_rest() {
    let scratch = Scratch::new();
    let run = |args: &[&str]| {
        let mut cargo = scratch.command("cargo");
        cargo.args(args);
        run_with_timeout(cargo, patience(Duration::from_secs(30)))
    };
    let version = run(&["run", "-q", "-p", "tessera-issuer", "--", "--version"]);
    version.assert_success("cargo run -q -p tessera-issuer -- --version");
    assert!(
        version.stdout.contains("tessera-issuer"),
        "{}",
        version.stdout
    );
    run(&["build", "-p", "tessera-issuer", "-p", "tessera-sidecar"])
        .assert_success("cargo build -p tessera-issuer -p tessera-sidecar");
    for refused in [
        &["test", "--workspace"][..],
        &["build", "--release"],
        &["run", "-p", "tessera-bench"],
    ] {
        let output = run(refused);
        assert_eq!(output.code(), Some(2), "cargo {refused:?}: {output:?}");
        assert!(
            output.stderr.contains("cargo stand-in does not support"),
            "{}",
            output.stderr
        );
    }
}

/// A scratch directory: `work/` (the README's working directory), `bin/` (the `cargo`
/// stand-in and grpcurl) and the logs.
struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    bin: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("create a scratch directory");
        let root = dir.path().to_path_buf();
        let work = root.join("work");
        let bin = root.join("bin");
        std::fs::create_dir_all(&work).expect("create work/");
        std::fs::create_dir_all(&bin).expect("create bin/");
        for name in ["tessera-issuer", "tessera-sidecar"] {
            binary(name);
        }
        let cargo = bin.join("cargo");
        let stand_in = CARGO_STAND_IN.replace("@PROFILE@", &profile_dir().display().to_string());
        std::fs::write(&cargo, stand_in).expect("write the cargo stand-in");
        std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755))
            .expect("make the cargo stand-in executable");
        std::os::unix::fs::symlink(&tools().grpcurl, bin.join("grpcurl")).expect("link grpcurl");
        Scratch {
            _dir: dir,
            root,
            work,
            bin,
        }
    }

    /// `program` in `work/`, with `bin/` and the built binaries first on PATH and no
    /// inherited `TESSERA_*` settings.
    fn command(&self, program: &str) -> Command {
        let mut command = clean_command(program);
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let mut path = vec![self.bin.clone(), profile_dir()];
        path.extend(std::env::split_paths(&inherited));
        command
            .env("PATH", std::env::join_paths(path).expect("PATH entries"))
            .current_dir(&self.work);
        command
    }

    /// The ends of the issuer's log and of the journey's (where the sidecar the README
    /// starts logs too), for a failure message.
    fn logs(&self) -> String {
        let mut text = String::new();
        for path in [self.root.join("issuer.log"), self.root.join("journey.log")] {
            if let Ok(log) = std::fs::read_to_string(&path) {
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                text.push_str(&format!("--- last lines of {}:\n{tail}\n", path.display()));
            }
        }
        text
    }
}

/// `cargo` for the README scripts: the binaries are already built (by the test, through
/// `support::binaries`), so `build` only checks what it is asked for and `run` executes
/// the built program. Anything else is refused, naming it, so a README that needs more
/// makes the test fail rather than pass by accident.
const CARGO_STAND_IN: &str = r#"#!/usr/bin/env bash
# cargo stand-in of tests/e2e/readme_journeys.rs
set -euo pipefail
built() { [ "$1" = tessera-issuer ] || [ "$1" = tessera-sidecar ]; }
refuse() { echo "the README test's cargo stand-in does not support: cargo $*" >&2; exit 2; }
[ $# -gt 0 ] || refuse
subcommand=$1
shift
case "$subcommand" in
build)
    while [ $# -gt 0 ]; do
        case "$1" in
        -q | --quiet) shift ;;
        -p | --package) built "${2:-}" || refuse build "$@"; shift 2 ;;
        *) refuse build "$@" ;;
        esac
    done
    ;;
run)
    package=
    while [ $# -gt 0 ]; do
        case "$1" in
        -q | --quiet) shift ;;
        -p | --package) package=${2:-}; [ $# -ge 2 ] && shift 2 || shift ;;
        --) shift; break ;;
        *) refuse run "$@" ;;
        esac
    done
    built "$package" || refuse run -p "$package"
    exec "@PROFILE@/$package" "$@"
    ;;
*) refuse "$subcommand" "$@" ;;
esac
"#;

/// The first command under "Two commands" (which the README calls command 1).
fn command_1(markdown: &str) -> String {
    let blocks = readme::shell_blocks("README.md", markdown).unwrap_or_else(|e| panic!("{e}"));
    let command = blocks
        .iter()
        .filter(|block| block.heading == COMMAND_1_HEADING)
        .flat_map(|block| &block.commands)
        .next()
        .unwrap_or_else(|| panic!("README.md has no command under {COMMAND_1_HEADING:?}"));
    assert!(
        command.text.contains("tessera-issuer") && command.text.contains(" serve"),
        "README.md line {}: command 1 should start the issuer: {}",
        command.line,
        command.text
    );
    command.text.clone()
}

/// The README spells out the issuer's default addresses: check they are the defaults
/// (the test can only run on free ports, so it rewrites them).
fn assert_readme_addresses_are_the_defaults(scratch: &Scratch) {
    let mut help = scratch.command("tessera-issuer");
    help.args(["serve", "--help"]);
    let output = run_with_timeout(help, patience(Duration::from_secs(30)));
    output.assert_success("tessera-issuer serve --help");
    for addr in [README_GRPC_ADDR, README_HTTP_ADDR] {
        assert!(
            output.stdout.contains(&format!("[default: {addr}]")),
            "README.md uses {addr}, which is not a default of `tessera-issuer serve`:\n{}",
            output.stdout
        );
    }
}

/// What the README creates in its working directory (the repository root, for a human)
/// holds credentials and sessions: `.gitignore` must cover every entry.
fn assert_created_files_are_git_ignored(work: &Path) {
    let entries: Vec<String> = std::fs::read_dir(work)
        .expect("list the README's working directory")
        .map(|entry| {
            let entry = entry.expect("a directory entry");
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect();
    assert!(!entries.is_empty(), "the README journey created no file");
    let output = Command::new("git")
        .arg("-C")
        .arg(workspace_root())
        .args([
            "check-ignore",
            "--no-index",
            "--verbose",
            "--non-matching",
            "--",
        ])
        .args(&entries)
        .output()
        .expect("git runs");
    let listed = String::from_utf8_lossy(&output.stdout);
    let not_ignored: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.strip_prefix("::\t"))
        .collect();
    assert_eq!(listed.lines().count(), entries.len(), "{listed}");
    assert!(
        not_ignored.is_empty(),
        "the README journey creates {not_ignored:?}, which .gitignore does not cover"
    );
}

/// Runs command 1 in `work/` with free ports in `TESSERA_GRPC_ADDR`/`TESSERA_HTTP_ADDR`
/// and waits for `/readyz`; returns the addresses and the running issuer.
fn start_command_1(scratch: &Scratch, command_1: &str) -> (SocketAddr, SocketAddr, ProcessGroup) {
    let log_path = scratch.root.join("issuer.log");
    for attempt in 1..=BIND_ATTEMPTS {
        let (grpc_addr, http_addr) = (free_local_addr(), free_local_addr());
        let log = std::fs::File::create(&log_path).expect("create issuer.log");
        let mut command = scratch.command("bash");
        command
            .args(["-c", &format!("set -euo pipefail\n{command_1}")])
            .env("TESSERA_GRPC_ADDR", grpc_addr.to_string())
            .env("TESSERA_HTTP_ADDR", http_addr.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log);
        let mut issuer = ProcessGroup::spawn(command);
        let ready = poll_until(
            patience(Duration::from_secs(60)),
            Duration::from_millis(50),
            || {
                if let Some(status) = issuer.try_wait() {
                    return Some(Err(status));
                }
                let response = http::get(http_addr, "/readyz", &[]).ok()?;
                (response.status == 200).then_some(Ok(()))
            },
        );
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        match ready {
            Some(Ok(())) => return (grpc_addr, http_addr, issuer),
            Some(Err(_)) if attempt < BIND_ATTEMPTS && log.contains("cannot bind") => continue,
            Some(Err(status)) => panic!("command 1 ({command_1}) exited ({status}):\n{log}"),
            None => {
                panic!("command 1 ({command_1}) not ready (raise TESSERA_E2E_PATIENCE):\n{log}")
            }
        }
    }
    unreachable!("the last attempt either returns or panics")
}

/// The README line of the command each [`EXPECTED`] entry names; panics unless each names
/// exactly one command, and unless exactly the commands said to stream do.
fn expected_commands(journey: &Journey) -> Vec<usize> {
    let lines: Vec<usize> = EXPECTED
        .iter()
        .map(|expected| {
            let matching: Vec<_> = journey
                .commands()
                .filter(|command| command.text.contains(expected.command))
                .collect();
            let [command] = matching.as_slice() else {
                panic!(
                    "{:?} should name exactly one README command, names {}: {:?}",
                    expected.command,
                    matching.len(),
                    matching.iter().map(|c| c.line).collect::<Vec<_>>()
                );
            };
            assert_eq!(
                command.streams, expected.streams,
                "README.md line {}: streams until interrupted?",
                command.line
            );
            command.line
        })
        .collect();
    for command in journey.commands().filter(|command| command.streams) {
        assert!(
            lines.contains(&command.line),
            "README.md line {} streams; the test should say what it prints",
            command.line
        );
    }
    lines
}

/// Runs the journey of a Markdown fixture (its blocks under `headings`) in a scratch
/// directory, with `env` added to the script's environment.
fn run_fixture(markdown: &str, headings: &[&str], env: &[(&str, &str)]) -> (Journey, JourneyRun) {
    let journey =
        readme::journey("fixture.md", markdown, headings).unwrap_or_else(|error| panic!("{error}"));
    let scratch = Scratch::new();
    let script = journey
        .script(&[])
        .unwrap_or_else(|error| panic!("{error}"));
    let mut bash = scratch.command("bash");
    bash.envs(env.iter().copied());
    let run = journey.run(
        &script,
        bash,
        &scratch.root.join("journey.sh"),
        &scratch.root.join("journey.log"),
        patience(Duration::from_secs(60)),
    );
    (journey, run)
}
