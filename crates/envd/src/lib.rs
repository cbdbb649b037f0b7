//! envd: the daemon inside every hearth sandbox. It speaks the protocol the
//! unmodified E2B SDKs expect — Connect RPC `process.Process` and
//! `filesystem.Filesystem`, and HTTP `/files`, `/health`, `/init`, `/envs`,
//! `/metrics` — on port 49983.

pub mod filesystem;
pub mod http;
pub mod log_line;
pub mod port_forward;
pub mod process;
pub mod rpc;
pub mod server;
pub mod state;
pub mod users;

/// The envd version reported to the SDKs (they gate features on it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The port the SDKs and the proxy expect envd on.
pub const DEFAULT_PORT: u16 = 49983;
