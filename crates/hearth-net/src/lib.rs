//! Network slots: each sandbox VM runs in its own network namespace, so every
//! clone of a template keeps the guest address the template booted with.
//!
//! A slot is a namespace `<prefix>-<index>` holding
//! * `eth0`, one end of a veth pair whose other end (`<prefix>v<index>`) is
//!   on the host, with a /30 from 10.11.0.0/16 per slot;
//! * `tap0`, the VM's NIC, at [`GATEWAY`] facing the guest's [`GUEST_ADDRESS`];
//! * an nftables table that forwards every TCP connection opened through
//!   `eth0` to the guest, so the host reaches envd at
//!   `<sandbox address>:49983`.
//!
//! Deleting the namespace removes all of it: both veth ends, the tap and the
//! table. Inside, the table also drops what the guest sends with another
//! source address or over IPv6, masquerades the rest out of `eth0` and
//! filters it ([`EgressPolicy`]); on the host, [`host::prepare`] masquerades
//! it onward and keeps guests off the host and each other. A policy change
//! and a slot's reuse forget the connections tracked for it, so none
//! outlives the rules that let it start.
//!
//! All of it is made over netlink from Rust: namespaces, links, addresses
//! and routes with rtnetlink, the tap with the tun ioctls, and the nftables
//! tables as netlink transactions. No `ip` or `nft` process is run, so a
//! slot takes a few milliseconds and needs no tools on the host.

mod connections;
mod conntrack;
pub mod egress;
pub mod error;
pub mod host;
mod links;
mod netns;
mod nft;
pub mod pool;
pub mod slot;
mod slot_rules;
mod slot_setup;
mod slot_table;
mod sysctl;
pub mod tap;
mod worker;

pub use egress::EgressPolicy;
pub use error::NetError;
pub use pool::SlotPool;
pub use slot::{NetSlot, SlotNaming};

use std::net::Ipv4Addr;

/// The guest's address inside every slot (the same in every clone).
pub const GUEST_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 21);
/// The tap's address: the guest's default gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 22);
/// Prefix length of the guest ↔ tap link.
pub const GUEST_PREFIX: u8 = 30;
/// The VM's NIC inside each slot.
pub const TAP_NAME: &str = "tap0";
/// The tap's MAC address: the same in every slot, so the gateway entry in a
/// restored guest's ARP cache stays right.
pub const TAP_MAC: &str = "02:68:65:61:72:02";
/// The guest NIC's MAC address (locally administered; one per namespace).
pub const GUEST_MAC: &str = "02:68:65:61:72:01";
