//! A control group per VM, on cgroup v1 (one hierarchy per controller, as on
//! our Debian 12 machines) or v2 (one unified hierarchy, current hosts).
//!
//! Every VM's group is `hearth/vm-<uid>` under each hierarchy: the uid is the
//! VM's jail uid, so a group's existence also marks the uid as taken
//! host-wide (see [`super::Jail`]).

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Result, VmmError};

/// The parent group of every VM's group.
const PARENT: &str = "hearth";
/// The controllers a VM's group is limited by.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// The CFS period that a CPU quota is a multiple of.
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup version the host mounts, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// `<root>/{memory,cpu,pids}`, one hierarchy each.
    V1 { root: PathBuf },
    /// `<root>` is the unified hierarchy.
    V2 { root: PathBuf },
}

impl CgroupLayout {
    /// Looks at what is mounted under `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: &Path) -> Option<Self> {
        if root.join("cgroup.controllers").exists() {
            return Some(Self::V2 {
                root: root.to_owned(),
            });
        }
        let v1 = CONTROLLERS
            .iter()
            .all(|c| root.join(c).join("cgroup.procs").exists());
        v1.then(|| Self::V1 {
            root: root.to_owned(),
        })
    }

    /// "v1" or "v2", for `hearth doctor` and logs.
    pub fn version(&self) -> &'static str {
        match self {
            Self::V1 { .. } => "v1",
            Self::V2 { .. } => "v2",
        }
    }

    /// The parent directories of hearth's groups, one per hierarchy.
    fn parents(&self) -> Vec<PathBuf> {
        match self {
            Self::V1 { root } => CONTROLLERS
                .iter()
                .map(|c| root.join(c).join(PARENT))
                .collect(),
            Self::V2 { root } => vec![root.join(PARENT)],
        }
    }

    /// Creates hearth's parent group(s); on v2 also delegates the
    /// controllers to it and to its children.
    pub fn prepare(&self) -> Result<()> {
        for parent in self.parents() {
            std::fs::create_dir_all(&parent).map_err(VmmError::io("creating", &parent))?;
        }
        if let Self::V2 { root } = self {
            let wanted = CONTROLLERS
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            for dir in [root.clone(), root.join(PARENT)] {
                let control = dir.join("cgroup.subtree_control");
                std::fs::write(&control, &wanted).map_err(VmmError::io("writing", &control))?;
            }
        }
        Ok(())
    }

    fn group_name(uid: u32) -> String {
        format!("vm-{uid}")
    }

    /// The directories of `uid`'s group, one per hierarchy; the first is the
    /// one whose creation claims the uid.
    fn dirs(&self, uid: u32) -> Vec<PathBuf> {
        self.parents()
            .into_iter()
            .map(|p| p.join(Self::group_name(uid)))
            .collect()
    }

    /// Creates `uid`'s group with `limits`. `Ok(None)`: the group exists
    /// already (another VM, maybe of another node on this host, has the uid).
    pub fn create(&self, uid: u32, limits: &CgroupLimits) -> Result<Option<VmCgroup>> {
        let dirs = self.dirs(uid);
        match std::fs::create_dir(&dirs[0]) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(VmmError::io("creating", &dirs[0])(e)),
        }
        let group = VmCgroup { dirs };
        // From here on, a failure removes what was made.
        group.finish_creating(self, limits)?;
        Ok(Some(group))
    }

    /// The group of a VM that runs already (an adopted one).
    pub fn existing(&self, uid: u32) -> Option<VmCgroup> {
        let dirs = self.dirs(uid);
        dirs.iter().all(|d| d.is_dir()).then_some(VmCgroup { dirs })
    }

    /// Removes every VM group that no process is in: what a crashed node
    /// left. A group still in use cannot be removed and stays.
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        let Some(first) = self.parents().into_iter().next() else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(&first) else {
            return 0;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(uid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("vm-"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let group = VmCgroup {
                dirs: self.dirs(uid),
            };
            if group.is_empty() && group.remove().is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// What a VM's group allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    /// CPUs' worth of time per period.
    pub cpus: u32,
    pub pids: u32,
}

/// One VM's group.
#[derive(Debug)]
pub struct VmCgroup {
    dirs: Vec<PathBuf>,
}

impl VmCgroup {
    fn finish_creating(&self, layout: &CgroupLayout, limits: &CgroupLimits) -> Result<()> {
        let made = (|| {
            for dir in &self.dirs[1..] {
                std::fs::create_dir(dir).map_err(VmmError::io("creating", dir))?;
            }
            let quota = CPU_PERIOD_US * u64::from(limits.cpus.max(1));
            let settings: Vec<(usize, &str, String)> = match layout {
                CgroupLayout::V1 { .. } => vec![
                    (0, "memory.limit_in_bytes", limits.memory_bytes.to_string()),
                    (1, "cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                    (1, "cpu.cfs_quota_us", quota.to_string()),
                    (2, "pids.max", limits.pids.to_string()),
                ],
                CgroupLayout::V2 { .. } => vec![
                    (0, "memory.max", limits.memory_bytes.to_string()),
                    // A VM whose RAM does not fit is killed, not swapped.
                    (0, "memory.swap.max", "0".to_owned()),
                    (0, "cpu.max", format!("{quota} {CPU_PERIOD_US}")),
                    (0, "pids.max", limits.pids.to_string()),
                ],
            };
            for (index, file, value) in settings {
                let path = self.dirs[index].join(file);
                match std::fs::write(&path, value) {
                    Ok(()) => {}
                    // Without swap accounting the file is missing: nothing to limit.
                    Err(e) if file == "memory.swap.max" && e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(VmmError::io("writing", &path)(e)),
                }
            }
            Ok(())
        })();
        if made.is_err() {
            let _ = self.remove();
        }
        made
    }

    /// The `cgroup.procs` files, opened for writing, for a child to move
    /// itself into the group (by writing "0") before it executes.
    pub fn procs_files(&self) -> Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(VmmError::io("opening", &path))
            })
            .collect()
    }

    /// Whether no process is in the group.
    pub fn is_empty(&self) -> bool {
        self.dirs.iter().all(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .map(|procs| procs.trim().is_empty())
                .unwrap_or(true)
        })
    }

    /// The directory of the memory controller's group (v1) or the group (v2).
    pub fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    /// Removes the group; fails while a process is in it.
    pub fn remove(&self) -> Result<()> {
        let mut first_error = None;
        for dir in &self.dirs {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert_with(|| VmmError::io("removing", dir)(e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn fake_v1(root: &Path) -> TestResult {
        for c in CONTROLLERS {
            std::fs::create_dir_all(root.join(c))?;
            std::fs::write(root.join(c).join("cgroup.procs"), "")?;
        }
        Ok(())
    }

    #[test]
    fn the_layout_is_read_from_what_is_mounted() -> TestResult {
        let dir = tempfile::tempdir()?;
        assert_eq!(CgroupLayout::detect(dir.path()), None);
        fake_v1(dir.path())?;
        assert_eq!(
            CgroupLayout::detect(dir.path()).map(|l| l.version()),
            Some("v1")
        );
        std::fs::write(dir.path().join("cgroup.controllers"), "memory cpu pids")?;
        assert_eq!(
            CgroupLayout::detect(dir.path()).map(|l| l.version()),
            Some("v2")
        );
        Ok(())
    }

    // A plain directory stands in for cgroupfs: the files the kernel would
    // make are written as ordinary files.
    #[test]
    fn v2_groups_get_memory_cpu_and_pids_limits() -> TestResult {
        let dir = tempfile::tempdir()?;
        let layout = CgroupLayout::V2 {
            root: dir.path().to_owned(),
        };
        layout.prepare()?;
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hearth/cgroup.subtree_control"))?,
            "+memory +cpu +pids"
        );
        let limits = CgroupLimits {
            memory_bytes: 768 << 20,
            cpus: 2,
            pids: 256,
        };
        let group = layout
            .create(900_001, &limits)
            .map_err(|e| e.to_string())?
            .ok_or("the group exists")?;
        let read = |f: &str| std::fs::read_to_string(dir.path().join("hearth/vm-900001").join(f));
        assert_eq!(read("memory.max")?, (768u64 << 20).to_string());
        assert_eq!(read("cpu.max")?, "200000 100000");
        assert_eq!(read("pids.max")?, "256");
        // The uid is taken while the group exists.
        assert!(layout.create(900_001, &limits)?.is_none());
        assert!(layout.existing(900_001).is_some());
        drop(group);
        Ok(())
    }

    #[test]
    fn v1_groups_are_made_in_each_hierarchy() -> TestResult {
        let dir = tempfile::tempdir()?;
        fake_v1(dir.path())?;
        let layout = CgroupLayout::detect(dir.path()).ok_or("no layout")?;
        layout.prepare()?;
        let limits = CgroupLimits {
            memory_bytes: 1 << 30,
            cpus: 1,
            pids: 128,
        };
        layout
            .create(7, &limits)
            .map_err(|e| e.to_string())?
            .ok_or("the group exists")?;
        let read = |c: &str, f: &str| {
            std::fs::read_to_string(dir.path().join(c).join("hearth/vm-7").join(f))
                .unwrap_or_default()
        };
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (1u64 << 30).to_string()
        );
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "100000");
        assert_eq!(read("pids", "pids.max"), "128");
        Ok(())
    }
}
