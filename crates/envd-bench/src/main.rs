//! `make bench`: measures envd against native baselines in the same run, so
//! ratios stay meaningful on shared, noisy machines.
//!
//! Starts the envd binary named by `ENVD_BIN` on a loopback port and prints
//! one markdown table per benchmark.

mod envd_process;
mod exec;
mod files;
mod pty;
mod stats;

use anyhow::Context;

// One thread: the client should add as little as possible to what it measures.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let envd_bin = std::env::var("ENVD_BIN").context("ENVD_BIN must name the envd binary")?;
    let runs: usize = std::env::var("BENCH_EXEC_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let envd = envd_process::EnvdProcess::start(&envd_bin).await?;
    println!("# envd benchmarks\n");
    println!(
        "envd: {envd_bin}; host: {} cores\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    exec::run(&envd, runs).await?;
    files::run(&envd, 256 * 1024 * 1024).await?;
    pty::run(&envd, 10 * 1024 * 1024).await?;
    Ok(())
}
