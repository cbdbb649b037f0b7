//! Sandboxes end when the control plane says so: a task kills those past
//! their end time, forgets those their node no longer runs (the VM died,
//! the node restarted without them) and deletes VMs it has no record of
//! (a create whose row was never written).
//!
//! Every call to a node here has the sweep deadline and nodes are handled
//! side by side, so a node that hangs delays neither the others nor the
//! next round; kills and reconciliation run in loops of their own.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hearth_proto::orchestrator::{SandboxDeleteRequest, StopReason};

use crate::config::millis;
use crate::nodes::{Node, bounded, call_within};
use crate::routes::forget_sandbox;
use crate::state::AppState;
use crate::store::now_ms;

/// How often nodes are asked which sandboxes they still run.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// A VM with no row older than a create can take, plus this, is an orphan,
/// not a create in flight.
const ORPHAN_MARGIN: Duration = Duration::from_secs(60);

/// Runs forever: call it in a task. Kills run every `period`.
pub async fn enforce(app: Arc<AppState>, period: Duration) {
    let reconciler = app.clone();
    let reconciling = tokio::spawn(async move {
        loop {
            tokio::time::sleep(RECONCILE_EVERY).await;
            reconcile(&reconciler).await;
        }
    });
    // Ends the reconciler with this task (it is aborted on shutdown).
    let _reconciling = AbortOnDrop(reconciling);
    loop {
        tokio::time::sleep(period).await;
        kill_ended(&app).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Deletes a sandbox on `node` within the sweep deadline; one the node no
/// longer has is gone already.
async fn sweep_delete(
    app: &AppState,
    node: &Node,
    sandbox_id: &str,
    reason: StopReason,
) -> Result<(), tonic::Status> {
    let deadline = app.config.node_deadlines.sweep;
    let request = call_within(
        SandboxDeleteRequest {
            sandbox_id: sandbox_id.to_owned(),
            reason: reason.into(),
        },
        deadline,
    );
    let mut client = node.sandboxes();
    match bounded(deadline, client.delete(request)).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
        Err(status) => Err(status),
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
        if record.auto_pause {
            pause_ended(app, &record, now).await;
            return;
        }
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
        match sweep_delete(app, node, &record.sandbox_id, StopReason::Timeout).await {
            Ok(()) => tracing::info!(sandbox = %record.sandbox_id, "sandbox timed out and was killed"),
            // The node's own end time (a minute later) still ends it.
            Err(status) => tracing::warn!(sandbox = %record.sandbox_id, node = %node.name, %status, "killing a timed-out sandbox failed"),
        }
    });
    futures::future::join_all(kills).await;
}

/// Pauses a sandbox created with `autoPause` whose end has passed. The row
/// is claimed first (marked paused), so that the next sweep does not pause
/// it again; a pause that fails gives the claim back and the next sweep
/// tries again (the node's own end, a minute later, kills it otherwise).
async fn pause_ended(app: &AppState, record: &crate::store::SandboxRecord, now: i64) {
    let sandbox_id = record.sandbox_id.as_str();
    match app.store.claim_for_pause(sandbox_id, now).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(error) => {
            tracing::warn!(sandbox = %sandbox_id, %error, "claiming a timed-out sandbox for a pause failed");
            return;
        }
    }
    let Some(node) = app.nodes.find(&record.node) else {
        return;
    };
    match crate::routes::pause_on_node(
        node,
        sandbox_id,
        record.auto_pause_memory,
        StopReason::Timeout,
    )
    .await
    {
        Ok(_) => {
            app.upstream.forget(sandbox_id);
            tracing::info!(sandbox = %sandbox_id, "sandbox timed out and was paused");
        }
        Err(status) if status.code() == tonic::Code::NotFound => {
            if let Err(error) = forget_sandbox(app, sandbox_id).await {
                tracing::warn!(%error, "forgetting a sandbox failed");
            }
        }
        Err(status) => {
            tracing::warn!(sandbox = %sandbox_id, node = %node.name, %status, "pausing a timed-out sandbox failed");
            if let Err(error) = app.store.unclaim_pause(sandbox_id).await {
                tracing::warn!(%error, "giving back a pause claim failed");
            }
        }
    }
}

/// Aligns the store with what the nodes that answer run, all nodes at once.
pub async fn reconcile(app: &AppState) {
    let nodes = app.nodes.all().iter().map(|node| reconcile_node(app, node));
    futures::future::join_all(nodes).await;
    if let Ok(known) = app.store.sandbox_ids().await {
        app.upstream.retain(|id| known.contains(id));
    }
}

async fn reconcile_node(app: &AppState, node: &Node) {
    // Rows are written after the node's create returns, so every row read
    // before the list is one the node must report.
    let Ok(records) = app.store.sandboxes_on(&node.name).await else {
        return;
    };
    let list = match node.list(app.config.node_deadlines.sweep).await {
        Ok(list) => list,
        Err(status) => {
            tracing::warn!(node = %node.name, %status, "the node did not list its sandboxes; skipping it this round");
            return;
        }
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
    let orphan_age = millis(app.config.node_deadlines.create + ORPHAN_MARGIN);
    for sandbox in &list {
        // The node's clock, so arithmetic on it saturates.
        let started = sandbox
            .start_time
            .as_ref()
            .map_or(now, |t| t.seconds.saturating_mul(1000));
        if now.saturating_sub(started) < orphan_age {
            continue;
        }
        if matches!(app.store.sandbox(&sandbox.sandbox_id).await, Ok(None)) {
            tracing::warn!(sandbox = %sandbox.sandbox_id, node = %node.name, "deleting a VM the control plane has no record of");
            let _ = sweep_delete(app, node, &sandbox.sandbox_id, StopReason::Orphaned).await;
        }
    }
}
