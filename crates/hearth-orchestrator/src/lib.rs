//! hearth's node orchestrator: the node's data directory, its microVM
//! runtime (accelerator, guest images, templates, clones in network slots),
//! its sandboxes and the gRPC API the control plane calls.

pub mod abandon;
pub mod admission;
pub mod build;
pub mod data_dir;
pub mod error;
pub mod grpc;
pub mod grpc_templates;
pub mod history_store;
pub mod metrics;
pub mod node_token;
pub mod private_files;
pub mod record;
pub mod runtime;
pub mod sandbox_history;
pub mod sandbox_metrics;
pub mod sandboxes;
pub mod snapshots;
pub mod telemetry;

pub use data_dir::DataDir;
pub use error::{NodeError, Result};
pub use record::SandboxRecord;
pub use runtime::{Adopted, BASE_TEMPLATE, NodeRuntime, Reclaimed, Recovery, RunningSandbox};
pub use sandboxes::{NodeLimits, SandboxError, SandboxInfo, SandboxManager, SandboxSpec};
