//! IPv4 forwarding. /proc/sys/net belongs to the network namespace of the
//! thread that opens a file in it, so the same write turns forwarding on for
//! the host or, from a thread inside a slot, for that slot alone.

use crate::error::NetError;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns on IPv4 forwarding in the calling thread's namespace.
pub fn enable_ipv4_forwarding() -> Result<(), NetError> {
    std::fs::write(IP_FORWARD, "1").map_err(NetError::system(format!("writing {IP_FORWARD}")))
}
