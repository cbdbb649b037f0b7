//! What this node's sandboxes did, for their users to read: each one's log
//! (a bounded [`SandboxLog`], fed by its console and the node's events) and
//! its metrics (a [`MetricsRing`] of per-second samples). Both are kept after
//! the sandbox ends for the retention (and at most
//! [`HistoryLimits::max_ended`] ended ones, the oldest going first), so that
//! what a sandbox did can be read after it was killed. In memory: a
//! restarted node starts with none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_vmm::sandbox_log::{LogLevel, SandboxLog};
use serde_json::{Map, Value};

use crate::sandbox_metrics::MetricsRing;

/// How much of the sandboxes' history the node keeps.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Bytes of log lines kept per sandbox (the oldest go first).
    pub log_bytes_per_sandbox: usize,
    /// Metric samples kept per sandbox (one a second: an hour).
    pub samples_per_sandbox: usize,
    /// How long log lines are kept, and a history after its sandbox ended.
    pub retention: Duration,
    /// Histories of ended sandboxes kept at most.
    pub max_ended: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            log_bytes_per_sandbox: 256 * 1024,
            samples_per_sandbox: 3600,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_ended: 256,
        }
    }
}

/// One sandbox's log and metrics.
#[derive(Debug)]
pub struct History {
    pub log: Arc<SandboxLog>,
    pub metrics: MetricsRing,
}

#[derive(Debug)]
struct Kept {
    history: Arc<History>,
    /// When its sandbox ended; `None` while it exists (running or paused).
    ended: Option<Instant>,
}

/// Every sandbox's history on this node.
#[derive(Debug)]
pub struct SandboxHistories {
    limits: Mutex<HistoryLimits>,
    kept: Mutex<HashMap<String, Kept>>,
}

impl Default for SandboxHistories {
    fn default() -> Self {
        Self::new(HistoryLimits::default())
    }
}

impl SandboxHistories {
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            limits: Mutex::new(limits),
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// Applies to histories made from now on (and to the retention of all).
    pub fn set_limits(&self, limits: HistoryLimits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    fn limits(&self) -> HistoryLimits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The history of sandbox `id`, made if it has none; a sandbox that
    /// starts again (resumed) is no longer ended.
    pub fn open(&self, id: &str) -> Arc<History> {
        let limits = self.limits();
        let mut kept = self.lock();
        let entry = kept.entry(id.to_owned()).or_insert_with(|| Kept {
            history: Arc::new(History {
                log: Arc::new(SandboxLog::new(
                    limits.log_bytes_per_sandbox,
                    limits.retention,
                )),
                metrics: MetricsRing::new(limits.samples_per_sandbox),
            }),
            ended: None,
        });
        entry.ended = None;
        entry.history.clone()
    }

    /// The history of sandbox `id`, if the node has one.
    pub fn get(&self, id: &str) -> Option<Arc<History>> {
        let mut kept = self.lock();
        self.collect(&mut kept);
        kept.get(id).map(|entry| entry.history.clone())
    }

    /// Records a node event in sandbox `id`'s log.
    pub fn event(&self, id: &str, level: LogLevel, message: &str, fields: Map<String, Value>) {
        self.open(id).log.node_event(level, message, fields);
    }

    /// Sandbox `id` is gone: its history is kept for the retention.
    pub fn ended(&self, id: &str) {
        let mut kept = self.lock();
        if let Some(entry) = kept.get_mut(id) {
            entry.ended.get_or_insert_with(Instant::now);
        }
        self.collect(&mut kept);
    }

    /// Drops histories ended longer ago than the retention, and the oldest
    /// ended ones beyond the count.
    fn collect(&self, kept: &mut HashMap<String, Kept>) {
        let limits = self.limits();
        kept.retain(|_, entry| entry.ended.is_none_or(|at| at.elapsed() < limits.retention));
        let mut ended: Vec<(Instant, String)> = kept
            .iter()
            .filter_map(|(id, entry)| entry.ended.map(|at| (at, id.clone())))
            .collect();
        if ended.len() > limits.max_ended {
            ended.sort();
            for (_, id) in &ended[..ended.len() - limits.max_ended] {
                kept.remove(id);
            }
        }
    }

    /// How many histories are kept, and of them how many of ended sandboxes.
    pub fn counts(&self) -> (usize, usize) {
        let kept = self.lock();
        let ended = kept.values().filter(|entry| entry.ended.is_some()).count();
        (kept.len(), ended)
    }
}

/// Fields for a node event, from `(name, value)` pairs.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

#[cfg(test)]
mod tests {
    use hearth_vmm::sandbox_log::LogQuery;

    use super::*;

    fn lines(histories: &SandboxHistories, id: &str) -> usize {
        histories.get(id).map_or(0, |history| {
            history
                .log
                .query(&LogQuery {
                    limit: 100,
                    ..Default::default()
                })
                .len()
        })
    }

    #[test]
    fn an_ended_sandboxs_history_is_kept_until_the_count_bound_pushes_it_out() {
        let histories = SandboxHistories::new(HistoryLimits {
            max_ended: 2,
            ..HistoryLimits::default()
        });
        for id in ["a", "b", "c"] {
            histories.event(id, LogLevel::Info, "Sandbox created", Map::new());
        }
        histories.ended("a");
        histories.ended("b");
        assert_eq!(lines(&histories, "a"), 1);
        assert_eq!(histories.counts(), (3, 2));
        histories.ended("c");
        assert!(
            histories.get("a").is_none(),
            "the oldest ended history goes"
        );
        assert_eq!(lines(&histories, "c"), 1);
        // A resumed sandbox's log goes on.
        histories
            .open("b")
            .log
            .node_event(LogLevel::Info, "Sandbox resumed", Map::new());
        assert_eq!(lines(&histories, "b"), 2);
        assert_eq!(histories.counts(), (2, 1));
    }

    #[test]
    fn an_ended_sandboxs_history_goes_after_the_retention() {
        let histories = SandboxHistories::new(HistoryLimits {
            retention: Duration::ZERO,
            ..HistoryLimits::default()
        });
        histories.event("a", LogLevel::Info, "Sandbox created", Map::new());
        histories.ended("a");
        assert!(histories.get("a").is_none());
    }
}
