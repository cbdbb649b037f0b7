//! The `hearth` host binary.

mod at_rest;
mod build_args;
mod code_interpreter;
mod dockerfile;
mod local_node;
mod logging;
mod node_auth;
mod sandbox_urls;
mod telemetry;
mod up;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hearth_guest::Progress;
use hearth_net::SlotNaming;
use std::time::Duration;

use hearth_orchestrator::grpc::NodeService;
use hearth_orchestrator::{DataDir, NodeLimits, NodeRuntime};
use logging::LogFormat;

/// `<prefix>:<octet>` → a slot naming.
fn parse_slots(text: &str) -> anyhow::Result<SlotNaming> {
    let (prefix, octet) = text
        .split_once(':')
        .context("--slots takes <prefix>:<octet>, e.g. hth:11")?;
    let octet: u8 = octet
        .parse()
        .with_context(|| format!("--slots: '{octet}' is not an octet"))?;
    Ok(SlotNaming::new(prefix, octet)?)
}

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
    /// hearth's own log lines on stderr: `text`, or `json` (one object a
    /// line, with the request id of API requests) for a log collector.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Send traces (OTLP over gRPC) to this collector, e.g.
    /// http://127.0.0.1:4317 (default: $OTEL_EXPORTER_OTLP_ENDPOINT; none:
    /// no traces).
    #[arg(long, global = true, value_name = "URL")]
    otlp_endpoint: Option<String>,
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
        /// The token every call to the gRPC API must carry
        /// (`authorization: Bearer <token>`), made (random, 0600) when the
        /// file is missing. Required beyond loopback; on loopback the
        /// default is <data dir>/node-token.
        #[arg(long)]
        node_token_file: Option<PathBuf>,
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
        #[command(flatten)]
        admission: AdmissionArgs,
        /// Where operators scrape Prometheus metrics (`/metrics`).
        #[arg(long, default_value = "127.0.0.1:9465")]
        metrics_listen: std::net::SocketAddr,
        /// How long a sandbox's logs and metrics are kept after it ends
        /// (and log lines at all), in hours; at most a week, as long as the
        /// control plane remembers whose sandbox it was.
        #[arg(long, default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..=168))]
        sandbox_history_hours: u64,
        /// On Ctrl-C, leave running sandboxes running (and their slots and
        /// the host firewall in place) for the next start to adopt, instead
        /// of deleting them.
        #[arg(long)]
        keep_sandboxes_on_exit: bool,
        #[command(flatten)]
        build: build_args::BuildArgs,
    },
    /// Manage the control plane's teams.
    Team {
        #[command(subcommand)]
        command: TeamCommand,
    },
    /// Run a whole node: the E2B-compatible API and sandbox proxy on
    /// 127.0.0.1:3000, with this host's orchestrator behind it.
    Up {
        /// Address of the API and the sandbox proxy.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: std::net::SocketAddr,
        /// Also serve the sandbox proxy alone on this address.
        #[arg(long)]
        proxy_listen: Option<std::net::SocketAddr>,
        /// Where operators scrape Prometheus metrics (`/metrics`) of the
        /// API and the node; not the API's port, since they name teams.
        #[arg(long, default_value = "127.0.0.1:9464")]
        metrics_listen: std::net::SocketAddr,
        /// The static envd binary (default: $HEARTH_ENVD, else next to this binary).
        #[arg(long)]
        envd: Option<PathBuf>,
        /// The database (default: $HEARTH_DATABASE_URL, else SQLite in the data directory).
        #[arg(long)]
        database_url: Option<String>,
        /// Where to write the SDK settings (default: <data dir>/sdk.env).
        #[arg(long)]
        sdk_env: Option<PathBuf>,
        /// The domain of `<port>-<sandboxID>.<domain>` sandbox hosts, served
        /// over HTTPS on the listen port (default: hearth.localhost:<port>,
        /// which resolves to this host).
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        tls: sandbox_urls::TlsArgs,
        /// Sandbox lifetime when a create names none, in seconds.
        #[arg(long, default_value_t = 300)]
        default_timeout: u64,
        /// The longest sandbox lifetime a request may ask for, in seconds.
        #[arg(long, default_value_t = 86400)]
        max_timeout: u64,
        /// Network slots: `<prefix>:<octet>` names namespaces `<prefix>-<n>`
        /// with addresses from 10.<octet>.0.0/16.
        #[arg(long, default_value = "hth:11")]
        slots: String,
        /// Network slots kept ready for new sandboxes.
        #[arg(long, default_value_t = 8)]
        slot_pool: usize,
        /// Sandboxes at once on this node.
        #[arg(long, default_value_t = 200)]
        max_sandboxes: usize,
        #[command(flatten)]
        admission: AdmissionArgs,
        /// Sandboxes the default team may run at once (creates in flight
        /// count); more get 429.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
        team_max_sandboxes: i64,
        /// Paused sandboxes and snapshots a team may keep; more get 429.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
        team_max_kept: i64,
        /// How long a sandbox's logs and metrics are kept after it ends
        /// (and log lines at all), in hours; at most a week, as long as the
        /// control plane remembers whose sandbox it was.
        #[arg(long, default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..=168))]
        sandbox_history_hours: u64,
        /// On Ctrl-C, leave sandboxes running for the next start to adopt.
        #[arg(long)]
        keep_sandboxes_on_exit: bool,
        /// Build (or find cached) the `code-interpreter-v1` template once
        /// hearth is up, with this static hearth-interpreter as its server.
        #[arg(long, value_name = "BIN")]
        code_interpreter: Option<PathBuf>,
        #[command(flatten)]
        build: build_args::BuildArgs,
    },
}

