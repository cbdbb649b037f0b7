//! hearth's node orchestrator: the node's data directory, its microVM
//! runtime (accelerator, guest images, templates, clones in network slots),
//! its sandboxes and the gRPC API the control plane calls.

pub mod data_dir;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod runtime;
pub mod sandboxes;

pub use data_dir::DataDir;
pub use error::{NodeError, Result};
pub use runtime::{BASE_TEMPLATE, NodeRuntime, Reclaimed, RunningSandbox};
pub use sandboxes::{NodeLimits, SandboxError, SandboxInfo, SandboxManager, SandboxSpec};
