//! Template builds this process runs. Each runs in a task of its own, not
//! tied to the HTTP request that started it, at most `max_concurrent_builds`
//! at once (the rest stay `waiting`), and writes its node's log lines to the
//! store as they arrive. Aborting a build's task drops its gRPC stream,
//! which is how the node learns to cancel it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hearth_proto::orchestrator::template_build_event::Event;
use hearth_proto::orchestrator::{
    TemplateBuildLogEntry, TemplateBuildRequest, TemplateBuildResult,
};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::state::AppState;
use crate::store::{BuildLogRecord, BuildShape, StoreResult, now_ms};

/// The step a failure is blamed on when the build never got going; the
/// SDKs point at the template's base for it.
pub const BASE_STEP: &str = "base";
/// Why builds a previous process left unfinished ended.
pub const INTERRUPTED: &str = "interrupted: the control plane restarted";
/// Log lines stored per write, at most; fewer when fewer have arrived.
const LOG_BATCH: usize = 256;
/// A build's log is bounded, so a runaway build cannot fill the database.
const MAX_LOG_LINES: i64 = 100_000;
const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// A build whose start was accepted, as its task needs it.
#[derive(Debug, Clone)]
pub struct BuildJob {
    pub build_id: String,
    pub template_id: String,
    /// The node it runs on (already recorded with the build).
    pub node: String,
    pub request: TemplateBuildRequest,
}

#[derive(Debug)]
struct Running {
    template_id: String,
    task: AbortHandle,
}

/// The builds in flight and the slots they take turns on.
#[derive(Debug)]
pub struct Builds {
    slots: Arc<Semaphore>,
    max: usize,
    running: Mutex<HashMap<String, Running>>,
}

impl Builds {
    pub fn new(max_concurrent: usize) -> Self {
        let max = max_concurrent.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Running>) -> T) -> T {
        f(&mut self.running.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many builds this process has in flight (running or queued).
    pub fn in_flight(&self) -> usize {
        self.with(|running| running.len())
    }

    /// The templates with a build in flight (running or queued): their
    /// uploads are not pruned.
    pub fn templates_in_flight(&self) -> std::collections::HashSet<String> {
        self.with(|running| running.values().map(|r| r.template_id.clone()).collect())
    }

    /// Aborts every build of a template (its node cancels it); how many.
    pub fn cancel_template(&self, template_id: &str) -> usize {
        self.with(|running| {
            let ids: Vec<String> = running
                .iter()
                .filter(|(_, r)| r.template_id == template_id)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                if let Some(r) = running.remove(id) {
                    r.task.abort();
                }
            }
            ids.len()
        })
    }
}

/// Runs the build in a task of its own.
pub fn start(app: &Arc<AppState>, job: BuildJob) {
    let build_id = job.build_id.clone();
    let template_id = job.template_id.clone();
    let task_app = app.clone();
    // The map stays locked until the task is in it, so a task that ends at
    // once cannot try to remove itself first.
    app.builds.with(|running| {
        let task = tokio::spawn(async move {
            let build_id = job.build_id.clone();
            run(&task_app, job).await;
            task_app.builds.with(|running| running.remove(&build_id));
        });
        running.insert(
            build_id,
            Running {
                template_id,
                task: task.abort_handle(),
            },
        );
    });
}

/// Ends the builds a previous control plane started on this one's nodes:
/// their streams died with it. Call once, before any build starts.
pub async fn interrupt_leftovers(app: &AppState) -> StoreResult<u64> {
    let nodes: Vec<String> = app.nodes.all().iter().map(|n| n.name.clone()).collect();
    app.store.interrupt_builds(&nodes, INTERRUPTED).await
}

/// How a build ended.
enum Outcome {
    Ready(BuildShape),
    Failed {
        message: String,
        step: Option<String>,
    },
}

