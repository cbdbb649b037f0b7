//! A namespace standing in for the internet, reached from the host through
//! a veth, and the host table a naming's slots need to reach it.

use std::io;
use std::net::Ipv4Addr;
use std::process::Command;

use hearth_net::{NetError, SlotNaming};

use super::netns::ip;

/// `<name>-inet` at 198.19.<octet>.1, the host at .2; removed on drop.
pub struct Internet {
    pub netns: String,
    host_veth: String,
    pub address: Ipv4Addr,
}

impl Internet {
    pub fn start(name: &str, octet: u8) -> io::Result<Self> {
        let netns = format!("{name}-inet");
        let host_veth = format!("{name}x0");
        let _ = ip(&["link", "del", &host_veth]);
        let _ = ip(&["netns", "del", &netns]);
        ip(&["netns", "add", &netns])?;
        let internet = Self {
            netns,
            host_veth,
            address: Ipv4Addr::new(198, 19, octet, 1),
        };
        let (n, v) = (internet.netns.as_str(), internet.host_veth.as_str());
        let host = Ipv4Addr::new(198, 19, octet, 2);
        ip(&[
            "link", "add", v, "type", "veth", "peer", "name", "inet0", "netns", n,
        ])?;
        ip(&["addr", "add", &format!("{host}/30"), "dev", v])?;
        ip(&["link", "set", v, "up"])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/30", internet.address),
            "dev",
            "inet0",
        ])?;
        ip(&["-n", n, "link", "set", "inet0", "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        // The internet routes back to anything, so no reverse-path filter
        // there hides what the slot lets out.
        ip(&["-n", n, "route", "add", "default", "via", &host.to_string()])?;
        Ok(internet)
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        // The host end first, so that its name is free at once.
        let _ = ip(&["link", "del", &self.host_veth]);
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

/// The host table of a naming (forwarding, masquerade); removed on drop.
pub struct HostTable(String);

impl HostTable {
    pub async fn prepare(naming: &SlotNaming) -> Result<Self, NetError> {
        hearth_net::host::prepare(naming).await?;
        Ok(Self(format!("hearth_{}", naming.prefix())))
    }
}

impl Drop for HostTable {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .status();
    }
}
