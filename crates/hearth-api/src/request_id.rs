//! Every API response carries a request id in `X-Request-Id`: the client's
//! own when it sent a usable one, else a new one. Log lines of the request
//! carry it too (a tracing span), so an error a client quotes can be found.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";
/// Longer ids are replaced: they would only bloat every log line.
const MAX_LEN: usize = 128;

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
    let fits = !text.is_empty()
        && text.len() <= MAX_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    fits.then(|| text.to_owned())
}

/// Middleware: names the request, runs it in a span and a task-local with
/// that name, and returns the name in the response.
pub async fn tag(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(usable)
        .unwrap_or_else(crate::secrets::uuid);
    let span = tracing::info_span!(
        "request",
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
        assert_eq!(keep(&"x".repeat(MAX_LEN + 1)), None);
    }
}
