//! Errors of network slot set-up and tear-down.

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    CommandFailed { command: String, stderr: String },
    #[error("`{command}` did not finish within {after:?}")]
    TimedOut {
        command: String,
        after: std::time::Duration,
    },
    #[error("invalid CIDR '{0}': expected an IPv4 address or a.b.c.d/n")]
    InvalidCidr(String),
    #[error("slot index {index} is out of range (at most {max})")]
    IndexOutOfRange { index: u32, max: u32 },
    #[error("no free network slot among {tried} tried")]
    Exhausted { tried: u32 },
    #[error("invalid slot prefix '{0}': 1–6 lowercase letters or digits")]
    InvalidPrefix(String),
}
