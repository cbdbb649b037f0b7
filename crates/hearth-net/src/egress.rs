//! A sandbox's egress policy: internet access on or off, and CIDRs allowed
//! or denied, enforced by nftables sets in the slot's namespace (see
//! [`crate::slot_table`]).

use std::net::Ipv6Addr;

use ipnet::Ipv4Net;

use crate::conntrack::Conntrack;
use crate::error::NetError;
use crate::slot::NetSlot;
use crate::{connections, netns, slot_table, worker};

/// Where a guest may connect to. Addresses in private, loopback, link-local,
/// shared, multicast and reserved ranges (the host's networks, other
/// sandboxes, cloud metadata services) are always refused; see
/// [`ALWAYS_DENIED`]. IPv6 is refused altogether.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Allowed even when internet access is off.
    pub allowed: Vec<Ipv4Net>,
    pub denied: Vec<Ipv4Net>,
}

/// Ranges no guest reaches, whatever its policy says.
pub const ALWAYS_DENIED: &[&str] = &[
    // "This network": never a destination (the kernel drops it as martian
    // too); here so that no policy can allow it.
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    // Azure's wire server (DNS, DHCP and the VM agent's metadata).
    "168.63.129.16/32",
    // Link-local, with the clouds' metadata service at 169.254.169.254.
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    // Multicast, then reserved up to the broadcast address.
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// IPv6 addresses no guest reaches: AWS's metadata service. The slot drops
/// all of a guest's IPv6 anyway; this stays refused should that change.
pub const ALWAYS_DENIED_V6: &[Ipv6Addr] = &[Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

impl EgressPolicy {
    /// The policy of a create: `allow_internet` off denies 0.0.0.0/0 (as E2B
    /// does), and the CIDR lists are parsed strictly.
    pub fn new(
        allow_internet: bool,
        allowed: &[String],
        denied: &[String],
    ) -> Result<Self, NetError> {
        let parse = |list: &[String]| -> Result<Vec<Ipv4Net>, NetError> {
            list.iter()
                .map(|text| {
                    let trimmed = text.trim();
                    trimmed
                        .parse::<Ipv4Net>()
                        .or_else(|_| trimmed.parse::<std::net::Ipv4Addr>().map(Ipv4Net::from))
                        .map(|net| net.trunc())
                        .map_err(|_| NetError::InvalidCidr(text.clone()))
                })
                .collect()
        };
        let mut denied = parse(denied)?;
        if !allow_internet {
            denied.push(Ipv4Net::default());
        }
        Ok(Self {
            allowed: parse(allowed)?,
            denied,
        })
    }

    /// Puts this policy into force in `slot`: both sets are replaced in one
    /// nftables transaction, so no packet sees half a policy, and then the
    /// connections the guest opened are forgotten, so that none outlives a
    /// policy that would refuse it (see [`connections::forget_guest_opened`]).
    pub async fn apply(&self, slot: &NetSlot) -> Result<(), NetError> {
        let netns = slot.netns.clone();
        let address = slot.sandbox_address;
        let policy = self.clone();
        let what = format!("applying the egress policy in {netns}");
        worker::on_own_thread(&what, move || {
            // Opened before the thread leaves the host's namespace.
            let mut host = Conntrack::open("the host")?;
            netns::enter(&netns)?;
            slot_table::set_policy(&policy.allowed, &policy.denied)?;
            let mut inside = Conntrack::open(&netns)?;
            connections::forget_guest_opened(&mut inside, &mut host, address)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internet_off_denies_everything_but_the_allowed() -> Result<(), NetError> {
        let policy = EgressPolicy::new(false, &["1.1.1.1".into(), "8.8.8.0/24".into()], &[])?;
        assert_eq!(policy.denied, vec![Ipv4Net::default()]);
        let allowed: Vec<String> = policy.allowed.iter().map(ToString::to_string).collect();
        assert_eq!(allowed, ["1.1.1.1/32", "8.8.8.0/24"]);
        Ok(())
    }

    #[test]
    fn bad_cidrs_are_refused_and_hosts_truncated() -> Result<(), NetError> {
        assert!(EgressPolicy::new(true, &["300.1.1.1/8".into()], &[]).is_err());
        assert!(EgressPolicy::new(true, &[], &["::1/128".into()]).is_err());
        assert!(EgressPolicy::new(true, &[], &["example.com".into()]).is_err());
        let policy = EgressPolicy::new(true, &[], &["192.0.2.77/24".into()])?;
        assert_eq!(policy.denied[0].to_string(), "192.0.2.0/24");
        assert_eq!(EgressPolicy::new(true, &[], &[])?, EgressPolicy::default());
        Ok(())
    }

    fn always_denied() -> Vec<Ipv4Net> {
        ALWAYS_DENIED
            .iter()
            .filter_map(|text| text.parse().ok())
            .collect()
    }

    #[test]
    fn every_always_denied_range_parses() {
        assert_eq!(always_denied().len(), ALWAYS_DENIED.len());
    }

    #[test]
    fn metadata_multicast_and_reserved_addresses_are_always_denied() {
        let denied = always_denied();
        let is_denied = |address: &str| {
            address
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|address| denied.iter().any(|net| net.contains(&address)))
        };
        for address in [
            "0.0.0.0",
            "0.255.255.255",
            "168.63.129.16",
            "169.254.169.254",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "10.11.0.1",
            "192.168.1.1",
        ] {
            assert!(is_denied(address), "{address} is always denied");
        }
        for address in [
            "1.0.0.0",
            "1.1.1.1",
            "8.8.8.8",
            "168.63.129.15",
            "168.63.129.17",
            "223.255.255.255",
            "198.19.0.1",
        ] {
            assert!(!is_denied(address), "{address} is up to the policy");
        }
    }

    #[test]
    fn the_ipv6_metadata_address_is_always_denied() -> Result<(), std::net::AddrParseError> {
        assert!(ALWAYS_DENIED_V6.contains(&"fd00:ec2::254".parse()?));
        Ok(())
    }

    #[test]
    fn multicast_and_reserved_merge_into_one_range_to_the_end() {
        // One range from 224.0.0.0 to the end of the address space, which
        // the set encodes without an end element.
        let ranges = crate::nft::interval::ranges(&always_denied());
        assert_eq!(ranges.last(), Some(&(0xe000_0000, 1 << 32)));
        assert_eq!(ranges.first(), Some(&(0, 0x0100_0000)));
    }
}
