//! A node that keeps sandboxes as records only: the control plane's tests
//! exercise the API without VMs. Every call is recorded for assertions.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use std::pin::Pin;

use hearth_proto::orchestrator as pb;
use pb::info_service_server::{InfoService, InfoServiceServer};
use pb::sandbox_service_server::{SandboxService, SandboxServiceServer};
use pb::template_build_event::Event;
use pb::template_service_server::{TemplateService, TemplateServiceServer};
use tonic::{Request, Response, Status};

/// How the fake node's next builds go.
#[derive(Debug, Clone)]
pub enum BuildPlan {
    /// Streams `lines` log lines (the first step "base", then "1", …),
    /// then a result with the requested shape and envd 0.6.5.
    Succeed { lines: usize },
    /// Streams `lines` log lines, then a failure at `step`.
    Fail {
        lines: usize,
        message: String,
        step: String,
    },
    /// Streams `lines` log lines and then never ends (until the stream is
    /// dropped, which it records as a cancel).
    Hang { lines: usize },
    /// Refuses the build outright.
    Refuse(tonic::Code, String),
}

impl Default for BuildPlan {
    fn default() -> Self {
        Self::Succeed { lines: 3 }
    }
}

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
    pub build_plan: BuildPlan,
    /// Every build request, in order.
    pub builds: Vec<pb::TemplateBuildRequest>,
    /// Builds whose stream the control plane dropped before their end.
    pub cancelled_builds: Vec<String>,
    /// Templates the control plane asked this node to forget.
    pub deleted_templates: Vec<String>,
    /// Slot addresses the next creates get, in order; once it is empty
    /// every sandbox gets 127.0.0.1 (one slot, reused by each create).
    pub addresses: VecDeque<String>,
    /// How long each create takes before it answers (a slow boot).
    pub create_delay: Option<std::time::Duration>,
    /// Every sandbox a delete was asked for, known or not.
    pub delete_asked: Vec<String>,
    /// The `x-request-id` each create came with.
    pub create_request_ids: Vec<Option<String>>,
    /// Each delete's and pause's sandbox and reason, in order.
    pub stop_reasons: Vec<(String, pb::StopReason)>,
    /// Sandboxes paused with only their filesystem.
    pub paused_without_memory: Vec<String>,
    /// Snapshots held, by id: the sandbox each was taken of.
    pub snapshots: HashMap<String, String>,
    /// Every log request, in order.
    pub log_requests: Vec<pb::SandboxLogsRequest>,
}

/// The samples the fake node has of every sandbox it ever created: at
/// seconds 100, 101 and 102, with CPU use 10, 20.456 and 30 %.
pub fn fake_samples() -> Vec<pb::GuestMetricSample> {
    [(100, 10.0), (101, 20.456), (102, 30.0)]
        .into_iter()
        .map(|(at_secs, cpu_used_pct)| pb::GuestMetricSample {
            at_secs,
            cpu_count: 2,
            cpu_used_pct,
            mem_total: 512 << 20,
            mem_used: 100 << 20,
            mem_cache: 10 << 20,
            disk_used: 1 << 30,
            disk_total: 2 << 30,
        })
        .collect()
}

/// The lines the fake node has for every sandbox it ever created, oldest
/// first (it filters by nothing: tests look at what was asked).
pub fn fake_log_lines() -> Vec<pb::SandboxLogLine> {
    vec![
        pb::SandboxLogLine {
            at_ms: 1_700_000_000_000,
            line: r#"{"level":"info","logger":"node","message":"Sandbox created","timestamp":"2023-11-14T22:13:20.000Z"}"#.into(),
        },
        pb::SandboxLogLine {
            at_ms: 1_700_000_000_001,
            line: r#"{"level":"info","logger":"process","message":"Process with pid 7 ended","pid":7,"exit_code":0,"process_result":{"exited":true}}"#.into(),
        },
    ]
}

#[derive(Debug, Clone)]
pub struct FakeNode(pub Arc<Mutex<FakeState>>);

impl FakeNode {
    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the node on a loopback port; returns its address.
    pub async fn start() -> std::io::Result<(Self, String)> {
        Self::start_requiring(None).await
    }

