//! Sandboxes end when the control plane says so: a task kills those past
//! their end time, forgets those their node no longer runs (the VM died,
//! the node restarted without them) and deletes VMs it has no record of
//! (a create whose row was never written).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::config::millis;
use crate::routes::{CREATE_TIMEOUT, delete_on_node, forget_sandbox};
use crate::state::AppState;
use crate::store::now_ms;

/// How often nodes are asked which sandboxes they still run.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// A VM with no row older than this is an orphan, not a create in flight.
const ORPHAN_AGE: Duration = Duration::from_secs(CREATE_TIMEOUT.as_secs() + 60);

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

/// Kills every sandbox whose end time has passed. Each row is claimed
/// (deleted only if it is still past its end) before its VM is killed, so
/// a timeout extended meanwhile wins.
pub async fn kill_ended(app: &AppState) {
    let now = now_ms();
    let ended = match app.store.sandboxes_ended(now).await {
        Ok(ended) => ended,
        Err(error) => {
            tracing::warn!(%error, "listing ended sandboxes failed");
            return;
        }
    };
    let kills = ended.into_iter().map(|record| async move {
        match app.store.claim_ended(&record.sandbox_id, now).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(sandbox = %record.sandbox_id, %error, "claiming a timed-out sandbox failed");
                return;
            }
        }
        app.upstream.forget(&record.sandbox_id);
        let Some(node) = app.nodes.find(&record.node) else {
            return;
        };
        match delete_on_node(node, &record.sandbox_id).await {
            Ok(()) => tracing::info!(sandbox = %record.sandbox_id, "sandbox timed out and was killed"),
            // The node's own end time (a minute later) still ends it.
            Err(error) => tracing::warn!(sandbox = %record.sandbox_id, %error, "killing a timed-out sandbox failed"),
        }
    });
    futures::future::join_all(kills).await;
}

/// Aligns the store with what the nodes that answer run.
pub async fn reconcile(app: &AppState) {
    for node in app.nodes.all() {
        // Rows are written after the node's create returns, so every row
        // read before the list is one the node must report.
        let Ok(records) = app.store.sandboxes_on(&node.name).await else {
            continue;
        };
        let Ok(list) = node.list().await else {
            continue;
        };
        let running: HashSet<&str> = list.iter().map(|s| s.sandbox_id.as_str()).collect();
        for record in &records {
            if !running.contains(record.sandbox_id.as_str()) {
                tracing::warn!(sandbox = %record.sandbox_id, node = %node.name, "the node no longer runs this sandbox; forgetting it");
                if let Err(error) = forget_sandbox(app, &record.sandbox_id).await {
                    tracing::warn!(%error, "forgetting a sandbox failed");
                }
            }
        }
        let now = now_ms();
        for sandbox in &list {
            let started = sandbox
                .start_time
                .as_ref()
                .map_or(now, |t| t.seconds * 1000);
            if now - started < millis(ORPHAN_AGE) {
                continue;
            }
            if matches!(app.store.sandbox(&sandbox.sandbox_id).await, Ok(None)) {
                tracing::warn!(sandbox = %sandbox.sandbox_id, node = %node.name, "deleting a VM the control plane has no record of");
                let _ = delete_on_node(node, &sandbox.sandbox_id).await;
            }
        }
    }
    if let Ok(known) = app.store.sandbox_ids().await {
        app.upstream.retain(|id| known.contains(id));
    }
}
