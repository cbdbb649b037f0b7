//! The control plane's metrics for operators (Prometheus): requests by
//! route, method and status with their latency, the proxy's traffic, and the
//! sandboxes there are by team, template and state (read from the store when
//! scraped).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

use crate::state::AppState;
use crate::store::{Store, StoreResult};

/// What a response was an answer of: a route's pattern, or the proxy.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub String);

/// The label of proxied traffic.
const PROXY: &str = "proxy";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SandboxLabels {
    team: String,
    template: String,
    state: String,
}

/// The API's metrics.
#[derive(Debug)]
pub struct ApiTelemetry {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    proxy_bytes: Counter,
    sandboxes: Family<SandboxLabels, Gauge>,
}

impl Default for ApiTelemetry {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            // 1 ms to ~65 s.
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            proxy_bytes: Counter::default(),
            sandboxes: Family::default(),
        }
    }
}

impl ApiTelemetry {
    /// Adds the API's metrics to `registry` (under `hearth_api_`).
    pub fn register(&self, registry: &mut Registry) {
        let api = registry.sub_registry_with_prefix("hearth_api");
        api.register(
            "requests",
            "HTTP requests answered, by method, route (`proxy` for sandbox traffic) and status",
            self.requests.clone(),
        );
        api.register_with_unit(
            "request_duration",
            "How long requests took until their response began, by route",
            Unit::Seconds,
            self.request_seconds.clone(),
        );
        api.register_with_unit(
            "proxy_response",
            "Bytes of responses the sandbox proxy sent to clients",
            Unit::Bytes,
            self.proxy_bytes.clone(),
        );
        api.register(
            "sandboxes",
            "Sandboxes, by team, template and state",
            self.sandboxes.clone(),
        );
    }

    /// Sets the sandbox gauges from the store (before a scrape).
    pub async fn refresh(&self, store: &Store) -> StoreResult<()> {
        let counts = store.count_sandboxes_by_kind().await?;
        self.sandboxes.clear();
        for count in counts {
            self.sandboxes
                .get_or_create(&SandboxLabels {
                    team: count.team_id,
                    template: count.template_id,
                    state: count.state,
                })
                .set(count.count);
        }
        Ok(())
    }

    /// Marks `response` as the proxy's and counts the bytes of its body
    /// as they are sent.
    pub fn proxied(self: &Arc<Self>, response: Response) -> Response {
        let (mut parts, body) = response.into_parts();
        parts.extensions.insert(RouteLabel(PROXY.into()));
        let counted = CountedBody {
            inner: body,
            counter: self.proxy_bytes.clone(),
        };
        Response::from_parts(parts, Body::new(counted))
    }
}

/// Route middleware: tells [`count`] which route answered.
pub async fn label_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

/// Outermost middleware: counts and times every request.
pub async fn count(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or_else(|| "unmatched".to_owned(), |label| label.0.clone());
    let telemetry = &app.telemetry;
    telemetry
        .request_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    telemetry
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// A body that counts its data bytes as they go by.
struct CountedBody {
    inner: Body,
    counter: Counter,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
