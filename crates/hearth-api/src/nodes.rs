//! The nodes sandboxes run on, reached over their gRPC API, and the choice
//! of a node for a new sandbox.

use std::time::Duration;

use hearth_proto::orchestrator::info_service_client::InfoServiceClient;
use hearth_proto::orchestrator::sandbox_service_client::SandboxServiceClient;
use hearth_proto::orchestrator::template_service_client::TemplateServiceClient;
use hearth_proto::orchestrator::{RunningSandbox, ServiceInfoResponse};
use tonic::transport::{Channel, Endpoint};

use crate::error::{ApiError, ApiResult};

/// How long a node may take to answer anything but a create.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to a node with the usual deadline, so one hung node cannot
/// hold up an API request or the timeout enforcer for long.
pub fn call<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// One node: its name (which the store records for each sandbox), its
/// address and its clients.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub address: String,
    channel: Channel,
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
        })
    }

    pub fn sandboxes(&self) -> SandboxServiceClient<Channel> {
        SandboxServiceClient::new(self.channel.clone())
    }

    pub fn templates(&self) -> TemplateServiceClient<Channel> {
        TemplateServiceClient::new(self.channel.clone())
    }

    pub async fn info(&self) -> Result<ServiceInfoResponse, tonic::Status> {
        Ok(InfoServiceClient::new(self.channel.clone())
            .service_info(call(()))
            .await?
            .into_inner())
    }

    pub async fn list(&self) -> Result<Vec<RunningSandbox>, tonic::Status> {
        Ok(self
            .sandboxes()
            .list(call(()))
            .await?
            .into_inner()
            .sandboxes)
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
            ApiError::Unavailable(format!("the node '{name}' is not part of this cluster"))
        })
    }

    pub fn find(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The node with the most room: the fewest running sandboxes relative
    /// to its limit. Nodes that do not answer are skipped.
    pub async fn place(&self) -> ApiResult<&Node> {
        let infos = futures::future::join_all(self.nodes.iter().map(|node| node.info())).await;
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
            None if !unreachable.is_empty() && unreachable.len() == self.nodes.len() => Err(
                ApiError::Unavailable(format!("no node is reachable ({})", unreachable.join(", "))),
            ),
            None => Err(ApiError::Unavailable(
                "every node is at its sandbox limit; try again later".into(),
            )),
        }
    }

    /// The node for a template build: the one with the most room, else
    /// (all at their sandbox limit, which a build does not count against)
    /// the first that answers.
    pub async fn place_build(&self) -> ApiResult<&Node> {
        match self.place().await {
            Ok(node) => Ok(node),
            Err(error) => {
                for node in &self.nodes {
                    if node.info().await.is_ok() {
                        return Ok(node);
                    }
                }
                Err(error)
            }
        }
    }
}
