//! The node's sandboxes: create, get, list, update, delete, and a reaper
//! that ends sandboxes past their end time and notices VMs that died.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hearth_net::EgressPolicy;
use hearth_vmm::{ConsoleLog, ConsoleSnapshot, InitParams, PausedSandbox, Template, VmStatus, Vmm};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::admission::{self, MemoryBudget};
use crate::error::NodeError;
use crate::metrics::SandboxMetrics;
use crate::record::SandboxRecord;
use crate::runtime::{Adopted, NodeRuntime, RunningSandbox};
use crate::sandbox_history::fields;
use crate::snapshots::NodeSnapshot;
use crate::telemetry::{Operation, Outcome};
use hearth_vmm::sandbox_log::LogLevel;
use serde_json::Map;

mod health_watch;
mod sampling;
mod snapshotting;

/// Why a sandbox stops, as its log names it: a client asked…
pub const REQUESTED: &str = "requested";
/// …or its end time passed…
pub const TIMEOUT: &str = "timeout";
/// …or the control plane has no record of it.
pub const ORPHANED: &str = "orphaned";

/// Limits of one node.
#[derive(Debug, Clone)]
pub struct NodeLimits {
    /// Sandboxes running at once.
    pub max_sandboxes: usize,
    /// Creates in flight at once; more wait for a turn.
    pub max_starting: usize,
    /// How long a create waits for its turn before it is refused.
    pub start_wait: Duration,
    /// Host memory kept out of what sandboxes may commit (for the host,
    /// the node, template builds).
    pub min_free_memory_mib: u64,
    /// What each sandbox commits beyond its guest RAM (QEMU, its TCG
    /// translation cache, page tables).
    pub per_vm_overhead_mib: u64,
    /// How far commitments may exceed the memory left after the reserve
    /// (see [`crate::admission`]); 1.0 never overcommits.
    pub memory_overcommit: f64,
    /// Free disk in the data directory below which creates and builds are
    /// refused.
    pub min_free_disk_mib: u64,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            max_sandboxes: 200,
            max_starting: 3,
            start_wait: Duration::from_secs(30),
            min_free_memory_mib: 512,
            per_vm_overhead_mib: 64,
            memory_overcommit: 1.0,
            min_free_disk_mib: 1024,
        }
    }
}

/// What a create asks for.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SandboxSpec {
    pub sandbox_id: String,
    pub template_id: String,
    /// `None`: the node's current build of the template.
    pub build_id: Option<String>,
    pub env_vars: HashMap<String, String>,
    pub metadata: HashMap<String, String>,
    pub access_token: Option<String>,
    pub default_user: Option<String>,
    pub alias: String,
    pub team_id: String,
    pub execution_id: String,
    /// 0: the template's.
    pub vcpus: u32,
    /// 0: the template's.
    pub memory_mib: u32,
    pub allow_internet: bool,
    pub allowed_cidrs: Vec<String>,
    pub denied_cidrs: Vec<String>,
    pub end_time: Option<SystemTime>,
}

impl SandboxSpec {
    /// The egress policy this spec asks for.
    pub fn egress(&self) -> Result<EgressPolicy, SandboxError> {
        EgressPolicy::new(self.allow_internet, &self.allowed_cidrs, &self.denied_cidrs)
            .map_err(|e| SandboxError::InvalidArgument(e.to_string()))
    }
}

/// A running sandbox as the node reports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SandboxInfo {
    pub spec: SandboxSpec,
    pub build_id: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub start_time: SystemTime,
    pub end_time: Option<SystemTime>,
    /// Where the host reaches envd and the guest's ports.
    pub host_address: Ipv4Addr,
    /// Paused: its state is on disk, no VM runs.
    #[serde(default)]
    pub paused: bool,
}

/// Why a sandbox operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox '{0}' does not exist on this node")]
    NotFound(String),
    #[error("sandbox '{0}' exists already")]
    AlreadyExists(String),
    #[error("sandbox '{0}' is still starting")]
    Starting(String),
    #[error("sandbox '{0}' is paused")]
    Paused(String),
    #[error("sandbox '{0}' is not paused")]
    NotPaused(String),
    #[error("template '{0}' is not on this node")]
    UnknownTemplate(String),
    #[error("snapshot '{0}' is not on this node")]
    UnknownSnapshot(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error(transparent)]
    Node(#[from] NodeError),
}

enum Entry {
    /// Reserved by a create or a resume; its guest RAM is committed
    /// already. A resume's sandbox is reported as the paused one it was.
    Starting {
        memory_mib: u32,
        resuming: Option<Arc<Paused>>,
    },
    Running(Arc<Live>),
    /// On disk: no VM, nothing committed.
    Paused(Arc<Paused>),
}

impl Entry {
    /// The guest RAM this sandbox commits.
    fn memory_mib(&self) -> u64 {
        match self {
            Self::Starting { memory_mib, .. } => u64::from(*memory_mib),
            Self::Running(live) => u64::from(lock(&live.info).memory_mib),
            Self::Paused(_) => 0,
        }
    }

