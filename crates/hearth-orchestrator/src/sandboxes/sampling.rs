//! Every running sandbox's metrics, asked of its envd once a period and
//! kept in its history (see `sandbox_metrics`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hearth_vmm::EnvdClient;

use super::health_watch::HealthChange;
use super::{Entry, SandboxManager, lock};
use crate::sandbox_metrics::{MetricSample, SAMPLE_DEADLINE};
use hearth_vmm::sandbox_log::LogLevel;

impl SandboxManager {
    /// Samples every running sandbox each `period`, forever, and at once
    /// when a sandbox started or resumed. A sandbox busy being paused or
    /// snapshotted, or whose guest does not answer within
    /// [`SAMPLE_DEADLINE`], misses that round.
    pub async fn sample_metrics(self: Arc<Self>, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.sample_now.notified() => {}
            }
            self.sample_once().await;
        }
    }

    /// One round of [`Self::sample_metrics`].
    pub async fn sample_once(&self) {
        let lives: Vec<_> = lock(&self.sandboxes)
            .iter()
            .filter_map(|(id, entry)| match entry {
                Entry::Running(live) => Some((id.clone(), live.clone())),
                Entry::Starting { .. } | Entry::Paused(_) => None,
            })
            .collect();
        let running: HashSet<String> = lives.iter().map(|(id, _)| id.clone()).collect();
        self.health.keep_only(&running);
        let targets: Vec<(String, EnvdClient)> = lives
            .into_iter()
            .filter_map(|(id, live)| {
                let guard = live.running.try_lock().ok()?;
                let envd = guard.as_ref()?.sandbox.envd.clone();
                Some((id, envd))
            })
            .collect();
        let rounds = targets.into_iter().map(|(id, envd)| async move {
            let guest = envd.metrics(SAMPLE_DEADLINE).await;
            let at_secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs() as i64);
            if let Some(change) = self.health.observe(&id, guest.is_ok()) {
                self.health_changed(&id, change);
            }
            // A sandbox deleted meanwhile has an ended history, or none.
            match (guest, self.runtime.history.get(&id)) {
                (Ok(guest), Some(history)) => history.metrics.push(MetricSample { at_secs, guest }),
                (Err(error), _) => {
                    tracing::debug!(sandbox_id = %id, %error, "no metrics this round")
                }
                (Ok(_), None) => {}
            }
        });
        futures::future::join_all(rounds).await;
    }

    /// Logs a change of sandbox `id`'s health, in the node's log and the
    /// sandbox's own, if it still runs.
    fn health_changed(&self, id: &str, change: HealthChange) {
        let level = match change {
            HealthChange::StartedFailing => LogLevel::Warn,
            HealthChange::Recovered => LogLevel::Info,
        };
        tracing::info!(sandbox_id = %id, ?change, "guest health changed");
        let running = matches!(lock(&self.sandboxes).get(id), Some(Entry::Running(_)));
        if running {
            self.runtime
                .history
                .event(id, level, change.message(), serde_json::Map::new());
        }
    }
}
