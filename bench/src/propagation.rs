//! Revocation propagation (issue 4, DESIGN §10): N real WatchTrustBundle subscribers in
//! this process, on one issuer or split across two replicas sharing PostgreSQL; the time
//! from `RevokeTokens` returning to every subscriber having received the entry.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tessera_common::keys::Algorithm;
use tessera_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::issuer_server::InProcessIssuer;
use crate::latency::Latencies;

/// `propagation` arguments.
#[derive(Args, Debug, Clone)]
pub struct PropagationArgs {
    /// Subscribers (simulated sidecars).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// HTTP/2 connections the subscribers share.
    #[arg(long, default_value_t = 20)]
    pub connections: usize,
    /// Revocations to time.
    #[arg(long, default_value_t = 30)]
    pub rounds: usize,
    /// PostgreSQL URL: run two replicas on it (a fresh schema) and split the subscribers.
    #[arg(long)]
    pub database_url: Option<String>,
}

/// One subscriber's receipt of a revocation value.
struct Receipt {
    value: String,
    at: Instant,
}

/// Runs the benchmark and prints p50/p99/max.
pub async fn run(args: PropagationArgs) -> anyhow::Result<serde_json::Value> {
    let replicas = match &args.database_url {
        Some(url) => {
            crate::issuer_server::postgres_replicas(url, 2, Algorithm::Es256, 8)
                .await?
                .0
        }
        None => vec![InProcessIssuer::start(Algorithm::Es256).await?],
    };
    let revoker = &replicas[0];
    let (receipts, mut received) = mpsc::unbounded_channel::<Receipt>();
    let (ready_sender, mut ready) = mpsc::unbounded_channel::<()>();
    let mut channels = Vec::new();
    for index in 0..args.connections.max(1) {
        let replica = &replicas[index % replicas.len()];
        let channel = Channel::from_shared(format!("http://{}", replica.grpc_addr))?
            .connect()
            .await
            .context("connecting a subscriber channel")?;
        channels.push((channel, replica.authorization.clone()));
    }
    let mut tasks = Vec::new();
    for index in 0..args.subscribers {
        let (channel, authorization) = channels[index % channels.len()].clone();
        let receipts = receipts.clone();
        let ready = ready_sender.clone();
        tasks.push(tokio::spawn(subscribe(
            channel,
            authorization,
            index,
            receipts,
            ready,
        )));
    }
    for _ in 0..args.subscribers {
        tokio::time::timeout(Duration::from_secs(60), ready.recv())
            .await
            .context("subscribers did not all receive their snapshot within 60 s")?;
    }

    let mut client = pb::token_service_client::TokenServiceClient::new(
        Channel::from_shared(format!("http://{}", revoker.grpc_addr))?
            .connect()
            .await?,
    );
    let mut after_return = Latencies::with_capacity(args.subscribers * args.rounds);
    let mut after_send = Latencies::with_capacity(args.subscribers * args.rounds);
    let mut rpc = Latencies::with_capacity(args.rounds);
    let mut n_before_return = 0usize;
    for round in 0..args.rounds {
        let value = format!("bench-jti-{round}-{}", uuid::Uuid::new_v4().simple());
        let mut request = tonic::Request::new(pb::RevokeTokensRequest {
            target: Some(pb::revoke_tokens_request::Target::Jti(value.clone())),
            scope_tenant_id: "bench".into(),
            reason: "propagation benchmark".into(),
        });
        request
            .metadata_mut()
            .insert("authorization", revoker.authorization.clone());
        let sent = Instant::now();
        client
            .revoke_tokens(request)
            .await
            .context("RevokeTokens")?;
        let returned = Instant::now();
        rpc.record(returned - sent);
        let mut n_received = 0;
        let deadline = returned + Duration::from_secs(10);
        while n_received < args.subscribers {
            let receipt = tokio::time::timeout_at(deadline.into(), received.recv())
                .await
                .with_context(|| format!("round {round}: only {n_received} of {} subscribers got the entry within 10 s", args.subscribers))?
                .context("subscribers ended")?;
            if receipt.value != value {
                continue;
            }
            // A subscriber may have the entry before the RPC's response arrives here: the
            // issuer publishes on commit, then answers. That counts as 0 after return.
            if receipt.at < returned {
                n_before_return += 1;
            }
            after_return.record(receipt.at.saturating_duration_since(returned));
            after_send.record(receipt.at.saturating_duration_since(sent));
            n_received += 1;
        }
    }
    for task in tasks {
        task.abort();
    }
    for replica in replicas {
        replica.stop().await?;
    }
    let replicas_used = if args.database_url.is_some() { 2 } else { 1 };
    let percentiles = after_return.percentiles().context("no samples")?;
    let from_send = after_send.percentiles().context("no samples")?;
    let rpc = rpc.percentiles().context("no samples")?;
    let n_samples = args.subscribers * args.rounds;
    println!(
        "propagation: {} subscribers on {replicas_used} replica(s), {} revocations\n  \
         after RevokeTokens returned: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs \
         ({n_before_return} of {n_samples} receipts came before the response)\n  \
         after RevokeTokens was sent: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs\n  \
         RevokeTokens itself: p50 {:.0} µs, p99 {:.0} µs",
        args.subscribers,
        args.rounds,
        percentiles.p50_us,
        percentiles.p99_us,
        percentiles.max_us,
        from_send.p50_us,
        from_send.p99_us,
        from_send.max_us,
        rpc.p50_us,
        rpc.p99_us,
    );
    Ok(serde_json::json!({
        "benchmark": "propagation",
        "subscribers": args.subscribers,
        "replicas": replicas_used,
        "rounds": args.rounds,
        "latency_after_rpc_returned": percentiles,
        "latency_after_rpc_sent": from_send,
        "revoke_rpc": rpc,
        "receipts_before_return": n_before_return,
    }))
}

async fn subscribe(
    channel: Channel,
    authorization: MetadataValue<Ascii>,
    index: usize,
    receipts: mpsc::UnboundedSender<Receipt>,
    ready: mpsc::UnboundedSender<()>,
) -> anyhow::Result<()> {
    let mut client = pb::trust_bundle_service_client::TrustBundleServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::WatchTrustBundleRequest {
        since_revision: 0,
        subscriber_id: format!("bench-{index}"),
        credential_changes: false,
        secret_changes: false,
    });
    request
        .metadata_mut()
        .insert("authorization", authorization);
    let mut stream = client.watch_trust_bundle(request).await?.into_inner();
    let mut announced = false;
    while let Some(update) = stream.message().await? {
        if !announced {
            announced = true;
            let _ = ready.send(());
        }
        let Some(pb::trust_bundle_update::Kind::Delta(delta)) = update.kind else {
            continue;
        };
        for change in delta.changes {
            if let Some(pb::bundle_change::Change::RevocationAdded(entry)) = change.change {
                let _ = receipts.send(Receipt {
                    value: entry.value,
                    at: Instant::now(),
                });
            }
        }
    }
    bail!("subscriber {index}: stream ended")
}
