//! nftables over netlink: transactions ([`batch`]) of tables, chains, sets
//! and rules made of [`expr`]essions, with CIDR sets encoded by
//! [`interval`].

pub mod batch;
pub mod expr;
pub mod interval;

pub use batch::{Batch, ChainType};
