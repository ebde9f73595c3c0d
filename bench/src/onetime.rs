//! `onetime`: issue 11 point 9 — `ConsumeActionToken` throughput at `tessera-issuer serve`
//! on PostgreSQL over distinct action links (each consumed once, never twice in a run),
//! target ≥ 2,000/s with zero double consumption. The issuer runs as a separate process
//! on the server cpus, this load generator on the client cpus; PostgreSQL is the
//! machine's own server, unpinned, its CPU reported beside the issuer's.
//!
//! Links are minted beforehand through `CreateActionLink` (EdDSA action keys, so minting
//! is quick). Zero double consumption is checked three ways after the run: the calls
//! answered `consumed` equal the rows with `used_at` set, no row is used twice (the
//! store's one conditional write leaves no way to), and consuming a sample of the used
//! links again answers `ALREADY_USED` for every one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tessera_common::keys::Algorithm;
use tessera_proto::v1 as pb;
use tessera_proto::v1::action_link_service_client::ActionLinkServiceClient;
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::load::{UnaryPlan, run_unary};
use crate::procs::IssuerProcess;
use crate::report::{self, Measurement};
use crate::sampling::quietest;
use crate::scratch_database::ScratchDatabase;
use crate::transport::{self, Target};

/// The target on PostgreSQL, consumptions per second.
const CONSUME_TARGET: f64 = 2_000.0;
/// CreateActionLink calls in flight while preparing links.
const CREATE_CONCURRENCY: usize = 32;
/// Used links consumed again after the run to show each answers ALREADY_USED.
const REPLAY_SAMPLE: usize = 1_000;

