//! A reader that fails once a line grows past a limit: QEMU's monitor is
//! read line by line into memory, and a compromised QEMU (guest code under
//! TCG is not kept from it by QEMU itself) must not make hearth buffer an
//! endless line.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Wraps `R`; reading fails with `InvalidData` when more than `limit` bytes
/// arrive without a newline.
#[derive(Debug)]
pub struct LineBound<R> {
    inner: R,
    since_newline: usize,
    limit: usize,
}

impl<R> LineBound<R> {
    pub fn new(inner: R, limit: usize) -> Self {
        Self {
            inner,
            since_newline: 0,
            limit,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LineBound<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let fresh = &buf.filled()[before..];
            self.since_newline = match fresh.iter().rposition(|&b| b == b'\n') {
                Some(last) => fresh.len() - last - 1,
                None => self.since_newline.saturating_add(fresh.len()),
            };
            if self.since_newline > self.limit {
                // A failed read hands out nothing.
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a line longer than {} bytes", self.limit),
                )));
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn short_lines_pass_and_a_long_one_fails() {
        let mut ok = LineBound::new(&b"{\"a\":1}\n{\"b\":2}\n"[..], 8);
        let mut text = String::new();
        assert!(ok.read_to_string(&mut text).await.is_ok());
        assert_eq!(text.lines().count(), 2);

        let endless = vec![b'x'; 64 << 10];
        let mut bad = LineBound::new(&endless[..], 1024);
        let mut sink = Vec::new();
        let error = bad.read_to_end(&mut sink).await.err();
        assert_eq!(error.map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
        assert!(sink.len() <= 1024 + 8192, "stopped near the limit");
    }
}
