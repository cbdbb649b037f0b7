//! The node orchestrator's gRPC API, as the control plane calls it.

pub mod auth;

#[allow(clippy::all, missing_docs)]
pub mod orchestrator {
    tonic::include_proto!("hearth.orchestrator.v1");
}
