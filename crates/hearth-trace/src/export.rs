//! Sending spans to an OTLP collector over gRPC.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// How long one export may take: a collector that went away must not hold
/// spans (and memory) for long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the OTLP endpoint {endpoint} is not an http:// or https:// URL")]
    Endpoint { endpoint: String },
    #[error("the OTLP exporter for {endpoint} could not be made: {source}")]
    Build {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("spans were not all sent to the OTLP collector: {0}")]
    Flush(opentelemetry_sdk::error::OTelSdkError),
}

/// Spans on their way to an OTLP collector, batched in the background.
/// [`Exporter::shutdown`] sends what is left.
#[derive(Debug, Clone)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// An exporter to the OTLP gRPC endpoint `endpoint` (e.g.
    /// `http://127.0.0.1:4317`), naming the process `service`. Must be
    /// called within a Tokio runtime: the gRPC client runs on it.
    pub fn otlp_grpc(endpoint: &str, service: &str) -> Result<Self, ExportError> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ExportError::Endpoint {
                endpoint: endpoint.to_owned(),
            });
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|source| ExportError::Build {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        Ok(Self { provider })
    }

    /// The `tracing` layer that turns spans into exported ones.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("hearth"))
    }

    /// Sends every finished span now.
    pub fn flush(&self) -> Result<(), ExportError> {
        self.provider.force_flush().map_err(ExportError::Flush)
    }

    /// Sends what is left and stops. Blocks: call it off the runtime's
    /// worker threads (e.g. in `spawn_blocking`) or at the very end.
    pub fn shutdown(&self) -> Result<(), ExportError> {
        self.provider.shutdown().map_err(ExportError::Flush)
    }
}
