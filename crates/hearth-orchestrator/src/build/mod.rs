//! Template builds: a base layer (an OCI image, hearth's base rootfs or
//! another template), then each step in a build VM through envd, each
//! step's disk kept as a cached layer, then the start command and a
//! snapshot that sandboxes of the template are cloned from.

mod base;
mod build_vm;
mod execute;
mod guards;
mod guest_steps;
pub mod image_rootfs;
pub mod layers;
mod log;
mod recover;
mod snapshot_cache;
pub mod steps;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_net::{EgressPolicy, NetSlot};
use hearth_vmm::template::{DISK, INITRAMFS, KERNEL, MEMORY};
use hearth_vmm::{GuestDefaults, Template, TemplateConfig, TemplateMeta, Vmm};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::{NodeError, Result};
use crate::runtime::{NodeRuntime, guest_network};
use crate::sandboxes::SandboxManager;

pub use base::HEARTH_BASE;
use build_vm::BuildVm;
use guards::{RemoveOnDrop, SlotGuard};
use layers::{LayerMeta, LayerStore};
pub use log::{BuildLog, LogLevel, LogLine};
pub use recover::recover_built_templates;
pub use steps::RawStep;
use steps::Step;

const FINALIZE: &str = "finalize";
/// How often the ready command is tried, and for how long.
const READY_INTERVAL: Duration = Duration::from_secs(2);
const READY_DEADLINE: Duration = Duration::from_secs(600);
/// E2B waits this long when a start command has no ready command.
const DEFAULT_READY: &str = "sleep 20";

/// Why a build failed, and at which step (`base`, a number from 1, or
/// `finalize`), as the SDKs show it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step {step}: {message}")]
pub struct BuildFailure {
    pub step: String,
    pub message: String,
}

impl BuildFailure {
    pub fn new(step: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            message: message.into(),
        }
    }

    /// A failure of hearth's own (`what` failed): the detail (host paths,
    /// QEMU's output) goes to the node's log, the client gets `what`.
    pub fn internal(step: impl Into<String>, what: &str, error: impl std::fmt::Display) -> Self {
        let step = step.into();
        tracing::warn!(%step, %error, "template build: {what} failed");
        Self::new(
            step,
            format!("{what} failed (an internal error, logged by the node)"),
        )
    }
}

/// Where a build starts from.
#[derive(Debug, Clone)]
pub enum BaseSource {
    /// An image reference (through the node's image aliases).
    Image {
        reference: String,
        credentials: Option<hearth_oci::Credentials>,
    },
    /// A template on this node, by id.
    Template(String),
}

/// One build, as the control plane asks for it.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub template_id: String,
    pub build_id: String,
    /// Whose build cache the steps use.
    pub team_id: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// 0: the node's default.
    pub disk_mib: u64,
    pub source: BaseSource,
    pub force: bool,
    pub steps: Vec<RawStep>,
    pub start_cmd: Option<String>,
    pub ready_cmd: Option<String>,
}

/// How this node builds templates.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// A build VM's disk unless the build names one.
    pub default_disk_mib: u64,
    /// Extra CA certificates (PEM) for every build VM and template.
    pub ca_bundle: Option<Vec<u8>>,
    /// Image names built from something else: [`HEARTH_BASE`] or another
    /// reference (a mirror).
    pub image_aliases: BTreeMap<String, String>,
    pub pull: hearth_oci::PullOptions,
    /// Builds running at once; more wait their turn.
    pub max_concurrent: usize,
    /// A whole build's deadline.
    pub timeout: Duration,
    /// The layer store's size on disk beyond which least recently used
    /// layers are removed after a build.
    pub layer_cache_bytes: u64,
    /// The size of cached image blobs (pulled layers) beyond which the
    /// least recently used are removed after a build.
    pub image_cache_bytes: u64,
}

