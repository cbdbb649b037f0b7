//! One resume at a time per sandbox. A connect, the deprecated resume and
//! the requests that traffic sends to a paused sandbox with auto-resume
//! may all arrive at once: the first resumes it, the others wait for that
//! and find it running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type Gates = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

#[derive(Debug, Default, Clone)]
pub struct Resumes(Gates);

/// The right to resume one sandbox; its gate is forgotten once nobody
/// holds or waits for it.
#[derive(Debug)]
pub struct ResumeTurn {
    guard: Option<OwnedMutexGuard<()>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    sandbox_id: String,
    gates: Gates,
}

impl Resumes {
    /// Waits until no other resume of `sandbox_id` runs.
    pub async fn turn(&self, sandbox_id: &str) -> ResumeTurn {
        let gate = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sandbox_id.to_owned())
            .or_default()
            .clone();
        let guard = gate.clone().lock_owned().await;
        ResumeTurn {
            guard: Some(guard),
            gate,
            sandbox_id: sandbox_id.to_owned(),
            gates: self.0.clone(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for ResumeTurn {
    fn drop(&mut self) {
        self.guard.take();
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        // Under the map's lock nobody can take a new reference: the map's
        // and this one are all there are when no one else waits.
        if Arc::strong_count(&self.gate) <= 2 {
            gates.remove(&self.sandbox_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_of_one_sandbox_follow_each_other_and_leave_nothing() {
        let resumes = Resumes::default();
        let first = resumes.turn("a").await;
        // Another sandbox is not held up.
        drop(resumes.turn("b").await);
        let waiting = tokio::spawn({
            let resumes = resumes.clone();
            async move { drop(resumes.turn("a").await) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a second turn ran beside the first");
        drop(first);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .is_ok_and(|joined| joined.is_ok())
        );
        assert_eq!(resumes.len(), 0);
    }
}
