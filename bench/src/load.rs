//! The unary load generator shared by every RPC scenario, so empty and real paths are
//! measured the same way: `concurrency` tasks on the shared runtime, each looping one call
//! at a time (closed loop), or an open loop at a fixed `rate` for latency at a given load.
//! Only calls that complete inside the measurement window count; each is timed from the
//! moment it is sent.
//!
//! The open loop is paced by a dedicated OS thread that sleeps to each call's scheduled
//! instant (nanosleep, tens of µs of slack) and hands the call to the next of the tasks
//! round robin. Tokio's timer has 1 ms granularity, so tasks pacing themselves would send
//! in bursts every millisecond and measure their own queueing, not the server's latency.
//! A paced measurement also reports latency from each call's scheduled instant, which
//! counts any time a call waited for a busy task (no coordinated omission).

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

impl TaskTally {
    /// Adds another task's tally to this one (keeping the first error seen).
    fn absorb(&mut self, other: TaskTally) {
        self.n_done += other.n_done;
        self.n_errors += other.n_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.merge(other.latencies);
    }

    /// Counts one failure.
    fn failed(&mut self, error: String) {
        self.n_errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// Drives `call(task_index, sequence)` per `plan` and returns the measurement named
/// `name`. A call's `Err` counts as an error (the first message is kept) and does not
/// stop the run.
pub async fn run_unary<F, Fut>(name: &str, plan: UnaryPlan, call: F) -> Measurement
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    if let Some(rate) = plan.rate.filter(|rate| *rate > 0.0) {
        return run_paced(name, plan, rate, call).await;
    }
    let call = Arc::new(call);
    let started = Instant::now();
    let window_start = started + plan.warmup;
    let window_end = window_start + plan.measure;
    let n_tasks = plan.concurrency.max(1);
    let expected = 50_000.0 * plan.measure.as_secs_f64();
    let per_task_capacity = (expected as usize / n_tasks).clamp(1024, 4 << 20);

    let mut tasks = Vec::with_capacity(n_tasks);
    for task_index in 0..n_tasks {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = TaskTally {
                latencies: Latencies::with_capacity(per_task_capacity),
                ..TaskTally::default()
            };
            let mut sequence = 0u64;
            loop {
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
                    Err(error) => tally.failed(error),
                }
            }
        }));
    }
    let foreign_cpu = crate::cpu::watch_window(window_start, window_end).await;
    let mut total = TaskTally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => total.absorb(tally),
            Err(error) => total.failed(error.to_string()),
        }
    }
    let mut measurement = Measurement::new(name, total.n_done, plan.measure.as_secs_f64())
        .with_latencies(total.latencies);
    measurement.errors = total.n_errors;
    measurement.first_error = total.first_error;
    measurement.foreign_cpu = foreign_cpu;
    measurement
}

/// One call the pacer scheduled.
struct Ticket {
    scheduled: std::time::Instant,
    sequence: u64,
}

/// The open loop: see the module comment.
async fn run_paced<F, Fut>(name: &str, plan: UnaryPlan, rate: f64, call: F) -> Measurement
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let call = Arc::new(call);
    let n_tasks = plan.concurrency.max(1);
    let started = std::time::Instant::now();
    let window_start = started + plan.warmup;
    let window_end = window_start + plan.measure;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let per_task_capacity = ((rate * plan.measure.as_secs_f64()) as usize / n_tasks).max(1024);

    let mut senders = Vec::with_capacity(n_tasks);
    let mut tasks = Vec::with_capacity(n_tasks);
    for task_index in 0..n_tasks {
        let (sender, mut tickets) = tokio::sync::mpsc::unbounded_channel::<Ticket>();
        senders.push(sender);
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = TaskTally {
                latencies: Latencies::with_capacity(per_task_capacity),
                ..TaskTally::default()
            };
            let mut from_schedule = Latencies::with_capacity(per_task_capacity);
            while let Some(ticket) = tickets.recv().await {
                let sent = std::time::Instant::now();
                let result = call(task_index, ticket.sequence).await;
                let finished = std::time::Instant::now();
                if ticket.scheduled < window_start || finished >= window_end {
                    continue;
                }
                match result {
                    Ok(()) => {
                        tally.n_done += 1;
                        tally.latencies.record(finished - sent);
                        from_schedule.record(finished.saturating_duration_since(ticket.scheduled));
                    }
                    Err(error) => tally.failed(error),
                }
            }
            (tally, from_schedule)
        }));
    }
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            let mut sequence = 0u64;
            loop {
                let scheduled = started + interval.mul_f64(sequence as f64);
                if scheduled >= window_end {
                    break;
                }
                let now = std::time::Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                let task = (sequence % senders.len() as u64) as usize;
                if senders[task]
                    .send(Ticket {
                        scheduled,
                        sequence,
                    })
                    .is_err()
                {
                    break;
                }
                sequence += 1;
            }
            // Dropping the senders ends every task once its queue is drained.
        })
        .expect("spawning the pacer thread");

    let tokio_started = Instant::now();
    let foreign_cpu = crate::cpu::watch_window(
        tokio_started + plan.warmup,
        tokio_started + plan.warmup + plan.measure,
    )
    .await;
    let mut total = TaskTally::default();
    let mut from_schedule = Latencies::with_capacity(per_task_capacity * n_tasks);
    for task in tasks {
        match task.await {
            Ok((tally, scheduled)) => {
                total.absorb(tally);
                from_schedule.merge(scheduled);
            }
            Err(error) => total.failed(error.to_string()),
        }
    }
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    let mut measurement = Measurement::new(name, total.n_done, plan.measure.as_secs_f64())
        .with_latencies(total.latencies);
    measurement.latency_from_schedule = from_schedule.percentiles();
    measurement.errors = total.n_errors;
    measurement.first_error = total.first_error;
    measurement.foreign_cpu = foreign_cpu;
    measurement
}
