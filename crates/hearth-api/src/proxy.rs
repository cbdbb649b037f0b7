//! The sandbox traffic proxy: a request for a sandbox's port, named by the
//! `E2b-Sandbox-Id` and `E2b-Sandbox-Port` headers or by a host
//! `<port>-<sandboxID>.<domain>`, goes to that port at the sandbox's slot
//! address on its node. Bodies stream both ways unbuffered; WebSocket and
//! other upgrades are spliced through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::error::error_body;
use crate::secrets::same_secret;
use crate::state::AppState;

/// envd's port: reached with the envd access token, never the traffic one.
pub const ENVD_PORT: u16 = 49983;
const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// HTTP clients that talk to sandboxes: one per sandbox, because slot
/// addresses are reused, and a kept-alive connection to a sandbox that is
/// gone must never carry a request meant for the next one at its address.
/// Upgraded connections (WebSockets) are tracked per sandbox too, so that
/// they end with it.
#[derive(Debug, Default)]
pub struct Upstream {
    clients: Mutex<HashMap<String, Client<HttpConnector, Body>>>,
    splices: Mutex<HashMap<String, Vec<tokio::task::AbortHandle>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Upstream {
    pub fn new() -> Self {
        Self::default()
    }

    fn client(&self, sandbox_id: &str) -> Client<HttpConnector, Body> {
        locked(&self.clients)
            .entry(sandbox_id.to_owned())
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(Duration::from_secs(5)));
                // A VM that vanished sends no FIN; keepalives find out.
                connector.set_keepalive(Some(Duration::from_secs(30)));
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .build(connector)
            })
            .clone()
    }

    /// Sends `request` to sandbox `sandbox_id` (the URI names its address).
    pub async fn send(
        &self,
        sandbox_id: &str,
        request: axum::http::Request<Body>,
    ) -> Result<axum::http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>
    {
        self.client(sandbox_id).request(request).await
    }

    fn track_splice(&self, sandbox_id: &str, handle: tokio::task::AbortHandle) {
        let mut splices = locked(&self.splices);
        let handles = splices.entry(sandbox_id.to_owned()).or_default();
        handles.retain(|h| !h.is_finished());
        handles.push(handle);
    }

    /// Drops the connections to a sandbox that is gone, upgraded ones too.
    pub fn forget(&self, sandbox_id: &str) {
        locked(&self.clients).remove(sandbox_id);
        for handle in locked(&self.splices).remove(sandbox_id).unwrap_or_default() {
            handle.abort();
        }
    }

    /// Forgets every sandbox `keep` says no to (reconciliation with the
    /// store, which other control planes may have changed).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = locked(&self.clients)
            .keys()
            .chain(locked(&self.splices).keys())
            .filter(|id| !keep(id))
            .cloned()
            .collect();
        for id in gone {
            self.forget(&id);
        }
    }
}

/// Which sandbox port a request is for, if it is sandbox traffic.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Sandbox {
        id: String,
        port: u16,
    },
    /// It names a sandbox, but not in a form that can be routed.
    Invalid(String),
}

/// The sandbox and port a request names by header or host, if any.
pub fn target(request: &Request, domain: Option<&str>) -> Option<Target> {
    let headers = request.headers();
    if let Some(id) = headers.get("e2b-sandbox-id") {
        let Ok(id) = id.to_str() else {
            return Some(Target::Invalid("E2b-Sandbox-Id is not text".into()));
        };
        let port = match headers.get("e2b-sandbox-port").map(|p| p.to_str()) {
            None => ENVD_PORT,
            Some(Ok(p)) => match p.trim().parse() {
                Ok(port) => port,
                Err(_) => return Some(Target::Invalid(format!("invalid E2b-Sandbox-Port '{p}'"))),
            },
            Some(Err(_)) => return Some(Target::Invalid("E2b-Sandbox-Port is not text".into())),
        };
        return Some(Target::Sandbox {
            id: id.trim().to_owned(),
            port,
        });
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())?;
    host_target(host, domain)
}

/// `<port>-<sandboxID>.<domain>[:<listen port>]`; without a configured
/// domain any domain is taken, since API hosts never have that shape.
fn host_target(host: &str, domain: Option<&str>) -> Option<Target> {
    let host = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    let (label, rest) = host.split_once('.')?;
    if domain.is_some_and(|d| !rest.eq_ignore_ascii_case(d)) {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    let port: u16 = port.parse().ok()?;
    let valid_id = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric());
    valid_id.then(|| Target::Sandbox {
        id: id.to_ascii_lowercase(),
        port,
    })
}

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
        None => next.run(request).await,
        Some(Target::Invalid(message)) => error_body(StatusCode::BAD_REQUEST, &message),
        Some(Target::Sandbox { id, port }) => forward(&app, request, &id, port).await,
    }
}

