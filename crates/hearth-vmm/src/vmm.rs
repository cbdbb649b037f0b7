//! The VMM interface the orchestrator drives, independent of the VMM behind it.

use std::future::Future;
use std::path::{Path, PathBuf};

use crate::accel::Accel;
use crate::error::Result;

/// Where a VM's RAM lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMemory {
    /// Anonymous memory (a VM that is never snapshotted).
    Anonymous,
    /// A template VM: RAM is this file, shared, so that saving the template
    /// is writing device state only.
    TemplateFile(PathBuf),
    /// A clone: a private copy-on-write mapping of a template's RAM file.
    /// Pages stay shared with the template until the guest writes them.
    CloneOf(PathBuf),
}

/// The VM's NIC: a tap device, optionally inside a network namespace.
#[derive(Debug, Clone)]
pub struct NetAttachment {
    /// `/run/netns/<name>` to start the VMM in, if any.
    pub netns: Option<PathBuf>,
    pub tap: String,
    pub mac: String,
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootSource {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
}

/// Where a VM's serial console goes.
#[derive(Debug, Clone)]
pub enum ConsoleSink {
    /// `serial.log` in the run directory, whole (template boots).
    File,
    /// An in-memory ring of this many bytes (sandboxes, whose guests may
    /// write without end), its lines also going to the sandbox's log.
    Ring(
        usize,
        Option<std::sync::Arc<crate::sandbox_log::SandboxLog>>,
    ),
}

/// Everything needed to start (or restore) one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Names the VM in logs and errors.
    pub name: String,
    /// Holds the VM's monitor socket, serial log and VMM log.
    pub run_dir: PathBuf,
    pub accel: Accel,
    pub boot: BootSource,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub memory: GuestMemory,
    /// A qcow2 image: the root disk.
    pub disk: Option<PathBuf>,
    pub net: Option<NetAttachment>,
    pub console: ConsoleSink,
}

impl VmSpec {
    pub fn serial_log(&self) -> PathBuf {
        self.run_dir.join("serial.log")
    }

    /// QEMU's console socket, for [`ConsoleSink::Ring`].
    pub fn console_socket(&self) -> PathBuf {
        self.run_dir.join("console.sock")
    }
}

/// A VM that an earlier process started and left running (a node that
/// restarted), to be taken over with [`Vmm::adopt`].
#[derive(Debug, Clone)]
pub struct AdoptSpec {
    /// Names the VM in logs and errors.
    pub name: String,
    /// The run directory it was started with: its VMM's command line must
    /// mention it, and its monitor socket is there.
    pub run_dir: PathBuf,
    /// Its VMM process.
    pub pid: u32,
    /// Where its console went when it was started. A ring starts empty:
    /// what the guest wrote before the adoption is not recovered.
    pub console: ConsoleSink,
}

impl AdoptSpec {
    /// QEMU's console socket, for [`ConsoleSink::Ring`].
    pub fn console_socket(&self) -> PathBuf {
        self.run_dir.join("console.sock")
    }
}

/// A VM's run state, as the orchestrator cares about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmStatus {
    Running,
    Paused,
    /// Waiting for its device state to be loaded.
    Restoring,
    /// The VMM process has exited.
    Exited,
    /// Anything else the VMM reports (shut down, crashed, …).
    Other,
}

/// Where the time of starting a VM went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartupTimings {
    /// From spawning the VMM to its monitor answering.
    pub vmm_start: std::time::Duration,
    /// Loading device state (clones) or nothing (boots), until running.
    pub restore: std::time::Duration,
}

/// A microVM monitor: boots, pauses, snapshots and clones VMs.
pub trait Vmm: Send + Sync {
    type Vm: Send + Sync;

    /// The accelerator every VM of this VMM runs under.
    fn accel(&self) -> Accel;

    /// Boots a VM from its kernel.
    fn start(&self, spec: &VmSpec) -> impl Future<Output = Result<Self::Vm>> + Send;

    /// Starts a VM from a template's device state; `spec.memory` must be
    /// [`GuestMemory::CloneOf`] the template's RAM file.
    fn clone_from_template(
        &self,
        spec: &VmSpec,
        device_state: &Path,
    ) -> impl Future<Output = Result<Self::Vm>> + Send;

    /// Pauses the VM and writes its device state to `device_state`; the VM
    /// stays paused. Its RAM is already in its template file.
    fn snapshot_template(
        &self,
        vm: &Self::Vm,
        device_state: &Path,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Pauses a clone and writes its whole state, RAM included (each page
    /// at a fixed offset, so that pages equal to its template's can be
    /// dropped from the file afterwards), to `snapshot`; the VM stays
    /// paused.
    fn snapshot_sandbox(
        &self,
        vm: &Self::Vm,
        snapshot: &Path,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Starts a VM from a clone's `snapshot`: `spec.memory` must be
    /// [`GuestMemory::CloneOf`] its template's RAM file, which the pages in
    /// the snapshot are loaded over.
    fn restore_sandbox(
        &self,
        spec: &VmSpec,
        snapshot: &Path,
    ) -> impl Future<Output = Result<Self::Vm>> + Send;

    /// Freezes the VM's root disk as it is now: `new_top` (a qcow2 file
    /// whose backing file is the disk's current top image, made by the
    /// caller) becomes the image the VM writes to, and the old top is never
    /// written again, so it can serve as a cached layer.
    fn snapshot_disk(
        &self,
        vm: &Self::Vm,
        new_top: &Path,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Gives `path`, which `vm` wrote and writes no more, to root, readable
    /// by every VM (a snapshot's state that other VMs start from).
    fn share(&self, vm: &Self::Vm, path: &Path) -> Result<()>;

    /// How long starting `vm` took.
    fn startup_timings(&self, vm: &Self::Vm) -> StartupTimings;

    fn pause(&self, vm: &Self::Vm) -> impl Future<Output = Result<()>> + Send;
    fn resume(&self, vm: &Self::Vm) -> impl Future<Output = Result<()>> + Send;
    fn status(&self, vm: &Self::Vm) -> impl Future<Output = Result<VmStatus>> + Send;

    /// Asks the VMM to quit (flushing disks), killing it after a deadline.
    fn stop(&self, vm: Self::Vm) -> impl Future<Output = Result<()>> + Send;
    /// Kills the VMM process at once.
    fn kill(&self, vm: Self::Vm) -> impl Future<Output = Result<()>> + Send;

    /// Takes over a VM that an earlier process started and left running:
    /// checks that `spec.pid` is its VMM and that the VM runs, then connects
    /// to its monitor and console again. Every other method works on the
    /// result as on a VM started here, except that how it exits is unknown.
    fn adopt(&self, spec: &AdoptSpec) -> impl Future<Output = Result<Self::Vm>> + Send;

    /// Lets go of a VM without stopping it: closes the connections to it,
    /// and the VM runs on, to be adopted by a later process.
    fn detach(&self, vm: Self::Vm);
}
