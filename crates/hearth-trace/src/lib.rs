//! Distributed traces. hearth's own spans (`tracing`) become OpenTelemetry
//! spans sent to an OTLP collector when one is configured ([`Exporter`]),
//! and every hop of a request carries the W3C trace context
//! (`traceparent`, see [`context`]): the API's request span, its gRPC call
//! to the node, the node's create and its `/init` to envd in the guest are
//! one trace. Without a collector nothing is recorded and no header is sent.

pub mod context;
mod export;

pub use export::{ExportError, Exporter};
