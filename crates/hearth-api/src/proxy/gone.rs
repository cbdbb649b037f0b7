//! The end of a sandbox as its proxied exchanges see it. Every exchange
//! waits on the sandbox's signal beside its own work: request and response
//! bodies fail once it fires (a plain body that ended cleanly would pass a
//! cut-off download or command stream for a whole one), and spliced
//! (upgraded) connections are closed. Without this, a stream to a VM that
//! was killed would hang until TCP keepalives gave up on it, minutes later,
//! since a VM that is gone sends no FIN.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Fires when a sandbox is gone: forgotten by the control plane (killed,
/// timed out, reconciled away) or ended in its node's live table (deleted,
/// its slot given to another sandbox, no longer listed). Each is a watch
/// channel nobody sends on; its sender being dropped is the signal.
#[derive(Debug, Clone)]
pub struct Gone {
    forgotten: watch::Receiver<()>,
    ended: Option<watch::Receiver<()>>,
}

/// Why a proxied body stopped.
#[derive(Debug, thiserror::Error)]
#[error("the sandbox is gone")]
pub struct SandboxGone;

impl Gone {
    pub fn new(forgotten: watch::Receiver<()>, ended: Option<watch::Receiver<()>>) -> Self {
        Self { forgotten, ended }
    }

    /// Whether it has fired already.
    pub fn fired(&self) -> bool {
        self.forgotten.has_changed().is_err()
            || self
                .ended
                .as_ref()
                .is_some_and(|ended| ended.has_changed().is_err())
    }

    /// Resolves once the sandbox is gone.
    pub async fn wait(self) {
        let Self {
            mut forgotten,
            ended,
        } = self;
        // `changed` succeeds only on a send, which never happens; the loops
        // make that assumption harmless.
        let forgotten = async move { while forgotten.changed().await.is_ok() {} };
        let ended = async move {
            match ended {
                Some(mut ended) => while ended.changed().await.is_ok() {},
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = forgotten => {}
            () = ended => {}
        }
    }
}

/// A body that fails once its sandbox is gone.
pub struct Guarded<B> {
    inner: B,
    gone: Pin<Box<dyn Future<Output = ()> + Send>>,
    fired: bool,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, gone: Gone) -> Self {
        Self {
            inner,
            gone: Box::pin(gone.wait()),
            fired: false,
        }
    }
}

impl<B> HttpBody for Guarded<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // The signal's future must not be polled again once it completed.
        if !self.fired && self.gone.as_mut().poll(cx).is_ready() {
            self.fired = true;
        }
        if self.fired {
            return Poll::Ready(Some(Err(Box::new(SandboxGone))));
        }
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        !self.fired && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Copies bytes both ways between an upgraded client and sandbox until
/// either side closes or the sandbox is gone; both connections close then.
pub async fn splice(
    client: hyper::upgrade::OnUpgrade,
    sandbox: hyper::upgrade::OnUpgrade,
    gone: Gone,
) {
    let copy = async move {
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
    };
    tokio::select! {
        () = copy => {}
        () = gone.wait() => tracing::debug!("a spliced connection ended with its sandbox"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_fails_once_its_sandbox_is_gone() {
        let (forgotten, forgotten_rx) = watch::channel(());
        let (chunks, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, SandboxGone>>(1);
        let inner = http_body_util::StreamBody::new(tokio_stream_of(rx));
        let gone = Gone::new(forgotten_rx, None);
        assert!(!gone.fired());
        let mut body = Guarded::new(inner, gone.clone());
        let _ = chunks.send(Ok(Frame::data(Bytes::from_static(b"a")))).await;
        let first = body.frame().await;
        assert!(matches!(first, Some(Ok(ref f)) if f.data_ref().is_some()));
        drop(forgotten);
        assert!(gone.fired());
        assert!(matches!(body.frame().await, Some(Err(_))));
        assert!(matches!(body.frame().await, Some(Err(_))));
    }

    /// A stream of what `rx` receives (no tokio-stream in this crate).
    fn tokio_stream_of<T: Send + 'static>(
        rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> + Unpin + Send {
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }
}
