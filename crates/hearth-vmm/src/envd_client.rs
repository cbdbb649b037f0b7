//! The orchestrator's side of envd: health, `/init`, and running a command
//! through the Connect `process.Process/Start` stream (JSON codec).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;

use crate::error::{Result, VmmError};

/// envd's port inside every guest.
pub const ENVD_PORT: u16 = 49983;
/// How long one HTTP request to envd may take, answer read included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a command's output stream [`EnvdClient::run`] collects.
pub const MAX_RUN_OUTPUT: usize = 16 << 20;

/// The body of envd's `POST /init`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<HashMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Filled in at send time: the guest clock is stale after a restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_workdir: Option<String>,
    /// hearth's extension to `/init`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// The most of envd's `/metrics` answer read (it is a few hundred bytes).
pub const METRICS_BODY_LIMIT: usize = 64 << 10;

/// envd's `GET /metrics` body: the guest's view of its CPU, memory and
/// root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GuestMetrics {
    pub cpu_count: u32,
    /// Since envd's previous answer.
    pub cpu_used_pct: f64,
    pub mem_total: u64,
    pub mem_used: u64,
    #[serde(default)]
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// An HTTP client for one VM's envd.
#[derive(Debug, Clone)]
pub struct EnvdClient {
    pub(crate) vm: String,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    access_token: Option<String>,
}

