//! Template snapshots: a VM booted once until envd answers, then saved as
//! its RAM file plus device state, in a versioned directory layout:
//!
//! ```text
//! <store>/<name>/<build id>/
//!     template.json   metadata (TemplateMeta); written last, so its presence
//!                     marks a finished template
//!     vmlinuz, initramfs.img, rootfs.ext4
//!                     what it booted (hard links into the artifact cache)
//!     disk.qcow2      the root disk's writes during boot; clones' overlays
//!                     use it as their backing file
//!     memory.ram      guest RAM (memory-backend-file); clones map it
//!                     privately, copy-on-write
//!     device.state    QEMU device state (migration stream without RAM)
//!     serial.log      the boot's console output
//! ```
//!
//! The build id hashes everything the snapshot depends on, so a change of
//! kernel, rootfs, envd, QEMU, accelerator or VM shape builds a new one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accel::Accel;
use crate::envd_client::EnvdClient;
use crate::error::{Result, VmmError};
use crate::vmm::{BootSource, ConsoleSink, GuestMemory, NetAttachment, VmSpec, Vmm};

/// Version of the directory layout and of `template.json`.
pub const LAYOUT_VERSION: u32 = 1;
pub const META: &str = "template.json";
pub const KERNEL: &str = "vmlinuz";
pub const INITRAMFS: &str = "initramfs.img";
pub const ROOTFS: &str = "rootfs.ext4";
pub const DISK: &str = "disk.qcow2";
pub const MEMORY: &str = "memory.ram";
pub const DEVICE_STATE: &str = "device.state";
/// QEMU's migration stream starts with "QEVM".
const DEVICE_STATE_MAGIC: &[u8; 4] = b"QEVM";
const MIB: u64 = 1 << 20;
/// Builds of one template kept on disk (the newest and its predecessor).
const KEEP_BUILDS: usize = 2;
/// Bumped when the way a template is booted and saved changes.
const RECIPE: &str = "template-3";

/// The boot artifacts a template is made from, with their cache keys.
#[derive(Debug, Clone)]
pub struct TemplateImage {
    pub kernel: PathBuf,
    pub kernel_key: String,
    pub initramfs: PathBuf,
    pub initramfs_key: String,
    pub rootfs: PathBuf,
    pub rootfs_key: String,
    pub envd_version: String,
}

/// The guest side of the network, fixed at boot and so shared by every clone.
#[derive(Debug, Clone)]
pub struct GuestNetwork {
    /// `address/prefix`
    pub address: String,
    pub gateway: String,
    pub mac: String,
}

/// The shape of a template VM.
#[derive(Debug, Clone)]
pub struct TemplateConfig {
    pub name: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub network: GuestNetwork,
    /// How long the boot may take until envd answers.
    pub boot_deadline: Duration,
    /// The root filesystem's init, when it is not the initramfs's default
    /// (`/sbin/hearth-init`).
    pub init: Option<String>,
    /// The guest's TSC frequency, so that its kernel does not measure it
    /// (see [`crate::AccelChoice::guest_tsc_khz`]).
    pub tsc_khz: Option<u32>,
}

impl TemplateConfig {
    /// A cold boot of this template's VM in `dir` (kernel and initramfs
    /// there), its RAM in the template's memory file, so that it can be
    /// saved as the template; `disk` names its root disk image in `dir`.
    pub fn boot_spec(
        &self,
        name: String,
        dir: &Path,
        accel: Accel,
        disk: &str,
        net: NetAttachment,
    ) -> VmSpec {
        VmSpec {
            name,
            run_dir: dir.to_owned(),
            accel,
            boot: BootSource {
                kernel: dir.join(KERNEL),
                initramfs: dir.join(INITRAMFS),
                cmdline: self.cmdline(),
            },
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            memory: GuestMemory::TemplateFile(dir.join(MEMORY)),
            disk: Some(dir.join(disk)),
            net: Some(net),
            console: ConsoleSink::File,
        }
    }

