//! `all-validate`: the sidecar's DESIGN §10 targets in one run, every server a separate
//! process on the server cpus and this process (the load generator) on the client cpus:
//! raw RS256 verify (one thread on the server cpus), the empty unary and empty stream
//! (`serve-empty`, answering the sidecar's own answer over a Unix socket), unary and
//! stream validation of distinct and repeat tokens by `tessera-sidecar`, and p99 at half
//! the saturating unary load beside the empty RPC's p99 at that paced load; then the
//! limits, the ratios and which targets are met.

use clap::Args;
use serde::Serialize;
use tessera_common::keys::Algorithm;
use tonic::metadata::MetadataValue;

use crate::noop::Canned;
use crate::procs::{self, EmptyProcess, RawKind};
use crate::report::{self, Measurement, additive_limit};
use crate::rpc::{self, EmptyService, RpcPlan};
use crate::sampling::quietest;
use crate::stream_load::run_stream;
use crate::transport::{self, Transport};
use crate::validate::{self, Setup, Tokens, ValidateArgs};

/// Streamed repeat-token target, validations per second (DESIGN §10).
const STREAM_REPEAT_TARGET: f64 = 300_000.0;

/// `all-validate` options: the `validate` options plus signing threads.
#[derive(Args, Debug, Clone, Copy)]
pub struct AllValidateArgs {
    #[command(flatten)]
    pub validate: ValidateArgs,
    #[command(flatten)]
    pub sampling: crate::SamplingArgs,
    /// Tasks sharing the half-load (paced, open-loop) calls; a call waits when all are
    /// busy, which the from-schedule latency shows. As many as the saturating run's
    /// calls in flight: with 16, a repeat-token half load (~25k/s at ~0.7 ms per call
    /// on one client core) needs more calls in flight than tasks and falls behind.
    #[arg(long, default_value_t = 64)]
    pub paced_concurrency: usize,
}

/// One target: the measured value, its bound and whether it is met.
#[derive(Debug, Serialize)]
pub struct Check {
    pub target: &'static str,
    pub measured: f64,
    /// What the target is a multiple of (a limit, a rate, the empty RPC's p99).
    pub reference: f64,
    /// measured / reference, against `factor`.
    pub ratio: f64,
    pub factor: f64,
    pub bound: f64,
    pub met: bool,
}

