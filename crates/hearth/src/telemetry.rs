//! Operators' view of a running hearth: Prometheus text on `/metrics` of
//! its own address (`--metrics-listen`), never on the API's public port,
//! since it names teams. The gauges are refreshed when scraped.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hearth_api::AppState;
use hearth_orchestrator::SandboxManager;
use prometheus_client::registry::Registry;

/// What one process exposes: the API's metrics, the node's, or both.
pub struct Exposition {
    registry: Registry,
    api: Option<Arc<AppState>>,
    node: Option<Arc<SandboxManager>>,
}

impl Exposition {
    pub fn new(api: Option<Arc<AppState>>, node: Option<Arc<SandboxManager>>) -> Self {
        let mut registry = Registry::default();
        if let Some(api) = &api {
            api.telemetry.register(&mut registry);
        }
        if let Some(node) = &node {
            node.runtime().telemetry.register(&mut registry);
        }
        Self {
            registry,
            api,
            node,
        }
    }

    async fn render(&self) -> Result<String, String> {
        if let Some(node) = &self.node {
            node.runtime().telemetry.refresh(node);
        }
        if let Some(api) = &self.api {
            api.telemetry
                .refresh(&api.store)
                .await
                .map_err(|e| format!("counting sandboxes: {e}"))?;
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| format!("encoding: {e}"))?;
        Ok(text)
    }
}

const OPENMETRICS: &str = "application/openmetrics-text";

/// OpenMetrics when the scraper asks for it (Prometheus does), else
/// Prometheus' own text format (what curl and promtool read).
async fn metrics(
    State(exposition): State<Arc<Exposition>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains(OPENMETRICS));
    match exposition.render().await {
        Ok(text) if openmetrics => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            as_prometheus_text(&text),
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "a metrics scrape failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics are unavailable\n",
            )
                .into_response()
        }
    }
}

/// OpenMetrics text in Prometheus' text format (0.0.4): a counter's HELP and
/// TYPE lines name its samples (`<name>_total`), and the lines only
/// OpenMetrics has (`# UNIT`, `# EOF`) go.
fn as_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

/// Serves `/metrics` on `address` in the background. A port that cannot be
/// bound is reported and left out: metrics are not worth failing a node for.
pub async fn serve(
    address: SocketAddr,
    exposition: Exposition,
) -> Option<tokio::task::JoinHandle<()>> {
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("warning: metrics not served: binding {address}: {error}");
            return None;
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(Arc::new(exposition));
    eprintln!("Prometheus metrics on http://{address}/metrics");
    Some(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the metrics listener stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_prometheus_text() {
        let openmetrics = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 2\n\
            # HELP a_bytes Bytes.\n# TYPE a_bytes gauge\n# UNIT a_bytes bytes\na_bytes 3\n# EOF\n";
        assert_eq!(
            as_prometheus_text(openmetrics),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 2\n\
             # HELP a_bytes Bytes.\n# TYPE a_bytes gauge\na_bytes 3\n"
        );
    }
}
