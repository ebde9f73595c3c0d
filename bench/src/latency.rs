//! Latency samples of one measurement and their percentiles. A sorted vector is exact and
//! cheap enough for the few million samples a run collects (8 bytes each).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Raw latency samples, in nanoseconds.
#[derive(Debug, Default)]
pub struct Latencies {
    nanos: Vec<u64>,
}

/// Percentiles of a set of samples, in microseconds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latencies {
    /// Returns an empty set with room for `capacity` samples.
    pub fn with_capacity(capacity: usize) -> Self {
        Latencies {
            nanos: Vec::with_capacity(capacity),
        }
    }

    /// Adds one sample.
    pub fn record(&mut self, latency: Duration) {
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Moves every sample of `other` into this set.
    pub fn merge(&mut self, mut other: Latencies) {
        self.nanos.append(&mut other.nanos);
    }

    /// Returns p50, p99, p99.9 and the maximum (nearest-rank), or `None` without samples.
    pub fn percentiles(mut self) -> Option<Percentiles> {
        if self.nanos.is_empty() {
            return None;
        }
        self.nanos.sort_unstable();
        let n_samples = self.nanos.len();
        let at = |quantile: f64| {
            // Nearest rank: the smallest sample with at least `quantile` of all at or below.
            let rank = (quantile * n_samples as f64).ceil() as usize;
            self.nanos[rank.clamp(1, n_samples) - 1] as f64 / 1_000.0
        };
        Some(Percentiles {
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut latencies = Latencies::with_capacity(1000);
        for micros in (1..=1000).rev() {
            latencies.record(Duration::from_micros(micros));
        }
        let percentiles = latencies.percentiles().unwrap();
        assert_eq!(percentiles.p50_us, 500.0);
        assert_eq!(percentiles.p99_us, 990.0);
        assert_eq!(percentiles.p999_us, 999.0);
        assert_eq!(percentiles.max_us, 1000.0);
        assert!(Latencies::default().percentiles().is_none());
    }
}
