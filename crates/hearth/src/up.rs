//! `hearth up`: a whole node in one process. The node orchestrator serves
//! its gRPC API on a loopback port only this process uses, and the
//! control plane (REST API and sandbox proxy) calls it there, the same way
//! it calls the nodes of a cluster.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hearth_api::store::TemplateRecord;
use hearth_api::{ApiConfig, AppState, Node, Nodes, Store};
use hearth_guest::Progress;
use hearth_net::SlotNaming;
use hearth_orchestrator::grpc::NodeService;
use hearth_orchestrator::node_token::NodeToken;
use hearth_orchestrator::{DataDir, NodeLimits};
use hearth_tls::ServerTls;

use crate::at_rest::SdkEnv;
use crate::local_node::{LocalNode, NodeOptions};
use crate::sandbox_urls::TrustFiles;

/// The name the store gives this process's node.
const LOCAL_NODE: &str = "local";
/// How long open connections (streams, watches) may keep Ctrl-C waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often certificate files are checked for renewals.
const TLS_REFRESH: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub listen: SocketAddr,
    /// A second port that carries sandbox traffic only.
    pub proxy_listen: Option<SocketAddr>,
    /// Where `/metrics` (Prometheus) is served.
    pub metrics_listen: SocketAddr,
    pub envd: PathBuf,
    pub naming: SlotNaming,
    pub database_url: String,
    /// Where the SDK settings go (default `<data>/sdk.env`).
    pub sdk_env: Option<PathBuf>,
    pub api: ApiConfig,
    pub limits: NodeLimits,
    pub node: NodeOptions,
    pub build: hearth_orchestrator::build::BuildSettings,
    /// The certificates HTTPS connections to the listen ports get.
    pub tls: Arc<ServerTls>,
    /// The static hearth-interpreter to build `code-interpreter-v1` with,
    /// once hearth is up.
    pub code_interpreter: Option<PathBuf>,
}

pub async fn run(data: DataDir, options: UpOptions) -> anyhow::Result<()> {
    let progress = Progress::new(false);
    // Bind first: a port in use should fail before minutes of template work.
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding {}", options.listen))?;
    let proxy_listener = match options.proxy_listen {
        Some(address) => Some((
            address,
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the proxy port {address}"))?,
        )),
        None => None,
    };
    let sdk_env = options
        .sdk_env
        .clone()
        .unwrap_or_else(|| data.root().join("sdk.env"));
    let database_url = options.database_url.clone();
    let uploads_dir = data.root().join("v1/uploads");
    let default_team = default_team_id(&data)?;
    // The node's API is on loopback, but other local users could reach it.
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let token = crate::node_auth::node_token(&data, loopback, None)?.token;
    let node = LocalNode::start(
        data,
        options.naming.clone(),
        &options.envd,
        options.limits.clone(),
        options.node,
        options.build.clone(),
        &progress,
    )
    .await?;
    let result = serve(
        &node,
        (listener, proxy_listener),
        &uploads_dir,
        &database_url,
        (&sdk_env, token, &default_team),
        &options,
        &progress,
    )
    .await;
    let stopped = node.stop().await;
    result.and(stopped)
}

/// `--database-url`, else `$HEARTH_DATABASE_URL`, else SQLite in the data
/// directory (created when missing, private: see `at_rest.rs`).
pub fn database_url(data: &DataDir, given: Option<String>) -> anyhow::Result<String> {
    if let Some(url) = given.or_else(|| std::env::var("HEARTH_DATABASE_URL").ok()) {
        return Ok(url);
    }
    crate::at_rest::private_sqlite(data)
}

type Listeners = (
    tokio::net::TcpListener,
    Option<(SocketAddr, tokio::net::TcpListener)>,
);

