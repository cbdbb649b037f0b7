//! What can go wrong while building guest artifacts.

use std::path::PathBuf;

/// A guest artifact could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("{step}: cannot run `{program}`: {source}")]
    Spawn {
        step: &'static str,
        program: String,
        source: std::io::Error,
    },
    #[error("{step}: `{command}` failed ({status}): {stderr}")]
    CommandFailed {
        step: &'static str,
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{step}: `{command}` did not finish within {after:?}")]
    TimedOut {
        step: &'static str,
        command: String,
        after: std::time::Duration,
    },
    #[error("{context} ({path}): {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl GuestError {
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

pub type Result<T, E = GuestError> = std::result::Result<T, E>;
