//! Answering before the request body was read (a rejected token, a failed
//! upload). hyper then closes an HTTP/1.1 connection without saying so, and
//! clients that reuse it fail their next request. So the rest of the body
//! is read and discarded when it is small, and otherwise the response
//! announces `Connection: close`.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Version, header};
use http_body_util::BodyExt;

/// Most of a body worth draining to keep the connection.
const DRAIN_LIMIT: usize = 1024 * 1024;
/// Longest wait for the rest of the body.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Drains `body` if it is small and quick; else marks `response` as closing.
pub async fn drain_or_close(body: Body, version: Version, response: Response) -> Response {
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async move {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > DRAIN_LIMIT {
                    return false;
                }
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    if drained {
        response
    } else {
        close(version, response)
    }
}

/// Announces that the connection closes after this response (HTTP/1 only;
/// HTTP/2 streams are independent of each other).
pub fn close(version: Version, mut response: Response) -> Response {
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
