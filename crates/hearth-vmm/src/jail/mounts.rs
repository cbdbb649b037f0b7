//! The file tree a jailed QEMU sees: a small tmpfs that holds `/usr` (its
//! program and libraries), a few device nodes and the VM's own files, bound
//! at the same paths they have on the host so that QEMU's command line does
//! not change. Nothing else of the host — other VMs' disks, the database,
//! the data directory — exists in it.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Result, VmmError};

/// One thing to make in the jail, in order; paths are absolute host paths
/// already prefixed with the jail's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MountStep {
    Dir(CString),
    /// An empty file to bind a file onto.
    File(CString),
    Bind {
        source: CString,
        target: CString,
        read_only: bool,
        /// Device nodes keep working (no `nodev`).
        devices: bool,
    },
    Symlink {
        target: CString,
        link: CString,
    },
}

/// What the child makes before it executes QEMU, computed beforehand: the
/// child of a multi-threaded process may not allocate.
#[derive(Debug, Clone)]
pub struct MountPlan {
    pub(super) root: CString,
    pub(super) steps: Vec<MountStep>,
    root_path: PathBuf,
    dirs: BTreeSet<PathBuf>,
    bound_dirs: Vec<PathBuf>,
    bound_files: BTreeSet<PathBuf>,
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| VmmError::Invalid(format!("path with a NUL byte: {}", path.display())))
}

/// `path` must be absolute and plain: no `..`, so that it names the same
/// place inside the jail as outside.
fn check_plain(path: &Path) -> Result<()> {
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(VmmError::Invalid(format!(
            "jail paths must be absolute and plain: {}",
            path.display()
        )))
    }
}

impl MountPlan {
    /// A jail whose tmpfs is mounted on `root` (an empty directory).
    pub fn new(root: &Path) -> Result<Self> {
        check_plain(root)?;
        let mut plan = Self {
            root: c_path(root)?,
            steps: Vec::new(),
            root_path: root.to_owned(),
            dirs: BTreeSet::new(),
            bound_dirs: Vec::new(),
            bound_files: BTreeSet::new(),
        };
        plan.bind_dir(Path::new("/usr"), true, false)?;
        for (link, target) in [
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("bin", "usr/bin"),
        ] {
            plan.steps.push(MountStep::Symlink {
                target: c_path(Path::new(target))?,
                link: c_path(&root.join(link))?,
            });
        }
        plan.ensure_dir(Path::new("/dev"))?;
        for device in ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"] {
            plan.bind_file(Path::new(device), false, true)?;
        }
        Ok(plan)
    }

    fn inside(&self, path: &Path) -> PathBuf {
        self.root_path.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn covered(&self, path: &Path) -> bool {
        self.bound_dirs.iter().any(|d| path.starts_with(d))
    }

    /// Makes `dir` and its parents in the jail's tmpfs.
    fn ensure_dir(&mut self, dir: &Path) -> Result<()> {
        let mut partial = PathBuf::from("/");
        for component in dir.components().skip(1) {
            partial.push(component);
            if self.dirs.insert(partial.clone()) {
                self.steps
                    .push(MountStep::Dir(c_path(&self.inside(&partial))?));
            }
        }
        Ok(())
    }

    /// Makes host directory `dir` visible at the same path. Directories are
    /// bound before the files that are not under them.
    pub fn bind_dir(&mut self, dir: &Path, read_only: bool, devices: bool) -> Result<()> {
        check_plain(dir)?;
        if self.covered(dir) {
            return Ok(());
        }
        self.ensure_dir(dir)?;
        self.steps.push(MountStep::Bind {
            source: c_path(dir)?,
            target: c_path(&self.inside(dir))?,
            read_only,
            devices,
        });
        self.bound_dirs.push(dir.to_owned());
        Ok(())
    }

    /// Makes host file `file` visible at the same path; nothing to do when
    /// a bound directory holds it already.
    pub fn bind_file(&mut self, file: &Path, read_only: bool, devices: bool) -> Result<()> {
        check_plain(file)?;
        if self.covered(file) || !self.bound_files.insert(file.to_owned()) {
            return Ok(());
        }
        if let Some(parent) = file.parent() {
            self.ensure_dir(parent)?;
        }
        let target = c_path(&self.inside(file))?;
        self.steps.push(MountStep::File(target.clone()));
        self.steps.push(MountStep::Bind {
            source: c_path(file)?,
            target,
            read_only,
            devices,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn targets(plan: &MountPlan) -> Vec<(String, bool)> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                MountStep::Bind {
                    target, read_only, ..
                } => Some((target.to_string_lossy().into_owned(), *read_only)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn files_land_at_their_own_paths_under_the_root() -> TestResult {
        let mut plan = MountPlan::new(Path::new("/j"))?;
        plan.bind_dir(Path::new("/data/sandboxes/a"), false, false)?;
        plan.bind_file(Path::new("/data/templates/t/memory.ram"), true, false)?;
        // Under the bound run directory: nothing more to bind.
        plan.bind_file(Path::new("/data/sandboxes/a/disk.qcow2"), false, false)?;
        let binds = targets(&plan);
        assert!(binds.contains(&("/j/usr".into(), true)));
        assert!(binds.contains(&("/j/dev/null".into(), false)));
        assert!(binds.contains(&("/j/data/sandboxes/a".into(), false)));
        assert!(binds.contains(&("/j/data/templates/t/memory.ram".into(), true)));
        assert!(!binds.iter().any(|(t, _)| t.ends_with("disk.qcow2")));
        // Parents come before what is made in them.
        let position = |wanted: &str| {
            plan.steps
                .iter()
                .position(|s| matches!(s, MountStep::Dir(d) if d.to_str() == Ok(wanted)))
        };
        assert!(position("/j/data") < position("/j/data/templates"));
        assert!(position("/j/data").is_some());
        Ok(())
    }

    #[test]
    fn paths_that_could_leave_the_jail_are_refused() -> TestResult {
        let mut plan = MountPlan::new(Path::new("/j"))?;
        assert!(
            plan.bind_file(Path::new("/a/../etc/shadow"), true, false)
                .is_err()
        );
        assert!(plan.bind_file(Path::new("relative"), true, false).is_err());
        assert!(MountPlan::new(Path::new("/j/../x")).is_err());
        Ok(())
    }
}
