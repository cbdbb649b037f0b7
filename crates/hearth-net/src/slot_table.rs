//! The nftables table inside each slot, `inet hearth`: it is the same, rule
//! for rule, as this nft text would make:
//!
//! ```text
//! table inet hearth {
//!   set allowed { type ipv4_addr; flags interval; }
//!   set denied { type ipv4_addr; flags interval; }
//!   chain ingress {
//!     type filter hook ingress device "tap0" priority filter; policy accept;
//!     meta nfproto ipv6 drop
//!     ip saddr != 169.254.0.21 drop
//!   }
//!   chain prerouting {
//!     type nat hook prerouting priority dstnat; policy accept;
//!     iifname "eth0" tcp flags & (fin | syn | rst | ack) == syn dnat ip to 169.254.0.21
//!   }
//!   chain postrouting {
//!     type nat hook postrouting priority srcnat; policy accept;
//!     oifname "eth0" ip saddr 169.254.0.21 masquerade
//!   }
//!   chain forward {
//!     type filter hook forward priority filter; policy accept;
//!     ip6 daddr <ALWAYS_DENIED_V6> drop
//!     meta nfproto ipv6 drop
//!     iifname != "tap0" accept
//!     ct state established,related accept
//!     ip daddr { <ALWAYS_DENIED> } drop
//!     ip daddr @allowed accept
//!     ip daddr @denied drop
//!   }
//!   chain output {
//!     type filter hook output priority filter; policy accept;
//!     oifname "tap0" meta nfproto ipv6 drop
//!   }
//! }
//! ```
//!
//! Every TCP connection reaching the slot's address goes to the guest; the
//! guest's own traffic leaves from the slot's address, filtered by
//! [`ALWAYS_DENIED`](crate::egress::ALWAYS_DENIED) and then the sets that an
//! [`EgressPolicy`](crate::EgressPolicy) fills.
//!
//! * `ingress` sees the guest's packets before routing and connection
//!   tracking do: one with a source other than the guest's address (posing
//!   as the host or another network, or slipping past the masquerade rule,
//!   which matches that address) goes, and so does all IPv6 — hearth gives
//!   guests none, and that must not rest on forwarding being off. ARP is
//!   not IP, so this chain never sees it.
//! * Only a connection's opening SYN is forwarded to the guest. A later
//!   packet of a connection whose entry was forgotten (an egress change, a
//!   slot's reuse) would otherwise be tracked anew as a connection *to* the
//!   guest, whose replies then pass as established: the old connection back,
//!   past the policy. Such a packet meets the slot's own stack instead,
//!   which resets the connection.
//! * `output` keeps the slot's own IPv6 (neighbour discovery, router
//!   solicitations) from the guest.

use ipnet::Ipv4Net;
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::InetHookNumber;

use crate::error::NetError;
use crate::nft::batch::ANONYMOUS_SET;
use crate::nft::{Batch, ChainType, interval};
use crate::{TAP_NAME, slot_rules};

const TABLE: &str = "hearth";
const ALLOWED: &str = "allowed";
const DENIED: &str = "denied";
// Sets are named by number within the transaction that makes them.
const ALLOWED_ID: u32 = 1;
const DENIED_ID: u32 = 2;
const ALWAYS_DENIED_ID: u32 = 3;
// nft's names for the standard priorities.
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;
const FILTER: i32 = 0;

/// Creates the table, with empty policy sets, in the calling thread's
/// namespace (where the tap must exist already).
pub fn install() -> Result<(), NetError> {
    let always_denied = crate::egress::ALWAYS_DENIED
        .iter()
        .map(|text| {
            text.parse::<Ipv4Net>()
                .map_err(|_| NetError::InvalidCidr((*text).to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let always_denied = interval::elements(&always_denied);

    let mut batch = Batch::new(NetfilterProtoFamily::Inet);
    batch.add_table(TABLE);
    batch.add_interval_set(TABLE, ALLOWED, ALLOWED_ID);
    batch.add_interval_set(TABLE, DENIED, DENIED_ID);
    batch.add_ingress_chain(TABLE, "ingress", TAP_NAME, FILTER);
    let chains = [
        (
            "prerouting",
            ChainType::Nat,
            InetHookNumber::PreRouting,
            DSTNAT,
        ),
        (
            "postrouting",
            ChainType::Nat,
            InetHookNumber::PostRouting,
            SRCNAT,
        ),
        (
            "forward",
            ChainType::Filter,
            InetHookNumber::Forward,
            FILTER,
        ),
        (
            "output",
            ChainType::Filter,
            InetHookNumber::LocalOut,
            FILTER,
        ),
    ];
    for (name, kind, hook, priority) in chains {
        batch.add_base_chain(TABLE, name, kind, hook, priority);
    }
    // A constant set must be filled before a rule binds it.
    let size = u32::try_from(always_denied.len()).unwrap_or(u32::MAX);
    batch.add_anonymous_interval_set(TABLE, ALWAYS_DENIED_ID, size);
    batch.add_elements(TABLE, ANONYMOUS_SET, Some(ALWAYS_DENIED_ID), always_denied);

    let sets = slot_rules::Sets {
        always_denied: (ANONYMOUS_SET, ALWAYS_DENIED_ID),
        allowed: (ALLOWED, ALLOWED_ID),
        denied: (DENIED, DENIED_ID),
    };
    for (chain, rule) in slot_rules::all(&sets) {
        batch.add_rule(TABLE, chain, rule);
    }
    batch.commit("creating the slot's table")
}

/// Replaces the contents of the policy sets, in one transaction, in the
/// calling thread's namespace.
pub fn set_policy(allowed: &[Ipv4Net], denied: &[Ipv4Net]) -> Result<(), NetError> {
    let mut batch = Batch::new(NetfilterProtoFamily::Inet);
    batch.flush_set(TABLE, ALLOWED);
    batch.flush_set(TABLE, DENIED);
    for (set, nets) in [(ALLOWED, allowed), (DENIED, denied)] {
        let elements = interval::elements(nets);
        if !elements.is_empty() {
            batch.add_elements(TABLE, set, None, elements);
        }
    }
    batch.commit("setting the egress policy")
}
