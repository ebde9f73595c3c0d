//! `tessera-bench`: Tessera's load generator. Each subcommand prints a human table and one
//! JSON line; `all-issue` (and `all-validate`) measure a path and its limits in one run,
//! as DESIGN §10 asks. The RPC scenarios drive the real `tessera-issuer` and
//! `tessera-sidecar` binaries (and the empty server, `serve-empty`) as separate processes
//! pinned to the server cpus (`--server-cpus`, default 0), with this process pinned to
//! the client cpus (`--client-cpus`, default 1): see `procs`.

mod apikeys;
mod challenges;
mod cpu;
mod fixtures;
mod issue_suite;
mod issuer_server;
mod latency;
mod load;
mod noop;
mod onetime;
mod procs;
mod propagation;
mod raw;
mod refresh;
mod report;
mod rpc;
mod sampling;
mod scratch_database;
mod secrets;
#[cfg(feature = "sidecar")]
mod stream_load;
mod transport;
#[cfg(feature = "sidecar")]
mod validate;
#[cfg(feature = "sidecar")]
mod validate_suite;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tessera_common::keys::Algorithm;

use crate::procs::Pinning;
use crate::raw::RawPlan;
use crate::report::{Measurement, print_json, print_table};
use crate::rpc::{EmptyService, RpcPlan};
use crate::transport::Transport;

/// Tessera benchmarks: raw crypto rates, empty-RPC rates on the same server stack, and
/// the real issuance and validation paths, with the limits of DESIGN §10.
#[derive(Parser, Debug)]
#[command(name = "tessera-bench", version)]
struct Cli {
    /// Worker threads of this process's async runtime [default: the cores it may use,
    /// i.e. one once pinned to one core].
    #[arg(long, global = true)]
    runtime_threads: Option<usize>,
    /// Cpus (taskset list) the server processes run on: issuer, sidecar, empty server
    /// and the raw crypto loop; `none` leaves them unpinned [default: 0 on a machine
    /// with 2 or more cores].
    #[arg(long, global = true)]
    server_cpus: Option<String>,
    /// Cpus (taskset list) the RPC scenarios pin this process, the load generator, to;
    /// `none` leaves it unpinned [default: 1 on a machine with 2 or more cores].
    #[arg(long, global = true)]
    client_cpus: Option<String>,
    /// Do not install the issuer's tracing subscriber (the binary installs it).
    #[arg(long, global = true)]
    no_telemetry: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// In-process signing rate with the issuer's parsed-key Signer (and jsonwebtoken).
    RawSign(RawArgs),
    /// In-process verification rate (tessera_common::verify).
    RawVerify(RawArgs),
    /// Serves the empty RPCs (no work, canned answers) until killed; the suites start it
    /// as a separate process pinned to the server cpus.
    ServeEmpty {
        #[arg(long, value_enum, default_value = "tcp")]
        transport: Transport,
        /// `ip:port` (tcp) or socket path (uds).
        #[arg(long)]
        listen: String,
        /// Encoded `IssueAccessTokenResponse` to answer [default: one of --alg's size].
        #[arg(long)]
        issue_response: Option<std::path::PathBuf>,
        /// Encoded `ValidateTokenResponse` to answer [default: one of --alg's size].
        #[arg(long)]
        validate_response: Option<std::path::PathBuf>,
        #[arg(long, value_parser = parse_algorithm, default_value = "RS256")]
        alg: Algorithm,
        /// Set TCP_NODELAY on accepted connections (as the issuer does).
        #[arg(long)]
        server_nodelay: bool,
    },
    /// Rate of an RPC doing no work on the same tonic server stack (a `serve-empty`
    /// process on the server cpus).
    EmptyRpc {
        #[arg(long, value_enum, default_value = "tcp")]
        transport: Transport,
        #[arg(long, value_enum, default_value = "token")]
        service: EmptyService,
        /// Algorithm whose token sizes the canned answers.
        #[arg(long, value_parser = parse_algorithm, default_value = "RS256")]
        alg: Algorithm,
        #[command(flatten)]
        rpc: RpcArgs,
    },
    /// IssueAccessToken throughput and latency against a `tessera-issuer serve` process.
    Issue {
        #[arg(long, value_parser = parse_algorithm, default_value = "RS256")]
        alg: Algorithm,
        #[command(flatten)]
        rpc: RpcArgs,
    },
    /// For each algorithm: raw signing, empty RPC, issuance, the limit and the ratios.
    AllIssue {
        /// Algorithms, comma-separated.
        #[arg(long, value_parser = parse_algorithm, value_delimiter = ',', default_value = "RS256,ES256,EdDSA")]
        algs: Vec<Algorithm>,
        #[command(flatten)]
        sampling: SamplingArgs,
        #[command(flatten)]
        rpc: RpcArgs,
    },
    /// Time from `RevokeTokens` returning to N stream subscribers having the entry.
    Propagation(propagation::PropagationArgs),
    /// RefreshSession throughput on PostgreSQL, and exactly-one-successor checks.
    Refresh(refresh::RefreshArgs),
    /// API keys: cached ValidateApiKey at the sidecar against the empty unary RPC on the
    /// same socket, and first-sight ValidateApiKey at the issuer (SQLite, PostgreSQL).
    #[command(name = "apikeys")]
    ApiKeys(apikeys::ApiKeysArgs),
    /// OTP challenges: VerifyChallenge over distinct challenges at the issuer on
    /// PostgreSQL, each verified once (issue 11 point 9).
    Challenges(challenges::ChallengesArgs),
    /// Single-use tokens: ConsumeActionToken over distinct links at the issuer on
    /// PostgreSQL, with zero double consumption checked from the rows (issue 11 point 9).
    #[command(name = "onetime")]
    OneTime(onetime::OneTimeArgs),
    /// Secrets: cached GetSecret at the sidecar against the empty unary RPC on the same
    /// socket (issue 12 point 7).
    Secrets(secrets::SecretsArgs),
    /// ValidateToken / ValidateStream against a `tessera-sidecar` process over its Unix
    /// socket.
    #[cfg(feature = "sidecar")]
    Validate(validate::ValidateArgs),
    /// The sidecar suite: raw verify, empty unary and stream, validation, limits, ratios.
    #[cfg(feature = "sidecar")]
    AllValidate(validate_suite::AllValidateArgs),
}

