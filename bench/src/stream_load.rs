//! The streaming load generator: `streams` bidirectional `ValidateStream` calls spread
//! over the connections, each keeping `in_flight` requests outstanding. A sender task per
//! stream stamps each request id with its send time; the receiver matches answers by id
//! (they may come back out of order), records latency and returns the slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tessera_proto::v1 as pb;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::latency::Latencies;
use crate::report::Measurement;

/// Send-time slots per stream; far more than requests in flight, so a slow answer's slot
/// is never reused before it returns.
const RING: usize = 1 << 16;

/// How a streaming scenario is driven.
#[derive(Clone, Copy, Debug)]
pub struct StreamPlan {
    pub streams: usize,
    pub in_flight: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one stream saw.
#[derive(Default)]
struct StreamTally {
    n_done: u64,
    n_invalid: u64,
    first_error: Option<String>,
    latencies: Latencies,
}

/// Drives `ValidateStream` on `channels` with tokens taken round-robin from `tokens`.
/// `expect_valid` counts a `valid: false` answer as an error.
pub async fn run_stream(
    name: &str,
    channels: &[Channel],
    tokens: Arc<Vec<String>>,
    plan: StreamPlan,
    expect_valid: bool,
) -> anyhow::Result<Measurement> {
    let started = Instant::now();
    let window_start = started + plan.warmup;
    let window_end = window_start + plan.measure;
    let mut streams = Vec::new();
    for stream_index in 0..plan.streams.max(1) {
        let client = ValidatorServiceClient::new(channels[stream_index % channels.len()].clone());
        let tokens = tokens.clone();
        streams.push(tokio::spawn(one_stream(
            client,
            tokens,
            stream_index,
            plan.in_flight.max(1),
            (started, window_start, window_end),
            expect_valid,
        )));
    }
    let foreign_cpu = crate::cpu::watch_window(window_start, window_end).await;
    let mut total = StreamTally::default();
    for stream in streams {
        let tally = stream.await??;
        total.n_done += tally.n_done;
        total.n_invalid += tally.n_invalid;
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
        total.latencies.merge(tally.latencies);
    }
    let mut measurement = Measurement::new(name, total.n_done, plan.measure.as_secs_f64())
        .with_latencies(total.latencies);
    measurement.errors = total.n_invalid;
    measurement.first_error = total.first_error;
    measurement.foreign_cpu = foreign_cpu;
    Ok(measurement)
}

async fn one_stream(
    mut client: ValidatorServiceClient<Channel>,
    tokens: Arc<Vec<String>>,
    stream_index: usize,
    in_flight: usize,
    (started, window_start, window_end): (Instant, Instant, Instant),
    expect_valid: bool,
) -> anyhow::Result<StreamTally> {
    let (requests, outbound) = mpsc::channel::<pb::ValidateStreamRequest>(in_flight);
    let mut inbound = client
        .validate_stream(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let slots = Arc::new(Semaphore::new(in_flight));
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..RING).map(|_| AtomicU64::new(0)).collect());

    let sender = {
        let slots = slots.clone();
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            // Streams start at different offsets so they do not send the same tokens.
            let mut request_id = (stream_index as u64) << 40;
            loop {
                let Ok(slot) = slots.acquire().await else {
                    return;
                };
                slot.forget();
                let now = Instant::now();
                if now >= window_end {
                    return;
                }
                let nanos = u64::try_from((now - started).as_nanos()).unwrap_or(u64::MAX);
                sent_at[request_id as usize % RING].store(nanos, Ordering::Relaxed);
                let request = pb::ValidateStreamRequest {
                    request_id,
                    token: tokens[request_id as usize % tokens.len()].clone(),
                    ..Default::default()
                };
                request_id += 1;
                if requests.send(request).await.is_err() {
                    return;
                }
            }
        })
    };

    let mut tally = StreamTally {
        latencies: Latencies::with_capacity(1 << 20),
        ..StreamTally::default()
    };
    while let Some(response) = inbound.message().await? {
        let finished = Instant::now();
        slots.add_permits(1);
        if finished < window_start || finished >= window_end {
            continue;
        }
        if expect_valid && !response.valid {
            tally.n_invalid += 1;
            tally
                .first_error
                .get_or_insert_with(|| format!("invalid: reason {}", response.reason));
            continue;
        }
        let sent = sent_at[response.request_id as usize % RING].load(Ordering::Relaxed);
        let latency = (finished - started).saturating_sub(Duration::from_nanos(sent));
        tally.n_done += 1;
        tally.latencies.record(latency);
    }
    let _ = sender.await;
    Ok(tally)
}
