//! What this node's sandboxes did, for their users to read: each one's log
//! (a bounded [`SandboxLog`], fed by its console and the node's events) and
//! its metrics (a [`MetricsRing`] of per-second samples). Both are kept after
//! the sandbox ends for the retention (and at most
//! [`HistoryLimits::max_ended`] ended ones, the oldest going first), so that
//! what a sandbox did can be read after it was killed. Held in memory and,
//! once [`SandboxHistories::persist_in`] names a store, saved there when a
//! sandbox ends and when the node stops (see `history_store`), so a
//! restarted node serves them still.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_vmm::sandbox_log::{LogLevel, SandboxLog, now_ms};
use serde_json::{Map, Value};

use crate::history_store::{HistoryStore, HistoryStoreError, SavedHistory};

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

impl History {
    /// An empty history within `limits`.
    fn new(limits: &HistoryLimits) -> Self {
        Self {
            log: Arc::new(SandboxLog::new(
                limits.log_bytes_per_sandbox,
                limits.retention,
            )),
            metrics: MetricsRing::new(limits.samples_per_sandbox),
        }
    }
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
    store: Mutex<Option<HistoryStore>>,
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
            store: Mutex::new(None),
        }
    }

    fn store(&self) -> Option<HistoryStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Saves histories in `store` from now on, and takes back those it
    /// holds (of an earlier run): how many. A saved history of a sandbox
    /// that still existed counts as existing until
    /// [`Self::end_all_but`] says otherwise.
    pub fn persist_in(&self, store: HistoryStore) -> Result<usize, HistoryStoreError> {
        let saved = store.load_all()?;
        let limits = self.limits();
        let now = now_ms();
        let mut kept = self.lock();
        let mut loaded = 0;
        for history in saved {
            let ended = match history.ended_at_ms {
                None => None,
                Some(at_ms) => {
                    let ago = Duration::from_millis(u64::try_from(now - at_ms).unwrap_or(0));
                    match Instant::now().checked_sub(ago) {
                        Some(at) if ago < limits.retention => Some(at),
                        // Past the retention: it goes.
                        _ => {
                            store.remove(&history.sandbox_id);
                            continue;
                        }
                    }
                }
            };
            let restored = History::new(&limits);
            restored.log.restore(history.lines);
            for sample in history.samples {
                restored.metrics.push(sample);
            }
            kept.insert(
                history.sandbox_id,
                Kept {
                    history: Arc::new(restored),
                    ended,
                },
            );
            loaded += 1;
        }
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = Some(store);
        self.collect(&mut kept);
        Ok(loaded)
    }

    /// Saves sandbox `id`'s history, if the node keeps one and a store.
    fn save(&self, id: &str) {
        let Some(store) = self.store() else { return };
        let (history, ended) = match self.lock().get(id) {
            Some(entry) => (entry.history.clone(), entry.ended),
            None => return,
        };
        let saved = SavedHistory {
            sandbox_id: id.to_owned(),
            ended_at_ms: ended
                .map(|at| now_ms() - i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX)),
            lines: history.log.lines(),
            samples: history.metrics.range(None, None),
        };
        if let Err(error) = store.save(&saved) {
            tracing::warn!(%error, "a sandbox history was not saved");
        }
    }

    /// Saves the histories of sandboxes that still exist (the node stops).
    pub fn save_existing(&self) {
        let ids: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, entry)| entry.ended.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.save(&id);
        }
    }

    /// Every history of a sandbox not in `existing` has ended: after a
    /// restart, those the node did not get back.
    pub fn end_all_but(&self, existing: &std::collections::HashSet<String>) {
        let gone: Vec<String> = self
            .lock()
            .iter()
            .filter(|(id, entry)| entry.ended.is_none() && !existing.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.ended(&id);
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
            history: Arc::new(History::new(&limits)),
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
        {
            let mut kept = self.lock();
            if let Some(entry) = kept.get_mut(id) {
                entry.ended.get_or_insert_with(Instant::now);
            }
            self.collect(&mut kept);
        }
        self.save(id);
    }

    /// Drops histories ended longer ago than the retention, and the oldest
    /// ended ones beyond the count.
    fn collect(&self, kept: &mut HashMap<String, Kept>) {
        let limits = self.limits();
        let store = self.store();
        kept.retain(|id, entry| {
            let keep = entry.ended.is_none_or(|at| at.elapsed() < limits.retention);
            if let (false, Some(store)) = (keep, &store) {
                store.remove(id);
            }
            keep
        });
        let mut ended: Vec<(Instant, String)> = kept
            .iter()
            .filter_map(|(id, entry)| entry.ended.map(|at| (at, id.clone())))
            .collect();
        if ended.len() > limits.max_ended {
            ended.sort();
            for (_, id) in &ended[..ended.len() - limits.max_ended] {
                kept.remove(id);
                if let Some(store) = &store {
                    store.remove(id);
                }
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

    fn stored(dir: &std::path::Path, limits: HistoryLimits) -> (SandboxHistories, usize) {
        let histories = SandboxHistories::new(limits);
        let store = HistoryStore::open(dir).expect("a store");
        let loaded = histories.persist_in(store).expect("loaded");
        (histories, loaded)
    }

    fn messages(histories: &SandboxHistories, id: &str) -> Vec<String> {
        histories.get(id).map_or_else(Vec::new, |history| {
            history
                .log
                .lines()
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(&line.line).ok())
                .filter_map(|line| line["message"].as_str().map(str::to_owned))
                .collect()
        })
    }

    #[test]
    fn histories_are_saved_as_sandboxes_end_and_when_the_node_stops() {
        let dir = tempfile::tempdir().expect("a directory");
        let (first, loaded) = stored(dir.path(), HistoryLimits::default());
        assert_eq!(loaded, 0);
        for id in ["ended", "paused", "gone"] {
            first.event(id, LogLevel::Info, "Sandbox created", Map::new());
        }
        first.event("ended", LogLevel::Info, "Sandbox killed", Map::new());
        first.ended("ended");
        assert!(dir.path().join("ended.json").exists(), "saved as it ended");
        first.save_existing();
        drop(first);

        let (second, loaded) = stored(dir.path(), HistoryLimits::default());
        assert_eq!(loaded, 3);
        assert_eq!(
            messages(&second, "ended"),
            vec!["Sandbox created", "Sandbox killed"]
        );
        assert_eq!(second.counts(), (3, 1), "only `ended` had ended");
        // After the restart only `paused` came back.
        second.end_all_but(&["paused".to_owned()].into_iter().collect());
        assert_eq!(second.counts(), (3, 2));
        // Its log goes on after what it had, stamps still increasing.
        second.event("paused", LogLevel::Info, "Sandbox resumed", Map::new());
        assert_eq!(
            messages(&second, "paused"),
            vec!["Sandbox created", "Sandbox resumed"]
        );
        let stamps: Vec<i64> = second
            .get("paused")
            .map(|h| h.log.lines().iter().map(|l| l.at_ms).collect())
            .unwrap_or_default();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    }

    #[test]
    fn saved_histories_past_their_retention_or_count_are_deleted() {
        let dir = tempfile::tempdir().expect("a directory");
        let store = HistoryStore::open(dir.path()).expect("a store");
        let day_ms = 24 * 3600 * 1000;
        store
            .save(&SavedHistory {
                sandbox_id: "old".into(),
                ended_at_ms: Some(now_ms() - 2 * day_ms),
                lines: Vec::new(),
                samples: Vec::new(),
            })
            .expect("saved");
        let one_day = HistoryLimits {
            retention: Duration::from_secs(24 * 3600),
            max_ended: 1,
            ..HistoryLimits::default()
        };
        let (histories, loaded) = stored(dir.path(), one_day);
        assert_eq!(loaded, 0);
        assert!(!dir.path().join("old.json").exists());
        for id in ["a", "b"] {
            histories.event(id, LogLevel::Info, "Sandbox created", Map::new());
            histories.ended(id);
        }
        assert!(
            !dir.path().join("a.json").exists(),
            "pushed out by the count"
        );
        assert!(dir.path().join("b.json").exists());
    }
}
