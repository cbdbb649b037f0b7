//! Fetching and unpacking pinned Debian packages without installing them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::run;
use crate::error::{GuestError, Result};
use crate::pins::Pin;

/// Downloads `pin` with apt into `dir` and unpacks it into `dir/root`;
/// returns that root. The `.deb` is removed afterwards.
pub fn fetch_and_unpack(pin: &Pin, dir: &Path) -> Result<PathBuf> {
    run(
        "downloading a Debian package",
        Command::new("apt-get")
            .args(["download", "-q", &pin.spec()])
            .current_dir(dir),
    )?;
    let deb = find_deb(dir, pin.name)?;
    let root = dir.join("root");
    run(
        "unpacking a Debian package",
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
    )?;
    std::fs::remove_file(&deb).map_err(GuestError::io("removing", &deb))?;
    Ok(root)
}

fn find_deb(dir: &Path, name: &str) -> Result<PathBuf> {
    let prefix = format!("{name}_");
    std::fs::read_dir(dir)
        .map_err(GuestError::io("listing", dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .ok_or_else(|| GuestError::Invalid(format!("apt-get download left no {name}_*.deb")))
}
