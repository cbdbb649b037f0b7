//! The gRPC face of the template builder: `TemplateService.Build` streams a
//! build's log and ends with its result; dropping the stream cancels it.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use hearth_proto::orchestrator as pb;
use pb::template_service_server::TemplateService;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::build::{
    BaseSource, BuildFailure, BuildLog, BuildSpec, LogLine, RawStep, TemplateBuilder,
};
use crate::runtime::BASE_TEMPLATE;
use crate::sandboxes::SandboxManager;

/// Builds templates for the control plane.
#[derive(Debug, Clone)]
pub struct TemplateBuilds {
    manager: Arc<SandboxManager>,
    builder: Arc<TemplateBuilder>,
}

impl TemplateBuilds {
    pub fn new(manager: Arc<SandboxManager>, builder: Arc<TemplateBuilder>) -> Self {
        Self { manager, builder }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn spec_from(request: pb::TemplateBuildRequest) -> Result<BuildSpec, Status> {
    if !valid_id(&request.template_id) || !valid_id(&request.build_id) {
        return Err(Status::invalid_argument("invalid template or build id"));
    }
    if request.template_id == BASE_TEMPLATE {
        return Err(Status::invalid_argument(
            "the base template is the node's own",
        ));
    }
    let vcpus = u8::try_from(request.vcpu)
        .ok()
        .filter(|v| (1..=16).contains(v))
        .ok_or_else(|| Status::invalid_argument("vcpu must be 1 to 16"))?;
    let memory_mib = u32::try_from(request.ram_mb)
        .ok()
        .filter(|m| (128..=65536).contains(m))
        .ok_or_else(|| Status::invalid_argument("ram_mb must be 128 to 65536"))?;
    let disk_mib = u64::try_from(request.disk_size_mb)
        .ok()
        .filter(|d| *d == 0 || (512..=1 << 20).contains(d))
        .ok_or_else(|| Status::invalid_argument("disk_size_mb must be 0 or 512 to 1048576"))?;
    let source = match (
        request.from_image.is_empty(),
        request.from_template.is_empty(),
    ) {
        (false, true) => BaseSource::Image {
            reference: request.from_image,
            credentials: request.registry.map(|r| hearth_oci::Credentials {
                username: r.username,
                password: r.password,
            }),
        },
        (true, false) => BaseSource::Template(request.from_template),
        _ => {
            return Err(Status::invalid_argument(
                "exactly one of from_image and from_template",
            ));
        }
    };
    Ok(BuildSpec {
        template_id: request.template_id,
        build_id: request.build_id,
        team_id: request.team_id,
        vcpus,
        memory_mib,
        disk_mib,
        source,
        force: request.force,
        steps: request
            .steps
            .into_iter()
            .map(|s| RawStep {
                kind: s.r#type,
                args: s.args,
                files_hash: s.files_hash,
                force: s.force,
                files_url: s.files_url,
            })
            .collect(),
        start_cmd: Some(request.start_cmd).filter(|c| !c.is_empty()),
        ready_cmd: Some(request.ready_cmd).filter(|c| !c.is_empty()),
    })
}

fn log_event(line: LogLine) -> pb::TemplateBuildEvent {
    pb::TemplateBuildEvent {
        event: Some(pb::template_build_event::Event::Log(
            pb::TemplateBuildLogEntry {
                timestamp: Some(crate::grpc::from_time(line.time)),
                level: line.level.as_str().into(),
                message: line.message,
                step: line.step.unwrap_or_default(),
            },
        )),
    }
}

fn failure_event(failure: BuildFailure) -> pb::TemplateBuildEvent {
    pb::TemplateBuildEvent {
        event: Some(pb::template_build_event::Event::Failure(
            pb::TemplateBuildFailure {
                message: failure.message,
                step: failure.step,
            },
        )),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TemplateBuildEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TemplateService for TemplateBuilds {
    type BuildStream = EventStream;

    async fn build(
        &self,
        request: Request<pb::TemplateBuildRequest>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let spec = spec_from(request.into_inner())?;
        // A build writes layers and a snapshot and runs a VM: refused up
        // front on a node whose disk is nearly full or whose memory is
        // committed, rather than failing midway. Its VM's memory stays
        // committed until the build ends.
        let reservation = self
            .manager
            .reserve_build(spec.memory_mib)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        let (log, mut lines) = BuildLog::new();
        let (events, receiver) = mpsc::channel(256);
        let builder = self.builder.clone();
        let manager = self.manager.clone();
        let span =
            tracing::info_span!("build", template = %spec.template_id, build = %spec.build_id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _reservation = reservation;
                let build = builder.build(spec, log);
                tokio::pin!(build);
                let outcome = loop {
                    tokio::select! {
                        line = lines.recv() => {
                            if let Some(line) = line
                                && events.send(Ok(log_event(line))).await.is_err()
                            {
                                tracing::info!("the build's caller went away; cancelling it");
                                return;
                            }
                        }
                        outcome = &mut build => break outcome,
                        () = events.closed() => {
                            tracing::info!("the build's caller went away; cancelling it");
                            return;
                        }
                    }
                };
                while let Ok(line) = lines.try_recv() {
                    let _ = events.send(Ok(log_event(line))).await;
                }
                manager
                    .runtime()
                    .telemetry
                    .build(crate::telemetry::Outcome::of(&outcome));
                let event = match outcome {
                    Ok(template) => {
                        let meta = template.meta.clone();
                        let disk_mib = template.disk_size() >> 20;
                        manager.register_template(template);
                        tracing::info!("template built");
                        pb::TemplateBuildEvent {
                            event: Some(pb::template_build_event::Event::Result(
                                pb::TemplateBuildResult {
                                    envd_version: meta.envd_version,
                                    vcpu: i64::from(meta.vcpus),
                                    ram_mb: i64::from(meta.memory_mib),
                                    disk_size_mb: i64::try_from(disk_mib).unwrap_or(i64::MAX),
                                },
                            )),
                        }
                    }
                    Err(failure) => failure_event(failure),
                };
                let _ = events.send(Ok(event)).await;
            },
            span,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn delete(
        &self,
        request: Request<pb::TemplateDeleteRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().template_id;
        if id == BASE_TEMPLATE || !valid_id(&id) {
            return Err(Status::invalid_argument("not a template this node built"));
        }
        // A clone's overlay names its template's disk, so the files of a
        // build that sandboxes still run stay (until the node's next start);
        // builds that paused sandboxes or snapshots need are not forgotten.
        for template in self.manager.forget_template(&id) {
            if !self.manager.runs_build(&id, &template.meta.build_id) {
                let _ = std::fs::remove_dir_all(&template.dir);
            }
        }
        Ok(Response::new(()))
    }
}
