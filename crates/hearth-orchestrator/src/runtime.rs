//! One node's microVM runtime: its accelerator, guest artifacts, templates
//! and the clones it runs, each in its own network slot.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hearth_guest::{Cache, GuestArtifacts, Progress};
use std::sync::Arc;

use hearth_net::{EgressPolicy, NetSlot, SlotNaming, SlotPool};
use hearth_vmm::accel::ProbeImage;
use hearth_vmm::envd_client::ENVD_PORT;
use hearth_vmm::{
    AccelChoice, BuildHost, BuildRequest, CloneRequest, GuestNetwork, InitParams, NetAttachment,
    QemuVmm, Sandbox, Template, TemplateConfig, TemplateImage, TemplateStore,
};

use crate::data_dir::DataDir;
use crate::error::{NodeError, Result};

/// The template every node has: Debian with envd, like E2B's `base`.
pub const BASE_TEMPLATE: &str = "base";
const BASE_VCPUS: u8 = 2;
const BASE_MEMORY_MIB: u32 = 512;
/// Under TCG a cold boot takes seconds; on a busy machine, tens.
const TEMPLATE_BOOT_DEADLINE: Duration = Duration::from_secs(180);
/// How long a clone's envd may take to accept `/init` and answer.
pub const CLONE_READY_DEADLINE: Duration = Duration::from_secs(30);

/// The shape of the base template.
pub fn base_template_config() -> TemplateConfig {
    TemplateConfig {
        name: BASE_TEMPLATE.into(),
        vcpus: BASE_VCPUS,
        memory_mib: BASE_MEMORY_MIB,
        network: guest_network(),
        boot_deadline: TEMPLATE_BOOT_DEADLINE,
    }
}

fn guest_network() -> GuestNetwork {
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

/// Process ids (other than this one) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).ok() != Some(own))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A clone and the network slot it runs in.
#[derive(Debug)]
pub struct RunningSandbox {
    pub sandbox: Sandbox<QemuVmm>,
    pub slot: NetSlot,
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
}

impl NodeRuntime {
    /// Opens the data directory and picks the accelerator (probing it the
    /// first time, with the guest kernel, which is fetched if missing).
    pub async fn open(data: DataDir, naming: SlotNaming, progress: &Progress) -> Result<Self> {
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
        Ok(Self {
            vmm: QemuVmm::new(accel.accel),
            accel,
            slots: SlotPool::new(naming.clone(), 0),
            naming,
            templates: TemplateStore::new(data.templates()),
            artifacts,
            data,
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

    /// The run directory of sandbox `id`.
    pub fn sandbox_dir(&self, id: &str) -> std::path::PathBuf {
        self.sandboxes_dir().join(id)
    }

    /// Cleans up after a previous run of this node that did not shut down
    /// (crash, SIGKILL): kills QEMU processes of its sandboxes, removes
    /// their run directories and deletes this naming's network slots.
    /// Returns how many of each it found. Call before creating sandboxes.
    pub async fn reclaim_leftovers(&self) -> Result<Reclaimed> {
        let sandboxes = self.sandboxes_dir();
        let marker = format!("{}/", sandboxes.display());
        let mut reclaimed = Reclaimed::default();
        for pid in processes_mentioning(&marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            reclaimed.processes += 1;
        }
        // Give the kernel a moment to tear the killed processes down, so
        // their taps are free when the namespaces go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !processes_mentioning(&marker).is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if let Ok(entries) = std::fs::read_dir(&sandboxes) {
            for entry in entries.filter_map(|e| e.ok()) {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(|source| NodeError::Io {
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
                NetSlot::at(&self.naming, index)?.destroy().await?;
                reclaimed.slots += 1;
            }
        }
        if reclaimed != Reclaimed::default() {
            tracing::warn!(?reclaimed, "cleaned up after a previous run");
        }
        Ok(reclaimed)
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
        blocking(move || Ok(hearth_guest::ensure(&cache, &envd, &progress)?)).await
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
        let config = base_template_config();
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

    fn attachment(&self, slot: &NetSlot) -> NetAttachment {
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
        let slot = self.slots.take().await?;
        if let Err(error) = egress.apply(&slot).await {
            let _ = slot.destroy().await;
            return Err(error.into());
        }
        let request = CloneRequest {
            sandbox_id: sandbox_id.to_owned(),
            run_dir: self.sandbox_dir(sandbox_id),
            net: self.attachment(&slot),
            envd_address: SocketAddr::new(slot.sandbox_address.into(), ENVD_PORT),
            init,
            ready_deadline: CLONE_READY_DEADLINE,
        };
        match hearth_vmm::clone_sandbox(&self.vmm, template, request).await {
            Ok(sandbox) => Ok(RunningSandbox { sandbox, slot }),
            Err(error) => {
                // A clone that failed may have left the slot in any state.
                let _ = slot.destroy().await;
                Err(error.into())
            }
        }
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