/// Options of the in-process crypto measurements.
#[derive(Args, Debug)]
struct RawArgs {
    #[arg(long, value_parser = parse_algorithm, default_value = "RS256")]
    alg: Algorithm,
    /// Threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// raw-sign: measure the issuer's Signer only (not jsonwebtoken beside it).
    #[arg(long)]
    signer_only: bool,
    #[command(flatten)]
    timing: Timing,
}

/// How the suites sample each quantity on a shared machine.
#[derive(Args, Debug, Clone, Copy)]
pub struct SamplingArgs {
    /// A sample during which other processes used more than this share of the CPU (0–1)
    /// is taken again (the machine is shared).
    #[arg(long, default_value_t = 0.10)]
    max_foreign_cpu: f64,
    /// Attempts per sample before keeping the least disturbed one.
    #[arg(long, default_value_t = 4)]
    attempts: usize,
    /// Samples per quantity; the median is reported (runs vary by up to ±25 % on 2
    /// shared cores, with the scheduler's placement of connections).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

impl SamplingArgs {
    /// Returns the sampling policy.
    pub fn quiet(self) -> sampling::Quiet {
        sampling::Quiet {
            max_foreign_cpu: self.max_foreign_cpu,
            attempts: self.attempts,
            repeats: self.repeats,
        }
    }
}

/// Options of the RPC measurements.
#[derive(Args, Debug, Clone, Copy)]
struct RpcArgs {
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Empty servers set TCP_NODELAY on accepted connections, as the issuer's gRPC
    /// listener does (bench/run.sh passes it; off, the baseline shows Nagle's cost).
    #[arg(long)]
    server_nodelay: bool,
    /// Calls per second, paced by a dedicated thread (open loop), instead of flat out.
    #[arg(long)]
    rate: Option<f64>,
    #[command(flatten)]
    timing: Timing,
}

/// How long to warm up and to measure.
#[derive(Args, Debug, Clone, Copy)]
pub struct Timing {
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds run before measuring (not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

impl Timing {
    fn warmup(self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }

    fn measure(self) -> Duration {
        Duration::from_secs_f64(self.seconds.max(0.1))
    }
}

impl RpcArgs {
    fn plan(self) -> RpcPlan {
        RpcPlan {
            concurrency: self.concurrency.max(1),
            connections: self.connections.max(1),
            warmup: self.timing.warmup(),
            measure: self.timing.measure(),
            server_nodelay: self.server_nodelay,
            rate: self.rate,
        }
    }
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    text.parse::<Algorithm>()
        .map_err(|_| format!("`{text}` is not one of RS256, ES256, EdDSA"))
}

/// Returns the number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn raw_plan(threads: Option<usize>, timing: Timing) -> RawPlan {
    RawPlan {
        threads: threads.unwrap_or_else(cores).max(1),
        warmup: timing.warmup(),
        measure: timing.measure(),
    }
}

/// Resolves a `--server-cpus` / `--client-cpus` value: `none` unpins; absent, `default`
/// on a machine with 2 or more cores.
fn cpus(given: Option<&str>, default: &str) -> Option<String> {
    match given {
        Some("none") => None,
        Some(cpus) => Some(cpus.to_owned()),
        None if cores() >= 2 => Some(default.to_owned()),
        None => None,
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let drives_servers = matches!(
        cli.command,
        Command::EmptyRpc { .. }
            | Command::Issue { .. }
            | Command::AllIssue { .. }
            | Command::ApiKeys(_)
            | Command::Challenges(_)
            | Command::OneTime(_)
            | Command::Secrets(_)
    ) || is_validate(&cli.command);
    if drives_servers {
        let pinning = Pinning {
            server: cpus(cli.server_cpus.as_deref(), "0"),
            client: cpus(cli.client_cpus.as_deref(), "1"),
        };
        // Before the runtime starts: its threads inherit the affinity.
        if let Some(client) = &pinning.client {
            procs::pin_self(client)?;
        }
        procs::set_pinning(pinning);
        procs::print_setup();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.runtime_threads.unwrap_or_else(cores).max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let _telemetry = (!cli.no_telemetry)
            .then(|| tessera_common::telemetry::init("tessera-bench", None, false));
        run(cli.command).await
    })
}

#[cfg(feature = "sidecar")]
fn is_validate(command: &Command) -> bool {
    matches!(command, Command::Validate(_) | Command::AllValidate(_))
}

#[cfg(not(feature = "sidecar"))]
fn is_validate(_: &Command) -> bool {
    false
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::RawSign(args) => {
            let plan = raw_plan(args.threads, args.timing);
            let alg = args.alg;
            let signer_only = args.signer_only;
            let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let mut rows = vec![raw::sign(alg, plan)?];
                if !signer_only {
                    rows.push(raw::sign_jsonwebtoken(alg, plan)?);
                }
                Ok(rows)
            })
            .await??;
            emit("raw-sign", &rows);
        }
        Command::RawVerify(args) => {
            let plan = raw_plan(args.threads, args.timing);
            let alg = args.alg;
            let row = tokio::task::spawn_blocking(move || raw::verify(alg, plan)).await??;
            emit("raw-verify", &[row]);
        }
        Command::ServeEmpty {
            transport,
            listen,
            issue_response,
            validate_response,
            alg,
            server_nodelay,
        } => {
            let mut canned = rpc::canned(alg)?;
            if let Some(path) = issue_response {
                canned.issue = prost::Message::decode(std::fs::read(path)?.as_slice())?;
            }
            if let Some(path) = validate_response {
                canned.validate = prost::Message::decode(std::fs::read(path)?.as_slice())?;
            }
            noop::serve(transport, &listen, canned, server_nodelay).await?;
        }
        Command::EmptyRpc {
            transport,
            service,
            alg,
            rpc,
        } => {
            let row = rpc::empty(transport, service, alg, rpc.plan()).await?;
            emit("empty-rpc", &[row]);
        }
        Command::Issue { alg, rpc } => {
            let row = rpc::issue(alg, rpc.plan()).await?;
            emit("issue", &[row]);
        }
        Command::AllIssue {
            algs,
            sampling,
            rpc,
        } => {
            issue_suite::run(&algs, rpc.timing, rpc.plan(), sampling.quiet()).await?;
        }
        Command::Propagation(args) => {
            print_json(&propagation::run(args).await?);
        }
        Command::Refresh(args) => {
            print_json(&refresh::run(args).await?);
        }
        Command::ApiKeys(args) => {
            apikeys::run(&args).await?;
        }
        Command::Challenges(args) => {
            challenges::run(&args).await?;
        }
        Command::OneTime(args) => {
            onetime::run(&args).await?;
        }
        Command::Secrets(args) => {
            secrets::run(&args).await?;
        }
        #[cfg(feature = "sidecar")]
        Command::Validate(args) => {
            let row = validate::run(&args).await?;
            emit("validate", &[row]);
        }
        #[cfg(feature = "sidecar")]
        Command::AllValidate(args) => {
            validate_suite::run(&args).await?;
        }
    }
    Ok(())
}

/// Prints `rows` as a table and as one JSON line.
fn emit(bench: &str, rows: &[Measurement]) {
    print_table(bench, rows);
    print_json(&serde_json::json!({ "bench": bench, "results": rows }));
}
