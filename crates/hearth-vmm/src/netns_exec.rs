//! Starting a process inside a network namespace.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use crate::error::{Result, VmmError};

/// Makes `command`'s child join the network namespace at `netns` (a
/// `/run/netns/<name>` bind mount) before it executes, so the VMM opens its
/// tap device there. The namespace is opened now, in the parent, and the
/// descriptor lives as long as `command`.
pub fn enter_netns_on_exec(command: &mut tokio::process::Command, netns: &Path) -> Result<()> {
    let fd: OwnedFd = std::fs::File::open(netns)
        .map_err(VmmError::io("opening the network namespace", netns))?
        .into();
    let raw = fd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed; it makes one raw `setns` system
    // call on a descriptor the parent keeps open (moved into the closure), and
    // allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let _keep = &fd;
            if libc::setns(raw, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Ok(())
}
