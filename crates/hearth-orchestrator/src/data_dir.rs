//! The node's data directory: everything heavy and long-lived lives here,
//! outside any source checkout, in a versioned layout.
//!
//! ```text
//! <root>/                           0700: only root may look inside
//! <root>/node-token                the node's gRPC token (0600), when it made one
//! <root>/v1/host/accel.json        the accelerator probed for this host
//! <root>/v1/artifacts/<kind>/<key>/ guest artifacts by input hash
//! <root>/v1/templates/<name>/<build id>/  template snapshots
//! <root>/v1/sandboxes/<prefix>/<id>/  running clones' disks, sockets, logs
//!                                      and `sandbox.json` (for re-adoption)
//! <root>/v1/paused/<prefix>/<id>/     paused clones: disk, state, record
//! <root>/v1/snapshots/<prefix>/<id>/  snapshots: state and the source's record
//! <root>/v1/layers/<prefix>/<id>.qcow2  frozen disk layers of snapshots, kept
//!                                      while any disk's backing chain has them
//! ```

use std::path::{Path, PathBuf};

/// Where the data directory is unless `HEARTH_DATA_DIR` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/hearth";
/// Version of the layout below the root.
const LAYOUT: &str = "v1";

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `HEARTH_DATA_DIR`, else [`DEFAULT_DATA_DIR`].
    pub fn from_env() -> Self {
        Self::new(
            std::env::var_os("HEARTH_DATA_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from),
        )
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the root as 0700, or makes an existing one 0700: it holds
    /// the database, tokens and keys, and every sandbox's disk and memory.
    pub fn ensure_private(&self) -> std::io::Result<()> {
        crate::private_files::ensure_private_dir(&self.root)
    }

    /// Where the node keeps the token of its gRPC API when it makes one.
    pub fn node_token(&self) -> PathBuf {
        self.root.join("node-token")
    }

    fn versioned(&self) -> PathBuf {
        self.root.join(LAYOUT)
    }

    pub fn host(&self) -> PathBuf {
        self.versioned().join("host")
    }

    pub fn artifacts(&self) -> PathBuf {
        self.versioned().join("artifacts")
    }

    pub fn templates(&self) -> PathBuf {
        self.versioned().join("templates")
    }

    pub fn sandboxes(&self) -> PathBuf {
        self.versioned().join("sandboxes")
    }

    /// Paused sandboxes' state (disk overlay, memory snapshot, record),
    /// apart from running ones, which a restart adopts or cleans up.
    pub fn paused(&self) -> PathBuf {
        self.versioned().join("paused")
    }

    /// Snapshots of sandboxes: each one's state and record.
    pub fn snapshots(&self) -> PathBuf {
        self.versioned().join("snapshots")
    }

    /// Sandboxes' logs and metrics, kept past their end and a restart.
    pub fn histories(&self) -> PathBuf {
        self.versioned().join("histories")
    }

    /// Disk layers that snapshots froze, shared by the disks over them.
    pub fn layers(&self) -> PathBuf {
        self.versioned().join("layers")
    }

    /// Where each jailed VMM's private root is mounted (in its own mount
    /// namespace; the directory itself stays empty).
    pub fn jail_root(&self) -> PathBuf {
        self.versioned().join("jail-root")
    }
}
