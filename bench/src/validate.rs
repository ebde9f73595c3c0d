//! The sidecar scenarios: `ValidateToken` (unary) and `ValidateStream` against a
//! `tessera-sidecar` process over its Unix socket, fed by a `tessera-issuer` process
//! (RS256), both pinned to the server cpus.
//!
//! Distinct tokens: minting a fresh RS256 token costs as much as ~30 verifications, so a
//! run cannot pre-mint one per validation. Instead a pool of tokens minted by the issuer
//! (`IssueAccessToken`) is cycled against a sidecar whose verified-token cache is disabled
//! (`--cache-capacity 0`): every validation then runs the full path (parse, signature,
//! claims, revocation), which is what a never-seen token costs, minus one cache insert.
//! Repeat tokens: a small pool, validated once before measuring, against the default
//! cache, so every measured validation is a cache hit.

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tessera_common::keys::Algorithm;
use tessera_proto::v1 as pb;
use tessera_proto::v1::token_service_client::TokenServiceClient;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tonic::Request;
use tonic::transport::Channel;

use crate::fixtures;
use crate::load::{UnaryPlan, run_unary};
use crate::procs::{IssuerProcess, SidecarProcess};
use crate::report::Measurement;
use crate::stream_load::{StreamPlan, run_stream};
use crate::transport::{self, Target};

/// Tokens minted for the distinct-token runs.
pub const DISTINCT_POOL: usize = 1_000;
/// Tokens cycled in the repeat-token runs.
pub const REPEAT_POOL: usize = 16;
/// Cache capacity of the repeat-token sidecar (the sidecar's default).
const DEFAULT_CACHE_CAPACITY: u64 = 100_000;

/// Unary or streamed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Unary,
    Stream,
}

/// Which tokens the load carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tokens {
    /// Every validation verifies a signature (cache disabled, pool cycled).
    Distinct,
    /// Every validation is a cache hit.
    Repeat,
}

/// `validate` options.
#[derive(Args, Debug, Clone, Copy)]
pub struct ValidateArgs {
    #[arg(long, value_enum, default_value = "unary")]
    pub mode: Mode,
    #[arg(long, value_enum, default_value = "distinct")]
    pub tokens: Tokens,
    /// Unary calls in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Connections to the socket (unary: calls spread over them; stream: one stream each
    /// unless --streams says otherwise).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Streams (stream mode).
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Requests in flight per stream.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Unary: calls per second to pace at (open loop) instead of running flat out.
    #[arg(long)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub timing: crate::Timing,
}

/// An issuer process, a sidecar process on it and the tokens to send.
pub struct Setup {
    pub tokens: Arc<Vec<String>>,
    pub channels: Vec<Channel>,
    /// The sidecar's answer to the first token (the empty server answers its copy).
    pub answer: pb::ValidateTokenResponse,
    // Dropped after the channels: the sidecar, then the issuer.
    _sidecar: SidecarProcess,
    _issuer: IssuerProcess,
}

impl Setup {
    /// Starts an RS256 issuer and a sidecar for `kind` of tokens, has the issuer mint the
    /// pool over gRPC and validates each token once (for repeat tokens, so the cache
    /// holds them).
    pub async fn start(kind: Tokens, connections: usize) -> anyhow::Result<Setup> {
        let issuer = IssuerProcess::start(Algorithm::Rs256).await?;
        let (capacity, pool) = match kind {
            Tokens::Distinct => (0, DISTINCT_POOL),
            Tokens::Repeat => (DEFAULT_CACHE_CAPACITY, REPEAT_POOL),
        };
        let sidecar = SidecarProcess::start(&issuer, capacity).await?;
        let tokens = Arc::new(mint(&issuer, pool).await?);
        let channels = transport::connect(&sidecar.target(), connections).await?;
        let mut client = ValidatorServiceClient::new(channels[0].clone());
        let mut answer = None;
        for token in tokens.iter() {
            let verdict = client
                .validate_token(Request::new(pb::ValidateTokenRequest {
                    token: token.clone(),
                    ..Default::default()
                }))
                .await?
                .into_inner();
            anyhow::ensure!(
                verdict.valid,
                "the sidecar rejected a fresh token: reason {}",
                verdict.reason
            );
            answer.get_or_insert(verdict);
        }
        Ok(Setup {
            tokens,
            channels,
            answer: answer.context("no token minted")?,
            _sidecar: sidecar,
            _issuer: issuer,
        })
    }
}

