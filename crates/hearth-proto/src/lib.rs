//! The node orchestrator's gRPC API, as the control plane calls it.

pub mod auth;
mod request_id;

pub use request_id::{MAX_REQUEST_ID_LEN, REQUEST_ID, is_request_id};

#[allow(clippy::all, missing_docs)]
pub mod orchestrator {
    tonic::include_proto!("hearth.orchestrator.v1");
}
