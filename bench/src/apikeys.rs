//! `apikeys`: the two API-key targets of issue 10 point 10, each server a separate
//! process on the server cpus and this process (the load generator) on the client cpus.
//!
//! * **Cached at the sidecar**: `ValidateApiKey` of a key the sidecar has seen (so every
//!   measured call is a cache hit spending leased budget) against `grpc.health.v1` Check
//!   on the same socket of the same process (the empty unary RPC); target ratio ≥ 0.80.
//!   Each sample uses a fresh key with the largest limits (1,000,000 per window), so a
//!   run never meets a limit. How often the sidecar went back to the issuer meanwhile is
//!   read from the issuer's store (admissions charged; one lease charges at most one
//!   slice, 1,000 for these limits) and from both processes' `/metrics` (lease, rate-limit
//!   and credential-validation series).
//! * **First sight at the issuer**: `ValidateApiKey` at `tessera-issuer serve` over
//!   distinct keys (each validated once, never twice in a run), on SQLite and, when a
//!   PostgreSQL URL is given, on a scratch database of that server; target ≥ 5,000/s on
//!   PostgreSQL. The keys are created beforehand through `CreateApiKey`. PostgreSQL runs
//!   on the same machine, unpinned: its CPU is reported beside the issuer's, and counted
//!   as the benchmark's own (not as disturbance).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use tessera_common::keys::Algorithm;
use tessera_proto::v1 as pb;
use tessera_proto::v1::api_key_service_client::ApiKeyServiceClient;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::load::{UnaryPlan, run_unary};
use crate::procs::{self, IssuerProcess, SidecarProcess};
use crate::report::{self, Measurement};
use crate::rpc::{self, EmptyService, RpcPlan};
use crate::sampling::{Quiet, quietest};
use crate::scratch_database::ScratchDatabase;
use crate::transport::{self, Target};

/// The sidecar target: cached ValidateApiKey ≥ 80 % of the empty unary RPC.
const CACHED_RATIO_TARGET: f64 = 0.8;
/// The issuer target on PostgreSQL, first sights per second.
const FIRST_SIGHT_TARGET: f64 = 5_000.0;
/// The largest limits a key may have.
const HUGE: pb::RateLimits = pb::RateLimits {
    per_minute: 1_000_000,
    per_hour: 1_000_000,
    per_day: 1_000_000,
};
/// CreateApiKey calls in flight while preparing keys.
const CREATE_CONCURRENCY: usize = 32;

/// Which scenarios to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    SidecarCached,
    IssuerFirstSight,
    All,
}

/// `apikeys` options.
#[derive(Args, Debug, Clone)]
pub struct ApiKeysArgs {
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// PostgreSQL server URL for the first-sight run on PostgreSQL (a scratch database is
    /// created on it and dropped afterwards); without it only SQLite runs.
    #[arg(long, env = "TESSERA_TEST_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Keys created for each first-sight run (each is validated at most once). Size it
    /// to the expected rate × (warm-up + measured seconds) × repeats.
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
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

impl ApiKeysArgs {
    fn plan(&self) -> RpcPlan {
        RpcPlan {
            concurrency: self.concurrency.max(1),
            connections: self.connections.max(1),
            warmup: self.timing.warmup(),
            measure: self.timing.measure(),
            server_nodelay: false,
            rate: None,
        }
    }