/// What a node admits: memory by what its sandboxes commit, and disk.
#[derive(Debug, clap::Args)]
struct AdmissionArgs {
    /// Host memory (MiB) kept out of what sandboxes may commit.
    #[arg(long, default_value_t = 512)]
    min_free_memory_mib: u64,
    /// Memory (MiB) each sandbox commits beyond its guest RAM (QEMU, its
    /// translation cache, page tables).
    #[arg(long, default_value_t = 64)]
    per_vm_overhead_mib: u64,
    /// How far sandboxes' committed memory may exceed the host's (after the
    /// reserve): 1.0 never overcommits; more packs denser, counting on
    /// guests not touching all their RAM.
    #[arg(long, default_value_t = 1.0, value_parser = parse_overcommit)]
    memory_overcommit: f64,
    /// Free disk (MiB) in the data directory below which creates and
    /// builds are refused.
    #[arg(long, default_value_t = 1024)]
    min_free_disk_mib: u64,
}

impl AdmissionArgs {
    /// `limits` with these settings.
    fn apply(&self, limits: NodeLimits) -> NodeLimits {
        NodeLimits {
            min_free_memory_mib: self.min_free_memory_mib,
            per_vm_overhead_mib: self.per_vm_overhead_mib,
            memory_overcommit: self.memory_overcommit,
            min_free_disk_mib: self.min_free_disk_mib,
            ..limits
        }
    }
}

/// A positive, finite ratio.
fn parse_overcommit(text: &str) -> anyhow::Result<f64> {
    let ratio: f64 = text
        .parse()
        .with_context(|| format!("'{text}' is not a number"))?;
    if !(ratio.is_finite() && ratio > 0.0) {
        bail!("the overcommit ratio must be a positive number, got {text}");
    }
    Ok(ratio)
}