async fn run(app: &AppState, job: BuildJob) {
    let mut log = LogSink::new(app, &job.build_id);
    let slot = match app.builds.slots.clone().try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => {
            log.note(&format!(
                "Waiting for a free build slot ({} builds run at once)",
                app.builds.max
            ))
            .await;
            match app.builds.slots.clone().acquire_owned().await {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => return,
            }
        }
    };
    match app.store.mark_building(&job.build_id).await {
        Ok(true) => {}
        // Cancelled or ended meanwhile.
        Ok(false) => return,
        Err(error) => {
            tracing::warn!(build = %job.build_id, %error, "marking a build as building failed");
        }
    }
    tracing::info!(build = %job.build_id, template = %job.template_id, node = %job.node, "template build started");
    let outcome = execute(app, &job, &mut log).await;
    drop(slot);
    let stored = match &outcome {
        Outcome::Ready(shape) => app.store.finish_build_ready(&job.build_id, shape).await,
        Outcome::Failed { message, step } => {
            app.store
                .finish_build_error(&job.build_id, message, step.as_deref())
                .await
        }
    };
    match (stored, &outcome) {
        (Err(error), _) => {
            tracing::error!(build = %job.build_id, %error, "recording a build's end failed");
        }
        (Ok(_), Outcome::Ready(_)) => {
            tracing::info!(build = %job.build_id, template = %job.template_id, "template build ready");
        }
        (Ok(_), Outcome::Failed { message, step }) => {
            tracing::info!(build = %job.build_id, template = %job.template_id, %message, ?step, "template build failed");
        }
    }
}

fn too_slow(timeout: Duration) -> String {
    format!(
        "the build did not finish within {} s and was cancelled",
        timeout.as_secs()
    )
}

/// What a caller may read of a node's refusal: its own words when it
/// judged the request, a summary when the transport failed (the detail is
/// logged).
fn node_error(node: &str, status: &tonic::Status, what: &str) -> String {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unimplemented => format!("{what}: {}", status.message()),
        // The node's words name its disk and memory (paths, figures).
        Code::ResourceExhausted => {
            tracing::warn!(%node, message = %status.message(), "{what}");
            format!("{what}: the node has no room for a build now; try again later")
        }
        code => {
            tracing::warn!(%node, ?code, message = %status.message(), "{what}");
            if code == Code::Unavailable {
                format!("{what}: the node '{node}' could not be reached")
            } else {
                format!("{what} on the node '{node}'")
            }
        }
    }
}

/// The stream's end, before the lines that came with it are written.
enum End {
    Result(TemplateBuildResult),
    Failure(String, String),
    Broken(tonic::Status),
    Silent,
    Deadline,
}

async fn execute(app: &AppState, job: &BuildJob, log: &mut LogSink<'_>) -> Outcome {
    let base = |message: String| Outcome::Failed {
        message,
        step: Some(BASE_STEP.into()),
    };
    let Some(node) = app.nodes.find(&job.node) else {
        return base(format!(
            "the node '{}' is no longer part of this cluster",
            job.node
        ));
    };
    let timeout = app.config.build_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let request = crate::nodes::call_within(job.request.clone(), timeout);
    let stream = match tokio::time::timeout_at(deadline, node.templates().build(request)).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
            return base(too_slow(timeout));
        }
        Ok(Err(status)) => {
            return base(node_error(&job.node, &status, "the build could not start"));
        }
        Err(_) => return base(too_slow(timeout)),
    };
    let mut batches = stream.ready_chunks(LOG_BATCH);
    loop {
        let (lines, end) = match tokio::time::timeout_at(deadline, batches.next()).await {
            Err(_) => (Vec::new(), Some(End::Deadline)),
            Ok(None) => (Vec::new(), Some(End::Silent)),
            Ok(Some(batch)) => {
                let mut lines = Vec::new();
                let mut end = None;
                for item in batch {
                    match item.map(|event| event.event) {
                        Ok(Some(Event::Log(line))) => lines.push(line),
                        Ok(Some(Event::Result(result))) => end = Some(End::Result(result)),
                        Ok(Some(Event::Failure(f))) => end = Some(End::Failure(f.message, f.step)),
                        Ok(None) => {}
                        Err(status) => end = Some(End::Broken(status)),
                    }
                    if end.is_some() {
                        break;
                    }
                }
                (lines, end)
            }
        };
        log.write(&lines).await;
        let step = log.last_step.clone();
        match end {
            None => {}
            Some(End::Result(result)) => return Outcome::Ready(shape(job, &result)),
            Some(End::Failure(message, failed_step)) => {
                return Outcome::Failed {
                    message: if message.is_empty() {
                        "the build failed".into()
                    } else {
                        truncate(message)
                    },
                    step: Some(failed_step).filter(|s| !s.is_empty()).or(step),
                };
            }
            Some(End::Broken(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                return Outcome::Failed {
                    message: too_slow(timeout),
                    step,
                };
            }
            Some(End::Broken(status)) => {
                return Outcome::Failed {
                    message: node_error(&job.node, &status, "the build broke off"),
                    step,
                };
            }
            Some(End::Silent) => {
                return Outcome::Failed {
                    message: "the node ended the build without a result".into(),
                    step,
                };
            }
            Some(End::Deadline) => {
                return Outcome::Failed {
                    message: too_slow(timeout),
                    step,
                };
            }
        }
    }
}

