//! Holding a slot's tap open, as QEMU does: a tap passes packets, and has a
//! carrier, only while a process holds it.

use std::fs::File;
use std::io;

/// Attaches to the existing tap `name` of the calling thread's namespace;
/// it stays attached until the file is closed.
pub fn attach(name: &str) -> io::Result<File> {
    hearth_net::tap::attach(name, false).map_err(io::Error::other)
}
