//! `challenges`: issue 11 point 9 — `VerifyChallenge` throughput at `tessera-issuer serve`
//! on PostgreSQL over distinct OTP challenges (each verified once with its right code),
//! target ≥ 2,000/s, every answer `verified`. The issuer runs as a separate process on
//! the server cpus, this load generator on the client cpus; PostgreSQL is the machine's
//! own server, unpinned.
//!
//! Each verification is the whole production path: the per-user rate-limit window
//! charged (one upsert), the attempt counted by one conditional UPDATE, the HMAC compared
//! in constant time, the challenge marked verified with its audit entry (one
//! transaction). Challenges are started beforehand (`RETURN_TO_CALLER`, one user per
//! challenge so no limit is met; the issuer is given a challenge config with wide
//! limits). After the run: rows verified equal the `verified` answers, and replaying a
//! sample answers `ALREADY_USED` for every one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tessera_common::keys::Algorithm;
use tessera_proto::v1 as pb;
use tessera_proto::v1::challenge_service_client::ChallengeServiceClient;
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::load::{UnaryPlan, run_unary};
use crate::procs::IssuerProcess;
use crate::report::{self, Measurement};
use crate::sampling::quietest;
use crate::scratch_database::ScratchDatabase;
use crate::transport::{self, Target};

/// The target on PostgreSQL, verifications per second.
const VERIFY_TARGET: f64 = 2_000.0;
/// StartChallenge calls in flight while preparing challenges.
const START_CONCURRENCY: usize = 32;
/// Verified challenges verified again after the run (each must be ALREADY_USED).
const REPLAY_SAMPLE: usize = 1_000;
/// The tenant of every challenge.
const TENANT: &str = "bench";

/// `challenges` options.
#[derive(Args, Debug, Clone)]
pub struct ChallengesArgs {
    /// PostgreSQL server URL (a scratch database is created on it and dropped).
    #[arg(long, env = "TESSERA_TEST_DATABASE_URL")]
    pub database_url: String,
    /// Challenges started before the run (each verified at most once). Size it to the
    /// expected rate × (warm-up + measured seconds) × repeats.
    #[arg(long, default_value_t = 60_000)]
    pub challenges: usize,
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
pub async fn run(args: &ChallengesArgs) -> anyhow::Result<()> {
    let scratch = ScratchDatabase::create(&args.database_url, "tessera_bench_challenges").await?;
    let result = measure(args, &scratch).await;
    scratch.drop_database().await;
    let (measurement, notes) = result?;
    let met = measurement.rate >= VERIFY_TARGET
        && measurement.errors == 0
        && notes["verified_answers"] == notes["verified_rows"]
        && notes["replays_already_used"] == notes["replays"];
    report::print_table(
        "VerifyChallenge at the issuer, PostgreSQL",
        std::slice::from_ref(&measurement),
    );
    report::print_json(&serde_json::json!({
        "bench": "challenges",
        "measurements": [measurement],
        "checks": [{
            "target": "issuer VerifyChallenge over distinct challenges on PostgreSQL ≥ 2,000/s, each verified once",
            "measured": measurement.rate,
            "met": met,
        }],
        "notes": notes,
    }));
    Ok(())
}

async fn measure(
    args: &ChallengesArgs,
    scratch: &ScratchDatabase,
) -> anyhow::Result<(Measurement, serde_json::Value)> {
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(
        config.path(),
        "[limits.challenge_start]\nper_user = 1000000\nper_ip = 1000000\nwindow_seconds = 60\n\
         [limits.challenge_verify]\nper_user = 1000000\nper_ip = 1000000\nwindow_seconds = 60\n",
    )?;
    let extra = [
        "--database-url".to_owned(),
        scratch.url.clone(),
        "--database-pool-size".to_owned(),
        args.pool_size.to_string(),
        "--challenge-config".to_owned(),
        config.path().display().to_string(),
    ];
    let issuer = IssuerProcess::start_with(Algorithm::EdDsa, &extra).await?;
    let channels = transport::connect(&Target::Tcp(issuer.grpc_addr), args.connections).await?;
    let authorization = issuer.authorization.clone();
    eprintln!("[challenges] starting {} challenges…", args.challenges);
    let started = Instant::now();
    let challenges = Arc::new(start_many(issuer.grpc_addr, &authorization, args.challenges).await?);
    let preparing = started.elapsed();
    eprintln!(
        "  started {} in {preparing:.1?} ({:.0}/s)",
        challenges.len(),
        challenges.len() as f64 / preparing.as_secs_f64()
    );
    let next = Arc::new(AtomicUsize::new(0));
    let verified = Arc::new(AtomicU64::new(0));
    let name = format!(
        "issuer VerifyChallenge, distinct OTPs, PostgreSQL (tcp, c={}, k={})",
        args.concurrency, args.connections
    );
    let plan = UnaryPlan {
        concurrency: args.concurrency.max(1),
        warmup: args.timing.warmup(),
        measure: args.timing.measure(),
        rate: None,
    };
    let measurement = quietest(args.sampling.quiet(), || {
        verify_calls(
            &name,
            &channels,
            challenges.clone(),
            next.clone(),
            verified.clone(),
            authorization.clone(),
            plan,
        )
    })
    .await?;
    let used = next.load(Ordering::Relaxed).min(challenges.len());
    let sample: Vec<(String, String)> = challenges[..used]
        .iter()
        .step_by((used / REPLAY_SAMPLE).max(1))
        .take(REPLAY_SAMPLE)
        .cloned()
        .collect();
    let mut client = ChallengeServiceClient::new(channels[0].clone());
    let mut replays_already_used = 0;
    for (id, code) in &sample {
        let answer = client
            .verify_challenge(with_authorization(verify_request(id, code), &authorization))
            .await?
            .into_inner();
        if !answer.verified && answer.reason == pb::ChallengeRefusal::AlreadyUsed as i32 {
            replays_already_used += 1;
        }
    }
    let verified_rows = count_verified(&scratch.url).await?;
    let notes = serde_json::json!({
        "challenges_started": challenges.len(),
        "starting_seconds": preparing.as_secs_f64(),
        "challenges_presented": used,
        "verified_answers": verified.load(Ordering::Relaxed),
        "verified_rows": verified_rows,
        "replays": sample.len(),
        "replays_already_used": replays_already_used,
    });
    eprintln!("  {notes}");
    drop(config);
    Ok((measurement, notes))
}

fn verify_request(challenge_id: &str, code: &str) -> pb::VerifyChallengeRequest {
    pb::VerifyChallengeRequest {
        challenge_id: challenge_id.to_owned(),
        tenant_id: TENANT.into(),
        code: code.to_owned(),
        client_ip: String::new(),
    }
}

fn with_authorization<T>(message: T, authorization: &MetadataValue<Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.clone());
    request
}