    /// Whether it runs or starts (and counts against the node's limits).
    fn is_active(&self) -> bool {
        !matches!(self, Self::Paused(_))
    }
}

/// A paused sandbox: what it was, and where its state is.
struct Paused {
    info: SandboxInfo,
    state: PausedSandbox,
}

struct Live {
    info: Mutex<SandboxInfo>,
    running: tokio::sync::Mutex<Option<RunningSandbox>>,
    /// Where its record is kept, and what the record says besides `info`.
    run_dir: std::path::PathBuf,
    slot: u32,
    qemu_pid: u32,
}

impl Live {
    fn new(info: SandboxInfo, running: RunningSandbox) -> Self {
        Self {
            run_dir: running.sandbox.run_dir.clone(),
            slot: running.slot.index,
            qemu_pid: running.sandbox.vm.pid(),
            info: Mutex::new(info),
            running: tokio::sync::Mutex::new(Some(running)),
        }
    }

    /// Changes the sandbox's info and writes its record again. The change
    /// stands even when the record cannot be written: the error says that
    /// a restarted node would see the sandbox as it was.
    fn change(&self, edit: impl FnOnce(&mut SandboxInfo)) -> Result<(), SandboxError> {
        // Held while writing, so that records are written in change order.
        let mut info = lock(&self.info);
        edit(&mut info);
        SandboxRecord::new(info.clone(), self.slot, self.qemu_pid)
            .write(&self.run_dir)
            .map_err(|e| SandboxError::Node(e.into()))
    }
}

/// The sandboxes of one node.
pub struct SandboxManager {
    runtime: Arc<NodeRuntime>,
    limits: NodeLimits,
    templates: Mutex<HashMap<String, Template>>,
    /// Every build of every template, by template id and build id; tags
    /// may name builds older than the current one.
    builds: Mutex<HashMap<(String, String), Template>>,
    sandboxes: Mutex<HashMap<String, Entry>>,
    /// Wakes the metrics sampler early: a sandbox started or resumed, and
    /// its first sample should not wait for the next round.
    sample_now: tokio::sync::Notify,
    /// Whether each running sandbox's guest answers the sampler.
    health: health_watch::HealthWatch,
    /// Guest RAM of the template builds' VMs running now, which commit
    /// memory as sandboxes do.
    building: Mutex<Vec<u32>>,
    starts: Semaphore,
    /// Snapshots by id; a create may name one as its template.
    snapshots: Mutex<HashMap<String, Arc<NodeSnapshot>>>,
}

impl std::fmt::Debug for SandboxManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxManager")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A template build's memory commitment, given back when dropped.
#[derive(Debug)]
pub struct BuildReservation {
    manager: Arc<SandboxManager>,
    memory_mib: u32,
}

impl Drop for BuildReservation {
    fn drop(&mut self) {
        let mut building = lock(&self.manager.building);
        if let Some(at) = building.iter().position(|mib| *mib == self.memory_mib) {
            building.swap_remove(at);
        }
    }
}