    pub fn cmdline(&self) -> String {
        let mut line = format!(
            "console=ttyS0 panic=-1 reboot=t random.trust_cpu=on hearth.ip={} hearth.gw={}",
            self.network.address, self.network.gateway
        );
        if let Some(init) = &self.init {
            line.push_str(&format!(" hearth.init={init}"));
        }
        if let Some(khz) = self.tsc_khz {
            // The TSC is the host's constant one, so the guest's clocksource
            // watchdog must not judge it by jiffies: under TCG ticks arrive
            // late, the watchdog marks the TSC unstable, and on jiffies alone
            // the kernel cannot stop its tick, so every idle vCPU takes 250
            // timer interrupts a second (~12 % of a host core per idle VM).
            line.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
        }
        line
    }
}

/// What a finished template records about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateMeta {
    pub layout: u32,
    pub name: String,
    pub build_id: String,
    pub created_at: String,
    pub accel: Accel,
    pub cpu_model: String,
    pub qemu_version: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub cmdline: String,
    pub guest_mac: String,
    pub kernel_key: String,
    pub initramfs_key: String,
    pub rootfs_key: String,
    pub envd_version: String,
    /// From QEMU start to envd answering, during the build.
    pub boot_seconds: f64,
    /// The images under `disk.qcow2`, bottom first, when they are not just
    /// `rootfs.ext4`: a built template's base image and step layers (hard
    /// links into the layer store, under their store names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_chain: Vec<String>,
    /// The disk's size as the guest sees it, when it is not the rootfs's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size_mib: Option<u64>,
    /// envd's defaults for the template's sandboxes (from its build's
    /// final USER, WORKDIR and ENV).
    #[serde(default)]
    pub defaults: GuestDefaults,
}

/// The user, working directory and environment a sandbox's commands get
/// unless they name others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
}

/// A finished template on disk.
#[derive(Debug, Clone)]
pub struct Template {
    pub dir: PathBuf,
    pub meta: TemplateMeta,
}

impl Template {
    pub fn name(&self) -> &str {
        &self.meta.name
    }
    pub fn memory_file(&self) -> PathBuf {
        self.dir.join(MEMORY)
    }
    pub fn device_state(&self) -> PathBuf {
        self.dir.join(DEVICE_STATE)
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK)
    }

    /// The size of the guest's disk in bytes: the rootfs its overlays are
    /// backed by (0 when unreadable).
    pub fn disk_size(&self) -> u64 {
        if let Some(mib) = self.meta.disk_size_mib {
            return mib * MIB;
        }
        std::fs::metadata(self.dir.join(ROOTFS)).map_or(0, |m| m.len())
    }

    /// The boot source clones are started with (QEMU checks it matches).
    pub fn boot(&self) -> BootSource {
        BootSource {
            kernel: self.dir.join(KERNEL),
            initramfs: self.dir.join(INITRAMFS),
            cmdline: self.meta.cmdline.clone(),
        }
    }

    /// Opens and checks the template in `dir`: metadata, files, sizes and
    /// the device state's header. Errors name the template and what is wrong.
    pub fn open(name: &str, dir: &Path) -> Result<Self> {
        let invalid = |reason: String| VmmError::Template {
            template: name.to_owned(),
            reason,
        };
        let meta_path = dir.join(META);
        let bytes = match std::fs::read(&meta_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(invalid(format!("no snapshot at {}", dir.display())));
            }
            Err(e) => return Err(invalid(format!("reading {}: {e}", meta_path.display()))),
        };
        let meta: TemplateMeta = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("corrupt {}: {e}", meta_path.display())))?;
        if meta.layout != LAYOUT_VERSION {
            return Err(invalid(format!(
                "snapshot layout {} is not the supported {LAYOUT_VERSION}; rebuild the template",
                meta.layout
            )));
        }
        let disk_images: Vec<&str> = if meta.disk_chain.is_empty() {
            vec![ROOTFS]
        } else {
            meta.disk_chain.iter().map(String::as_str).collect()
        };
        let files = [KERNEL, INITRAMFS, DISK, MEMORY, DEVICE_STATE];
        for file in files.into_iter().chain(disk_images) {
            if file.contains('/') || !dir.join(file).is_file() {
                return Err(invalid(format!(
                    "snapshot file {file} is missing from {}",
                    dir.display()
                )));
            }
        }
        let memory_len = std::fs::metadata(dir.join(MEMORY))
            .map(|m| m.len())
            .unwrap_or(0);
        if memory_len != u64::from(meta.memory_mib) * MIB {
            return Err(invalid(format!(
                "corrupt snapshot: {MEMORY} holds {memory_len} bytes, not {} MiB",
                meta.memory_mib
            )));
        }
        let mut magic = [0u8; 4];
        let state_ok = std::fs::File::open(dir.join(DEVICE_STATE))
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && &magic == DEVICE_STATE_MAGIC;
        if !state_ok {
            return Err(invalid(format!(
                "corrupt snapshot: {DEVICE_STATE} is not a QEMU device state"
            )));
        }
        Ok(Self {
            dir: dir.to_owned(),
            meta,
        })
    }

    /// Fails unless this template can be restored by `vmm`.
    pub fn check_restorable(&self, accel: Accel) -> Result<()> {
        if self.meta.accel != accel {
            return Err(VmmError::Template {
                template: self.meta.name.clone(),
                reason: format!(
                    "the snapshot was taken under {}, but this host runs VMs under {accel}; \
                     a snapshot restores only under the accelerator it was taken with — rebuild it",
                    self.meta.accel
                ),
            });
        }
        Ok(())
    }
}

