//! Reading what a guest sends back: a sandbox's envd is the guest's to
//! change, so every answer of it the control plane reads whole is read up
//! to a size limit and within one deadline over the whole exchange
//! (connect, headers, body). A guest that streams without end, trickles,
//! or never answers costs a bounded buffer and a bounded wait.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

/// The most of envd's `/metrics` answer that is read (it is ~200 bytes).
pub const METRICS_LIMIT: usize = 64 << 10;

/// Why reading a guest's answer failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestReadError {
    #[error("no complete answer within {0:?}")]
    Deadline(Duration),
    #[error("sending the request: {0}")]
    Send(String),
    #[error("envd answered {0}")]
    Status(http::StatusCode),
    #[error("the answer is over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("reading the answer: {0}")]
    Body(String),
}

/// Reads `body` whole, stopping (and failing) once it passes `limit`
/// bytes: at most `limit` plus one frame is ever held.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, GuestReadError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(GuestReadError::TooLarge { limit })
        }
        Err(error) => Err(GuestReadError::Body(error.to_string())),
    }
}

/// Runs `exchange` (send, check, read) under one `deadline`.
pub async fn within<T>(
    deadline: Duration,
    exchange: impl Future<Output = Result<T, GuestReadError>>,
) -> Result<T, GuestReadError> {
    tokio::time::timeout(deadline, exchange)
        .await
        .unwrap_or(Err(GuestReadError::Deadline(deadline)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    #[tokio::test]
    async fn a_body_within_the_limit_is_read() -> Result<(), GuestReadError> {
        let body = Full::new(Bytes::from_static(b"{\"ts\":1}"));
        assert_eq!(
            read_limited(body, 8).await?,
            Bytes::from_static(b"{\"ts\":1}")
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_endless_body_stops_at_the_limit() {
        // A stream that never ends: the read must stop on its own.
        let frames = futures::stream::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(
                &[b'x'; 1024],
            )))
        });
        let result = read_limited(StreamBody::new(frames), 10 * 1024).await;
        assert!(matches!(
            result,
            Err(GuestReadError::TooLarge { limit: 10240 })
        ));
    }

    #[tokio::test]
    async fn a_silent_exchange_ends_at_the_deadline() {
        let never = std::future::pending::<Result<(), GuestReadError>>();
        let result = within(Duration::from_millis(20), never).await;
        assert!(matches!(result, Err(GuestReadError::Deadline(_))));
    }
}
