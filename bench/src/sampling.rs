//! Sampling on a shared, noisy machine: each quantity is measured several times and the
//! median reported; a sample disturbed by other processes (see `cpu`) is taken again.
//! On 2 cores shared by servers and load generator, runs of the same RPC scenario vary
//! by up to ±25 % with where the scheduler places connections, so one sample is not a
//! number to record.

use crate::report::Measurement;

/// How each quantity is sampled on a shared, noisy machine.
#[derive(Clone, Copy, Debug)]
pub struct Quiet {
    /// Largest share of the CPU other processes may use during a kept sample.
    pub max_foreign_cpu: f64,
    /// Attempts per sample; the least disturbed one is kept.
    pub attempts: usize,
    /// Samples per quantity; the median (by rate) is reported.
    pub repeats: usize,
}

/// Takes `quiet.repeats` samples of `measure` and returns the median one (by rate), with
/// every sample's rate in `samples`. A sample during which other processes used more
/// than `quiet.max_foreign_cpu` of the CPU is taken again, up to `quiet.attempts` times,
/// keeping the least disturbed.
pub async fn quietest<F, Fut>(quiet: Quiet, mut measure: F) -> anyhow::Result<Measurement>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Measurement>>,
{
    let mut kept = Vec::new();
    for _ in 0..quiet.repeats.max(1) {
        kept.push(least_disturbed(quiet, &mut measure).await?);
    }
    kept.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let samples: Vec<f64> = kept.iter().map(|m| m.rate).collect();
    let mut median = kept.swap_remove(kept.len() / 2);
    median.samples = samples;
    Ok(median)
}

async fn least_disturbed<F, Fut>(quiet: Quiet, measure: &mut F) -> anyhow::Result<Measurement>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Measurement>>,
{
    let mut best: Option<Measurement> = None;
    for attempt in 1..=quiet.attempts.max(1) {
        let measurement = measure().await?;
        let foreign = measurement.foreign_cpu.unwrap_or(0.0);
        if foreign <= quiet.max_foreign_cpu {
            return Ok(measurement);
        }
        eprintln!(
            "  {}: other processes used {:.0} % of the CPU (attempt {attempt}); measuring again",
            measurement.name,
            foreign * 100.0
        );
        let better = best
            .as_ref()
            .is_none_or(|kept| foreign < kept.foreign_cpu.unwrap_or(0.0));
        if better {
            best = Some(measurement);
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    best.ok_or_else(|| anyhow::anyhow!("no attempt was made"))
}
