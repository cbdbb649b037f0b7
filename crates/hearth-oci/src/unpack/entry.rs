//! Applying one tar entry (not a whiteout) under the root: create or
//! replace what is at its path, then set owner, mode, xattrs and mtime.

use std::ffi::OsStr;
use std::fs::{File, FileTimes, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, makedev, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

use super::Unpacker;
use super::root::{self, normalise};
use crate::error::UnpackError;

/// Ownership, permissions, time and xattrs from an entry's headers.
pub(crate) struct Meta {
    uid: u32,
    gid: u32,
    /// Permission bits with setuid, setgid and sticky.
    mode: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    /// Reads the ustar header and the PAX records that override it.
    pub(crate) fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Self, UnpackError> {
        let header = entry.header();
        let mut uid = header.uid().map_err(UnpackError::Read)?;
        let mut gid = header.gid().map_err(UnpackError::Read)?;
        let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
        let mut mtime = header
            .mtime()
            .map_err(UnpackError::Read)
            .map(|t| i64::try_from(t).unwrap_or(i64::MAX))?;
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Read)? {
            for extension in extensions {
                let extension = extension.map_err(UnpackError::Read)?;
                let Ok(key) = extension.key() else { continue };
                let value = extension.value_bytes();
                let number = || std::str::from_utf8(value).ok()?.parse::<u64>().ok();
                match key {
                    "uid" => uid = number().unwrap_or(uid),
                    "gid" => gid = number().unwrap_or(gid),
                    // Seconds, possibly fractional and negative.
                    "mtime" => {
                        let seconds = std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.split('.').next()?.parse::<i64>().ok());
                        mtime = seconds.unwrap_or(mtime);
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                            xattrs.push((name.to_owned(), value.to_vec()));
                        }
                    }
                }
            }
        }
        let id = |id: u64| u32::try_from(id).map_err(|_| UnpackError::OwnerOutOfRange { id });
        Ok(Self {
            uid: id(uid)?,
            gid: id(gid)?,
            mode,
            mtime,
            xattrs,
        })
    }

    fn system_time(&self) -> SystemTime {
        let magnitude = Duration::from_secs(self.mtime.unsigned_abs());
        let time = if self.mtime >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        };
        time.unwrap_or(UNIX_EPOCH)
    }

    fn timespec(&self) -> TimeSpec {
        TimeSpec::new(self.mtime, 0)
    }
}

