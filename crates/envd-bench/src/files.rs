//! Upload and download of the same bytes through envd's `/files` and through
//! a plain loopback HTTP server that copies to and from disk, plus envd's
//! memory growth while it streams.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::body::Body;
use axum::extract::State;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::envd_process::EnvdProcess;

const CHUNK: usize = 1024 * 1024;

fn body_of(size: usize) -> reqwest::Body {
    let chunk = Bytes::from(vec![0x5au8; CHUNK]);
    let chunks = size / CHUNK;
    reqwest::Body::wrap_stream(futures::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ))
}

async fn upload(client: &reqwest::Client, url: &str, size: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/octet-stream")
        .body(body_of(size))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("upload to {url} failed: {}", response.status());
    }
    response.bytes().await?;
    Ok(started.elapsed())
}

async fn download(client: &reqwest::Client, url: &str, size: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client.get(url).send().await?;
    if !response.status().is_success() {
        bail!("download from {url} failed: {}", response.status());
    }
    let mut stream = response.bytes_stream();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        total += chunk?.len();
    }
    if total != size {
        bail!("downloaded {total} bytes from {url}, expected {size}");
    }
    Ok(started.elapsed())
}

/// Argument that turns the bench binary into the baseline server.
pub const RAW_SERVER_MODE: &str = "--raw-server";

/// The baseline: an HTTP server that only copies bodies to and from a file.
/// Prints its address on stdout, then serves until killed.
pub async fn serve_raw(file: PathBuf) -> anyhow::Result<()> {
    async fn put(State(file): State<Arc<PathBuf>>, body: Body) -> Result<(), String> {
        let mut out = tokio::fs::File::create(file.as_path())
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk.map_err(|e| e.to_string())?)
                .await
                .map_err(|e| e.to_string())?;
        }
        out.flush().await.map_err(|e| e.to_string())
    }
    async fn get(State(file): State<Arc<PathBuf>>) -> Result<Body, String> {
        let input = tokio::fs::File::open(file.as_path())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Body::from_stream(
            tokio_util::io::ReaderStream::with_capacity(input, 256 * 1024),
        ))
    }
    let app = axum::Router::new()
        .route("/raw", axum::routing::post(put).get(get))
        .with_state(Arc::new(file));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}/raw", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// Starts the baseline server as a child process; returns it and its URL.
async fn raw_server(file: PathBuf) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg(RAW_SERVER_MODE)
        .arg(file)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await?;
    Ok((child, line.trim().to_string()))
}

/// Samples envd's RSS until stopped; returns the peak.
fn watch_rss(envd: &EnvdProcess) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let pid = envd.pid;
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        while !flag.load(Ordering::Relaxed) {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                && let Some(kib) = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            {
                peak.fetch_max(kib * 1024, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak.load(Ordering::Relaxed)
    });
    (stop, handle)
}

fn mib_s(size: usize, d: Duration) -> f64 {
    size as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

pub async fn run(envd: &EnvdProcess, size: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("hearth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let envd_file = dir.join("envd.bin");
    let (_raw_server, raw_url) = raw_server(dir.join("raw.bin")).await?;
    let envd_url = envd.url(&format!("/files?path={}", envd_file.display()));
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .build()?;

    // Warm both paths (page cache, connections).
    upload(&client, &envd_url, 16 * CHUNK).await?;
    upload(&client, &raw_url, 16 * CHUNK).await?;

    let rss_before = envd.rss()?;
    let (stop, peak) = watch_rss(envd);
    let mut rows = Vec::new();
    for round in 0..3 {
        let envd_up = upload(&client, &envd_url, size).await?;
        let raw_up = upload(&client, &raw_url, size).await?;
        let envd_down = download(&client, &envd_url, size).await?;
        let raw_down = download(&client, &raw_url, size).await?;
        rows.push((round, envd_up, raw_up, envd_down, raw_down));
    }
    stop.store(true, Ordering::Relaxed);
    let peak = peak.await?;
    let _ = std::fs::remove_dir_all(&dir);

    let best = |pick: fn(&(usize, Duration, Duration, Duration, Duration)) -> Duration| {
        rows.iter().map(pick).min().unwrap_or_default()
    };
    let (eu, ru, ed, rd) = (best(|r| r.1), best(|r| r.2), best(|r| r.3), best(|r| r.4));
    println!(
        "## /files throughput, {} MiB (best of 3, interleaved)\n",
        size / (1024 * 1024)
    );
    println!("| | envd MiB/s | raw loopback HTTP MiB/s | envd / raw |\n|---|---|---|---|");
    println!(
        "| upload (octet-stream) | {:.0} | {:.0} | {:.2} |",
        mib_s(size, eu),
        mib_s(size, ru),
        ru.as_secs_f64() / eu.as_secs_f64()
    );
    println!(
        "| download | {:.0} | {:.0} | {:.2} |\n",
        mib_s(size, ed),
        mib_s(size, rd),
        rd.as_secs_f64() / ed.as_secs_f64()
    );
    println!(
        "envd RSS: {:.1} MiB before, peak {:.1} MiB during the transfers (growth {:.1} MiB)\n",
        rss_before as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        peak.saturating_sub(rss_before) as f64 / 1048576.0
    );
    Ok(())
}
