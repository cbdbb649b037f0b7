//! Named network namespaces, kept the way `ip netns` keeps them: a namespace
//! lives on, with no process in it, as a bind mount of its nsfs file at
//! `/run/netns/<name>`. So `ip netns`, `ip -n`, and QEMU started in
//! [`crate::NetSlot::netns_path`] all see the namespaces made here.
//!
//! These calls act on the calling thread (see [`crate::worker`]); the
//! namespace-changing ones must only run on a thread of their own.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::NetError;

const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates namespace `name` and moves the calling thread into it.
///
/// Fails with [`NetError::NetnsExists`] when the name is taken: the mount
/// point is created exclusively, so two creators of one name never both win.
pub fn create_and_enter(name: &str) -> Result<(), NetError> {
    make_dir_shared()?;
    let target = path(name);
    // Mode 0 as `ip netns add` makes it: the file is only a mount point.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&target)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(NetError::NetnsExists(name.to_owned()));
        }
        Err(e) => {
            return Err(NetError::system(format!("creating {}", target.display()))(
                e,
            ));
        }
    }
    let made = nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(std::io::Error::from)
        .map_err(NetError::system(format!("unshare for {name}")))
        .and_then(|()| {
            // thread-self, not self: /proc/self is the main thread, which
            // stays in the host's namespace.
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(std::io::Error::from)
            .map_err(NetError::system(format!("mounting {}", target.display())))
        });
    if made.is_err() {
        let _ = std::fs::remove_file(&target);
    }
    made
}

/// Moves the calling thread into the existing namespace `name`.
pub fn enter(name: &str) -> Result<(), NetError> {
    let target = path(name);
    let file =
        File::open(&target).map_err(NetError::system(format!("opening {}", target.display())))?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(std::io::Error::from)
        .map_err(NetError::system(format!("entering {}", target.display())))
}

/// Removes namespace `name`'s mount; the kernel frees the namespace, and
/// everything in it, once nothing else holds it (a QEMU still running in it
/// keeps it alive until it exits). Fails if the namespace does not exist.
pub fn delete(name: &str) -> Result<(), NetError> {
    let target = path(name);
    // EINVAL: not a mount point (a half-made namespace); the file still goes.
    match nix::mount::umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => {
            return Err(NetError::system(format!("unmounting {}", target.display()))(e.into()));
        }
    }
    std::fs::remove_file(&target)
        .map_err(NetError::system(format!("removing {}", target.display())))
}

/// Makes /run/netns a shared mount point, as `ip netns add` does, so that a
/// namespace mounted there is seen from every mount namespace that has
/// /run/netns, and one unmounted is gone from all of them.
fn make_dir_shared() -> Result<(), NetError> {
    static SHARED: Mutex<bool> = Mutex::new(false);
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if *shared {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR)
        .map_err(NetError::system(format!("creating {NETNS_DIR}")))?;
    let make_shared = || {
        nix::mount::mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => {}
        // Not a mount point yet: bind it onto itself to make it one.
        Err(nix::errno::Errno::EINVAL) => {
            nix::mount::mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .and_then(|()| make_shared())
            .map_err(std::io::Error::from)
            .map_err(NetError::system(format!(
                "making {NETNS_DIR} a shared mount"
            )))?;
        }
        Err(e) => {
            return Err(NetError::system(format!(
                "making {NETNS_DIR} a shared mount"
            ))(e.into()));
        }
    }
    *shared = true;
    Ok(())
}
