//! The `filesystem.Filesystem` Connect service: stat, list, create, move,
//! remove and watch paths inside the sandbox.

pub mod entry;
mod events;
pub mod mode_string;
pub mod ownership;
mod service;
pub mod watcher;

pub use service::FilesystemService;
