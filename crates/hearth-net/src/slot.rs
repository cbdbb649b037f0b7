//! Creating and deleting one network slot.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::error::NetError;
use crate::{netns, slot_setup};

/// How many /30s fit in a slot subnet (a /16).
pub const MAX_SLOTS: u32 = 1 << 14;

/// How the slots of one user of the host are named and addressed, so that a
/// test run and a running node never take each other's namespaces or
/// addresses.
#[derive(Debug, Clone)]
pub struct SlotNaming {
    prefix: String,
    /// Slots are /30s carved from `10.<octet>.0.0/16`.
    subnet_octet: u8,
}

impl SlotNaming {
    /// `prefix` names namespaces `<prefix>-<n>` and host veths `<prefix>v<n>`
    /// (at most 15 bytes, so the prefix is short); slot addresses come from
    /// `10.<subnet_octet>.0.0/16`.
    pub fn new(prefix: &str, subnet_octet: u8) -> Result<Self, NetError> {
        let valid = (1..=6).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(NetError::InvalidPrefix(prefix.to_owned()));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            subnet_octet,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The /16 every slot address of this naming is in.
    pub fn subnet(&self) -> String {
        format!("10.{}.0.0/16", self.subnet_octet)
    }

    /// Host and namespace addresses of slot `index`.
    pub fn addresses(&self, index: u32) -> Result<(Ipv4Addr, Ipv4Addr), NetError> {
        if index >= MAX_SLOTS {
            return Err(NetError::IndexOutOfRange {
                index,
                max: MAX_SLOTS - 1,
            });
        }
        let base = u32::from_be_bytes([10, self.subnet_octet, 0, 0]) + index * 4;
        Ok((Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)))
    }

    pub fn netns(&self, index: u32) -> String {
        format!("{}-{index}", self.prefix)
    }

    pub fn host_veth(&self, index: u32) -> String {
        format!("{}{index}", self.host_veth_prefix())
    }

    /// What every host veth of this naming starts with.
    pub(crate) fn host_veth_prefix(&self) -> String {
        format!("{}v", self.prefix)
    }

    pub(crate) fn subnet_octet(&self) -> u8 {
        self.subnet_octet
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
    /// The namespace's bind-mount, which QEMU is started in.
    pub fn netns_path(&self) -> PathBuf {
        netns::path(&self.netns)
    }

    /// Slot `index` of `naming`, by name and address (whether or not it exists).
    pub fn at(naming: &SlotNaming, index: u32) -> Result<Self, NetError> {
        let (host_address, sandbox_address) = naming.addresses(index)?;
        Ok(Self {
            index,
            netns: naming.netns(index),
            host_veth: naming.host_veth(index),
            host_address,
            sandbox_address,
        })
    }

    /// Creates slot `index`; fails if its namespace exists already.
    pub async fn create(naming: &SlotNaming, index: u32) -> Result<Self, NetError> {
        let slot = Self::at(naming, index)?;
        match slot_setup::build(&slot).await {
            Ok(()) => Ok(slot),
            // Someone else's: leave it alone.
            Err(error @ NetError::NetnsExists(_)) => Err(error),
            Err(error) => {
                let _ = slot.clone().destroy().await;
                Err(error)
            }
        }
    }

    /// Creates the first free slot from `start` on.
    pub async fn create_free(naming: &SlotNaming, start: u32) -> Result<Self, NetError> {
        const TRIES: u32 = 256;
        for index in (start..MAX_SLOTS).take(TRIES as usize) {
            if netns::path(&naming.netns(index)).exists() {
                continue;
            }
            match Self::create(naming, index).await {
                Ok(slot) => return Ok(slot),
                // Another process took it between the check and the create.
                Err(NetError::NetnsExists(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Err(NetError::Exhausted { tried: TRIES })
    }

    /// Deletes the namespace and with it everything in the slot.
    pub async fn destroy(self) -> Result<(), NetError> {
        slot_setup::tear_down(&self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_get_disjoint_30s() -> Result<(), NetError> {
        let naming = SlotNaming::new("hth", 11)?;
        assert_eq!(
            naming.addresses(0)?,
            (Ipv4Addr::new(10, 11, 0, 1), Ipv4Addr::new(10, 11, 0, 2))
        );
        assert_eq!(
            naming.addresses(65)?,
            (Ipv4Addr::new(10, 11, 1, 5), Ipv4Addr::new(10, 11, 1, 6))
        );
        assert!(naming.addresses(MAX_SLOTS).is_err());
        assert_eq!(naming.subnet(), "10.11.0.0/16");
        Ok(())
    }

    #[test]
    fn names_fit_in_an_interface_name() -> Result<(), NetError> {
        let naming = SlotNaming::new("hthtst", 11)?;
        assert!(naming.host_veth(MAX_SLOTS - 1).len() <= 15);
        assert!(SlotNaming::new("Bad-", 11).is_err());
        assert!(SlotNaming::new("toolong", 11).is_err());
        Ok(())
    }
}
