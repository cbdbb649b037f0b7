//! The guest kernel: Debian's cloud kernel image and its module tree.

use std::path::{Path, PathBuf};

use crate::cache::{Cache, KeyHasher};
use crate::debian::fetch_and_unpack;
use crate::error::{GuestError, Result};
use crate::pins;

/// Bumped when the way the artifact is made changes.
const RECIPE: &str = "kernel-1";

/// A kernel artifact in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub key: String,
    /// The bzImage QEMU boots directly.
    pub image: PathBuf,
    /// `lib/modules/<release>` of the package.
    pub modules: PathBuf,
}

pub fn key() -> String {
    KeyHasher::new("kernel")
        .text("recipe", RECIPE)
        .text("package", &pins::KERNEL.spec())
        .finish()
}

/// Returns the cached kernel, downloading and unpacking it when missing.
pub fn ensure(cache: &Cache) -> Result<Kernel> {
    let key = key();
    let entry = cache.get_or_build("kernel", &key, |dir| {
        let root = fetch_and_unpack(&pins::KERNEL, dir)?;
        let boot = root.join("boot");
        let image = single_entry(&boot, "vmlinuz-")?;
        std::fs::rename(&image, dir.join("vmlinuz")).map_err(GuestError::io("moving", &image))?;
        let modules_root = root.join("lib/modules");
        let release = single_entry(&modules_root, "")?;
        std::fs::rename(&release, dir.join("modules"))
            .map_err(GuestError::io("moving", &release))?;
        std::fs::remove_dir_all(&root).map_err(GuestError::io("removing", &root))
    })?;
    Ok(Kernel {
        key,
        image: entry.join("vmlinuz"),
        modules: entry.join("modules"),
    })
}

fn single_entry(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found = std::fs::read_dir(dir)
        .map_err(GuestError::io("listing", dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path());
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(GuestError::Invalid(format!(
            "expected exactly one '{prefix}*' in {}",
            dir.display()
        ))),
    }
}
