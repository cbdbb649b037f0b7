//! One nftables transaction: messages between a batch begin and a batch end,
//! which the kernel applies whole or not at all (as `nft -f` does).

use netlink_packet_core::{
    ErrorBuffer, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NLMSG_ERROR, NetlinkBuffer,
    NetlinkMessage,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, HookNumber, InetHookNumber, ListAttribute, NfTablesMessage,
    RuleAttribute, RuleMessage, SetAttribute, SetDescription, SetElementAttribute, SetElementList,
    SetElementMessage, SetFlags, SetMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::expr::Expr;
use crate::error::NetError;

/// NFNL_SUBSYS_NFTABLES: the batch messages name the subsystem they wrap.
const NFTABLES_SUBSYSTEM: u16 = 10;
/// nft's name of the ipv4_addr data type, which `nft list` reads back.
const IPV4_ADDR_TYPE: u32 = 7;
/// NF_ACCEPT, the policy of every base chain here.
const ACCEPT: u32 = 1;
/// Elements per message, so a long policy never makes one huge message.
const ELEMENTS_PER_MESSAGE: usize = 256;

pub type Element = ListAttribute<SetElementAttribute>;

/// The name an anonymous set is created under; the kernel fills in `%d`.
pub const ANONYMOUS_SET: &str = "__set%d";

/// What a base chain does.
#[derive(Debug, Clone, Copy)]
pub enum ChainType {
    Filter,
    Nat,
}

/// Messages of one transaction on tables of one family, each with what it
/// does (for the error when the kernel refuses it).
pub struct Batch {
    family: NetfilterProtoFamily,
    messages: Vec<(String, NetlinkMessage<NetfilterMessage>)>,
}

impl Batch {
    pub fn new(family: NetfilterProtoFamily) -> Self {
        Self {
            family,
            messages: Vec::new(),
        }
    }

    fn push(&mut self, doing: String, message: NfTablesMessage, flags: u16) {
        let mut message = NetlinkMessage::from(NetfilterMessage::new(
            NetfilterHeader::new(self.family, 0, 0),
            message,
        ));
        message.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        self.messages.push((doing, message));
    }

    /// Adds the table, or does nothing if it exists (`add table`).
    pub fn add_table(&mut self, table: &str) {
        let attributes = vec![TableAttribute::Name(table.to_owned())];
        self.push(
            format!("add table {table}"),
            NfTablesMessage::NewTable(TableMessage { attributes }),
            NLM_F_CREATE,
        );
    }

    pub fn delete_table(&mut self, table: &str) {
        let attributes = vec![TableAttribute::Name(table.to_owned())];
        self.push(
            format!("delete table {table}"),
            NfTablesMessage::DeleteTable(TableMessage { attributes }),
            0,
        );
    }

    /// A chain hooked at `hook` with policy accept.
    pub fn add_base_chain(
        &mut self,
        table: &str,
        chain: &str,
        kind: ChainType,
        hook: InetHookNumber,
        priority: i32,
    ) {
        self.push_base_chain(table, chain, kind, hook, priority, None);
    }

    /// A filter chain, policy accept, that sees what `device` receives
    /// before anything else in the stack does (`hook ingress device`; an
    /// `inet` table's ingress chain sees only IPv4 and IPv6).
    pub fn add_ingress_chain(&mut self, table: &str, chain: &str, device: &str, priority: i32) {
        let hook = InetHookNumber::Ingress;
        self.push_base_chain(
            table,
            chain,
            ChainType::Filter,
            hook,
            priority,
            Some(device),
        );
    }

    fn push_base_chain(
        &mut self,
        table: &str,
        chain: &str,
        kind: ChainType,
        hook: InetHookNumber,
        priority: i32,
        device: Option<&str>,
    ) {
        let kind = match kind {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        };
        let mut hook = vec![
            Hook::Number(HookNumber::Inet(hook)),
            // The kernel reads the priority as a signed 32-bit number.
            Hook::Priority(priority as u32),
        ];
        hook.extend(device.map(|device| Hook::NetDeviceName(device.to_owned())));
        let attributes = vec![
            ChainAttribute::Table(table.to_owned()),
            ChainAttribute::Name(chain.to_owned()),
            ChainAttribute::Hook(hook),
            ChainAttribute::Policy(ACCEPT),
            ChainAttribute::Type(kind.to_owned()),
        ];
        self.push(
            format!("add chain {chain}"),
            NfTablesMessage::NewChain(ChainMessage { attributes }),
            NLM_F_CREATE,
        );
    }

    /// A named set of IPv4 addresses and ranges (`type ipv4_addr; flags
    /// interval`), which later transactions can refill.
    pub fn add_interval_set(&mut self, table: &str, name: &str, id: u32) {
        self.push_interval_set(table, name, id, SetFlags::Interval, Vec::new());
    }

    /// A constant set of `size` ranges living and dying with the one rule
    /// that uses it, as nft makes for `ip daddr { … }`. The kernel names it;
    /// until then it is [`ANONYMOUS_SET`] with `id`.
    pub fn add_anonymous_interval_set(&mut self, table: &str, id: u32, size: u32) {
        let flags = SetFlags::Interval | SetFlags::Anonymous | SetFlags::Constant;
        let size = vec![SetAttribute::Description(vec![SetDescription::Size(size)])];
        self.push_interval_set(table, ANONYMOUS_SET, id, flags, size);
    }

    fn push_interval_set(
        &mut self,
        table: &str,
        name: &str,
        id: u32,
        flags: SetFlags,
        more: Vec<SetAttribute>,
    ) {
        let mut attributes = vec![
            SetAttribute::Table(table.to_owned()),
            SetAttribute::Name(name.to_owned()),
            SetAttribute::Flags(flags),
            SetAttribute::KeyType(IPV4_ADDR_TYPE),
            SetAttribute::KeyLen(4),
            SetAttribute::Id(id),
        ];
        attributes.extend(more);
        self.push(
            format!("add set {name}"),
            NfTablesMessage::NewSet(SetMessage { attributes }),
            NLM_F_CREATE,
        );
    }

    /// Adds elements to `set`, which `id` names if it was made in this
    /// transaction.
    pub fn add_elements(
        &mut self,
        table: &str,
        set: &str,
        id: Option<u32>,
        elements: Vec<Element>,
    ) {
        let mut elements = elements.into_iter().peekable();
        while elements.peek().is_some() {
            let chunk: Vec<Element> = elements.by_ref().take(ELEMENTS_PER_MESSAGE).collect();
            let mut attributes = vec![
                SetElementList::Table(table.to_owned()),
                SetElementList::Set(set.to_owned()),
            ];
            attributes.extend(id.map(SetElementList::SetId));
            attributes.push(SetElementList::Elements(chunk));
            self.push(
                format!("add elements to set {set}"),
                NfTablesMessage::NewSetElement(SetElementMessage { attributes }),
                NLM_F_CREATE,
            );
        }
    }

    /// Removes every element of the set (`flush set`).
    pub fn flush_set(&mut self, table: &str, set: &str) {
        let attributes = vec![
            SetElementList::Table(table.to_owned()),
            SetElementList::Set(set.to_owned()),
        ];
        self.push(
            format!("flush set {set}"),
            NfTablesMessage::DeleteSetElement(SetElementMessage { attributes }),
            0,
        );
    }

    /// Appends a rule to the chain.
    pub fn add_rule(&mut self, table: &str, chain: &str, expressions: Vec<Expr>) {
        let attributes = vec![
            RuleAttribute::Table(table.to_owned()),
            RuleAttribute::Chain(chain.to_owned()),
            RuleAttribute::Expressions(expressions),
        ];
        self.push(
            format!("add rule to chain {chain}"),
            NfTablesMessage::NewRule(RuleMessage { attributes }),
            NLM_F_CREATE | NLM_F_APPEND,
        );
    }

    /// Sends the transaction over a netfilter socket opened in the calling
    /// thread's namespace, and waits for the kernel's verdict on it.
    pub fn commit(self, what: &str) -> Result<(), NetError> {
        let fail = |doing: &str, source: std::io::Error| NetError::Nftables {
            what: format!("{what}: {doing}"),
            source,
        };
        let (bytes, awaited) = self.serialize();
        let socket = Socket::new(NETLINK_NETFILTER)
            .and_then(|mut socket| socket.bind_auto().map(|_| socket))
            .map_err(|e| fail("opening a netfilter socket", e))?;
        set_receive_timeout(&socket).map_err(|e| fail("setting a receive timeout", e))?;
        socket.send(&bytes, 0).map_err(|e| fail("sending", e))?;
        await_acks(&socket, awaited).map_err(|(doing, e)| fail(&doing, e))
    }

    /// The batch as bytes, and what each message the kernel will ack does,
    /// by sequence number.
    fn serialize(self) -> (Vec<u8>, Vec<(u32, String)>) {
        let control = |message: ControlMessage| {
            let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFTABLES_SUBSYSTEM);
            let mut message = NetlinkMessage::from(NetfilterMessage::new(header, message));
            message.header.flags = NLM_F_REQUEST;
            ("batch".to_owned(), message)
        };
        let mut all = Vec::with_capacity(self.messages.len() + 2);
        all.push(control(ControlMessage::BatchBegin));
        all.extend(self.messages);
        all.push(control(ControlMessage::BatchEnd));
        let mut bytes = Vec::new();
        let mut awaited = Vec::new();
        for (sequence, (doing, mut message)) in (1u32..).zip(all) {
            message.header.sequence_number = sequence;
            message.finalize();
            if message.header.flags & NLM_F_ACK != 0 {
                awaited.push((sequence, doing));
            }
            let start = bytes.len();
            bytes.resize(start + message.buffer_len(), 0);
            message.serialize(&mut bytes[start..]);
        }
        (bytes, awaited)
    }
}

