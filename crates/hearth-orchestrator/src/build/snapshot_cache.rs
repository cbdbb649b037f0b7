//! Finished templates by what they were made from: a build whose every
//! step is cached and whose start command, shape and guest are those of an
//! earlier build reuses that build's snapshot (hard links) instead of
//! booting a VM, so an unchanged definition builds in milliseconds.

use std::path::{Path, PathBuf};

use super::steps::hash_parts;
use hearth_vmm::{Template, TemplateMeta};

/// Bumped when what a snapshot holds changes.
const RECIPE: &str = "snapshot-1";

/// What a snapshot depends on besides its disk layers.
pub struct SnapshotInputs<'a> {
    /// The key of the last layer and its image file.
    pub layer_key: &'a str,
    pub layer_file: &'a str,
    pub start_cmd: Option<&'a str>,
    pub ready_cmd: Option<&'a str>,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// Kernel, initramfs, envd, accelerator, QEMU and command line.
    pub guest: &'a [&'a str],
}

pub fn key(inputs: &SnapshotInputs<'_>) -> String {
    let vcpus = inputs.vcpus.to_string();
    let memory = inputs.memory_mib.to_string();
    let parts = [
        RECIPE,
        inputs.layer_key,
        inputs.layer_file,
        inputs.start_cmd.unwrap_or("\0none"),
        inputs.ready_cmd.unwrap_or("\0none"),
        &vcpus,
        &memory,
    ];
    hash_parts(parts.into_iter().chain(inputs.guest.iter().copied()))
}

/// The index: `<root>/<key>` holds the template directory's path relative
/// to the templates directory.
#[derive(Debug, Clone)]
pub struct SnapshotCache {
    root: PathBuf,
    templates: PathBuf,
}

impl SnapshotCache {
    pub fn new(root: PathBuf, templates: PathBuf) -> Self {
        Self { root, templates }
    }

    /// The finished template made from `key`, if it is still on disk.
    pub fn get(&self, key: &str) -> Option<Template> {
        let relative = std::fs::read_to_string(self.root.join(key)).ok()?;
        let relative = relative.trim();
        if relative
            .split('/')
            .any(|part| part.is_empty() || part == "..")
        {
            return None;
        }
        let dir = self.templates.join(relative);
        let name = relative.split('/').next()?;
        Template::open(name, &dir).ok()
    }

    /// Remembers that `template` was made from `key`.
    pub fn put(&self, key: &str, template: &Template) {
        let Ok(relative) = template.dir.strip_prefix(&self.templates) else {
            return;
        };
        let _ = std::fs::create_dir_all(&self.root);
        let temporary = self.root.join(format!(".{key}.{}", std::process::id()));
        if std::fs::write(&temporary, relative.display().to_string()).is_ok() {
            let _ = std::fs::rename(&temporary, self.root.join(key));
        }
    }
}

/// Fills `staging` with hard links to `source`'s files and returns the
/// metadata for the new build (the source's, renamed).
pub fn link_into(
    source: &Template,
    staging: &Path,
    name: &str,
    build_id: &str,
) -> std::io::Result<TemplateMeta> {
    std::fs::create_dir_all(staging)?;
    for entry in std::fs::read_dir(&source.dir)? {
        let entry = entry?;
        let file = entry.file_name();
        let file_name = file.to_string_lossy();
        if file_name == hearth_vmm::template::META
            || file_name.ends_with(".log")
            || !entry.file_type()?.is_file()
        {
            continue;
        }
        hearth_vmm::template::link_or_copy(&entry.path(), &staging.join(&file))
            .map_err(std::io::Error::other)?;
    }
    let mut meta = source.meta.clone();
    meta.name = name.to_owned();
    meta.build_id = build_id.to_owned();
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_every_input() {
        let guest = ["kernel-1", "tcg"];
        let inputs = SnapshotInputs {
            layer_key: "k",
            layer_file: "k-1.qcow2",
            start_cmd: Some("serve"),
            ready_cmd: None,
            vcpus: 1,
            memory_mib: 512,
            guest: &guest,
        };
        let base = key(&inputs);
        assert_eq!(base, key(&inputs));
        assert_ne!(
            base,
            key(&SnapshotInputs {
                start_cmd: None,
                ..inputs
            })
        );
        assert_ne!(
            base,
            key(&SnapshotInputs {
                ready_cmd: Some("serve"),
                ..inputs
            })
        );
        assert_ne!(
            base,
            key(&SnapshotInputs {
                memory_mib: 1024,
                ..inputs
            })
        );
        assert_ne!(
            base,
            key(&SnapshotInputs {
                layer_file: "k-2.qcow2",
                ..inputs
            })
        );
        let other = ["kernel-2", "tcg"];
        assert_ne!(
            base,
            key(&SnapshotInputs {
                guest: &other,
                ..inputs
            })
        );
    }
}