#[derive(Debug, Subcommand)]
enum TeamCommand {
    /// Create a team and print its first API key.
    Create {
        name: String,
        /// The database (default: $HEARTH_DATABASE_URL, else SQLite in the data directory).
        #[arg(long)]
        database_url: Option<String>,
        /// Sandboxes the team may run at once.
        #[arg(long, default_value_t = 100)]
        max_sandboxes: i64,
    },
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// Without PATH: build the base template (guest kernel, initramfs,
    /// Debian rootfs with envd, snapshot), reusing whatever is cached. With
    /// PATH (a Dockerfile, or a directory with one): build it as template
    /// NAME through a running hearth's API, as the SDKs' `from_dockerfile`.
    Build {
        /// A Dockerfile, or the build context directory holding one.
        path: Option<PathBuf>,
        /// The template's name (`name` or `name:tag`), with PATH.
        #[arg(long, requires = "path")]
        name: Option<String>,
        #[arg(long, default_value_t = 2)]
        cpu_count: u32,
        #[arg(long, default_value_t = 1024)]
        memory_mb: u32,
        /// The API (default: $E2B_API_URL, else <data dir>/sdk.env's).
        #[arg(long)]
        api_url: Option<String>,
        /// The API key (default: $E2B_API_KEY, else <data dir>/sdk.env's).
        #[arg(long)]
        api_key: Option<String>,
        /// The static envd binary to install in the guest
        /// (default: $HEARTH_ENVD, else `envd` next to this binary).
        #[arg(long)]
        envd: Option<PathBuf>,
    },
    /// Build (or find cached) the code-interpreter-v1 template, as
    /// `hearth up --code-interpreter` does, through a running hearth's API.
    CodeInterpreter {
        /// The static hearth-interpreter binary to put in the template.
        #[arg(long)]
        interpreter: PathBuf,
        /// The API (default: $E2B_API_URL, else <data dir>/sdk.env's).
        #[arg(long)]
        api_url: Option<String>,
        /// The API key (default: $E2B_API_KEY, else <data dir>/sdk.env's).
        #[arg(long)]
        api_key: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let otlp_endpoint = cli
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|endpoint| !endpoint.is_empty());
    let exporter = logging::install(cli.log_format, otlp_endpoint.as_deref())?;
    let outcome = run(cli).await;
    logging::finish(exporter).await;
    outcome
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data = cli.data_dir.map_or_else(DataDir::from_env, DataDir::new);
    match cli.command {
        Command::Doctor => doctor(data).await,
        Command::Template {
            command:
                TemplateCommand::Build {
                    path: Some(path),
                    name,
                    cpu_count,
                    memory_mb,
                    api_url,
                    api_key,
                    ..
                },
        } => {
            let name = name.context("--name is required with a Dockerfile")?;
            let api = api_target(&data, api_url, api_key)?;
            build_dockerfile(&api, &path, &name, cpu_count, memory_mb).await
        }
        Command::Template {
            command: TemplateCommand::Build { envd, .. },
        } => build_template(data, envd).await,
        Command::Template {
            command:
                TemplateCommand::CodeInterpreter {
                    interpreter,
                    api_url,
                    api_key,
                },
        } => {
            let api = api_target(&data, api_url, api_key)?;
            let started = Instant::now();
            let id =
                code_interpreter::build(&api, &interpreter, &|line| println!("{line}")).await?;
            println!(
                "template '{}' ({id}) built in {:.1} s",
                code_interpreter::TEMPLATE,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Node {
            listen,
            node_token_file,
            envd,
            max_starting,
            max_sandboxes,
            slot_pool,
            admission,
            metrics_listen,
            keep_sandboxes_on_exit,
            sandbox_history_hours,
            build,
        } => {
            let limits = admission.apply(NodeLimits {
                max_starting,
                max_sandboxes,
                ..NodeLimits::default()
            });
            let options = local_node::NodeOptions {
                slot_pool,
                keep_sandboxes_on_exit,
                history_retention: Duration::from_secs(sandbox_history_hours * 3600),
            };
            // Refused before anything is bound or built.
            let token = node_auth::node_token(&data, listen, node_token_file.as_deref())?;
            run_node(
                data,
                (listen, token, metrics_listen),
                envd_path(envd)?,
                limits,
                options,
                build.settings()?,
            )
            .await
        }
        Command::Team {
            command:
                TeamCommand::Create {
                    name,
                    database_url,
                    max_sandboxes,
                },
        } => {
            let url = up::database_url(&data, database_url)?;
            let store = hearth_api::Store::open(&url).await?;
            let team = store.create_team(&name, max_sandboxes).await?;
            let (_, key) = store.create_api_key(&team.team_id, "first key").await?;
            store.close().await;
            println!("team '{name}' ({}): API key {key}", team.team_id);
            Ok(())
        }
        Command::Up {
            listen,
            proxy_listen,
            metrics_listen,
            envd,
            database_url,
            sdk_env,
            domain,
            tls,
            default_timeout,
            max_timeout,
            slots,
            slot_pool,
            max_sandboxes,
            admission,
            team_max_sandboxes,
            team_max_kept,
            sandbox_history_hours,
            keep_sandboxes_on_exit,
            code_interpreter,
            build,
        } => {
            let domain = domain.unwrap_or_else(|| sandbox_urls::default_domain(listen));
            let tls = sandbox_urls::tls(&data, &tls, &domain, listen)?;
            let options = up::UpOptions {
                build: build.settings()?,
                tls: std::sync::Arc::new(tls),
                listen,
                proxy_listen,
                metrics_listen,
                envd: envd_path(envd)?,
                naming: parse_slots(&slots)?,
                database_url: up::database_url(&data, database_url)?,
                sdk_env,
                api: hearth_api::ApiConfig {
                    default_timeout: Duration::from_secs(default_timeout),
                    max_timeout: Duration::from_secs(max_timeout),
                    domain: Some(domain),
                    team_max_sandboxes,
                    team_max_kept,
                    max_concurrent_builds: build.max_concurrent_builds,
                    upload_cache_bytes: build.upload_cache_mib << 20,
                    ..hearth_api::ApiConfig::default()
                },
                limits: admission.apply(NodeLimits {
                    max_sandboxes,
                    ..NodeLimits::default()
                }),
                node: local_node::NodeOptions {
                    slot_pool,
                    keep_sandboxes_on_exit,
                    history_retention: Duration::from_secs(sandbox_history_hours * 3600),
                },
                code_interpreter,
            };
            up::run(data, options).await
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
    match runtime.vmm.jail() {
        Some(jail) => println!(
            "vm jail:        uids {}.., cgroups {}",
            jail.config().uid_base,
            jail.cgroup_layout()
                .map_or("none (no limits)", |l| l.version())
        ),
        None => println!("vm jail:        off (not root)"),
    }
    let domain = sandbox_urls::default_domain(([127, 0, 0, 1], 3000).into());
    match sandbox_urls::sandbox_hosts_resolve(&domain).await {
        Ok(()) => println!("sandbox hosts:  *.hearth.localhost resolve to loopback"),
        Err(why) => println!(
            "sandbox hosts:  {why}; programs here cannot reach https://<port>-<id>.hearth.localhost \
             (browsers can): install libnss-myhostname and put 'myhostname' on the hosts line of \
             /etc/nsswitch.conf (`make up` does both)"
        ),
    }
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

async fn run_node(
    data: DataDir,
    (listen, token, metrics_listen): (
        std::net::SocketAddr,
        node_auth::TokenSource,
        std::net::SocketAddr,
    ),
    envd: PathBuf,
    limits: NodeLimits,
    options: local_node::NodeOptions,
    build: hearth_orchestrator::build::BuildSettings,
) -> anyhow::Result<()> {
    let progress = Progress::new(false);
    // Bind first: a port in use should fail before the template work.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let node = local_node::LocalNode::start(
        data,
        node_slots()?,
        &envd,
        limits,
        options,
        build,
        &progress,
    )
    .await?;
    eprintln!(
        "node gRPC API on {listen}; calls need the token in {}{}",
        token.path.display(),
        if token.created { " (made now)" } else { "" }
    );
    let metrics = telemetry::serve(
        metrics_listen,
        telemetry::Exposition::new(None, Some(node.manager.clone())),
    )
    .await;
    let node_id = format!("node-{}", std::process::id());
    let served = NodeService::new(node.manager.clone(), node_id)
        .with_builder(node.builder.clone())
        .with_token(token.token)
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    node.stop().await?;
    served.context("serving gRPC")
}

/// `--api-url`/`--api-key`, else `$E2B_API_URL`/`$E2B_API_KEY`, else the
/// data directory's `sdk.env` (what `hearth up` wrote).
fn api_target(
    data: &DataDir,
    url: Option<String>,
    key: Option<String>,
) -> anyhow::Result<dockerfile::ApiTarget> {
    let sdk_env = std::fs::read_to_string(data.root().join("sdk.env")).unwrap_or_default();
    let from_file = |name: &str| {
        sdk_env.lines().find_map(|line| {
            let line = line.trim().trim_start_matches("export ");
            let value = line.strip_prefix(name)?.strip_prefix('=')?;
            Some(value.trim_matches(['"', '\'']).to_owned())
        })
    };
    let pick = |given: Option<String>, name: &str| {
        given
            .or_else(|| std::env::var(name).ok())
            .or_else(|| from_file(name))
            .with_context(|| format!("no {name}: pass it, set it, or run `hearth up` first"))
    };
    Ok(dockerfile::ApiTarget {
        url: pick(url, "E2B_API_URL")?.trim_end_matches('/').to_owned(),
        key: pick(key, "E2B_API_KEY")?,
    })
}

async fn build_dockerfile(
    api: &dockerfile::ApiTarget,
    path: &std::path::Path,
    name: &str,
    cpu_count: u32,
    memory_mb: u32,
) -> anyhow::Result<()> {
    let (file, context) = if path.is_dir() {
        (path.join("Dockerfile"), path.to_owned())
    } else {
        let context = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_owned();
        (path.to_owned(), context)
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let definition = dockerfile::parse(&text)?;
    let started = Instant::now();
    let id = dockerfile::build(api, &definition, &context, name, cpu_count, memory_mb).await?;
    println!(
        "template '{name}' ({id}) built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
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
