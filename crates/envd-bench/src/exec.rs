//! Exec round trip of `/bin/true`: envd `Start` → `end` event, next to a
//! native spawn + wait (std uses posix_spawn for this command).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::envd_process::{EnvdProcess, envelope};
use crate::stats::{ms, summarize};

async fn envd_exec(envd: &EnvdProcess, body: &[u8]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = envd
        .client
        .post(envd.url("/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .body(body.to_vec())
        .send()
        .await?;
    let bytes = response.bytes().await?;
    let elapsed = started.elapsed();
    if !bytes.windows(5).any(|w| w == b"\"end\"") {
        bail!("no end event in {:?}", String::from_utf8_lossy(&bytes));
    }
    Ok(elapsed)
}

fn native_exec() -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = std::process::Command::new("/bin/true")
        .status()
        .context("spawning /bin/true")?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("/bin/true failed");
    }
    Ok(elapsed)
}

pub async fn run(envd: &EnvdProcess, runs: usize) -> anyhow::Result<()> {
    let body = envelope(br#"{"process":{"cmd":"/bin/true"},"stdin":false}"#);
    for _ in 0..20 {
        envd_exec(envd, &body).await?;
        native_exec()?;
    }
    let mut through_envd = Vec::with_capacity(runs);
    let mut native = Vec::with_capacity(runs);
    // Interleaved so both see the same machine load.
    for _ in 0..runs {
        through_envd.push(envd_exec(envd, &body).await?);
        native.push(native_exec()?);
    }
    let e = summarize(through_envd);
    let n = summarize(native);
    println!("## Exec round trip of /bin/true ({runs} runs)\n");
    println!("| | p50 | p99 | mean |\n|---|---|---|---|");
    println!(
        "| envd Start → end (HTTP/1.1, keep-alive) | {} | {} | {} |",
        ms(e.p50),
        ms(e.p99),
        ms(e.mean)
    );
    println!(
        "| native spawn + wait | {} | {} | {} |",
        ms(n.p50),
        ms(n.p99),
        ms(n.mean)
    );
    println!(
        "| ratio | {:.2} | {:.2} | {:.2} |\n",
        e.p50.as_secs_f64() / n.p50.as_secs_f64(),
        e.p99.as_secs_f64() / n.p99.as_secs_f64(),
        e.mean.as_secs_f64() / n.mean.as_secs_f64()
    );
    Ok(())
}
