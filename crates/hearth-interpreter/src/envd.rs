//! The sandbox's envd, asked on every execution for the sandbox-wide
//! environment variables (`GET /envs`) with the caller's access token: an
//! execution gets the variables a sandbox was created with, and a secured
//! sandbox refuses a caller without its token here as envd does.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

/// The most a `/envs` answer may hold.
const MAX_ENVS_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EnvdError {
    /// envd refused the token (401/403): the caller's answer too.
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("envd did not answer: {0}")]
    Unreachable(String),
}

/// Where envd listens, and how long it may take.
#[derive(Debug, Clone)]
pub struct Envd {
    pub address: String,
    pub timeout: Duration,
}

impl Envd {
    /// The sandbox-wide environment variables.
    pub async fn envs(
        &self,
        access_token: Option<&str>,
    ) -> Result<std::collections::BTreeMap<String, String>, EnvdError> {
        tokio::time::timeout(self.timeout, self.fetch(access_token))
            .await
            .map_err(|_| EnvdError::Unreachable(format!("no answer within {:?}", self.timeout)))?
    }

    async fn fetch(
        &self,
        access_token: Option<&str>,
    ) -> Result<std::collections::BTreeMap<String, String>, EnvdError> {
        let unreachable = |e: &dyn std::fmt::Display| EnvdError::Unreachable(e.to_string());
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        let driver = tokio::spawn(connection);
        let mut request = http::Request::get("/envs").header(http::header::HOST, &self.address);
        if let Some(token) = access_token {
            request = request.header("X-Access-Token", token);
        }
        let request = request
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| unreachable(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ENVS_BYTES)
            .collect()
            .await
            .map_err(|e| unreachable(&*e))?
            .to_bytes();
        driver.abort();
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "invalid access token".into());
            return Err(EnvdError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        if !status.is_success() {
            return Err(EnvdError::Unreachable(format!(
                "GET /envs answered {status}"
            )));
        }
        serde_json::from_slice(&body).map_err(|e| unreachable(&e))
    }
}
