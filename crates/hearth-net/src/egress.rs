//! A sandbox's egress policy: internet access on or off, and CIDRs allowed
//! or denied, enforced by nftables sets in the slot's namespace (see
//! [`crate::slot_table`]).

use ipnet::Ipv4Net;

use crate::error::NetError;
use crate::slot::NetSlot;
use crate::{netns, slot_table, worker};

/// Where a guest may connect to. Addresses in private, loopback, link-local
/// and shared ranges (the host's networks, other sandboxes) are always
/// refused; see [`ALWAYS_DENIED`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Allowed even when internet access is off.
    pub allowed: Vec<Ipv4Net>,
    pub denied: Vec<Ipv4Net>,
}

/// Ranges no guest reaches, whatever its policy says.
pub const ALWAYS_DENIED: &[&str] = &[
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
];

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
    /// nftables transaction, so no packet sees half a policy.
    pub async fn apply(&self, slot: &NetSlot) -> Result<(), NetError> {
        let netns = slot.netns.clone();
        let policy = self.clone();
        let what = format!("applying the egress policy in {netns}");
        worker::on_own_thread(&what, move || {
            netns::enter(&netns)?;
            slot_table::set_policy(&policy.allowed, &policy.denied)
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
}
