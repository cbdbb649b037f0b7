//! Errors of network slot set-up and tear-down.

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A system call on a namespace, a file under /proc or /run, or the tun
    /// device failed.
    #[error("{what}: {source}")]
    System {
        what: String,
        source: std::io::Error,
    },
    /// The kernel refused a link, address or route request.
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    /// The kernel refused an nftables transaction (nothing of it applies).
    #[error("nftables: {what}: {source}")]
    Nftables {
        what: String,
        source: std::io::Error,
    },
    /// The kernel refused, or answered nonsense to, a connection tracking
    /// (ctnetlink) request.
    #[error("conntrack in {namespace}: {what}: {source}")]
    Conntrack {
        namespace: String,
        what: String,
        source: std::io::Error,
    },
    /// Another process (or task) made this namespace first.
    #[error("network namespace {0} exists already")]
    NetnsExists(String),
    #[error("{what} did not finish within {after:?}")]
    TimedOut {
        what: String,
        after: std::time::Duration,
    },
    /// The thread doing the work died before answering (a panic).
    #[error("{0}: the worker thread died")]
    WorkerLost(String),
    #[error("invalid CIDR '{0}': expected an IPv4 address or a.b.c.d/n")]
    InvalidCidr(String),
    #[error("slot index {index} is out of range (at most {max})")]
    IndexOutOfRange { index: u32, max: u32 },
    #[error("no free network slot among {tried} tried")]
    Exhausted { tried: u32 },
    #[error("invalid slot prefix '{0}': 1–6 lowercase letters or digits")]
    InvalidPrefix(String),
}

impl NetError {
    /// A failed system call, described by what it was for.
    pub(crate) fn system(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::System { what, source }
    }

    /// A refused rtnetlink request, described by what it was for.
    pub(crate) fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let what = what.into();
        move |source| Self::Netlink { what, source }
    }
}

// Callers keep these in their own errors, across tasks and in `anyhow`.
const _: () = {
    const fn sendable<T: Send + Sync + 'static>() {}
    sendable::<NetError>();
};
