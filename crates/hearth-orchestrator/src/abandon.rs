//! Work that must not stop halfway but whose caller may leave: a create
//! runs to its end in a task of its own (stopped midway it would leave its
//! id reserved and a VM or slot unaccounted for), and when nobody is left
//! to take what it made, that is undone, so a create the control plane gave
//! up on (its deadline passed, its connection dropped) leaves no VM behind.

use std::future::Future;

use tokio::sync::oneshot;
use tracing::Instrument;

/// The work's task ended without an output (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("the task ended without finishing its work")]
pub struct TaskLost;

/// The caller's end: while it holds the output unclaimed, dropping it hands
/// the output to `undo`.
struct Claim<T, U, F>
where
    T: Send + 'static,
    U: FnOnce(T) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    receiver: oneshot::Receiver<T>,
    undo: Option<U>,
}

impl<T, U, F> Drop for Claim<T, U, F>
where
    T: Send + 'static,
    U: FnOnce(T) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    fn drop(&mut self) {
        let Some(undo) = self.undo.take() else {
            return;
        };
        // After `close`, the task's send fails and it undoes its output
        // itself; an output sent before is still here, unread.
        self.receiver.close();
        if let Ok(output) = self.receiver.try_recv() {
            tokio::spawn(undo(output));
        }
    }
}

/// Runs `work` to its end whatever happens to the caller, and returns its
/// output. If the caller is dropped first, `undo` gets the output instead,
/// exactly once, when the work ends.
pub async fn run_or_undo<T, W, U, F>(work: W, undo: U) -> Result<T, TaskLost>
where
    T: Send + 'static,
    W: Future<Output = T> + Send + 'static,
    U: FnOnce(T) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = oneshot::channel();
    let task_undo = undo.clone();
    // In the caller's span: the work is part of its call (and trace).
    tokio::spawn(
        async move {
            let output = work.await;
            if let Err(output) = sender.send(output) {
                task_undo(output).await;
            }
        }
        .in_current_span(),
    );
    let mut claim = Claim {
        receiver,
        undo: Some(undo),
    };
    let output = (&mut claim.receiver).await.map_err(|_| TaskLost)?;
    // Taken: from here the output is the caller's.
    claim.undo = None;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    type Undone = Arc<Mutex<Vec<u32>>>;

    fn undo_into(undone: &Undone) -> impl FnOnce(u32) -> std::future::Ready<()> + Clone + use<> {
        let undone = undone.clone();
        move |output| {
            undone
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(output);
            std::future::ready(())
        }
    }

    async fn settled(undone: &Undone) -> Vec<u32> {
        // The undo runs in another task: give it a moment.
        for _ in 0..100 {
            if !undone.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        undone.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[tokio::test]
    async fn a_caller_that_waits_gets_the_output_and_nothing_is_undone() -> Result<(), TaskLost> {
        let undone = Undone::default();
        let output = run_or_undo(async { 7 }, undo_into(&undone)).await?;
        assert_eq!(output, 7);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(settled(&undone).await.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn work_whose_caller_left_runs_to_its_end_and_is_undone() {
        let undone = Undone::default();
        let (release, released) = oneshot::channel::<()>();
        let work = async move {
            let _ = released.await;
            42
        };
        // The caller's deadline passes while the work is still going.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            run_or_undo(work, undo_into(&undone)),
        )
        .await;
        assert!(gave_up.is_err());
        assert!(settled(&undone).await.is_empty(), "undone before it ended");
        let _ = release.send(());
        assert_eq!(settled(&undone).await, [42]);
    }

    #[tokio::test]
    async fn an_output_sent_but_never_read_is_undone() {
        let undone = Undone::default();
        let (finished, is_finished) = oneshot::channel::<()>();
        let work = async move {
            let _ = finished.send(());
            9
        };
        let mut caller = Box::pin(run_or_undo(work, undo_into(&undone)));
        // Polled once: the task is spawned, the caller waits.
        assert!(futures::poll!(&mut caller).is_pending());
        let _ = is_finished.await;
        // Let the task send its output; the caller never reads it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(caller);
        assert_eq!(settled(&undone).await, [9]);
    }
}
