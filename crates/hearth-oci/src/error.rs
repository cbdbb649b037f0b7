//! What can go wrong while pulling or unpacking an image.
//!
//! The template builder shows these messages to users, so each names the
//! image, registry, layer or entry involved and never a path on the host: the
//! blob cache's locations are kept in fields that only `Debug` prints.

use std::path::PathBuf;
use std::time::Duration;

/// An image could not be pulled, cached or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("`{reference}` is not a valid image reference: {source}")]
    InvalidReference {
        reference: String,
        source: oci_client::ParseError,
    },
    #[error("image {reference} not found")]
    NotFound { reference: String },
    #[error("wrong registry credentials for {registry}")]
    AuthRefused { registry: String },
    /// Registries answer 401 for images that need credentials and (Docker
    /// Hub) for images that do not exist at all: they cannot be told apart.
    #[error(
        "{registry} refused to serve {reference} without credentials (or the image does not exist)"
    )]
    AuthRequired { registry: String, reference: String },
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("registry {registry} failed: {source}")]
    Registry {
        registry: String,
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{reference} has no linux/amd64 image (it has: {})", .available.join(", "))]
    NoAmd64 {
        reference: String,
        available: Vec<String>,
    },
    #[error("{reference}: unsupported {what} media type `{media_type}`")]
    UnsupportedMediaType {
        reference: String,
        what: &'static str,
        media_type: String,
    },
    #[error("{reference}: unsupported digest `{digest}` (only sha256 is supported)")]
    UnsupportedDigest { reference: String, digest: String },
    #[error("{reference}: blob {digest} does not match its digest (got {actual})")]
    DigestMismatch {
        reference: String,
        digest: String,
        actual: String,
    },
    #[error(
        "{reference}: the registry sent a different size for blob {digest} than the {expected} bytes the manifest declares"
    )]
    SizeMismatch {
        reference: String,
        digest: String,
        expected: u64,
    },
    #[error(
        "{reference} is too large: its {what} take {size} bytes, more than the limit of {limit}"
    )]
    TooLarge {
        reference: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{reference}: the image config is malformed: {source}")]
    BadConfig {
        reference: String,
        source: serde_json::Error,
    },
    #[error("pulling {reference} did not finish within {after:?}")]
    Timeout { reference: String, after: Duration },
    #[error("image cache: cannot {action}: {source}")]
    Store {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("layer {layer} is unreadable: {source}")]
    LayerRead {
        layer: String,
        source: std::io::Error,
    },
    #[error("cannot unpack layer {layer} at `{entry}`: {source}")]
    Unpack {
        layer: String,
        entry: String,
        source: UnpackError,
    },
    #[error("cannot prepare the root filesystem directory: {source}")]
    Destination { source: std::io::Error },
}

/// Why one entry of a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the path leads out of the image")]
    EscapesRoot,
    #[error("hard link target `{target}` leads out of the image")]
    LinkEscapesRoot { target: String },
    #[error("the entry would replace the image's root directory")]
    ReplacesRoot,
    #[error("the link has no target")]
    MissingLinkTarget,
    #[error("owner {id} does not fit in 32 bits")]
    OwnerOutOfRange { id: u64 },
    #[error("cannot read the entry: {0}")]
    Read(std::io::Error),
    #[error("cannot {op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
}

impl UnpackError {
    /// Wraps a failed system call, for `map_err`.
    pub(crate) fn io<E: Into<std::io::Error>>(op: &'static str) -> impl FnOnce(E) -> Self {
        move |source| Self::Io {
            op,
            source: source.into(),
        }
    }
}

impl OciError {
    pub(crate) fn store(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Store {
            action,
            path,
            source: without_path(source),
        }
    }
}

/// The system error alone: `tempfile` adds "at path …" to its errors' text,
/// which would put the cache's location into messages for users (`Store`
/// keeps the path for `Debug`). Its wrapper hides the OS error, so what is
/// left of such an error is its kind ("not a directory").
fn without_path(err: std::io::Error) -> std::io::Error {
    if err.raw_os_error().is_some() || err.get_ref().is_none() {
        err
    } else {
        std::io::Error::from(err.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_do_not_show_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, "").expect("file");
        // What tempfile reports when it cannot create its file.
        let err = tempfile::Builder::new()
            .tempfile_in(file.join("sub"))
            .expect_err("a file is no directory");
        assert!(err.to_string().contains("file"), "the premise: {err}");
        let message = OciError::store("create a blob file", &file)(err).to_string();
        assert_eq!(
            message,
            "image cache: cannot create a blob file: not a directory"
        );
        let plain = std::fs::create_dir_all(file.join("sub")).expect_err("a file is no directory");
        let message = OciError::store("create the blob directory", &file)(plain).to_string();
        assert_eq!(
            message,
            "image cache: cannot create the blob directory: Not a directory (os error 20)"
        );
    }
}
