//! `all-validate`: the sidecar's DESIGN §10 targets in one run — raw RS256 verify, the
//! empty unary and empty stream rates over the Unix socket on the same server stack, and
//! unary/stream validation of distinct and repeat tokens, plus p99 at half the saturating
//! unary load; then the limits, the ratios and which targets are met.

use std::sync::Arc;

use clap::Args;
use serde::Serialize;
use tessera_common::keys::Algorithm;

use crate::noop::EmptyServer;
use crate::raw::{self, RawPlan};
use crate::report::{self, Measurement, additive_limit};
use crate::rpc::{self, EmptyService, RpcPlan};
use crate::sampling::quietest;
use crate::stream_load::run_stream;
use crate::transport::{self, Transport};
use crate::validate::{self, Setup, Tokens, ValidateArgs};

/// Streamed repeat-token target, validations per second (DESIGN §10).
const STREAM_REPEAT_TARGET: f64 = 300_000.0;
/// p99 target at half the saturating load, microseconds (DESIGN §10).
const P99_TARGET_US: f64 = 250.0;

/// `all-validate` options: the `validate` options plus signing threads.
#[derive(Args, Debug, Clone, Copy)]
pub struct AllValidateArgs {
    #[command(flatten)]
    pub validate: ValidateArgs,
    #[command(flatten)]
    pub sampling: crate::SamplingArgs,
    /// Threads for the raw verify rate [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Tasks sharing the half-load (paced, open-loop) calls; a call waits when all are
    /// busy, which the from-schedule latency shows.
    #[arg(long, default_value_t = 16)]
    pub paced_concurrency: usize,
}

/// One target: the measured value, its bound and whether it is met.
#[derive(Debug, Serialize)]
pub struct Check {
    pub target: &'static str,
    pub measured: f64,
    pub bound: f64,
    pub met: bool,
}

