//! hearth's control plane: the REST API the E2B SDKs call, teams and API
//! keys, sandbox timeouts and placement onto nodes (over their gRPC API),
//! template builds (uploads, build tasks, tags), and the proxy that carries
//! sandbox traffic to the right VM.

pub mod builds;
pub mod config;
pub mod error;
pub mod extract;
pub mod lifecycle;
pub mod listener;
pub mod model;
pub mod names;
pub mod nodes;
pub mod openapi;
pub mod proxy;
pub mod request_id;
mod resumes;
mod routes;
pub mod secrets;
pub mod server;
mod starting;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod uploads;

pub use config::ApiConfig;
pub use nodes::{Node, Nodes};
pub use state::AppState;
pub use store::Store;
pub use uploads::Uploads;
