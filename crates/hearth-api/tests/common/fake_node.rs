//! A node that keeps sandboxes as records only: the control plane's tests
//! exercise the API without VMs. Every call is recorded for assertions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hearth_proto::orchestrator as pb;
use pb::info_service_server::{InfoService, InfoServiceServer};
use pb::sandbox_service_server::{SandboxService, SandboxServiceServer};
use tonic::{Request, Response, Status};

/// What the fake node holds and was asked.
#[derive(Debug, Default)]
pub struct FakeState {
    pub sandboxes: HashMap<String, pb::RunningSandbox>,
    pub deleted: Vec<String>,
    pub updates: Vec<pb::SandboxUpdateRequest>,
    /// Templates whose creates fail, as a broken snapshot would.
    pub failing_templates: Vec<String>,
    pub max_sandboxes: i64,
    /// When set, each create also writes a row with the new sandbox's id
    /// into this store, so that the control plane's own insert fails.
    pub conflicting_store: Option<hearth_api::Store>,
}

#[derive(Debug, Clone)]
pub struct FakeNode(pub Arc<Mutex<FakeState>>);

impl FakeNode {
    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the node on a loopback port; returns its address.
    pub async fn start() -> std::io::Result<(Self, String)> {
        let node = Self(Arc::new(Mutex::new(FakeState {
            max_sandboxes: 1000,
            ..FakeState::default()
        })));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let router = tonic::transport::Server::builder()
            .add_service(SandboxServiceServer::new(node.clone()))
            .add_service(InfoServiceServer::new(node.clone()));
        tokio::spawn(router.serve_with_incoming(incoming));
        Ok((node, address))
    }
}

#[tonic::async_trait]
impl SandboxService for FakeNode {
    async fn create(
        &self,
        request: Request<pb::SandboxCreateRequest>,
    ) -> Result<Response<pb::SandboxCreateResponse>, Status> {
        let request = request.into_inner();
        let config = request
            .sandbox
            .ok_or_else(|| Status::invalid_argument("no sandbox"))?;
        let (id, conflicting_store) = {
            let mut state = self.state();
            if state.failing_templates.contains(&config.template_id) {
                return Err(Status::internal("the snapshot is corrupt"));
            }
            for cidr in config
                .network
                .iter()
                .flat_map(|n| n.egress.iter())
                .flat_map(|e| e.allowed_cidrs.iter().chain(&e.denied_cidrs))
            {
                if cidr.parse::<std::net::Ipv4Addr>().is_err() && !cidr.contains('/') {
                    return Err(Status::invalid_argument(format!("'{cidr}' is not a CIDR")));
                }
            }
            let id = config.sandbox_id.clone();
            let conflicting_store = state.conflicting_store.clone();
            state.sandboxes.insert(
                id.clone(),
                pb::RunningSandbox {
                    sandbox_id: id.clone(),
                    client_id: "fake-node".into(),
                    vcpu: 2,
                    ram_mb: 512,
                    build_id: "fake-build".into(),
                    host_address: "127.0.0.1".into(),
                    start_time: request.start_time,
                    end_time: request.end_time,
                    config: Some(config),
                    ..Default::default()
                },
            );
            (id, conflicting_store)
        };
        if let Some(store) = conflicting_store {
            store
                .insert_sandbox(&crate::common::record(&id))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(pb::SandboxCreateResponse {
            client_id: "fake-node".into(),
            host_address: "127.0.0.1".into(),
            vcpu: 2,
            ram_mb: 512,
            build_id: "fake-build".into(),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::SandboxUpdateRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        let Some(sandbox) = state.sandboxes.get_mut(&request.sandbox_id) else {
            return Err(Status::not_found("no such sandbox"));
        };
        if let Some(end) = request.end_time {
            sandbox.end_time = Some(end);
        }
        if let (Some(allow), Some(config)) =
            (request.allow_internet_access, sandbox.config.as_mut())
        {
            config.allow_internet_access = Some(allow);
        }
        state.updates.push(request);
        Ok(Response::new(()))
    }

    async fn list(&self, _: Request<()>) -> Result<Response<pb::SandboxListResponse>, Status> {
        let sandboxes = self.state().sandboxes.values().cloned().collect();
        Ok(Response::new(pb::SandboxListResponse { sandboxes }))
    }

    async fn get(
        &self,
        request: Request<pb::SandboxGetRequest>,
    ) -> Result<Response<pb::RunningSandbox>, Status> {
        self.state()
            .sandboxes
            .get(&request.into_inner().sandbox_id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such sandbox"))
    }

    async fn delete(
        &self,
        request: Request<pb::SandboxDeleteRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().sandbox_id;
        let mut state = self.state();
        if state.sandboxes.remove(&id).is_none() {
            return Err(Status::not_found("no such sandbox"));
        }
        state.deleted.push(id);
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        _: Request<pb::SandboxMetricsRequest>,
    ) -> Result<Response<pb::SandboxMetrics>, Status> {
        Ok(Response::new(pb::SandboxMetrics::default()))
    }

    async fn console(
        &self,
        request: Request<pb::SandboxConsoleRequest>,
    ) -> Result<Response<pb::SandboxConsole>, Status> {
        let id = request.into_inner().sandbox_id;
        if !self.state().sandboxes.contains_key(&id) {
            return Err(Status::not_found("no such sandbox"));
        }
        let output =
            b"[    0.000000] Linux version 6.12\r\nhearth-init: starting envd\r\n".to_vec();
        Ok(Response::new(pb::SandboxConsole {
            total_bytes: output.len() as u64,
            output,
        }))
    }
}

#[tonic::async_trait]
impl InfoService for FakeNode {
    async fn service_info(
        &self,
        _: Request<()>,
    ) -> Result<Response<pb::ServiceInfoResponse>, Status> {
        let state = self.state();
        Ok(Response::new(pb::ServiceInfoResponse {
            node_id: "fake-node".into(),
            metric_sandboxes_running: state.sandboxes.len() as i64,
            max_sandboxes: state.max_sandboxes,
            ..Default::default()
        }))
    }
}
