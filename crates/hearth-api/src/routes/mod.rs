//! The REST API's routes.

mod build_logs;
mod build_steps;
mod forking;
mod keys;
mod listing;
mod observe;
mod pausing;
mod resolve;
mod sandbox_logs;
mod sandboxes;
mod snapshots;
mod tags;
mod template_builds;
mod templates;
mod uploads;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::error::{ApiError, error_body};
use crate::state::AppState;

pub use pausing::{Resumed, pause_on_node, resume_paused};
pub use sandboxes::forget as forget_sandbox;

/// E2B endpoints hearth does not offer (yet): 501, not 404, which the SDKs
/// would read as "no such sandbox".
fn not_implemented() -> Router<Arc<AppState>> {
    let refuse = |what: &'static str| {
        move || async move { ApiError::NotImplemented(format!("{what} is not supported by hearth")) }
    };
    Router::new()
        .route(
            "/templates/{template_id}/builds/{build_id}",
            post(refuse("the v1 template build start (use POST /v2/templates/{templateID}/builds/{buildID})")),
        )
        .route("/volumes", get(refuse("volumes")).post(refuse("volumes")))
        .route(
            "/volumes/{volume_id}",
            get(refuse("volumes")).delete(refuse("volumes")),
        )
        .route("/secrets", get(refuse("secrets")).post(refuse("secrets")))
        .route(
            "/secrets/{secret_id}",
            get(refuse("secrets"))
                .post(refuse("secrets"))
                .delete(refuse("secrets")),
        )
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        .route("/openapi.json", get(crate::openapi::document))
        .route(
            "/sandboxes",
            post(sandboxes::create_v1).get(listing::list_v1),
        )
        .route(
            "/v2/sandboxes",
            post(sandboxes::create_v2).get(listing::list_v2),
        )
        .route("/sandboxes/metrics", get(observe::metrics_of_many))
        .route(
            "/sandboxes/{sandbox_id}",
            get(sandboxes::detail).delete(sandboxes::kill),
        )
        .route("/sandboxes/{sandbox_id}/connect", post(sandboxes::connect))
        .route("/sandboxes/{sandbox_id}/pause", post(pausing::pause))
        .route("/sandboxes/{sandbox_id}/resume", post(pausing::resume))
        .route("/sandboxes/{sandbox_id}/snapshots", post(snapshots::create))
        .route("/snapshots", get(snapshots::list))
        .route("/sandboxes/{sandbox_id}/fork", post(forking::fork))
        .route("/v2/sandboxes/{sandbox_id}/fork", post(forking::fork))
        .route(
            "/v2/sandboxes/{sandbox_id}/connect",
            post(sandboxes::connect),
        )
        .route(
            "/sandboxes/{sandbox_id}/timeout",
            post(sandboxes::set_timeout),
        )
        .route(
            "/sandboxes/{sandbox_id}/refreshes",
            post(sandboxes::refresh),
        )
        .route(
            "/sandboxes/{sandbox_id}/network",
            axum::routing::put(sandboxes::update_network),
        )
        .route("/sandboxes/{sandbox_id}/metrics", get(observe::metrics))
        .route("/sandboxes/{sandbox_id}/logs", get(sandbox_logs::logs_v1))
        .route(
            "/v2/sandboxes/{sandbox_id}/logs",
            get(sandbox_logs::logs_v2),
        )
        .route("/templates", get(templates::list))
        .route(
            "/v2/templates",
            get(templates::list).post(template_builds::request_v2),
        )
        .route("/v3/templates", post(template_builds::request_v3))
        .route(
            "/templates/{template_id}",
            get(templates::detail)
                .delete(templates::delete)
                .patch(templates::update_v1),
        )
        .route(
            "/v2/templates/{template_id}",
            axum::routing::patch(templates::update_v2),
        )
        .route("/templates/aliases/{alias}", get(templates::alias))
        .route("/templates/{template_id}/files/{hash}", get(uploads::link))
        .route(
            "/templates/{template_id}/files/{hash}/upload",
            axum::routing::put(uploads::upload),
        )
        .route(
            "/v2/templates/{template_id}/builds/{build_id}",
            post(template_builds::start),
        )
        .route(
            "/templates/{template_id}/builds/{build_id}/status",
            get(build_logs::status),
        )
        .route(
            "/templates/{template_id}/builds/{build_id}/logs",
            get(build_logs::logs),
        )
        .route("/templates/tags", post(tags::assign).delete(tags::remove))
        .route("/templates/{template_id}/tags", get(tags::list))
        .route("/teams", get(keys::teams))
        .route("/api-keys", get(keys::list).post(keys::create))
        .route(
            "/api-keys/{key_id}",
            axum::routing::patch(keys::rename).delete(keys::delete),
        )
        .merge(not_implemented())
        // Tells the request counter which route answered.
        .route_layer(axum::middleware::from_fn(crate::telemetry::label_route))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            error_body(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        // Last, so that it wraps every route and both fallbacks.
        .layer(axum::middleware::from_fn(crate::request_id::tag))
}
