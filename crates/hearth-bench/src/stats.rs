//! Nearest-rank percentiles of latency samples.

use std::time::Duration;

/// The `q` quantile (0..=1) of `samples`, by nearest rank.
pub fn percentile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// `p50 / p95` in milliseconds.
pub fn p50_p95(samples: &[Duration]) -> String {
    format!(
        "{:8.1} / {:8.1}",
        percentile(samples, 0.50).as_secs_f64() * 1e3,
        percentile(samples, 0.95).as_secs_f64() * 1e3
    )
}
