//! A namespace standing in for a slot's VM. Its `eth0` has the guest's
//! address and MAC; the other end of that veth, `gst0`, is in the slot,
//! where tc moves every frame between it and the slot's real `tap0` as
//! QEMU would: what `gst0` receives is received by `tap0`, and what the
//! slot sends out of `tap0` goes out of `gst0`. So the slot's rules, which
//! name `tap0`, see the guest's traffic as they would a VM's.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;

use hearth_net::{GATEWAY, GUEST_ADDRESS, GUEST_MAC, GUEST_PREFIX, NetSlot, TAP_MAC, TAP_NAME};

use super::netns::{in_netns, ip, sysctl, tc};
use super::tap;

/// The stand-in guest of one slot; removed on drop.
pub struct Guest {
    pub netns: String,
    /// Held as QEMU holds it: the tap has a carrier only while it is open.
    _tap: Option<File>,
}

impl Guest {
    pub fn attach(slot: &NetSlot) -> io::Result<Self> {
        let netns = format!("{}g", slot.netns);
        let _ = ip(&["netns", "del", &netns]);
        ip(&["netns", "add", &netns])?;
        let mut guest = Self { netns, _tap: None };
        guest._tap = Some(in_netns(&slot.netns, || tap::attach(TAP_NAME))?);
        let (g, s) = (guest.netns.as_str(), slot.netns.as_str());
        ip(&[
            "link", "add", "gst0", "netns", s, "address", TAP_MAC, "type", "veth", "peer", "name",
            "eth0", "netns", g, "address", GUEST_MAC,
        ])?;
        // A wire, not a host: no addresses, no IPv6 of its own.
        sysctl(s, "net.ipv6.conf.gst0.disable_ipv6", "1")?;
        ip(&["-n", s, "link", "set", "gst0", "up"])?;
        let redirect = |device, direction, action, to| {
            tc(&["-n", s, "qdisc", "add", "dev", device, "clsact"])?;
            tc(&[
                "-n", s, "filter", "add", "dev", device, direction, "u32", "match", "u32", "0",
                "0", "action", "mirred", action, "redirect", "dev", to,
            ])
        };
        redirect("gst0", "ingress", "ingress", TAP_NAME)?;
        redirect(TAP_NAME, "egress", "egress", "gst0")?;
        let address = format!("{GUEST_ADDRESS}/{GUEST_PREFIX}");
        ip(&["-n", g, "link", "set", "lo", "up"])?;
        ip(&["-n", g, "link", "set", "eth0", "up"])?;
        ip(&["-n", g, "addr", "add", &address, "dev", "eth0"])?;
        ip(&[
            "-n",
            g,
            "route",
            "add",
            "default",
            "via",
            &GATEWAY.to_string(),
        ])?;
        Ok(guest)
    }

    /// Gives the guest a second address, which the slot must not let it use.
    pub fn add_address(&self, address: Ipv4Addr) -> io::Result<()> {
        ip(&[
            "-n",
            &self.netns,
            "addr",
            "add",
            &format!("{address}/32"),
            "dev",
            "eth0",
        ])
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Takes `gst0` in the slot with it.
        let _ = ip(&["netns", "del", &self.netns]);
    }
}
