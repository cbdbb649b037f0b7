//! Reading envd's answers: envd runs in the guest, which may answer
//! anything, so a body is read up to a limit and reading stops there (the
//! deadline over the whole exchange is the request's own timeout).

/// The most of an error answer kept for the error message and the log.
pub const ERROR_TEXT_LIMIT: usize = 4 << 10;

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the answer is over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("reading the answer: {0}")]
    Read(#[from] reqwest::Error),
}

/// The body of `response`, if it is at most `limit` bytes.
pub async fn read_at_most(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if chunk.len() > limit.saturating_sub(body.len()) {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of an error answer's body as text, for an error message:
/// at most [`ERROR_TEXT_LIMIT`] bytes are read, the rest is left unread.
pub async fn error_text(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut cut = false;
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = ERROR_TEXT_LIMIT.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            cut = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if cut {
        text.push_str(" …");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stand-in guest answering every request with an endless chunked
    /// body; returns its address and how many body bytes it managed to send.
    async fn endless_guest() -> std::io::Result<(String, Arc<AtomicUsize>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let head = b"HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n";
                    if stream.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = format!("{:x}\r\n{}\r\n", 1024, "x".repeat(1024));
                    while stream.write_all(chunk.as_bytes()).await.is_ok() {
                        counter.fetch_add(1024, Ordering::Relaxed);
                    }
                });
            }
        });
        Ok((address, sent))
    }

    async fn get(address: &str) -> reqwest::Result<reqwest::Response> {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(20))
            .build()?
            .get(address)
            .send()
            .await
    }

    #[tokio::test]
    async fn an_endless_answer_is_read_only_to_the_limit() -> Result<(), Box<dyn std::error::Error>>
    {
        let (address, sent) = endless_guest().await?;
        let limit = 256 << 10;
        let result = read_at_most(get(&address).await?, limit).await;
        assert!(matches!(result, Err(BodyError::TooLarge(l)) if l == limit));
        // The connection is dropped with the response: the guest's sending
        // stops at what the socket buffers took beyond the limit.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let settled = sent.load(Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(sent.load(Ordering::Relaxed), settled, "still reading");
        assert!(settled < limit + (32 << 20), "read {settled} bytes");
        Ok(())
    }

    #[tokio::test]
    async fn an_endless_error_answer_gives_a_short_message()
    -> Result<(), Box<dyn std::error::Error>> {
        let (address, _) = endless_guest().await?;
        let text = error_text(get(&address).await?).await;
        assert!(text.ends_with(" …"), "{text}");
        assert!(text.len() <= ERROR_TEXT_LIMIT + " …".len());
        Ok(())
    }
}
