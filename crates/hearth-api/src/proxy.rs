//! The sandbox traffic proxy: a request for a sandbox's port, named by the
//! `E2b-Sandbox-Id` and `E2b-Sandbox-Port` headers, by a host
//! `<port>-<sandboxID>.<domain>` (`target.rs`) or, for envd's `/files`, by
//! a signed URL (`signed.rs`), goes to that port at the sandbox's slot
//! address on its node, once the node's live table confirms the sandbox
//! still runs there (`route.rs`); a paused sandbox with auto-resume is
//! resumed first (`resume.rs`). Bodies stream both ways unbuffered;
//! WebSocket and other upgrades are spliced through; every exchange ends
//! when its sandbox does (`gone.rs`). What crosses is in `headers.rs`.

mod gone;
mod headers;
mod resume;
mod route;
mod signed;
mod target;
mod upstream;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, error_body};
use crate::model::NetworkConfig;
use crate::secrets::same_secret;
use crate::state::AppState;

use gone::{Guarded, splice};
use route::RouteError;

pub use signed::{SignedUrlError, SignedUrls};
pub use target::{Target, target};
pub use upstream::Upstream;

/// envd's port: reached with the envd access token, never the traffic one.
pub const ENVD_PORT: u16 = 49983;
const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// E2B's answer for a sandbox that is not running; the SDKs' health probe
/// reads a 502 as "the sandbox was killed".
fn sandbox_missing(id: &str) -> Response {
    let body = serde_json::json!({
        "sandboxId": id,
        "message": "The sandbox was not found",
        "code": 502,
    });
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

fn port_closed(id: &str, port: u16) -> Response {
    let body = serde_json::json!({
        "sandboxId": id,
        "message": "The sandbox is running but port is not open",
        "port": port,
        "code": 502,
    });
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

/// Middleware in front of the API: sandbox traffic is proxied, anything
/// else goes on to the API's routes.
pub async fn route_sandbox_traffic(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    match target(&request, app.config.domain.as_deref()) {
        Some(Target::Invalid(message)) => error_body(StatusCode::BAD_REQUEST, &message),
        Some(Target::Sandbox { id, port }) => {
            let response = forward(&app, request, &id, port).await;
            app.telemetry.proxied(response)
        }
        // The API has no /files: it is envd's, named by its signature.
        None if signed::applies(&request) => {
            let found = signed::find(&app, request.method(), request.uri().query()).await;
            match found {
                Ok(id) => {
                    let response = forward(&app, request, &id, ENVD_PORT).await;
                    app.telemetry.proxied(response)
                }
                Err(error) => ApiError::from(error).into_response(),
            }
        }
        None => next.run(request).await,
    }
}

/// The Host the sandbox's `maskRequestHost` gives requests to `port`.
fn masked_host(network: &serde_json::Value, port: u16) -> Option<HeaderValue> {
    let network: NetworkConfig = serde_json::from_value(network.clone()).ok()?;
    HeaderValue::from_str(&network.request_host(port)?).ok()
}

async fn forward(app: &Arc<AppState>, mut request: Request, id: &str, port: u16) -> Response {
    let record = match app.store.sandbox(id).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            app.upstream.forget(id);
            return sandbox_missing(id);
        }
        Err(error) => {
            return ApiError::Internal(format!("looking up a sandbox for the proxy: {error}"))
                .into_response();
        }
    };
    if port != ENVD_PORT
        && let Some(token) = &record.traffic_access_token
    {
        let presented = request
            .headers()
            .get(TRAFFIC_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_secret(presented, token) {
            return error_body(
                StatusCode::FORBIDDEN,
                "this sandbox's ports need its traffic access token in E2B-Traffic-Access-Token",
            );
        }
    }
    let record = match resume::running(app, record).await {
        Ok(record) => record,
        Err(response) => return response,
    };
    let route = match route::resolve(app, &record).await {
        Ok(route) => route,
        Err(RouteError::NotRunning) => {
            app.upstream.forget(id);
            return sandbox_missing(id);
        }
        Err(error @ RouteError::Node(_)) => {
            tracing::warn!(sandbox = %id, %error, "no route to a sandbox");
            return error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "the sandbox's node did not answer; try again shortly",
            );
        }
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(uri) = Uri::try_from(format!("http://{}:{port}{path}", route.address)) else {
        return error_body(
            StatusCode::BAD_REQUEST,
            "the request path cannot be forwarded",
        );
    };
    let upgrade = headers::upgrade_protocol(request.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));

    let (mut parts, body) = request.into_parts();
    headers::outbound(&mut parts, upgrade.as_ref());
    if let Some(host) = masked_host(&record.network, port) {
        parts.headers.insert(header::HOST, host);
    }
    parts.uri = uri;
    let body = Body::new(Guarded::new(body, route.gone.clone()));
    let upstream_request = axum::http::Request::from_parts(parts, body);
    // A request still being sent (an upload) or waiting for its answer
    // ends with the sandbox too.
    let sent = tokio::select! {
        sent = route.client.request(upstream_request) => sent,
        () = route.gone.clone().wait() => return sandbox_missing(id),
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            if !error.is_connect() {
                tracing::warn!(sandbox = %id, port, %error, "proxying to a sandbox failed");
            }
            return port_closed(id, port);
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let sandbox_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(splice(client_upgrade, sandbox_upgrade, route.gone));
        }
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = response.into_parts();
    headers::inbound(&mut parts.headers);
    Response::from_parts(parts, Body::new(Guarded::new(body, route.gone)))
}
