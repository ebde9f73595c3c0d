//! `secrets`: issue 12 point 7 — `GetSecret` at the sidecar on a cached secret against
//! `grpc.health.v1` Check (the empty unary RPC) on the same socket of the same sidecar
//! process, in the same run; target ratio ≥ 0.80. The issuer (SQLite, a `random` secret
//! registered through `SecretService.RegisterSecret`) and the sidecar (a credential with
//! `bundle:read` and `secrets:read:<name>`, `--secret <name>`) run as separate processes
//! on the server cpus, this process (the load generator) on the client cpus. The first
//! read fills the cache; every measured call is a hit. The two quantities are sampled in
//! alternation (health, GetSecret, health, …) and the ratio reported is the median of
//! the ratios of each pair: on a shared machine the load drifts, and a pair taken
//! back to back sees about the same load. How many times the sidecar read
//! the secret from the issuer is taken from its `/metrics`
//! (`tessera_sidecar_secret_fetches_total`): one per sidecar is the expected count.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tessera_common::keys::Algorithm;
use tessera_proto::v1 as pb;
use tessera_proto::v1::secret_service_client::SecretServiceClient;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::load::{UnaryPlan, run_unary};
use crate::procs::{self, IssuerProcess, SidecarProcess};
use crate::report::{self, Measurement};
use crate::rpc::{self, EmptyService, RpcPlan};
use crate::sampling::{Quiet, quietest};
use crate::transport::{self, Target};

/// The target: cached GetSecret ≥ 80 % of the empty unary RPC.
const RATIO_TARGET: f64 = 0.8;
/// The secret read.
const NAME: &str = "bench/db-password";

/// `secrets` options.
#[derive(Args, Debug, Clone)]
pub struct SecretsArgs {
    /// Length of the secret's value (the random rotator's, 16 to 4,096).
    #[arg(long, default_value_t = 48)]
    pub value_length: u32,
    /// Also ask for `previous` in every call (there is none right after registration).
    #[arg(long)]
    pub include_previous: bool,
    /// Unary calls in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    #[command(flatten)]
    pub timing: crate::Timing,
    #[command(flatten)]
    pub sampling: crate::SamplingArgs,
}