impl EnvdClient {
    pub fn new(vm: &str, address: SocketAddr) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| VmmError::Invalid(format!("building an HTTP client: {e}")))?;
        Ok(Self {
            vm: vm.to_owned(),
            base: format!("http://{address}"),
            http,
            access_token: None,
        })
    }

    /// Sends this token on later requests (after `/init` set it).
    pub fn with_access_token(mut self, token: Option<String>) -> Self {
        self.access_token = token;
        self
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> VmmError {
        VmmError::Envd {
            vm: self.vm.clone(),
            message: message.into(),
        }
    }

    /// Whether envd answers `GET /health` with 204.
    pub async fn healthy(&self) -> bool {
        self.http
            .get(format!("{}/health", self.base))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::NO_CONTENT)
    }

    /// Polls `/health` until it answers, `deadline` passes or `gone`
    /// reports that the VM has died.
    pub async fn wait_healthy(
        &self,
        deadline: Instant,
        gone: impl Fn() -> Option<VmmError>,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            if self.healthy().await {
                return Ok(());
            }
            if let Some(error) = gone() {
                return Err(error);
            }
            if Instant::now() > deadline {
                return Err(VmmError::Timeout {
                    vm: self.vm.clone(),
                    what: "envd to answer /health",
                    after: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `POST /init` with the current time, continuing the current trace
    /// (envd logs its id).
    pub async fn init(&self, params: &InitParams) -> Result<()> {
        let mut params = params.clone();
        params.timestamp =
            Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        let mut request = self.authorised(self.http.post(format!("{}/init", self.base)));
        for (name, value) in hearth_trace::context::current_headers() {
            request = request.header(name, value);
        }
        let response = request
            .json(&params)
            .send()
            .await
            .map_err(|e| self.error(format!("POST /init: {e}")))?;
        let status = response.status();
        if status != reqwest::StatusCode::NO_CONTENT {
            let body = crate::envd_body::error_text(response).await;
            return Err(self.error(format!("POST /init answered {status}: {body}")));
        }
        Ok(())
    }

    /// `GET /metrics`: what the guest says it uses, within `deadline` and
    /// [`METRICS_BODY_LIMIT`].
    pub async fn metrics(&self, deadline: Duration) -> Result<GuestMetrics> {
        let exchange = async {
            let response = self
                .authorised(self.http.get(format!("{}/metrics", self.base)))
                .send()
                .await
                .map_err(|e| self.error(format!("GET /metrics: {e}")))?;
            let status = response.status();
            if status != reqwest::StatusCode::OK {
                return Err(self.error(format!("GET /metrics answered {status}")));
            }
            let body = crate::envd_body::read_at_most(response, METRICS_BODY_LIMIT)
                .await
                .map_err(|e| self.error(format!("GET /metrics: {e}")))?;
            serde_json::from_slice(&body)
                .map_err(|e| self.error(format!("GET /metrics is not envd's JSON: {e}")))
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| VmmError::Timeout {
                vm: self.vm.clone(),
                what: "envd's /metrics",
                after: deadline,
            })?
    }

    pub(crate) fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.access_token {
            Some(token) => request.header("X-Access-Token", token),
            None => request,
        }
    }

    /// Runs `cmd args…` (as `user`, or envd's default user) and collects its
    /// output (at most [`MAX_RUN_OUTPUT`] bytes of stream); gives up after
    /// `timeout`, which covers the whole exchange.
    pub async fn run(
        &self,
        cmd: &str,
        args: &[&str],
        user: Option<&str>,
        timeout: Duration,
    ) -> Result<CommandOutput> {
        let message = serde_json::json!({
            "process": { "cmd": cmd, "args": args },
            "stdin": false,
        });
        let json = serde_json::to_vec(&message).map_err(|e| self.error(e.to_string()))?;
        let mut body = Vec::with_capacity(json.len() + 5);
        body.push(0);
        body.extend_from_slice(&(json.len() as u32).to_be_bytes());
        body.extend_from_slice(&json);
        let mut request = self
            .authorised(
                self.http
                    .post(format!("{}/process.Process/Start", self.base)),
            )
            .timeout(timeout)
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .header("connect-timeout-ms", timeout.as_millis().to_string())
            .body(body);
        if let Some(user) = user {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
            request = request.header("authorization", format!("Basic {basic}"));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.error(format!("process.Process/Start: {e}")))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = crate::envd_body::error_text(response).await;
            return Err(self.error(format!("process.Process/Start answered {status}: {body}")));
        }
        let bytes = crate::envd_body::read_at_most(response, MAX_RUN_OUTPUT)
            .await
            .map_err(|e| self.error(format!("reading the process stream: {e}")))?;
        parse_start_stream(&bytes).map_err(|m| self.error(format!("process.Process/Start: {m}")))
    }
}

/// Reads the envelopes of a `Start` response into the command's output.
pub fn parse_start_stream(mut bytes: &[u8]) -> Result<CommandOutput, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut output = CommandOutput {
        exit_code: -1,
        stdout: String::new(),
        stderr: String::new(),
    };
    let mut ended = false;
    while let [flags, a, b, c, d, rest @ ..] = bytes {
        let flags = *flags;
        // The guest chose the length: compared, never added to.
        let length = usize::try_from(u32::from_be_bytes([*a, *b, *c, *d]))
            .map_err(|_| "an envelope too long for this host".to_owned())?;
        if length > rest.len() {
            return Err("truncated envelope".to_owned());
        }
        let (message, after) = rest.split_at(length);
        bytes = after;
        let value: serde_json::Value =
            serde_json::from_slice(message).map_err(|e| format!("invalid JSON message: {e}"))?;
        if flags & 0x02 != 0 {
            if let Some(error) = value.get("error") {
                return Err(format!("stream ended with an error: {error}"));
            }
            continue;
        }
        let event = value.get("event").cloned().unwrap_or_default();
        if let Some(data) = event.get("data") {
            for (key, sink) in [
                ("stdout", &mut output.stdout),
                ("stderr", &mut output.stderr),
            ] {
                if let Some(encoded) = data.get(key).and_then(|v| v.as_str()) {
                    let decoded = b64.decode(encoded).map_err(|e| format!("bad {key}: {e}"))?;
                    sink.push_str(&String::from_utf8_lossy(&decoded));
                }
            }
        }
        if let Some(end) = event.get("end") {
            // proto3 JSON leaves a zero exit code out.
            output.exit_code = end
                .get("exitCode")
                .and_then(|v| v.as_i64())
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(0);
            ended = true;
        }
    }
    if !ended {
        return Err("the stream closed before the process ended".into());
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(flags: u8, json: &str) -> Vec<u8> {
        let mut out = vec![flags];
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(json.as_bytes());
        out
    }

    #[test]
    fn start_stream_is_collected() -> Result<(), String> {
        let mut stream = envelope(0, r#"{"event":{"start":{"pid":7}}}"#);
        stream.extend(envelope(0, r#"{"event":{"data":{"stdout":"aGk="}}}"#));
        stream.extend(envelope(0, r#"{"event":{"data":{"stderr":"b29wcw=="}}}"#));
        stream.extend(envelope(
            0,
            r#"{"event":{"end":{"exited":true,"status":"exit status 0"}}}"#,
        ));
        stream.extend(envelope(2, "{}"));
        let output = parse_start_stream(&stream)?;
        assert_eq!(
            output,
            CommandOutput {
                exit_code: 0,
                stdout: "hi".into(),
                stderr: "oops".into()
            }
        );
        Ok(())
    }

    #[test]
    fn errors_and_truncation_are_reported() {
        let failed = envelope(
            2,
            r#"{"error":{"code":"not_found","message":"no such cmd"}}"#,
        );
        assert!(parse_start_stream(&failed).is_err());
        let mut cut = envelope(0, r#"{"event":{"start":{"pid":7}}}"#);
        cut.truncate(cut.len() - 3);
        assert!(parse_start_stream(&cut).is_err());
        assert!(parse_start_stream(&envelope(0, r#"{"event":{"start":{"pid":7}}}"#)).is_err());
    }

    #[test]
    fn a_length_the_guest_made_up_is_refused_without_panicking() {
        // A header claiming 4 GiB, followed by a few bytes.
        let mut lie = vec![0, 0xff, 0xff, 0xff, 0xff];
        lie.extend_from_slice(b"{}");
        assert!(parse_start_stream(&lie).is_err());
        assert!(parse_start_stream(&[0, 0, 0]).is_err());
    }

    /// A stand-in envd that answers each request with `answer` (raw HTTP),
    /// or never when it is `None`.
    async fn stand_in(answer: Option<String>) -> std::io::Result<SocketAddr> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    match answer {
                        Some(answer) => {
                            let _ = stream.write_all(answer.as_bytes()).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        Ok(address)
    }

    #[tokio::test]
    async fn metrics_are_read_within_the_deadline()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let body = r#"{"ts":1,"cpu_count":2,"cpu_used_pct":12.5,"mem_total":536870912,"mem_used":104857600,"mem_cache":1,"mem_total_mib":512,"mem_used_mib":100,"disk_used":5,"disk_total":10}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let envd = EnvdClient::new("test", stand_in(Some(answer)).await?)?;
        let metrics = envd.metrics(Duration::from_secs(5)).await?;
        assert_eq!((metrics.cpu_count, metrics.cpu_used_pct), (2, 12.5));
        assert_eq!((metrics.mem_used, metrics.disk_total), (104_857_600, 10));

        let silent = EnvdClient::new("test", stand_in(None).await?)?;
        let started = Instant::now();
        let result = silent.metrics(Duration::from_millis(300)).await;
        assert!(
            matches!(result, Err(VmmError::Timeout { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));

        let lying = EnvdClient::new(
            "test",
            stand_in(Some(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n[1,2]".into(),
            ))
            .await?,
        )?;
        assert!(lying.metrics(Duration::from_secs(5)).await.is_err());
        Ok(())
    }
}
