//! Sandboxes end when the control plane says so: a task kills those past
//! their end time, and forgets those their node no longer runs (the VM
//! died, the node restarted without them).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::routes::remove_sandbox;
use crate::state::AppState;
use crate::store::now_ms;

/// How often nodes are asked which sandboxes they still run.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// Runs forever: call it in a task.
pub async fn enforce(app: Arc<AppState>, period: Duration) {
    let mut last_reconcile = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        kill_ended(&app).await;
        if last_reconcile.elapsed() >= RECONCILE_EVERY {
            last_reconcile = tokio::time::Instant::now();
            reconcile(&app).await;
        }
    }
}

/// Kills every sandbox whose end time has passed.
pub async fn kill_ended(app: &AppState) {
    let ended = match app.store.sandboxes_ended(now_ms()).await {
        Ok(ended) => ended,
        Err(error) => {
            tracing::warn!(%error, "listing ended sandboxes failed");
            return;
        }
    };
    for record in ended {
        match remove_sandbox(app, &record).await {
            Ok(()) => {
                tracing::info!(sandbox = %record.sandbox_id, "sandbox timed out and was killed")
            }
            Err(error) => {
                tracing::warn!(sandbox = %record.sandbox_id, %error, "killing a timed-out sandbox failed")
            }
        }
    }
}

/// Forgets sandboxes a node that answers no longer runs.
pub async fn reconcile(app: &AppState) {
    for node in app.nodes.all() {
        // Rows are written after the node's create returns, so every row
        // read before the list is one the node must report.
        let Ok(records) = app.store.sandboxes_on(&node.name).await else {
            continue;
        };
        let running: HashSet<String> = match node.list().await {
            Ok(list) => list.into_iter().map(|s| s.sandbox_id).collect(),
            Err(_) => continue,
        };
        for record in records {
            if !running.contains(&record.sandbox_id) {
                tracing::warn!(sandbox = %record.sandbox_id, node = %node.name, "the node no longer runs this sandbox; forgetting it");
                app.upstream.forget(&record.sandbox_id);
                if let Err(error) = app.store.delete_sandbox(&record.sandbox_id).await {
                    tracing::warn!(%error, "forgetting a sandbox failed");
                }
            }
        }
    }
}
