//! A sandbox's egress policy: internet access on or off, and CIDRs allowed
//! or denied, enforced by nftables sets in the slot's namespace.

use ipnet::Ipv4Net;

use crate::command::run;
use crate::error::NetError;
use crate::slot::NetSlot;

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

    /// nft commands that replace the slot's sets with this policy, atomically.
    pub fn nft_script(&self) -> String {
        let mut script = String::from("flush set ip hearth allowed\nflush set ip hearth denied\n");
        for (set, nets) in [("allowed", &self.allowed), ("denied", &self.denied)] {
            if !nets.is_empty() {
                let elements: Vec<String> = nets.iter().map(ToString::to_string).collect();
                script.push_str(&format!(
                    "add element ip hearth {set} {{ {} }}\n",
                    elements.join(", ")
                ));
            }
        }
        script
    }

    /// Puts this policy into force in `slot`.
    pub async fn apply(&self, slot: &NetSlot) -> Result<(), NetError> {
        run(
            "ip",
            &["netns", "exec", &slot.netns, "nft", "-f", "-"],
            Some(&self.nft_script()),
        )
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
        assert_eq!(policy.allowed.len(), 2);
        let script = policy.nft_script();
        assert!(
            script.contains("add element ip hearth allowed { 1.1.1.1/32, 8.8.8.0/24 }"),
            "{script}"
        );
        assert!(
            script.contains("add element ip hearth denied { 0.0.0.0/0 }"),
            "{script}"
        );
        Ok(())
    }

    #[test]
    fn bad_cidrs_are_refused_and_hosts_truncated() -> Result<(), NetError> {
        assert!(EgressPolicy::new(true, &["300.1.1.1/8".into()], &[]).is_err());
        assert!(EgressPolicy::new(true, &[], &["::1/128".into()]).is_err());
        assert!(EgressPolicy::new(true, &[], &["example.com".into()]).is_err());
        let policy = EgressPolicy::new(true, &[], &["192.0.2.77/24".into()])?;
        assert_eq!(policy.denied[0].to_string(), "192.0.2.0/24");
        assert_eq!(
            EgressPolicy::new(true, &[], &[])?
                .nft_script()
                .lines()
                .count(),
            2
        );
        Ok(())
    }
}
