//! The API and the sandbox proxy on one listener.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio_rustls::rustls::ServerConfig;

use crate::state::AppState;

/// Ends a task when dropped, also when the future holding it is.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every route plus the proxy in front of them.
pub fn app(state: Arc<AppState>) -> Router {
    crate::routes::router()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::proxy::route_sandbox_traffic,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::telemetry::count,
        ))
        .with_state(state)
}

/// The proxy alone, for a port of its own: anything that names no sandbox
/// is refused.
pub fn proxy_app(state: Arc<AppState>) -> Router {
    Router::new()
        .fallback(|| async {
            crate::error::ApiError::BadRequest(
                "this port only carries sandbox traffic: name the sandbox with the \
                 E2b-Sandbox-Id and E2b-Sandbox-Port headers or the host <port>-<sandboxID>.<domain>"
                    .into(),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::proxy::route_sandbox_traffic,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::telemetry::count,
        ))
        .with_state(state)
}

/// Serves the proxy alone on `listener` (plain and, with `tls`, HTTPS),
/// until the task is dropped.
pub async fn serve_proxy(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerConfig>>,
) -> std::io::Result<()> {
    crate::listener::serve(listener, proxy_app(state), tls, std::future::pending()).await
}

/// Serves `app` on `listener` (HTTP/1.1 and HTTP/2, plain and, with `tls`,
/// HTTPS) until `shutdown`, and enforces sandbox timeouts meanwhile. Builds
/// that a previous process left running on these nodes are ended first
/// (their streams died with it).
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match crate::builds::interrupt_leftovers(&state).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            builds = n,
            "ended template builds a previous process left unfinished"
        ),
        Err(error) => tracing::warn!(%error, "ending unfinished template builds failed"),
    }
    let _enforcer = AbortOnDrop(tokio::spawn(crate::lifecycle::enforce(
        state.clone(),
        Duration::from_secs(1),
    )));
    crate::listener::serve(listener, app(state), tls, shutdown).await
}
