//! Creating the VM's tap device and attaching to it: the kernel makes and
//! attaches tun/tap devices only through ioctls on /dev/net/tun (rtnetlink
//! refuses to create them), so this is the crate's one module with `unsafe`.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use crate::error::NetError;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the
/// union that follows (the rest of the union is unused here).
#[repr(C)]
struct TunRequest {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

// The kernel copies a whole `struct ifreq` in and out.
const _: () = assert!(size_of::<TunRequest>() == size_of::<libc::ifreq>());

/// Attaches to tap `name` of the calling thread's namespace (making it if
/// it does not exist), with no packet information header and, when
/// `vnet_header`, with virtio-net headers as QEMU uses them. The device
/// carries packets while the returned file is open.
pub fn attach(name: &str, vnet_header: bool) -> Result<File, NetError> {
    let what = || format!("attaching to tap {name}");
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.as_bytes().contains(&0) {
        return Err(NetError::system(what())(std::io::Error::from(
            std::io::ErrorKind::InvalidInput,
        )));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(NetError::system(format!(
            "{}: opening /dev/net/tun",
            what()
        )))?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if vnet_header {
        flags |= libc::IFF_VNET_HDR;
    }
    let mut request = TunRequest {
        name: [0; libc::IFNAMSIZ],
        // The flags fit in the 16 bits of ifr_flags.
        flags: flags as libc::c_short,
        _rest: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `tun` is an open /dev/net/tun descriptor for the whole call;
    // TUNSETIFF reads and writes exactly one `struct ifreq`, and `request`
    // is a live, exclusively borrowed value of that size and layout (checked
    // above), with a NUL-terminated name.
    let attached = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    if attached < 0 {
        return Err(NetError::system(what())(std::io::Error::last_os_error()));
    }
    Ok(tun)
}

/// Makes a persistent tap device `name` in the calling thread's namespace,
/// as `ip tuntap add dev <name> mode tap` does: no packet information
/// header, no vnet header, owned by nobody in particular, down.
pub fn create(name: &str) -> Result<(), NetError> {
    let tun = attach(name, false)?;
    // Without persistence the device would go when `tun` closes below.
    // SAFETY: TUNSETPERSIST takes its argument by value (no pointer is
    // followed), on the descriptor that TUNSETIFF just attached.
    let persisted =
        unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if persisted < 0 {
        return Err(NetError::system(format!(
            "creating tap {name}: making it persistent"
        ))(std::io::Error::last_os_error()));
    }
    Ok(())
}
