//! The unary load generator shared by every RPC scenario, so empty and real paths are
//! measured the same way: `concurrency` tasks on the shared runtime, each looping one call
//! at a time (closed loop) or on a fixed schedule (`rate`: open loop, for latency at a
//! given load). Only calls that complete inside the measurement window count; each is
//! timed from the moment it is sent.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::latency::Latencies;
use crate::report::Measurement;

/// How a unary scenario is driven.
#[derive(Clone, Copy, Debug)]
pub struct UnaryPlan {
    /// Calls in flight at once (one per task).
    pub concurrency: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Total calls per second to aim for; `None` runs flat out.
    pub rate: Option<f64>,
}

/// What one task saw.
#[derive(Default)]
struct TaskTally {
    n_done: u64,
    n_errors: u64,
    first_error: Option<String>,
    latencies: Latencies,
}

/// Drives `call(task_index, sequence)` per `plan` and returns the measurement named
/// `name`. A call's `Err` counts as an error (the first message is kept) and does not
/// stop the run.
pub async fn run_unary<F, Fut>(name: &str, plan: UnaryPlan, call: F) -> Measurement
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let window_start = started + plan.warmup;
    let window_end = window_start + plan.measure;
    let n_tasks = plan.concurrency.max(1);
    // Each task's schedule, when paced: one call every `interval`, staggered by task.
    let interval = plan
        .rate
        .filter(|rate| *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(n_tasks as f64 / rate));
    let expected = plan.rate.unwrap_or(50_000.0) * plan.measure.as_secs_f64();
    let per_task_capacity = (expected as usize / n_tasks).clamp(1024, 4 << 20);

    let mut tasks = Vec::with_capacity(n_tasks);
    for task_index in 0..n_tasks {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = TaskTally {
                latencies: Latencies::with_capacity(per_task_capacity),
                ..TaskTally::default()
            };
            let mut next_send = interval
                .map(|interval| started + interval.mul_f64(task_index as f64 / n_tasks as f64));
            let mut sequence = 0u64;
            loop {
                if let (Some(at), Some(interval)) = (next_send.as_mut(), interval) {
                    tokio::time::sleep_until(*at).await;
                    *at += interval;
                }
                let sent = Instant::now();
                if sent >= window_end {
                    return tally;
                }
                let result = call(task_index, sequence).await;
                sequence += 1;
                let finished = Instant::now();
                if finished < window_start || finished >= window_end {
                    continue;
                }
                match result {
                    Ok(()) => {
                        tally.n_done += 1;
                        tally.latencies.record(finished - sent);
                    }
                    Err(error) => {
                        tally.n_errors += 1;
                        tally.first_error.get_or_insert(error);
                    }
                }
            }
        }));
    }
    let foreign_cpu = crate::cpu::watch_window(window_start, window_end).await;
    let mut total = TaskTally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => {
                total.n_done += tally.n_done;
                total.n_errors += tally.n_errors;
                if total.first_error.is_none() {
                    total.first_error = tally.first_error;
                }
                total.latencies.merge(tally.latencies);
            }
            Err(error) => {
                total.n_errors += 1;
                total.first_error.get_or_insert(error.to_string());
            }
        }
    }
    let mut measurement = Measurement::new(name, total.n_done, plan.measure.as_secs_f64())
        .with_latencies(total.latencies);
    measurement.errors = total.n_errors;
    measurement.first_error = total.first_error;
    measurement.foreign_cpu = foreign_cpu;
    measurement
}
