//! The rules of a slot's table, chain by chain, in the order the kernel
//! runs them; [`crate::slot_table`] shows them as nft text and says why.

use netlink_packet_netfilter::nftables::{MetaKey, Operator};

use crate::nft::expr::{
    self, Expr, IPV4_DADDR, IPV4_SADDR, IPV6_DADDR, NFPROTO_IPV4, NFPROTO_IPV6, TCP,
};
use crate::{GUEST_ADDRESS, TAP_NAME};

/// The slot's link to the host.
const UPLINK: &str = "eth0";

/// The table's sets, by name and by their number in the transaction.
pub struct Sets {
    pub always_denied: (&'static str, u32),
    pub allowed: (&'static str, u32),
    pub denied: (&'static str, u32),
}

/// Every rule, with its chain.
pub fn all(sets: &Sets) -> Vec<(&'static str, Vec<Expr>)> {
    let chains = [
        ("ingress", ingress()),
        ("prerouting", vec![prerouting()]),
        ("postrouting", vec![postrouting()]),
        ("forward", forward(sets)),
        ("output", vec![output()]),
    ];
    chains
        .into_iter()
        .flat_map(|(chain, rules)| rules.into_iter().map(move |rule| (chain, rule)))
        .collect()
}

/// What the guest sends: no IPv6, and IPv4 only from its own address.
fn ingress() -> Vec<Vec<Expr>> {
    vec![
        [&expr::nfproto(NFPROTO_IPV6)[..], &[expr::drop()]].concat(),
        [
            &expr::nfproto(NFPROTO_IPV4)[..],
            &[
                expr::network_header(IPV4_SADDR, 4),
                expr::cmp(Operator::NotEqual, GUEST_ADDRESS.octets().to_vec()),
                expr::drop(),
            ],
        ]
        .concat(),
    ]
}

/// TCP connections opened from the host's side go to the guest.
fn prerouting() -> Vec<Expr> {
    let [load, dnat] = expr::dnat_to(GUEST_ADDRESS);
    [
        &[
            expr::meta(MetaKey::Iifname),
            expr::cmp(Operator::Equal, expr::ifname(UPLINK)),
            expr::meta(MetaKey::L4Proto),
            expr::cmp(Operator::Equal, vec![TCP]),
        ][..],
        &expr::tcp_syn_only(),
        &[load, dnat],
    ]
    .concat()
}

/// The guest's traffic leaves from the slot's address.
fn postrouting() -> Vec<Expr> {
    [
        &[
            expr::meta(MetaKey::Oifname),
            expr::cmp(Operator::Equal, expr::ifname(UPLINK)),
        ][..],
        &expr::nfproto(NFPROTO_IPV4),
        &[
            expr::network_header(IPV4_SADDR, 4),
            expr::cmp(Operator::Equal, GUEST_ADDRESS.octets().to_vec()),
            expr::masquerade(),
        ],
    ]
    .concat()
}

/// No IPv6 either way; what the guest opens meets the policy.
fn forward(sets: &Sets) -> Vec<Vec<Expr>> {
    let mut rules: Vec<Vec<Expr>> = crate::egress::ALWAYS_DENIED_V6
        .iter()
        .map(|address| {
            [
                &expr::nfproto(NFPROTO_IPV6)[..],
                &[
                    expr::network_header(IPV6_DADDR, 16),
                    expr::cmp(Operator::Equal, address.octets().to_vec()),
                    expr::drop(),
                ],
            ]
            .concat()
        })
        .collect();
    rules.extend([
        [&expr::nfproto(NFPROTO_IPV6)[..], &[expr::drop()]].concat(),
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
        daddr_in(sets.always_denied, expr::drop()),
        daddr_in(sets.allowed, expr::accept()),
        daddr_in(sets.denied, expr::drop()),
    ]);
    rules
}

/// None of the slot's own IPv6 reaches the guest.
fn output() -> Vec<Expr> {
    [
        &[
            expr::meta(MetaKey::Oifname),
            expr::cmp(Operator::Equal, expr::ifname(TAP_NAME)),
        ][..],
        &expr::nfproto(NFPROTO_IPV6),
        &[expr::drop()],
    ]
    .concat()
}

/// `ip daddr @set <verdict>`.
fn daddr_in((set, id): (&str, u32), verdict: Expr) -> Vec<Expr> {
    [
        &expr::nfproto(NFPROTO_IPV4)[..],
        &[
            expr::network_header(IPV4_DADDR, 4),
            expr::lookup(set, Some(id)),
            verdict,
        ],
    ]
    .concat()
}
