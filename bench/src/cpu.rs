//! How much CPU *other* processes used during a measurement. The machine is shared (other
//! developers compile on the same 2 cores), so each measurement records the share of all
//! cores busy outside this process over its window; a large share marks a number as
//! disturbed. Read from /proc/stat (all CPUs), /proc/self/stat (this process) and the
//! stat files of the server processes this process started ([`watch_pid`]): the programs
//! under test are not "other" processes.

use std::sync::Mutex;

/// Server processes whose CPU counts as the benchmark's own.
static WATCHED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Counts `pid`'s CPU time as the benchmark's own from now on.
pub fn watch_pid(pid: u32) {
    if let Ok(mut pids) = WATCHED.lock() {
        pids.push(pid);
    }
}

/// Stops counting `pid` (it is about to exit).
pub fn unwatch_pid(pid: u32) {
    if let Ok(mut pids) = WATCHED.lock() {
        pids.retain(|watched| *watched != pid);
    }
}

/// utime + stime of a process, in clock ticks, from its stat file's contents.
fn process_ticks(stat: &str) -> Option<u64> {
    // Fields after the parenthesised command name: utime and stime are 14th and 15th.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU counters at one instant, in clock ticks.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    total: u64,
    idle: u64,
    own: u64,
}

impl CpuSample {
    /// Reads the counters now; `None` where /proc is unavailable.
    pub fn now() -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|field| field.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal
        let total = fields.iter().sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        let mut own = process_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let watched = WATCHED.lock().map(|pids| pids.clone()).unwrap_or_default();
        for pid in watched {
            own += std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| process_ticks(&stat))
                .unwrap_or(0);
        }
        Some(CpuSample { total, idle, own })
    }

    /// Returns the share (0–1) of all CPU time between `self` and `later` that was busy
    /// outside this process.
    pub fn foreign_share(self, later: CpuSample) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        let busy = total.saturating_sub(later.idle.saturating_sub(self.idle));
        let own = later.own.saturating_sub(self.own);
        busy.saturating_sub(own) as f64 / total as f64
    }
}

/// Samples at `start` and `end` (async sleeps) and returns the foreign share between.
pub async fn watch_window(start: tokio::time::Instant, end: tokio::time::Instant) -> Option<f64> {
    tokio::time::sleep_until(start).await;
    let first = CpuSample::now()?;
    tokio::time::sleep_until(end).await;
    Some(first.foreign_share(CpuSample::now()?))
}

/// Blocking variant of [`watch_window`] for the thread-based measurements.
pub fn watch_window_blocking(start: std::time::Instant, end: std::time::Instant) -> Option<f64> {
    std::thread::sleep(start.saturating_duration_since(std::time::Instant::now()));
    let first = CpuSample::now()?;
    std::thread::sleep(end.saturating_duration_since(std::time::Instant::now()));
    Some(first.foreign_share(CpuSample::now()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_and_computes_a_share_between_zero_and_one() {
        let first = CpuSample::now().expect("/proc is mounted");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let share = first.foreign_share(CpuSample::now().unwrap());
        assert!((0.0..=1.0).contains(&share), "{share}");
    }
}
