//! OCI and Docker images for hearth's template builder: [`ImageStore::pull`]
//! fetches an image's manifest, config and layers from a registry into a
//! digest-addressed blob cache, and [`unpack`] applies the layers, whiteouts
//! included, to a directory that then becomes an ext4 root filesystem.
//!
//! [`push`] is the other direction, for tests and tools: it publishes a
//! directory as a single-layer image.

mod config;
pub mod error;
mod media;
mod pull;
pub mod push;
mod reference;
mod registry;
mod store;
mod unpack;

use std::path::PathBuf;
use std::time::Duration;

pub use error::{OciError, UnpackError};
pub use store::ImageStore;
pub use unpack::unpack;

/// A registry login.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Leaves the password out of logs.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How a pull may reach registries and how much it may take.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Registries (host or host:port) reached over plain HTTP. Loopback hosts
    /// (localhost, 127.0.0.0/8, [::1]) are always plain HTTP, like Docker does.
    pub insecure_registries: Vec<String>,
    /// Deadline for the whole pull.
    pub timeout: Duration,
    /// Refuse images whose compressed layers add up to more than this.
    pub max_image_bytes: u64,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            timeout: Duration::from_secs(30 * 60),
            max_image_bytes: 20 << 30,
        }
    }
}

/// An image whose layers are all in the [`ImageStore`].
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// Normalised reference, e.g. "docker.io/library/python:3.12".
    pub reference: String,
    /// Digest of the (platform) manifest: identifies the image's content.
    pub manifest_digest: String,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
    pub config: ImageConfig,
}

/// One layer blob in the cache.
#[derive(Debug, Clone)]
pub struct Layer {
    /// `sha256:<hex>` of the compressed blob.
    pub digest: String,
    pub media_type: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// The blob file in the [`ImageStore`].
    pub path: PathBuf,
    /// The compression the media type states; `None` for media types that
    /// do not say reliably (Docker's), whose magic bytes decide at unpack.
    pub compression: Option<Compression>,
}

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The parts of an image's config that shape how its processes run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `K=V` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}
