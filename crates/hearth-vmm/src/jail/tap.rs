//! Opening a VM's tap device for it: attaching to a tap needs
//! CAP_NET_ADMIN, which a jailed QEMU does not have, so hearth attaches and
//! QEMU inherits the descriptor (`-netdev tap,fd=N`).

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Result, VmmError};

/// Opens tap `name` (in the network namespace at `netns`, if any) as QEMU
/// would: no packet information header, with virtio-net headers.
pub fn open_tap(netns: Option<&Path>, name: &str) -> Result<OwnedFd> {
    let netns = netns.map(|p| p.to_owned());
    let name = name.to_owned();
    // setns changes only the calling thread, so a thread of its own enters
    // the namespace, opens the device there and ends.
    std::thread::scope(|scope| {
        scope
            .spawn(move || open_in(netns.as_deref(), &name))
            .join()
            .unwrap_or_else(|_| Err(VmmError::Invalid("the tap opener panicked".into())))
    })
}

fn open_in(netns: Option<&Path>, name: &str) -> Result<OwnedFd> {
    if let Some(netns) = netns {
        let namespace = std::fs::File::open(netns)
            .map_err(VmmError::io("opening the network namespace", netns))?;
        nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            VmmError::io("entering the network namespace", netns)(std::io::Error::from(e))
        })?;
    }
    Ok(hearth_net::tap::attach(name, true)?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_the_device_is_touched() {
        assert!(open_tap(None, "").is_err());
        assert!(open_tap(None, "a-name-longer-than-15").is_err());
    }
}
