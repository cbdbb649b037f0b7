//! Confining each VMM process as Firecracker's jailer does: QEMU runs as a
//! uid of its own with no capabilities and `no_new_privs`, in a mount
//! namespace whose root holds only `/usr`, a few device nodes and the VM's
//! own files, inside a cgroup that limits its memory, CPU time and tasks,
//! and under QEMU's own seccomp filter (`-sandbox`, see [`crate::qemu`]).
//!
//! What needs root is done by hearth before QEMU starts: the tap device is
//! opened here and inherited ([`tap`]), the network namespace joined, the
//! cgroup made.

mod backing;
pub mod cgroup;
mod child;
mod mounts;
mod tap;

use std::collections::BTreeSet;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use backing::backing_chain;
pub use cgroup::{CgroupLayout, CgroupLimits, VmCgroup};
pub use child::ChildSetup;
pub use mounts::MountPlan;
pub use tap::open_tap;

use crate::error::{Result, VmmError};

/// Where and as whom jailed VMs run.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// An empty directory that each VM's private tmpfs root is mounted on
    /// (in the VM's own mount namespace: the host never sees the mounts).
    pub root: PathBuf,
    /// VMs get uids `uid_base .. uid_base + uid_count`, one each.
    pub uid_base: u32,
    pub uid_count: u32,
    /// The group of every jailed VM: what they must share (template files)
    /// is readable by this group and by no other user of the host.
    pub gid: u32,
    /// Where cgroup file systems are mounted.
    pub cgroup_root: PathBuf,
}

impl JailConfig {
    /// The defaults under a data directory: uids from 900000 (far above
    /// login users and the usual subuid ranges' starts), 4096 of them.
    pub fn under(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("jail-root"),
            uid_base: 900_000,
            uid_count: 4096,
            gid: 900_000,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// Hands out jail uids and cgroups to VMs.
#[derive(Debug)]
pub struct Jail {
    config: JailConfig,
    cgroups: Option<CgroupLayout>,
    taken: Mutex<BTreeSet<u32>>,
    /// The group that may open `/dev/kvm`, for VMs under KVM.
    kvm_group: Option<u32>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Jail {
    /// Prepares the jail root and hearth's cgroups, and removes VM cgroups
    /// that an earlier run left empty.
    pub fn new(config: JailConfig) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.root).map_err(VmmError::io("creating", &config.root))?;
        std::fs::set_permissions(&config.root, std::fs::Permissions::from_mode(0o755))
            .map_err(VmmError::io("setting the mode of", &config.root))?;
        let cgroups = CgroupLayout::detect(&config.cgroup_root);
        if let Some(layout) = &cgroups {
            layout.prepare()?;
            let swept = layout.sweep();
            if swept > 0 {
                tracing::info!(swept, "removed VM cgroups left by an earlier run");
            }
        } else {
            tracing::warn!(root = %config.cgroup_root.display(), "no cgroup file system: VMs run without resource limits");
        }
        let kvm_group = std::fs::metadata("/dev/kvm").ok().map(|m| m.gid());
        Ok(Arc::new(Self {
            config,
            cgroups,
            taken: Mutex::new(BTreeSet::new()),
            kvm_group,
        }))
    }

    /// The cgroup version VMs are limited by, if any.
    pub fn cgroup_layout(&self) -> Option<&CgroupLayout> {
        self.cgroups.as_ref()
    }

    pub fn config(&self) -> &JailConfig {
        &self.config
    }

    /// A uid and cgroup for a new VM whose files are in `run_dir`.
    pub fn lease(self: &Arc<Self>, run_dir: &Path, limits: &CgroupLimits) -> Result<JailLease> {
        let end = self.config.uid_base.saturating_add(self.config.uid_count);
        for uid in self.config.uid_base..end {
            if !lock(&self.taken).insert(uid) {
                continue;
            }
            let cgroup = match &self.cgroups {
                None => None,
                Some(layout) => match layout.create(uid, limits) {
                    Ok(Some(group)) => Some(group),
                    // Another node on this host has it.
                    Ok(None) => {
                        lock(&self.taken).remove(&uid);
                        continue;
                    }
                    Err(error) => {
                        lock(&self.taken).remove(&uid);
                        return Err(error);
                    }
                },
            };
            let lease = JailLease {
                jail: self.clone(),
                uid,
                cgroup,
                run_dir: run_dir.to_owned(),
                kept: false,
            };
            lease.give(run_dir, 0o700)?;
            return Ok(lease);
        }
        Err(VmmError::Invalid(format!(
            "all {} jail uids are in use",
            self.config.uid_count
        )))
    }

    /// The lease of a VM that runs already as `uid` (an adopted one).
    pub fn adopt(self: &Arc<Self>, uid: u32, run_dir: &Path) -> Option<JailLease> {
        let range =
            self.config.uid_base..self.config.uid_base.saturating_add(self.config.uid_count);
        if !range.contains(&uid) {
            return None;
        }
        lock(&self.taken).insert(uid);
        Some(JailLease {
            jail: self.clone(),
            uid,
            cgroup: self.cgroups.as_ref().and_then(|l| l.existing(uid)),
            run_dir: run_dir.to_owned(),
            kept: false,
        })
    }
}

/// One VM's uid and cgroup; dropped when its VMM has exited, it removes the
/// cgroup and gives the VM's files back to root.
#[derive(Debug)]
pub struct JailLease {
    jail: Arc<Jail>,
    uid: u32,
    cgroup: Option<VmCgroup>,
    run_dir: PathBuf,
    kept: bool,
}

impl JailLease {
    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn cgroup(&self) -> Option<&VmCgroup> {
        self.cgroup.as_ref()
    }

