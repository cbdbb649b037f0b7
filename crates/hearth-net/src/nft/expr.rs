//! The nftables expressions hearth's rules are made of: the same bytecode
//! `nft` compiles its rule text to (as `nft --debug=netlink` shows it), all
//! working through register 1.
//!
//! netlink-packet-netfilter types the common expressions; `ct`, `nat` and
//! `masq` it does not, so those are written here from their attributes in
//! the kernel's `linux/netfilter/nf_tables.h`.

use std::net::Ipv4Addr;

use netlink_packet_core::DefaultNla;
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute,
    Lookup, Meta, MetaKey, Operator, Payload, Register, Verdict, VerdictAttribute,
};

pub type Expr = ListAttribute<ExpressionAttribute>;

/// Where `payload` reads from: NFT_PAYLOAD_NETWORK_HEADER and
/// NFT_PAYLOAD_TRANSPORT_HEADER.
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
/// Offsets of the IPv4 source and destination address.
pub const IPV4_SADDR: u32 = 12;
pub const IPV4_DADDR: u32 = 16;
/// Offset of the IPv6 destination address.
pub const IPV6_DADDR: u32 = 24;
/// NFPROTO_IPV4 and NFPROTO_IPV6, as `meta nfproto` loads them.
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
/// IPPROTO_TCP, as `meta l4proto` loads it.
pub const TCP: u8 = 6;
/// Offset of the TCP flags byte, and the flags `nft` names fin, syn, rst
/// and ack.
const TCP_FLAGS: u32 = 13;
const TCP_SYN: u8 = 0x02;
const TCP_FIN_SYN_RST_ACK: u8 = 0x17;
/// Interface names are compared as IFNAMSIZ bytes.
const IFNAMSIZ: usize = 16;

// linux/netfilter/nf_tables.h
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFT_NAT_DNAT: u32 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// linux/netfilter/nf_conntrack_common.h: the state bits of
/// IP_CT_ESTABLISHED and IP_CT_RELATED.
const CT_STATE_ESTABLISHED_OR_RELATED: u32 = (1 << 1) | (1 << 2);

fn u32_attribute(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

fn other(name: &str, attributes: Vec<DefaultNla>) -> Expr {
    Expressions::Other {
        expression_type: name.to_owned(),
        attributes,
    }
    .into()
}

/// `meta <key>` into register 1.
pub fn meta(key: MetaKey) -> Expr {
    Expressions::Meta(vec![
        Meta::DestinationRegister(Register::Reg1),
        Meta::Key(key),
    ])
    .into()
}

/// Compares register 1 with `data`.
pub fn cmp(op: Operator, data: Vec<u8>) -> Expr {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(data)),
    ])
    .into()
}

/// `len` bytes of the network header from `offset` into register 1.
pub fn network_header(offset: u32, len: u32) -> Expr {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(NETWORK_HEADER),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

/// `meta nfproto <family>`: in an `inet` table, what must precede reading
/// an address, since the chain sees IPv4 and IPv6 alike.
pub fn nfproto(family: u8) -> [Expr; 2] {
    [meta(MetaKey::Nfproto), cmp(Operator::Equal, vec![family])]
}

/// Clears the bits of register 1 that are not in `mask`.
fn and(mask: Vec<u8>) -> Expr {
    let length = u32::try_from(mask.len()).unwrap_or(u32::MAX);
    let zeros = vec![0; mask.len()];
    Expressions::Bitwise(vec![
        Bitwise::SourceRegister(Register::Reg1),
        Bitwise::DestinationRegister(Register::Reg1),
        Bitwise::Length(length),
        Bitwise::Mask(DataAttribute::Value(mask)),
        Bitwise::Xor(DataAttribute::Value(zeros)),
    ])
    .into()
}

/// `tcp flags & (fin | syn | rst | ack) == syn`: the first packet of a TCP
/// connection, and no other (after `meta l4proto tcp`).
pub fn tcp_syn_only() -> [Expr; 3] {
    let load = Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(TRANSPORT_HEADER),
        Payload::Offset(TCP_FLAGS),
        Payload::Len(1),
    ])
    .into();
    [
        load,
        and(vec![TCP_FIN_SYN_RST_ACK]),
        cmp(Operator::Equal, vec![TCP_SYN]),
    ]
}

/// An interface name as `iifname "eth0"` compares it: padded to IFNAMSIZ.
pub fn ifname(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(IFNAMSIZ, 0);
    bytes
}

/// A name pattern as `iifname "htnv*"` compares it: the prefix alone, so
/// that only its bytes are compared.
pub fn ifname_prefix(prefix: &str) -> Vec<u8> {
    prefix.as_bytes().to_vec()
}

/// `ct state established,related`: load, mask, and test for any bit.
pub fn ct_established_or_related() -> [Expr; 3] {
    let load = other(
        "ct",
        vec![
            u32_attribute(NFTA_CT_DREG, Register::Reg1.into()),
            u32_attribute(NFTA_CT_KEY, NFT_CT_STATE),
        ],
    );
    // The state is a host-order number in the register.
    let mask = and(CT_STATE_ESTABLISHED_OR_RELATED.to_ne_bytes().to_vec());
    [load, mask, cmp(Operator::NotEqual, vec![0; 4])]
}

/// Whether register 1 is in the set `name` (with `id` for a set made in
/// the same transaction).
pub fn lookup(name: &str, id: Option<u32>) -> Expr {
    let mut attributes = vec![
        Lookup::Set(name.to_owned()),
        Lookup::SourceRegister(Register::Reg1),
    ];
    attributes.extend(id.map(Lookup::SetId));
    Expressions::Lookup(attributes).into()
}

/// `dnat to <address>`.
pub fn dnat_to(address: Ipv4Addr) -> [Expr; 2] {
    let load = Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Reg1),
        Immediate::Data(DataAttribute::Value(address.octets().to_vec())),
    ])
    .into();
    let nat = other(
        "nat",
        vec![
            u32_attribute(NFTA_NAT_TYPE, NFT_NAT_DNAT),
            u32_attribute(NFTA_NAT_FAMILY, NFPROTO_IPV4.into()),
            u32_attribute(NFTA_NAT_REG_ADDR_MIN, Register::Reg1.into()),
        ],
    );
    [load, nat]
}

/// `masquerade`: source NAT to the outgoing interface's address.
pub fn masquerade() -> Expr {
    other("masq", Vec::new())
}

fn verdict(code: u32) -> Expr {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
            Verdict::Other(code),
        )])),
    ])
    .into()
}

pub fn accept() -> Expr {
    verdict(NF_ACCEPT)
}

pub fn drop() -> Expr {
    verdict(NF_DROP)
}