async fn forward(app: &AppState, mut request: Request, id: &str, port: u16) -> Response {
    let record = match app.store.sandbox(id).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            app.upstream.forget(id);
            return sandbox_missing(id);
        }
        Err(error) => {
            tracing::error!(%error, "looking up a sandbox for the proxy");
            return error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the sandbox lookup failed",
            );
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
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(uri) = Uri::try_from(format!("http://{}:{port}{path}", record.host_address)) else {
        return error_body(
            StatusCode::BAD_REQUEST,
            "the request path cannot be forwarded",
        );
    };
    let upgrade = upgrade_protocol(&request);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));

    let (mut parts, body) = request.into_parts();
    if parts.version == axum::http::Version::HTTP_2 {
        to_http1_headers(&mut parts);
    }
    parts.uri = uri;
    parts.version = axum::http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    let upstream_request = axum::http::Request::from_parts(parts, body);
    let mut response = match app.upstream.send(id, upstream_request).await {
        Ok(response) => response,
        Err(error) if error.is_connect() => return port_closed(id, port),
        Err(error) => {
            tracing::warn!(sandbox = %id, port, %error, "proxying to a sandbox failed");
            return port_closed(id, port);
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let sandbox_upgrade = hyper::upgrade::on(&mut response);
            let task = tokio::spawn(splice(client_upgrade, sandbox_upgrade));
            app.upstream.track_splice(id, task.abort_handle());
        }
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// An HTTP/2 request as HTTP/1.1 would carry it: the authority becomes
/// the Host header (the guest sees the same Host either way) and split
/// cookie headers are joined (RFC 9113 §8.2.3).
fn to_http1_headers(parts: &mut axum::http::request::Parts) {
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, value);
    }
    let cookies: Vec<String> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    if cookies.len() > 1
        && let Ok(joined) = HeaderValue::from_str(&cookies.join("; "))
    {
        parts.headers.insert(header::COOKIE, joined);
    }
}

/// The protocol an HTTP/1.1 upgrade request asks for (WebSocket, …).
fn upgrade_protocol(request: &Request) -> Option<HeaderValue> {
    let connection = request.headers().get(header::CONNECTION)?.to_str().ok()?;
    let asks = connection
        .split(',')
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| request.headers().get(header::UPGRADE).cloned())
        .flatten()
}

fn strip_hop_by_hop(headers: &mut axum::http::HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Copies bytes both ways between an upgraded client and sandbox.
async fn splice(client: hyper::upgrade::OnUpgrade, sandbox: hyper::upgrade::OnUpgrade) {
    let (client, sandbox) = match tokio::try_join!(client, sandbox) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(%error, "an upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut sandbox = TokioIo::new(sandbox);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut sandbox).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut builder = axum::http::Request::builder().uri("/files");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap_or_default()
    }

    #[test]
    fn headers_name_the_sandbox_and_port() {
        let r = request(&[("E2b-Sandbox-Id", "abc"), ("E2b-Sandbox-Port", "49999")]);
        assert_eq!(
            target(&r, None),
            Some(Target::Sandbox {
                id: "abc".into(),
                port: 49999
            })
        );
        let r = request(&[("E2b-Sandbox-Id", "abc")]);
        assert_eq!(
            target(&r, None),
            Some(Target::Sandbox {
                id: "abc".into(),
                port: ENVD_PORT
            })
        );
        let r = request(&[("E2b-Sandbox-Id", "abc"), ("E2b-Sandbox-Port", "http")]);
        assert!(matches!(target(&r, None), Some(Target::Invalid(_))));
    }

    #[test]
    fn hosts_name_the_sandbox_and_port() {
        let r = request(&[("Host", "8080-abc123.sb.example.com:3000")]);
        assert_eq!(
            target(&r, Some("sb.example.com")),
            Some(Target::Sandbox {
                id: "abc123".into(),
                port: 8080
            })
        );
        assert_eq!(target(&r, Some("other.com")), None);
        assert_eq!(target(&request(&[("Host", "127.0.0.1:3000")]), None), None);
        assert_eq!(target(&request(&[("Host", "api.example.com")]), None), None);
        assert_eq!(
            target(&request(&[("Host", "x-abc.example.com")]), None),
            None
        );
    }
}
