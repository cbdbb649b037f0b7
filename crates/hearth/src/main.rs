//! The `hearth` host binary.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hearth_guest::Progress;
use hearth_net::SlotNaming;
use std::sync::Arc;
use std::time::Duration;

use hearth_orchestrator::grpc::NodeService;
use hearth_orchestrator::{DataDir, NodeLimits, NodeRuntime, SandboxManager};

/// A node's own network slots: namespaces `hth-<n>`, addresses from 10.11.0.0/16.
fn node_slots() -> anyhow::Result<SlotNaming> {
    Ok(SlotNaming::new("hth", 11)?)
}

#[derive(Debug, Parser)]
#[command(
    name = "hearth",
    version,
    about = "Self-hosted sandboxes for AI agents"
)]
struct Cli {
    /// The node's data directory (default: $HEARTH_DATA_DIR or /var/lib/hearth).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what this host can run VMs with, and why.
    Doctor,
    /// Manage templates.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Run this node's orchestrator: the base template and the gRPC API the
    /// control plane calls.
    Node {
        /// Address of the gRPC API.
        #[arg(long, default_value = "127.0.0.1:5008")]
        listen: std::net::SocketAddr,
        /// The static envd binary (default: $HEARTH_ENVD, else next to this binary).
        #[arg(long)]
        envd: Option<PathBuf>,
        /// Creates in flight at once.
        #[arg(long, default_value_t = 3)]
        max_starting: usize,
        /// Sandboxes at once.
        #[arg(long, default_value_t = 200)]
        max_sandboxes: usize,
        /// Network slots kept ready for new sandboxes.
        #[arg(long, default_value_t = 8)]
        slot_pool: usize,
        /// Host memory (MiB) that must stay available for a create to start.
        #[arg(long, default_value_t = 512)]
        min_free_memory_mib: u64,
        /// On Ctrl-C, leave running sandboxes running (and their slots and
        /// the host firewall in place) for the next start to adopt, instead
        /// of deleting them.
        #[arg(long)]
        keep_sandboxes_on_exit: bool,
    },
    /// Run a whole node on 127.0.0.1:3000.
    Up,
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// Build the base template (guest kernel, initramfs, Debian rootfs with
    /// envd, snapshot), reusing whatever is cached.
    Build {
        /// The static envd binary to install in the guest
        /// (default: $HEARTH_ENVD, else `envd` next to this binary).
        #[arg(long)]
        envd: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,qapi=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let data = cli.data_dir.map_or_else(DataDir::from_env, DataDir::new);
    match cli.command {
        Command::Doctor => doctor(data).await,
        Command::Template {
            command: TemplateCommand::Build { envd },
        } => build_template(data, envd).await,
        Command::Node {
            listen,
            envd,
            max_starting,
            max_sandboxes,
            slot_pool,
            min_free_memory_mib,
            keep_sandboxes_on_exit,
        } => {
            let limits = NodeLimits {
                max_starting,
                max_sandboxes,
                min_free_memory_mib,
                ..NodeLimits::default()
            };
            let options = NodeOptions {
                slot_pool,
                keep_sandboxes_on_exit,
            };
            run_node(data, listen, envd_path(envd)?, limits, options).await
        }
        Command::Up => {
            bail!("`hearth up` is not yet available: the control plane is still to come")
        }
    }
}

async fn doctor(data: DataDir) -> anyhow::Result<()> {
    let progress = Progress::new(false);
    let runtime = NodeRuntime::open(data, node_slots()?, &progress).await?;
    println!("data directory: {}", runtime.data.root().display());
    println!("qemu:           {}", runtime.accel.qemu_version);
    println!("host kernel:    {}", runtime.accel.host_kernel);
    println!(
        "accelerator:    {} ({})",
        runtime.accel.accel, runtime.accel.reason
    );
    Ok(())
}

/// `--envd`, else `$HEARTH_ENVD`, else `envd` next to this binary.
fn envd_path(envd: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let envd = match envd.or_else(|| std::env::var_os("HEARTH_ENVD").map(PathBuf::from)) {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("envd"))
            .context("locating envd")?,
    };
    if !envd.is_file() {
        bail!("envd binary {} not found (pass --envd)", envd.display());
    }
    Ok(envd)
}

/// How `hearth node` runs, besides its limits.
#[derive(Debug, Clone, Copy)]
struct NodeOptions {
    slot_pool: usize,
    keep_sandboxes_on_exit: bool,
}

async fn run_node(
    data: DataDir,
    listen: std::net::SocketAddr,
    envd: PathBuf,
    limits: NodeLimits,
    options: NodeOptions,
) -> anyhow::Result<()> {
    let progress = Progress::new(false);
    let mut runtime = NodeRuntime::open(data, node_slots()?, &progress).await?;
    eprintln!(
        "accelerator: {} ({})",
        runtime.accel.accel, runtime.accel.reason
    );
    let (template, _) = runtime.ensure_base_template(&envd, &progress).await?;
    if options.keep_sandboxes_on_exit {
        // A terminal's Ctrl-C must reach the node only, not its VMs.
        runtime.vmm = runtime.vmm.clone().with_own_process_groups();
    }
    // Sandboxes of a previous run that still run are taken over; whatever
    // else it left is removed.
    let recovery = runtime.recover().await?;
    let reclaimed = recovery.reclaimed;
    runtime.prepare_host_network().await?;
    runtime.keep_slots_ready(options.slot_pool);
    let manager = Arc::new(SandboxManager::new(Arc::new(runtime), limits));
    manager.register_template(template);
    let adopted = manager.adopt(recovery.adopted).await;
    if adopted > 0 || reclaimed != Default::default() {
        eprintln!(
            "previous run: adopted {adopted} running sandboxes; cleaned up {} sandboxes ({} QEMU processes) and {} network slots",
            reclaimed.run_dirs, reclaimed.processes, reclaimed.slots
        );
    }
    let reaper = tokio::spawn(manager.clone().reap(Duration::from_secs(1)));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!("node gRPC API on {listen}");
    let node_id = format!("node-{}", std::process::id());
    let served = NodeService::new(manager.clone(), node_id)
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    reaper.abort();
    if options.keep_sandboxes_on_exit {
        let kept = manager.detach_all().await;
        manager.runtime().slots.drain().await?;
        // The host firewall and masquerade stay: the sandboxes still run.
        eprintln!("left {kept} sandboxes running for the next start to adopt");
    } else {
        manager.delete_all().await;
        manager.runtime().slots.drain().await?;
        manager.runtime().remove_host_network().await?;
    }
    served.context("serving gRPC")
}

async fn build_template(data: DataDir, envd: Option<PathBuf>) -> anyhow::Result<()> {
    let envd = envd_path(envd)?;
    let started = Instant::now();
    let progress = Progress::new(false);
    let runtime = NodeRuntime::open(data, node_slots()?, &progress).await?;
    progress.say(&format!(
        "accelerator: {} ({})",
        runtime.accel.accel, runtime.accel.reason
    ));
    let (template, built) = runtime.ensure_base_template(&envd, &progress).await?;
    let meta = &template.meta;
    println!(
        "template '{}' {} in {:.1} s: {} ({}), {} vCPUs, {} MiB, envd {}, boot {:.1} s, at {}",
        meta.name,
        if built { "built" } else { "reused" },
        started.elapsed().as_secs_f64(),
        meta.build_id,
        meta.accel,
        meta.vcpus,
        meta.memory_mib,
        meta.envd_version,
        meta.boot_seconds,
        template.dir.display()
    );
    Ok(())
}
