//! hearth's code interpreter: the server on port 49999 that E2B's
//! code-interpreter SDKs call. It starts Jupyter kernels itself and speaks
//! Jupyter's messaging protocol to them over ZeroMQ; each context is a
//! kernel. Runs in the sandbox, beside envd.

pub mod context;
pub mod envd;
pub mod execution;
pub mod http;
pub mod kernel;
pub mod language;
mod orphan;
pub mod output;
pub mod turn;