/// `onetime` options.
#[derive(Args, Debug, Clone)]
pub struct OneTimeArgs {
    /// PostgreSQL server URL (a scratch database is created on it and dropped).
    #[arg(long, env = "TESSERA_TEST_DATABASE_URL")]
    pub database_url: String,
    /// Links minted before the run (each consumed at most once). Size it to the expected
    /// rate × (warm-up + measured seconds) × repeats.
    #[arg(long, default_value_t = 60_000)]
    pub links: usize,
    /// The issuer's PostgreSQL pool size.
    #[arg(long, default_value_t = 16)]
    pub pool_size: usize,
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

/// Runs the benchmark and prints the table, the target and one JSON line.
pub async fn run(args: &OneTimeArgs) -> anyhow::Result<()> {
    let scratch = ScratchDatabase::create(&args.database_url, "tessera_bench_onetime").await?;
    let result = measure(args, &scratch).await;
    scratch.drop_database().await;
    let (measurement, notes) = result?;
    let met = measurement.rate >= CONSUME_TARGET
        && measurement.errors == 0
        && notes["double_consumptions"] == 0
        && notes["consumed_answers"] == notes["used_rows"]
        && notes["replays_already_used"] == notes["replays"];
    report::print_table(
        "ConsumeActionToken at the issuer, PostgreSQL",
        std::slice::from_ref(&measurement),
    );
    report::print_json(&serde_json::json!({
        "bench": "onetime",
        "measurements": [measurement],
        "checks": [{
            "target": "issuer ConsumeActionToken over distinct links on PostgreSQL ≥ 2,000/s, zero double consumption",
            "measured": measurement.rate,
            "met": met,
        }],
        "notes": notes,
    }));
    Ok(())
}

async fn measure(
    args: &OneTimeArgs,
    scratch: &ScratchDatabase,
) -> anyhow::Result<(Measurement, serde_json::Value)> {
    let extra = [
        "--database-url".to_owned(),
        scratch.url.clone(),
        "--database-pool-size".to_owned(),
        args.pool_size.to_string(),
        "--action-algorithm".to_owned(),
        "EdDSA".to_owned(),
    ];
    let issuer = IssuerProcess::start_with(Algorithm::EdDsa, &extra).await?;
    let channels = transport::connect(&Target::Tcp(issuer.grpc_addr), args.connections).await?;
    let authorization = issuer.authorization.clone();
    eprintln!("[onetime] minting {} links…", args.links);
    let started = Instant::now();
    let links = Arc::new(mint(issuer.grpc_addr, &authorization, args.links).await?);
    let minting = started.elapsed();
    eprintln!(
        "  minted {} in {minting:.1?} ({:.0}/s)",
        links.len(),
        links.len() as f64 / minting.as_secs_f64()
    );
    let next = Arc::new(AtomicUsize::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let name = format!(
        "issuer ConsumeActionToken, distinct links, PostgreSQL (tcp, c={}, k={})",
        args.concurrency, args.connections
    );
    let plan = UnaryPlan {
        concurrency: args.concurrency.max(1),
        warmup: args.timing.warmup(),
        measure: args.timing.measure(),
        rate: None,
    };
    let measurement = quietest(args.sampling.quiet(), || {
        consume_calls(
            &name,
            &channels,
            links.clone(),
            next.clone(),
            consumed.clone(),
            authorization.clone(),
            plan,
        )
    })
    .await?;
    // Every link consumed at most once so far; now replay a sample of the used ones.
    let used = next.load(Ordering::Relaxed).min(links.len());
    let sample: Vec<String> = links[..used]
        .iter()
        .step_by((used / REPLAY_SAMPLE).max(1))
        .take(REPLAY_SAMPLE)
        .cloned()
        .collect();
    let mut client = ActionLinkServiceClient::new(channels[0].clone());
    let mut replays_already_used = 0;
    for token in &sample {
        let answer = client
            .consume_action_token(with_authorization(consume_request(token), &authorization))
            .await?
            .into_inner();
        if !answer.consumed && answer.refusal == pb::ActionRefusal::AlreadyUsed as i32 {
            replays_already_used += 1;
        }
    }
    let (used_rows, double) = count_rows(&scratch.url).await?;
    let notes = serde_json::json!({
        "links_minted": links.len(),
        "minting_seconds": minting.as_secs_f64(),
        "links_presented": used,
        "consumed_answers": consumed.load(Ordering::Relaxed),
        "used_rows": used_rows,
        "double_consumptions": double,
        "replays": sample.len(),
        "replays_already_used": replays_already_used,
    });
    eprintln!("  {notes}");
    Ok((measurement, notes))
}

fn consume_request(token: &str) -> pb::ConsumeActionTokenRequest {
    pb::ConsumeActionTokenRequest {
        token: token.to_owned(),
        action: "confirm_payment".into(),
        resource_id: "inv-bench".into(),
        ..Default::default()
    }
}

fn with_authorization<T>(message: T, authorization: &MetadataValue<Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.clone());
    request
}

/// One measured run: every call takes the next unused link.
async fn consume_calls(
    name: &str,
    channels: &[Channel],
    links: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    consumed: Arc<AtomicU64>,
    authorization: MetadataValue<Ascii>,
    plan: UnaryPlan,
) -> anyhow::Result<Measurement> {
    let clients: Arc<Vec<ActionLinkServiceClient<Channel>>> = Arc::new(
        channels
            .iter()
            .cloned()
            .map(ActionLinkServiceClient::new)
            .collect(),
    );
    Ok(run_unary(name, plan, move |task, _| {
        let mut client = clients[task % clients.len()].clone();
        let index = next.fetch_add(1, Ordering::Relaxed);
        let request = links
            .get(index)
            .map(|token| with_authorization(consume_request(token), &authorization));
        let consumed = consumed.clone();
        async move {
            let Some(request) = request else {
                tokio::time::sleep(Duration::from_millis(1)).await;
                return Err("out of distinct links (raise --links)".to_owned());
            };
            match client.consume_action_token(request).await {
                Ok(response) if response.get_ref().consumed => {
                    consumed.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(response) => Err(format!("refused: {:?}", response.get_ref().refusal())),
                Err(status) => Err(status.to_string()),
            }
        }
    })
    .await)
}

/// Mints `n` links (tenant `bench`), `CREATE_CONCURRENCY` calls at a time.
async fn mint(
    addr: SocketAddr,
    authorization: &MetadataValue<Ascii>,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let channel = transport::connect(&Target::Tcp(addr), 1)
        .await?
        .pop()
        .context("no channel")?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CREATE_CONCURRENCY {
        let mut client = ActionLinkServiceClient::new(channel.clone());
        let (next, authorization) = (next.clone(), authorization.clone());
        workers.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let request = with_authorization(
                    pb::CreateActionLinkRequest {
                        action: "confirm_payment".into(),
                        resource_id: "inv-bench".into(),
                        user_id: "bench-user".into(),
                        tenant_id: "bench".into(),
                        ..Default::default()
                    },
                    &authorization,
                );
                let created = client
                    .create_action_link(request)
                    .await
                    .context("CreateActionLink")?;
                tokens.push(created.into_inner().token);
            }
            anyhow::Ok(tokens)
        }));
    }
    let mut tokens = Vec::with_capacity(n);
    for worker in workers {
        tokens.extend(worker.await??);
    }
    Ok(tokens)
}

/// Rows with `used_at` set, and rows whose jti appears more than once (always 0: it is
/// the primary key; counted so the report states it from the data).
async fn count_rows(url: &str) -> anyhow::Result<(i64, i64)> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the scratch database")?;
    let driver = tokio::spawn(connection);
    let used: i64 = client
        .query_one(
            "SELECT count(*) FROM one_time_tokens WHERE used_at IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let double: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT jti FROM one_time_tokens GROUP BY jti \
             HAVING count(*) > 1) AS twice",
            &[],
        )
        .await?
        .get(0);
    drop(client);
    let _ = driver.await;
    Ok((used, double))
}
