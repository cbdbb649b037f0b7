//! The HTTP API the code-interpreter SDKs call on port 49999 (contract §6):
//! `POST /execute` (an NDJSON stream), `/contexts`, `/health`. Errors are
//! plain text, as the SDKs show the body as the message.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::context::{Context, ContextError, Contexts};
use crate::envd::{Envd, EnvdError};
use crate::execution::{self, Ended, Pace};
use crate::kernel::KernelError;
use crate::language::{Language, check_env_name};
use crate::output::Line;

/// The largest request body: code and env vars.
const MAX_BODY_BYTES: usize = 16 << 20;
/// Lines buffered for a client that reads slowly before the execution waits.
const PENDING_LINES: usize = 64;

pub struct App {
    pub contexts: Contexts,
    /// Whether the default contexts are up: `/health` says so (a template
    /// build snapshots the sandbox once it does).
    pub ready: std::sync::atomic::AtomicBool,
    /// `None`: no envd to ask (no sandbox-wide variables, no token check).
    pub envd: Option<Envd>,
    pub pace: Pace,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/execute", post(execute))
        .route("/contexts", post(create_context).get(list_contexts))
        .route("/contexts/{id}/restart", post(restart_context))
        .route("/contexts/{id}", delete(remove_context))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if app.ready.load(std::sync::atomic::Ordering::Relaxed) {
        "OK".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting the default contexts",
        )
            .into_response()
    }
}

/// A refusal with its reason as the body.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

