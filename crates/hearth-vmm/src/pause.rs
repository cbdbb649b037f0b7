//! Pausing a clone: its whole state (devices, CPUs and RAM) goes to a file
//! in its run directory, which then keeps only the pages that differ from
//! the template's RAM file, and its VM is gone; the run directory keeps the
//! disk overlay as it was. Resuming starts a VM from that file, loaded over
//! the template's RAM file mapped copy-on-write as a clone's is, with the
//! same disk: processes, memory and files go on where they were.

use std::path::{Path, PathBuf};
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
    /// What of its RAM the snapshot holds; `None`: only its disk was kept
    /// (a resume boots the guest again).
    pub memory: Option<DiffStats>,
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
        let started = Instant::now();
        vmm.snapshot_sandbox(&sandbox.vm, &snapshot).await?;
        let migrated = started.elapsed();
        let kept = keep_only_changes(template, &snapshot).await?;
        tracing::info!(
            sandbox = %sandbox.id,
            migrate_ms = migrated.as_millis() as u64,
            compare_ms = (started.elapsed() - migrated).as_millis() as u64,
            pages_kept = kept.kept,
            "paused a clone's state"
        );
        Ok(kept)
    }
    .await;
    let memory = match written {
        Ok(memory) => memory,
        Err(cause) => {
            let _ = std::fs::remove_file(&snapshot);
            // `cont` after a completed migration runs the VM again as it was.
            let _ = vmm.resume(&sandbox.vm).await;
            return Err(PauseFailed::new(cause, sandbox));
        }
    };
    // The state is on disk: the VM is not needed any more, whichever way it
    // goes.
    Ok(let_go(vmm, sandbox, Some(memory)).await)
}

impl<V: Vmm> PauseFailed<V> {
    fn new(cause: VmmError, sandbox: Sandbox<V>) -> Self {
        Self {
            error: VmmError::Paused {
                sandbox: sandbox.id.clone(),
                action: "pausing",
                cause: Box::new(cause),
            },
            sandbox,
        }
    }
}

/// Ends a clone's VM whose state (`memory`) or disk is kept: killed when
/// its state is written, asked to quit (flushing its disk) when not.
async fn let_go<V: Vmm>(vmm: &V, sandbox: Sandbox<V>, memory: Option<DiffStats>) -> PausedSandbox {
    let Sandbox {
        id,
        template: name,
        run_dir,
        vm,
        ..
    } = sandbox;
    let ended = if memory.is_some() {
        vmm.kill(vm).await
    } else {
        vmm.stop(vm).await
    };
    if let Err(error) = ended {
        tracing::warn!(sandbox = %id, %error, "a paused clone's QEMU did not exit cleanly");
    }
    PausedSandbox {
        id,
        template: name,
        run_dir,
        memory,
    }
}

/// How long a guest's `sync` may take before a filesystem-only pause.
const SYNC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Pauses `sandbox` keeping only its disk: the guest writes what it holds
/// back (`sync`), then its VM quits. If the guest cannot sync, it runs on.
pub async fn pause_filesystem<V: Vmm>(
    vmm: &V,
    sandbox: Sandbox<V>,
) -> std::result::Result<PausedSandbox, PauseFailed<V>> {
    let synced = match sandbox.envd.run("sync", &[], None, SYNC_DEADLINE).await {
        Ok(output) if output.exit_code == 0 => Ok(()),
        Ok(output) => Err(VmmError::Invalid(format!(
            "sync in the guest exited with {}",
            output.exit_code
        ))),
        Err(error) => Err(error),
    };
    if let Err(cause) = synced {
        return Err(PauseFailed::new(cause, sandbox));
    }
    Ok(let_go(vmm, sandbox, None).await)
}

/// Drops from the clone state `snapshot` (written with mapped RAM) every
/// page equal to `template`'s RAM file, which the clone is restored over.
pub(crate) async fn keep_only_changes(template: &Template, snapshot: &Path) -> Result<DiffStats> {
    let (snapshot, ram) = (snapshot.to_owned(), template.memory_file());
    let length = u64::from(template.meta.memory_mib) << 20;
    tokio::task::spawn_blocking(move || {
        memory_diff::keep_only_changes(&snapshot, &ram, RAM_BLOCK, length)
    })
    .await
    .map_err(|e| VmmError::Invalid(format!("comparing RAM with the template: {e}")))?
}

/// Resumes a paused clone of `template` with `request` (its `run_dir` must
/// be the paused one; `init` is sent again, which sets the guest's clock).
/// With `fresh_boot`, or when only its disk was kept, the guest boots again
/// from its disk instead. On failure the paused state stays as it was.
pub async fn resume<V: Vmm>(
    vmm: &V,
    template: &Template,
    paused: &PausedSandbox,
    request: CloneRequest,
    fresh_boot: bool,
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
    let origin = if fresh_boot || paused.memory.is_none() {
        Origin::Boot
    } else {
        Origin::Paused(&snapshot)
    };
    let sandbox = crate::sandbox::start(vmm, template, &request, Instant::now(), origin)
        .await
        .map_err(wrap)?;
    // Loaded: the VM writes its disk from here on, and a later pause
    // writes a state of its own.
    if let Err(error) = std::fs::remove_file(&snapshot)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(sandbox = %paused.id, %error, "removing a resumed clone's snapshot");
    }
    Ok(sandbox)
}
