//! What can go wrong driving a VM.

use std::path::PathBuf;
use std::time::Duration;

/// A VM, template or clone operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{vm}: cannot start QEMU: {source}")]
    Spawn { vm: String, source: std::io::Error },
    #[error("{vm}: {action}: {source}")]
    Process {
        vm: String,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{vm}: QEMU exited ({status}){}", log_suffix(.log_tail))]
    QemuExited {
        vm: String,
        status: String,
        log_tail: String,
    },
    #[error("{vm}: QMP `{command}` failed: {message}")]
    Qmp {
        vm: String,
        command: &'static str,
        message: String,
    },
    #[error("{vm}: timed out after {after:?} waiting for {what}")]
    Timeout {
        vm: String,
        what: &'static str,
        after: Duration,
    },
    #[error("{vm}: envd: {message}")]
    Envd { vm: String, message: String },
    #[error("{context} {}: {source}", .path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template '{template}': {reason}")]
    Template { template: String, reason: String },
    #[error("cloning sandbox '{sandbox}' from template '{template}': {cause}")]
    Clone {
        sandbox: String,
        template: String,
        cause: Box<VmmError>,
    },
    #[error("building template '{template}': {cause}")]
    TemplateBuild {
        template: String,
        cause: Box<VmmError>,
    },
    /// A clone's saved state is not what QEMU writes.
    #[error("the memory snapshot {}: {reason}", .path.display())]
    MemorySnapshot { path: PathBuf, reason: String },
    #[error("{sandbox}: {action}: {cause}")]
    Paused {
        sandbox: String,
        /// "pausing" or "resuming".
        action: &'static str,
        cause: Box<VmmError>,
    },
    #[error("{vm}: cannot adopt it: {reason}")]
    NotAdoptable { vm: String, reason: String },
    #[error("{0}")]
    Net(#[from] hearth_net::NetError),
    #[error("{0}")]
    Invalid(String),
}

fn log_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its last output: {tail}")
    }
}

impl VmmError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            context,
            path,
            source,
        }
    }
}

pub type Result<T, E = VmmError> = std::result::Result<T, E>;