async fn serve(
    node: &LocalNode,
    (listener, proxy_listener): Listeners,
    uploads_dir: &Path,
    database_url: &str,
    (sdk_env, token, default_team): (&Path, NodeToken, &str),
    options: &UpOptions,
    progress: &Progress,
) -> anyhow::Result<()> {
    let store = Store::open(database_url)
        .await
        .with_context(|| format!("opening the database {database_url}"))?;
    register_base_template(&store, node).await?;
    let api_url = format!("http://{}", options.listen);
    let (key, new_key) = ensure_team(
        &store,
        sdk_env,
        default_team,
        options.api.team_max_sandboxes,
    )
    .await?;
    let trust = crate::sandbox_urls::trust_files(&options.tls)?;
    let domain = options.api.domain.clone().unwrap_or_default();
    crate::at_rest::write_sdk_env(
        sdk_env,
        &SdkEnv {
            api_url: &api_url,
            domain: &domain,
            key: &key,
            trust: trust.as_ref(),
        },
    )?;

    // The node's gRPC API, on a loopback port of its own.
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the node's gRPC port")?;
    let grpc_address = grpc.local_addr()?;
    let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let node_id = format!("node-{}", std::process::id());
    let grpc_task = tokio::spawn(
        NodeService::new(node.manager.clone(), node_id)
            .with_builder(node.builder.clone())
            .with_token(token.clone())
            .serve(grpc, async {
                let _ = grpc_stopped.await;
            }),
    );
    let nodes = Nodes::new(vec![
        Node::new(LOCAL_NODE, &format!("http://{grpc_address}"))?.with_token(token),
    ]);
    // Template build uploads: stored by the control plane, read by the node
    // (same host). A fresh signing key each start: old upload URLs expire.
    let uploads = hearth_api::Uploads::with_random_key(uploads_dir)
        .map_err(|e| anyhow::anyhow!("making the upload signing key: {e}"))?;
    let mut api = options.api.clone();
    api.public_url.get_or_insert_with(|| api_url.clone());
    let state = Arc::new(AppState::new(store.clone(), nodes, api, uploads));

    progress.say(&format!("hearth is up on {api_url}"));
    println!("hearth is up: the API on {api_url}, sandboxes at https://<port>-<id>.{domain}");
    println!("{}", key_line(&key, new_key, sdk_env));
    println!(
        "  settings: source {} (E2B_API_URL, E2B_DOMAIN, E2B_API_KEY{})",
        sdk_env.display(),
        if trust.is_some() {
            ", SSL_CERT_FILE, NODE_EXTRA_CA_CERTS"
        } else {
            ""
        }
    );
    if let Some(trust) = &trust {
        println!("{}", trust_lines(trust));
    }
    println!(
        "  then:     python3 -c 'from e2b import Sandbox; print(Sandbox.create().commands.run(\"uname -a\").stdout)'"
    );
    println!("Ctrl-C stops hearth and kills its sandboxes.");

    let metrics = crate::telemetry::serve(
        options.metrics_listen,
        crate::telemetry::Exposition::new(Some(state.clone()), Some(node.manager.clone())),
    )
    .await;
    let tls_config = options.tls.config();
    let proxy = proxy_listener.map(|(address, listener)| {
        println!("  sandbox traffic alone also on {address} (HTTP and HTTPS)");
        tokio::spawn(hearth_api::server::serve_proxy(
            state.clone(),
            listener,
            Some(tls_config.clone()),
        ))
    });
    let refresh = tokio::spawn({
        let tls = options.tls.clone();
        async move { tls.refresh(TLS_REFRESH).await }
    });
    let interpreter_build = options.code_interpreter.clone().map(|binary| {
        let api = crate::dockerfile::ApiTarget {
            url: api_url.clone(),
            key: key.clone(),
        };
        tokio::spawn(build_code_interpreter(api, binary))
    });
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut api = tokio::spawn(hearth_api::server::serve(
        state.clone(),
        listener,
        Some(tls_config),
        async {
            let _ = api_stopped.await;
        },
    ));
    let served = tokio::select! {
        served = &mut api => served,
        _ = shutdown_signal() => {
            eprintln!("stopping ...");
            let _ = stop_api.send(());
            // Streams that stay open (a watch, a long command) do not keep
            // the node from stopping.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut api).await {
                Ok(served) => served,
                Err(_) => {
                    api.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    if let Some(proxy) = proxy {
        proxy.abort();
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if let Some(build) = interpreter_build {
        build.abort();
    }
    refresh.abort();
    let _ = stop_grpc.send(());
    let _ = grpc_task.await;
    if !options.node.keep_sandboxes_on_exit {
        // The node kills every running sandbox as it stops; so are their
        // rows. Paused ones stay on its disk for the next start.
        for record in store.sandboxes_on(LOCAL_NODE).await? {
            if !record.paused {
                store.delete_sandbox(&record.sandbox_id).await?;
            }
        }
    }
    store.close().await;
    served
        .context("the API task failed")?
        .context("serving the API")
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// Makes the node's base template known to the API, as `base`.
async fn register_base_template(store: &Store, node: &LocalNode) -> anyhow::Result<()> {
    let meta = &node.template.meta;
    let disk = node.template.disk_size() / (1024 * 1024);
    store
        .put_template(&TemplateRecord {
            template_id: meta.name.clone(),
            team_id: None,
            public: true,
            build_id: meta.build_id.clone(),
            cpu_count: i64::from(meta.vcpus),
            memory_mb: i64::from(meta.memory_mib),
            disk_size_mb: i64::try_from(disk).unwrap_or(i64::MAX),
            envd_version: meta.envd_version.clone(),
            created_at: 0,
            updated_at: 0,
            last_spawned_at: None,
            spawn_count: 0,
            aliases: vec![meta.name.clone()],
        })
        .await?;
    Ok(())
}

/// Where the local CA is and how to trust it, for people and browsers.
fn trust_lines(trust: &TrustFiles) -> String {
    format!(
        "  TLS:      certificates from hearth's local CA {ca}\n\
         \x20           sdk.env makes the SDKs trust it; curl: --cacert {ca}; a browser: import it as an\n\
         \x20           authority (Chrome: Settings > Privacy and security > Security > Manage certificates)",
        ca = trust.ca.display()
    )
}

/// The API key is shown once, when it is made; after that it stays out of
/// terminals and logs, and `sdk.env` holds it.
fn key_line(key: &str, new_key: bool, sdk_env: &Path) -> String {
    if new_key {
        format!("  API key:  {key} (shown this once; it is also in sdk.env)")
    } else {
        format!("  API key:  in {} (E2B_API_KEY)", sdk_env.display())
    }
}

/// The API key for the SDK settings, and whether it is new: the one
/// `sdk.env` holds while it is still valid, else a new one (and on first
/// start, a team for it). That team gets `max_sandboxes` at every start, so
/// the flag's value holds.
async fn ensure_team(
    store: &Store,
    sdk_env: &Path,
    default_team: &str,
    max_sandboxes: i64,
) -> anyhow::Result<(String, bool)> {
    if let Some(key) = read_key(sdk_env)
        && let Some((team, _)) = store.authenticate(&key).await?
    {
        store
            .set_team_max_sandboxes(&team.team_id, max_sandboxes)
            .await?;
        return Ok((key, false));
    }
    let team = match store.teams().await?.into_iter().next() {
        Some(team) => {
            store
                .set_team_max_sandboxes(&team.team_id, max_sandboxes)
                .await?;
            team
        }
        None => {
            store
                .create_team_with_id(default_team, "default", max_sandboxes)
                .await?
        }
    };
    let (_, key) = store.create_api_key(&team.team_id, "hearth up").await?;
    Ok((key, true))
}

/// Builds `code-interpreter-v1` in the background, its log in hearth's
/// (debug), its start and end on the console.
async fn build_code_interpreter(api: crate::dockerfile::ApiTarget, binary: PathBuf) {
    println!(
        "{}: building (minutes the first time, then from the cache)",
        crate::code_interpreter::TEMPLATE
    );
    let log = |line: &str| tracing::debug!(target: "code_interpreter_build", "{line}");
    let started = std::time::Instant::now();
    match crate::code_interpreter::build(&api, &binary, &log).await {
        Ok(id) => println!(
            "{}: ready ({id}, {:.0} s); `from e2b_code_interpreter import Sandbox` works",
            crate::code_interpreter::TEMPLATE,
            started.elapsed().as_secs_f64()
        ),
        Err(error) => eprintln!(
            "{}: the build failed: {error:#}",
            crate::code_interpreter::TEMPLATE
        ),
    }
}

/// The ID of the team `hearth up` makes in an empty database: kept in the
/// data directory, so that a node's default team is the same team whatever
/// database it starts with, and finds its cached template build layers (they
/// are scoped to a team).
fn default_team_id(data: &DataDir) -> anyhow::Result<String> {
    let path = data.root().join("default-team-id");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(id) = uuid::Uuid::parse_str(text.trim())
    {
        return Ok(id.to_string());
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

fn read_key(sdk_env: &Path) -> Option<String> {
    let text = std::fs::read_to_string(sdk_env).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("export E2B_API_KEY="))
        .map(|key| key.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_printed_only_when_it_is_new() {
        let sdk_env = Path::new("/var/lib/hearth/sdk.env");
        let first = key_line("e2b_0123", true, sdk_env);
        assert!(first.contains("e2b_0123"), "{first}");
        let later = key_line("e2b_0123", false, sdk_env);
        assert!(!later.contains("e2b_0123"), "{later}");
        assert!(later.contains("/var/lib/hearth/sdk.env"), "{later}");
    }

    #[tokio::test]
    async fn a_new_database_gets_the_data_directorys_default_team() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let data = DataDir::new(dir.path());
        let team = default_team_id(&data)?;
        assert_eq!(default_team_id(&data)?, team);
        for database in ["one.db", "two.db"] {
            let url = format!("sqlite://{}?mode=rwc", dir.path().join(database).display());
            let store = Store::open(&url).await?;
            let sdk_env = dir.path().join(format!("{database}.env"));
            let (key, new) = ensure_team(&store, &sdk_env, &team, 5).await?;
            assert!(new);
            let (found, _) = store
                .authenticate(&key)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no team"))?;
            assert_eq!(found.team_id, team);
        }
        Ok(())
    }
}
