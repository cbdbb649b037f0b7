//! The `process.Process` Connect service: start, attach to, feed and signal
//! processes inside the sandbox.

mod child;
mod clone_spawn;
pub mod exit_status;
pub mod handle;
mod posix_spawn;
mod pty;
pub mod registry;
mod service;
pub mod spawn;
mod stream;

pub use service::ProcessService;
