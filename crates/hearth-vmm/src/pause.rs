//! Pausing a clone: its whole state (devices, CPUs and RAM) goes to a file
//! in its run directory, which then keeps only the pages that differ from
//! the template's RAM file, and its VM is gone; the run directory keeps the
//! disk overlay as it was. Resuming starts a VM from that file, loaded over
//! the template's RAM file mapped copy-on-write as a clone's is, with the
//! same disk: processes, memory and files go on where they were.

use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Result, VmmError};
use crate::memory_diff::{self, DiffStats};
use crate::sandbox::{CloneRequest, Origin, Sandbox};
use crate::template::Template;
use crate::vmm::Vmm;

/// The paused state in a clone's run directory.
pub const SNAPSHOT: &str = "memory.snapshot";
/// The RAM block of a microvm's memory backend (`memory-backend=ram0`).
const RAM_BLOCK: &str = "ram0";

/// A clone whose VM is gone and whose state is in its run directory.
#[derive(Debug, Clone)]
pub struct PausedSandbox {
    pub id: String,
    /// The name of the template it was cloned from.
    pub template: String,
    pub run_dir: PathBuf,
    /// What of its RAM the snapshot holds.
    pub memory: DiffStats,
}

impl PausedSandbox {
    pub fn snapshot(&self) -> PathBuf {
        self.run_dir.join(SNAPSHOT)
    }
}

/// A pause that did not happen: why, and the sandbox, running on as before.
pub struct PauseFailed<V: Vmm> {
    pub error: VmmError,
    pub sandbox: Sandbox<V>,
}

/// Pauses `sandbox` (a clone of `template`) to its run directory and stops
/// its VM. If the state cannot be written, the VM runs on.
pub async fn pause<V: Vmm>(
    vmm: &V,
    template: &Template,
    sandbox: Sandbox<V>,
) -> std::result::Result<PausedSandbox, PauseFailed<V>> {
    let snapshot = sandbox.run_dir.join(SNAPSHOT);
    let written = async {
        vmm.snapshot_sandbox(&sandbox.vm, &snapshot).await?;
        let (snapshot, ram) = (snapshot.clone(), template.memory_file());
        let length = u64::from(template.meta.memory_mib) << 20;
        tokio::task::spawn_blocking(move || {
            memory_diff::keep_only_changes(&snapshot, &ram, RAM_BLOCK, length)
        })
        .await
        .map_err(|e| VmmError::Invalid(format!("comparing RAM with the template: {e}")))?
    }
    .await;
    let memory = match written {
        Ok(memory) => memory,
        Err(cause) => {
            let _ = std::fs::remove_file(&snapshot);
            // `cont` after a completed migration runs the VM again as it was.
            let _ = vmm.resume(&sandbox.vm).await;
            return Err(PauseFailed {
                error: VmmError::Paused {
                    sandbox: sandbox.id.clone(),
                    action: "pausing",
                    cause: Box::new(cause),
                },
                sandbox,
            });
        }
    };
    let Sandbox {
        id,
        template: name,
        run_dir,
        vm,
        ..
    } = sandbox;
    // The state is on disk: the VM is not needed any more, whichever way it
    // goes.
    if let Err(error) = vmm.kill(vm).await {
        tracing::warn!(sandbox = %id, %error, "a paused clone's QEMU did not exit cleanly");
    }
    Ok(PausedSandbox {
        id,
        template: name,
        run_dir,
        memory,
    })
}

/// Resumes a paused clone of `template` with `request` (its `run_dir` must
/// be the paused one; `init` is sent again, which sets the guest's clock).
/// On failure the paused state stays as it was.
pub async fn resume<V: Vmm>(
    vmm: &V,
    template: &Template,
    paused: &PausedSandbox,
    request: CloneRequest,
) -> Result<Sandbox<V>> {
    let wrap = |cause: VmmError| VmmError::Paused {
        sandbox: paused.id.clone(),
        action: "resuming",
        cause: Box::new(cause),
    };
    template.check_restorable(vmm.accel()).map_err(wrap)?;
    if request.run_dir != paused.run_dir {
        return Err(wrap(VmmError::Invalid(format!(
            "resumed in {}, paused in {}",
            request.run_dir.display(),
            paused.run_dir.display()
        ))));
    }
    let snapshot = paused.snapshot();
    let sandbox = crate::sandbox::start(
        vmm,
        template,
        &request,
        Instant::now(),
        Origin::Paused(&snapshot),
    )
    .await
    .map_err(wrap)?;
    // Loaded: the VM writes its disk from here on, and a later pause
    // writes a state of its own.
    if let Err(error) = std::fs::remove_file(&snapshot) {
        tracing::warn!(sandbox = %paused.id, %error, "removing a resumed clone's snapshot");
    }
    Ok(sandbox)
}
