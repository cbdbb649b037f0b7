//! Errors of the node orchestrator.

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Guest(#[from] hearth_guest::GuestError),
    #[error(transparent)]
    Vmm(#[from] hearth_vmm::VmmError),
    #[error("network slot: {0}")]
    Net(#[from] hearth_net::NetError),
    #[error("sandbox record: {0}")]
    Record(#[from] crate::record::RecordError),
    #[error("{context} {}: {source}", .path.display())]
    Io {
        context: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;
