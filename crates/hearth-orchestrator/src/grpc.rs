//! The gRPC face of the node: `SandboxService` and `InfoService` over the
//! [`SandboxManager`], plus the standard gRPC health service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hearth_proto::auth::{NodeToken, RequireToken};
use hearth_proto::orchestrator as pb;
use hearth_vmm::sandbox_log::{LogLevel, LogQuery};
use pb::info_service_server::{InfoService, InfoServiceServer};
use pb::sandbox_service_server::{SandboxService, SandboxServiceServer};
use tonic::service::InterceptorLayer;
use tonic::{Request, Response, Status};

use crate::abandon::run_or_undo;
use crate::sandbox_history::History;
use crate::sandboxes::{SandboxError, SandboxInfo, SandboxManager, SandboxSpec};

/// Most log lines one `Logs` call returns (E2B's limit too).
const MAX_LOG_LINES: u32 = 1000;

/// The gRPC services of one node.
#[derive(Debug, Clone)]
pub struct NodeService {
    manager: Arc<SandboxManager>,
    node_id: String,
    builds: Option<crate::grpc_templates::TemplateBuilds>,
    /// The token every call must carry; `None` lets every caller in.
    token: Option<NodeToken>,
}

impl NodeService {
    pub fn new(manager: Arc<SandboxManager>, node_id: String) -> Self {
        Self {
            manager,
            node_id,
            builds: None,
            token: None,
        }
    }

    /// Refuses every call without `token` (`UNAUTHENTICATED`), the health
    /// service's too. A node reachable from anything but its own process
    /// needs one: its API creates VMs as root.
    pub fn with_token(mut self, token: NodeToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Also serves `TemplateService` with this builder.
    pub fn with_builder(mut self, builder: Arc<crate::build::TemplateBuilder>) -> Self {
        self.builds = Some(crate::grpc_templates::TemplateBuilds::new(
            self.manager.clone(),
            builder,
        ));
        self
    }

    /// Serves the node's gRPC API on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<SandboxServiceServer<NodeService>>()
            .await;
        tonic::transport::Server::builder()
            .trace_fn(call_span)
            .layer(InterceptorLayer::new(RequireToken(self.token.clone())))
            .add_service(health)
            .add_service(SandboxServiceServer::new(self.clone()))
            .add_optional_service(
                self.builds
                    .clone()
                    .map(pb::template_service_server::TemplateServiceServer::new),
            )
            .add_service(InfoServiceServer::new(self))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown,
            )
            .await
    }
}

/// The span of one call: named by its method, carrying the request id the
/// control plane sent (so the node's log lines name the API request they
/// serve) and continuing the caller's trace.
fn call_span(request: &http::Request<()>) -> tracing::Span {
    // At `warn`, the default level: every line logged meanwhile names it.
    let span = tracing::warn_span!(
        "grpc",
        otel.name = %request.uri().path(),
        otel.kind = "server",
        request_id = tracing::field::Empty,
    );
    let request_id = request
        .headers()
        .get(hearth_proto::REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| hearth_proto::is_request_id(id));
    if let Some(id) = request_id {
        span.record("request_id", id);
    }
    hearth_trace::context::continue_trace(&span, request.headers());
    span
}

/// A stop reason as the sandbox's log names it.
fn stop_reason(reason: pb::StopReason) -> &'static str {
    match reason {
        pb::StopReason::Unspecified | pb::StopReason::Requested => crate::sandboxes::REQUESTED,
        pb::StopReason::Timeout => crate::sandboxes::TIMEOUT,
        pb::StopReason::Orphaned => crate::sandboxes::ORPHANED,
    }
}

fn status(error: SandboxError) -> Status {
    let message = error.to_string();
    match error {
        SandboxError::NotFound(_)
        | SandboxError::UnknownTemplate(_)
        | SandboxError::UnknownSnapshot(_) => Status::not_found(message),
        SandboxError::AlreadyExists(_) => Status::already_exists(message),
        SandboxError::Starting(_) | SandboxError::Paused(_) | SandboxError::NotPaused(_) => {
            Status::failed_precondition(message)
        }
        SandboxError::InvalidArgument(_) => Status::invalid_argument(message),
        SandboxError::ResourceExhausted(_) => Status::resource_exhausted(message),
        SandboxError::Node(_) => Status::internal(message),
    }
}

/// Bytes a (sparse) file takes on disk.
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

