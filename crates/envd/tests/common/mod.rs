//! Serves envd in-process on a loopback port for integration tests.

#![allow(dead_code)]

use std::time::Duration;

use envd::state::{Envd, Options, SharedEnvd};
use serde_json::Value;

pub struct TestServer {
    pub base: String,
    pub envd: SharedEnvd,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_options(Options::default()).await
    }

    pub async fn with_options(options: Options) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("local address");
        let envd = Envd::new(options);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let served = envd.clone();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            envd::server::serve(listener, served, shutdown)
                .await
                .expect("serve");
        });
        Self {
            base: format!("http://{address}"),
            envd,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn http1() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client")
}

pub fn http2() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client")
}

/// One Connect envelope: flag byte, big-endian length, payload.
pub fn envelope(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn json_envelope(value: &Value) -> Vec<u8> {
    envelope(0, value.to_string().as_bytes())
}

/// Splits a streamed response body into (flag, payload) envelopes.
pub fn split_envelopes(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert!(body.len() >= 5 + len, "truncated envelope");
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "trailing bytes after envelopes");
    out
}

pub fn json_envelopes(body: &[u8]) -> Vec<(u8, Value)> {
    split_envelopes(body)
        .into_iter()
        .map(|(flag, payload)| {
            (
                flag,
                serde_json::from_slice(&payload).expect("envelope holds JSON"),
            )
        })
        .collect()
}

/// Sends a server-streaming JSON request and returns the raw response.
pub async fn stream_call(
    client: &reqwest::Client,
    url: &str,
    request: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut builder = client
        .post(url)
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .body(json_envelope(request));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.send().await.expect("request sent")
}

/// Sends a unary JSON request; returns status and parsed body.
pub async fn unary_call(client: &reqwest::Client, url: &str, request: &Value) -> (u16, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("connect-protocol-version", "1")
        .body(request.to_string())
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Polls `check` until it holds or the deadline passes.
pub async fn eventually(deadline: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Decodes base64 data of a process data event.
pub fn b64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}
