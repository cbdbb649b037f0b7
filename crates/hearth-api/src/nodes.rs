//! The nodes sandboxes run on, reached over their gRPC API, and the choice
//! of a node for a new sandbox.

mod live;
mod sandbox_client;

use std::sync::Arc;
use std::time::Duration;

use hearth_proto::auth::{NodeChannel, NodeToken, SendToken};
use hearth_proto::orchestrator::info_service_client::InfoServiceClient;
use hearth_proto::orchestrator::template_service_client::TemplateServiceClient;
use hearth_proto::orchestrator::{RunningSandbox, ServiceInfoResponse};
use tonic::transport::{Channel, Endpoint};

use crate::error::{ApiError, ApiResult};

pub use live::LiveSandbox;
use live::LiveTable;
pub use sandbox_client::SandboxClient;

/// How long a node may take to answer anything but a create.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to a node with the usual deadline, so one hung node cannot
/// hold up an API request for long.
pub fn call<T>(message: T) -> tonic::Request<T> {
    call_within(message, CALL_TIMEOUT)
}

/// A request to a node with `deadline` (the node learns it too, and
/// stops), carrying the API request's id and trace.
pub fn call_within<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    let metadata = request.metadata_mut();
    if let Some(id) = crate::request_id::current()
        && let Ok(value) = id.parse()
    {
        metadata.insert(hearth_proto::REQUEST_ID, value);
    }
    for (name, value) in hearth_trace::context::current_headers() {
        if let Ok(value) = value.parse() {
            metadata.insert(name, value);
        }
    }
    request
}

/// Awaits a node's answer for at most `deadline`, whatever the transport
/// does meanwhile (connecting, a node that accepted and went silent).
pub async fn bounded<T>(
    deadline: Duration,
    answer: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(deadline, answer)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {deadline:?}"
            )))
        })
}

/// One node: its name (which the store records for each sandbox), its
/// address, its clients and where its sandboxes run.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub address: String,
    channel: Channel,
    /// The node's token, sent on every call (see `hearth_proto::auth`).
    token: SendToken,
    /// Shared by every clone: the proxy and the API see the same table.
    live: Arc<LiveTable>,
}

impl Node {
    /// A node at `address` (`http://host:port`); connects lazily, so a node
    /// that is down now is tried again on each call.
    pub fn new(name: &str, address: &str) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(address.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            name: name.to_owned(),
            address: address.to_owned(),
            channel,
            token: SendToken::default(),
            live: Arc::default(),
        })
    }

    /// Sends `token` with every call: a node that listens beyond its own
    /// process requires it.
    pub fn with_token(mut self, token: NodeToken) -> Self {
        self.token = SendToken(Some(token));
        self
    }

    fn channel(&self) -> NodeChannel {
        NodeChannel::new(self.channel.clone(), self.token.clone())
    }

    /// The node's sandbox service; its answers keep the live table.
    pub fn sandboxes(&self) -> SandboxClient {
        SandboxClient::new(self.channel(), self.live.clone())
    }

    pub fn templates(&self) -> TemplateServiceClient<NodeChannel> {
        TemplateServiceClient::new(self.channel())
    }

    pub async fn info(&self, deadline: Duration) -> Result<ServiceInfoResponse, tonic::Status> {
        let mut client = InfoServiceClient::new(self.channel());
        let answer = client.service_info(call_within((), deadline));
        Ok(bounded(deadline, answer).await?.into_inner())
    }

    pub async fn list(&self, deadline: Duration) -> Result<Vec<RunningSandbox>, tonic::Status> {
        let mut client = self.sandboxes();
        let answer = client.list(call_within((), deadline));
        Ok(bounded(deadline, answer).await?.into_inner().sandboxes)
    }
}

/// Every node the control plane places sandboxes on.
#[derive(Debug, Clone, Default)]
pub struct Nodes {
    nodes: Vec<Node>,
}

impl Nodes {
    pub fn new(nodes: Vec<Node>) -> Self {
        Self { nodes }
    }

    pub fn all(&self) -> &[Node] {
        &self.nodes
    }

    /// The node named `name` in the store.
    pub fn get(&self, name: &str) -> ApiResult<&Node> {
        self.find(name).ok_or_else(|| {
            tracing::warn!(node = %name, "a stored node is not part of this cluster");
            ApiError::Unavailable("the sandbox's node is not part of this cluster".into())
        })
    }

    pub fn find(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The node with the most room: the fewest running sandboxes relative
    /// to its limit. Nodes that do not answer within `probe` are skipped.
    pub async fn place(&self, probe: Duration) -> ApiResult<&Node> {
        let infos = futures::future::join_all(self.nodes.iter().map(|node| node.info(probe))).await;
        let mut best: Option<(&Node, f64)> = None;
        let mut unreachable = Vec::new();
        for (node, info) in self.nodes.iter().zip(infos) {
            let info = match info {
                Ok(info) => info,
                Err(status) => {
                    tracing::warn!(node = %node.address, %status, "node did not answer");
                    unreachable.push(node.address.as_str());
                    continue;
                }
            };
            let limit = info.max_sandboxes.max(1);
            if info.metric_sandboxes_running >= limit {
                continue;
            }
            #[allow(clippy::cast_precision_loss)]
            let load = info.metric_sandboxes_running as f64 / limit as f64;
            if best.is_none_or(|(_, best_load)| load < best_load) {
                best = Some((node, load));
            }
        }
        match best {
            Some((node, _)) => Ok(node),
            None => Err(ApiError::Unavailable(
                no_room(self.nodes.len(), unreachable.len()).into(),
            )),
        }
    }

    /// The node for a template build: the one with the most room, else
    /// (all at their sandbox limit, which a build does not count against)
    /// the first that answers.
    pub async fn place_build(&self, probe: Duration) -> ApiResult<&Node> {
        match self.place(probe).await {
            Ok(node) => Ok(node),
            Err(error) => {
                for node in &self.nodes {
                    if node.info(probe).await.is_ok() {
                        return Ok(node);
                    }
                }
                Err(error)
            }
        }
    }
}

/// Why no node takes a sandbox, of `nodes` of which `unreachable` did not
/// answer. Which nodes is for the log, not for clients.
fn no_room(nodes: usize, unreachable: usize) -> &'static str {
    match (nodes, unreachable) {
        (0, _) => "this control plane has no nodes to run sandboxes on",
        (n, u) if u == n => "no node is reachable; try again later",
        (_, 0) => "every node is at its sandbox limit; try again later",
        _ => "every node that answered is at its sandbox limit; try again later",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cluster_without_nodes_says_so() {
        let empty = Nodes::new(Vec::new());
        match empty.place(Duration::from_millis(10)).await {
            Err(ApiError::Unavailable(message)) => {
                assert!(message.contains("no nodes"), "{message}")
            }
            Err(other) => panic!("an empty cluster: {other}"),
            Ok(node) => panic!("placed on an empty cluster: {}", node.name),
        }
        assert!(no_room(3, 3).contains("reachable"));
        assert!(no_room(3, 0).starts_with("every node is"));
        assert!(no_room(3, 1).contains("answered"));
    }
}
