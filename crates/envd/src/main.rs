//! The `envd` binary: parses flags, starts logging and serves.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use clap::Parser;
use envd::state::{Envd, Options};

#[derive(Debug, Parser)]
#[command(name = "envd", version = envd::VERSION, about = "hearth's in-sandbox daemon")]
struct Args {
    /// TCP port to listen on.
    #[arg(long, default_value_t = envd::DEFAULT_PORT)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    listen: IpAddr,
    /// Let `/init` set the system clock (pass this inside a VM only).
    #[arg(long)]
    clock_sync: bool,
    /// Let `/init` set the hostname (hearth's `hostname` field; VM only).
    #[arg(long)]
    set_hostname: bool,
    /// Relay services listening only on loopback to the guest's own
    /// addresses (VM only).
    #[arg(long)]
    forward_local_ports: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENVD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .event_format(envd::log_line::FlatJson)
        .with_writer(std::io::stderr)
        .init();
    let address = SocketAddr::new(args.listen, args.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(%address, version = envd::VERSION, "envd listening");
    let envd = Envd::new(Options {
        clock_sync: args.clock_sync,
        set_hostname: args.set_hostname,
        ..Options::default()
    });
    if args.forward_local_ports {
        tokio::spawn(envd::port_forward::run(
            envd::port_forward::ScanPace::default(),
            envd.process_started.clone(),
        ));
    }
    envd::server::serve(listener, envd, shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("envd shutting down");
}
