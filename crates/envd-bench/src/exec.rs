//! Exec round trip of `/bin/true`: envd `Start` → `end` event, next to a
//! native spawn + wait (std uses posix_spawn for this command).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::envd_process::{EnvdProcess, envelope};
use crate::stats::{ms, summarize};

/// `Authorization` value selecting the account `user`.
const AS_USER: &str = "Basic dXNlcjo=";

async fn envd_exec(
    envd: &EnvdProcess,
    body: &[u8],
    user: Option<&str>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut request = envd
        .client
        .post(envd.url("/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .body(body.to_vec());
    if let Some(user) = user {
        request = request.header("authorization", user);
    }
    let response = request.send().await?;
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
    // The unprivileged account, when the machine has one (the conformance setup creates it).
    let has_user = std::fs::read_to_string("/etc/passwd")?
        .lines()
        .any(|l| l.starts_with("user:"));
    for _ in 0..20 {
        envd_exec(envd, &body, None).await?;
        native_exec()?;
    }
    let mut as_root = Vec::with_capacity(runs);
    let mut as_user = Vec::with_capacity(runs);
    let mut native = Vec::with_capacity(runs);
    // Interleaved so all see the same machine load.
    for _ in 0..runs {
        as_root.push(envd_exec(envd, &body, None).await?);
        if has_user {
            as_user.push(envd_exec(envd, &body, Some(AS_USER)).await?);
        }
        native.push(native_exec()?);
    }
    let n = summarize(native);
    println!("## Exec round trip of /bin/true ({runs} runs)\n");
    println!("| | p50 | p99 | mean | p50 ratio | p99 ratio |\n|---|---|---|---|---|---|");
    let row = |name: &str, s: &crate::stats::Summary| {
        println!(
            "| {name} | {} | {} | {} | {:.2} | {:.2} |",
            ms(s.p50),
            ms(s.p99),
            ms(s.mean),
            s.p50.as_secs_f64() / n.p50.as_secs_f64(),
            s.p99.as_secs_f64() / n.p99.as_secs_f64()
        );
    };
    row("native spawn + wait", &n);
    row(
        "envd Start → end, as envd's own user (root)",
        &summarize(as_root),
    );
    if has_user {
        row(
            "envd Start → end, as `user` (privilege drop)",
            &summarize(as_user),
        );
    }
    println!();
    Ok(())
}