impl Default for BuildSettings {
    fn default() -> Self {
        let image_aliases = [
            "e2bdev/base",
            "e2bdev/base:latest",
            "docker.io/e2bdev/base",
            "docker.io/e2bdev/base:latest",
        ]
        .into_iter()
        .map(|name| (name.to_owned(), HEARTH_BASE.to_owned()))
        .collect();
        Self {
            default_disk_mib: 10 * 1024,
            ca_bundle: None,
            image_aliases,
            pull: hearth_oci::PullOptions::default(),
            max_concurrent: 2,
            timeout: Duration::from_secs(3600),
            layer_cache_bytes: 20 << 30,
            image_cache_bytes: 10 << 30,
        }
    }
}

/// The node's template builder.
pub struct TemplateBuilder {
    manager: Arc<SandboxManager>,
    guest: hearth_guest::GuestArtifacts,
    tools: image_rootfs::GuestTools,
    /// Hash of what `image_rootfs::prepare` puts into every image.
    tools_hash: String,
    ca_hash: String,
    envd_version: String,
    layers: LayerStore,
    snapshots: snapshot_cache::SnapshotCache,
    images: hearth_oci::ImageStore,
    settings: BuildSettings,
    turns: Semaphore,
    /// Builds hold it shared; pruning the layer store takes it alone, so a
    /// build never loses a layer it is about to link.
    store_use: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for TemplateBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateBuilder").finish_non_exhaustive()
    }
}

fn file_hash(hasher: &mut Sha256, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|source| NodeError::Io {
        context: "reading",
        path: path.to_owned(),
        source,
    })?;
    hasher.update(Sha256::digest(&bytes));
    Ok(())
}

impl TemplateBuilder {
    /// A builder for the node `manager` runs, with the guest artifacts built
    /// for `envd`.
    pub async fn new(
        manager: Arc<SandboxManager>,
        envd: &Path,
        settings: BuildSettings,
    ) -> Result<Self> {
        let runtime = manager.runtime();
        let guest = runtime
            .guest_artifacts(envd, &hearth_guest::Progress::new(true))
            .await?;
        let envd_version = crate::runtime::envd_version(envd).await?;
        let tools = image_rootfs::GuestTools::from_host(envd);
        let mut hasher = Sha256::new();
        hasher.update(image_rootfs::RECIPE.as_bytes());
        hasher.update(image_rootfs::IMAGE_INIT.as_bytes());
        for path in [&tools.envd, &tools.busybox, &tools.tini] {
            file_hash(&mut hasher, path)?;
        }
        let tools_hash = steps::hex(&hasher.finalize()[..16]);
        let ca_hash = settings
            .ca_bundle
            .as_ref()
            .map(|bundle| steps::hex(&Sha256::digest(bundle)[..16]))
            .unwrap_or_default();
        let data = &runtime.data;
        Ok(Self {
            layers: LayerStore::new(data.root().join("v1/layers")),
            snapshots: snapshot_cache::SnapshotCache::new(
                data.root().join("v1/snapshots"),
                data.templates(),
            ),
            images: hearth_oci::ImageStore::new(data.root().join("v1/images")),
            turns: Semaphore::new(settings.max_concurrent.max(1)),
            store_use: tokio::sync::RwLock::new(()),
            guest,
            tools,
            tools_hash,
            ca_hash,
            envd_version,
            settings,
            manager,
        })
    }

    /// Keeps the layer store within its size when no build uses it.
    fn prune_store(&self) {
        if let Ok(_alone) = self.store_use.try_write() {
            let removed = self.layers.prune(self.settings.layer_cache_bytes);
            if removed > 0 {
                tracing::info!(removed, "pruned least recently used template layers");
            }
            let removed = self.images.prune(self.settings.image_cache_bytes);
            if removed > 0 {
                tracing::info!(removed, "pruned least recently used image blobs");
            }
        }
    }

    fn runtime(&self) -> &NodeRuntime {
        self.manager.runtime()
    }

    /// A fresh scratch directory for making `name`, removed with its guard.
    fn scratch_dir(&self, name: &str) -> Result<RemoveOnDrop> {
        let dir = self
            .runtime()
            .data
            .root()
            .join("v1/tmp")
            .join(format!("{name}-{}", uuid_like()));
        std::fs::create_dir_all(&dir).map_err(|source| NodeError::Io {
            context: "creating",
            path: dir.clone(),
            source,
        })?;
        Ok(RemoveOnDrop(dir))
    }

