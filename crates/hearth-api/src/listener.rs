//! One port for plain HTTP and HTTPS: a connection whose first byte opens
//! a TLS handshake (0x16) is served over TLS, any other as plain HTTP/1.1
//! or h2c. So `make up` keeps `http://127.0.0.1:3000` for the API while
//! `https://<port>-<id>.hearth.localhost:3000` reaches sandboxes on the
//! same port, and neither mode needs a port of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a new connection may stay silent before its first byte.
const FIRST_BYTE_DEADLINE: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take, start to end.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How long to back off when accepting fails (out of descriptors, …).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown`, then lets open connections
/// finish (the caller bounds how long). With `tls`, connections that start
/// a handshake get it.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let tls = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    // HTTP/2 is told from HTTP/1.1 by its preface, over TLS (ALPN h2) and
    // on plain connections (h2c) alike.
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = Connection {
            app: app.clone(),
            tls: tls.clone(),
            builder: builder.clone(),
        };
        let watcher = graceful.watcher();
        tokio::spawn(async move { connection.serve(stream, watcher).await });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

struct Connection {
    app: Router,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
}

impl Connection {
    async fn serve(self, stream: TcpStream, watcher: Watcher) {
        let _ = stream.set_nodelay(true);
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(FIRST_BYTE_DEADLINE, stream.peek(&mut first)).await;
        if !matches!(peeked, Ok(Ok(1))) {
            return;
        }
        match (first[0], &self.tls) {
            (TLS_HANDSHAKE, Some(acceptor)) => {
                let handshake = tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream));
                match handshake.await {
                    Ok(Ok(stream)) => self.http(stream, watcher).await,
                    Ok(Err(error)) => tracing::debug!(%error, "a TLS handshake failed"),
                    Err(_) => tracing::debug!("a TLS handshake timed out"),
                }
            }
            _ => self.http(stream, watcher).await,
        }
    }

    /// HTTP/1.1 (with upgrades) or HTTP/2, whichever the client speaks.
    async fn http<S>(self, stream: S, watcher: Watcher)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(self.app);
        let served = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        if let Err(error) = watcher.watch(served).await {
            tracing::debug!(%error, "a connection ended with an error");
        }
    }
}
