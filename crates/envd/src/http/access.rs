//! The access token set by `/init`: once set, every request must carry it in
//! `X-Access-Token`, except the few that authenticate on their own.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;

use super::early_response::drain_or_close;
use super::error::ApiError;
use crate::state::SharedEnvd;

pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

pub const UNAUTHORIZED_MESSAGE: &str =
    "unauthorized access, please provide a valid access token or method signing if supported";

/// Requests that skip the token check: `/health` always, `/files` (token or
/// signature, checked by the handler) and `/init` (checked by the handler).
fn exempt(method: &Method, path: &str) -> bool {
    matches!(
        (method.as_str(), path),
        ("GET", "/health") | ("GET", "/files") | ("POST", "/files") | ("POST", "/init")
    )
}

/// Whether the request carries the sandbox's access token (or none is set).
pub fn has_valid_token(envd: &crate::state::Envd, headers: &http::HeaderMap) -> bool {
    match envd.defaults().access_token {
        None => true,
        Some(expected) => headers
            .get(ACCESS_TOKEN_HEADER)
            .is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())),
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn require_token(
    State(envd): State<SharedEnvd>,
    request: Request,
    next: Next,
) -> Response {
    if exempt(request.method(), request.uri().path()) || has_valid_token(&envd, request.headers()) {
        return next.run(request).await;
    }
    let version = request.version();
    let rejection = ApiError::unauthorized(UNAUTHORIZED_MESSAGE).into_response();
    drain_or_close(request.into_body(), version, rejection).await
}