    /// Builds the template; on success it is on disk (not yet registered
    /// with the manager). Waits for a turn first. Dropping the future
    /// cancels the build: its VM is killed and its files removed.
    pub async fn build(&self, spec: BuildSpec, log: BuildLog) -> Result<Template, BuildFailure> {
        if self.turns.available_permits() == 0 {
            log.info(None, "waiting for another build to finish".into());
        }
        let _turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| BuildFailure::new("base", "the node is shutting down"))?;
        let staging = self
            .runtime()
            .data
            .templates()
            .join(&spec.template_id)
            .join(format!(".building-{}", spec.build_id));
        // Removes the staging directory however the build ends (also when
        // the future is dropped).
        let _cleanup = RemoveOnDrop(staging.clone());
        let started = Instant::now();
        let deadline = self.settings.timeout;
        let using_store = self.store_use.read().await;
        let result =
            match tokio::time::timeout(deadline, self.build_in(&spec, &staging, &log)).await {
                Ok(result) => result,
                Err(_) => Err(BuildFailure::new(
                    FINALIZE,
                    format!(
                        "the build took longer than its limit of {} s",
                        deadline.as_secs()
                    ),
                )),
            };
        drop(using_store);
        self.prune_store();
        match &result {
            Ok(_) => log.info(
                None,
                format!("build finished in {:.1} s", started.elapsed().as_secs_f64()),
            ),
            Err(failure) => log.error(Some(&failure.step), failure.message.clone()),
        }
        result
    }

    async fn build_in(
        &self,
        spec: &BuildSpec,
        staging: &Path,
        log: &BuildLog,
    ) -> Result<Template, BuildFailure> {
        let steps = steps::parse(&spec.steps)?;
        if spec.vcpus == 0 || spec.memory_mib < 128 {
            return Err(BuildFailure::new(
                "base",
                "a template needs at least 1 vCPU and 128 MiB",
            ));
        }
        let disk_mib = if spec.disk_mib == 0 {
            self.settings.default_disk_mib
        } else {
            spec.disk_mib
        };
        let (base_key, base) = self.base_layer(spec, disk_mib, log).await?;
        let init = base.init.clone();
        let config = TemplateConfig {
            name: spec.template_id.clone(),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            network: guest_network(),
            boot_deadline: Duration::from_secs(300),
            init,
            tsc_khz: self.runtime().accel.guest_tsc_khz(),
        };
        let internal = |e: NodeError| {
            tracing::warn!(template = %spec.template_id, error = %e, "template build failed");
            BuildFailure::new(FINALIZE, format!("the build failed: {e}"))
        };
        let _ = std::fs::remove_dir_all(staging);
        std::fs::create_dir_all(staging).map_err(|e| internal(io_error(staging, e)))?;
        for (source, name) in [
            (&self.guest.kernel.image, KERNEL),
            (&self.guest.initramfs.image, INITRAMFS),
        ] {
            hearth_vmm::template::link_or_copy(source, &staging.join(name))
                .map_err(|e| internal(e.into()))?;
        }
        // The first step's parent is scoped to the team, so one team's COPY
        // (whose files hash the client computes) never serves another's.
        let mut parent_key =
            steps::hex(&Sha256::digest(format!("{}\0{base_key}", spec.team_id))[..16]);
        let mut below = base;
        let mut index = 0;
        // Steps whose layers are cached are skipped without a VM.
        while index < steps.len() {
            let step = &steps[index];
            let key = step.layer_key(&parent_key);
            if spec.force || step.force {
                break;
            }
            let Some(meta) = self.layers.get(&key) else {
                break;
            };
            log.info(Some(&step.name()), format!("CACHED {}", step.describe()));
            parent_key = key;
            below = meta;
            index += 1;
        }
        let final_key = steps[index..]
            .iter()
            .fold(parent_key.clone(), |parent, step| step.layer_key(&parent));
        let accel = self.runtime().accel.accel.to_string();
        let cmdline = config.cmdline();
        let guest = [
            self.guest.kernel.key.as_str(),
            &self.guest.initramfs.key,
            &self.envd_version,
            &accel,
            &self.runtime().accel.qemu_version,
            &cmdline,
        ];
        let snapshot_key = |layer_file: &str| {
            snapshot_cache::key(&snapshot_cache::SnapshotInputs {
                layer_key: &final_key,
                layer_file,
                start_cmd: spec.start_cmd.as_deref(),
                ready_cmd: spec.ready_cmd.as_deref(),
                vcpus: spec.vcpus,
                memory_mib: spec.memory_mib,
                guest: &guest,
            })
        };
        if index == steps.len()
            && !spec.force
            && let Some(earlier) = self.snapshots.get(&snapshot_key(below.top()))
        {
            log.info(
                Some(FINALIZE),
                format!("CACHED the snapshot of build {}", earlier.meta.build_id),
            );
            let meta =
                snapshot_cache::link_into(&earlier, staging, &spec.template_id, &spec.build_id)
                    .map_err(|e| internal(io_error(staging, e)))?;
            return self.publish(spec, staging, &meta).map_err(internal);
        }
        let rest: Vec<Step> = steps[index..].to_vec();
        let slot = SlotGuard::take(self.runtime().slots.clone())
            .await
            .map_err(internal)?;
        let outcome = match EgressPolicy::default().apply(slot.get()).await {
            Ok(()) => {
                // Boxed as a `Send` future: this erases the borrows' lifetimes
                // that otherwise trip rustc's Send check of the spawned build.
                let run: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> =
                    Box::pin(self.run_rest(
                        spec,
                        &config,
                        &rest,
                        parent_key,
                        below,
                        slot.get(),
                        staging,
                        disk_mib,
                        log,
                    ));
                run.await
            }
            Err(error) => Err(internal(error.into())),
        };
        slot.give_back().await;
        let (chain, context, disk_size_mib) = outcome?;
        let meta = TemplateMeta {
            layout: hearth_vmm::template::LAYOUT_VERSION,
            name: spec.template_id.clone(),
            build_id: spec.build_id.clone(),
            created_at: hearth_vmm::template::created_now(),
            accel: self.runtime().vmm.accel(),
            cpu_model: self.runtime().vmm.accel().cpu_model().to_owned(),
            qemu_version: self.runtime().accel.qemu_version.clone(),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            cmdline: config.cmdline(),
            guest_mac: hearth_net::GUEST_MAC.into(),
            kernel_key: self.guest.kernel.key.clone(),
            initramfs_key: self.guest.initramfs.key.clone(),
            rootfs_key: chain.first().cloned().unwrap_or_default(),
            envd_version: self.envd_version.clone(),
            boot_seconds: 0.0,
            disk_chain: chain,
            disk_size_mib: Some(disk_size_mib),
            defaults: context,
        };
        let template = self.publish(spec, staging, &meta).map_err(internal)?;
        // Keyed by the final layer's file: a later build finds it only when
        // the store's layer is this very image.
        if let Some(top) = template.meta.disk_chain.last() {
            self.snapshots.put(&snapshot_key(top), &template);
        }
        Ok(template)
    }

    async fn base_layer(
        &self,
        spec: &BuildSpec,
        disk_mib: u64,
        log: &BuildLog,
    ) -> Result<(String, LayerMeta), BuildFailure> {
        match &spec.source {
            BaseSource::Template(id) => {
                let template = self.manager.template(id).ok_or_else(|| {
                    BuildFailure::new("base", format!("template '{id}' is not on this node"))
                })?;
                log.info(Some("base"), format!("FROM template {id}"));
                self.template_layer(&template).await
            }
            BaseSource::Image {
                reference,
                credentials,
            } => {
                let aliased = self.settings.image_aliases.get(reference.as_str());
                match aliased.map(String::as_str) {
                    Some(HEARTH_BASE) => {
                        log.info(
                            Some("base"),
                            format!("FROM {reference} (hearth's base image)"),
                        );
                        self.base_rootfs_layer().await
                    }
                    Some(other) => {
                        log.info(Some("base"), format!("FROM {reference} (as {other})"));
                        self.image_layer(other, credentials.as_ref(), disk_mib, log)
                            .await
                    }
                    None => {
                        log.info(Some("base"), format!("FROM {reference}"));
                        self.image_layer(reference, credentials.as_ref(), disk_mib, log)
                            .await
                    }
                }
            }
        }
    }

    /// Boots the build VM over `below`, runs `steps`, then the start and
    /// ready commands, and saves the VM into `staging`. Returns the disk
    /// chain, the final context and the disk size.
    #[allow(clippy::too_many_arguments)]
    async fn run_rest(
        &self,
        spec: &BuildSpec,
        config: &TemplateConfig,
        steps: &[Step],
        parent_key: String,
        below: LayerMeta,
        slot: &NetSlot,
        staging: &Path,
        disk_mib: u64,
        log: &BuildLog,
    ) -> Result<(Vec<String>, GuestDefaults, u64), BuildFailure> {
        let mut keys: Vec<String> = Vec::with_capacity(steps.len());
        let mut names: Vec<String> = Vec::with_capacity(steps.len());
        let mut parent = parent_key.clone();
        for step in steps {
            parent = step.layer_key(&parent);
            names.push(layer_file_name(&parent, "qcow2"));
            keys.push(parent.clone());
        }
        let first_top = names.first().cloned().unwrap_or_else(|| DISK.to_owned());
        let first_step = match steps.first() {
            Some(step) => step.name(),
            None => FINALIZE.to_owned(),
        };
        log.info(Some(&first_step), "booting the build VM".into());
        let mut vm = BuildVm::boot(
            self.runtime(),
            staging,
            slot,
            config,
            &below,
            &first_top,
            disk_mib,
            &self.layers,
        )
        .await
        .map_err(|e| vm_failure(&spec.template_id, first_step.clone(), e))?;
        let result = self
            .run_steps(
                spec, &mut vm, steps, &keys, &names, below, staging, disk_mib, log,
            )
            .await;
        match result {
            Ok(done) => {
                vm.save(self.runtime())
                    .await
                    .map_err(|e| vm_failure(&spec.template_id, FINALIZE.to_owned(), e))?;
                Ok(done)
            }
            Err(failure) => {
                vm.kill(self.runtime()).await;
                Err(failure)
            }
        }
    }

    /// Writes the template's metadata and moves it to its final place.
    fn publish(&self, spec: &BuildSpec, staging: &Path, meta: &TemplateMeta) -> Result<Template> {
        for file in meta.disk_chain.iter().map(String::as_str).chain([
            DISK,
            MEMORY,
            hearth_vmm::template::DEVICE_STATE,
        ]) {
            hearth_vmm::template::make_read_only(&staging.join(file))?;
        }
        let _ = std::fs::remove_file(staging.join("qmp.sock"));
        let dir = self
            .runtime()
            .data
            .templates()
            .join(&spec.template_id)
            .join(&spec.build_id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(staging, &dir).map_err(|e| io_error(&dir, e))?;
        hearth_vmm::template::write_meta(&dir, meta)?;
        Ok(Template::open(&spec.template_id, &dir)?)
    }
}

fn vm_failure(template: &str, step: String, error: NodeError) -> BuildFailure {
    tracing::warn!(%template, "template build failed");
    BuildFailure::internal(step, "the build VM", error)
}

/// Unique per process and moment: for scratch and image file names.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}", std::process::id())
}

/// The name of a layer image made now: unique, so that a layer made again
/// after its image was pruned never takes a name a stale chain expects.
fn layer_file_name(key: &str, extension: &str) -> String {
    format!("{key}-{}.{extension}", uuid_like())
}

fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

fn io_error(path: &Path, source: std::io::Error) -> NodeError {
    NodeError::Io {
        context: "writing",
        path: path.to_owned(),
        source,
    }
}
