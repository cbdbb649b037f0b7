//! hearth's node orchestrator. So far: the node's data directory and its
//! microVM runtime (accelerator, guest images, templates, clones in network
//! slots).

pub mod data_dir;
pub mod error;
pub mod runtime;

pub use data_dir::DataDir;
pub use error::{NodeError, Result};
pub use runtime::{BASE_TEMPLATE, NodeRuntime, RunningSandbox};
