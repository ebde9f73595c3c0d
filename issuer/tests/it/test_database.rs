//! Where the PostgreSQL cases of a test binary find their database: the one place that
//! reads `TESSERA_TEST_DATABASE_URL` and `TESSERA_REQUIRE_POSTGRES`. Shared by the issuer's
//! `it` binary and (through `#[path]`) the end-to-end `e2e` binary.
//!
//! The URL is `TESSERA_TEST_DATABASE_URL`, or the local default [`DEFAULT_URL`] when it
//! is unset; it is probed once per test binary. When it answers, every PostgreSQL case
//! runs. When it does not, each case prints `SKIPPED (no PostgreSQL at …): <test name>`
//! and returns (libtest has no skip status, so it is reported as passed), and the
//! always-run test `postgres_availability` writes the count and names of those cases
//! straight to the terminal, past libtest's output capture. With
//! `TESSERA_REQUIRE_POSTGRES=1` (CI) a database that does not answer fails every case.
//!
//! A PostgreSQL case is recognised by name: its path contains `postgres`
//! ([`database_url`] refuses to serve a test named otherwise), which is how
//! `postgres_availability` finds them all in the binary's own `--list`; a test in such a
//! path that needs no database says so with `no_database` in its name.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

/// The database the PostgreSQL cases run against.
pub const URL_VAR: &str = "TESSERA_TEST_DATABASE_URL";
/// Set to `1` (CI) to make a database that does not answer a failure instead of a skip.
pub const REQUIRE_VAR: &str = "TESSERA_REQUIRE_POSTGRES";
/// The database tried when [`URL_VAR`] is unset (what `.ci/run` uses).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// How long the probe waits for the database to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// What every PostgreSQL case's full name contains.
const CASE_MARK: &str = "postgres";
/// The always-run test of this module (its name contains the mark too).
const AVAILABILITY_TEST: &str = "postgres_availability";
/// What marks a test under a `postgres` path that needs no database.
const NO_DATABASE_MARK: &str = "no_database";

/// Whether the test database answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    Answers { url: String },
    Missing { url: String, why: String },
}

/// Returns the URL to try: [`URL_VAR`] when set (and not blank), else [`DEFAULT_URL`].
pub fn candidate_url(from_env: Option<String>) -> String {
    from_env
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// Returns whether `url` answers a query within [`PROBE_TIMEOUT`].
pub fn probe(url: &str) -> Availability {
    let target = url.to_owned();
    // A runtime of its own, on a thread of its own: callers may be inside a runtime.
    let outcome = std::thread::spawn(move || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        runtime.block_on(async {
            let mut config: tokio_postgres::Config = target
                .parse()
                .map_err(|error| format!("bad URL: {error}"))?;
            config.connect_timeout(PROBE_TIMEOUT);
            let query = async {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|error| error.to_string())?;
                tokio::spawn(connection);
                client
                    .simple_query("SELECT 1")
                    .await
                    .map(drop)
                    .map_err(|error| error.to_string())
            };
            tokio::time::timeout(PROBE_TIMEOUT, query)
                .await
                .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))?
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the probe panicked".to_owned()));
    match outcome {
        Ok(()) => Availability::Answers {
            url: url.to_owned(),
        },
        Err(why) => Availability::Missing {
            url: url.to_owned(),
            why,
        },
    }
}

/// This binary's answer, probed on first use.
pub fn availability() -> &'static Availability {
    static AVAILABILITY: OnceLock<Availability> = OnceLock::new();
    AVAILABILITY.get_or_init(|| probe(&candidate_url(std::env::var(URL_VAR).ok())))
}

/// Returns whether [`REQUIRE_VAR`] is `1`.
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).as_deref() == Ok("1")
}

/// Returns the database URL for the running PostgreSQL case, or `None` after printing
/// the skip line; panics when the database is required but does not answer.
pub fn database_url() -> Option<String> {
    let name = current_test_name();
    url_for(&name, availability(), required())
}

