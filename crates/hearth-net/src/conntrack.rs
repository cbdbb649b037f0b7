//! Forgetting tracked connections, over ctnetlink (netfilter's connection
//! tracking subsystem), in the namespace the socket was opened in.
//!
//! A tracked connection outlives the rules that let it start: its packets
//! pass `ct state established,related accept` and keep their NAT mapping.
//! So a stricter policy, or a slot handed to another sandbox, leaves old
//! connections working until their entries go. Deleting an entry makes the
//! connection's next packet new again, judged by the rules as they are now.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    DefaultNla, Emitable, NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, ConntrackMessageType, IPTuple, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::error::NetError;

// linux/netfilter/nfnetlink_conntrack.h; the crate types only some of them.
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
// The kernel's CTA_FILTER_FLAG(CTA_IP_SRC) and CTA_FILTER_FLAG(CTA_IP_DST).
const FILTER_ORIGINAL_SOURCE: u32 = 1 << 0;
const FILTER_ORIGINAL_DESTINATION: u32 = 1 << 1;
/// A flush with a non-zero version deletes only the header's family (the
/// kernel reads version 0 as "every family").
const PER_FAMILY: u8 = 1;

/// Which end of a connection's original direction (the way its first
/// packet went) an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// A ctnetlink socket of the namespace it was opened in.
pub struct Conntrack {
    socket: Socket,
    /// For errors: whose connections these are.
    namespace: String,
    sequence: u32,
}

impl Conntrack {
    /// A socket in the calling thread's namespace, which `namespace` names.
    pub fn open(namespace: &str) -> Result<Self, NetError> {
        let fail = |what: &str, source| NetError::Conntrack {
            namespace: namespace.to_owned(),
            what: what.to_owned(),
            source,
        };
        let socket = Socket::new(NETLINK_NETFILTER)
            .and_then(|mut socket| socket.bind_auto().map(|_| socket))
            .map_err(|e| fail("opening a netfilter socket", e))?;
        set_receive_timeout(&socket).map_err(|e| fail("setting a receive timeout", e))?;
        Ok(Self {
            socket,
            namespace: namespace.to_owned(),
            sequence: 0,
        })
    }

    fn fail(&self, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
        let namespace = self.namespace.clone();
        let what = what.into();
        move |source| NetError::Conntrack {
            namespace,
            what,
            source,
        }
    }

