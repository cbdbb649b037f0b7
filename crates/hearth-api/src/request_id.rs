//! Every API response carries a request id in `X-Request-Id`: the client's
//! own when it sent a usable one, else a new one. Log lines of the request
//! carry it too (a tracing span), so an error a client quotes can be found.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = hearth_proto::REQUEST_ID;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A client's id is kept when it is short and made of characters that are
/// safe in a header and a log line.
fn usable(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    hearth_proto::is_request_id(text).then(|| text.to_owned())
}

/// The route a request matched (`/sandboxes/{sandboxID}`), else its path:
/// a trace's span names stay few.
fn route_of(request: &Request) -> &str {
    request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or(request.uri().path(), axum::extract::MatchedPath::as_str)
}

/// Runs `task` with the current request's id, as a task spawned from a
/// handler needs (task-locals stay with the task that set them).
pub fn carried<F: Future>(task: F) -> impl Future<Output = F::Output> {
    let id = current();
    async move {
        match id {
            Some(id) => REQUEST_ID.scope(id, task).await,
            None => task.await,
        }
    }
}

/// Middleware: names the request, runs it in a span and a task-local with
/// that name, and returns the name in the response.
pub async fn tag(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(usable)
        .unwrap_or_else(crate::secrets::uuid);
    // At `warn`, the default level, so that every line logged while the
    // request is served names it.
    let span = tracing::warn_span!(
        "request",
        otel.name = %format_args!("{} {}", request.method(), route_of(&request)),
        otel.kind = "server",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request))
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        let keep =
            |s: &str| usable(&HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("")));
        assert_eq!(keep("req-1.2_3"), Some("req-1.2_3".into()));
        assert_eq!(keep(""), None);
        assert_eq!(keep("two words"), None);
        assert_eq!(keep("a\"b"), None);
        assert_eq!(
            keep(&"x".repeat(hearth_proto::MAX_REQUEST_ID_LEN + 1)),
            None
        );
    }
}
