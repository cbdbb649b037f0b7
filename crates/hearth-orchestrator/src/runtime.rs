//! One node's microVM runtime: its accelerator, guest artifacts, templates
//! and the clones it runs, each in its own network slot.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hearth_guest::{Cache, GuestArtifacts, Progress};
use std::sync::Arc;

use hearth_net::{EgressPolicy, NetSlot, SlotNaming, SlotPool};
use hearth_vmm::accel::ProbeImage;
use hearth_vmm::envd_client::ENVD_PORT;
use hearth_vmm::{
    AccelChoice, AdoptRequest, BuildHost, BuildRequest, CloneRequest, GuestNetwork, InitParams,
    NetAttachment, PausedSandbox, QemuVmm, Sandbox, Template, TemplateConfig, TemplateImage,
    TemplateStore,
};

use crate::data_dir::DataDir;
use crate::error::{NodeError, Result};
use crate::record::SandboxRecord;

/// The template every node has: Debian with envd, like E2B's `base`.
pub const BASE_TEMPLATE: &str = "base";
const BASE_VCPUS: u8 = 2;
const BASE_MEMORY_MIB: u32 = 512;
/// Under TCG a cold boot takes seconds; on a busy machine, tens.
const TEMPLATE_BOOT_DEADLINE: Duration = Duration::from_secs(180);
/// How long a clone's envd may take to accept `/init` and answer.
pub const CLONE_READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long an adopted sandbox's envd may take to answer `/health`.
pub const ADOPT_READY_DEADLINE: Duration = Duration::from_secs(10);

/// The shape of the base template.
pub fn base_template_config(tsc_khz: Option<u32>) -> TemplateConfig {
    TemplateConfig {
        name: BASE_TEMPLATE.into(),
        vcpus: BASE_VCPUS,
        memory_mib: BASE_MEMORY_MIB,
        network: guest_network(),
        boot_deadline: TEMPLATE_BOOT_DEADLINE,
        init: None,
        tsc_khz,
    }
}

pub fn guest_network() -> GuestNetwork {
    GuestNetwork {
        address: format!("{}/{}", hearth_net::GUEST_ADDRESS, hearth_net::GUEST_PREFIX),
        gateway: hearth_net::GATEWAY.to_string(),
        mac: hearth_net::GUEST_MAC.into(),
    }
}

/// What [`NodeRuntime::reclaim_leftovers`] found and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub processes: usize,
    pub run_dirs: usize,
    pub slots: usize,
}

/// A sandbox an earlier run of this node left running, taken over.
#[derive(Debug)]
pub struct Adopted {
    /// What it was created with and its state when the earlier run ended.
    pub record: SandboxRecord,
    pub running: RunningSandbox,
}

/// What [`NodeRuntime::recover`] adopted and cleaned up.
#[derive(Debug, Default)]
pub struct Recovery {
    /// For [`crate::SandboxManager::adopt`].
    pub adopted: Vec<Adopted>,
    pub reclaimed: Reclaimed,
}

/// Process ids (other than this one) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    processes_and_command_lines(needle)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// Processes (other than this one) whose command line contains `needle`,
/// with their command lines.
fn processes_and_command_lines(needle: &str) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).ok() != Some(own))
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            cmdline.contains(needle).then_some((pid, cmdline))
        })
        .collect()
}

/// The real uid of process `pid`, while it runs.
fn real_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A clone and the network slot it runs in.
#[derive(Debug)]
pub struct RunningSandbox {
    pub sandbox: Sandbox<QemuVmm>,
    pub slot: NetSlot,
}

/// The guest's system CA bundle (Debian's path, which hearth also writes
/// into images that have none).
pub const GUEST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Environment that points tools which ignore the system trust store at
/// it, when the node has extra CA certificates: Node (npm) adds
/// `NODE_EXTRA_CA_CERTS` to its own roots and Python's `requests` reads
/// certifi's bundle unless `REQUESTS_CA_BUNDLE` says otherwise. The system
/// bundle holds the extra certificates in every guest (hearth appends them
/// when it makes a rootfs). Build steps get it, and every sandbox under its
/// own env vars.
pub fn guest_ca_env(ca_bundle: Option<&[u8]>) -> BTreeMap<String, String> {
    if ca_bundle.is_none() {
        return BTreeMap::new();
    }
    ["NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE"]
        .into_iter()
        .map(|name| (name.to_owned(), GUEST_CA_BUNDLE.to_owned()))
        .collect()
}