fn to_time(timestamp: &prost_types::Timestamp) -> Result<SystemTime, Status> {
    let seconds = u64::try_from(timestamp.seconds)
        .map_err(|_| Status::invalid_argument("timestamps before 1970 are not accepted"))?;
    let nanos = u32::try_from(timestamp.nanos)
        .map_err(|_| Status::invalid_argument("negative nanoseconds in a timestamp"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos))
}

pub(crate) fn from_time(time: SystemTime) -> prost_types::Timestamp {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

fn non_negative(value: i64, what: &str) -> Result<u32, Status> {
    u32::try_from(value).map_err(|_| Status::invalid_argument(format!("invalid {what} {value}")))
}

fn spec_from(request: pb::SandboxCreateRequest) -> Result<SandboxSpec, Status> {
    let config = request
        .sandbox
        .ok_or_else(|| Status::invalid_argument("a create needs `sandbox`"))?;
    let egress = config.network.and_then(|n| n.egress).unwrap_or_default();
    Ok(SandboxSpec {
        vcpus: non_negative(config.vcpu, "vcpu")?,
        memory_mib: non_negative(config.ram_mb, "ram_mb")?,
        end_time: request.end_time.as_ref().map(to_time).transpose()?,
        sandbox_id: config.sandbox_id,
        template_id: config.template_id,
        build_id: Some(config.build_id).filter(|b| !b.is_empty()),
        env_vars: config.env_vars,
        metadata: config.metadata,
        access_token: config.envd_access_token.filter(|t| !t.is_empty()),
        default_user: Some(config.default_user).filter(|u| !u.is_empty()),
        alias: config.alias,
        team_id: config.team_id,
        execution_id: config.execution_id,
        allow_internet: config.allow_internet_access.unwrap_or(true),
        allowed_cidrs: egress.allowed_cidrs,
        denied_cidrs: egress.denied_cidrs,
    })
}

impl NodeService {
    fn running(&self, info: SandboxInfo) -> pb::RunningSandbox {
        let spec = info.spec;
        pb::RunningSandbox {
            config: Some(pb::SandboxConfig {
                template_id: spec.template_id,
                build_id: info.build_id.clone(),
                sandbox_id: spec.sandbox_id.clone(),
                env_vars: HashMap::new(),
                metadata: spec.metadata,
                alias: spec.alias,
                envd_version: String::new(),
                vcpu: i64::from(info.vcpus),
                ram_mb: i64::from(info.memory_mib),
                team_id: spec.team_id.clone(),
                envd_access_token: None,
                execution_id: spec.execution_id.clone(),
                allow_internet_access: Some(spec.allow_internet),
                network: None,
                default_user: spec.default_user.unwrap_or_default(),
            }),
            client_id: self.node_id.clone(),
            start_time: Some(from_time(info.start_time)),
            end_time: info.end_time.map(from_time),
            sandbox_id: spec.sandbox_id,
            team_id: spec.team_id,
            execution_id: spec.execution_id,
            vcpu: i64::from(info.vcpus),
            ram_mb: i64::from(info.memory_mib),
            host_address: info.host_address.to_string(),
            build_id: info.build_id,
            paused: info.paused,
        }
    }
}

impl NodeService {
    /// The log and metrics the node keeps of sandbox `id`, also after it
    /// ended; not found when it keeps none.
    fn history_of(&self, id: &str) -> Result<Arc<History>, Status> {
        self.manager
            .runtime()
            .history
            .get(id)
            .ok_or_else(|| Status::not_found(format!("no history of sandbox '{id}'")))
    }
}

#[tonic::async_trait]
impl SandboxService for NodeService {
    async fn create(
        &self,
        request: Request<pb::SandboxCreateRequest>,
    ) -> Result<Response<pb::SandboxCreateResponse>, Status> {
        let spec = spec_from(request.into_inner())?;
        // The create runs to its end even if the caller goes away (deadline,
        // dropped connection): stopped halfway it would leave its id
        // reserved and its VM or slot unaccounted for. What it made for a
        // caller that left is deleted: that caller has no record of it.
        let manager = self.manager.clone();
        let undo_manager = self.manager.clone();
        let id = spec.sandbox_id.clone();
        let undo = move |created: Result<SandboxInfo, SandboxError>| async move {
            if created.is_ok() {
                tracing::warn!(sandbox_id = %id, "the create's caller went away; deleting what it made");
                if let Err(error) = undo_manager.delete(&id).await {
                    tracing::warn!(sandbox_id = %id, %error, "deleting an abandoned create failed");
                }
            }
        };
        let info = run_or_undo(async move { manager.create(spec).await }, undo)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(pb::SandboxCreateResponse {
            client_id: self.node_id.clone(),
            host_address: info.host_address.to_string(),
            vcpu: i64::from(info.vcpus),
            ram_mb: i64::from(info.memory_mib),
            build_id: info.build_id,
        }))
    }

    async fn update(
        &self,
        request: Request<pb::SandboxUpdateRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        if request.egress.is_some() || request.allow_internet_access.is_some() {
            let (allowed, denied) = match request.egress {
                Some(egress) => (egress.allowed_cidrs, egress.denied_cidrs),
                None => {
                    let spec = self.manager.get(&request.sandbox_id).map_err(status)?.spec;
                    (spec.allowed_cidrs, spec.denied_cidrs)
                }
            };
            self.manager
                .update_egress(
                    &request.sandbox_id,
                    allowed,
                    denied,
                    request.allow_internet_access,
                )
                .await
                .map_err(status)?;
        }
        if let Some(end) = request.end_time.as_ref() {
            self.manager
                .update_end_time(&request.sandbox_id, to_time(end)?)
                .map_err(status)?;
        } else {
            self.manager.get(&request.sandbox_id).map_err(status)?;
        }
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        _request: Request<()>,
    ) -> Result<Response<pb::SandboxListResponse>, Status> {
        let sandboxes = self
            .manager
            .list()
            .into_iter()
            .map(|info| self.running(info))
            .collect();
        Ok(Response::new(pb::SandboxListResponse { sandboxes }))
    }

    async fn get(
        &self,
        request: Request<pb::SandboxGetRequest>,
    ) -> Result<Response<pb::RunningSandbox>, Status> {
        let info = self
            .manager
            .get(&request.into_inner().sandbox_id)
            .map_err(status)?;
        Ok(Response::new(self.running(info)))
    }

    async fn metrics(
        &self,
        request: Request<pb::SandboxMetricsRequest>,
    ) -> Result<Response<pb::SandboxMetrics>, Status> {
        let sample = self
            .manager
            .metrics(&request.into_inner().sandbox_id)
            .await
            .map_err(status)?;
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(Response::new(pb::SandboxMetrics {
            cpu_seconds: sample.cpu_seconds,
            memory_rss_bytes: signed(sample.memory_rss_bytes),
            memory_pss_bytes: signed(sample.memory_pss_bytes),
            disk_bytes: signed(sample.disk_bytes),
        }))
    }

    async fn console(
        &self,
        request: Request<pb::SandboxConsoleRequest>,
    ) -> Result<Response<pb::SandboxConsole>, Status> {
        let snapshot = self
            .manager
            .console(&request.into_inner().sandbox_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SandboxConsole {
            output: snapshot.bytes,
            total_bytes: snapshot.total_bytes,
        }))
    }

    async fn logs(
        &self,
        request: Request<pb::SandboxLogsRequest>,
    ) -> Result<Response<pb::SandboxLogs>, Status> {
        let request = request.into_inner();
        let history = self.history_of(&request.sandbox_id)?;
        let query = LogQuery {
            start_ms: request.start_ms,
            end_ms: request.end_ms,
            limit: request.limit.min(MAX_LOG_LINES) as usize,
            backward: request.backward,
            min_level: match request.min_level() {
                pb::LogLevel::Unspecified => None,
                pb::LogLevel::Debug => Some(LogLevel::Debug),
                pb::LogLevel::Info => Some(LogLevel::Info),
                pb::LogLevel::Warn => Some(LogLevel::Warn),
                pb::LogLevel::Error => Some(LogLevel::Error),
            },
            search: request.search,
        };
        let lines = history
            .log
            .query(&query)
            .into_iter()
            .map(|line| pb::SandboxLogLine {
                at_ms: line.at_ms,
                line: line.line,
            })
            .collect();
        Ok(Response::new(pb::SandboxLogs { lines }))
    }

    async fn metric_series(
        &self,
        request: Request<pb::SandboxMetricSeriesRequest>,
    ) -> Result<Response<pb::SandboxMetricSeries>, Status> {
        let request = request.into_inner();
        let history = self.history_of(&request.sandbox_id)?;
        let samples = if request.latest_only {
            history.metrics.latest().into_iter().collect()
        } else {
            history.metrics.range(request.start_secs, request.end_secs)
        };
        let samples = samples
            .into_iter()
            .map(|sample| pb::GuestMetricSample {
                at_secs: sample.at_secs,
                cpu_count: sample.guest.cpu_count,
                cpu_used_pct: sample.guest.cpu_used_pct,
                mem_total: sample.guest.mem_total,
                mem_used: sample.guest.mem_used,
                mem_cache: sample.guest.mem_cache,
                disk_used: sample.guest.disk_used,
                disk_total: sample.guest.disk_total,
            })
            .collect();
        Ok(Response::new(pb::SandboxMetricSeries { samples }))
    }

    async fn pause(
        &self,
        request: Request<pb::SandboxPauseRequest>,
    ) -> Result<Response<pb::RunningSandbox>, Status> {
        let request = request.into_inner();
        let reason = stop_reason(request.reason());
        let info = self
            .manager
            .pause_because(&request.sandbox_id, !request.filesystem_only, reason)
            .await
            .map_err(status)?;
        Ok(Response::new(self.running(info)))
    }

    async fn resume(
        &self,
        request: Request<pb::SandboxResumeRequest>,
    ) -> Result<Response<pb::RunningSandbox>, Status> {
        let request = request.into_inner();
        let end_time = request.end_time.as_ref().map(to_time).transpose()?;
        let info = self
            .manager
            .resume(&request.sandbox_id, end_time, request.fresh_boot)
            .await
            .map_err(status)?;
        Ok(Response::new(self.running(info)))
    }

    async fn snapshot(
        &self,
        request: Request<pb::SandboxSnapshotRequest>,
    ) -> Result<Response<pb::SandboxSnapshot>, Status> {
        let request = request.into_inner();
        let manager = self.manager.clone();
        // A caller that gave up never learns of the snapshot: it goes.
        let undo = {
            let manager = self.manager.clone();
            move |taken: Result<Arc<crate::snapshots::NodeSnapshot>, SandboxError>| async move {
                if let Ok(snapshot) = taken {
                    let _ = manager.delete_snapshot(&snapshot.id).await;
                }
            }
        };
        let snapshot = run_or_undo(
            async move {
                manager
                    .snapshot(&request.sandbox_id, &request.snapshot_id)
                    .await
            },
            undo,
        )
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)?;
        let size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let source = &snapshot.source.info;
        Ok(Response::new(pb::SandboxSnapshot {
            snapshot_id: snapshot.id.clone(),
            build_id: source.build_id.clone(),
            vcpu: source.vcpus,
            ram_mb: source.memory_mib,
            memory_bytes: allocated(&snapshot.files.state),
            disk_bytes: size(&snapshot.files.layer),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::SnapshotDeleteRequest>,
    ) -> Result<Response<()>, Status> {
        self.manager
            .delete_snapshot(&request.into_inner().snapshot_id)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn delete(
        &self,
        request: Request<pb::SandboxDeleteRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        self.manager
            .delete_because(&request.sandbox_id, stop_reason(request.reason()))
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }
}

#[tonic::async_trait]
impl InfoService for NodeService {
    async fn service_info(
        &self,
        _request: Request<()>,
    ) -> Result<Response<pb::ServiceInfoResponse>, Status> {
        let runtime = self.manager.runtime();
        let (cpu_allocated, mib_allocated) = self.manager.allocated();
        let (memory_total, memory_available) = crate::metrics::host_memory();
        let limits = self.manager.limits();
        Ok(Response::new(pb::ServiceInfoResponse {
            node_id: self.node_id.clone(),
            service_version: env!("CARGO_PKG_VERSION").into(),
            accelerator: runtime.accel.accel.to_string(),
            accelerator_reason: runtime.accel.reason.clone(),
            metric_sandboxes_running: self.manager.list().len() as i64,
            metric_cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()) as i64,
            metric_memory_total_bytes: memory_total as i64,
            metric_memory_used_bytes: memory_total.saturating_sub(memory_available) as i64,
            metric_cpu_allocated: cpu_allocated as i64,
            metric_memory_allocated_bytes: i64::try_from(mib_allocated.saturating_mul(1 << 20))
                .unwrap_or(i64::MAX),
            max_sandboxes: limits.max_sandboxes as i64,
            max_starting_sandboxes: limits.max_starting as i64,
        }))
    }
}

/// Binds the node's gRPC address.
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}
