//! hearth's own log lines (text or JSON on stderr) and, when an OTLP
//! endpoint is configured, its spans as traces.

use anyhow::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What is exported as traces: hearth's own spans (every crate of ours is
/// `hearth*`), never the libraries', the exporter's own gRPC client among
/// them, which would trace its own exports.
const TRACED: &str = "off,hearth=info";

/// Installs the subscriber. With `otlp_endpoint`, spans also go to that
/// OTLP gRPC collector; the returned exporter sends what is left when shut
/// down. Call within the Tokio runtime.
pub fn install(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Option<hearth_trace::Exporter>> {
    let filter =
        EnvFilter::try_from_env("HEARTH_LOG").unwrap_or_else(|_| EnvFilter::new("warn,qapi=error"));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    let exporter = otlp_endpoint
        .map(|endpoint| hearth_trace::Exporter::otlp_grpc(endpoint, "hearth"))
        .transpose()
        .context("--otlp-endpoint")?;
    let traces = exporter
        .as_ref()
        .map(|exporter| exporter.layer().with_filter(EnvFilter::new(TRACED)));
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(traces)
        .try_init()
        .context("installing the log subscriber")?;
    if let Some(endpoint) = otlp_endpoint {
        tracing::info!(endpoint, "sending traces over OTLP");
    }
    Ok(exporter)
}

/// Sends the spans not yet exported; a collector that is gone costs at most
/// the exporter's timeout.
pub async fn finish(exporter: Option<hearth_trace::Exporter>) {
    let Some(exporter) = exporter else { return };
    match tokio::task::spawn_blocking(move || exporter.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "the last traces were not sent"),
        Err(error) => tracing::warn!(%error, "the trace exporter's shutdown failed"),
    }
}