    /// Makes `path` the VM's, so that its unprivileged VMM may write it.
    pub fn give(&self, path: &Path, mode: u32) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.jail.config.gid))
            .map_err(VmmError::io("changing the owner of", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(VmmError::io("setting the mode of", path))
    }

    /// Gives `path`, which the VM no longer writes, back to root, readable
    /// by every jailed VM (a disk layer others will be built on).
    pub fn give_back(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(0), Some(self.jail.config.gid))
            .map_err(VmmError::io("changing the owner of", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
            .map_err(VmmError::io("setting the mode of", path))
    }

    /// What the VMM's child does before it executes: `plan` is its file
    /// tree, `inherit` the descriptors named on its command line.
    pub fn child_setup(&self, mut plan: MountPlan, inherit: Vec<RawFd>) -> Result<ChildSetup> {
        let mut groups = Vec::new();
        if let Some(kvm) = self
            .jail
            .kvm_group
            .filter(|_| Path::new("/dev/kvm").exists())
        {
            plan.bind_file(Path::new("/dev/kvm"), false, true)?;
            groups.push(kvm);
        }
        let cgroup_procs = match &self.cgroup {
            Some(group) => group
                .procs_files()?
                .into_iter()
                .map(OwnedFd::from)
                .collect(),
            None => Vec::new(),
        };
        Ok(ChildSetup {
            plan,
            cgroup_procs,
            inherit,
            uid: self.uid,
            gid: self.jail.config.gid,
            groups,
        })
    }

    /// Lets the VM run on after this process (a node that leaves its VMs
    /// running): nothing is removed or given back.
    pub fn keep(mut self) {
        self.kept = true;
    }

    /// Gives the run directory and the files the VM made back to root,
    /// readable by the jail group (a template's files are read by every
    /// later VM cloned from it).
    fn give_back_files(&self) {
        let gid = self.jail.config.gid;
        let Ok(entries) = std::fs::read_dir(&self.run_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.uid() != self.uid {
                continue;
            }
            let path = entry.path();
            let _ = std::os::unix::fs::lchown(&path, Some(0), Some(gid));
            if meta.is_file() {
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640));
            }
        }
        let _ = std::os::unix::fs::lchown(&self.run_dir, Some(0), Some(gid));
        let _ = std::fs::set_permissions(&self.run_dir, std::fs::Permissions::from_mode(0o750));
    }
}

impl Drop for JailLease {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        self.give_back_files();
        let uid = self.uid;
        let jail = self.jail.clone();
        let Some(group) = self.cgroup.take() else {
            lock(&jail.taken).remove(&uid);
            return;
        };
        if group.remove().is_ok() {
            lock(&jail.taken).remove(&uid);
            return;
        }
        // The VMM was killed but has not exited yet: its group can go once
        // it has. The uid stays taken until then.
        std::thread::spawn(move || {
            for _ in 0..200 {
                std::thread::sleep(Duration::from_millis(50));
                if group.remove().is_ok() {
                    lock(&jail.taken).remove(&uid);
                    return;
                }
            }
            tracing::warn!(uid, "a VM's cgroup could not be removed");
        });
    }
}

/// The uid a process runs as, from `/proc/<pid>/status`.
pub fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