    fn unary(&self) -> UnaryPlan {
        UnaryPlan {
            concurrency: self.concurrency.max(1),
            warmup: self.timing.warmup(),
            measure: self.timing.measure(),
            rate: None,
        }
    }
}

/// Runs the chosen scenarios and prints tables, targets and one JSON line.
pub async fn run(args: &ApiKeysArgs) -> anyhow::Result<()> {
    let quiet = args.sampling.quiet();
    let mut measurements = Vec::new();
    let mut checks = Vec::new();
    let mut notes = serde_json::Map::new();
    if matches!(args.scenario, Scenario::SidecarCached | Scenario::All) {
        let cached = sidecar_cached(args, quiet).await?;
        let ratio = cached.validate.rate / cached.empty.rate;
        checks.push(serde_json::json!({
            "target": "sidecar ValidateApiKey cached ≥ 80 % of empty unary (health) on the same socket",
            "measured": cached.validate.rate,
            "reference": cached.empty.rate,
            "ratio": ratio,
            "met": ratio >= CACHED_RATIO_TARGET && cached.validate.errors == 0,
        }));
        notes.insert("lease_metrics".into(), serde_json::json!(cached.leases));
        measurements.push(cached.empty);
        measurements.push(cached.validate);
    }
    if matches!(args.scenario, Scenario::IssuerFirstSight | Scenario::All) {
        let sqlite = first_sight(args, quiet, Store::Sqlite).await?;
        notes.insert("sqlite".into(), sqlite.notes.clone());
        measurements.push(sqlite.measurement);
        match &args.database_url {
            Some(url) => {
                let postgres = first_sight(args, quiet, Store::Postgres(url.clone())).await?;
                checks.push(serde_json::json!({
                    "target": "issuer first-sight ValidateApiKey on PostgreSQL ≥ 5,000/s",
                    "measured": postgres.measurement.rate,
                    "reference": FIRST_SIGHT_TARGET,
                    "ratio": postgres.measurement.rate / FIRST_SIGHT_TARGET,
                    "met": postgres.measurement.rate >= FIRST_SIGHT_TARGET
                        && postgres.measurement.errors == 0,
                }));
                notes.insert("postgres".into(), postgres.notes.clone());
                measurements.push(postgres.measurement);
            }
            None => eprintln!(
                "[apikeys] no --database-url / TESSERA_TEST_DATABASE_URL: PostgreSQL skipped"
            ),
        }
    }
    report::print_table("apikeys", &measurements);
    println!("\n== API-key targets ==");
    for check in &checks {
        println!(
            "{} {:<80} measured {:>9.0} / reference {:>9.0} = {:>5.2}",
            if check["met"] == true { "✓" } else { "✗" },
            check["target"].as_str().unwrap_or_default(),
            check["measured"].as_f64().unwrap_or_default(),
            check["reference"].as_f64().unwrap_or_default(),
            check["ratio"].as_f64().unwrap_or_default(),
        );
    }
    println!("notes: {}", serde_json::Value::Object(notes.clone()));
    report::print_json(&serde_json::json!({
        "bench": "apikeys",
        "pinning": procs::pinning_json(),
        "checks": checks,
        "notes": notes,
        "results": measurements,
    }));
    Ok(())
}

/// What the sidecar scenario measured.
struct Cached {
    empty: Measurement,
    validate: Measurement,
    /// Lease-related series of the sidecar's and the issuer's `/metrics`, after the run.
    leases: BTreeMap<String, f64>,
}

async fn sidecar_cached(args: &ApiKeysArgs, quiet: Quiet) -> anyhow::Result<Cached> {
    eprintln!("[apikeys] sidecar: issuer (SQLite), sidecar with an introspect credential…");
    let issuer = IssuerProcess::start(Algorithm::Rs256).await?;
    let credential = issuer.client_credential(
        "bench-apikey-sidecar",
        &["bundle:read", "introspect", "issue"],
    )?;
    let sidecar_http = free_addr()?;
    let sidecar = SidecarProcess::start_with(
        &issuer,
        100_000,
        &credential,
        &["--http-addr".to_owned(), sidecar_http.to_string()],
    )
    .await?;
    let target = sidecar.target();
    let plan = args.plan();
    let admin = AdminClient::connect(&issuer).await?;

    let empty_name = format!(
        "empty health on the sidecar socket (uds, c={}, k={})",
        plan.concurrency, plan.connections
    );
    let cpu_before = ticks(sidecar.pid()) + ticks(issuer.pid());
    let empty_started = Instant::now();
    let empty = quietest(quiet, || {
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
    let empty_cores = (ticks(sidecar.pid()) + ticks(issuer.pid()) - cpu_before) as f64
        / ticks_per_second()
        / empty_started.elapsed().as_secs_f64();
    let (sidecar_before, issuer_before) = (ticks(sidecar.pid()), ticks(issuer.pid()));
    let validate_started = Instant::now();
    let validate = quietest(quiet, || async {
        // A fresh key per sample: no sample meets the hourly or daily limit.
        let key = admin.create(HUGE).await?;
        cached_validations(args, &target, key).await
    })
    .await?;
    let wall = validate_started.elapsed().as_secs_f64();
    let sidecar_cores = (ticks(sidecar.pid()) - sidecar_before) as f64 / ticks_per_second() / wall;
    let issuer_cores = (ticks(issuer.pid()) - issuer_before) as f64 / ticks_per_second() / wall;
    let mut leases = lease_series(sidecar_http, "sidecar");
    // CPU of the server processes on the server cpus, key creation and warm-ups included.
    leases.insert(
        "cpu cores: sidecar + issuer during health".into(),
        empty_cores,
    );
    leases.insert(
        "cpu cores: sidecar during ValidateApiKey".into(),
        sidecar_cores,
    );
    leases.insert(
        "cpu cores: issuer during ValidateApiKey".into(),
        issuer_cores,
    );
    leases.extend(lease_series(issuer.http_addr, "issuer"));
    // Admissions charged to the keys' windows (leased to the sidecar, plus the issuer's
    // own slice for each first sight): each lease charges at most one slice of
    // clamp(1,000,000 / 20, 1, 1,000) = 1,000, so leases ≥ charged / 1,000.
    if let Some(charged) = charged_admissions(&issuer.data_dir().join("tessera.db")) {
        leases.insert("store: admissions charged, every sample".into(), charged);
        leases.insert(
            "store: lease calls at least (charged / slice 1,000)".into(),
            (charged / 1_000.0).ceil(),
        );
    }
    Ok(Cached {
        empty,
        validate,
        leases,
    })
}

/// Validates `key` once (the first sight), then measures cached validations.
async fn cached_validations(
    args: &ApiKeysArgs,
    target: &Target,
    key: String,
) -> anyhow::Result<Measurement> {
    let clients: Arc<Vec<ValidatorServiceClient<Channel>>> = Arc::new(
        transport::connect(target, args.connections)
            .await?
            .into_iter()
            .map(ValidatorServiceClient::new)
            .collect(),
    );
    let request = pb::ValidateApiKeyRequest {
        key,
        required_permissions: vec!["bench:read".into()],
        ..Default::default()
    };
    let first = clients[0]
        .clone()
        .validate_api_key(Request::new(request.clone()))
        .await?
        .into_inner();
    anyhow::ensure!(first.valid, "the sidecar refused a fresh key: {first:?}");
    let name = format!(
        "sidecar ValidateApiKey cached (uds, c={}, k={})",
        args.concurrency,
        clients.len()
    );
    Ok(run_unary(&name, args.unary(), move |task, _| {
        let mut client = clients[task % clients.len()].clone();
        let request = Request::new(request.clone());
        async move {
            match client.validate_api_key(request).await {
                Ok(response) if response.get_ref().valid => Ok(()),
                Ok(response) => Err(format!("refused: {:?}", response.get_ref().refusal())),
                Err(status) => Err(status.to_string()),
            }
        }
    })
    .await)
}

/// Which store the first-sight issuer uses.
#[derive(Clone, Debug)]
enum Store {
    Sqlite,
    /// The server URL; a scratch database is created on it.
    Postgres(String),
}

struct FirstSight {
    measurement: Measurement,
    notes: serde_json::Value,
}

async fn first_sight(args: &ApiKeysArgs, quiet: Quiet, store: Store) -> anyhow::Result<FirstSight> {
    let label = match store {
        Store::Sqlite => "SQLite",
        Store::Postgres(_) => "PostgreSQL",
    };
    eprintln!("[apikeys] first sight at the issuer on {label}…");
    let scratch = match &store {
        Store::Postgres(url) => Some(ScratchDatabase::create(url, "tessera_bench").await?),
        Store::Sqlite => None,
    };
    let mut extra = Vec::new();
    if let Some(scratch) = &scratch {
        extra.extend([
            "--database-url".to_owned(),
            scratch.url.clone(),
            "--database-pool-size".to_owned(),
            args.pool_size.to_string(),
        ]);
    }
    let issuer = IssuerProcess::start_with(Algorithm::Rs256, &extra).await?;
    let admin = AdminClient::connect(&issuer).await?;
    let started = Instant::now();
    let keys = Arc::new(admin.create_many(args.keys).await?);
    let creation = started.elapsed();
    eprintln!(
        "  created {} keys in {creation:.1?} ({:.0}/s)",
        keys.len(),
        keys.len() as f64 / creation.as_secs_f64()
    );
    // PostgreSQL's backends (the pool's connections exist now) are the benchmark's own.
    let postgres_pids = if scratch.is_some() {
        processes_named("postgres")
    } else {
        Vec::new()
    };
    for pid in &postgres_pids {
        crate::cpu::watch_pid(*pid);
    }
    let channels = transport::connect(&Target::Tcp(issuer.grpc_addr), args.connections).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let name = format!(
        "issuer ValidateApiKey first sight, {label} (tcp, c={}, k={})",
        args.concurrency, args.connections
    );
    let before = ProcessCpu::sample(issuer.pid(), &postgres_pids);
    let measured_at = Instant::now();
    let measurement = quietest(quiet, || {
        first_sight_calls(
            &name,
            &channels,
            keys.clone(),
            next.clone(),
            admin.authorization.clone(),
            args.unary(),
        )
    })
    .await?;
    let after = ProcessCpu::sample(issuer.pid(), &postgres_pids);
    let wall = measured_at.elapsed().as_secs_f64();
    for pid in &postgres_pids {
        crate::cpu::unwatch_pid(*pid);
    }
    let used = next.load(Ordering::Relaxed).min(keys.len());
    let notes = serde_json::json!({
        "keys_created": keys.len(),
        "creation_seconds": creation.as_secs_f64(),
        "keys_validated": used,
        // Over every sample, warm-ups included: cores busy on average.
        "issuer_cpu_cores": after.issuer.saturating_sub(before.issuer) as f64 / ticks_per_second() / wall,
        "postgres_cpu_cores": after.postgres.saturating_sub(before.postgres) as f64 / ticks_per_second() / wall,
        "postgres_backends": postgres_pids.len(),
        "load_average": load_average(),
    });
    eprintln!("  {label}: {notes}");
    drop(channels);
    drop(issuer);
    if let Some(scratch) = scratch {
        scratch.drop_database().await;
    }
    Ok(FirstSight { measurement, notes })
}

/// One measured run over distinct keys: every call takes the next unused key; when the
/// keys run out, calls fail (counted as errors) rather than validate a key twice.
async fn first_sight_calls(
    name: &str,
    channels: &[Channel],
    keys: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    authorization: MetadataValue<tonic::metadata::Ascii>,
    plan: UnaryPlan,
) -> anyhow::Result<Measurement> {
    let clients: Arc<Vec<ApiKeyServiceClient<Channel>>> = Arc::new(
        channels
            .iter()
            .cloned()
            .map(ApiKeyServiceClient::new)
            .collect(),
    );
    Ok(run_unary(name, plan, move |task, _| {
        let mut client = clients[task % clients.len()].clone();
        let index = next.fetch_add(1, Ordering::Relaxed);
        let request = keys.get(index).map(|key| {
            let mut request = Request::new(pb::ValidateApiKeyRequest {
                key: key.clone(),
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
            request
        });
        async move {
            let Some(request) = request else {
                // Slow the exhausted loop down instead of spinning.
                tokio::time::sleep(Duration::from_millis(1)).await;
                return Err("out of distinct keys (raise --keys)".to_owned());
            };
            match client.validate_api_key(request).await {
                Ok(response) if response.get_ref().valid => Ok(()),
                Ok(response) => Err(format!("refused: {:?}", response.get_ref().refusal())),
                Err(status) => Err(status.to_string()),
            }
        }
    })
    .await)
}

/// An `ApiKeyService` client with the issuer's admin credential.
struct AdminClient {
    client: ApiKeyServiceClient<Channel>,
    authorization: MetadataValue<tonic::metadata::Ascii>,
}

impl AdminClient {
    async fn connect(issuer: &IssuerProcess) -> anyhow::Result<AdminClient> {
        let channel = transport::connect(&Target::Tcp(issuer.grpc_addr), 1)
            .await?
            .pop()
            .context("no channel")?;
        Ok(AdminClient {
            client: ApiKeyServiceClient::new(channel),
            authorization: issuer.authorization.clone(),
        })
    }

    /// Creates one key (tenant `bench`, permission `bench:read`) and returns its text.
    async fn create(&self, limits: pb::RateLimits) -> anyhow::Result<String> {
        let mut request = Request::new(pb::CreateApiKeyRequest {
            tenant_id: "bench".into(),
            name: "bench".into(),
            permissions: vec!["bench:read".into()],
            role: "bench".into(),
            reason: "benchmark".into(),
            rate_limits: Some(limits),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        Ok(self
            .client
            .clone()
            .create_api_key(request)
            .await
            .context("CreateApiKey")?
            .into_inner()
            .key)
    }

    /// Creates `n` keys, [`CREATE_CONCURRENCY`] at a time.
    async fn create_many(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..CREATE_CONCURRENCY {
            let next = next.clone();
            let client = AdminClient {
                client: self.client.clone(),
                authorization: self.authorization.clone(),
            };
            workers.push(tokio::spawn(async move {
                let mut keys = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    // Default limits: each key is validated once.
                    keys.push(client.create(pb::RateLimits::default()).await?);
                }
                anyhow::Ok(keys)
            }));
        }
        let mut keys = Vec::with_capacity(n);
        for worker in workers {
            keys.extend(worker.await??);
        }
        Ok(keys)
    }
}

/// CPU ticks of the issuer and of every PostgreSQL process, at one instant.
struct ProcessCpu {
    issuer: u64,
    postgres: u64,
}

impl ProcessCpu {
    fn sample(issuer: u32, postgres: &[u32]) -> ProcessCpu {
        ProcessCpu {
            issuer: ticks(issuer),
            postgres: postgres.iter().map(|pid| ticks(*pid)).sum(),
        }
    }
}

/// utime + stime of `pid` in clock ticks (0 once it is gone).
fn ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |index: usize| -> u64 {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux this runs on.
    100.0
}

/// Pids of the processes whose command name is `name`.
fn processes_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The admissions charged to every key's day window in the issuer's SQLite database
/// (read with the `sqlite3` tool; `None` without it).
fn charged_admissions(database: &std::path::Path) -> Option<f64> {
    let output = std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(database)
        .arg("SELECT COALESCE(SUM(day_used), 0) FROM api_key_rate_windows")
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// The lease, rate-limit and validation series of `addr`'s `/metrics`, keyed
/// `<who> <series>`.
fn lease_series(addr: SocketAddr, who: &str) -> BTreeMap<String, f64> {
    let Ok(text) = http_get(addr, "/metrics") else {
        return BTreeMap::new();
    };
    text.lines()
        .filter(|line| {
            !line.starts_with('#')
                && [
                    "lease",
                    "ratelimit",
                    "credential_validations",
                    "api_key_validations",
                ]
                .iter()
                .any(|name| line.contains(name))
        })
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((format!("{who} {series}"), value.trim().parse().ok()?))
        })
        .collect()
}

/// A plain HTTP/1.1 GET (one request per connection); the body as text.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    Ok(raw
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned()))
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