    /// Deletes every entry, IPv4 and IPv6.
    pub fn flush(&mut self) -> Result<(), NetError> {
        for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
            let what = format!("flushing the {family:?} entries");
            let message = ConntrackMessage::Delete(Vec::new());
            self.send(message, family, PER_FAMILY, NLM_F_ACK)
                .and_then(|sequence| self.read_answers(sequence, |_| {}))
                .map_err(self.fail(what))?;
        }
        Ok(())
    }

    /// Deletes the IPv4 entries whose original direction has `address` at
    /// `end`; returns how many went.
    pub fn forget(&mut self, end: End, address: Ipv4Addr) -> Result<usize, NetError> {
        let what = format!("listing the connections with {address} as {end:?}");
        let mut keys = Vec::new();
        self.send(
            dump_request(end, address),
            NetfilterProtoFamily::IPv4,
            0,
            NLM_F_DUMP,
        )
        .and_then(|sequence| {
            // The kernel filters the dump too, but one older than 5.10
            // ignores the filter and lists everything.
            self.read_answers(sequence, |entry| {
                keys.extend(key_if_matching(entry, end, address));
            })
        })
        .map_err(self.fail(what))?;
        let count = keys.len();
        for key in keys {
            let what = format!("deleting a connection with {address} as {end:?}");
            let message = ConntrackMessage::Delete(key);
            match self
                .send(message, NetfilterProtoFamily::IPv4, 0, NLM_F_ACK)
                .and_then(|sequence| self.read_answers(sequence, |_| {}))
            {
                // Gone meanwhile (closed, timed out, or replaced by a new
                // connection with the same addresses and another id).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                result => result.map_err(self.fail(what))?,
            }
        }
        Ok(count)
    }

    fn send(
        &mut self,
        message: ConntrackMessage,
        family: NetfilterProtoFamily,
        version: u8,
        flags: u16,
    ) -> Result<u32, std::io::Error> {
        self.sequence = self.sequence.wrapping_add(1);
        let header = NetfilterHeader::new(family, version, 0);
        let mut message = NetlinkMessage::from(NetfilterMessage::new(header, message));
        message.header.flags = NLM_F_REQUEST | flags;
        message.header.sequence_number = self.sequence;
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(self.sequence)
    }

    /// Reads the answers to request `sequence` until it is acked, its dump
    /// ends, or the kernel refuses it; each entry of a dump goes to `entry`.
    fn read_answers(
        &self,
        sequence: u32,
        mut entry: impl FnMut(Vec<ConntrackAttribute>),
    ) -> Result<(), std::io::Error> {
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut rest = datagram.as_slice();
            while !rest.is_empty() {
                let length = NetlinkBuffer::new_checked(rest).map_err(invalid)?.length() as usize;
                let message =
                    NetlinkMessage::<NetfilterMessage>::deserialize(rest).map_err(invalid)?;
                // Each message starts on a 4-byte boundary.
                rest = rest.get((length + 3) & !3..).unwrap_or_default();
                if message.header.sequence_number != sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            // Negated, as a system call's errno.
                            Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
                            None => Ok(()),
                        };
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
                        ..
                    }) => entry(attributes),
                    _ => {}
                }
            }
        }
    }
}

/// A dump of the IPv4 entries with `address` at `end` of their original
/// direction (the kernel's CTA_FILTER). Made of raw attributes: the kernel
/// wants CTA_FILTER flagged as nested, which the crate's typed attribute
/// for it would not be.
fn dump_request(end: End, address: Ipv4Addr) -> ConntrackMessage {
    let (ip, flag) = match end {
        End::Source => (
            IPTuple::SourceAddress(address.into()),
            FILTER_ORIGINAL_SOURCE,
        ),
        End::Destination => (
            IPTuple::DestinationAddress(address.into()),
            FILTER_ORIGINAL_DESTINATION,
        ),
    };
    // The kernel reads the flags in its own byte order (nla_get_u32).
    let flags = DefaultNla::new(CTA_FILTER_ORIG_FLAGS, flag.to_ne_bytes().to_vec());
    ConntrackMessage::Other {
        message_type: ConntrackMessageType::Get.into(),
        attributes: vec![
            DefaultNla::new(CTA_TUPLE_ORIG | NLA_F_NESTED, emitted(&Tuple::Ip(vec![ip]))),
            DefaultNla::new(CTA_FILTER | NLA_F_NESTED, emitted(&flags)),
        ],
    }
}

fn emitted(attribute: &impl Emitable) -> Vec<u8> {
    let mut bytes = vec![0; attribute.buffer_len()];
    attribute.emit(&mut bytes);
    bytes
}

/// What names `entry` in a delete request — its original tuple, zone and
/// id (so that a new connection that took over the tuple is spared) — if
/// `address` is at `end` of its original direction.
fn key_if_matching(
    entry: Vec<ConntrackAttribute>,
    end: End,
    address: Ipv4Addr,
) -> Option<Vec<ConntrackAttribute>> {
    let wanted = match end {
        End::Source => IPTuple::SourceAddress(IpAddr::V4(address)),
        End::Destination => IPTuple::DestinationAddress(IpAddr::V4(address)),
    };
    let mut matches = false;
    let mut key = Vec::new();
    for attribute in entry {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(tuple) => {
                matches = tuple
                    .iter()
                    .any(|part| matches!(part, Tuple::Ip(ips) if ips.contains(&wanted)));
                key.push(ConntrackAttribute::CtaTupleOrig(tuple));
            }
            ConntrackAttribute::Other(nla) if [CTA_ID, CTA_ZONE].contains(&nla.kind()) => {
                key.push(ConntrackAttribute::Other(nla));
            }
            _ => {}
        }
    }
    matches.then_some(key)
}