/// Has `issuer` mint `n_tokens` access tokens through `IssueAccessToken` (admin
/// credential), 8 calls at a time.
async fn mint(issuer: &IssuerProcess, n_tokens: usize) -> anyhow::Result<Vec<String>> {
    let channel = transport::connect(&Target::Tcp(issuer.grpc_addr), 1)
        .await?
        .pop()
        .context("no channel")?;
    let client = TokenServiceClient::new(channel);
    let mut tokens = Vec::with_capacity(n_tokens);
    while tokens.len() < n_tokens {
        let batch = (n_tokens - tokens.len()).min(8);
        let calls = (0..batch).map(|_| {
            let mut client = client.clone();
            let mut request = Request::new(fixtures::issue_request());
            request
                .metadata_mut()
                .insert("authorization", issuer.authorization.clone());
            async move { client.issue_access_token(request).await }
        });
        for answer in futures_util::future::join_all(calls).await {
            tokens.push(answer?.into_inner().token);
        }
    }
    Ok(tokens)
}

/// Runs one `validate` scenario from the command line.
pub async fn run(args: &ValidateArgs) -> anyhow::Result<Measurement> {
    let setup = Setup::start(args.tokens, args.connections).await?;
    match args.mode {
        Mode::Unary => unary(&setup, args.tokens, unary_plan(args, args.rate)).await,
        Mode::Stream => stream(&setup, args.tokens, stream_plan(args)).await,
    }
}

/// The unary plan of `args`, paced at `rate` when given.
pub fn unary_plan(args: &ValidateArgs, rate: Option<f64>) -> UnaryPlan {
    UnaryPlan {
        concurrency: args.concurrency.max(1),
        warmup: args.timing.warmup(),
        measure: args.timing.measure(),
        rate,
    }
}

/// The stream plan of `args`.
pub fn stream_plan(args: &ValidateArgs) -> StreamPlan {
    StreamPlan {
        streams: args.streams.max(1),
        in_flight: args.in_flight.max(1),
        warmup: args.timing.warmup(),
        measure: args.timing.measure(),
    }
}

/// Measures unary `ValidateToken` on `setup`.
pub async fn unary(setup: &Setup, kind: Tokens, plan: UnaryPlan) -> anyhow::Result<Measurement> {
    let name = match plan.rate {
        Some(rate) => format!(
            "validate unary {} RS256 paced {rate:.0}/s (c={})",
            kind_name(kind),
            plan.concurrency
        ),
        None => format!(
            "validate unary {} RS256 (uds, c={}, k={})",
            kind_name(kind),
            plan.concurrency,
            setup.channels.len()
        ),
    };
    let clients: Arc<Vec<ValidatorServiceClient<Channel>>> = Arc::new(
        setup
            .channels
            .iter()
            .cloned()
            .map(ValidatorServiceClient::new)
            .collect(),
    );
    let requests: Arc<Vec<pb::ValidateTokenRequest>> = Arc::new(
        setup
            .tokens
            .iter()
            .map(|token| pb::ValidateTokenRequest {
                token: token.clone(),
                ..Default::default()
            })
            .collect(),
    );
    Ok(run_unary(&name, plan, move |task, sequence| {
        let mut client = clients[task % clients.len()].clone();
        // Tasks walk the pool from different offsets.
        let index = (task * 7_919 + sequence as usize) % requests.len();
        let request = Request::new(requests[index].clone());
        async move {
            match client.validate_token(request).await {
                Ok(response) if response.get_ref().valid => Ok(()),
                Ok(response) => Err(format!("invalid: reason {}", response.get_ref().reason)),
                Err(status) => Err(status.to_string()),
            }
        }
    })
    .await)
}

/// Measures `ValidateStream` on `setup`.
pub async fn stream(setup: &Setup, kind: Tokens, plan: StreamPlan) -> anyhow::Result<Measurement> {
    let name = format!(
        "validate stream {} RS256 (uds, {}×{} in flight)",
        kind_name(kind),
        plan.streams,
        plan.in_flight
    );
    run_stream(&name, &setup.channels, setup.tokens.clone(), plan, true).await
}

fn kind_name(kind: Tokens) -> &'static str {
    match kind {
        Tokens::Distinct => "distinct",
        Tokens::Repeat => "repeat",
    }
}
