//! The VM a template build runs its steps in: booted from the layer below
//! the first step that must run, with its RAM in the template's memory file
//! so that, once the steps and the start command are done, it is saved as
//! the template itself. After each step its disk is frozen (the image it
//! wrote becomes a read-only layer, a new one takes its writes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_net::NetSlot;
use hearth_vmm::envd_client::ENVD_PORT;
use hearth_vmm::template::{DEVICE_STATE, MEMORY, create_overlay_sized};
use hearth_vmm::{EnvdClient, OutputStream, ProcessSpec, QemuVm, TemplateConfig, Vmm};

use crate::error::{NodeError, Result};
use crate::runtime::NodeRuntime;

use super::layers::LayerMeta;

/// How long a build VM may take to boot until envd answers: a boot takes
/// seconds even under TCG, so one that takes this long has stalled.
const BOOT_DEADLINE: Duration = Duration::from_secs(60);
/// Boots tried before a build fails.
const BOOT_ATTEMPTS: u32 = 3;

enum BootError {
    /// The VM started but envd never answered.
    Hung(NodeError),
    Failed(NodeError),
}
/// Short housekeeping commands (sync, probes).
const HOUSEKEEPING: Duration = Duration::from_secs(120);

/// The format of a layer image, by its name.
pub fn format_of(name: &str) -> &'static str {
    if name.ends_with(".qcow2") {
        "qcow2"
    } else {
        "raw"
    }
}

/// A running build VM.
pub struct BuildVm {
    vm: Option<QemuVm>,
    envd: EnvdClient,
    dir: PathBuf,
    /// The image the VM writes to now (a name in `dir`).
    top: String,
    /// `/bin/bash` when the guest has it, else `/bin/sh`.
    pub shell: String,
}

impl BuildVm {
    /// Boots a VM in `dir` whose disk is a new image `top` over the layer
    /// `below` (whose chain is linked into `dir` first).
    #[allow(clippy::too_many_arguments)]
    pub async fn boot(
        runtime: &NodeRuntime,
        dir: &Path,
        slot: &NetSlot,
        config: &TemplateConfig,
        below: &LayerMeta,
        top: &str,
        disk_mib: u64,
        layers: &super::layers::LayerStore,
    ) -> Result<Self> {
        layers.link_chain(below, dir)?;
        let size = disk_mib.max(below.disk_size_mib);
        let mut attempt = 1;
        let mut build = loop {
            match Self::try_boot(runtime, dir, slot, config, below, top, size).await {
                Ok(build) => break build,
                Err(BootError::Hung(error)) if attempt < BOOT_ATTEMPTS => {
                    // Under TCG a cold boot now and then stalls in the guest
                    // kernel's early timer set-up; a fresh VM boots.
                    tracing::warn!(template = %config.name, attempt, %error, "the build VM did not come up; booting it again");
                    attempt += 1;
                }
                Err(BootError::Hung(error) | BootError::Failed(error)) => return Err(error),
            }
        };
        if build.quiet("test -x /bin/bash").await? == 0 {
            build.shell = "/bin/bash".into();
        }
        if disk_mib > below.disk_size_mib {
            // The layer's filesystem is smaller than the disk now: grow it
            // (online) where the image has the tool.
            let _ = build
                .quiet("command -v resize2fs >/dev/null && resize2fs /dev/vda >/dev/null 2>&1")
                .await;
        }
        Ok(build)
    }

