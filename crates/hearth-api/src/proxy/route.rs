//! A route: where a request for a sandbox goes, settled when it is
//! forwarded. The store's row gives the node and the slot address the
//! sandbox was created at; the node's live table (`nodes/live.rs`) must
//! still have that sandbox at that address. Slot addresses are reused, so
//! the row alone is not enough: a sandbox that died on its node keeps its
//! row until reconciliation, and meanwhile its address may be given to a
//! new sandbox, which a request for the old one must never reach.

use crate::nodes::LiveSandbox;
use crate::state::AppState;
use crate::store::SandboxRecord;

use super::gone::Gone;
use super::upstream::GuestClient;

/// A checked route: the sandbox's address, the client for it and the
/// signal its exchanges end on.
#[derive(Debug)]
pub struct Route {
    pub address: String,
    pub client: GuestClient,
    pub gone: Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("the sandbox does not run on its node (any more)")]
    NotRunning,
    #[error("the node did not say where the sandbox runs: {0}")]
    Node(Box<tonic::Status>),
}

/// The route to `record`'s sandbox, if it still runs where its row says.
pub async fn resolve(app: &AppState, record: &SandboxRecord) -> Result<Route, RouteError> {
    // A node that left the cluster took its VMs with it.
    let node = app.nodes.find(&record.node).ok_or(RouteError::NotRunning)?;
    let LiveSandbox { address, ended } = node
        .running(&record.sandbox_id, app.config.node_deadlines.probe)
        .await
        .map_err(|status| RouteError::Node(Box::new(status)))?
        .ok_or(RouteError::NotRunning)?;
    if address != record.host_address {
        tracing::warn!(
            sandbox = %record.sandbox_id,
            row = %record.host_address,
            node = %address,
            "the sandbox's row and its node disagree on its address; not routing to either"
        );
        return Err(RouteError::NotRunning);
    }
    let (client, gone) = app.upstream.route(&record.sandbox_id, &ended);
    Ok(Route {
        address,
        client,
        gone,
    })
}
