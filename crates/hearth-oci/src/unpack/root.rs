//! The destination directory as the image's `/`.
//!
//! Every path an entry names is resolved by the kernel with
//! `openat2(RESOLVE_IN_ROOT)`: `..` stops at the destination and symlinks,
//! absolute ones included, resolve inside it, exactly as they will once the
//! tree is the guest's root filesystem. Only the parent directory is resolved
//! that way; the entry's own name is then created, replaced or removed with
//! `*at` calls that never follow a symlink in the final component. Nothing
//! can be written outside the destination, whatever a layer's symlinks say.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// How often a resolution is retried when the kernel reports a concurrent
/// rename (`EAGAIN`); nothing else writes to the destination, so once is
/// already unusual.
const RESOLVE_ATTEMPTS: usize = 4;

pub(crate) struct Root {
    fd: OwnedFd,
}

impl Root {
    pub(crate) fn open(dest: &Path) -> io::Result<Self> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            dest,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd })
    }

    /// The destination itself, readable (for `fchown`, `fchmod`, listing).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The directory `rel` (a [`normalise`]d path), with missing components
    /// created as root-owned 0755 directories, as tar does for parents that
    /// a layer does not list.
    pub(crate) fn dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        match self.open_dir(rel) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            found => return found,
        }
        let mut current = self.open_dir(Path::new(""))?;
        let mut prefix = PathBuf::new();
        for component in rel {
            prefix.push(component);
            current = match self.open_dir(&prefix) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    match mkdirat(&current, component, Mode::from_bits_truncate(0o755)) {
                        // Something is there after all: a dangling symlink,
                        // which the reopen below reports.
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(err) => return Err(err.into()),
                    }
                    self.open_dir(&prefix)?
                }
                other => other?,
            };
        }
        Ok(current)
    }

    /// The directory `rel` if it exists.
    pub(crate) fn existing_dir(&self, rel: &Path) -> io::Result<Option<OwnedFd>> {
        match self.open_dir(rel) {
            Ok(fd) => Ok(Some(fd)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// An `O_PATH` handle on the directory `rel`, resolved inside the root.
    fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        let path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut attempt = 1;
        loop {
            match openat2(&self.fd, path, how) {
                Err(Errno::EAGAIN) if attempt < RESOLVE_ATTEMPTS => attempt += 1,
                result => return result.map_err(io::Error::from),
            }
        }
    }
}

/// `path` as plain components relative to the image root: leading `/` and
/// `.` components dropped. `None` if it has a `..`, which no layer needs.
pub(crate) fn normalise(path: &Path) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(rel)
}

/// What is at `name` in `dir`, without following a symlink; `None` if
/// nothing.
pub(crate) fn lstat(dir: impl AsFd, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::ENOENT) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

pub(crate) fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// An `O_PATH` handle on the directory `name` in `dir`, not following a
/// symlink.
pub(crate) fn child_dir(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// The names in `dir`, without `.` and `..`.
pub(crate) fn list(dir: impl AsFd) -> io::Result<Vec<OsString>> {
    let mut handle = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in handle.iter() {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Removes `name` from `dir`, a directory with everything in it; never
/// follows a symlink. Nothing there is fine.
pub(crate) fn remove_all(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    let dir = dir.as_fd();
    let Some(stat) = lstat(dir, name)? else {
        return Ok(());
    };
    if is_dir(&stat) {
        let child = child_dir(dir, name)?;
        for grandchild in list(&child)? {
            remove_all(&child, &grandchild)?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}