/// The node's runtime state.
#[derive(Debug)]
pub struct NodeRuntime {
    pub data: DataDir,
    pub accel: AccelChoice,
    pub vmm: QemuVmm,
    pub naming: SlotNaming,
    /// Where sandboxes get their network slots.
    pub slots: Arc<SlotPool>,
    pub artifacts: Cache,
    pub templates: TemplateStore,
    /// Extra CA certificates (PEM) for the guest rootfs's trust store.
    pub ca_bundle: Option<Vec<u8>>,
    /// Held while disk layers are made or collected, so that a layer being
    /// made (not yet under any disk) is never taken for garbage.
    pub(crate) layers: tokio::sync::Mutex<()>,
    /// The sandboxes' logs and metrics, also of those that ended.
    pub history: crate::sandbox_history::SandboxHistories,
    /// Counts and times what the node does, for operators.
    pub telemetry: crate::telemetry::NodeTelemetry,
}

impl NodeRuntime {
    /// [`guest_ca_env`] for this node's sandboxes.
    pub fn ca_env(&self) -> BTreeMap<String, String> {
        guest_ca_env(self.ca_bundle.as_deref())
    }

    /// Opens the data directory and picks the accelerator (probing it the
    /// first time, with the guest kernel, which is fetched if missing).
    pub async fn open(data: DataDir, naming: SlotNaming, progress: &Progress) -> Result<Self> {
        data.ensure_private().map_err(|source| NodeError::Io {
            context: "securing (0700) the data directory",
            path: data.root().to_path_buf(),
            source,
        })?;
        let artifacts = Cache::new(data.artifacts());
        let cache = artifacts.clone();
        let progress = progress.clone();
        let probe = blocking(move || -> Result<ProbeImage> {
            let (kernel, initramfs) = hearth_guest::ensure_boot(&cache, &progress)?;
            Ok(ProbeImage {
                kernel: kernel.image,
                initramfs: initramfs.image,
            })
        })
        .await?;
        let accel = hearth_vmm::accel::detect(&data.host(), Some(&probe)).await?;
        tracing::info!(accel = %accel.accel, reason = %accel.reason, "accelerator chosen");
        let vmm = confined(QemuVmm::new(accel.accel), &data)?;
        Ok(Self {
            vmm,
            accel,
            slots: SlotPool::new(naming.clone(), 0),
            naming,
            templates: TemplateStore::new(data.templates()),
            artifacts,
            data,
            ca_bundle: None,
            layers: tokio::sync::Mutex::new(()),
            history: crate::sandbox_history::SandboxHistories::default(),
            telemetry: crate::telemetry::NodeTelemetry::default(),
        })
    }

    /// Turns on forwarding and installs the host's firewall and masquerade
    /// for this runtime's slots: needed before sandboxes reach the network.
    pub async fn prepare_host_network(&self) -> Result<()> {
        Ok(hearth_net::host::prepare(&self.naming).await?)
    }

    /// Removes what [`Self::prepare_host_network`] installed.
    pub async fn remove_host_network(&self) -> Result<()> {
        Ok(hearth_net::host::remove(&self.naming).await?)
    }

    /// Where this runtime's sandboxes keep their disks, sockets and logs:
    /// one directory per slot naming, so a test run never touches a node's.
    pub fn sandboxes_dir(&self) -> std::path::PathBuf {
        self.data.sandboxes().join(self.naming.prefix())
    }

    /// Where the histories of this naming's sandboxes are saved.
    pub fn histories_dir(&self) -> std::path::PathBuf {
        self.data.histories().join(self.naming.prefix())
    }

    /// Where paused sandboxes of this naming keep their state.
    pub fn paused_sandboxes_dir(&self) -> std::path::PathBuf {
        self.data.paused().join(self.naming.prefix())
    }

    /// The paused state of sandbox `id`.
    pub fn paused_dir(&self, id: &str) -> std::path::PathBuf {
        self.paused_sandboxes_dir().join(id)
    }