/// Runs the benchmark and prints a table, the target and one JSON line.
pub async fn run(args: &SecretsArgs) -> anyhow::Result<()> {
    let quiet = args.sampling.quiet();
    eprintln!(
        "[secrets] issuer (SQLite) with a registered random secret, sidecar allowed to read it…"
    );
    let issuer = IssuerProcess::start(Algorithm::Rs256).await?;
    register(&issuer, args.value_length).await?;
    let credential = issuer.client_credential(
        "bench-secret-sidecar",
        &["bundle:read", &format!("secrets:read:{NAME}")],
    )?;
    let sidecar_http = free_addr()?;
    let sidecar = SidecarProcess::start_with(
        &issuer,
        100_000,
        &credential,
        &[
            "--secret".to_owned(),
            NAME.to_owned(),
            "--http-addr".to_owned(),
            sidecar_http.to_string(),
        ],
    )
    .await?;
    let target = sidecar.target();
    let plan = RpcPlan {
        concurrency: args.concurrency.max(1),
        connections: args.connections.max(1),
        warmup: args.timing.warmup(),
        measure: args.timing.measure(),
        server_nodelay: false,
        rate: None,
    };
    let empty_name = format!(
        "empty health on the sidecar socket (uds, c={}, k={})",
        plan.concurrency, plan.connections
    );
    // One sample of each per round, back to back.
    let one = Quiet {
        repeats: 1,
        ..quiet
    };
    let (mut empties, mut gets, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut sidecar_seconds = 0.0;
    let mut get_wall = 0.0;
    for _ in 0..quiet.repeats.max(1) {
        let empty = quietest(one, || {
            rpc::empty_calls(
                &empty_name,
                &target,
                EmptyService::Health,
                MetadataValue::from_static(""),
                Arc::new(Vec::new()),
                plan,
            )
        })
        .await?;
        let started = Instant::now();
        let cpu_before = procs_ticks(sidecar.pid());
        let get = quietest(one, || cached_reads(args, &target)).await?;
        sidecar_seconds += (procs_ticks(sidecar.pid()) - cpu_before) as f64 / ticks_per_second();
        get_wall += started.elapsed().as_secs_f64();
        ratios.push(get.rate / empty.rate);
        empties.push(empty);
        gets.push(get);
    }
    let sidecar_cores = sidecar_seconds / get_wall;
    let fetches = metric_sum(sidecar_http, "tessera_sidecar_secret_fetches_total");
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let ratio = sorted[sorted.len() / 2];
    let empty = median(empties);
    let get = median(gets);
    let check = serde_json::json!({
        "target": "sidecar GetSecret cached ≥ 80 % of empty unary (health) on the same socket",
        "measured": get.rate,
        "reference": empty.rate,
        "ratio": ratio,
        "met": ratio >= RATIO_TARGET && get.errors == 0,
    });
    let notes = serde_json::json!({
        "issuer reads by the sidecar (tessera_sidecar_secret_fetches_total)": fetches,
        "cpu cores: sidecar during GetSecret": sidecar_cores,
        "value length": args.value_length,
        "include_previous": args.include_previous,
        "paired ratios (GetSecret / health, in sampling order)": ratios,
    });
    let measurements = vec![empty, get];
    report::print_table("secrets", &measurements);
    println!("\n== secret-read target ==");
    println!(
        "{} {:<80} measured {:>9.0} / reference {:>9.0}; median paired ratio {:>5.2}",
        if check["met"] == true { "✓" } else { "✗" },
        check["target"].as_str().unwrap_or_default(),
        check["measured"].as_f64().unwrap_or_default(),
        check["reference"].as_f64().unwrap_or_default(),
        ratio,
    );
    println!("notes: {notes}");
    report::print_json(&serde_json::json!({
        "bench": "secrets",
        "pinning": procs::pinning_json(),
        "checks": [check],
        "notes": notes,
        "results": measurements,
    }));
    Ok(())
}

/// The median sample (by rate), with every sample's rate.
fn median(mut samples: Vec<Measurement>) -> Measurement {
    samples.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let rates: Vec<f64> = samples.iter().map(|sample| sample.rate).collect();
    let mut median = samples.swap_remove(samples.len() / 2);
    median.samples = rates;
    median
}

/// Registers [`NAME`] (a random secret) with the admin credential.
async fn register(issuer: &IssuerProcess, length: u32) -> anyhow::Result<()> {
    let channel = transport::connect(&Target::Tcp(issuer.grpc_addr), 1)
        .await?
        .pop()
        .context("no channel")?;
    let mut request = Request::new(pb::RegisterSecretRequest {
        name: NAME.into(),
        kind: pb::RotatorKind::Random as i32,
        rotator: Some(pb::RotatorConfig {
            config: Some(pb::rotator_config::Config::Random(pb::RandomRotator {
                length,
                alphabet: String::new(),
            })),
        }),
        owner: "bench".into(),
        description: "GetSecret benchmark".into(),
        reason: "benchmark".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", issuer.authorization.clone());
    SecretServiceClient::new(channel)
        .register_secret(request)
        .await
        .context("RegisterSecret")?;
    Ok(())
}

/// Reads the secret once (the cache fill), then measures cached reads.
async fn cached_reads(args: &SecretsArgs, target: &Target) -> anyhow::Result<Measurement> {
    let clients: Arc<Vec<ValidatorServiceClient<Channel>>> = Arc::new(
        transport::connect(target, args.connections)
            .await?
            .into_iter()
            .map(ValidatorServiceClient::new)
            .collect(),
    );
    let request = pb::GetSecretValueRequest {
        name: NAME.into(),
        include_previous: args.include_previous,
    };
    let first = clients[0]
        .clone()
        .get_secret(Request::new(request.clone()))
        .await
        .context("the first GetSecret")?
        .into_inner();
    anyhow::ensure!(
        first.version >= 1 && first.value.len() == args.value_length as usize,
        "unexpected first answer: version {}, {} bytes",
        first.version,
        first.value.len()
    );
    let name = format!(
        "sidecar GetSecret cached (uds, c={}, k={})",
        args.concurrency,
        clients.len()
    );
    let plan = UnaryPlan {
        concurrency: args.concurrency.max(1),
        warmup: args.timing.warmup(),
        measure: args.timing.measure(),
        rate: None,
    };
    Ok(run_unary(&name, plan, move |task, _| {
        let mut client = clients[task % clients.len()].clone();
        let request = Request::new(request.clone());
        async move {
            match client.get_secret(request).await {
                Ok(response) if !response.get_ref().value.is_empty() => Ok(()),
                Ok(_) => Err("an empty value".to_owned()),
                Err(status) => Err(status.to_string()),
            }
        }
    })
    .await)
}

/// Sums every series of `metric` in the Prometheus text at `addr`'s `/metrics`.
fn metric_sum(addr: std::net::SocketAddr, metric: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return f64::NAN;
    };
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut body = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut body).is_err() {
        return f64::NAN;
    }
    body.lines()
        .filter(|line| line.starts_with(metric))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU ticks (user + system) of `pid`.
fn procs_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start at `) `.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let field = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    field(11) + field(12)
}

fn ticks_per_second() -> f64 {
    100.0
}

fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
