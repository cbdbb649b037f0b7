//! The node's store of disk layers, addressed by content: a build's base
//! image (`<key>.ext4`, raw) and one qcow2 image per step (`<key>.qcow2`),
//! each backed by the one below it under its store name (a relative
//! backing path), so a chain can be hard-linked into a template's
//! directory, or later copied to object storage, as it is.
//!
//! Beside each image, `<key>.json` records its chain and the build context
//! after it; it is written last, so an image without one is unfinished.

use std::path::{Path, PathBuf};

use hearth_vmm::GuestDefaults;
use serde::{Deserialize, Serialize};

use crate::error::{NodeError, Result};

/// What the store records about a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// Image file names, bottom (the base image) first, this layer's last.
    pub chain: Vec<String>,
    /// User, working directory and environment after this layer's step.
    pub context: GuestDefaults,
    /// The disk's size as the guest sees it.
    pub disk_size_mib: u64,
    /// The init the disk boots when it is not the initramfs's default (an
    /// image-built disk has hearth's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
}

impl LayerMeta {
    pub fn top(&self) -> &str {
        self.chain.last().map_or("", String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
}

fn io<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NodeError + 'a {
    move |source| NodeError::Io {
        context,
        path: path.to_owned(),
        source,
    }
}

impl LayerStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.root.join(format!("{key}.json"))
    }

    /// The finished layer `key`, if every image of its chain is present.
    /// Its files' times are refreshed, for pruning least recently used.
    pub fn get(&self, key: &str) -> Option<LayerMeta> {
        let bytes = std::fs::read(self.meta_path(key)).ok()?;
        let meta: LayerMeta = serde_json::from_slice(&bytes).ok()?;
        let complete = !meta.chain.is_empty()
            && meta
                .chain
                .iter()
                .all(|name| !name.contains('/') && self.file(name).is_file());
        if !complete {
            return None;
        }
        let now = std::time::SystemTime::now();
        for path in [self.meta_path(key), self.file(meta.top())] {
            if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                let _ = file.set_modified(now);
            }
        }
        Some(meta)
    }

    /// Adds the finished image `image` (whose backing names are store
    /// names) as layer `key`; the image is hard-linked (or copied) in.
    pub fn publish(&self, key: &str, image: &Path, meta: &LayerMeta) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(io("creating", &self.root))?;
        let target = self.file(meta.top());
        if !target.is_file() {
            let temporary = self
                .root
                .join(format!(".{}.{}", meta.top(), std::process::id()));
            hearth_vmm::template::link_or_copy(image, &temporary)?;
            std::fs::rename(&temporary, &target).map_err(io("publishing", &target))?;
        }
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| NodeError::Invalid(format!("encoding layer metadata: {e}")))?;
        let path = self.meta_path(key);
        let temporary = self
            .root
            .join(format!(".{key}.json.{}", std::process::id()));
        std::fs::write(&temporary, json).map_err(io("writing", &temporary))?;
        std::fs::rename(&temporary, &path).map_err(io("publishing", &path))
    }

    /// Hard-links the chain's images into `dir` under their store names, so
    /// their relative backing names resolve there too.
    pub fn link_chain(&self, meta: &LayerMeta, dir: &Path) -> Result<()> {
        for name in &meta.chain {
            let target = dir.join(name);
            if target.exists() {
                continue;
            }
            hearth_vmm::template::link_or_copy(&self.file(name), &target)?;
        }
        Ok(())
    }
}

