//! Content-addressed artifact cache: `<root>/<kind>/<key>/`, where the key is
//! a hash of everything the artifact is built from. An entry is published by
//! renaming a finished build directory into place, so a crashed build never
//! leaves a half-made entry that looks complete.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{GuestError, Result};

/// Marks a finished entry.
const COMPLETE: &str = ".complete";
/// How many entries of one kind are kept; older ones are removed when a new
/// one is published.
const KEEP_PER_KIND: usize = 3;

/// Hashes labelled inputs into a cache key.
#[derive(Default)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn new(kind: &str) -> Self {
        let mut hasher = Self::default();
        hasher.text("kind", kind);
        hasher
    }

    /// Adds one input; the label keeps `("a", "bc")` apart from `("ab", "c")`.
    pub fn text(&mut self, label: &str, value: &str) -> &mut Self {
        self.bytes(label, value.as_bytes())
    }

    pub fn bytes(&mut self, label: &str, value: &[u8]) -> &mut Self {
        for part in [label.as_bytes(), value] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn file(&mut self, label: &str, path: &Path) -> Result<&mut Self> {
        let digest = file_sha256(path)?;
        Ok(self.text(label, &digest))
    }

    /// The first 16 hex digits of the digest: short enough for paths.
    pub fn finish(&self) -> String {
        hex(&self.0.clone().finalize())[..16].to_owned()
    }
}

/// The SHA-256 of a file's contents, in hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(GuestError::io("opening", path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(GuestError::io("reading", path))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The artifact cache under one directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the entry `kind/key` lives (whether or not it exists).
    pub fn entry(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(kind).join(key)
    }

    /// Whether `kind/key` is finished.
    pub fn contains(&self, kind: &str, key: &str) -> bool {
        self.entry(kind, key).join(COMPLETE).is_file()
    }

    /// Returns the finished entry `kind/key`, building it first with `build`
    /// (given an empty directory to fill) when it is missing.
    pub fn get_or_build(
        &self,
        kind: &str,
        key: &str,
        build: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let entry = self.entry(kind, key);
        if self.contains(kind, key) {
            return Ok(entry);
        }
        let staging = self
            .root
            .join(kind)
            .join(format!(".building-{key}-{}", std::process::id()));
        remove_dir_if_present(&staging)?;
        std::fs::create_dir_all(&staging).map_err(GuestError::io("creating", &staging))?;
        let built = build(&staging).and_then(|()| {
            std::fs::write(staging.join(COMPLETE), key)
                .map_err(GuestError::io("writing", staging.join(COMPLETE)))
        });
        if let Err(error) = built {
            let _ = remove_dir_if_present(&staging);
            return Err(error);
        }
        // A stale, unfinished entry of the same key (from a crash) is replaced.
        remove_dir_if_present(&entry)?;
        std::fs::rename(&staging, &entry).map_err(GuestError::io("publishing", &entry))?;
        self.prune(kind, key);
        Ok(entry)
    }

    /// Removes all but the newest entries of `kind`, never `keep`.
    fn prune(&self, kind: &str, keep: &str) {
        let Ok(dir) = std::fs::read_dir(self.root.join(kind)) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = dir
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.file_name() != keep)
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        entries.sort();
        let excess = (entries.len() + 1).saturating_sub(KEEP_PER_KIND);
        for (_, path) in entries.into_iter().take(excess) {
            tracing::info!(path = %path.display(), "removing an old cache entry");
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

pub(crate) fn remove_dir_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(GuestError::Io {
            context: "removing",
            path: path.to_owned(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_inputs_apart() {
        let a = KeyHasher::new("k").text("a", "bc").finish();
        let b = KeyHasher::new("k").text("ab", "c").finish();
        assert_ne!(a, b);
        assert_eq!(a, KeyHasher::new("k").text("a", "bc").finish());
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn a_failed_build_leaves_no_entry_and_a_good_one_is_reused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(GuestError::io("tempdir", "/tmp"))?;
        let cache = Cache::new(dir.path());
        let failed = cache.get_or_build("thing", "k1", |d| {
            std::fs::write(d.join("half"), "x").map_err(GuestError::io("w", d))?;
            Err(GuestError::Invalid("boom".into()))
        });
        assert!(failed.is_err());
        assert!(!cache.contains("thing", "k1"));
        assert_eq!(
            std::fs::read_dir(dir.path().join("thing"))
                .map(|d| d.count())
                .ok(),
            Some(0)
        );

        let mut builds = 0;
        for _ in 0..2 {
            let entry = cache.get_or_build("thing", "k1", |d| {
                builds += 1;
                std::fs::write(d.join("out"), "ok").map_err(GuestError::io("w", d))
            })?;
            assert_eq!(
                std::fs::read_to_string(entry.join("out")).ok().as_deref(),
                Some("ok")
            );
        }
        assert_eq!(builds, 1);
        Ok(())
    }

    #[test]
    fn old_entries_are_pruned() -> Result<()> {
        let dir = tempfile::tempdir().map_err(GuestError::io("tempdir", "/tmp"))?;
        let cache = Cache::new(dir.path());
        for key in ["a", "b", "c", "d", "e"] {
            cache.get_or_build("thing", key, |_| Ok(()))?;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(cache.contains("thing", "e"));
        assert!(!cache.contains("thing", "a"));
        let left = std::fs::read_dir(dir.path().join("thing"))
            .map(|d| d.count())
            .ok();
        assert_eq!(left, Some(KEEP_PER_KIND));
        Ok(())
    }
}