/// The shape the node reports, or the requested one where it reports none.
fn shape(job: &BuildJob, result: &TemplateBuildResult) -> BuildShape {
    let or = |value: i64, requested: i64| if value > 0 { value } else { requested };
    BuildShape {
        cpu_count: or(result.vcpu, job.request.vcpu),
        memory_mb: or(result.ram_mb, job.request.ram_mb),
        disk_size_mb: result.disk_size_mb.max(0),
        envd_version: result.envd_version.clone(),
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" …");
    }
    message
}

/// The SDKs reject levels other than these four.
fn level(value: &str) -> &'static str {
    match value.to_ascii_lowercase().as_str() {
        "debug" | "trace" => "debug",
        "warn" | "warning" => "warn",
        "error" | "fatal" => "error",
        _ => "info",
    }
}

/// Writes a build's log lines in order, numbered, bounded.
struct LogSink<'a> {
    app: &'a AppState,
    build_id: &'a str,
    next_seq: i64,
    /// The step of the newest line: where a build that broke off was.
    last_step: Option<String>,
}

impl<'a> LogSink<'a> {
    fn new(app: &'a AppState, build_id: &'a str) -> Self {
        Self {
            app,
            build_id,
            next_seq: 0,
            last_step: None,
        }
    }

    async fn note(&mut self, message: &str) {
        let line = TemplateBuildLogEntry {
            timestamp: None,
            level: "info".into(),
            message: message.into(),
            step: String::new(),
        };
        self.write(std::slice::from_ref(&line)).await;
    }

    async fn write(&mut self, lines: &[TemplateBuildLogEntry]) {
        if let Some(step) = lines.iter().rev().find(|l| !l.step.is_empty()) {
            self.last_step = Some(step.step.clone());
        }
        let room = usize::try_from(MAX_LOG_LINES - self.next_seq).unwrap_or(0);
        if room == 0 {
            return;
        }
        let mut records: Vec<BuildLogRecord> = lines
            .iter()
            .take(room)
            .map(|line| BuildLogRecord {
                timestamp: line.timestamp.as_ref().map_or_else(now_ms, |t| {
                    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
                }),
                level: level(&line.level).into(),
                message: truncate(line.message.clone()),
                step: Some(line.step.clone()).filter(|s| !s.is_empty()),
            })
            .collect();
        // The last line that fits says that the rest is lost.
        if lines.len() >= room
            && let Some(last) = records.last_mut()
        {
            last.level = "warn".into();
            last.message =
                format!("the build's log reached {MAX_LOG_LINES} lines; later lines are dropped");
        }
        let count = i64::try_from(records.len()).unwrap_or(0);
        if let Err(error) = self
            .app
            .store
            .append_build_logs(self.build_id, self.next_seq, &records)
            .await
        {
            tracing::warn!(build = %self.build_id, %error, "storing build log lines failed");
        }
        self.next_seq += count;
    }
}
