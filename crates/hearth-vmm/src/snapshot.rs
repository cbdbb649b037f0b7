//! Snapshots of a running clone, and clones started from them. A snapshot
//! writes the clone's whole state, its RAM as what differs from its
//! template's, as a pause does, and copies its disk overlay (what it
//! changed of the template's disk) into a layer; the clone stops only while
//! that is written. A clone of a snapshot starts as a
//! resume does, over the template's RAM mapped copy-on-write, with a disk
//! of its own over the layer: snapshot and clones are independent.

use std::path::PathBuf;

use crate::error::{Result, VmmError};
use crate::memory_diff::DiffStats;
use crate::pause::{SNAPSHOT, keep_only_changes};
use crate::sandbox::{CloneRequest, Origin, Sandbox};
use crate::template::{DISK, Template};
use crate::vmm::Vmm;

/// A snapshot's files: the clone's state and its frozen disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFiles {
    /// The VM's state, RAM as the pages that differ from the template's.
    pub state: PathBuf,
    /// The disk as it was: a qcow2 layer over the template's disk.
    pub layer: PathBuf,
}

/// Snapshots the running clone `sandbox` of `template` into `files`. The
/// clone runs on afterwards whatever happens; on failure nothing of the
/// snapshot is left.
pub async fn snapshot<V: Vmm>(
    vmm: &V,
    template: &Template,
    sandbox: &Sandbox<V>,
    files: &SnapshotFiles,
) -> Result<DiffStats> {
    let wrap = |cause: VmmError| VmmError::Paused {
        sandbox: sandbox.id.clone(),
        action: "snapshotting",
        cause: Box::new(cause),
    };
    // The VMM writes where it may (its run directory); the state moves to
    // the snapshot once written.
    let writing = sandbox.run_dir.join(format!("{SNAPSHOT}.taking"));
    let disk = sandbox.run_dir.join(DISK);
    let written = async {
        // The migration stops the VM and, once complete, has QEMU write
        // back and let go of its disk: the disk image is of the same moment
        // as the state, and stays so until `cont`.
        vmm.snapshot_sandbox(&sandbox.vm, &writing).await?;
        copy_layer(&disk, &files.layer).await
    }
    .await;
    // `cont` after a completed (or failed) migration runs the VM on.
    let continued = vmm.resume(&sandbox.vm).await;
    let moved = written.and(continued).and_then(|()| {
        std::fs::rename(&writing, &files.state).map_err(VmmError::io("moving", &writing))?;
        vmm.share(&sandbox.vm, &files.state)?;
        vmm.share(&sandbox.vm, &files.layer)
    });
    if let Err(error) = moved {
        for path in [&writing, &files.state, &files.layer] {
            let _ = std::fs::remove_file(path);
        }
        return Err(wrap(error));
    }
    keep_only_changes(template, &files.state)
        .await
        .map_err(|error| {
            let _ = std::fs::remove_file(&files.state);
            wrap(error)
        })
}

/// Copies the clone's disk overlay (what it changed of its template's
/// disk, over which it stays) to `layer`.
async fn copy_layer(disk: &std::path::Path, layer: &std::path::Path) -> Result<()> {
    let (disk, layer) = (disk.to_owned(), layer.to_owned());
    tokio::task::spawn_blocking(move || {
        std::fs::copy(&disk, &layer)
            .map(drop)
            .map_err(VmmError::io("copying the disk to", &layer))
    })
    .await
    .map_err(|e| VmmError::Invalid(format!("copying a disk: {e}")))?
}

/// Starts a clone of `template` from its snapshot `files`: `request.init`
/// is sent with `previous_token`, the token the snapshotted clone's envd
/// has, so that the clone's own can replace it. On failure nothing of the
/// clone is left; the snapshot stays.
pub async fn clone_snapshot<V: Vmm>(
    vmm: &V,
    template: &Template,
    files: &SnapshotFiles,
    previous_token: Option<String>,
    request: CloneRequest,
) -> Result<Sandbox<V>> {
    let origin = Origin::Snapshot {
        state: &files.state,
        layer: &files.layer,
        previous_token,
    };
    crate::sandbox::start_new(vmm, template, request, origin).await
}
