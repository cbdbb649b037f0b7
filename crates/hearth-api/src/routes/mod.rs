//! The REST API's routes.

mod keys;
mod listing;
mod observe;
mod sandboxes;
mod templates;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::error::{ApiError, error_body};
use crate::state::AppState;

pub use sandboxes::remove as remove_sandbox;

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
        .route("/sandboxes/{sandbox_id}/logs", get(observe::logs_v1))
        .route("/v2/sandboxes/{sandbox_id}/logs", get(observe::logs_v2))
        .route("/templates", get(templates::list))
        .route("/v2/templates", get(templates::list))
        .route(
            "/templates/{template_id}",
            get(templates::detail).delete(templates::delete),
        )
        .route("/templates/aliases/{alias}", get(templates::alias))
        .route("/teams", get(keys::teams))
        .route("/api-keys", get(keys::list).post(keys::create))
        .route(
            "/api-keys/{key_id}",
            axum::routing::patch(keys::rename).delete(keys::delete),
        )
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            error_body(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
}