fn set_receive_timeout(socket: &Socket) -> Result<(), std::io::Error> {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
    use nix::sys::time::{TimeVal, TimeValLike};
    setsockopt(socket, ReceiveTimeout, &TimeVal::seconds(5)).map_err(std::io::Error::from)
}

fn invalid(error: netlink_packet_core::DecodeError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
}

#[cfg(test)]
mod tests {
    use netlink_packet_netfilter::conntrack::{ProtoTuple, Protocol};

    use super::*;

    fn entry(source: [u8; 4], destination: [u8; 4]) -> Vec<ConntrackAttribute> {
        let ip = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
        vec![
            ConntrackAttribute::CtaTupleOrig(vec![
                Tuple::Ip(vec![
                    IPTuple::SourceAddress(ip(source)),
                    IPTuple::DestinationAddress(ip(destination)),
                ]),
                Tuple::Proto(vec![
                    ProtoTuple::Protocol(Protocol::Tcp),
                    ProtoTuple::SourcePort(40000),
                    ProtoTuple::DestinationPort(443),
                ]),
            ]),
            ConntrackAttribute::CtaTupleReply(Vec::new()),
            ConntrackAttribute::CtaMark(0),
            ConntrackAttribute::Other(DefaultNla::new(CTA_ID, vec![0, 0, 0, 7])),
            ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, vec![0, 0])),
        ]
    }

    #[test]
    fn only_entries_with_the_address_at_that_end_are_keyed() {
        let guest = Ipv4Addr::new(169, 254, 0, 21);
        let from_guest = entry([169, 254, 0, 21], [1, 1, 1, 1]);
        let to_guest = entry([10, 11, 0, 1], [169, 254, 0, 21]);

        let key = key_if_matching(from_guest.clone(), End::Source, guest);
        // The original tuple, id and zone; not the reply tuple or the mark.
        let kinds: Vec<u16> = key
            .iter()
            .flatten()
            .map(|attribute| match attribute {
                ConntrackAttribute::Other(nla) => nla.kind(),
                ConntrackAttribute::CtaTupleOrig(_) => 1,
                _ => 0,
            })
            .collect();
        assert_eq!(kinds, [1, CTA_ID, CTA_ZONE]);

        assert!(key_if_matching(to_guest.clone(), End::Source, guest).is_none());
        assert!(key_if_matching(to_guest, End::Destination, guest).is_some());
        assert!(key_if_matching(from_guest, End::Destination, guest).is_none());
    }

    #[test]
    fn the_dump_filters_on_the_original_direction() {
        let request = dump_request(End::Destination, Ipv4Addr::new(10, 11, 0, 2));
        let mut expected = vec![
            // CTA_TUPLE_ORIG (nested) { CTA_TUPLE_IP (nested) { CTA_IP_V4_DST } }
            16, 0, 1, 0x80, 12, 0, 1, 0x80, 8, 0, 2, 0, 10, 11, 0, 2,
            // CTA_FILTER (nested) { CTA_FILTER_ORIG_FLAGS }
            12, 0, 25, 0x80, 8, 0, 1, 0,
        ];
        expected.extend(FILTER_ORIGINAL_DESTINATION.to_ne_bytes());
        assert_eq!(emitted_message(&request), expected);
        assert_eq!(request.message_type(), ConntrackMessageType::Get);
    }

    fn emitted_message(message: &ConntrackMessage) -> Vec<u8> {
        let mut bytes = vec![0; message.buffer_len()];
        message.emit(&mut bytes);
        bytes
    }
}
