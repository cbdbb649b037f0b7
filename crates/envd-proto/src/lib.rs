//! Generated message types and service traits for envd's `process.Process`
//! and `filesystem.Filesystem` Connect services.
#![allow(clippy::all, missing_docs)]

connectrpc::include_generated!();