/// Runs the suite and prints the tables, the checks and a JSON line.
pub async fn run(args: &AllValidateArgs) -> anyhow::Result<()> {
    let v = &args.validate;
    let rpc_plan = RpcPlan {
        concurrency: v.concurrency.max(1),
        connections: v.connections.max(1),
        warmup: v.timing.warmup(),
        measure: v.timing.measure(),
        server_nodelay: false,
        rate: None,
    };
    let quiet = args.sampling.quiet();
    eprintln!("[all-validate] raw verify (1 thread on the server cpus)…");
    let raw_verify = quietest(quiet, || {
        procs::raw_on_server_cpus(RawKind::Verify, Algorithm::Rs256, v.timing)
    })
    .await?;

    eprintln!("[all-validate] distinct tokens: issuer, sidecar (cache off), empty server…");
    let setup = Setup::start(Tokens::Distinct, v.connections).await?;
    // The empty server answers the sidecar's own answer and receives the same tokens.
    let canned = Canned {
        validate: setup.answer.clone(),
        ..Canned::default()
    };
    let empty = EmptyProcess::start(Transport::Uds, &canned, false).await?;
    let empty_tokens = setup.tokens.clone();
    let empty_unary_plan = |plan: RpcPlan| {
        let name = rpc::empty_name(EmptyService::Validate, "same-size", Transport::Uds, plan);
        let (target, tokens) = (empty.target.clone(), empty_tokens.clone());
        async move {
            rpc::empty_calls(
                &name,
                &target,
                EmptyService::Validate,
                MetadataValue::from_static(""),
                tokens,
                plan,
            )
            .await
        }
    };
    let empty_unary = quietest(quiet, || empty_unary_plan(rpc_plan)).await?;
    let empty_stream = quietest(quiet, || empty_stream(&empty, &setup, v)).await?;
    let saturating = validate::unary_plan(v, None);
    let unary_distinct = quietest(quiet, || {
        validate::unary(&setup, Tokens::Distinct, saturating)
    })
    .await?;
    let half = paced(args, unary_distinct.rate / 2.0);
    let paced_distinct =
        quietest(quiet, || validate::unary(&setup, Tokens::Distinct, half)).await?;
    // The empty RPC at the same paced load: the floor under the p99 target.
    let paced_empty_distinct = quietest(quiet, || {
        empty_unary_plan(RpcPlan {
            concurrency: half.concurrency,
            rate: half.rate,
            ..rpc_plan
        })
    })
    .await?;
    let streamed = validate::stream_plan(v);
    let stream_distinct = quietest(quiet, || {
        validate::stream(&setup, Tokens::Distinct, streamed)
    })
    .await?;
    drop(setup);

    eprintln!("[all-validate] repeat tokens: issuer, sidecar (cache on)…");
    let setup = Setup::start(Tokens::Repeat, v.connections).await?;
    let unary_repeat = quietest(quiet, || {
        validate::unary(&setup, Tokens::Repeat, saturating)
    })
    .await?;
    let half = paced(args, unary_repeat.rate / 2.0);
    let paced_repeat = quietest(quiet, || validate::unary(&setup, Tokens::Repeat, half)).await?;
    let paced_empty_repeat = quietest(quiet, || {
        empty_unary_plan(RpcPlan {
            concurrency: half.concurrency,
            rate: half.rate,
            ..rpc_plan
        })
    })
    .await?;
    let stream_repeat =
        quietest(quiet, || validate::stream(&setup, Tokens::Repeat, streamed)).await?;
    drop(setup);
    drop(empty);

    let unary_limit = additive_limit(raw_verify.rate, empty_unary.rate);
    let stream_limit = additive_limit(raw_verify.rate, empty_stream.rate);
    let p99 = |m: &Measurement| m.latency.map_or(f64::INFINITY, |l| l.p99_us);
    let checks = vec![
        check(
            "unary distinct ≥ 80 % of limit(raw verify, empty unary)",
            unary_distinct.rate,
            0.8,
            unary_limit,
            &unary_distinct,
        ),
        check(
            "unary repeat ≥ 80 % of empty unary",
            unary_repeat.rate,
            0.8,
            empty_unary.rate,
            &unary_repeat,
        ),
        at_most(
            "p99 at half load ≤ 2× empty p99 at that load, distinct",
            p99(&paced_distinct),
            2.0,
            p99(&paced_empty_distinct),
            &paced_distinct,
        ),
        at_most(
            "p99 at half load ≤ 2× empty p99 at that load, repeat",
            p99(&paced_repeat),
            2.0,
            p99(&paced_empty_repeat),
            &paced_repeat,
        ),
        check(
            "stream distinct ≥ 80 % of raw verify (one core)",
            stream_distinct.rate,
            0.8,
            raw_verify.rate,
            &stream_distinct,
        ),
        check(
            "stream repeat ≥ 300,000/s",
            stream_repeat.rate,
            1.0,
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
        paced_empty_distinct,
        stream_distinct,
        unary_repeat,
        paced_repeat,
        paced_empty_repeat,
        stream_repeat,
    ];
    report::print_table("all-validate", &measurements);
    println!(
        "\n== validation targets (limits: unary {unary_limit:.0}/s, stream {stream_limit:.0}/s) =="
    );
    for check in &checks {
        println!(
            "{} {:<58} measured {:>9.0} / reference {:>9.0} = {:>5.2} (target {}{:.2}; bound {:.0})",
            if check.met { "✓" } else { "✗" },
            check.target,
            check.measured,
            check.reference,
            check.ratio,
            if check.target.starts_with("p99") {
                "≤ "
            } else {
                "≥ "
            },
            check.factor,
            check.bound
        );
    }
    report::print_json(&serde_json::json!({
        "bench": "all-validate",
        "pinning": procs::pinning_json(),
        "unary_limit": unary_limit,
        "stream_limit": stream_limit,
        "checks": checks,
        "results": measurements,
    }));
    Ok(())
}

/// Measures the empty stream: the no-op `ValidateStream` of `empty`, same driver and
/// tokens as the real stream.
async fn empty_stream(
    empty: &EmptyProcess,
    setup: &Setup,
    v: &ValidateArgs,
) -> anyhow::Result<Measurement> {
    let channels = transport::connect(&empty.target, v.connections).await?;
    let plan = validate::stream_plan(v);
    let name = format!(
        "empty ValidateStream same-size (uds, {}×{} in flight)",
        plan.streams, plan.in_flight
    );
    run_stream(&name, &channels, setup.tokens.clone(), plan, true).await
}

/// The half-load plan: `rate` calls per second from `paced_concurrency` tasks.
fn paced(args: &AllValidateArgs, rate: f64) -> crate::load::UnaryPlan {
    let mut plan = validate::unary_plan(&args.validate, Some(rate));
    plan.concurrency = args.paced_concurrency.max(1);
    plan
}

/// measured ≥ factor × reference.
fn check(
    target: &'static str,
    measured: f64,
    factor: f64,
    reference: f64,
    m: &Measurement,
) -> Check {
    let bound = factor * reference;
    Check {
        target,
        measured,
        reference,
        ratio: measured / reference,
        factor,
        bound,
        met: measured >= bound && m.errors == 0,
    }
}

/// measured ≤ factor × reference.
fn at_most(
    target: &'static str,
    measured: f64,
    factor: f64,
    reference: f64,
    m: &Measurement,
) -> Check {
    let bound = factor * reference;
    Check {
        target,
        measured,
        reference,
        ratio: measured / reference,
        factor,
        bound,
        met: measured <= bound && m.errors == 0,
    }
}
