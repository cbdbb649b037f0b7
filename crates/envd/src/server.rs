//! Wires the Connect services and HTTP endpoints into one router and serves
//! it over HTTP/1.1 and HTTP/2 (cleartext, prior knowledge).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use connectrpc::{ConnectRpcService, Limits};
use envd_proto::filesystem::FilesystemExt;
use envd_proto::process::ProcessExt;

use crate::filesystem::FilesystemService;
use crate::http;
use crate::process::ProcessService;
use crate::state::SharedEnvd;

/// Largest Connect message envd accepts (stdin chunks, paths, requests).
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

pub fn router(envd: SharedEnvd) -> axum::Router {
    let connect = connectrpc::Router::new();
    let connect = Arc::new(ProcessService::new(envd.clone())).register(connect);
    let connect = Arc::new(FilesystemService::new(envd.clone())).register(connect);
    let limits = Limits::default()
        .with_max_message_size(MAX_MESSAGE_SIZE)
        .with_max_request_body_size(MAX_MESSAGE_SIZE + 5);
    let connect = ConnectRpcService::new(connect).with_limits(limits);

    axum::Router::new()
        .route("/health", get(http::health::health))
        .route("/init", post(http::init::init))
        .route("/envs", get(http::envs::envs))
        .route("/metrics", get(http::metrics::metrics))
        .route(
            "/files",
            get(http::download::download).post(http::upload::upload),
        )
        .fallback_service(connect)
        .layer(axum::middleware::from_fn_with_state(
            envd.clone(),
            http::access::require_token,
        ))
        .with_state(envd)
}

/// Serves envd until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    envd: SharedEnvd,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = router(envd);
    // Streams are many small writes (start, data, end); without TCP_NODELAY
    // Nagle's algorithm and delayed ACKs add ~40 ms to every command.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "setting TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
