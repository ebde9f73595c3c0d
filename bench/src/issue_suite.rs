//! `all-issue`: for each algorithm, in one run, the raw signing rate (one thread on the
//! server cpus), the empty `IssueAccessToken` rate over TCP at the same concurrency
//! (`serve-empty` answering a copy of the issuer's answer), and real issuance by a
//! `tessera-issuer serve` process on the server cpus, driven from the client cpus; then
//! the additive limit `1/(1/raw + 1/empty)` and the ratios issue/limit and issue/raw
//! (DESIGN §10, issue 2 point 15).

use serde::Serialize;
use tessera_common::keys::Algorithm;

use crate::Timing;
use crate::latency::Percentiles;
use crate::noop::Canned;
use crate::procs::{self, EmptyProcess, IssuerProcess, RawKind};
use crate::report::{self, Measurement, additive_limit};
use crate::rpc::{self, EmptyService, RpcPlan};
use crate::sampling::{Quiet, quietest};
use crate::transport::Transport;

/// Target share of the limit (DESIGN §10).
const TARGET_RATIO: f64 = 0.80;

/// One algorithm's line of the summary.
#[derive(Debug, Serialize)]
pub struct IssueSummary {
    pub algorithm: String,
    pub raw_sign_rate: f64,
    pub empty_rpc_rate: f64,
    pub issuer_health_rate: f64,
    pub limit: f64,
    pub issue_rate: f64,
    pub issue_over_limit: f64,
    pub issue_over_raw: f64,
    pub meets_limit_target: bool,
    pub meets_raw_target: bool,
    pub issue_latency: Option<Percentiles>,
    /// Largest share of the CPU other processes used during any of these measurements.
    pub max_foreign_cpu: f64,
    pub measurements: Vec<Measurement>,
}

/// Runs the suite for `algorithms` and prints every table, the summary and a JSON line.
pub async fn run(
    algorithms: &[Algorithm],
    timing: Timing,
    rpc_plan: RpcPlan,
    quiet: Quiet,
) -> anyhow::Result<Vec<IssueSummary>> {
    let mut summaries = Vec::new();
    for &algorithm in algorithms {
        let summary = run_one(algorithm, timing, rpc_plan, quiet).await?;
        report::print_table(&format!("all-issue {algorithm}"), &summary.measurements);
        summaries.push(summary);
    }
    print_summary(&summaries, rpc_plan);
    report::print_json(&serde_json::json!({
        "bench": "all-issue",
        "pinning": procs::pinning_json(),
        "raw_threads": 1,
        "concurrency": rpc_plan.concurrency,
        "connections": rpc_plan.connections,
        "seconds": rpc_plan.measure.as_secs_f64(),
        "results": summaries,
    }));
    Ok(summaries)
}

async fn run_one(
    algorithm: Algorithm,
    timing: Timing,
    rpc_plan: RpcPlan,
    quiet: Quiet,
) -> anyhow::Result<IssueSummary> {
    eprintln!("[all-issue {algorithm}] raw signing (1 thread on the server cpus)…");
    let raw_sign = quietest(quiet, || {
        procs::raw_on_server_cpus(RawKind::Sign, algorithm, timing)
    })
    .await?;
    eprintln!("[all-issue {algorithm}] issuer and empty server…");
    let issuer = IssuerProcess::start(algorithm).await?;
    // The empty server answers a copy of the issuer's own answer, to the same request
    // with the same credential header.
    let canned = Canned {
        issue: rpc::one_issue(&issuer).await?,
        ..Canned::default()
    };
    let empty_server =
        EmptyProcess::start(Transport::Tcp, &canned, rpc_plan.server_nodelay).await?;
    let empty_name = rpc::empty_name(EmptyService::Token, "same-size", Transport::Tcp, rpc_plan);
    let empty = quietest(quiet, || {
        rpc::token_calls(
            &empty_name,
            &empty_server.target,
            issuer.authorization.clone(),
            rpc_plan,
        )
    })
    .await?;
    drop(empty_server);
    eprintln!("[all-issue {algorithm}] issuance…");
    let health = quietest(quiet, || rpc::health_on_issuer(&issuer, rpc_plan)).await?;
    let issue = quietest(quiet, || rpc::issue_against(&issuer, algorithm, rpc_plan)).await?;
    drop(issuer);

    let limit = additive_limit(raw_sign.rate, empty.rate);
    let issue_over_limit = ratio(issue.rate, limit);
    let issue_over_raw = ratio(issue.rate, raw_sign.rate);
    Ok(IssueSummary {
        algorithm: algorithm.to_string(),
        raw_sign_rate: raw_sign.rate,
        empty_rpc_rate: empty.rate,
        issuer_health_rate: health.rate,
        limit,
        issue_rate: issue.rate,
        issue_over_limit,
        issue_over_raw,
        meets_limit_target: issue_over_limit >= TARGET_RATIO && issue.errors == 0,
        meets_raw_target: issue_over_raw >= TARGET_RATIO && issue.errors == 0,
        issue_latency: issue.latency,
        max_foreign_cpu: [&raw_sign, &empty, &issue]
            .iter()
            .filter_map(|m| m.foreign_cpu)
            .fold(0.0, f64::max),
        measurements: vec![raw_sign, empty, health, issue],
    })
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

fn print_summary(summaries: &[IssueSummary], rpc_plan: RpcPlan) {
    println!(
        "\n== issuance summary (raw: 1 signing thread on the server cpus; RPC: tcp, concurrency {}, {} connections, {} s) ==",
        rpc_plan.concurrency,
        rpc_plan.connections,
        rpc_plan.measure.as_secs()
    );
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10} {:>8} {:>8} {:>8} {:>6}",
        "alg",
        "raw/s",
        "empty/s",
        "limit/s",
        "issue/s",
        "issue/limit",
        "issue/raw",
        "p50 µs",
        "p99 µs",
        "p999 µs",
        "other"
    );
    for summary in summaries {
        let (p50, p99, p999) = summary
            .issue_latency
            .map_or((0.0, 0.0, 0.0), |l| (l.p50_us, l.p99_us, l.p999_us));
        let mark = |met: bool| if met { "✓" } else { "✗" };
        println!(
            "{:<6} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>10.1}%{} {:>8.1}%{} {:>8.0} {:>8.0} {:>8.0} {:>5.0}%",
            summary.algorithm,
            summary.raw_sign_rate,
            summary.empty_rpc_rate,
            summary.limit,
            summary.issue_rate,
            summary.issue_over_limit * 100.0,
            mark(summary.meets_limit_target),
            summary.issue_over_raw * 100.0,
            mark(summary.meets_raw_target),
            p50,
            p99,
            p999,
            summary.max_foreign_cpu * 100.0
        );
    }
    println!(
        "target: issue ≥ 80 % of the limit (DESIGN §10); issue 2 point 15 words it as ≥ 80 % of raw signing"
    );
}
