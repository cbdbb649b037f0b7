//! Creating and deleting one network slot.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::command::run;
use crate::error::NetError;
use crate::{GATEWAY, GUEST_ADDRESS, GUEST_PREFIX, TAP_MAC, TAP_NAME};

/// Slots are /30s carved from 10.11.0.0/16.
const SUBNET_BASE: u32 = u32::from_be_bytes([10, 11, 0, 0]);
/// How many /30s fit in that /16.
pub const MAX_SLOTS: u32 = 1 << 14;

/// How slots of one user of the host are named, so that a test run and a
/// running node never take each other's namespaces.
#[derive(Debug, Clone)]
pub struct SlotNaming {
    prefix: String,
}

impl SlotNaming {
    /// `prefix` names namespaces `<prefix>-<n>` and host veths `<prefix>v<n>`
    /// (at most 15 bytes, so the prefix is short).
    pub fn new(prefix: &str) -> Result<Self, NetError> {
        let valid = (1..=6).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(NetError::InvalidPrefix(prefix.to_owned()));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    pub fn netns(&self, index: u32) -> String {
        format!("{}-{index}", self.prefix)
    }

    pub fn host_veth(&self, index: u32) -> String {
        format!("{}v{index}", self.prefix)
    }
}

/// One sandbox's network: see the crate documentation.
#[derive(Debug, Clone)]
pub struct NetSlot {
    pub index: u32,
    pub netns: String,
    pub host_veth: String,
    /// The host end of the veth pair.
    pub host_address: Ipv4Addr,
    /// The namespace end: where the host connects to reach the guest.
    pub sandbox_address: Ipv4Addr,
}

impl NetSlot {
    /// Addresses of slot `index`.
    pub fn addresses(index: u32) -> Result<(Ipv4Addr, Ipv4Addr), NetError> {
        if index >= MAX_SLOTS {
            return Err(NetError::IndexOutOfRange {
                index,
                max: MAX_SLOTS - 1,
            });
        }
        let base = SUBNET_BASE + index * 4;
        Ok((Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)))
    }

    /// The namespace's bind-mount, which QEMU is started in.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// Creates slot `index`; fails if its namespace exists already.
    pub async fn create(naming: &SlotNaming, index: u32) -> Result<Self, NetError> {
        let (host_address, sandbox_address) = Self::addresses(index)?;
        let slot = Self {
            index,
            netns: naming.netns(index),
            host_veth: naming.host_veth(index),
            host_address,
            sandbox_address,
        };
        run("ip", &["netns", "add", &slot.netns], None).await?;
        if let Err(error) = slot.configure().await {
            let _ = slot.clone().destroy().await;
            return Err(error);
        }
        Ok(slot)
    }

    /// Creates the first free slot from `start` on.
    pub async fn create_free(naming: &SlotNaming, start: u32) -> Result<Self, NetError> {
        const TRIES: u32 = 256;
        for index in (start..MAX_SLOTS).take(TRIES as usize) {
            if std::path::Path::new("/run/netns")
                .join(naming.netns(index))
                .exists()
            {
                continue;
            }
            match Self::create(naming, index).await {
                Ok(slot) => return Ok(slot),
                // Another process took it between the check and the add.
                Err(NetError::CommandFailed { command, .. })
                    if command.starts_with("ip netns add") => {}
                Err(error) => return Err(error),
            }
        }
        Err(NetError::Exhausted { tried: TRIES })
    }

    async fn configure(&self) -> Result<(), NetError> {
        let ns = self.netns.as_str();
        let host = format!("{}/30", self.host_address);
        let sandbox = format!("{}/30", self.sandbox_address);
        let tap = format!("{GATEWAY}/{GUEST_PREFIX}");
        let steps: [&[&str]; 11] = [
            &[
                "link",
                "add",
                &self.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ],
            &["addr", "add", &host, "dev", &self.host_veth],
            &["link", "set", &self.host_veth, "up"],
            &["-n", ns, "addr", "add", &sandbox, "dev", "eth0"],
            &["-n", ns, "link", "set", "eth0", "up"],
            &["-n", ns, "link", "set", "lo", "up"],
            &["-n", ns, "tuntap", "add", "dev", TAP_NAME, "mode", "tap"],
            &["-n", ns, "link", "set", TAP_NAME, "address", TAP_MAC],
            &["-n", ns, "addr", "add", &tap, "dev", TAP_NAME],
            &["-n", ns, "link", "set", TAP_NAME, "up"],
            &[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &self.host_address.to_string(),
            ],
        ];
        for args in steps {
            run("ip", args, None).await?;
        }
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
            None,
        )
        .await?;
        let rules = format!(
            "table ip hearth {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat;\n    iifname \"eth0\" meta l4proto tcp dnat to {GUEST_ADDRESS}\n  }}\n}}\n"
        );
        run("ip", &["netns", "exec", ns, "nft", "-f", "-"], Some(&rules)).await
    }

    /// Deletes the namespace and with it everything in the slot.
    pub async fn destroy(self) -> Result<(), NetError> {
        run("ip", &["netns", "del", &self.netns], None).await?;
        // The host veth goes with its peer; make sure even if it lingered.
        let _ = run("ip", &["link", "del", &self.host_veth], None).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_get_disjoint_30s() -> Result<(), NetError> {
        assert_eq!(
            NetSlot::addresses(0)?,
            (Ipv4Addr::new(10, 11, 0, 1), Ipv4Addr::new(10, 11, 0, 2))
        );
        assert_eq!(
            NetSlot::addresses(65)?,
            (Ipv4Addr::new(10, 11, 1, 5), Ipv4Addr::new(10, 11, 1, 6))
        );
        assert!(NetSlot::addresses(MAX_SLOTS).is_err());
        Ok(())
    }

    #[test]
    fn names_fit_in_an_interface_name() -> Result<(), NetError> {
        let naming = SlotNaming::new("hthtst")?;
        assert!(naming.host_veth(MAX_SLOTS - 1).len() <= 15);
        assert!(SlotNaming::new("Bad-").is_err());
        assert!(SlotNaming::new("toolong").is_err());
        Ok(())
    }
}
