//! Runs namespace work on a fresh OS thread.
//!
//! A network namespace is a property of a thread, not of the process:
//! `unshare(CLONE_NEWNET)` or `setns` moves only the calling thread, and a
//! netlink socket (or a /proc/sys/net file) belongs to the namespace of the
//! thread that opened it. Tokio's threads must never change namespace, since
//! other tasks run on them afterwards; so every piece of work that enters a
//! slot's namespace gets a thread of its own, which ends with the work and
//! takes its namespace membership with it. Spawning a thread costs tens of
//! microseconds, well below the netlink work itself.

use std::future::Future;
use std::time::Duration;

use crate::error::NetError;

/// Set-up of a slot takes milliseconds; one that takes this long is stuck.
const DEADLINE: Duration = Duration::from_secs(15);

/// Runs `work` on a new thread and waits for its result without blocking the
/// async runtime. `what` names the work in errors.
pub async fn on_own_thread<T, F>(what: &str, work: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetError> + Send + 'static,
{
    let (answer, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hearth-net".into())
        .spawn(move || {
            // The receiver is gone only if the caller stopped waiting.
            let _ = answer.send(work());
        })
        .map_err(NetError::system(format!("{what}: starting a thread")))?;
    match tokio::time::timeout(DEADLINE, result).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(NetError::WorkerLost(what.to_owned())),
        Err(_) => Err(NetError::TimedOut {
            what: what.to_owned(),
            after: DEADLINE,
        }),
    }
}

/// Drives rtnetlink's async requests on the current (worker) thread: its
/// sockets must be opened, and so its connections polled, right here.
pub fn block_on<T>(
    what: &str,
    work: impl Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(NetError::system(format!("{what}: starting an event loop")))?
        .block_on(work)
}
