//! A sandbox's metrics over time: the node asks each running sandbox's envd
//! for its `/metrics` every second (`SandboxManager::sample_metrics`) and
//! keeps the answers, stamped with the host's clock, in a bounded ring per
//! sandbox.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use hearth_vmm::envd_client::GuestMetrics;

/// How often each running sandbox is sampled.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// How long one sample may take: a guest that does not answer in time is
/// skipped this round.
pub const SAMPLE_DEADLINE: Duration = Duration::from_millis(900);

/// One sample, at a whole second of the host's clock.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricSample {
    /// Unix seconds.
    pub at_secs: i64,
    #[serde(flatten)]
    pub guest: GuestMetrics,
}

/// The newest samples of one sandbox, oldest first, at most one a second.
#[derive(Debug)]
pub struct MetricsRing {
    capacity: usize,
    samples: Mutex<VecDeque<MetricSample>>,
}

impl MetricsRing {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            samples: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<MetricSample>> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `sample`; one of a second already held replaces it, and one
    /// older than the newest (a clock step back) is dropped.
    pub fn push(&self, sample: MetricSample) {
        let mut samples = self.lock();
        match samples.back() {
            Some(last) if last.at_secs == sample.at_secs => {
                samples.pop_back();
            }
            Some(last) if last.at_secs > sample.at_secs => return,
            _ => {}
        }
        samples.push_back(sample);
        while samples.len() > self.capacity {
            samples.pop_front();
        }
    }

    /// The samples from `start` to `end` (Unix seconds, inclusive; open
    /// when `None`), oldest first.
    pub fn range(&self, start: Option<i64>, end: Option<i64>) -> Vec<MetricSample> {
        self.lock()
            .iter()
            .filter(|s| start.is_none_or(|start| s.at_secs >= start))
            .filter(|s| end.is_none_or(|end| s.at_secs <= end))
            .copied()
            .collect()
    }

    pub fn latest(&self) -> Option<MetricSample> {
        self.lock().back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_secs: i64, cpu: f64) -> MetricSample {
        MetricSample {
            at_secs,
            guest: GuestMetrics {
                cpu_count: 2,
                cpu_used_pct: cpu,
                mem_total: 512 << 20,
                mem_used: 100 << 20,
                mem_cache: 10 << 20,
                disk_used: 1 << 30,
                disk_total: 2 << 30,
            },
        }
    }

    #[test]
    fn keeps_one_sample_a_second_within_the_capacity() {
        let ring = MetricsRing::new(3);
        ring.push(sample(10, 1.0));
        ring.push(sample(10, 2.0));
        ring.push(sample(9, 9.0));
        assert_eq!(ring.range(None, None), vec![sample(10, 2.0)]);
        for at in 11..=14 {
            ring.push(sample(at, 0.0));
        }
        let held: Vec<i64> = ring.range(None, None).iter().map(|s| s.at_secs).collect();
        assert_eq!(held, vec![12, 13, 14]);
        let inside: Vec<i64> = ring
            .range(Some(13), Some(13))
            .iter()
            .map(|s| s.at_secs)
            .collect();
        assert_eq!(inside, vec![13]);
        assert_eq!(ring.latest().map(|s| s.at_secs), Some(14));
    }
}
