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

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, file] = args.as_slice()
        && mode == files::RAW_SERVER_MODE
    {
        // The baseline server runs in its own process, like envd.
        return tokio::runtime::Runtime::new()?.block_on(files::serve_raw(file.into()));
    }
    // One thread: the client should add as little as possible to what it measures.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
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