/// The guest RAM of every sandbox and build VM that commits memory.
fn commitments<'a>(
    sandboxes: &'a HashMap<String, Entry>,
    building: &'a [u32],
) -> impl Iterator<Item = u64> + 'a {
    sandboxes
        .values()
        .map(Entry::memory_mib)
        .chain(building.iter().map(|mib| u64::from(*mib)))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl SandboxManager {
    pub fn new(runtime: Arc<NodeRuntime>, limits: NodeLimits) -> Self {
        Self {
            starts: Semaphore::new(limits.max_starting.max(1)),
            runtime,
            limits,
            templates: Mutex::new(HashMap::new()),
            builds: Mutex::new(HashMap::new()),
            sandboxes: Mutex::new(HashMap::new()),
            sample_now: tokio::sync::Notify::new(),
            health: health_watch::HealthWatch::default(),
            building: Mutex::new(Vec::new()),
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    pub fn runtime(&self) -> &NodeRuntime {
        &self.runtime
    }

    pub fn limits(&self) -> &NodeLimits {
        &self.limits
    }

    /// Makes `template` the current build of its name.
    pub fn register_template(&self, template: Template) {
        lock(&self.builds).insert(
            (template.name().to_owned(), template.meta.build_id.clone()),
            template.clone(),
        );
        lock(&self.templates).insert(template.name().to_owned(), template);
    }

    /// Adds an older build of a template without making it current.
    pub fn register_build(&self, template: Template) {
        lock(&self.builds).insert(
            (template.name().to_owned(), template.meta.build_id.clone()),
            template,
        );
    }

    /// The current build of template `id`.
    pub fn template(&self, id: &str) -> Option<Template> {
        lock(&self.templates).get(id).cloned()
    }

    /// Forgets template `id` and those of its builds that no sandbox
    /// (running or paused) and no snapshot needs; returns the builds it
    /// forgot. The others stay, for pauses, resumes and snapshots of what
    /// runs over them.
    pub fn forget_template(&self, id: &str) -> Vec<Template> {
        lock(&self.templates).remove(id);
        let mut in_use: std::collections::HashSet<String> = self
            .list()
            .into_iter()
            .filter(|info| info.spec.template_id == id)
            .map(|info| info.build_id)
            .collect();
        in_use.extend(
            lock(&self.snapshots)
                .values()
                .map(|s| &s.source.info)
                .filter(|info| info.spec.template_id == id)
                .map(|info| info.build_id.clone()),
        );
        let mut builds = lock(&self.builds);
        let forgotten = builds
            .iter()
            .filter(|((template, build), _)| template == id && !in_use.contains(build))
            .map(|(_, t)| t.clone())
            .collect();
        builds.retain(|(template, build), _| template != id || in_use.contains(build));
        forgotten
    }

    /// Whether a running sandbox is a clone of that build.
    pub fn runs_build(&self, template_id: &str, build_id: &str) -> bool {
        self.list()
            .iter()
            .any(|info| info.spec.template_id == template_id && info.build_id == build_id)
    }

    fn template_for(&self, spec: &SandboxSpec) -> Result<Template, SandboxError> {
        let template = match spec.build_id.as_deref().filter(|b| !b.is_empty()) {
            Some(build) => lock(&self.builds)
                .get(&(spec.template_id.clone(), build.to_owned()))
                .cloned()
                .ok_or_else(|| {
                    SandboxError::UnknownTemplate(format!("{} (build {build})", spec.template_id))
                })?,
            None => lock(&self.templates)
                .get(&spec.template_id)
                .cloned()
                .ok_or_else(|| SandboxError::UnknownTemplate(spec.template_id.clone()))?,
        };
        let meta = &template.meta;
        if spec.vcpus != 0 && spec.vcpus != u32::from(meta.vcpus) {
            return Err(SandboxError::InvalidArgument(format!(
                "template '{}' runs with {} vCPUs, not {}",
                meta.name, meta.vcpus, spec.vcpus
            )));
        }
        if spec.memory_mib != 0 && spec.memory_mib != meta.memory_mib {
            return Err(SandboxError::InvalidArgument(format!(
                "template '{}' runs with {} MiB, not {}",
                meta.name, meta.memory_mib, spec.memory_mib
            )));
        }
        Ok(template)
    }

    fn validate(spec: &SandboxSpec) -> Result<(), SandboxError> {
        Self::validate_id("sandbox", &spec.sandbox_id)
    }

    /// Ids name directories: 1–64 letters, digits, `-` or `_`.
    fn validate_id(what: &str, id: &str) -> Result<(), SandboxError> {
        let valid_id = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_id {
            return Err(SandboxError::InvalidArgument(format!(
                "invalid {what} id '{id}': 1–64 letters, digits, '-' or '_'"
            )));
        }
        Ok(())
    }

    /// Starts a sandbox. Concurrent creates are safe: ids are reserved
    /// before any work, and at most `max_starting` run at once.
    pub async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo, SandboxError> {
        let span = tracing::info_span!("create", sandbox_id = %spec.sandbox_id, template = %spec.template_id);
        let started = std::time::Instant::now();
        let result = async {
            Self::validate(&spec)?;
            let egress = spec.egress()?;
            // A snapshot starts over its source's template build, which
            // its sandbox then runs (and is paused against).
            let snapshot = self.snapshot_named(&spec.template_id);
            let (spec, template) = match &snapshot {
                Some(snapshot) => {
                    let source = &snapshot.source.info;
                    let template = self.template_of(source)?;
                    let spec = SandboxSpec {
                        template_id: source.spec.template_id.clone(),
                        build_id: Some(source.build_id.clone()),
                        ..spec
                    };
                    (spec, template)
                }
                None => {
                    let template = self.template_for(&spec)?;
                    (spec, template)
                }
            };
            self.reserve(&spec.sandbox_id, template.meta.memory_mib, None)?;
            let created = self
                .start(spec.clone(), &template, &egress, snapshot.as_deref())
                .await;
            let mut sandboxes = lock(&self.sandboxes);
            match created {
                Ok(live) => {
                    let info = lock(&live.info).clone();
                    sandboxes.insert(spec.sandbox_id.clone(), Entry::Running(live));
                    tracing::info!(host = %info.host_address, "sandbox running");
                    self.sample_now.notify_one();
                    self.runtime.history.event(
                        &spec.sandbox_id,
                        LogLevel::Info,
                        "Sandbox created",
                        fields([
                            ("template_id", spec.template_id.clone().into()),
                            ("from_snapshot", snapshot.is_some().into()),
                            ("vcpus", info.vcpus.into()),
                            ("memory_mib", info.memory_mib.into()),
                        ]),
                    );
                    Ok(info)
                }
                Err(error) => {
                    sandboxes.remove(&spec.sandbox_id);
                    tracing::warn!(%error, "create failed");
                    // What failed stays in the node's own log: it may name
                    // paths and QEMU's words.
                    self.runtime.history.event(
                        &spec.sandbox_id,
                        LogLevel::Error,
                        "Sandbox failed to start",
                        Map::new(),
                    );
                    self.runtime.history.ended(&spec.sandbox_id);
                    Err(error)
                }
            }
        }
        .instrument(span)
        .await;
        self.runtime
            .telemetry
            .operation(Operation::create, Outcome::of(&result), started);
        result
    }

    /// What the node gives its sandboxes, from the host's memory now.
    fn memory_budget(&self) -> MemoryBudget {
        MemoryBudget {
            host_total_mib: crate::metrics::host_memory().0 >> 20,
            reserve_mib: self.limits.min_free_memory_mib,
            per_vm_overhead_mib: self.limits.per_vm_overhead_mib,
            overcommit: self.limits.memory_overcommit,
        }
    }

    /// Room for a template build whose VM has `memory_mib` of guest RAM:
    /// free disk (the same floor as for creates) and committed memory
    /// beside the sandboxes and other builds. The memory stays committed
    /// until the reservation is dropped, when the build ends.
    pub fn reserve_build(
        self: &Arc<Self>,
        memory_mib: u32,
    ) -> Result<BuildReservation, SandboxError> {
        admission::disk_allows(self.runtime.data.root(), self.limits.min_free_disk_mib)
            .map_err(|e| SandboxError::ResourceExhausted(e.to_string()))?;
        let budget = self.memory_budget();
        let sandboxes = lock(&self.sandboxes);
        let mut building = lock(&self.building);
        let committed = budget.committed_mib(commitments(&sandboxes, &building));
        budget
            .admit(committed, u64::from(memory_mib))
            .map_err(|e| SandboxError::ResourceExhausted(e.to_string()))?;
        building.push(memory_mib);
        Ok(BuildReservation {
            manager: self.clone(),
            memory_mib,
        })
    }

    /// Takes `id` for a create of a sandbox with `memory_mib` of guest RAM,
    /// if the node has room: the count, committed memory and free disk.
    /// Its memory stays committed from here on, so concurrent creates
    /// cannot all take the same room.
    fn reserve(
        &self,
        id: &str,
        memory_mib: u32,
        resuming: Option<Arc<Paused>>,
    ) -> Result<(), SandboxError> {
        let budget = self.memory_budget();
        let disk = admission::disk_allows(self.runtime.data.root(), self.limits.min_free_disk_mib);
        let mut sandboxes = lock(&self.sandboxes);
        // A create takes a free id; a resume, its own paused sandbox.
        let free = match (sandboxes.get(id), &resuming) {
            (None, None) => true,
            (Some(Entry::Paused(now)), Some(paused)) => Arc::ptr_eq(now, paused),
            _ => false,
        };
        if !free {
            return Err(SandboxError::AlreadyExists(id.to_owned()));
        }
        if sandboxes.values().filter(|e| e.is_active()).count() >= self.limits.max_sandboxes {
            return Err(SandboxError::ResourceExhausted(format!(
                "this node runs its maximum of {} sandboxes",
                self.limits.max_sandboxes
            )));
        }
        let committed = budget.committed_mib(commitments(&sandboxes, &lock(&self.building)));
        budget
            .admit(committed, u64::from(memory_mib))
            .map_err(|e| SandboxError::ResourceExhausted(e.to_string()))?;
        disk.map_err(|e| SandboxError::ResourceExhausted(e.to_string()))?;
        sandboxes.insert(
            id.to_owned(),
            Entry::Starting {
                memory_mib,
                resuming,
            },
        );
        Ok(())
    }

    async fn start(
        &self,
        spec: SandboxSpec,
        template: &Template,
        egress: &EgressPolicy,
        snapshot: Option<&NodeSnapshot>,
    ) -> Result<Arc<Live>, SandboxError> {
        let _turn = tokio::time::timeout(self.limits.start_wait, self.starts.acquire())
            .await
            .map_err(|_| {
                SandboxError::ResourceExhausted(format!(
                    "{} sandboxes are starting on this node; no turn within {:?}",
                    self.limits.max_starting, self.limits.start_wait
                ))
            })?
            .map_err(|_| SandboxError::ResourceExhausted("the node is shutting down".into()))?;
        // A built template's final USER, WORKDIR and ENV are its sandboxes'
        // defaults (where its CA certificates are among them); the create's
        // own env vars win over the template's. `base` is the node's own,
        // made with the node's CA certificates.
        let init = self.init_params(&spec, template);
        let running = match snapshot {
            Some(snapshot) => {
                self.runtime
                    .clone_snapshot(template, snapshot, &spec.sandbox_id, init, egress)
                    .await?
            }
            None => {
                self.runtime
                    .clone_sandbox(template, &spec.sandbox_id, init, egress)
                    .await?
            }
        };
        let info = SandboxInfo {
            build_id: template.meta.build_id.clone(),
            vcpus: u32::from(template.meta.vcpus),
            memory_mib: template.meta.memory_mib,
            start_time: SystemTime::now(),
            end_time: spec.end_time,
            host_address: running.slot.sandbox_address,
            paused: false,
            spec,
        };
        // A sandbox a restarted node could not adopt is not created.
        let record = SandboxRecord::new(info.clone(), running.slot.index, running.sandbox.vm.pid());
        if let Err(error) = record.write(&running.sandbox.run_dir) {
            let _ = self.runtime.destroy_sandbox(running).await;
            return Err(SandboxError::Node(error.into()));
        }
        Ok(Arc::new(Live::new(info, running)))
    }

    /// What envd's `/init` gets for `spec`: the template's defaults, the
    /// spec's env vars over them.
    fn init_params(&self, spec: &SandboxSpec, template: &Template) -> InitParams {
        // A built template's final USER, WORKDIR and ENV are its sandboxes'
        // defaults (where its CA certificates are among them); the create's
        // own env vars win over the template's. `base` is the node's own,
        // made with the node's CA certificates.
        let defaults = &template.meta.defaults;
        let mut env_vars: HashMap<String, String> = HashMap::new();
        if template.meta.name == crate::runtime::BASE_TEMPLATE {
            env_vars.extend(self.runtime.ca_env());
        }
        env_vars.extend(defaults.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env_vars.extend(spec.env_vars.clone());
        InitParams {
            env_vars: Some(env_vars),
            access_token: spec.access_token.clone(),
            default_user: defaults.user.clone().or_else(|| spec.default_user.clone()),
            default_workdir: defaults.workdir.clone(),
            hostname: Some(spec.sandbox_id.clone()),
            ..InitParams::default()
        }
    }

    /// Pauses a running sandbox to disk: its VM and slot are let go, its
    /// memory and guest RAM are no longer committed. A pause that fails
    /// leaves it running.
    pub async fn pause(&self, id: &str, memory: bool) -> Result<SandboxInfo, SandboxError> {
        self.pause_because(id, memory, REQUESTED).await
    }

    /// [`Self::pause`] for `reason`, which its log's line names.
    pub async fn pause_because(
        &self,
        id: &str,
        memory: bool,
        reason: &str,
    ) -> Result<SandboxInfo, SandboxError> {
        let span = tracing::info_span!("pause", sandbox_id = %id, reason);
        let started = std::time::Instant::now();
        let result = async {
            let live = self.live(id)?;
            let mut guard = live.running.lock().await;
            let Some(running) = guard.take() else {
                // Paused by another call meanwhile, or deleted.
                return Err(match lock(&self.sandboxes).get(id) {
                    Some(Entry::Paused(_)) => SandboxError::Paused(id.to_owned()),
                    _ => SandboxError::NotFound(id.to_owned()),
                });
            };
            let mut info = lock(&live.info).clone();
            let room = if memory {
                self.room_for_state(info.memory_mib, 0)
            } else {
                Ok(())
            };
            let template = match room.and_then(|()| self.template_of(&info)) {
                Ok(template) => template,
                Err(error) => {
                    *guard = Some(running);
                    return Err(error);
                }
            };
            let paused = match self.runtime.pause_sandbox(&template, running, memory).await {
                Ok(paused) => paused,
                Err((error, running)) => {
                    *guard = Some(running);
                    return Err(error.into());
                }
            };
            info.paused = true;
            if let Err(error) = SandboxRecord::new(info.clone(), 0, 0).write(&paused.run_dir) {
                tracing::warn!(%error, "a paused sandbox's record; a restart will not find it");
            }
            let mut sandboxes = lock(&self.sandboxes);
            // Deleted while it was being paused: its state goes too.
            let deleted =
                !matches!(sandboxes.get(id), Some(Entry::Running(now)) if Arc::ptr_eq(now, &live));
            if deleted {
                drop(sandboxes);
                self.runtime.discard_paused(&paused)?;
                return Err(SandboxError::NotFound(id.to_owned()));
            }
            tracing::info!(
                kept_mib = paused.memory.map(|m| (m.kept * 4096) >> 20),
                "sandbox paused"
            );
            self.runtime.history.event(
                id,
                LogLevel::Info,
                "Sandbox paused",
                fields([("keep_memory", memory.into()), ("reason", reason.into())]),
            );
            sandboxes.insert(
                id.to_owned(),
                Entry::Paused(Arc::new(Paused {
                    info: info.clone(),
                    state: paused,
                })),
            );
            Ok(info)
        }
        .instrument(span)
        .await;
        self.runtime
            .telemetry
            .operation(Operation::pause, Outcome::of(&result), started);
        result
    }

    /// Resumes a paused sandbox (its end time becomes `end_time` when
    /// given). Admission is as for a create; a resume that fails leaves it
    /// paused.
    pub async fn resume(
        &self,
        id: &str,
        end_time: Option<SystemTime>,
        fresh_boot: bool,
    ) -> Result<SandboxInfo, SandboxError> {
        let span = tracing::info_span!("resume", sandbox_id = %id);
        let started = std::time::Instant::now();
        let result = async {
            let paused = match self.paused_entry(id) {
                Err(SandboxError::NotPaused(_)) => {
                    // A pause in progress holds the VM: once it ends, the
                    // sandbox is paused (or not, if it failed).
                    if let Ok(live) = self.live(id) {
                        drop(live.running.lock().await);
                    }
                    self.paused_entry(id)?
                }
                other => other?,
            };
            let template = self.template_of(&paused.info)?;
            let egress = paused.info.spec.egress()?;
            // Its place becomes a start's, with the start's admission; it
            // is reported as paused meanwhile.
            self.reserve(id, template.meta.memory_mib, Some(paused.clone()))?;
            let init = self.init_params(&paused.info.spec, &template);
            let resumed = self
                .runtime
                .resume_sandbox(&template, &paused.state, init, &egress, fresh_boot)
                .await;
            let running = match resumed {
                Ok(running) => running,
                Err(error) => {
                    tracing::warn!(%error, "resume failed");
                    self.runtime.history.event(
                        id,
                        LogLevel::Error,
                        "Sandbox failed to resume",
                        Map::new(),
                    );
                    lock(&self.sandboxes).insert(id.to_owned(), Entry::Paused(paused));
                    return Err(error.into());
                }
            };
            let mut info = paused.info.clone();
            info.paused = false;
            info.host_address = running.slot.sandbox_address;
            if end_time.is_some() {
                info.end_time = end_time;
            }
            let record =
                SandboxRecord::new(info.clone(), running.slot.index, running.sandbox.vm.pid());
            if let Err(error) = record.write(&running.sandbox.run_dir) {
                tracing::warn!(%error, "a resumed sandbox's record; a restart will not adopt it");
            }
            lock(&self.sandboxes).insert(
                id.to_owned(),
                Entry::Running(Arc::new(Live::new(info.clone(), running))),
            );
            tracing::info!("sandbox resumed");
            self.sample_now.notify_one();
            self.runtime.history.event(
                id,
                LogLevel::Info,
                "Sandbox resumed",
                fields([("fresh_boot", fresh_boot.into())]),
            );
            Ok(info)
        }
        .instrument(span)
        .await;
        self.runtime
            .telemetry
            .operation(Operation::resume, Outcome::of(&result), started);
        result
    }

    fn paused_entry(&self, id: &str) -> Result<Arc<Paused>, SandboxError> {
        match lock(&self.sandboxes).get(id) {
            Some(Entry::Paused(paused)) => Ok(paused.clone()),
            Some(Entry::Running(_)) => Err(SandboxError::NotPaused(id.to_owned())),
            Some(Entry::Starting { .. }) => Err(SandboxError::Starting(id.to_owned())),
            None => Err(SandboxError::NotFound(id.to_owned())),
        }
    }

    /// Room on disk for the state of a guest of `memory_mib` (a pause's or
    /// snapshot's, which holds all its RAM until the pages equal to the
    /// template's are dropped) and `extra_mib` more, above the floor.
    fn room_for_state(&self, memory_mib: u32, extra_mib: u64) -> Result<(), SandboxError> {
        let needed = self
            .limits
            .min_free_disk_mib
            .saturating_add(u64::from(memory_mib))
            .saturating_add(extra_mib);
        admission::disk_allows(self.runtime.data.root(), needed).map_err(|e| {
            SandboxError::ResourceExhausted(format!(
                "no room on disk for the sandbox's memory: {e}"
            ))
        })
    }

    /// The template build a sandbox runs.
    fn template_of(&self, info: &SandboxInfo) -> Result<Template, SandboxError> {
        lock(&self.builds)
            .get(&(info.spec.template_id.clone(), info.build_id.clone()))
            .cloned()
            .or_else(|| {
                lock(&self.templates)
                    .get(&info.spec.template_id)
                    .filter(|t| t.meta.build_id == info.build_id)
                    .cloned()
            })
            // Not "unknown": the sandbox is there, what it runs over is not.
            .ok_or_else(|| {
                SandboxError::Node(NodeError::Invalid(format!(
                    "the template build {} (build {}) of sandbox {} is not on this node",
                    info.spec.template_id, info.build_id, info.spec.sandbox_id
                )))
            })
    }

    /// Takes the paused sandboxes a previous run of this node left on disk
    /// ([`NodeRuntime::paused_sandboxes`]). Returns how many it took.
    pub fn adopt_paused(&self, found: Vec<(SandboxRecord, PausedSandbox)>) -> usize {
        let mut sandboxes = lock(&self.sandboxes);
        let mut taken = 0;
        for (record, state) in found {
            let id = record.info.spec.sandbox_id.clone();
            if sandboxes.contains_key(&id) {
                tracing::warn!(sandbox_id = %id, "a paused sandbox's id is taken; it stays on disk");
                continue;
            }
            sandboxes.insert(
                id,
                Entry::Paused(Arc::new(Paused {
                    info: record.info,
                    state,
                })),
            );
            taken += 1;
        }
        taken
    }

    /// Takes over sandboxes a previous run of this node left running
    /// ([`NodeRuntime::recover`]): from now on they are this manager's like
    /// those it created. Returns how many it took; one whose id it has
    /// already is deleted.
    pub async fn adopt(&self, adopted: Vec<Adopted>) -> usize {
        let mut taken = 0;
        for Adopted { record, running } in adopted {
            let id = record.info.spec.sandbox_id.clone();
            let mut info = record.info;
            info.host_address = running.slot.sandbox_address;
            let live = Arc::new(Live::new(info, running));
            let duplicate = {
                let mut sandboxes = lock(&self.sandboxes);
                if sandboxes.contains_key(&id) {
                    true
                } else {
                    sandboxes.insert(id.clone(), Entry::Running(live.clone()));
                    false
                }
            };
            if duplicate {
                tracing::warn!(sandbox_id = %id, "an adopted sandbox's id is taken; deleting it");
                if let Some(running) = live.running.lock().await.take()
                    && let Err(error) = self.runtime.destroy_sandbox(running).await
                {
                    tracing::warn!(sandbox_id = %id, %error, "deleting the adopted sandbox failed");
                }
                continue;
            }
            taken += 1;
        }
        taken
    }

    fn live(&self, id: &str) -> Result<Arc<Live>, SandboxError> {
        match lock(&self.sandboxes).get(id) {
            Some(Entry::Running(live)) => Ok(live.clone()),
            Some(Entry::Starting { .. }) => Err(SandboxError::Starting(id.to_owned())),
            Some(Entry::Paused(_)) => Err(SandboxError::Paused(id.to_owned())),
            None => Err(SandboxError::NotFound(id.to_owned())),
        }
    }

    /// A running or paused sandbox.
    pub fn get(&self, id: &str) -> Result<SandboxInfo, SandboxError> {
        match lock(&self.sandboxes).get(id) {
            Some(Entry::Paused(paused))
            | Some(Entry::Starting {
                resuming: Some(paused),
                ..
            }) => return Ok(paused.info.clone()),
            Some(Entry::Running(live)) => return Ok(lock(&live.info).clone()),
            _ => {}
        }
        Ok(lock(&self.live(id)?.info).clone())
    }

    /// Running and paused sandboxes (not those still starting).
    pub fn list(&self) -> Vec<SandboxInfo> {
        lock(&self.sandboxes)
            .values()
            .filter_map(|entry| match entry {
                Entry::Running(live) => Some(lock(&live.info).clone()),
                Entry::Paused(paused)
                | Entry::Starting {
                    resuming: Some(paused),
                    ..
                } => Some(paused.info.clone()),
                Entry::Starting { resuming: None, .. } => None,
            })
            .collect()
    }

    /// Changes a sandbox's end time.
    pub fn update_end_time(&self, id: &str, end_time: SystemTime) -> Result<(), SandboxError> {
        self.live(id)?.change(|info| info.end_time = Some(end_time))
    }

    /// Replaces a sandbox's egress rules, atomically.
    pub async fn update_egress(
        &self,
        id: &str,
        allowed: Vec<String>,
        denied: Vec<String>,
        allow_internet: Option<bool>,
    ) -> Result<(), SandboxError> {
        let live = self.live(id)?;
        let mut spec = lock(&live.info).spec.clone();
        spec.allowed_cidrs = allowed;
        spec.denied_cidrs = denied;
        if let Some(allow) = allow_internet {
            spec.allow_internet = allow;
        }
        let policy = spec.egress()?;
        let guard = live.running.lock().await;
        let running = guard
            .as_ref()
            .ok_or_else(|| SandboxError::NotFound(id.to_owned()))?;
        policy.apply(&running.slot).await.map_err(NodeError::from)?;
        live.change(|info| info.spec = spec)
    }

    /// Runs `read` on a running sandbox's VM and slot.
    async fn with_running<T>(
        &self,
        id: &str,
        read: impl FnOnce(&RunningSandbox) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        let live = self.live(id)?;
        let guard = live.running.lock().await;
        let running = guard
            .as_ref()
            .ok_or_else(|| SandboxError::NotFound(id.to_owned()))?;
        read(running)
    }

    /// CPU, memory and disk use of a sandbox now.
    pub async fn metrics(&self, id: &str) -> Result<SandboxMetrics, SandboxError> {
        self.with_running(id, |running| {
            let vm = &running.sandbox.vm;
            crate::metrics::sample(vm.pid(), &vm.run_dir().join("disk.qcow2"))
                .map_err(|e| SandboxError::NotFound(format!("{id} (its VM is gone: {e})")))
        })
        .await
    }

    /// The newest console output of a sandbox.
    pub async fn console(&self, id: &str) -> Result<ConsoleSnapshot, SandboxError> {
        self.with_running(id, |running| {
            Ok(running
                .sandbox
                .vm
                .console()
                .map(ConsoleLog::snapshot)
                .unwrap_or(ConsoleSnapshot {
                    bytes: Vec::new(),
                    total_bytes: 0,
                }))
        })
        .await
    }

    /// Kills a sandbox (a client asked) and releases everything it held.
    pub async fn delete(&self, id: &str) -> Result<(), SandboxError> {
        self.delete_because(id, REQUESTED).await
    }

    /// Kills a sandbox for `reason`, which its log's last line names.
    pub async fn delete_because(&self, id: &str, reason: &str) -> Result<(), SandboxError> {
        let span = tracing::info_span!("delete", sandbox_id = %id, reason);
        let started = std::time::Instant::now();
        let result = async {
            let live = {
                let mut sandboxes = lock(&self.sandboxes);
                match sandboxes.get(id) {
                    Some(Entry::Running(_)) => match sandboxes.remove(id) {
                        Some(Entry::Running(live)) => Ok(live),
                        _ => return Err(SandboxError::NotFound(id.to_owned())),
                    },
                    Some(Entry::Starting { .. }) => {
                        return Err(SandboxError::Starting(id.to_owned()));
                    }
                    Some(Entry::Paused(_)) => match sandboxes.remove(id) {
                        Some(Entry::Paused(paused)) => Err(paused),
                        _ => return Err(SandboxError::NotFound(id.to_owned())),
                    },
                    None => return Err(SandboxError::NotFound(id.to_owned())),
                }
            };
            let live = match live {
                Ok(live) => live,
                Err(paused) => {
                    self.runtime.discard_paused(&paused.state)?;
                    self.runtime.collect_layers().await;
                    tracing::info!("paused sandbox deleted");
                    self.killed(id, reason);
                    return Ok(());
                }
            };
            let running = live.running.lock().await.take();
            if let Some(running) = running {
                self.runtime.destroy_sandbox(running).await?;
                self.runtime.collect_layers().await;
            }
            tracing::info!("sandbox deleted");
            self.killed(id, reason);
            Ok(())
        }
        .instrument(span)
        .await;
        self.runtime
            .telemetry
            .operation(Operation::delete, Outcome::of(&result), started);
        result
    }

    /// Notes in its log that sandbox `id` is gone, and keeps the log for the
    /// retention.
    fn killed(&self, id: &str, reason: &str) {
        self.runtime.history.event(
            id,
            LogLevel::Info,
            "Sandbox killed",
            fields([("kill_reason", reason.into())]),
        );
        self.runtime.history.ended(id);
    }

    /// Sandboxes past their end time, and those whose VM has exited.
    pub async fn due_for_removal(&self) -> Vec<(String, &'static str)> {
        let now = SystemTime::now();
        let lives: Vec<(String, Arc<Live>)> = lock(&self.sandboxes)
            .iter()
            .filter_map(|(id, entry)| match entry {
                Entry::Running(live) => Some((id.clone(), live.clone())),
                Entry::Starting { .. } | Entry::Paused(_) => None,
            })
            .collect();
        let mut due = Vec::new();
        for (id, live) in lives {
            if lock(&live.info).end_time.is_some_and(|end| end <= now) {
                due.push((id, "its end time passed"));
                continue;
            }
            let guard = live.running.lock().await;
            let exited = match guard.as_ref() {
                Some(running) => matches!(
                    self.runtime.vmm.status(&running.sandbox.vm).await,
                    Ok(VmStatus::Exited)
                ),
                None => false,
            };
            if exited {
                due.push((id, "its VM exited"));
            }
        }
        due
    }

    /// Removes what [`Self::due_for_removal`] finds, every `period`, forever.
    pub async fn reap(self: Arc<Self>, period: Duration) {
        loop {
            tokio::time::sleep(period).await;
            for (id, reason) in self.due_for_removal().await {
                tracing::info!(sandbox_id = %id, reason, "removing sandbox");
                self.runtime.history.event(
                    &id,
                    LogLevel::Warn,
                    "Removing sandbox",
                    fields([("kill_reason", reason.into())]),
                );
                if let Err(error) = self.delete_because(&id, reason).await {
                    tracing::warn!(sandbox_id = %id, %error, "removing sandbox failed");
                }
            }
        }
    }

    /// Deletes every running sandbox (shutdown); paused ones stay on disk
    /// for the next start.
    pub async fn delete_all(&self) {
        let ids: Vec<String> = lock(&self.sandboxes)
            .iter()
            .filter(|(_, entry)| entry.is_active())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let _ = self.delete(&id).await;
        }
    }

    /// Lets go of every running sandbox without stopping it (shutdown of a
    /// node that keeps its sandboxes): VMs, run directories and slots stay
    /// for the next start to adopt. Returns how many were left running.
    pub async fn detach_all(&self) -> usize {
        let lives: Vec<Arc<Live>> = {
            let mut sandboxes = lock(&self.sandboxes);
            let ids: Vec<String> = sandboxes
                .iter()
                .filter(|(_, entry)| matches!(entry, Entry::Running(_)))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| match sandboxes.remove(id) {
                    Some(Entry::Running(live)) => Some(live),
                    _ => None,
                })
                .collect()
        };
        let mut detached = 0;
        for live in lives {
            if let Some(running) = live.running.lock().await.take() {
                self.runtime.detach_sandbox(running);
                detached += 1;
            }
        }
        detached
    }

    /// CPUs and memory given to running sandboxes.
    pub fn allocated(&self) -> (u64, u64) {
        let running = self.list().into_iter().filter(|info| !info.paused);
        running.fold((0, 0), |(cpu, mib), info| {
            (
                cpu + u64::from(info.vcpus),
                mib + u64::from(info.memory_mib),
            )
        })
    }
}
