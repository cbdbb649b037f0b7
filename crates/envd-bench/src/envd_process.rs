//! The envd under test: a child process on a free loopback port.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

pub struct EnvdProcess {
    child: tokio::process::Child,
    pub base: String,
    pub pid: u32,
    pub client: reqwest::Client,
}

impl EnvdProcess {
    pub async fn start(bin: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(bin)
            .args(["--port", &port.to_string(), "--listen", "127.0.0.1"])
            .env("ENVD_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        let pid = child.id().context("envd has no pid")?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .build()?;
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{base}/health")).send().await
                && r.status() == 204
            {
                return Ok(Self {
                    child,
                    base,
                    pid,
                    client,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("envd did not become healthy on port {port}")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Resident set size of envd in bytes (VmRSS).
    pub fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse()?;
        Ok(kib * 1024)
    }
}

impl Drop for EnvdProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// One Connect envelope.
pub fn envelope(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}
