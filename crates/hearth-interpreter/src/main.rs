//! `hearth-interpreter`: the code interpreter server of a sandbox.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hearth_interpreter::context::{ContextError, Contexts, SandboxEnv};
use hearth_interpreter::envd::Envd;
use hearth_interpreter::execution::Pace;
use hearth_interpreter::http::{App, router};
use hearth_interpreter::kernel::{KernelError, KernelSettings};
use hearth_interpreter::language::{Language, check_env_name};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The code interpreter server: E2B's /execute and /contexts over Jupyter kernels"
)]
struct Args {
    #[arg(long, default_value = "0.0.0.0:49999")]
    listen: SocketAddr,
    /// envd's address (sandbox-wide environment variables and the access
    /// token); `none` for no envd.
    #[arg(long, default_value = "127.0.0.1:49983")]
    envd: String,
    /// The working directory of contexts that name none.
    #[arg(long, default_value = "/home/user")]
    cwd: String,
    /// Languages whose default context starts with the server (so that it
    /// is warm in a snapshot); a language without a kernel is skipped.
    #[arg(long = "default-language", default_values_t = ["python".to_owned(), "javascript".to_owned()])]
    default_languages: Vec<String>,
    /// Where kernels' connection files go.
    #[arg(long, default_value = "/run/hearth-interpreter")]
    runtime_dir: PathBuf,
    /// How long a kernel may take to start (TCG guests are slow).
    #[arg(long, default_value_t = 120)]
    kernel_start_timeout: u64,
    /// A Jupyter data directory searched for kernelspecs before the usual
    /// ones; repeatable.
    #[arg(long = "kernels-dir")]
    kernel_dirs: Vec<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let settings = KernelSettings {
        runtime_dir: args.runtime_dir,
        start_timeout: Duration::from_secs(args.kernel_start_timeout),
        kernel_dirs: args.kernel_dirs,
    };
    let envd = (args.envd != "none").then(|| Envd {
        address: args.envd.clone(),
        timeout: Duration::from_secs(10),
    });
    let app = Arc::new(App {
        contexts: Contexts::new(args.cwd, settings),
        ready: std::sync::atomic::AtomicBool::new(false),
        envd,
        last_sandbox_env: std::sync::Mutex::default(),
        pace: Pace::default(),
    });
    // Bind first: the port answers (health) while kernels start.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(address = %args.listen, "code interpreter listening");
    let serving = app.clone();
    let server =
        tokio::spawn(
            async move { axum::serve(listener, router(serving).into_make_service()).await },
        );
    // The sandbox's variables, for the default kernels: what executions
    // will want, so that the first one sets nothing. A template build's
    // envd wants no token; without envd there are none.
    let sandbox_env: SandboxEnv = match &app.envd {
        Some(envd) => envd.envs(None).await.unwrap_or_else(|error| {
            tracing::info!(%error, "no sandbox environment for the default contexts");
            Default::default()
        }),
        None => Default::default(),
    }
    .into_iter()
    .filter(|(name, _)| check_env_name(name).is_ok())
    .collect();
    if let Ok(mut last) = app.last_sandbox_env.lock() {
        last.clone_from(&sandbox_env);
    }
    for name in &args.default_languages {
        let language = Language::parse(Some(name)).context("--default-language")?;
        match app.contexts.default_for(language, &sandbox_env).await {
            Ok(context) => {
                tracing::info!(%language, id = %context.info.id, "default context ready")
            }
            Err(ContextError::Kernel(KernelError::NotInstalled(_))) => {
                tracing::info!(%language, "no kernel installed: no default context")
            }
            Err(error) => tracing::warn!(%language, %error, "the default context did not start"),
        }
    }
    app.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    server
        .await
        .context("the server task")?
        .context("serving")?;
    Ok(())
}
