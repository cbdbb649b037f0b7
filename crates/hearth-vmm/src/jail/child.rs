//! What a VMM's child process does between fork and exec to jail itself:
//! join its cgroups, build and enter its file tree, keep the descriptors it
//! is given, and become an unprivileged user with no capabilities.
//!
//! Everything here runs in the forked child of a multi-threaded process, so
//! it may only make system calls: every path, descriptor and id was prepared
//! by the parent.

use std::io::Error;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::null;

use super::mounts::{MountPlan, MountStep};

/// The jail's tmpfs: small, it only holds directories and mount points.
const TMPFS_OPTIONS: &[u8] = b"mode=0755,size=1m\0";
const TMPFS: &[u8] = b"tmpfs\0";

/// Everything the child needs, made by the parent.
#[derive(Debug)]
pub struct ChildSetup {
    pub plan: MountPlan,
    /// `cgroup.procs` of each of the VM's groups, open for writing.
    pub cgroup_procs: Vec<OwnedFd>,
    /// Descriptors QEMU is told about on its command line (the tap).
    pub inherit: Vec<RawFd>,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

fn check(result: libc::c_int) -> std::io::Result<()> {
    if result == -1 {
        Err(Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ChildSetup {
    /// Runs in the child, before exec.
    fn run(&self) -> std::io::Result<()> {
        for procs in &self.cgroup_procs {
            // SAFETY: writes one byte from a static buffer to a descriptor
            // the parent opened; "0" moves the writing process.
            let written = unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if written != 1 {
                return Err(Error::last_os_error());
            }
        }
        self.enter_file_tree()?;
        for fd in &self.inherit {
            // SAFETY: clears close-on-exec on a descriptor the parent keeps
            // open until the child has started.
            check(unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) })?;
        }
        // SAFETY: plain system calls on values; after setresuid to a
        // non-zero uid the kernel clears every capability (no keep-caps
        // securebit is set), and no_new_privs forbids regaining any on exec.
        unsafe {
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            check(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
            check(libc::setresgid(self.gid, self.gid, self.gid))?;
            check(libc::setresuid(self.uid, self.uid, self.uid))?;
        }
        Ok(())
    }

    fn enter_file_tree(&self) -> std::io::Result<()> {
        let root = self.plan.root.as_ptr();
        // SAFETY: each call gets NUL-terminated strings prepared by the
        // parent (or static ones) that outlive it, and null where the kernel
        // accepts null. The mount namespace is this child's own (unshare),
        // made private first so nothing propagates back to the host.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                null(),
                c"/".as_ptr(),
                null(),
                libc::MS_REC | libc::MS_PRIVATE,
                null(),
            ))?;
            check(libc::mount(
                TMPFS.as_ptr().cast(),
                root,
                TMPFS.as_ptr().cast(),
                libc::MS_NOSUID | libc::MS_NODEV,
                TMPFS_OPTIONS.as_ptr().cast(),
            ))?;
            for step in &self.plan.steps {
                match step {
                    MountStep::Dir(dir) => {
                        if libc::mkdir(dir.as_ptr(), 0o755) == -1 {
                            let error = Error::last_os_error();
                            if error.raw_os_error() != Some(libc::EEXIST) {
                                return Err(error);
                            }
                        }
                    }
                    MountStep::File(file) => {
                        let fd = libc::open(
                            file.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o600,
                        );
                        if fd == -1 {
                            return Err(Error::last_os_error());
                        }
                        libc::close(fd);
                    }
                    MountStep::Bind {
                        source,
                        target,
                        read_only,
                        devices,
                    } => {
                        check(libc::mount(
                            source.as_ptr(),
                            target.as_ptr(),
                            null(),
                            libc::MS_BIND,
                            null(),
                        ))?;
                        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID;
                        if *read_only {
                            flags |= libc::MS_RDONLY;
                        }
                        if !*devices {
                            flags |= libc::MS_NODEV;
                        }
                        check(libc::mount(null(), target.as_ptr(), null(), flags, null()))?;
                    }
                    MountStep::Symlink { target, link } => {
                        check(libc::symlink(target.as_ptr(), link.as_ptr()))?;
                    }
                }
            }
            check(libc::chdir(root))?;
            check(libc::chroot(c".".as_ptr()))?;
            check(libc::chdir(c"/".as_ptr()))?;
        }
        Ok(())
    }

    /// Makes `command`'s child run [`Self::run`] before it executes.
    pub fn install(self, command: &mut tokio::process::Command) {
        // SAFETY: `run` makes only async-signal-safe system calls on data
        // prepared here and moved into the closure; it allocates nothing
        // (an `io::Error` from an errno does not allocate).
        unsafe {
            command.pre_exec(move || self.run());
        }
    }
}
