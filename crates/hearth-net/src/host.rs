//! The host side of a naming's slots: IP forwarding, masquerade of guest
//! traffic, and a firewall that keeps guests off the host's own services and
//! out of each other's namespaces, and forwards for the slots only what
//! they need: IPv4 from their own addresses out, replies back in. The
//! table, `inet hearth_<prefix>`, is the same, rule for rule, as this nft
//! text would make:
//!
//! ```text
//! table inet hearth_<prefix> {
//!   chain input {
//!     type filter hook input priority filter; policy accept;
//!     iifname "<prefix>v*" ct state established,related accept
//!     iifname "<prefix>v*" drop
//!   }
//!   chain forward {
//!     type filter hook forward priority filter; policy accept;
//!     iifname "<prefix>v*" oifname "<prefix>v*" drop
//!     oifname "<prefix>v*" ct state established,related accept
//!     oifname "<prefix>v*" drop
//!     iifname "<prefix>v*" meta nfproto ipv6 drop
//!     iifname "<prefix>v*" ip saddr != 10.<octet>.0.0/16 drop
//!   }
//!   chain postrouting {
//!     type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr 10.<octet>.0.0/16 oifname != "<prefix>v*" masquerade
//!   }
//! }
//! ```
//!
//! Every chain accepts by policy what is not a slot's: other tables on the
//! host (a container runtime's, the administrator's) decide about their
//! own traffic, and an accept here does not overrule their drops. The
//! forwarding that [`prepare`] turns on is host-wide (Linux has no
//! per-destination switch), which is why it is the rules that limit what
//! the slots get forwarded.

use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{InetHookNumber, MetaKey, Operator};

use crate::error::NetError;
use crate::nft::expr::{self, Expr, IPV4_SADDR, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::nft::{Batch, ChainType};
use crate::slot::SlotNaming;
use crate::{sysctl, worker};

// nft's names for the standard priorities.
const FILTER: i32 = 0;
const SRCNAT: i32 = 100;

fn table(naming: &SlotNaming) -> String {
    format!("hearth_{}", naming.prefix())
}

/// Installs (or replaces) the host table of `naming`'s slots and turns on
/// IPv4 forwarding.
pub async fn prepare(naming: &SlotNaming) -> Result<(), NetError> {
    sysctl::enable_ipv4_forwarding()?;
    let table = table(naming);
    let veths = expr::ifname_prefix(&naming.host_veth_prefix());
    let octet = naming.subnet_octet();
    let mut batch = Batch::new(NetfilterProtoFamily::Inet);
    // `add` then `delete` makes the delete succeed whether or not the table
    // existed; the whole batch is one transaction.
    batch.add_table(&table);
    batch.delete_table(&table);
    batch.add_table(&table);
    let chains = [
        ("input", ChainType::Filter, InetHookNumber::LocalIn, FILTER),
        (
            "forward",
            ChainType::Filter,
            InetHookNumber::Forward,
            FILTER,
        ),
        (
            "postrouting",
            ChainType::Nat,
            InetHookNumber::PostRouting,
            SRCNAT,
        ),
    ];
    for (name, kind, hook, priority) in chains {
        batch.add_base_chain(&table, name, kind, hook, priority);
    }
    let is = |key, name: &[u8]| [expr::meta(key), expr::cmp(Operator::Equal, name.to_vec())];
    let established = expr::ct_established_or_related;
    let rules: [(&str, Vec<Expr>); 8] = [
        (
            "input",
            [
                &is(MetaKey::Iifname, &veths)[..],
                &established(),
                &[expr::accept()],
            ]
            .concat(),
        ),
        (
            "input",
            [&is(MetaKey::Iifname, &veths)[..], &[expr::drop()]].concat(),
        ),
        (
            "forward",
            [
                &is(MetaKey::Iifname, &veths)[..],
                &is(MetaKey::Oifname, &veths),
                &[expr::drop()],
            ]
            .concat(),
        ),
        (
            "forward",
            [
                &is(MetaKey::Oifname, &veths)[..],
                &established(),
                &[expr::accept()],
            ]
            .concat(),
        ),
        (
            "forward",
            [&is(MetaKey::Oifname, &veths)[..], &[expr::drop()]].concat(),
        ),
        // Slots speak IPv4 only, from their own addresses (a slot's
        // namespace drops a guest's spoofed and IPv6 packets already).
        (
            "forward",
            [
                &is(MetaKey::Iifname, &veths)[..],
                &expr::nfproto(NFPROTO_IPV6),
                &[expr::drop()],
            ]
            .concat(),
        ),
        (
            "forward",
            [
                &is(MetaKey::Iifname, &veths)[..],
                &expr::nfproto(NFPROTO_IPV4),
                &[
                    // The /16's first two bytes.
                    expr::network_header(IPV4_SADDR, 2),
                    expr::cmp(Operator::NotEqual, vec![10, octet]),
                    expr::drop(),
                ],
            ]
            .concat(),
        ),
        (
            "postrouting",
            vec![
                // An inet table sees IPv6 too: match IPv4 before reading
                // its source address.
                expr::meta(MetaKey::Nfproto),
                expr::cmp(Operator::Equal, vec![NFPROTO_IPV4]),
                // The /16's first two bytes.
                expr::network_header(IPV4_SADDR, 2),
                expr::cmp(Operator::Equal, vec![10, octet]),
                expr::meta(MetaKey::Oifname),
                expr::cmp(Operator::NotEqual, veths.clone()),
                expr::masquerade(),
            ],
        ),
    ];
    for (chain, expressions) in rules {
        batch.add_rule(&table, chain, expressions);
    }
    let what = format!("installing host table {table}");
    worker::on_own_thread(&what.clone(), move || batch.commit(&what)).await
}

/// Removes the host table of `naming`'s slots (forwarding stays on).
pub async fn remove(naming: &SlotNaming) -> Result<(), NetError> {
    let table = table(naming);
    let mut batch = Batch::new(NetfilterProtoFamily::Inet);
    batch.add_table(&table);
    batch.delete_table(&table);
    let what = format!("removing host table {table}");
    worker::on_own_thread(&what.clone(), move || batch.commit(&what)).await
}