/// Where the template VM's envd is reached during the build.
#[derive(Debug, Clone)]
pub struct BuildHost {
    pub net: NetAttachment,
    pub envd_address: SocketAddr,
}

/// What a template is built from and how, in one place.
#[derive(Debug, Clone, Copy)]
pub struct BuildRequest<'a> {
    pub image: &'a TemplateImage,
    pub config: &'a TemplateConfig,
    pub host: &'a BuildHost,
    /// `qemu-system-x86_64 --version`: a snapshot restores only into the
    /// QEMU that wrote it.
    pub qemu_version: &'a str,
}

impl BuildRequest<'_> {
    pub fn build_id(&self, accel: Accel) -> String {
        TemplateStore::build_id(self.image, self.config, accel, self.qemu_version)
    }
}

/// The templates of one node.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    root: PathBuf,
}

impl TemplateStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The build id of `config` over `image` under `accel` and QEMU.
    pub fn build_id(
        image: &TemplateImage,
        config: &TemplateConfig,
        accel: Accel,
        qemu_version: &str,
    ) -> String {
        let mut hasher = Sha256::new();
        for part in [
            RECIPE,
            &LAYOUT_VERSION.to_string(),
            &image.kernel_key,
            &image.initramfs_key,
            &image.rootfs_key,
            &image.envd_version,
            &accel.to_string(),
            accel.cpu_model(),
            qemu_version,
            &config.vcpus.to_string(),
            &config.memory_mib.to_string(),
            &config.cmdline(),
            &config.network.mac,
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hasher
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn dir(&self, name: &str, build_id: &str) -> PathBuf {
        self.root.join(name).join(build_id)
    }

    /// Removes older builds of template `name`, keeping the newest few.
    /// Running clones keep working: their QEMU holds the files open.
    fn prune(&self, name: &str, keep: &str) {
        let Ok(entries) = std::fs::read_dir(self.root.join(name)) else {
            return;
        };
        let mut builds: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                let file = e.file_name();
                let file = file.to_string_lossy();
                !file.starts_with('.') && file != keep
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        builds.sort();
        let excess = (builds.len() + 1).saturating_sub(KEEP_BUILDS);
        for (_, dir) in builds.into_iter().take(excess) {
            tracing::info!(template = name, dir = %dir.display(), "removing an old template build");
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Opens the template if it was built, else builds it. Returns whether it
    /// was built now.
    pub async fn ensure<V: Vmm>(
        &self,
        vmm: &V,
        request: &BuildRequest<'_>,
    ) -> Result<(Template, bool)> {
        let config = request.config;
        let id = request.build_id(vmm.accel());
        let dir = self.dir(&config.name, &id);
        if dir.join(META).is_file() {
            if let Ok(template) = Template::open(&config.name, &dir) {
                return Ok((template, false));
            }
            tracing::warn!(template = %config.name, dir = %dir.display(), "rebuilding an unusable template");
        }
        let template = self.build(vmm, request).await?;
        Ok((template, true))
    }

    /// Boots the template VM, waits for envd, quiesces and saves it.
    pub async fn build<V: Vmm>(&self, vmm: &V, request: &BuildRequest<'_>) -> Result<Template> {
        let config = request.config;
        let wrap = |cause: VmmError| VmmError::TemplateBuild {
            template: config.name.clone(),
            cause: Box::new(cause),
        };
        let id = request.build_id(vmm.accel());
        let final_dir = self.dir(&config.name, &id);
        let staging = self
            .root
            .join(&config.name)
            .join(format!(".building-{id}-{}", std::process::id()));
        let result = self
            .build_into(vmm, request, &id, &staging)
            .await
            .and_then(|meta| {
                let _ = std::fs::remove_dir_all(&final_dir);
                std::fs::rename(&staging, &final_dir)
                    .map_err(VmmError::io("publishing", &final_dir))?;
                write_meta(&final_dir, &meta)?;
                self.prune(&config.name, &id);
                Ok(Template {
                    dir: final_dir.clone(),
                    meta,
                })
            });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result.map_err(wrap)
    }

    async fn build_into<V: Vmm>(
        &self,
        vmm: &V,
        request: &BuildRequest<'_>,
        id: &str,
        dir: &Path,
    ) -> Result<TemplateMeta> {
        let BuildRequest {
            image,
            config,
            host,
            qemu_version,
        } = *request;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(VmmError::io("creating", dir))?;
        link_or_copy(&image.kernel, &dir.join(KERNEL))?;
        link_or_copy(&image.initramfs, &dir.join(INITRAMFS))?;
        link_or_copy(&image.rootfs, &dir.join(ROOTFS))?;
        // A relative backing file keeps the directory movable.
        create_overlay(&dir.join(DISK), Path::new(ROOTFS), "raw").await?;
        let spec = config.boot_spec(
            format!("template {}", config.name),
            dir,
            vmm.accel(),
            DISK,
            host.net.clone(),
        );
        let started = Instant::now();
        let vm = vmm.start(&spec).await?;
        let saved = async {
            let envd = EnvdClient::new(&spec.name, host.envd_address)?;
            envd.wait_healthy(started + config.boot_deadline, || None)
                .await?;
            let boot_seconds = started.elapsed().as_secs_f64();
            // Quiesce: flush the guest's dirty pages to the disk overlay, so
            // clones do not each write them back.
            envd.run("sync", &[], None, Duration::from_secs(30)).await?;
            vmm.snapshot_template(&vm, &dir.join(DEVICE_STATE)).await?;
            Ok::<_, VmmError>(boot_seconds)
        }
        .await;
        let boot_seconds = match saved {
            Ok(seconds) => seconds,
            Err(error) => {
                let _ = vmm.kill(vm).await;
                return Err(annotate_with_console(error, &spec.serial_log()));
            }
        };
        vmm.stop(vm).await?;
        for file in [DISK, MEMORY, DEVICE_STATE, ROOTFS] {
            make_read_only(&dir.join(file))?;
        }
        let _ = std::fs::remove_file(dir.join("qmp.sock"));
        Ok(TemplateMeta {
            layout: LAYOUT_VERSION,
            name: config.name.clone(),
            build_id: id.to_owned(),
            created_at: created_now(),
            accel: vmm.accel(),
            cpu_model: vmm.accel().cpu_model().to_owned(),
            qemu_version: qemu_version.to_owned(),
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            cmdline: config.cmdline(),
            guest_mac: config.network.mac.clone(),
            kernel_key: image.kernel_key.clone(),
            initramfs_key: image.initramfs_key.clone(),
            rootfs_key: image.rootfs_key.clone(),
            envd_version: image.envd_version.clone(),
            boot_seconds,
            disk_chain: Vec::new(),
            disk_size_mib: None,
            defaults: GuestDefaults::default(),
        })
    }
}

/// The time a template is made, as `template.json` records it.
pub fn created_now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// Adds the end of the guest console to a timeout, which is where the
/// reason a guest never answered usually shows.
pub fn annotate_with_console(error: VmmError, serial: &Path) -> VmmError {
    match error {
        VmmError::Timeout { vm, what, after } => {
            let tail = crate::qemu::log_tail(serial);
            VmmError::Envd {
                vm,
                message: format!("timed out after {after:?} waiting for {what}; console: {tail}"),
            }
        }
        other => other,
    }
}

pub fn write_meta(dir: &Path, meta: &TemplateMeta) -> Result<()> {
    let json = serde_json::to_vec_pretty(meta)
        .map_err(|e| VmmError::Invalid(format!("encoding template metadata: {e}")))?;
    let temporary = dir.join(".template.json.tmp");
    std::fs::write(&temporary, json).map_err(VmmError::io("writing", &temporary))?;
    std::fs::rename(&temporary, dir.join(META)).map_err(VmmError::io("writing", dir.join(META)))
}

/// Hard-links `from` at `to`, else copies it there. Whatever is at `to` is
/// unlinked first, never written through: it may be another link to `from`
/// itself (a copy onto it would truncate both), or to a cached artifact.
pub fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    match std::fs::remove_file(to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(VmmError::io("replacing", to)(e)),
    }
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(drop)
        .map_err(VmmError::io("copying", from))
}

pub fn make_read_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))
        .map_err(VmmError::io("making read-only", path))
}

