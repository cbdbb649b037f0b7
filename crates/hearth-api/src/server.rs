//! The API and the sandbox proxy on one listener.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::state::AppState;

/// Every route plus the proxy in front of them.
pub fn app(state: Arc<AppState>) -> Router {
    crate::routes::router()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::proxy::route_sandbox_traffic,
        ))
        .with_state(state)
}

/// Serves `app` on `listener` (HTTP/1.1 and h2c) until `shutdown`, and
/// enforces sandbox timeouts meanwhile.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let enforcer = tokio::spawn(crate::lifecycle::enforce(
        state.clone(),
        Duration::from_secs(1),
    ));
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    enforcer.abort();
    served
}
