//! Whether each running sandbox's guest answers: the metrics sampler asks
//! envd every second, and a guest that misses [`FAILING_AFTER`] samples in a
//! row is failing until it answers again. Each change is a line in the
//! sandbox's log.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Samples missed in a row after which a guest counts as failing: one
/// missed sample is a busy guest, three seconds of silence is not.
pub const FAILING_AFTER: u32 = 3;

/// A guest's health changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    StartedFailing,
    Recovered,
}

impl HealthChange {
    /// The sandbox log's message for it.
    pub fn message(self) -> &'static str {
        match self {
            Self::StartedFailing => "Sandbox healthcheck started failing",
            Self::Recovered => "Sandbox healthcheck recovered",
        }
    }
}

/// Missed samples in a row, per sandbox.
#[derive(Debug, Default)]
pub struct HealthWatch {
    misses: Mutex<HashMap<String, u32>>,
}

impl HealthWatch {
    /// Notes whether sandbox `id` answered this round; the change, if any.
    pub fn observe(&self, id: &str, answered: bool) -> Option<HealthChange> {
        let mut misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        let count = misses.entry(id.to_owned()).or_insert(0);
        let before = *count;
        if answered {
            *count = 0;
            (before >= FAILING_AFTER).then_some(HealthChange::Recovered)
        } else {
            *count = before.saturating_add(1);
            (*count == FAILING_AFTER).then_some(HealthChange::StartedFailing)
        }
    }

    /// Forgets every sandbox but `running` (the others ended or paused; a
    /// resumed one starts healthy).
    pub fn keep_only(&self, running: &HashSet<String>) {
        self.misses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| running.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_fails_after_three_misses_in_a_row_and_recovers_once() {
        let watch = HealthWatch::default();
        assert_eq!(watch.observe("a", false), None);
        assert_eq!(watch.observe("a", true), None, "one miss is not failing");
        assert_eq!(watch.observe("a", false), None);
        assert_eq!(watch.observe("a", false), None);
        assert_eq!(
            watch.observe("a", false),
            Some(HealthChange::StartedFailing)
        );
        assert_eq!(watch.observe("a", false), None, "said once");
        assert_eq!(watch.observe("b", true), None, "sandboxes are apart");
        assert_eq!(watch.observe("a", true), Some(HealthChange::Recovered));
        assert_eq!(watch.observe("a", true), None);
    }

    #[test]
    fn a_sandbox_that_stops_running_is_forgotten() {
        let watch = HealthWatch::default();
        for _ in 0..FAILING_AFTER {
            watch.observe("a", false);
        }
        watch.keep_only(&HashSet::new());
        assert_eq!(watch.observe("a", true), None, "starts afresh");
    }
}