/// Runs the suite and prints the tables, the checks and a JSON line.
pub async fn run(args: &AllValidateArgs) -> anyhow::Result<()> {
    let v = &args.validate;
    let raw_plan = RawPlan {
        threads: args.threads.unwrap_or_else(crate::cores).max(1),
        warmup: v.timing.warmup(),
        measure: v.timing.measure(),
    };
    let rpc_plan = RpcPlan {
        concurrency: v.concurrency.max(1),
        connections: v.connections.max(1),
        warmup: v.timing.warmup(),
        measure: v.timing.measure(),
        server_nodelay: false,
        rate: None,
    };
    let quiet = args.sampling.quiet();
    eprintln!("[all-validate] raw verify…");
    let raw_verify = quietest(quiet, || async {
        tokio::task::spawn_blocking(move || raw::verify(Algorithm::Rs256, raw_plan)).await?
    })
    .await?;
    eprintln!("[all-validate] empty unary and stream…");
    let empty_unary = quietest(quiet, || {
        rpc::empty(
            Transport::Uds,
            EmptyService::Validate,
            Algorithm::Rs256,
            rpc_plan,
        )
    })
    .await?;
    let empty_stream = quietest(quiet, || empty_stream(v)).await?;

    eprintln!("[all-validate] distinct tokens…");
    let setup = Setup::start(Tokens::Distinct, v.connections).await?;
    let saturating = validate::unary_plan(v, None);
    let unary_distinct = quietest(quiet, || {
        validate::unary(&setup, Tokens::Distinct, saturating)
    })
    .await?;
    let half = paced(args, unary_distinct.rate / 2.0);
    let paced_distinct =
        quietest(quiet, || validate::unary(&setup, Tokens::Distinct, half)).await?;
    // The transport's own latency at the same paced load: the floor under the p99 target.
    let paced_empty_plan = RpcPlan {
        concurrency: half.concurrency,
        rate: half.rate,
        ..rpc_plan
    };
    let paced_empty = quietest(quiet, || {
        rpc::empty(
            Transport::Uds,
            EmptyService::Validate,
            Algorithm::Rs256,
            paced_empty_plan,
        )
    })
    .await?;
    let streamed = validate::stream_plan(v);
    let stream_distinct = quietest(quiet, || {
        validate::stream(&setup, Tokens::Distinct, streamed)
    })
    .await?;
    setup.stop().await?;

    eprintln!("[all-validate] repeat tokens…");
    let setup = Setup::start(Tokens::Repeat, v.connections).await?;
    let unary_repeat = quietest(quiet, || {
        validate::unary(&setup, Tokens::Repeat, saturating)
    })
    .await?;
    let half = paced(args, unary_repeat.rate / 2.0);
    let paced_repeat = quietest(quiet, || validate::unary(&setup, Tokens::Repeat, half)).await?;
    let stream_repeat =
        quietest(quiet, || validate::stream(&setup, Tokens::Repeat, streamed)).await?;
    setup.stop().await?;

    let unary_limit = additive_limit(raw_verify.rate, empty_unary.rate);
    let p99 = |m: &Measurement| m.latency.map_or(f64::INFINITY, |l| l.p99_us);
    let checks = vec![
        check(
            "unary distinct ≥ 80 % of limit(raw verify, empty unary)",
            unary_distinct.rate,
            0.8 * unary_limit,
            &unary_distinct,
        ),
        check(
            "unary repeat ≥ 80 % of empty unary",
            unary_repeat.rate,
            0.8 * empty_unary.rate,
            &unary_repeat,
        ),
        at_most(
            "p99 < 250 µs at half load, distinct",
            p99(&paced_distinct),
            &paced_distinct,
        ),
        at_most(
            "p99 < 250 µs at half load, repeat",
            p99(&paced_repeat),
            &paced_repeat,
        ),
        check(
            "stream distinct ≥ 80 % of raw verify",
            stream_distinct.rate,
            0.8 * raw_verify.rate,
            &stream_distinct,
        ),
        check(
            "stream repeat ≥ 300,000/s",
            stream_repeat.rate,
            STREAM_REPEAT_TARGET,
            &stream_repeat,
        ),
    ];
    let measurements = vec![
        raw_verify,
        empty_unary,
        empty_stream,
        unary_distinct,
        paced_distinct,
        paced_empty,
        stream_distinct,
        unary_repeat,
        paced_repeat,
        stream_repeat,
    ];
    report::print_table("all-validate", &measurements);
    println!("\n== validation targets (unary limit {unary_limit:.0}/s) ==");
    for check in &checks {
        println!(
            "{} {:<58} measured {:>10.0}  bound {:>10.0}",
            if check.met { "✓" } else { "✗" },
            check.target,
            check.measured,
            check.bound
        );
    }
    report::print_json(&serde_json::json!({
        "bench": "all-validate",
        "unary_limit": unary_limit,
        "checks": checks,
        "results": measurements,
    }));
    Ok(())
}

/// Measures the empty stream: the no-op `ValidateStream` over the socket, same driver.
async fn empty_stream(v: &ValidateArgs) -> anyhow::Result<Measurement> {
    let canned = rpc::canned(Algorithm::Rs256)?;
    let tokens = Arc::new(vec![canned.issue.token.clone()]);
    let server = EmptyServer::start(Transport::Uds, canned, false).await?;
    let channels = transport::connect(&server.target, v.connections).await?;
    let plan = validate::stream_plan(v);
    let name = format!(
        "empty ValidateStream (uds, {}×{} in flight)",
        plan.streams, plan.in_flight
    );
    let measurement = run_stream(&name, &channels, tokens, plan, true).await;
    drop(channels);
    server.stop().await;
    measurement
}

/// The half-load plan: `rate` calls per second from `paced_concurrency` tasks.
fn paced(args: &AllValidateArgs, rate: f64) -> crate::load::UnaryPlan {
    let mut plan = validate::unary_plan(&args.validate, Some(rate));
    plan.concurrency = args.paced_concurrency.max(1);
    plan
}

fn check(target: &'static str, measured: f64, bound: f64, m: &Measurement) -> Check {
    Check {
        target,
        measured,
        bound,
        met: measured >= bound && m.errors == 0,
    }
}

fn at_most(target: &'static str, measured_us: f64, m: &Measurement) -> Check {
    Check {
        target,
        measured: measured_us,
        bound: P99_TARGET_US,
        met: measured_us < P99_TARGET_US && m.errors == 0,
    }
}
