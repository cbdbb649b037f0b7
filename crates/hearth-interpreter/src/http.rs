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

use crate::context::{Context, ContextError, Contexts, MAX_WAITING, SandboxEnv, Waiting};
use crate::envd::{Envd, EnvdError};
use crate::execution::Pace;
use crate::kernel::{Kernel, KernelError};
use crate::language::{Language, check_env_name};
use crate::output::{Chunk, Line};
use crate::turn;

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
    /// The sandbox's variables as envd last gave them, for kernels started
    /// by requests that bring no access token (context creation).
    pub last_sandbox_env: std::sync::Mutex<SandboxEnv>,
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
        match error {
            ContextError::NotFound(_) => Refusal(StatusCode::NOT_FOUND, error.to_string()),
            ContextError::RelativeCwd(_) | ContextError::MissingCwd(_) => {
                Refusal(StatusCode::BAD_REQUEST, error.to_string())
            }
            ContextError::Kernel(error @ KernelError::NotInstalled(_)) => {
                Refusal(StatusCode::BAD_REQUEST, error.to_string())
            }
            ContextError::Kernel(error) => {
                tracing::warn!(%error, "a kernel failed");
                Refusal(StatusCode::INTERNAL_SERVER_ERROR, error.for_client())
            }
        }
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
    let sandbox_env = sandbox_env(&app, token).await?;
    // The context, or the language whose default context is still to be
    // made (its kernel may take longer to start than clients wait for
    // headers, so it starts while the response streams).
    let target = match &request.context_id {
        Some(id) => Ok(app.contexts.get(id).await?),
        None => {
            let language = Language::parse(request.language.as_deref())
                .map_err(|e| bad_request(e.to_string()))?;
            match app.contexts.find_default(language).await {
                Some(context) => Ok(context),
                None => {
                    Kernel::spec_for(language, &app.contexts.settings)
                        .await
                        .map_err(|e| Refusal::from(ContextError::from(e)))?;
                    Err(language)
                }
            }
        }
    };
    let place = match &target {
        Ok(context) => Some(queue(context)?),
        Err(_) => None,
    };
    let turn = turn::Request {
        code: request.code,
        env_vars,
        sandbox_env,
    };
    let (lines, receiver) = mpsc::channel::<Chunk>(PENDING_LINES);
    tokio::spawn(async move {
        let (context, place) = match (target, place) {
            (Ok(context), Some(place)) => (context, place),
            (Err(language), _) => {
                match make_default(&app, language, &turn.sandbox_env, &lines).await {
                    Some(made) => made,
                    None => return,
                }
            }
            (Ok(_), None) => return,
        };
        let settings = &app.contexts.settings;
        turn::run(context, place, turn, settings, app.pace, lines).await;
    });
    let mut receiver = receiver;
    let stream = futures::stream::poll_fn(move |cx| {
        // The chunk's budget is let go as the body takes its bytes.
        receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok::<_, Infallible>(chunk.bytes)))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The sandbox's variables from envd, which checks the caller's access
/// token as it does for its own API; names no language can set are left
/// out.
async fn sandbox_env(app: &App, token: Option<&str>) -> Result<SandboxEnv, Refusal> {
    let Some(envd) = &app.envd else {
        return Ok(SandboxEnv::new());
    };
    let found = envd.envs(token).await.map_err(|error| match error {
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
    })?;
    let found: SandboxEnv = found
        .into_iter()
        .filter(|(name, _)| check_env_name(name).is_ok())
        .collect();
    if let Ok(mut last) = app.last_sandbox_env.lock() {
        last.clone_from(&found);
    }
    Ok(found)
}

/// A place in the context's queue, or 429 when it is full.
fn queue(context: &Arc<Context>) -> Result<Waiting, Refusal> {
    context.queue().ok_or_else(|| {
        Refusal(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{MAX_WAITING} executions are already waiting for context {}",
                context.info.id
            ),
        )
    })
}

/// Makes (or finds, if another request made it meanwhile) the default
/// context of `language`, writing keepalive lines while its kernel starts
/// so that the client has its headers and sees the stream alive. The
/// kernel starts in a task of its own: a client that goes away does not
/// stop it halfway. `None` when it failed (the client was told) or the
/// client went away.
async fn make_default(
    app: &Arc<App>,
    language: Language,
    sandbox_env: &SandboxEnv,
    lines: &mpsc::Sender<Chunk>,
) -> Option<(Arc<Context>, Waiting)> {
    let mut making = {
        let (app, sandbox_env) = (app.clone(), sandbox_env.clone());
        tokio::spawn(async move { app.contexts.default_for(language, &sandbox_env).await })
    };
    let made = loop {
        let keepalive = Chunk {
            bytes: Line::Keepalive.to_bytes(),
            budget: None,
        };
        // A client that reads nothing just misses a keepalive.
        if let Err(mpsc::error::TrySendError::Closed(_)) = lines.try_send(keepalive) {
            return None;
        }
        tokio::select! {
            made = &mut making => break made,
            () = tokio::time::sleep(app.pace.keepalive) => {}
        }
    };
    let Ok(made) = made else {
        turn::end_with_error(
            lines,
            "ContextError",
            "the context could not be made".into(),
        )
        .await;
        return None;
    };
    let refused = match made {
        Ok(context) => match queue(&context) {
            Ok(place) => return Some((context, place)),
            Err(Refusal(_, message)) => message,
        },
        Err(ContextError::Kernel(error)) => {
            tracing::warn!(%language, %error, "a default context did not start");
            error.for_client()
        }
        Err(error) => error.to_string(),
    };
    turn::end_with_error(lines, "ContextError", refused).await;
    None
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
    let sandbox_env = app
        .last_sandbox_env
        .lock()
        .map(|env| env.clone())
        .unwrap_or_default();
    let context = app
        .contexts
        .create(language, request.cwd.as_deref(), &sandbox_env)
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
