//! Creating directories and files on behalf of a user: envd runs as root, so
//! whatever it creates is handed to the requesting user.

use std::io;
use std::path::{Path, PathBuf};

use crate::users::User;

pub fn chown(path: &Path, user: &User) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
}

/// Creates `dir` and any missing parents, each owned by `user`.
/// Returns whether `dir` itself was created.
pub fn create_dirs(dir: &Path, user: &User) -> io::Result<bool> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                // A symlink to a directory is as good as a directory.
                if path.is_dir() {
                    break;
                }
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("path '{}' exists but is not a directory", path.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(path.to_path_buf()),
            Err(e) => return Err(e),
        }
        cursor = path.parent();
    }
    let created = !missing.is_empty();
    for path in missing.iter().rev() {
        match std::fs::create_dir(path) {
            Ok(()) => chown(path, user)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}