/// One measured run: every call takes the next unused challenge.
async fn verify_calls(
    name: &str,
    channels: &[Channel],
    challenges: Arc<Vec<(String, String)>>,
    next: Arc<AtomicUsize>,
    verified: Arc<AtomicU64>,
    authorization: MetadataValue<Ascii>,
    plan: UnaryPlan,
) -> anyhow::Result<Measurement> {
    let clients: Arc<Vec<ChallengeServiceClient<Channel>>> = Arc::new(
        channels
            .iter()
            .cloned()
            .map(ChallengeServiceClient::new)
            .collect(),
    );
    Ok(run_unary(name, plan, move |task, _| {
        let mut client = clients[task % clients.len()].clone();
        let index = next.fetch_add(1, Ordering::Relaxed);
        let request = challenges
            .get(index)
            .map(|(id, code)| with_authorization(verify_request(id, code), &authorization));
        let verified = verified.clone();
        async move {
            let Some(request) = request else {
                tokio::time::sleep(Duration::from_millis(1)).await;
                return Err("out of distinct challenges (raise --challenges)".to_owned());
            };
            match client.verify_challenge(request).await {
                Ok(response) if response.get_ref().verified => {
                    verified.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(response) => Err(format!("refused: {:?}", response.get_ref().reason())),
                Err(status) => Err(status.to_string()),
            }
        }
    })
    .await)
}

/// Starts `n` OTP challenges (one user each), `START_CONCURRENCY` calls at a time;
/// returns (challenge id, code) pairs.
async fn start_many(
    addr: SocketAddr,
    authorization: &MetadataValue<Ascii>,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let channel = transport::connect(&Target::Tcp(addr), 1)
        .await?
        .pop()
        .context("no channel")?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..START_CONCURRENCY {
        let mut client = ChallengeServiceClient::new(channel.clone());
        let (next, authorization) = (next.clone(), authorization.clone());
        workers.push(tokio::spawn(async move {
            let mut pairs = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= n {
                    break;
                }
                let request = with_authorization(
                    pb::StartChallengeRequest {
                        method: pb::ChallengeMethod::OtpSms as i32,
                        user_id: format!("bench-user-{index}"),
                        tenant_id: TENANT.into(),
                        ..Default::default()
                    },
                    &authorization,
                );
                let started = client
                    .start_challenge(request)
                    .await
                    .context("StartChallenge")?
                    .into_inner();
                pairs.push((started.challenge_id, started.code));
            }
            anyhow::Ok(pairs)
        }));
    }
    let mut pairs = Vec::with_capacity(n);
    for worker in workers {
        pairs.extend(worker.await??);
    }
    Ok(pairs)
}

/// Challenges with `verified_at` set.
async fn count_verified(url: &str) -> anyhow::Result<i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the scratch database")?;
    let driver = tokio::spawn(connection);
    let verified: i64 = client
        .query_one(
            "SELECT count(*) FROM challenges WHERE verified_at IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    drop(client);
    let _ = driver.await;
    Ok(verified)
}
