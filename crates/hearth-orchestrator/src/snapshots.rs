//! Snapshots on a node: a running sandbox's state and frozen disk, kept
//! under an id of the control plane's, from which new sandboxes start.
//!
//! A snapshot's state (`<snapshots>/<id>/memory.snapshot`, with the
//! source's record beside it) is read by each sandbox started from it. Its
//! disk layer (`<layers>/<id>.qcow2`) is under the disk of each sandbox
//! started from it: it is removed only once no disk's backing chain and no
//! snapshot has it, which [`NodeRuntime::collect_layers`] checks.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hearth_net::EgressPolicy;
use hearth_vmm::{InitParams, SnapshotFiles, Template};

use crate::error::{NodeError, Result};
use crate::record::SandboxRecord;
use crate::runtime::{NodeRuntime, RunningSandbox};

/// A snapshot this node keeps.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    pub id: String,
    /// The source sandbox as it was (its template build, shape, token).
    pub source: SandboxRecord,
    pub files: SnapshotFiles,
}

fn io(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NodeError {
    let path = path.to_owned();
    move |source| NodeError::Io {
        context,
        path,
        source,
    }
}

impl NodeRuntime {
    /// Where this naming's snapshots are.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.data.snapshots().join(self.naming.prefix())
    }

    /// Where this naming's disk layers are.
    pub fn layers_dir(&self) -> PathBuf {
        self.data.layers().join(self.naming.prefix())
    }

    fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id)
    }

    /// The files of snapshot `id`.
    pub fn snapshot_files(&self, id: &str) -> SnapshotFiles {
        SnapshotFiles {
            state: self.snapshot_dir(id).join(hearth_vmm::pause::SNAPSHOT),
            layer: self.layers_dir().join(format!("{id}.qcow2")),
        }
    }

    /// Snapshots `running` (a clone of `template`, described by `source`)
    /// as `id`; it runs on. On failure nothing of the snapshot is left.
    pub async fn snapshot_sandbox(
        &self,
        template: &Template,
        running: &RunningSandbox,
        source: SandboxRecord,
        id: &str,
    ) -> Result<NodeSnapshot> {
        let files = self.snapshot_files(id);
        let dir = self.snapshot_dir(id);
        if dir.exists() {
            return Err(NodeError::Invalid(format!("snapshot {id} exists already")));
        }
        let _layers = self.layers.lock().await;
        for made in [&dir, &self.layers_dir()] {
            std::fs::create_dir_all(made).map_err(io("creating", made))?;
        }
        let taken = async {
            let memory =
                hearth_vmm::snapshot::snapshot(&self.vmm, template, &running.sandbox, &files)
                    .await?;
            source.write(&dir)?;
            Ok::<_, NodeError>(memory)
        }
        .await;
        match taken {
            Ok(memory) => {
                tracing::info!(
                    snapshot = %id,
                    kept_mib = (memory.kept * 4096) >> 20,
                    "sandbox snapshotted"
                );
                Ok(NodeSnapshot {
                    id: id.to_owned(),
                    source,
                    files,
                })
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(error)
            }
        }
    }

    /// Starts sandbox `sandbox_id` from `snapshot` (whose source was a
    /// clone of `template`) in a new network slot.
    pub async fn clone_snapshot(
        &self,
        template: &Template,
        snapshot: &NodeSnapshot,
        sandbox_id: &str,
        init: InitParams,
        egress: &EgressPolicy,
    ) -> Result<RunningSandbox> {
        let run_dir = self.sandbox_dir(sandbox_id);
        let previous_token = snapshot.source.info.spec.access_token.clone();
        self.start_in_slot(sandbox_id, run_dir, init, egress, |request| {
            hearth_vmm::snapshot::clone_snapshot(
                &self.vmm,
                template,
                &snapshot.files,
                previous_token,
                request,
            )
        })
        .await
    }

    /// The snapshots on disk; one without a readable record or state is
    /// skipped (and left).
    pub fn snapshots(&self) -> Vec<NodeSnapshot> {
        let Ok(entries) = std::fs::read_dir(self.snapshots_dir()) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for dir in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            let source = match SandboxRecord::read(&dir) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "a snapshot without a usable record");
                    continue;
                }
            };
            let files = self.snapshot_files(&id);
            if files.state.is_file() && files.layer.is_file() {
                found.push(NodeSnapshot { id, source, files });
            }
        }
        found
    }

    /// Removes snapshot `id`'s state, and its layer unless a disk is over it.
    pub async fn remove_snapshot(&self, id: &str) -> Result<()> {
        let dir = self.snapshot_dir(id);
        std::fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
        self.collect_layers().await;
        Ok(())
    }

    /// Removes the layers that no snapshot and no sandbox's disk (running
    /// or paused) has in its backing chain. While a snapshot is taken (or a
    /// sandbox's directory moves) it does nothing: the next one collects.
    pub async fn collect_layers(&self) {
        let layers = self.layers_dir();
        let Ok(entries) = std::fs::read_dir(&layers) else {
            return;
        };
        let present: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        if present.is_empty() {
            return;
        }
        let Ok(_layers) = self.layers.try_lock() else {
            return;
        };
        let mut used = HashSet::new();
        let disks = [self.sandboxes_dir(), self.paused_sandboxes_dir()]
            .into_iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|entries| entries.filter_map(|e| e.ok()))
            .map(|e| e.path().join(hearth_vmm::template::DISK));
        let snapshot_layers = self
            .snapshots()
            .into_iter()
            .map(|snapshot| snapshot.files.layer);
        for top in disks.chain(snapshot_layers) {
            if !top.is_file() {
                continue;
            }
            match hearth_vmm::jail::backing_chain(&top) {
                Ok(chain) => used.extend(chain),
                Err(error) => {
                    // Nothing is collected when a chain cannot be read.
                    tracing::warn!(disk = %top.display(), %error, "reading a disk's backing chain");
                    return;
                }
            }
            used.insert(top);
        }
        for layer in present {
            if !used.contains(&layer) {
                match std::fs::remove_file(&layer) {
                    Ok(()) => tracing::debug!(layer = %layer.display(), "disk layer removed"),
                    Err(error) => {
                        tracing::warn!(layer = %layer.display(), %error, "removing a disk layer")
                    }
                }
            }
        }
    }
}
