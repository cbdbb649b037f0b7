//! Files and directories only their owner (root) may read: the data
//! directory, the database, tokens, keys and the SDK settings.
//!
//! A secret is written to a new file created with `O_CREAT | O_EXCL |
//! O_NOFOLLOW` and mode 0600 under a random name beside its target, then
//! renamed over the target. Neither step follows a symlink someone planted
//! (at the temporary name the open fails, at the target the rename replaces
//! the link itself), a reader sees the old file or the whole new one, and
//! the secret is never readable by others, not even for a moment.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

pub const PRIVATE_DIR_MODE: u32 = 0o700;
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// `n` random bytes from the kernel, as hex.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates `dir` (and missing parents, which get the same mode) as 0700,
/// and makes an existing one 0700 (an older hearth made it 0755).
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// Creates `path` empty as 0600 if it is missing and makes it 0600 if it
/// is there (never truncating it). A symlink at `path` is refused.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    file.set_permissions(Permissions::from_mode(PRIVATE_FILE_MODE))
}

/// Makes `path` 0600 when it exists; a missing one is fine.
pub fn restrict_if_present(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => {
            std::fs::set_permissions(path, Permissions::from_mode(PRIVATE_FILE_MODE))
        }
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path` with `contents`, mode 0600, only if nothing is there
/// (not even a symlink). Returns false when something was.
pub fn create_private_file(path: &Path, contents: &[u8]) -> io::Result<bool> {
    let mut file = match open_new_private(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(true)
}

/// Replaces `path` with a 0600 file holding `contents` (see the module
/// documentation). The parent directory must exist.
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temporary = temporary_beside(path)?;
    let mut file = open_new_private(&temporary)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn open_new_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// `.<name>.<random>.tmp` in the same directory (so the rename stays on
/// one filesystem).
fn temporary_beside(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    Ok(path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        random_hex(8)?
    )))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A fresh directory under the system's temporary one.
    fn scratch() -> io::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("hearth-private-{}", random_hex(8)?));
        std::fs::create_dir(&dir)?;
        Ok(dir)
    }

    fn mode(path: &Path) -> io::Result<u32> {
        Ok(std::fs::symlink_metadata(path)?.mode() & 0o7777)
    }

    #[test]
    fn directories_become_private_new_or_old() -> TestResult {
        let root = scratch()?;
        let new = root.join("a/b");
        ensure_private_dir(&new)?;
        assert_eq!(mode(&new)?, 0o700);
        let old = root.join("old");
        std::fs::create_dir(&old)?;
        std::fs::set_permissions(&old, Permissions::from_mode(0o755))?;
        ensure_private_dir(&old)?;
        assert_eq!(mode(&old)?, 0o700);
        std::fs::remove_dir_all(root)?;
        Ok(())
    }

    #[test]
    fn files_become_private_and_keep_their_content() -> TestResult {
        let root = scratch()?;
        let file = root.join("db");
        ensure_private_file(&file)?;
        assert_eq!(mode(&file)?, 0o600);
        std::fs::write(&file, "rows")?;
        std::fs::set_permissions(&file, Permissions::from_mode(0o644))?;
        ensure_private_file(&file)?;
        assert_eq!(
            (mode(&file)?, std::fs::read_to_string(&file)?.as_str()),
            (0o600, "rows")
        );
        let wal = root.join("db-wal");
        restrict_if_present(&wal)?;
        std::fs::write(&wal, "")?;
        restrict_if_present(&wal)?;
        assert_eq!(mode(&wal)?, 0o600);
        std::fs::remove_dir_all(root)?;
        Ok(())
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() -> TestResult {
        let root = scratch()?;
        let victim = root.join("victim");
        std::fs::write(&victim, "untouched")?;
        let target = root.join("sdk.env");
        std::os::unix::fs::symlink(&victim, &target)?;
        write_private_file(&target, b"secret")?;
        assert_eq!(std::fs::read_to_string(&victim)?, "untouched");
        assert!(std::fs::symlink_metadata(&target)?.file_type().is_file());
        assert_eq!(mode(&target)?, 0o600);
        assert_eq!(std::fs::read_to_string(&target)?, "secret");

        // Creating only if missing refuses the link and does not write through it.
        let link = root.join("token");
        std::os::unix::fs::symlink(&victim, &link)?;
        assert!(!create_private_file(&link, b"x")?);
        assert!(ensure_private_file(&link).is_err());
        assert_eq!(std::fs::read_to_string(&victim)?, "untouched");
        let leftovers = std::fs::read_dir(&root)?.count();
        assert_eq!(leftovers, 3, "no temporary file is left");
        std::fs::remove_dir_all(root)?;
        Ok(())
    }
}