impl From<ContextError> for Refusal {
    fn from(error: ContextError) -> Self {
        let status = match &error {
            ContextError::NotFound(_) => StatusCode::NOT_FOUND,
            ContextError::RelativeCwd(_) | ContextError::MissingCwd(_) => StatusCode::BAD_REQUEST,
            ContextError::Kernel(KernelError::NotInstalled(_)) => StatusCode::BAD_REQUEST,
            ContextError::Kernel(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal(status, error.to_string())
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

/// A JSON body, or a 400 that says what is wrong with it; an empty body is
/// `T`'s default.
fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("malformed request body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
struct ExecuteRequest {
    #[serde(default)]
    code: String,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<BTreeMap<String, String>>,
}

async fn execute(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let request: ExecuteRequest = json_body(&body)?;
    if request.context_id.is_some() && request.language.is_some() {
        return Err(bad_request(
            "Only one of context_id or language can be provided",
        ));
    }
    let env_vars = request.env_vars.unwrap_or_default();
    for name in env_vars.keys() {
        check_env_name(name).map_err(|e| bad_request(e.to_string()))?;
    }
    let token = headers.get("x-access-token").and_then(|v| v.to_str().ok());
    let globals = match &app.envd {
        Some(envd) => envd.envs(token).await.map_err(|error| match error {
            EnvdError::Refused { status, message } => Refusal(
                StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED),
                message,
            ),
            EnvdError::Unreachable(detail) => {
                tracing::warn!(%detail, "envd did not give the sandbox's environment");
                // Not 502: the SDKs read that as the sandbox timing out.
                Refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the sandbox's envd did not answer".into(),
                )
            }
        })?,
        None => BTreeMap::new(),
    };
    // Sandbox-wide names come from envd; a bad one is skipped, not fatal.
    let globals: BTreeMap<String, String> = globals
        .into_iter()
        .filter(|(name, _)| check_env_name(name).is_ok())
        .collect();
    let context = match &request.context_id {
        Some(id) => app.contexts.get(id).await?,
        None => {
            let language = Language::parse(request.language.as_deref())
                .map_err(|e| bad_request(e.to_string()))?;
            app.contexts.default_for(language).await?
        }
    };
    let (lines, receiver) = mpsc::channel::<Bytes>(PENDING_LINES);
    tokio::spawn(run_in_context(
        app.clone(),
        context,
        request.code,
        env_vars,
        globals,
        lines,
    ));
    let mut receiver = receiver;
    let stream = futures::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|line| line.map(Ok::<_, Infallible>))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Waits for the context's turn, then sets the environment, runs the code
/// and puts back what only this execution was to see.
async fn run_in_context(
    app: Arc<App>,
    context: Arc<Context>,
    code: String,
    env_vars: BTreeMap<String, String>,
    globals: BTreeMap<String, String>,
    lines: mpsc::Sender<Bytes>,
) {
    let mut session = context.lock().await;
    if lines.is_closed() {
        return; // the client gave up while queued
    }
    if context.removed.load(std::sync::atomic::Ordering::Relaxed) {
        let message = format!("Context {} was removed", context.info.id);
        let _ = lines
            .send(Line::error("ContextRemoved", message).to_bytes())
            .await;
        let _ = lines.send(Line::EndOfExecution.to_bytes()).await;
        return;
    }
    let alive = session
        .kernel
        .as_mut()
        .is_some_and(|kernel| kernel.is_alive());
    if !alive {
        session.kernel = None;
        session.applied_env.clear();
        context.forget_kernel();
        match context.start_kernel(&app.contexts.settings).await {
            Ok(kernel) => session.kernel = Some(kernel),
            Err(error) => {
                tracing::warn!(context = %context.info.id, %error, "a kernel did not start");
                let _ = lines
                    .send(Line::error("KernelError", error.to_string()).to_bytes())
                    .await;
                let _ = lines.send(Line::EndOfExecution.to_bytes()).await;
                return;
            }
        }
    }
    let session = &mut *session;
    let Some(kernel) = session.kernel.as_mut() else {
        return;
    };
    let language = context.language;
    let limit = app.contexts.settings.start_timeout;

    // The sandbox-wide variables that changed, and this execution's own.
    let mut wanted = globals.clone();
    wanted.extend(env_vars.clone());
    let set: Vec<(&str, &str)> = wanted
        .iter()
        .filter(|(k, v)| env_vars.contains_key(*k) || session.applied_env.get(*k) != Some(*v))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gone: Vec<&str> = session
        .applied_env
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !set.is_empty() || !gone.is_empty() {
        let code = language.env_code(&set, &gone);
        if let Err(error) = execution::run_silent(kernel, &code, limit, app.pace).await {
            let _ = lines
                .send(
                    Line::error(
                        "EnvironmentError",
                        format!("setting the environment variables: {error}"),
                    )
                    .to_bytes(),
                )
                .await;
            let _ = lines.send(Line::EndOfExecution.to_bytes()).await;
            return;
        }
    }
    session.applied_env = globals.clone();

    let ended = execution::run(kernel, &code, &lines, app.pace).await;
    drop(lines);
    if ended == Ended::KernelLost {
        session.kernel = None;
        session.applied_env.clear();
        context.forget_kernel();
        return;
    }
    // This execution's variables go back to the sandbox's (or away).
    let restore: Vec<(&str, &str)> = env_vars
        .keys()
        .filter_map(|k| globals.get_key_value(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let unset: Vec<&str> = env_vars
        .keys()
        .filter(|k| !globals.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !restore.is_empty() || !unset.is_empty() {
        let code = language.env_code(&restore, &unset);
        if let Err(error) = execution::run_silent(kernel, &code, limit, app.pace).await {
            tracing::warn!(context = %context.info.id, %error, "restoring environment variables failed");
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct CreateContext {
    language: Option<String>,
    cwd: Option<String>,
}

async fn create_context(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, Refusal> {
    let request: CreateContext = json_body(&body)?;
    let language =
        Language::parse(request.language.as_deref()).map_err(|e| bad_request(e.to_string()))?;
    let context = app
        .contexts
        .create(language, request.cwd.as_deref())
        .await?;
    Ok(axum::Json(context.info.clone()).into_response())
}

async fn list_contexts(State(app): State<Arc<App>>) -> Response {
    axum::Json(app.contexts.list().await).into_response()
}

async fn restart_context(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    app.contexts.restart(&id).await?;
    Ok(axum::Json(serde_json::Value::Null).into_response())
}

async fn remove_context(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    app.contexts.remove(&id).await?;
    Ok(axum::Json(serde_json::Value::Null).into_response())
}
