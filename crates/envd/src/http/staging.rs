//! All-or-nothing multipart uploads: until the whole body has arrived and
//! every part was within the limits, no file that existed before is touched.
//!
//! A part for a new file is written in place (as upstream envd does, so a
//! watcher sees it created and written under its own name) and removed
//! again if the upload fails. A part for an existing file goes to an
//! anonymous staging file first and is copied over the target in place when
//! the upload is complete, so the file keeps its inode, mode and links and
//! watchers see it written. Staging files live in the staging directory,
//! not beside their targets, where a watcher of the target's directory
//! would report them.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::ApiError;
use crate::filesystem::ownership::{chown, create_dirs};
use crate::users::User;

/// The new content of an existing file, in a file without a name.
struct Staged {
    target: PathBuf,
    file: File,
}

impl Staged {
    /// An empty staging file in `dir`. The name is random and opened with
    /// `O_EXCL | O_NOFOLLOW`: the directory may be world-writable (`/tmp`),
    /// and a name planted there (a symlink) must fail the open, not be
    /// followed. It is unlinked at once, so nothing outlives the upload,
    /// whatever way it ends.
    fn create(dir: &Path, target: &Path) -> io::Result<Self> {
        let name = dir.join(format!(".envd-upload-{}", uuid::Uuid::new_v4().simple()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&name)?;
        std::fs::remove_file(&name)?;
        Ok(Self {
            target: target.to_path_buf(),
            file,
        })
    }

    /// Truncates the target and copies the staged content into it (the
    /// kernel copies file to file), owned by `user`. Opening follows a
    /// symlink at the target, as writing in place always did.
    fn commit(mut self, user: &User) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut target = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.target)?;
        std::os::unix::fs::fchown(&target, Some(user.uid), Some(user.gid))?;
        io::copy(&mut self.file, &mut target)?;
        Ok(())
    }
}

/// Where one part's content goes.
pub struct PartFile {
    pub file: File,
    /// The content waits in a staging file until [`PendingUpload::commit`].
    pub staged: bool,
}

/// The files a multipart upload has written so far. Dropped before
/// [`Self::commit`] (the upload was refused, failed or its client went
/// away), it removes the files it created; staged content just goes away.
pub struct PendingUpload {
    staging_dir: PathBuf,
    created: Vec<PathBuf>,
    staged: Vec<Staged>,
}

impl PendingUpload {
    pub fn new(staging_dir: PathBuf) -> Self {
        Self {
            staging_dir,
            created: Vec::new(),
            staged: Vec::new(),
        }
    }

    /// Opens where the part for `target` is written: `target` itself when
    /// the upload creates it (parents are created too, all owned by
    /// `user`), else a new staging file.
    pub fn open_part(&mut self, target: &Path, user: &User) -> Result<PartFile, ApiError> {
        match std::fs::metadata(target) {
            Ok(meta) if meta.is_dir() => {
                return Err(ApiError::bad_request(format!(
                    "path '{}' is a directory",
                    target.display()
                )));
            }
            Ok(_) => return self.stage(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ApiError::from_io(target, &e)),
        }
        if let Some(parent) = target.parent() {
            create_dirs(parent, user).map_err(|e| ApiError::from_io(parent, &e))?;
        }
        // Exclusive: only a file this upload made is removed if it fails.
        // One that appeared meanwhile (or a dangling symlink) is staged.
        match OpenOptions::new().write(true).create_new(true).open(target) {
            Ok(file) => {
                self.created.push(target.to_path_buf());
                chown(target, user).map_err(|e| ApiError::from_io(target, &e))?;
                Ok(PartFile {
                    file,
                    staged: false,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.stage(target),
            Err(e) => Err(ApiError::from_io(target, &e)),
        }
    }

    /// Stages in the staging directory, else (an image without `/tmp`, a
    /// full or read-only one) beside the target, where a watcher may see
    /// the staging file come and go but the upload still works.
    fn stage(&mut self, target: &Path) -> Result<PartFile, ApiError> {
        let beside = target.parent().unwrap_or(Path::new("/"));
        let staged = Staged::create(&self.staging_dir, target)
            .or_else(|_| Staged::create(beside, target))
            .map_err(|e| {
                ApiError::internal(format!("staging the upload of '{}': {e}", target.display()))
            })?;
        let file = staged
            .file
            .try_clone()
            .map_err(|e| ApiError::internal(format!("staging the upload: {e}")))?;
        self.staged.push(staged);
        Ok(PartFile { file, staged: true })
    }

    /// Moves every staged content over its target (in the order of the
    /// parts) and keeps the created files. Returns the staged targets, whose
    /// metadata is still to be written.
    pub fn commit(mut self, user: &User) -> Result<Vec<PathBuf>, ApiError> {
        self.created.clear();
        let mut committed = Vec::with_capacity(self.staged.len());
        for staged in std::mem::take(&mut self.staged) {
            let target = staged.target.clone();
            staged
                .commit(user)
                .map_err(|e| ApiError::from_io(&target, &e))?;
            committed.push(target);
        }
        Ok(committed)
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        for path in &self.created {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "removing a file of a failed upload");
            }
        }
    }
}
