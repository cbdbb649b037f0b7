//! The request body as the multipart parser reads it.
//!
//! multer pulls from its stream for as long as the stream has data ready and
//! keeps all of it in one buffer; while it looks for the end of a part's
//! headers, nothing leaves that buffer. So this stream hands it one chunk per
//! poll (then reports "not ready" and wakes itself at once), which keeps the
//! buffer to about one chunk, and, while a [`HeaderBudget`] is open, chunks of
//! at most [`HEADER_PIECE`] bytes counted against the budget: an endless
//! header block becomes an error instead of memory.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

/// Largest piece handed over while a header budget is open. Small, so the
/// budget is exact to within this many bytes.
pub const HEADER_PIECE: usize = 8 * 1024;
/// The budget's value while it is closed.
const CLOSED: u64 = u64::MAX;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the request body: {0}")]
    Read(#[source] BoxError),
    #[error("a part's headers are longer than {limit} bytes")]
    HeadersTooLong { limit: usize },
}

/// How many more body bytes the parser may read before the headers it is
/// looking for must have ended. Shared between the upload handler, which
/// opens it around each wait for a part, and the body stream, which spends it.
#[derive(Debug)]
pub struct HeaderBudget {
    /// Bytes left; [`CLOSED`] when no part is awaited.
    remaining: AtomicU64,
    /// The limit reported in the error.
    limit: usize,
}

impl HeaderBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicU64::new(CLOSED),
            limit,
        })
    }

    /// Opens the budget before waiting for the next part. `overhead` covers
    /// what comes before the headers (the rest of the previous part's
    /// closing boundary); one more piece covers the one that ends them.
    pub fn open(&self, overhead: usize) {
        let bytes = self.limit + overhead + HEADER_PIECE;
        self.remaining.store(bytes as u64, Ordering::Relaxed);
    }

    pub fn close(&self) {
        self.remaining.store(CLOSED, Ordering::Relaxed);
    }

    fn is_open(&self) -> bool {
        self.remaining.load(Ordering::Relaxed) != CLOSED
    }

    /// Spends `bytes`; false when the budget does not have them.
    fn spend(&self, bytes: usize) -> bool {
        let remaining = self.remaining.load(Ordering::Relaxed);
        if remaining == CLOSED {
            return true;
        }
        match remaining.checked_sub(bytes as u64) {
            Some(left) => {
                self.remaining.store(left, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

/// See the module documentation.
pub struct BoundedBody<S> {
    inner: S,
    /// What is left of the last chunk read from `inner`.
    rest: Bytes,
    /// A piece went out in this poll round: the next poll says "not ready".
    handed_out: bool,
    budget: Arc<HeaderBudget>,
}

impl<S> BoundedBody<S> {
    pub fn new(inner: S, budget: Arc<HeaderBudget>) -> Self {
        Self {
            inner,
            rest: Bytes::new(),
            handed_out: false,
            budget,
        }
    }
}

impl<S, E> Stream for BoundedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.handed_out {
            // Ends multer's read loop; the wake brings it straight back.
            this.handed_out = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while this.rest.is_empty() {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.rest = chunk,
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(Err(BodyError::Read(error.into()))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        let size = if this.budget.is_open() {
            this.rest.len().min(HEADER_PIECE)
        } else {
            this.rest.len()
        };
        if !this.budget.spend(size) {
            return Poll::Ready(Some(Err(BodyError::HeadersTooLong {
                limit: this.budget.limit,
            })));
        }
        this.handed_out = true;
        Poll::Ready(Some(Ok(this.rest.split_to(size))))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn body(chunks: Vec<Vec<u8>>) -> BoundedBody<impl Stream<Item = Result<Bytes, BoxError>>> {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, BoxError>(Bytes::from(c))),
        );
        BoundedBody::new(stream, HeaderBudget::new(100))
    }

    #[tokio::test]
    async fn passes_chunks_whole_while_the_budget_is_closed() {
        let chunks: Vec<_> = body(vec![vec![1; 100_000], vec![2; 10]])
            .map(|c| c.map(|c| c.len()).ok())
            .collect()
            .await;
        assert_eq!(chunks, vec![Some(100_000), Some(10)]);
    }

    #[tokio::test]
    async fn an_open_budget_cuts_pieces_and_runs_out() {
        let mut stream = body(vec![vec![0; 3 * HEADER_PIECE]]);
        stream.budget.open(0);
        // limit 100 + one piece: the first piece fits, the second does not.
        let first = stream.next().await.and_then(Result::ok).map(|c| c.len());
        assert_eq!(first, Some(HEADER_PIECE));
        match stream.next().await {
            Some(Err(BodyError::HeadersTooLong { limit: 100 })) => {}
            other => panic!("expected the budget to run out, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_closed_budget_lets_everything_through_again() {
        let mut stream = body(vec![vec![0; 3 * HEADER_PIECE]]);
        stream.budget.open(0);
        assert!(stream.next().await.is_some_and(|c| c.is_ok()));
        stream.budget.close();
        let rest = stream.next().await.and_then(Result::ok).map(|c| c.len());
        assert_eq!(rest, Some(2 * HEADER_PIECE));
    }
}
