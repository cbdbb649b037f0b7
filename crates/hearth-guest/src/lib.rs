//! hearth's guest artifacts — the kernel, the initramfs and the base
//! template's root disk — built from pinned Debian packages and kept in a
//! content-addressed cache under the node's data directory.

pub mod cache;
mod command;
mod debian;
pub mod error;
pub mod initramfs;
pub mod kernel;
pub mod pins;
pub mod progress;
pub mod rootfs;

use std::path::Path;

pub use cache::Cache;
pub use error::{GuestError, Result};
pub use initramfs::Initramfs;
pub use kernel::Kernel;
pub use progress::Progress;
pub use rootfs::Rootfs;

/// Everything a base-template VM boots from.
#[derive(Debug, Clone)]
pub struct GuestArtifacts {
    pub kernel: Kernel,
    pub initramfs: Initramfs,
    pub rootfs: Rootfs,
}

/// Returns the cached artifacts for a guest running `envd`, building the
/// missing ones with progress printed.
pub fn ensure(cache: &Cache, envd: &Path, progress: &Progress) -> Result<GuestArtifacts> {
    ensure_with_ca(cache, envd, None, progress)
}

/// [`ensure`], with extra CA certificates (PEM) in the rootfs's trust store.
pub fn ensure_with_ca(
    cache: &Cache,
    envd: &Path,
    ca_bundle: Option<&[u8]>,
    progress: &Progress,
) -> Result<GuestArtifacts> {
    let (kernel, initramfs) = ensure_boot(cache, progress)?;
    let rootfs = rootfs::ensure(cache, envd, ca_bundle, progress)?;
    Ok(GuestArtifacts {
        kernel,
        initramfs,
        rootfs,
    })
}

/// The kernel and initramfs alone (enough to boot a probe guest).
pub fn ensure_boot(cache: &Cache, progress: &Progress) -> Result<(Kernel, Initramfs)> {
    let kernel = if cache.contains("kernel", &kernel::key()) {
        kernel::ensure(cache)?
    } else {
        progress.step("fetching the guest kernel", || kernel::ensure(cache))?
    };
    let initramfs = if cache.contains("initramfs", &initramfs::key(&kernel)) {
        initramfs::ensure(cache, &kernel)?
    } else {
        progress.step("building the initramfs", || {
            initramfs::ensure(cache, &kernel)
        })?
    };
    Ok((kernel, initramfs))
}
