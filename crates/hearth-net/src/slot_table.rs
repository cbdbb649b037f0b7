//! The nftables table inside each slot, `ip hearth`: it is the same, rule
//! for rule, as this nft text would make:
//!
//! ```text
//! table ip hearth {
//!   set allowed { type ipv4_addr; flags interval; }
//!   set denied { type ipv4_addr; flags interval; }
//!   chain prerouting {
//!     type nat hook prerouting priority dstnat; policy accept;
//!     iifname "eth0" meta l4proto tcp dnat to 169.254.0.21
//!   }
//!   chain postrouting {
//!     type nat hook postrouting priority srcnat; policy accept;
//!     oifname "eth0" ip saddr 169.254.0.21 masquerade
//!   }
//!   chain forward {
//!     type filter hook forward priority filter; policy accept;
//!     iifname != "tap0" accept
//!     ct state established,related accept
//!     ip daddr { <ALWAYS_DENIED> } drop
//!     ip daddr @allowed accept
//!     ip daddr @denied drop
//!   }
//! }
//! ```
//!
//! Every TCP connection reaching the slot's address goes to the guest; the
//! guest's own traffic leaves from the slot's address, filtered by
//! [`ALWAYS_DENIED`](crate::egress::ALWAYS_DENIED) and then the sets that an
//! [`EgressPolicy`](crate::EgressPolicy) fills.

use ipnet::Ipv4Net;
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{InetHookNumber, MetaKey, Operator};

use crate::error::NetError;
use crate::nft::batch::ANONYMOUS_SET;
use crate::nft::expr::{self, IPV4_DADDR, IPV4_SADDR, TCP};
use crate::nft::{Batch, ChainType, interval};
use crate::{GUEST_ADDRESS, TAP_NAME};

const TABLE: &str = "hearth";
const ALLOWED: &str = "allowed";
const DENIED: &str = "denied";
/// The slot's link to the host.
const UPLINK: &str = "eth0";
// Sets are named by number within the transaction that makes them.
const ALLOWED_ID: u32 = 1;
const DENIED_ID: u32 = 2;
const ALWAYS_DENIED_ID: u32 = 3;
// nft's names for the standard priorities.
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;
const FILTER: i32 = 0;

/// Creates the table, with empty policy sets, in the calling thread's
/// namespace.
pub fn install() -> Result<(), NetError> {
    let always_denied = crate::egress::ALWAYS_DENIED
        .iter()
        .map(|text| {
            text.parse::<Ipv4Net>()
                .map_err(|_| NetError::InvalidCidr((*text).to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let always_denied = interval::elements(&always_denied);

    let mut batch = Batch::new(NetfilterProtoFamily::IPv4);
    batch.add_table(TABLE);
    batch.add_interval_set(TABLE, ALLOWED, ALLOWED_ID);
    batch.add_interval_set(TABLE, DENIED, DENIED_ID);
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
    ];
    for (name, kind, hook, priority) in chains {
        batch.add_base_chain(TABLE, name, kind, hook, priority);
    }
    // A constant set must be filled before a rule binds it.
    let size = u32::try_from(always_denied.len()).unwrap_or(u32::MAX);
    batch.add_anonymous_interval_set(TABLE, ALWAYS_DENIED_ID, size);
    batch.add_elements(TABLE, ANONYMOUS_SET, Some(ALWAYS_DENIED_ID), always_denied);

    let [dnat_load, dnat] = expr::dnat_to(GUEST_ADDRESS);
    batch.add_rule(
        TABLE,
        "prerouting",
        vec![
            expr::meta(MetaKey::Iifname),
            expr::cmp(Operator::Equal, expr::ifname(UPLINK)),
            expr::meta(MetaKey::L4Proto),
            expr::cmp(Operator::Equal, vec![TCP]),
            dnat_load,
            dnat,
        ],
    );
    batch.add_rule(
        TABLE,
        "postrouting",
        vec![
            expr::meta(MetaKey::Oifname),
            expr::cmp(Operator::Equal, expr::ifname(UPLINK)),
            expr::network_header(IPV4_SADDR, 4),
            expr::cmp(Operator::Equal, GUEST_ADDRESS.octets().to_vec()),
            expr::masquerade(),
        ],
    );
    let forward = [
        vec![
            expr::meta(MetaKey::Iifname),
            expr::cmp(Operator::NotEqual, expr::ifname(TAP_NAME)),
            expr::accept(),
        ],
        [
            expr::ct_established_or_related().to_vec(),
            vec![expr::accept()],
        ]
        .concat(),
        daddr_in(ANONYMOUS_SET, ALWAYS_DENIED_ID, expr::drop()),
        daddr_in(ALLOWED, ALLOWED_ID, expr::accept()),
        daddr_in(DENIED, DENIED_ID, expr::drop()),
    ];
    for rule in forward {
        batch.add_rule(TABLE, "forward", rule);
    }
    batch.commit("creating the slot's table")
}

/// `ip daddr @set <verdict>`.
fn daddr_in(set: &str, id: u32, verdict: expr::Expr) -> Vec<expr::Expr> {
    vec![
        expr::network_header(IPV4_DADDR, 4),
        expr::lookup(set, Some(id)),
        verdict,
    ]
}

/// Replaces the contents of the policy sets, in one transaction, in the
/// calling thread's namespace.
pub fn set_policy(allowed: &[Ipv4Net], denied: &[Ipv4Net]) -> Result<(), NetError> {
    let mut batch = Batch::new(NetfilterProtoFamily::IPv4);
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
