//! An execution's turn in its context: wait behind the executions before
//! it, give the kernel the environment this execution is to see, run the
//! code, and put back what only this execution was to see.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::context::{Context, SandboxEnv, Session, Waiting};
use crate::execution::{self, Ended, Pace};
use crate::kernel::{Kernel, KernelSettings};
use crate::language::Language;
use crate::output::{Chunk, Line};

/// What one execution asks for.
pub struct Request {
    pub code: String,
    /// Variables for this execution only.
    pub env_vars: BTreeMap<String, String>,
    /// The sandbox's variables now.
    pub sandbox_env: SandboxEnv,
}

/// Runs `request` in `context` once it is its turn, writing its lines to
/// `lines`.
pub async fn run(
    context: Arc<Context>,
    place: Waiting,
    request: Request,
    settings: &KernelSettings,
    pace: Pace,
    lines: mpsc::Sender<Chunk>,
) {
    // A client that gives up while queued leaves the queue at once.
    let mut session = tokio::select! {
        session = place.turn() => session,
        () = lines.closed() => return,
    };
    if context.removed.load(std::sync::atomic::Ordering::Relaxed) {
        let message = format!("Context {} was removed", context.info.id);
        end_with_error(&lines, "ContextRemoved", message).await;
        return;
    }
    session.sandbox_env = request.sandbox_env.clone();
    if let Err(error) = ensure_kernel(&context, &mut session, settings).await {
        end_with_error(&lines, "KernelError", error).await;
        return;
    }
    let session = &mut *session;
    let Some(kernel) = session.kernel.as_mut() else {
        return;
    };
    let language = context.language;
    let limit = settings.start_timeout;

    // The kernel's environment with the sandbox's variables as they are
    // now (one the sandbox no longer has goes), this execution's over it.
    let after = kernel.environment_for(&request.sandbox_env);
    let mut wanted = after.clone();
    wanted.extend(request.env_vars);
    if let Err(error) = apply_env(kernel, language, &mut session.env, wanted, limit, pace).await {
        let message = format!("setting the environment variables: {error}");
        end_with_error(&lines, "EnvironmentError", message).await;
        return;
    }

    let ended = execution::run(kernel, &request.code, &lines, pace).await;
    drop(lines);
    if ended == Ended::KernelLost {
        session.clear_kernel();
        context.forget_kernel();
        return;
    }
    // This execution's variables go back to the sandbox's (or away).
    if let Err(error) = apply_env(kernel, language, &mut session.env, after, limit, pace).await {
        tracing::warn!(context = %context.info.id, %error, "restoring environment variables failed");
    }
}

/// A kernel for the session: the one it has if it still runs, else a new
/// one; the error is what the client is told.
async fn ensure_kernel(
    context: &Context,
    session: &mut Session,
    settings: &KernelSettings,
) -> Result<(), String> {
    if session.kernel.as_mut().is_some_and(Kernel::is_alive) {
        return Ok(());
    }
    session.clear_kernel();
    context.forget_kernel();
    let sandbox_env = session.sandbox_env.clone();
    match context.start_kernel(settings, &sandbox_env).await {
        Ok(kernel) => {
            session.set_kernel(kernel);
            Ok(())
        }
        Err(error) => {
            tracing::warn!(context = %context.info.id, %error, "a kernel did not start");
            Err(error.for_client())
        }
    }
}

/// Makes the kernel's environment `wanted` (`current` is what it is now),
/// by a silent execution of what differs; none when nothing does.
async fn apply_env(
    kernel: &mut Kernel,
    language: Language,
    current: &mut BTreeMap<String, String>,
    wanted: BTreeMap<String, String>,
    limit: Duration,
    pace: Pace,
) -> Result<(), String> {
    let set: Vec<(&str, &str)> = wanted
        .iter()
        .filter(|(name, value)| current.get(*name) != Some(*value))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let unset: Vec<&str> = current
        .keys()
        .filter(|name| !wanted.contains_key(*name))
        .map(String::as_str)
        .collect();
    if set.is_empty() && unset.is_empty() {
        return Ok(());
    }
    let code = language.env_code(&set, &unset);
    if let Err(error) = execution::run_silent(kernel, &code, limit, pace).await {
        // Part of it may have run: what the kernel has is not known, so
        // the next execution sets everything.
        current.clear();
        return Err(error);
    }
    *current = wanted;
    Ok(())
}

/// An error line, then the end of the execution.
pub async fn end_with_error(lines: &mpsc::Sender<Chunk>, name: &str, value: String) {
    for line in [Line::error(name, value), Line::EndOfExecution] {
        let chunk = Chunk {
            bytes: line.to_bytes(),
            budget: None,
        };
        if lines.send(chunk).await.is_err() {
            return;
        }
    }
}