    /// The paused sandboxes on disk, with their records; one whose record
    /// or snapshot is missing or unreadable is skipped (and left).
    pub fn paused_sandboxes(&self) -> Vec<(SandboxRecord, PausedSandbox)> {
        let Ok(entries) = std::fs::read_dir(self.paused_sandboxes_dir()) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for dir in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            let record = match SandboxRecord::read(&dir) {
                Ok(record) if record.info.paused => record,
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "a paused sandbox without a usable record");
                    continue;
                }
            };
            let paused = PausedSandbox {
                id: record.info.spec.sandbox_id.clone(),
                template: record.info.spec.template_id.clone(),
                run_dir: dir,
                memory: None,
            };
            // Without a state file only its disk was kept.
            let memory = paused
                .snapshot()
                .is_file()
                .then(hearth_vmm::DiffStats::default);
            found.push((record, PausedSandbox { memory, ..paused }));
        }
        found
    }

    /// The run directory of sandbox `id`.
    pub fn sandbox_dir(&self, id: &str) -> std::path::PathBuf {
        self.sandboxes_dir().join(id)
    }

    /// Takes over what a previous run of this node left (it crashed, was
    /// killed, or exited keeping its sandboxes): every sandbox whose record
    /// reads, whose QEMU runs the VM of its run directory and answers, and
    /// whose envd answers through its slot is adopted; everything else is
    /// cleaned up as by [`Self::reclaim_leftovers`]. Call before creating
    /// sandboxes or filling the slot pool, and hand the adopted sandboxes
    /// to the manager.
    pub async fn recover(&self) -> Result<Recovery> {
        let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(self.sandboxes_dir())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        let mut adopted: Vec<Adopted> = Vec::new();
        for dir in dirs {
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let record = match SandboxRecord::read(&dir) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(sandbox_id = %id, %error, "no usable record; cleaning the sandbox up");
                    continue;
                }
            };
            if record.info.spec.sandbox_id != id {
                tracing::warn!(sandbox_id = %id, "its record names another sandbox; cleaning it up");
                continue;
            }
            let claimed = adopted
                .iter()
                .any(|a| a.record.slot == record.slot || a.record.qemu_pid == record.qemu_pid);
            if claimed {
                tracing::warn!(sandbox_id = %id, "its record names an adopted sandbox's slot or VM; cleaning it up");
                continue;
            }
            match self.adopt_sandbox(&record).await {
                Ok(running) => {
                    tracing::info!(sandbox_id = %id, host = %running.slot.sandbox_address, "sandbox adopted");
                    adopted.push(Adopted { record, running });
                }
                Err(error) => {
                    tracing::warn!(sandbox_id = %id, %error, "not adoptable; cleaning the sandbox up");
                }
            }
        }
        let reclaimed = self.reclaim(&adopted).await?;
        Ok(Recovery { adopted, reclaimed })
    }

    /// Takes over the sandbox `record` describes, if its VM and envd are
    /// healthy. When envd does not answer, its VM is killed.
    pub async fn adopt_sandbox(&self, record: &SandboxRecord) -> Result<RunningSandbox> {
        let id = &record.info.spec.sandbox_id;
        let slot = NetSlot::at(&self.naming, record.slot)?;
        if !slot.netns_path().exists() {
            return Err(NodeError::Invalid(format!(
                "sandbox '{id}': its network namespace {} is gone",
                slot.netns
            )));
        }
        let request = AdoptRequest {
            sandbox_id: id.clone(),
            template: record.info.spec.template_id.clone(),
            run_dir: self.sandbox_dir(id),
            pid: record.qemu_pid,
            envd_address: SocketAddr::new(slot.sandbox_address.into(), ENVD_PORT),
            access_token: record.info.spec.access_token.clone(),
            ready_deadline: ADOPT_READY_DEADLINE,
            log: Some(self.history.open(id).log.clone()),
        };
        let sandbox = hearth_vmm::adopt_sandbox(&self.vmm, request).await?;
        Ok(RunningSandbox { sandbox, slot })
    }

    /// Cleans up after a previous run of this node that did not shut down
    /// (crash, SIGKILL): kills QEMU processes of its sandboxes, removes
    /// their run directories and deletes this naming's network slots.
    /// Returns how many of each it found. Call before creating sandboxes.
    pub async fn reclaim_leftovers(&self) -> Result<Reclaimed> {
        self.reclaim(&[]).await
    }

    /// [`Self::reclaim_leftovers`], sparing the QEMU, run directory and
    /// slot of each sandbox in `keep`.
    async fn reclaim(&self, keep: &[Adopted]) -> Result<Reclaimed> {
        let sandboxes = self.sandboxes_dir();
        let marker = format!("{}/", sandboxes.display());
        let kept_dirs: Vec<String> = keep
            .iter()
            .map(|a| format!("{}/", a.running.sandbox.run_dir.display()))
            .collect();
        let kept_slots: HashSet<u32> = keep.iter().map(|a| a.running.slot.index).collect();
        let leftover_processes = || {
            processes_and_command_lines(&marker)
                .into_iter()
                .filter(|(_, cmdline)| !kept_dirs.iter().any(|dir| cmdline.contains(dir)))
                .map(|(pid, _)| pid)
                .collect::<Vec<_>>()
        };
        let mut reclaimed = Reclaimed::default();
        let leftovers = leftover_processes();
        // A jailed QEMU runs as its jail uid, which names its cgroup.
        let jail_uids: Vec<u32> = leftovers.iter().filter_map(|&pid| real_uid(pid)).collect();
        for pid in leftovers {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            reclaimed.processes += 1;
        }
        // Give the kernel a moment to tear the killed processes down, so
        // their taps are free when the namespaces go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !leftover_processes().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.remove_vm_cgroups(&jail_uids).await;
        if let Ok(entries) = std::fs::read_dir(&sandboxes) {
            for entry in entries.filter_map(|e| e.ok()) {
                let path = entry.path();
                if keep.iter().any(|a| a.running.sandbox.run_dir == path) {
                    continue;
                }
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|source| NodeError::Io {
                    context: "removing",
                    path: path.clone(),
                    source,
                })?;
                reclaimed.run_dirs += 1;
            }
        }
        let prefix = format!("{}-", self.naming.prefix());
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for entry in entries.filter_map(|e| e.ok()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(index) = name
                    .strip_prefix(&prefix)
                    .and_then(|i| i.parse::<u32>().ok())
                else {
                    continue;
                };
                if kept_slots.contains(&index) {
                    continue;
                }
                NetSlot::at(&self.naming, index)?.destroy().await?;
                reclaimed.slots += 1;
            }
        }
        if reclaimed != Reclaimed::default() {
            tracing::warn!(?reclaimed, "cleaned up after a previous run");
        }
        Ok(reclaimed)
    }

    /// Removes the cgroups of the VMs of jail `uids`, killed by
    /// [`Self::reclaim`]: the leases that would have removed them died with
    /// the previous process. A group empties once its process is reaped:
    /// a busy group is tried again for a few seconds.
    async fn remove_vm_cgroups(&self, uids: &[u32]) {
        let Some(layout) = self.vmm.jail().and_then(|jail| jail.cgroup_layout()) else {
            return;
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut groups: Vec<_> = uids
            .iter()
            .filter_map(|&uid| layout.existing(uid))
            .collect();
        loop {
            groups.retain(|group| group.remove().is_err());
            if groups.is_empty() {
                return;
            }
            if std::time::Instant::now() >= deadline {
                for group in &groups {
                    if let Err(error) = group.remove() {
                        tracing::warn!(group = %group.memory_dir().display(), %error, "a killed VM's cgroup stays");
                    }
                }
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Keeps `size` network slots ready from now on (refilled by a
    /// background task), so creates do not wait for slot set-up.
    pub fn keep_slots_ready(&mut self, size: usize) {
        let pool = SlotPool::new(self.naming.clone(), size);
        tokio::spawn(pool.clone().refill());
        self.slots = pool;
    }

    /// The guest artifacts with `envd` installed, built when missing.
    pub async fn guest_artifacts(
        &self,
        envd: &Path,
        progress: &Progress,
    ) -> Result<GuestArtifacts> {
        let cache = self.artifacts.clone();
        let envd = envd.to_owned();
        let progress = progress.clone();
        let ca_bundle = self.ca_bundle.clone();
        blocking(move || {
            Ok(hearth_guest::ensure_with_ca(
                &cache,
                &envd,
                ca_bundle.as_deref(),
                &progress,
            )?)
        })
        .await
    }

    /// The base template for `envd`: reused when built already, else built
    /// (guest artifacts first). Returns whether anything was built.
    pub async fn ensure_base_template(
        &self,
        envd: &Path,
        progress: &Progress,
    ) -> Result<(Template, bool)> {
        let artifacts = self.guest_artifacts(envd, progress).await?;
        let image = TemplateImage {
            kernel: artifacts.kernel.image.clone(),
            kernel_key: artifacts.kernel.key.clone(),
            initramfs: artifacts.initramfs.image.clone(),
            initramfs_key: artifacts.initramfs.key.clone(),
            rootfs: artifacts.rootfs.image.clone(),
            rootfs_key: artifacts.rootfs.key.clone(),
            envd_version: envd_version(envd).await?,
        };
        let config = base_template_config(self.accel.guest_tsc_khz());
        let qemu_version = self.accel.qemu_version.clone();
        let id = TemplateStore::build_id(&image, &config, self.accel.accel, &qemu_version);
        if let Ok(template) = Template::open(&config.name, &self.templates.dir(&config.name, &id)) {
            return Ok((template, false));
        }
        progress.say(&format!(
            "booting the '{}' template VM under {} to snapshot it",
            config.name, self.accel.accel
        ));
        let slot = NetSlot::create_free(&self.naming, 0).await?;
        let host = BuildHost {
            net: self.attachment(&slot),
            envd_address: SocketAddr::new(slot.sandbox_address.into(), ENVD_PORT),
        };
        let built = progress
            .step_async("snapshotting the template", async {
                self.templates
                    .ensure(
                        &self.vmm,
                        &BuildRequest {
                            image: &image,
                            config: &config,
                            host: &host,
                            qemu_version: &qemu_version,
                        },
                    )
                    .await
                    .map_err(NodeError::from)
            })
            .await;
        let destroyed = slot.destroy().await;
        let built = built?;
        destroyed?;
        Ok(built)
    }

    pub fn attachment(&self, slot: &NetSlot) -> NetAttachment {
        NetAttachment {
            netns: Some(slot.netns_path()),
            tap: hearth_net::TAP_NAME.into(),
            mac: hearth_net::GUEST_MAC.into(),
        }
    }

    /// Clones `template` into a new network slot and initialises envd.
    pub async fn clone_sandbox(
        &self,
        template: &Template,
        sandbox_id: &str,
        init: InitParams,
        egress: &EgressPolicy,
    ) -> Result<RunningSandbox> {
        let run_dir = self.sandbox_dir(sandbox_id);
        self.start_in_slot(sandbox_id, run_dir, init, egress, |request| {
            hearth_vmm::clone_sandbox(&self.vmm, template, request)
        })
        .await
    }

    /// Takes a network slot with `egress` and starts a VM in it with
    /// `start`; a start that fails takes the slot down with it (it may have
    /// left it in any state).
    pub(crate) async fn start_in_slot<F, Fut>(
        &self,
        sandbox_id: &str,
        run_dir: std::path::PathBuf,
        init: InitParams,
        egress: &EgressPolicy,
        start: F,
    ) -> Result<RunningSandbox>
    where
        F: FnOnce(CloneRequest) -> Fut,
        Fut: std::future::Future<Output = hearth_vmm::Result<Sandbox<QemuVmm>>>,
    {
        let slot = self.slots.take().await?;
        if let Err(error) = egress.apply(&slot).await {
            let _ = slot.destroy().await;
            return Err(error.into());
        }
        let request = CloneRequest {
            sandbox_id: sandbox_id.to_owned(),
            run_dir,
            net: self.attachment(&slot),
            envd_address: SocketAddr::new(slot.sandbox_address.into(), ENVD_PORT),
            init,
            ready_deadline: CLONE_READY_DEADLINE,
            log: Some(self.history.open(sandbox_id).log.clone()),
        };
        match start(request).await {
            Ok(sandbox) => Ok(RunningSandbox { sandbox, slot }),
            Err(error) => {
                let _ = slot.destroy().await;
                Err(error.into())
            }
        }
    }

    /// Pauses a clone: its state goes to its run directory (RAM as what
    /// differs from the template) and its VM and network slot are let go.
    /// If it cannot be paused it runs on, and comes back with the error.
    pub async fn pause_sandbox(
        &self,
        template: &Template,
        running: RunningSandbox,
        memory: bool,
    ) -> std::result::Result<PausedSandbox, (NodeError, RunningSandbox)> {
        let RunningSandbox { sandbox, slot } = running;
        let paused = if memory {
            hearth_vmm::pause::pause(&self.vmm, template, sandbox).await
        } else {
            hearth_vmm::pause::pause_filesystem(&self.vmm, sandbox).await
        };
        match paused {
            Ok(mut paused) => {
                if let Err(error) = self.slots.give_back(slot).await {
                    tracing::warn!(sandbox = %paused.id, %error, "a paused clone's slot");
                }
                // Out of the running sandboxes' directory, which a restart
                // cleans up unless their VMs run.
                let target = self.paused_dir(&paused.id);
                // Not while layers are collected: a directory between the
                // two would be seen in neither, its disk's layers in no
                // chain.
                let _layers = self.layers.lock().await;
                let moved = std::fs::create_dir_all(self.paused_sandboxes_dir())
                    .and_then(|()| std::fs::rename(&paused.run_dir, &target));
                match moved {
                    Ok(()) => paused.run_dir = target,
                    Err(error) => {
                        tracing::warn!(sandbox = %paused.id, %error, "a paused sandbox's state stays in its run directory")
                    }
                }
                Ok(paused)
            }
            Err(failed) => Err((
                failed.error.into(),
                RunningSandbox {
                    sandbox: failed.sandbox,
                    slot,
                },
            )),
        }
    }

    /// Resumes a paused clone in a new network slot (every slot gives the
    /// guest the same addresses); with `fresh_boot` (or when only its disk
    /// was kept) its guest boots again. On failure it stays paused.
    pub async fn resume_sandbox(
        &self,
        template: &Template,
        paused: &PausedSandbox,
        init: InitParams,
        egress: &EgressPolicy,
        fresh_boot: bool,
    ) -> Result<RunningSandbox> {
        // Back where running sandboxes are (and where it goes back to if
        // the resume fails).
        let run_dir = self.sandbox_dir(&paused.id);
        if paused.run_dir != run_dir {
            let _layers = self.layers.lock().await;
            std::fs::rename(&paused.run_dir, &run_dir).map_err(|source| NodeError::Io {
                context: "moving back",
                path: paused.run_dir.clone(),
                source,
            })?;
        }
        let moved = PausedSandbox {
            run_dir: run_dir.clone(),
            ..paused.clone()
        };
        let resumed = self
            .start_in_slot(&paused.id, run_dir.clone(), init, egress, |request| {
                hearth_vmm::pause::resume(&self.vmm, template, &moved, request, fresh_boot)
            })
            .await;
        if resumed.is_err() && paused.run_dir != run_dir {
            let _layers = self.layers.lock().await;
            let _ = std::fs::rename(&run_dir, &paused.run_dir);
        }
        resumed
    }

    /// Removes a paused clone's state (its disk and snapshot).
    pub fn discard_paused(&self, paused: &PausedSandbox) -> Result<()> {
        std::fs::remove_dir_all(&paused.run_dir).map_err(|source| NodeError::Io {
            context: "removing",
            path: paused.run_dir.clone(),
            source,
        })
    }

    /// Lets go of a clone without stopping it: its VM, run directory and
    /// slot stay, for a later run of the node to adopt.
    pub fn detach_sandbox(&self, running: RunningSandbox) {
        hearth_vmm::detach(&self.vmm, running.sandbox);
    }

    /// Kills a clone and removes its disk, run directory and network slot.
    pub async fn destroy_sandbox(&self, running: RunningSandbox) -> Result<()> {
        let RunningSandbox { sandbox, slot } = running;
        let vm = hearth_vmm::destroy(&self.vmm, sandbox).await;
        let net = self.slots.give_back(slot).await;
        vm?;
        net?;
        Ok(())
    }
}

/// `envd --version` → its version number.
pub async fn envd_version(envd: &Path) -> Result<String> {
    let output = tokio::process::Command::new(envd)
        .arg("--version")
        .output()
        .await
        .map_err(|source| NodeError::Io {
            context: "running",
            path: envd.to_owned(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .nth(1)
        .filter(|_| output.status.success())
        .map(str::to_owned)
        .ok_or_else(|| {
            NodeError::Invalid(format!(
                "{} --version printed '{}'",
                envd.display(),
                text.trim()
            ))
        })
}

/// Runs blocking build work (subprocesses, file copies) off the runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NodeError::Invalid(format!("a build task failed: {e}")))?
}

/// Jails every VM (see [`hearth_vmm::jail`]) when this process may: making
/// namespaces, cgroups and other users' files takes root.
fn confined(vmm: QemuVmm, data: &DataDir) -> Result<QemuVmm> {
    if !nix::unistd::geteuid().is_root() {
        tracing::warn!("not root: VMs run unjailed, as this user");
        return Ok(vmm);
    }
    let mut config = hearth_vmm::jail::JailConfig::under(data.root());
    config.root = data.jail_root();
    let jail = hearth_vmm::jail::Jail::new(config)?;
    match jail.cgroup_layout() {
        Some(layout) => tracing::info!(cgroups = layout.version(), "VMs are jailed"),
        None => tracing::warn!("VMs are jailed without cgroups"),
    }
    Ok(vmm.with_jail(jail))
}