    /// Serves the node, refusing calls without `token` as the real node's
    /// interceptor does.
    pub async fn start_requiring(
        token: Option<hearth_proto::auth::NodeToken>,
    ) -> std::io::Result<(Self, String)> {
        let node = Self(Arc::new(Mutex::new(FakeState {
            max_sandboxes: 1000,
            ..FakeState::default()
        })));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let router = tonic::transport::Server::builder()
            .layer(tonic::service::InterceptorLayer::new(
                hearth_proto::auth::RequireToken(token),
            ))
            .add_service(SandboxServiceServer::new(node.clone()))
            .add_service(InfoServiceServer::new(node.clone()))
            .add_service(TemplateServiceServer::new(node.clone()));
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
        let request_id = request
            .metadata()
            .get(hearth_proto::REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        self.state().create_request_ids.push(request_id);
        let request = request.into_inner();
        let delay = self.state().create_delay;
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let config = request
            .sandbox
            .ok_or_else(|| Status::invalid_argument("no sandbox"))?;
        let (id, conflicting_store, host_address) = {
            let mut state = self.state();
            if state.failing_templates.contains(&config.template_id) {
                // As a node words it: with a host path the client must not see.
                return Err(Status::internal(format!(
                    "restoring /var/lib/hearth/v1/templates/{}/device.state: the snapshot is corrupt",
                    config.template_id
                )));
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
            let host_address = state
                .addresses
                .pop_front()
                .unwrap_or_else(|| "127.0.0.1".into());
            state.sandboxes.insert(
                id.clone(),
                pb::RunningSandbox {
                    sandbox_id: id.clone(),
                    client_id: "fake-node".into(),
                    vcpu: 2,
                    ram_mb: 512,
                    build_id: "fake-build".into(),
                    host_address: host_address.clone(),
                    start_time: request.start_time,
                    end_time: request.end_time,
                    config: Some(config),
                    ..Default::default()
                },
            );
            (id, conflicting_store, host_address)
        };
        if let Some(store) = conflicting_store {
            store
                .insert_sandbox(&crate::common::record(&id))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(pb::SandboxCreateResponse {
            client_id: "fake-node".into(),
            host_address,
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
        let request = request.into_inner();
        let reason = request.reason();
        let id = request.sandbox_id;
        let mut state = self.state();
        state.stop_reasons.push((id.clone(), reason));
        state.delete_asked.push(id.clone());
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

    async fn pause(
        &self,
        request: Request<pb::SandboxPauseRequest>,
    ) -> Result<Response<pb::RunningSandbox>, Status> {
        let request = request.into_inner();
        let reason = request.reason();
        let id = request.sandbox_id;
        let mut state = self.state();
        state.stop_reasons.push((id.clone(), reason));
        let sandbox = state
            .sandboxes
            .get_mut(&id)
            .ok_or_else(|| Status::not_found("no such sandbox"))?;
        if sandbox.paused {
            return Err(Status::failed_precondition("paused already"));
        }
        sandbox.paused = true;
        let answer = sandbox.clone();
        if request.filesystem_only {
            state.paused_without_memory.push(id);
        }
        Ok(Response::new(answer))
    }

    async fn snapshot(
        &self,
        request: Request<pb::SandboxSnapshotRequest>,
    ) -> Result<Response<pb::SandboxSnapshot>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        let sandbox = state
            .sandboxes
            .get(&request.sandbox_id)
            .ok_or_else(|| Status::not_found("no such sandbox"))?;
        if sandbox.paused {
            return Err(Status::failed_precondition("paused"));
        }
        let answer = pb::SandboxSnapshot {
            snapshot_id: request.snapshot_id.clone(),
            build_id: sandbox.build_id.clone(),
            vcpu: 2,
            ram_mb: 512,
            memory_bytes: 1 << 20,
            disk_bytes: 1 << 20,
        };
        state
            .snapshots
            .insert(request.snapshot_id, request.sandbox_id);
        Ok(Response::new(answer))
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::SnapshotDeleteRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().snapshot_id;
        match self.state().snapshots.remove(&id) {
            Some(_) => Ok(Response::new(())),
            None => Err(Status::not_found("no such snapshot")),
        }
    }

    /// A resumed sandbox comes back at another address, as a node's does.
    async fn resume(
        &self,
        request: Request<pb::SandboxResumeRequest>,
    ) -> Result<Response<pb::RunningSandbox>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        let sandbox = state
            .sandboxes
            .get_mut(&request.sandbox_id)
            .ok_or_else(|| Status::not_found("no such sandbox"))?;
        if !sandbox.paused {
            return Err(Status::failed_precondition("not paused"));
        }
        sandbox.paused = false;
        sandbox.host_address = format!("{}.resumed", sandbox.host_address);
        sandbox.end_time = request.end_time;
        Ok(Response::new(sandbox.clone()))
    }

    async fn logs(
        &self,
        request: Request<pb::SandboxLogsRequest>,
    ) -> Result<Response<pb::SandboxLogs>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        let known = state.sandboxes.contains_key(&request.sandbox_id)
            || state.delete_asked.contains(&request.sandbox_id);
        state.log_requests.push(request);
        if !known {
            return Err(Status::not_found("no log of that sandbox"));
        }
        Ok(Response::new(pb::SandboxLogs {
            lines: fake_log_lines(),
        }))
    }

    async fn metric_series(
        &self,
        request: Request<pb::SandboxMetricSeriesRequest>,
    ) -> Result<Response<pb::SandboxMetricSeries>, Status> {
        let request = request.into_inner();
        let state = self.state();
        if !state.sandboxes.contains_key(&request.sandbox_id)
            && !state.delete_asked.contains(&request.sandbox_id)
        {
            return Err(Status::not_found("no metrics of that sandbox"));
        }
        let mut samples: Vec<_> = fake_samples()
            .into_iter()
            .filter(|s| request.start_secs.is_none_or(|start| s.at_secs >= start))
            .filter(|s| request.end_secs.is_none_or(|end| s.at_secs <= end))
            .collect();
        if request.latest_only {
            samples.drain(..samples.len().saturating_sub(1));
        }
        Ok(Response::new(pb::SandboxMetricSeries { samples }))
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

fn log_line(i: usize) -> pb::TemplateBuildEvent {
    let step = if i == 0 {
        "base".to_owned()
    } else {
        i.to_string()
    };
    pb::TemplateBuildEvent {
        event: Some(Event::Log(pb::TemplateBuildLogEntry {
            timestamp: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp(),
                nanos: 0,
            }),
            level: if i % 10 == 9 { "warn" } else { "info" }.into(),
            message: format!("line {i}"),
            step,
        })),
    }
}

type BuildStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::TemplateBuildEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TemplateService for FakeNode {
    type BuildStream = BuildStream;

    async fn build(
        &self,
        request: Request<pb::TemplateBuildRequest>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let request = request.into_inner();
        let plan = {
            let mut state = self.state();
            state.builds.push(request.clone());
            state.build_plan.clone()
        };
        let lines = match &plan {
            BuildPlan::Refuse(code, message) => return Err(Status::new(*code, message.clone())),
            BuildPlan::Succeed { lines }
            | BuildPlan::Fail { lines, .. }
            | BuildPlan::Hang { lines } => *lines,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let node = self.clone();
        tokio::spawn(async move {
            let build_id = request.build_id.clone();
            let cancelled = || node.state().cancelled_builds.push(build_id.clone());
            for i in 0..lines {
                if tx.send(Ok(log_line(i))).await.is_err() {
                    cancelled();
                    return;
                }
            }
            let end = match plan {
                BuildPlan::Succeed { .. } => Event::Result(pb::TemplateBuildResult {
                    envd_version: "0.6.5".into(),
                    vcpu: request.vcpu,
                    ram_mb: request.ram_mb,
                    disk_size_mb: 2048,
                }),
                BuildPlan::Fail { message, step, .. } => {
                    Event::Failure(pb::TemplateBuildFailure { message, step })
                }
                _ => {
                    tx.closed().await;
                    cancelled();
                    return;
                }
            };
            let _ = tx
                .send(Ok(pb::TemplateBuildEvent { event: Some(end) }))
                .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delete(
        &self,
        request: Request<pb::TemplateDeleteRequest>,
    ) -> Result<Response<()>, Status> {
        self.state()
            .deleted_templates
            .push(request.into_inner().template_id);
        Ok(Response::new(()))
    }
}