/// Reads the kernel's answers until every message is acked or one failed
/// (then the whole batch was rolled back). The kernel handles the batch
/// inside `send`, so the answers are already queued; the receive timeout
/// only guards against one that never comes.
fn await_acks(
    socket: &Socket,
    mut awaited: Vec<(u32, String)>,
) -> Result<(), (String, std::io::Error)> {
    let doing_of = |awaited: &[(u32, String)], sequence: u32| {
        awaited
            .iter()
            .find(|(s, _)| *s == sequence)
            .map_or_else(|| "batch".to_owned(), |(_, doing)| doing.clone())
    };
    while !awaited.is_empty() {
        let (datagram, _) = socket
            .recv_from_full()
            .map_err(|e| ("waiting for the kernel's answer".to_owned(), e))?;
        let mut rest = datagram.as_slice();
        while !rest.is_empty() {
            let message = NetlinkBuffer::new_checked(rest).map_err(invalid)?;
            if message.message_type() == NLMSG_ERROR {
                let sequence = message.sequence_number();
                let error = ErrorBuffer::new_checked(message.payload()).map_err(invalid)?;
                if let Some(code) = error.code() {
                    // Negated, as a system call's errno.
                    let error = std::io::Error::from_raw_os_error(-code.get());
                    return Err((doing_of(&awaited, sequence), error));
                }
                awaited.retain(|(s, _)| *s != sequence);
            }
            // Each message starts on a 4-byte boundary.
            let advance = (message.length() as usize + 3) & !3;
            rest = rest.get(advance..).unwrap_or_default();
        }
    }
    Ok(())
}

fn set_receive_timeout(socket: &Socket) -> Result<(), std::io::Error> {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
    use nix::sys::time::{TimeVal, TimeValLike};
    setsockopt(socket, ReceiveTimeout, &TimeVal::seconds(5)).map_err(std::io::Error::from)
}

fn invalid(error: netlink_packet_core::DecodeError) -> (String, std::io::Error) {
    (
        "reading the kernel's answer".to_owned(),
        std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string()),
    )
}