    /// The build's directory on the host.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn try_boot(
        runtime: &NodeRuntime,
        dir: &Path,
        slot: &NetSlot,
        config: &TemplateConfig,
        below: &LayerMeta,
        top: &str,
        size: u64,
    ) -> std::result::Result<Self, BootError> {
        // A retried boot starts from nothing: no writes, no RAM.
        for stale in [top, MEMORY] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        create_overlay_sized(
            &dir.join(top),
            Path::new(below.top()),
            format_of(below.top()),
            Some(size),
        )
        .await
        .map_err(|e| BootError::Failed(e.into()))?;
        let spec = config.boot_spec(
            format!("build {}", config.name),
            dir,
            runtime.vmm.accel(),
            top,
            runtime.attachment(slot),
        );
        let started = Instant::now();
        let vm = runtime
            .vmm
            .start(&spec)
            .await
            .map_err(|e| BootError::Failed(e.into()))?;
        let envd = EnvdClient::new(
            &spec.name,
            SocketAddr::new(slot.sandbox_address.into(), ENVD_PORT),
        )
        .map_err(|e| BootError::Failed(e.into()))?;
        let build = Self {
            vm: Some(vm),
            envd,
            dir: dir.to_owned(),
            top: top.to_owned(),
            shell: "/bin/sh".into(),
        };
        if let Err(error) = build
            .envd
            .wait_healthy(started + BOOT_DEADLINE, || None)
            .await
        {
            let error = hearth_vmm::template::annotate_with_console(error, &spec.serial_log());
            build.kill(runtime).await;
            return Err(BootError::Hung(error.into()));
        }
        Ok(build)
    }

    /// Runs a short root command and returns its exit code.
    pub async fn quiet(&self, script: &str) -> Result<i32> {
        let spec = ProcessSpec::shell("/bin/sh", script, "root");
        Ok(self
            .envd
            .run_streaming(&spec, HOUSEKEEPING, |_, _| {})
            .await?)
    }

    /// Runs `spec`, handing its output to `on_output`; returns the exit code.
    pub async fn run(
        &self,
        spec: &ProcessSpec,
        timeout: Duration,
        on_output: impl FnMut(OutputStream, &[u8]) + Send,
    ) -> Result<i32> {
        Ok(self.envd.run_streaming(spec, timeout, on_output).await?)
    }

    /// Starts `spec` in the background (a template's start command).
    pub async fn start_detached(&self, spec: &ProcessSpec) -> Result<()> {
        Ok(self.envd.start_detached(spec).await?)
    }

    /// Copies a host file into the guest.
    pub async fn upload(&self, source: &Path, target: &str) -> Result<()> {
        Ok(self.envd.upload(source, target, "root").await?)
    }

    fn vm(&self) -> Result<&QemuVm> {
        self.vm
            .as_ref()
            .ok_or_else(|| NodeError::Invalid("the build VM is gone".into()))
    }

    /// Freezes the disk: flushes the guest's writes, makes `next` (over the
    /// current image) the one the VM writes to, and returns the name of the
    /// image that is now complete and read-only.
    pub async fn freeze(
        &mut self,
        runtime: &NodeRuntime,
        next: &str,
        disk_mib: u64,
    ) -> Result<String> {
        if self.quiet("sync").await? != 0 {
            return Err(NodeError::Invalid("sync failed in the build VM".into()));
        }
        create_overlay_sized(
            &self.dir.join(next),
            Path::new(&self.top),
            "qcow2",
            Some(disk_mib),
        )
        .await?;
        runtime
            .vmm
            .snapshot_disk(self.vm()?, &self.dir.join(next))
            .await?;
        Ok(std::mem::replace(&mut self.top, next.to_owned()))
    }

    /// Flushes the guest, saves the VM (its RAM is already in the memory
    /// file) and stops it.
    pub async fn save(mut self, runtime: &NodeRuntime) -> Result<()> {
        if self.quiet("sync").await? != 0 {
            return Err(NodeError::Invalid("sync failed in the build VM".into()));
        }
        let vm = self
            .vm
            .take()
            .ok_or_else(|| NodeError::Invalid("the build VM is gone".into()))?;
        if let Err(error) = runtime
            .vmm
            .snapshot_template(&vm, &self.dir.join(DEVICE_STATE))
            .await
        {
            let _ = runtime.vmm.kill(vm).await;
            return Err(error.into());
        }
        runtime.vmm.stop(vm).await?;
        let _ = std::fs::remove_file(self.dir.join("qmp.sock"));
        Ok(())
    }

    /// Kills the VM (a failed build). A cancelled build drops the whole
    /// value instead, which kills QEMU as well.
    pub async fn kill(mut self, runtime: &NodeRuntime) {
        if let Some(vm) = self.vm.take() {
            let _ = runtime.vmm.kill(vm).await;
        }
    }
}
