//! Results: one `Measurement` per measured quantity, printed as a human table and as one
//! JSON line (`{"bench": …}`) that scripts can pick out with `grep '^{'`.

use serde::{Deserialize, Serialize};

use crate::latency::{Latencies, Percentiles};

/// One measured rate, with latencies when each operation was timed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    pub name: String,
    /// Operations completed inside the measurement window.
    pub operations: u64,
    /// Length of the measurement window.
    pub seconds: f64,
    /// Operations per second.
    pub rate: f64,
    /// Failed operations (an RPC error or an unexpected answer).
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Percentiles>,
    /// Paced runs: latency from each call's scheduled instant (includes waiting for a
    /// busy task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_from_schedule: Option<Percentiles>,
    /// Share of all cores busy in *other* processes during the window (0–1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreign_cpu: Option<f64>,
    /// Rates of every sample when this is the median of several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
}

impl Measurement {
    /// Builds a measurement from a count over a window, with optional latencies.
    pub fn new(name: impl Into<String>, operations: u64, seconds: f64) -> Self {
        Measurement {
            name: name.into(),
            operations,
            seconds,
            rate: if seconds > 0.0 {
                operations as f64 / seconds
            } else {
                0.0
            },
            errors: 0,
            first_error: None,
            latency: None,
            latency_from_schedule: None,
            foreign_cpu: None,
            samples: Vec::new(),
        }
    }

    /// Attaches the latency percentiles of `latencies`.
    pub fn with_latencies(mut self, latencies: Latencies) -> Self {
        self.latency = latencies.percentiles();
        self
    }
}

/// Prints `rows` under `title` as an aligned table. `other` is the share of the machine's
/// CPU used by other processes during the window: a disturbed number when it is large.
pub fn print_table(title: &str, rows: &[Measurement]) {
    println!("\n== {title} ==");
    println!(
        "{:<60} {:>10} {:>10} {:>9} {:>9} {:>9} {:>6} {:>6}",
        "measurement", "ops/s", "ops", "p50 µs", "p99 µs", "p99.9 µs", "errors", "other"
    );
    for row in rows {
        let (p50, p99, p999) = match &row.latency {
            Some(latency) => (
                format!("{:.0}", latency.p50_us),
                format!("{:.0}", latency.p99_us),
                format!("{:.0}", latency.p999_us),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let foreign = row
            .foreign_cpu
            .map_or("-".to_owned(), |share| format!("{:.0}%", share * 100.0));
        println!(
            "{:<60} {:>10.0} {:>10} {:>9} {:>9} {:>9} {:>6} {:>6}",
            row.name, row.rate, row.operations, p50, p99, p999, row.errors, foreign
        );
        if row.samples.len() > 1 {
            let rates: Vec<String> = row.samples.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "    median of {} samples: {}",
                rates.len(),
                rates.join(", ")
            );
        }
        if let Some(latency) = &row.latency_from_schedule {
            println!(
                "    from the scheduled instant: p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
                latency.p50_us, latency.p99_us, latency.p999_us
            );
        }
        if let Some(error) = &row.first_error {
            println!("    first error: {error}");
        }
    }
}

/// Prints `value` as one JSON line.
pub fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

/// Returns the additive limit `1 / (1/a + 1/b)` of two rates (DESIGN §10).
pub fn additive_limit(rate_a: f64, rate_b: f64) -> f64 {
    if rate_a <= 0.0 || rate_b <= 0.0 {
        return 0.0;
    }
    1.0 / (1.0 / rate_a + 1.0 / rate_b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additive_limit_is_the_harmonic_combination() {
        assert!((additive_limit(1000.0, 1000.0) - 500.0).abs() < 1e-9);
        assert!((additive_limit(1300.0, 26_000.0) - 1238.095).abs() < 0.01);
        assert_eq!(additive_limit(0.0, 10.0), 0.0);
    }
}
