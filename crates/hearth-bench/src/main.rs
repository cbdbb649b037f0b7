//! `vm-bench`: clone latency (through hearth, and QEMU alone on the same
//! snapshot), idle clone memory and template build time. `make bench` runs it.

mod clone_latency;
mod memory;
mod node_create;
mod raw_restore;
mod stats;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use hearth_guest::Progress;
use hearth_orchestrator::{DataDir, NodeRuntime};

/// Benchmark slots: namespaces `htb-<n>`, addresses from 10.24.0.0/16.
fn bench_slots() -> anyhow::Result<hearth_net::SlotNaming> {
    Ok(hearth_net::SlotNaming::new("htb", 24)?)
}

#[derive(Debug, Parser)]
struct Args {
    /// The static envd the guest runs.
    #[arg(long, env = "HEARTH_ENVD")]
    envd: PathBuf,
    /// Clones (and raw restores) to time.
    #[arg(long, default_value_t = 20)]
    clones: usize,
    /// Idle clones to measure memory over.
    #[arg(long, default_value_t = 8)]
    memory_clones: usize,
    /// Also time a template build from an empty data directory (minutes).
    #[arg(long)]
    build_from_nothing: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let quiet = Progress::new(true);
    let runtime = NodeRuntime::open(DataDir::from_env(), bench_slots()?, &quiet).await?;
    println!(
        "accelerator: {} ({})",
        runtime.accel.accel, runtime.accel.reason
    );
    let (template, _) = runtime
        .ensure_base_template(&args.envd, &Progress::new(false))
        .await?;
    let started = Instant::now();
    runtime.ensure_base_template(&args.envd, &quiet).await?;
    println!(
        "template build from cache: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    let hearth = clone_latency::run(&runtime, &template, args.clones).await?;
    let raw = raw_restore::run(&runtime, &template, args.clones).await?;
    let ratio =
        stats::percentile(&hearth, 0.5).as_secs_f64() / stats::percentile(&raw, 0.5).as_secs_f64();
    println!("clone total p50 through hearth / QEMU alone: {ratio:.2}");
    memory::run(&runtime, &template, args.memory_clones).await?;

    let scratch = runtime
        .data
        .root()
        .join(format!("bench-empty-{}", std::process::id()));
    node_create::run(runtime, template, args.clones).await?;

    if args.build_from_nothing {
        let result = build_from_nothing(&scratch, &args.envd).await;
        let _ = std::fs::remove_dir_all(&scratch);
        let seconds = result?;
        println!(
            "template build from nothing (download, debootstrap, boot, snapshot): {seconds:.1} s"
        );
    }
    Ok(())
}

async fn build_from_nothing(root: &std::path::Path, envd: &std::path::Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let progress = Progress::new(false);
    let runtime = NodeRuntime::open(DataDir::new(root), bench_slots()?, &progress)
        .await
        .context("opening an empty data directory")?;
    runtime.ensure_base_template(envd, &progress).await?;
    Ok(started.elapsed().as_secs_f64())
}