impl LayerStore {
    /// Removes least recently used layers until the store's images take at
    /// most `max_bytes` on disk (images a template also links count as
    /// nothing: removing them frees nothing). A layer goes with every layer whose chain
    /// names its image. Templates keep working: they hold their own hard
    /// links to their chains, so what a template or its sandboxes need is
    /// only freed when the template goes. Returns the layers removed.
    pub fn prune(&self, max_bytes: u64) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        let mut layers: Vec<(std::time::SystemTime, String, LayerMeta)> = Vec::new();
        let mut images: Vec<(String, u64)> = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(key) = name.strip_suffix(".json") {
                let meta = std::fs::read(entry.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LayerMeta>(&b).ok());
                let used = entry.metadata().and_then(|m| m.modified());
                if let (Some(meta), Ok(used)) = (meta, used) {
                    layers.push((used, key.to_owned(), meta));
                }
            } else {
                // What removing it would free: nothing while a template
                // holds another link to it.
                use std::os::unix::fs::MetadataExt;
                let size = entry
                    .metadata()
                    .map_or(0, |m| if m.nlink() > 1 { 0 } else { m.blocks() * 512 });
                images.push((name, size));
            }
        }
        let mut total: u64 = images.iter().map(|(_, size)| size).sum();
        layers.sort_by_key(|(used, _, _)| *used);
        let mut removed = 0;
        let mut gone: std::collections::HashSet<String> = std::collections::HashSet::new();
        let size_of = |name: &str| {
            images
                .iter()
                .find(|(image, _)| image == name)
                .map_or(0, |(_, size)| *size)
        };
        for (_, _, meta) in &layers {
            if total <= max_bytes {
                break;
            }
            if gone.contains(meta.top()) {
                continue;
            }
            // The layer and every layer whose chain names its image (they
            // all contain it, so one pass finds them) — unless removing
            // them frees nothing (templates hold them): then the cache
            // keeps them.
            let top = meta.top().to_owned();
            let freed: u64 = layers
                .iter()
                .filter(|(_, _, other)| other.chain.contains(&top) && !gone.contains(other.top()))
                .map(|(_, _, other)| size_of(other.top()))
                .sum();
            if freed == 0 {
                continue;
            }
            for (_, _, other) in &layers {
                if other.chain.contains(&top) && gone.insert(other.top().to_owned()) {
                    total = total.saturating_sub(size_of(other.top()));
                }
            }
        }
        // Every layer whose chain names a removed image goes too.
        for (_, key, meta) in &layers {
            if meta.chain.iter().any(|name| gone.contains(name)) {
                let _ = std::fs::remove_file(self.meta_path(key));
                removed += 1;
            }
        }
        for name in &gone {
            let _ = std::fs::remove_file(self.file(name));
        }
        // Images no remaining layer names (left by the above, or by a crash).
        let named: std::collections::HashSet<&str> = layers
            .iter()
            .filter(|(_, _, meta)| !meta.chain.iter().any(|name| gone.contains(name)))
            .flat_map(|(_, _, meta)| meta.chain.iter().map(String::as_str))
            .collect();
        for (name, _) in &images {
            if !named.contains(name.as_str()) {
                let _ = std::fs::remove_file(self.file(name));
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_is_found_only_when_published_whole() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("hearth-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = LayerStore::new(dir.join("store"));
        std::fs::create_dir_all(dir.join("work")).map_err(io("creating", &dir))?;
        let base = dir.join("work/base.ext4");
        std::fs::write(&base, b"base").map_err(io("writing", &base))?;
        let meta = LayerMeta {
            chain: vec!["k1.ext4".into()],
            context: GuestDefaults::default(),
            disk_size_mib: 10,
            init: None,
        };
        assert!(store.get("k1").is_none());
        store.publish("k1", &base, &meta)?;
        assert_eq!(store.get("k1"), Some(meta.clone()));
        // A chain whose lower image went missing is no layer.
        let step = LayerMeta {
            chain: vec!["k1.ext4".into(), "k2.qcow2".into()],
            ..meta
        };
        store.publish("k2", &base, &step)?;
        assert!(store.get("k2").is_some());
        std::fs::remove_file(store.file("k1.ext4")).map_err(io("removing", &dir))?;
        assert!(store.get("k2").is_none());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn pruning_takes_the_oldest_layers_and_their_descendants() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("hearth-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = LayerStore::new(dir.join("store"));
        std::fs::create_dir_all(dir.join("work")).map_err(io("creating", &dir))?;
        let layer = |key: &str, chain: &[&str]| -> Result<()> {
            let image = dir.join("work").join(key);
            std::fs::write(&image, vec![7u8; 64 << 10]).map_err(io("writing", &image))?;
            let meta = LayerMeta {
                chain: chain.iter().map(|c| (*c).to_owned()).collect(),
                context: GuestDefaults::default(),
                disk_size_mib: 1,
                init: None,
            };
            store.publish(key, &image, &meta)?;
            // As a build's scratch directory goes after publishing.
            std::fs::remove_file(&image).map_err(io("removing", &image))?;
            // Distinct use times, oldest first.
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(())
        };
        layer("old", &["old.ext4"])?;
        layer("child", &["old.ext4", "child.qcow2"])?;
        layer("new", &["new.ext4"])?;
        // Room for one image: the oldest goes, and the layer built on it.
        assert_eq!(store.prune(100 << 10), 2);
        assert!(store.get("old").is_none() && store.get("child").is_none());
        assert!(!store.file("child.qcow2").exists() && !store.file("old.ext4").exists());
        assert!(store.get("new").is_some());
        // Enough room: nothing goes.
        assert_eq!(store.prune(1 << 30), 0);
        assert!(store.get("new").is_some());
        // An image a template also links frees nothing, so it does not
        // count: the store holds two images, but only one of its own.
        layer("held", &["held.ext4"])?;
        let template = dir.join("template");
        std::fs::create_dir_all(&template).map_err(io("creating", &template))?;
        std::fs::hard_link(store.file("held.ext4"), template.join("held.ext4"))
            .map_err(io("linking", &template))?;
        assert_eq!(store.prune(100 << 10), 0);
        // (A lookup is a use: `held` is now the least recently used.)
        assert!(store.get("held").is_some());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(store.get("new").is_some());
        // (File times written by the kernel are coarser than a touch's.)
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Over the limit, the least recently used layer is skipped: its
        // removal would free nothing.
        layer("newest", &["newest.ext4"])?;
        assert_eq!(store.prune(100 << 10), 1);
        let kept = ["held", "new", "newest"].map(|key| store.get(key).is_some());
        assert_eq!(kept, [true, false, true]);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