/// The decision behind [`database_url`], for test `name`.
pub fn url_for(name: &str, availability: &Availability, required: bool) -> Option<String> {
    assert!(
        name.contains(CASE_MARK) && !name.contains(NO_DATABASE_MARK),
        "test `{name}` needs PostgreSQL, so its name must contain `{CASE_MARK}` (that is how \
         `{AVAILABILITY_TEST}` counts the skipped cases)"
    );
    match availability {
        Availability::Answers { url } => Some(url.clone()),
        Availability::Missing { url, why } if required => panic!(
            "{REQUIRE_VAR}=1 but no PostgreSQL answers at {} ({why}): {name} cannot run",
            redacted(url)
        ),
        Availability::Missing { url, why } => {
            eprintln!(
                "SKIPPED (no PostgreSQL at {}: {why}): {name}",
                redacted(url)
            );
            None
        }
    }
}

/// The running test's name (libtest names each test's thread after it).
fn current_test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned()
}

/// `url` without a password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let user_info = &url[scheme_end + 3..at];
            match user_info.split_once(':') {
                Some((user, _password)) => {
                    format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The PostgreSQL cases of this test binary, from its own `--list`.
pub fn postgres_cases() -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let output = std::process::Command::new(exe)
        .args(["--list", "--format", "terse"])
        .output()
        .expect("the test binary lists its tests");
    assert!(output.status.success(), "`--list` failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .filter(|name| {
            name.contains(CASE_MARK)
                && !name.contains(NO_DATABASE_MARK)
                && !name.ends_with(AVAILABILITY_TEST)
        })
        .map(str::to_owned)
        .collect()
}

/// Writes `text` to stderr past libtest's capture (which takes only `print!`/`eprint!`),
/// so the summary shows in a plain `cargo test`.
fn report(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// The always-run summary: how many PostgreSQL cases this binary runs or skips, and
/// which. Fails like the cases themselves when the database is required and missing.
#[test]
fn postgres_availability() {
    let cases = postgres_cases();
    assert!(
        !cases.is_empty(),
        "no test named `…{CASE_MARK}…` found in this binary"
    );
    match availability() {
        Availability::Answers { url } => report(&format!(
            "PostgreSQL at {} answers: PostgreSQL cases run: {}",
            redacted(url),
            cases.len()
        )),
        Availability::Missing { url, why } => {
            assert!(
                !required(),
                "{REQUIRE_VAR}=1 but no PostgreSQL answers at {} ({why}): {} cases cannot run",
                redacted(url),
                cases.len()
            );
            report(&format!(
                "PostgreSQL cases SKIPPED: {} (no PostgreSQL at {}: {why}; set {URL_VAR} or \
                 start one there):\n  {}",
                cases.len(),
                redacted(url),
                cases.join("\n  ")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing listens on port 1 of the loopback address.
    const UNREACHABLE: &str = "postgres://postgres@127.0.0.1:1/test";

    #[test]
    fn the_local_default_is_tried_when_the_variable_is_unset_or_blank() {
        assert_eq!(candidate_url(None), DEFAULT_URL);
        assert_eq!(candidate_url(Some("  ".into())), DEFAULT_URL);
        assert_eq!(candidate_url(Some(UNREACHABLE.into())), UNREACHABLE);
    }

    #[test]
    fn an_unreachable_database_skips_the_case_when_not_required() {
        let availability = probe(UNREACHABLE);
        assert!(
            matches!(&availability, Availability::Missing { url, .. } if url == UNREACHABLE),
            "{availability:?}"
        );
        assert_eq!(url_for("it::postgres::case", &availability, false), None);
    }

    #[test]
    #[should_panic(expected = "TESSERA_REQUIRE_POSTGRES=1 but no PostgreSQL answers")]
    fn an_unreachable_database_fails_the_case_when_required() {
        url_for("it::postgres::case", &probe(UNREACHABLE), true);
    }

    #[test]
    fn an_answering_database_runs_the_case() {
        let answers = Availability::Answers {
            url: DEFAULT_URL.into(),
        };
        assert_eq!(
            url_for("it::postgres::case", &answers, true).as_deref(),
            Some(DEFAULT_URL)
        );
    }

    #[test]
    #[should_panic(expected = "must contain `postgres`")]
    fn a_case_not_named_for_the_database_is_refused() {
        url_for("it::sqlite::case", &probe(UNREACHABLE), false);
    }

    #[test]
    fn passwords_stay_out_of_the_messages() {
        assert_eq!(
            redacted("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redacted(DEFAULT_URL), DEFAULT_URL);
    }
}
