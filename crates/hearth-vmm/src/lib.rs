//! hearth's microVM runtime: the [`Vmm`] interface and its QEMU `microvm`
//! implementation, template snapshots and copy-on-write clones.

pub mod accel;
pub mod console;
pub mod error;
pub mod jail;
mod line_bound;
pub mod memory_diff;
pub mod netns_exec;
mod process;
pub mod qemu;
mod qmp;
pub mod sandbox_log;
pub mod vmm;

pub use accel::{Accel, AccelChoice};
pub use console::{ConsoleLog, ConsoleSnapshot};
pub use error::{Result, VmmError};
pub use qemu::{QemuVm, QemuVmm};
pub use vmm::{
    AdoptSpec, BootSource, ConsoleSink, GuestMemory, NetAttachment, VmSpec, VmStatus, Vmm,
};
pub mod envd_body;
pub mod envd_client;
pub mod envd_process;
pub mod pause;
pub mod sandbox;
pub mod snapshot;
pub mod template;

pub use envd_client::{CommandOutput, EnvdClient, InitParams};
pub use envd_process::{OutputStream, ProcessSpec};
pub use memory_diff::DiffStats;
pub use pause::{PauseFailed, PausedSandbox};
pub use sandbox::{
    AdoptRequest, CloneRequest, CloneTimings, Sandbox, adopt_sandbox, clone_sandbox, destroy,
    detach,
};
pub use snapshot::SnapshotFiles;
pub use template::{
    BuildHost, BuildRequest, GuestDefaults, GuestNetwork, Template, TemplateConfig, TemplateImage,
    TemplateMeta, TemplateStore,
};
pub use vmm::StartupTimings;
