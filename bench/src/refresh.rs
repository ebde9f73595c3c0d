//! Refresh-token rotation throughput on PostgreSQL (issue 4, DESIGN §10): W workers, each
//! following its own session's refresh chain through `RefreshSession` on an in-process
//! issuer, for S seconds; afterwards the database is checked for duplicate successors
//! (two tokens with one parent), which must be zero. A contention phase fires C
//! concurrent refreshes of one token, repeatedly, and checks each round yields exactly one
//! successor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tessera_common::keys::Algorithm;
use tessera_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::latency::Latencies;

/// `refresh` arguments.
#[derive(Args, Debug, Clone)]
pub struct RefreshArgs {
    /// PostgreSQL URL (the run uses a fresh schema in it).
    #[arg(long, env = "TESSERA_TEST_DATABASE_URL")]
    pub database_url: String,
    /// Concurrent sessions being refreshed.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Access-token algorithm minted on every refresh (RS256 signing alone caps a 2-core
    /// machine near 1,300/s).
    #[arg(long, default_value = "ES256")]
    pub alg: String,
    /// PostgreSQL connections in the issuer's pool.
    #[arg(long, default_value_t = 16)]
    pub pool_size: usize,
    /// Concurrent refreshes of one token per contention round.
    #[arg(long, default_value_t = 50)]
    pub contention: usize,
    /// Contention rounds.
    #[arg(long, default_value_t = 20)]
    pub contention_rounds: usize,
}

/// Runs the benchmark.
pub async fn run(args: RefreshArgs) -> anyhow::Result<serde_json::Value> {
    let algorithm: Algorithm = args
        .alg
        .parse()
        .map_err(|error| anyhow::anyhow!("--alg: {error}"))?;
    let (mut replicas, schema) =
        crate::issuer_server::postgres_replicas(&args.database_url, 1, algorithm, args.pool_size)
            .await?;
    let issuer = replicas.pop().context("no replica started")?;
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            Channel::from_shared(format!("http://{}", issuer.grpc_addr))?
                .connect()
                .await?,
        );
    }
    let client = |index: usize| {
        pb::token_service_client::TokenServiceClient::new(channels[index % channels.len()].clone())
    };
    let login = |index: usize, subject: String| {
        let mut service = client(index);
        let request = authorized(session_request(subject), &issuer.authorization);
        async move { service.create_session(request).await }
    };

    // Sessions to refresh.
    let mut tokens = Vec::new();
    for index in 0..args.workers {
        let session = login(index, format!("bench-user-{index}"))
            .await?
            .into_inner();
        tokens.push(session.refresh_token);
    }

    let n_refreshed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, mut token) in tokens.into_iter().enumerate() {
        let mut service = client(index);
        let authorization = issuer.authorization.clone();
        let n_refreshed = n_refreshed.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::with_capacity(4096);
            while Instant::now() < deadline {
                let mut request = tonic::Request::new(pb::RefreshSessionRequest {
                    refresh_token: token.clone(),
                });
                request
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
                let sent = Instant::now();
                let response = service.refresh_session(request).await?.into_inner();
                latencies.record(sent.elapsed());
                token = response.refresh_token;
                n_refreshed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Latencies::with_capacity(1 << 16);
    for task in tasks {
        latencies.merge(task.await.context("worker")??);
    }
    let elapsed = started.elapsed();
    let n = n_refreshed.load(Ordering::Relaxed);
    let rate = n as f64 / elapsed.as_secs_f64();

    // Contention: many concurrent exchanges of one token, exactly one successor each round.
    let mut contention_violations = 0;
    for round in 0..args.contention_rounds {
        let session = login(round, format!("contended-{round}"))
            .await?
            .into_inner();
        let mut calls = Vec::new();
        for index in 0..args.contention {
            let mut service = client(index);
            let request = authorized(
                pb::RefreshSessionRequest {
                    refresh_token: session.refresh_token.clone(),
                },
                &issuer.authorization,
            );
            calls.push(tokio::spawn(async move {
                service.refresh_session(request).await
            }));
        }
        let mut successors = std::collections::BTreeSet::new();
        for call in calls {
            if let Ok(response) = call.await? {
                successors.insert(response.into_inner().refresh_token);
            }
        }
        if successors.len() != 1 {
            contention_violations += 1;
        }
    }

    let duplicates = count_duplicate_successors(&args.database_url, &schema).await?;
    let percentiles = latencies.percentiles().context("no samples")?;
    issuer.stop().await?;
    println!(
        "refresh on PostgreSQL ({} access tokens): {n} refreshes in {:.1} s = {rate:.0}/s with {} workers; p50 {:.0} µs p99 {:.0} µs; duplicate successors: {duplicates}; contention rounds with ≠ 1 successor: {contention_violations}/{}",
        args.alg,
        elapsed.as_secs_f64(),
        args.workers,
        percentiles.p50_us,
        percentiles.p99_us,
        args.contention_rounds
    );
    if duplicates != 0 || contention_violations != 0 {
        bail!("duplicate successors found");
    }
    Ok(serde_json::json!({
        "benchmark": "refresh_postgres",
        "alg": args.alg,
        "workers": args.workers,
        "seconds": elapsed.as_secs_f64(),
        "refreshes": n,
        "per_second": rate,
        "latency": percentiles,
        "duplicate_successors": duplicates,
        "contention_rounds": args.contention_rounds,
        "contention_violations": contention_violations,
    }))
}

/// A login of `subject` in the benchmark's tenant.
fn session_request(subject: String) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        subject,
        tenant_id: "bench".into(),
        role: "staff".into(),
        ..Default::default()
    }
}

fn authorized<T>(message: T, authorization: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.clone());
    request
}

async fn count_duplicate_successors(url: &str, schema: &str) -> anyhow::Result<i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT parent_id FROM {schema}.refresh_tokens WHERE parent_id IS NOT NULL GROUP BY parent_id HAVING count(*) > 1) AS d"
            ),
            &[],
        )
        .await?;
    Ok(row.get(0))
}