impl Unpacker<'_> {
    /// Creates the entry at `rel` (non-empty, normalised) from `entry`.
    pub(crate) fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        let meta = Meta::read(entry)?;
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(UnpackError::ReplacesRoot);
        };
        let dir = self
            .root
            .dir(parent)
            .map_err(UnpackError::io("create its parent directories"))?;
        if kind != EntryType::Directory {
            // A later layer's non-directory at this path wins over the
            // directory time recorded for it.
            self.dir_times.remove(rel);
        }
        match kind {
            EntryType::Directory => self.make_dir(&dir, name, rel, &meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.write_file(entry, &dir, name, rel, &meta)
            }
            EntryType::Symlink => make_symlink(entry, &dir, name, &meta),
            EntryType::Link => self.hard_link(entry, &dir, name, rel),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.make_node(entry, &dir, name, rel, &meta)
            }
            other => {
                (self.log)(format!(
                    "skipping {}: unsupported tar entry type {other:?}",
                    rel.display()
                ));
                Ok(())
            }
        }
    }

    /// A directory merges with one lower layers made; anything else there
    /// is replaced.
    fn make_dir(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        match root::lstat(dir, name).map_err(UnpackError::io("inspect it"))? {
            Some(stat) if root::is_dir(&stat) => {}
            _ => {
                clear(dir, name)?;
                mkdirat(dir, name, Mode::from_bits_truncate(0o700))
                    .map_err(UnpackError::io("create the directory"))?;
            }
        }
        let handle = openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(UnpackError::io("open the directory"))?;
        self.set_meta(File::from(handle), meta, rel, false)?;
        // Its time is set after the last layer: entries created in it later
        // would move it.
        self.dir_times.insert(rel.to_owned(), meta.mtime);
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        clear(dir, name)?;
        // O_EXCL after `clear`: a symlink planted at the name is never
        // written through.
        let handle = openat(
            dir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(UnpackError::io("create the file"))?;
        let mut file = File::from(handle);
        copy(entry, &mut file, &mut self.buffer)?;
        self.set_meta(file, meta, rel, true)
    }

    /// Links to an entry an earlier layer, or this one, made. The target is
    /// a path in the image like any entry's, and is never followed if it is
    /// a symlink: the link is to the symlink itself.
    fn hard_link<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        let target = entry
            .link_name()
            .map_err(UnpackError::Read)?
            .ok_or(UnpackError::MissingLinkTarget)?;
        let escapes = || UnpackError::LinkEscapesRoot {
            target: target.display().to_string(),
        };
        let target_rel = normalise(&target).ok_or_else(escapes)?;
        if target_rel == rel {
            return Ok(());
        }
        let (Some(target_parent), Some(target_name)) =
            (target_rel.parent(), target_rel.file_name())
        else {
            return Err(escapes());
        };
        let target_dir = self
            .root
            .existing_dir(target_parent)
            .map_err(UnpackError::io("find the link target"))?
            .ok_or_else(|| UnpackError::io("find the link target")(io::ErrorKind::NotFound))?;
        clear(dir, name)?;
        linkat(&target_dir, target_name, dir, name, AtFlags::empty())
            .map_err(UnpackError::io("create the hard link"))
    }

    /// Device nodes and fifos; a kernel that refuses device nodes (no
    /// CAP_MKNOD in a container, a nodev mount) costs a log line, not the
    /// image: it works without most of them.
    fn make_node<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let header = entry.header();
        let (node_type, device) = match header.entry_type() {
            EntryType::Fifo => (SFlag::S_IFIFO, 0),
            kind => {
                let major = header.device_major().map_err(UnpackError::Read)?;
                let minor = header.device_minor().map_err(UnpackError::Read)?;
                let node_type = if kind == EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                let device = makedev(u64::from(major.unwrap_or(0)), u64::from(minor.unwrap_or(0)));
                (node_type, device)
            }
        };
        clear(dir, name)?;
        match mknodat(
            dir,
            name,
            node_type,
            Mode::from_bits_truncate(0o600),
            device,
        ) {
            Ok(()) => set_meta_at(dir, name, meta, true),
            Err(err @ (Errno::EPERM | Errno::EACCES | Errno::EOPNOTSUPP)) => {
                (self.log)(format!(
                    "skipping {}: the kernel refused to create the device node ({err})",
                    rel.display()
                ));
                Ok(())
            }
            Err(err) => Err(UnpackError::io("create the device node")(err)),
        }
    }

    /// Sets the metadata of the image root from its `./` entry.
    pub(crate) fn apply_root<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        if entry.header().entry_type() != EntryType::Directory {
            return Err(UnpackError::ReplacesRoot);
        }
        let meta = Meta::read(entry)?;
        let handle = self
            .root
            .fd()
            .try_clone_to_owned()
            .map_err(UnpackError::io("open the directory"))?;
        self.set_meta(File::from(handle), &meta, Path::new(""), false)?;
        self.dir_times.insert(Path::new("").to_owned(), meta.mtime);
        Ok(())
    }

    /// Owner first: `chown` clears setuid and setgid bits, and drops
    /// `security.capability`, so mode and xattrs come after it.
    fn set_meta(
        &mut self,
        file: File,
        meta: &Meta,
        rel: &Path,
        with_time: bool,
    ) -> Result<(), UnpackError> {
        std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
            .map_err(UnpackError::io("set its owner"))?;
        file.set_permissions(Permissions::from_mode(meta.mode))
            .map_err(UnpackError::io("set its mode"))?;
        for (name, value) in &meta.xattrs {
            if let Err(err) = xattr::FileExt::set_xattr(&file, name, value) {
                self.xattr_failed(rel, name, &err);
            }
        }
        if with_time {
            let time = meta.system_time();
            file.set_times(FileTimes::new().set_accessed(time).set_modified(time))
                .map_err(UnpackError::io("set its modification time"))?;
        }
        Ok(())
    }

    /// Reports xattrs the destination's filesystem refuses ("where
    /// possible"): a few lines, not one per file of a large image.
    fn xattr_failed(&mut self, rel: &Path, name: &str, err: &io::Error) {
        const REPORTED: u32 = 5;
        self.xattr_failures += 1;
        if self.xattr_failures <= REPORTED {
            (self.log)(format!(
                "cannot set xattr {name} on {}: {err}",
                rel.display()
            ));
        }
        if self.xattr_failures == REPORTED {
            (self.log)("further xattr failures are not reported".to_owned());
        }
    }
}

/// The target is stored as written: symlinks are never followed outside the
/// root during the unpack (see `root`), and in the guest `/` is the root.
fn make_symlink<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dir: &OwnedFd,
    name: &OsStr,
    meta: &Meta,
) -> Result<(), UnpackError> {
    let target = entry
        .link_name()
        .map_err(UnpackError::Read)?
        .ok_or(UnpackError::MissingLinkTarget)?;
    clear(dir, name)?;
    symlinkat(target.as_ref(), dir, name).map_err(UnpackError::io("create the symlink"))?;
    set_meta_at(dir, name, meta, false)
}

/// Owner, mode (not for symlinks, which have none) and time of something
/// that cannot be opened: a symlink or a device node.
fn set_meta_at(
    dir: impl AsFd,
    name: &OsStr,
    meta: &Meta,
    set_mode: bool,
) -> Result<(), UnpackError> {
    let dir = dir.as_fd();
    fchownat(
        dir,
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(UnpackError::io("set its owner"))?;
    if set_mode {
        // Only device nodes get here, which this unpack just created: there
        // is no symlink for the call to follow.
        fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(UnpackError::io("set its mode"))?;
    }
    let time = meta.timespec();
    utimensat(dir, name, &time, &time, UtimensatFlags::NoFollowSymlink)
        .map_err(UnpackError::io("set its modification time"))?;
    Ok(())
}

/// Makes room for a new entry at `name`: whatever is there goes, a
/// directory with its contents.
fn clear(dir: &OwnedFd, name: &OsStr) -> Result<(), UnpackError> {
    match root::lstat(dir, name).map_err(UnpackError::io("inspect it"))? {
        None => Ok(()),
        Some(stat) if root::is_dir(&stat) => {
            root::remove_all(dir, name).map_err(UnpackError::io("replace the directory there"))
        }
        Some(_) => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
            .map_err(UnpackError::io("replace what is there")),
    }
}

/// Copies the entry's data, telling a broken layer (read) from a full disk
/// (write).
fn copy(from: &mut impl Read, to: &mut File, buffer: &mut [u8]) -> Result<(), UnpackError> {
    loop {
        let n = match from.read(buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(UnpackError::Read(err)),
        };
        to.write_all(&buffer[..n])
            .map_err(UnpackError::io("write the file"))?;
    }
}
