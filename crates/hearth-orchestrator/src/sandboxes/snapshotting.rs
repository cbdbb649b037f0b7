//! Snapshots through the manager: taken of a running sandbox, which runs
//! on, and named by a create as its template.

use std::sync::Arc;

use tracing::Instrument;

use crate::record::SandboxRecord;
use crate::snapshots::NodeSnapshot;
use crate::telemetry::{Operation, Outcome};

use super::{Entry, SandboxError, SandboxManager, lock};

impl SandboxManager {
    /// Snapshots running sandbox `id` as `snapshot_id`. A pause, snapshot
    /// or delete of the same sandbox waits for it.
    pub async fn snapshot(
        &self,
        id: &str,
        snapshot_id: &str,
    ) -> Result<Arc<NodeSnapshot>, SandboxError> {
        let span = tracing::info_span!("snapshot", sandbox_id = %id, snapshot_id);
        let started = std::time::Instant::now();
        let result = async {
            Self::validate_id("snapshot", snapshot_id)?;
            if lock(&self.snapshots).contains_key(snapshot_id) {
                return Err(SandboxError::AlreadyExists(snapshot_id.to_owned()));
            }
            let live = self.live(id)?;
            let guard = live.running.lock().await;
            let Some(running) = guard.as_ref() else {
                return Err(match lock(&self.sandboxes).get(id) {
                    Some(Entry::Paused(_)) => SandboxError::Paused(id.to_owned()),
                    _ => SandboxError::NotFound(id.to_owned()),
                });
            };
            let info = lock(&live.info).clone();
            let disk_mib =
                std::fs::metadata(running.sandbox.run_dir.join(hearth_vmm::template::DISK))
                    .map_or(0, |m| m.len() >> 20);
            self.room_for_state(info.memory_mib, disk_mib)?;
            let template = self.template_of(&info)?;
            let source = SandboxRecord::new(info, 0, 0);
            let snapshot = self
                .runtime
                .snapshot_sandbox(&template, running, source, snapshot_id)
                .await?;
            let snapshot = Arc::new(snapshot);
            lock(&self.snapshots).insert(snapshot_id.to_owned(), snapshot.clone());
            Ok(snapshot)
        }
        .instrument(span)
        .await;
        self.runtime
            .telemetry
            .operation(Operation::snapshot, Outcome::of(&result), started);
        result
    }

    /// Removes snapshot `snapshot_id`; sandboxes started from it run on.
    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), SandboxError> {
        let removed = lock(&self.snapshots).remove(snapshot_id);
        if removed.is_none() {
            return Err(SandboxError::UnknownSnapshot(snapshot_id.to_owned()));
        }
        self.runtime.remove_snapshot(snapshot_id).await?;
        tracing::info!(snapshot_id, "snapshot deleted");
        Ok(())
    }

    /// The snapshot a create names as its template, if it is one.
    pub(super) fn snapshot_named(&self, id: &str) -> Option<Arc<NodeSnapshot>> {
        lock(&self.snapshots).get(id).cloned()
    }

    /// Takes the snapshots a previous run of this node left on disk
    /// ([`crate::NodeRuntime::snapshots`]). Returns how many it took.
    pub fn adopt_snapshots(&self, found: Vec<NodeSnapshot>) -> usize {
        let mut snapshots = lock(&self.snapshots);
        let before = snapshots.len();
        for snapshot in found {
            snapshots
                .entry(snapshot.id.clone())
                .or_insert_with(|| Arc::new(snapshot));
        }
        snapshots.len() - before
    }
}
