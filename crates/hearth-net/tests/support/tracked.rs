//! The connections a namespace tracks, read from its
//! /proc/net/nf_conntrack.

use std::io;
use std::net::Ipv4Addr;

use super::netns::in_netns;

/// One tracked connection's original direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    /// The whole line, for messages.
    pub line: String,
}

/// The IPv4 connections tracked in `netns`, or on the host for `None`.
pub fn tracked(netns: Option<&str>) -> io::Result<Vec<Tracked>> {
    // thread-self: /proc/net is the namespace of the process's first thread.
    let read = || std::fs::read_to_string("/proc/thread-self/net/nf_conntrack");
    let text = match netns {
        Some(netns) => in_netns(netns, read)?,
        None => read()?,
    };
    Ok(text.lines().filter_map(parse).collect())
}

/// `ipv4 2 tcp 6 431999 ESTABLISHED src=… dst=… sport=… dport=… src=… …`:
/// the first `src=` and `dst=` are the original direction's.
fn parse(line: &str) -> Option<Tracked> {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .and_then(|value| value.parse().ok())
    };
    Some(Tracked {
        source: field("src=")?,
        destination: field("dst=")?,
        line: line.to_owned(),
    })
}