/// `qemu-img create` of a qcow2 overlay over `backing`.
pub async fn create_overlay(path: &Path, backing: &Path, backing_format: &str) -> Result<()> {
    create_overlay_sized(path, backing, backing_format, None).await
}

/// [`create_overlay`], `size_mib` large when given (else the backing's size).
/// A relative `backing` is resolved from `path`'s directory.
pub async fn create_overlay_sized(
    path: &Path,
    backing: &Path,
    backing_format: &str,
    size_mib: Option<u64>,
) -> Result<()> {
    let mut command = tokio::process::Command::new("qemu-img");
    command
        .args(["create", "-q", "-f", "qcow2", "-F", backing_format, "-b"])
        .arg(backing)
        .arg(path);
    if let Some(mib) = size_mib {
        command.arg(format!("{mib}M"));
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.kill_on_drop(true).output())
        .await
        .map_err(|_| {
            VmmError::Invalid(format!("qemu-img create {} took too long", path.display()))
        })?
        .map_err(VmmError::io("running qemu-img for", path))?;
    if !output.status.success() {
        return Err(VmmError::Invalid(format!(
            "qemu-img create {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> TemplateImage {
        TemplateImage {
            kernel: "/k".into(),
            kernel_key: "k1".into(),
            initramfs: "/i".into(),
            initramfs_key: "i1".into(),
            rootfs: "/r".into(),
            rootfs_key: "r1".into(),
            envd_version: "0.6.4".into(),
        }
    }

    fn config() -> TemplateConfig {
        TemplateConfig {
            name: "base".into(),
            vcpus: 2,
            memory_mib: 512,
            network: GuestNetwork {
                address: "169.254.0.21/30".into(),
                gateway: "169.254.0.22".into(),
                mac: "02:00:00:00:00:01".into(),
            },
            boot_deadline: Duration::from_secs(1),
            init: None,
            tsc_khz: None,
        }
    }

    #[test]
    fn the_build_id_follows_every_input() {
        let base = TemplateStore::build_id(&image(), &config(), Accel::Tcg, "QEMU 10");
        assert_eq!(
            base,
            TemplateStore::build_id(&image(), &config(), Accel::Tcg, "QEMU 10")
        );
        assert_ne!(
            base,
            TemplateStore::build_id(&image(), &config(), Accel::Kvm, "QEMU 10")
        );
        assert_ne!(
            base,
            TemplateStore::build_id(&image(), &config(), Accel::Tcg, "QEMU 11")
        );
        let mut other = image();
        other.rootfs_key = "r2".into();
        assert_ne!(
            base,
            TemplateStore::build_id(&other, &config(), Accel::Tcg, "QEMU 10")
        );
        let mut bigger = config();
        bigger.memory_mib = 1024;
        assert_ne!(
            base,
            TemplateStore::build_id(&image(), &bigger, Accel::Tcg, "QEMU 10")
        );
    }

    #[test]
    fn linking_over_a_link_of_the_same_file_keeps_its_content() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("hearth-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let source = dir.join("vmlinuz");
        std::fs::write(&source, b"kernel bytes")?;
        let target = dir.join("linked");
        std::fs::hard_link(&source, &target)?;
        link_or_copy(&source, &target).map_err(std::io::Error::other)?;
        assert_eq!(std::fs::read(&source)?, b"kernel bytes");
        assert_eq!(std::fs::read(&target)?, b"kernel bytes");
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn the_command_line_carries_the_guest_network() {
        let line = config().cmdline();
        assert!(line.contains("hearth.ip=169.254.0.21/30"));
        assert!(line.contains("hearth.gw=169.254.0.22"));
        assert!(line.contains("console=ttyS0"));
    }
}
