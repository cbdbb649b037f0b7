//! Sandbox histories on disk, so that a restarted node still serves them:
//! each in `<data>/v1/histories/<slot prefix>/<sandbox id>.json` (0600: logs are the
//! user's), written when its sandbox ends and, for the sandboxes that still
//! exist, when the node stops; removed when the history is dropped. A node
//! that crashed has the histories of sandboxes that ended before, not the
//! newest lines of those that ran on.

use std::path::{Path, PathBuf};

use hearth_vmm::sandbox_log::LogLine;

use crate::private_files::write_private_file;
use crate::sandbox_metrics::MetricSample;

/// A larger file is not one this node wrote (a history is 256 KiB of lines
/// and 3,600 samples): it is removed unread.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// One sandbox's history as saved.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedHistory {
    pub sandbox_id: String,
    /// When the sandbox ended (Unix ms); `None` while it exists.
    pub ended_at_ms: Option<i64>,
    pub lines: Vec<LogLine>,
    pub samples: Vec<MetricSample>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryStoreError {
    #[error("sandbox id '{0}' cannot name a history file")]
    UnsafeId(String),
    #[error("writing the history of sandbox {id}: {source}")]
    Write { id: String, source: std::io::Error },
    #[error("encoding the history of sandbox {id}: {source}")]
    Encode {
        id: String,
        source: serde_json::Error,
    },
    #[error("making the histories directory {dir}: {source}")]
    MakeDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the histories in {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The directory of saved histories.
#[derive(Debug, Clone)]
pub struct HistoryStore {
    dir: PathBuf,
}

/// Ids the node makes are short and plain; anything else never becomes a
/// path.
fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl HistoryStore {
    /// The store in `dir`, made if missing.
    pub fn open(dir: &Path) -> Result<Self, HistoryStoreError> {
        std::fs::create_dir_all(dir).map_err(|source| HistoryStoreError::MakeDir {
            dir: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, id: &str) -> Result<PathBuf, HistoryStoreError> {
        if !safe_id(id) {
            return Err(HistoryStoreError::UnsafeId(id.to_owned()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    pub fn save(&self, history: &SavedHistory) -> Result<(), HistoryStoreError> {
        let id = &history.sandbox_id;
        let path = self.path(id)?;
        let bytes = serde_json::to_vec(history).map_err(|source| HistoryStoreError::Encode {
            id: id.clone(),
            source,
        })?;
        write_private_file(&path, &bytes).map_err(|source| HistoryStoreError::Write {
            id: id.clone(),
            source,
        })
    }

    /// Removes sandbox `id`'s saved history, if there is one.
    pub fn remove(&self, id: &str) {
        if let Ok(path) = self.path(id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Every saved history; a file that is not one (too large, unreadable,
    /// not a history, named for another id) is removed.
    pub fn load_all(&self) -> Result<Vec<SavedHistory>, HistoryStoreError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|source| HistoryStoreError::ReadDir {
                dir: self.dir.clone(),
                source,
            })?;
        let mut saved = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // A write that a crash cut short (see `write_private_file`).
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            match read_history(&path).filter(|h| h.sandbox_id == id && safe_id(id)) {
                Some(history) => saved.push(history),
                None => {
                    tracing::warn!(path = %path.display(), "not a sandbox history; removing it");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(saved)
    }
}

fn read_history(path: &Path) -> Option<SavedHistory> {
    let size = std::fs::metadata(path).ok()?.len();
    if size > MAX_FILE_BYTES {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_vmm::envd_client::GuestMetrics;

    fn history(id: &str) -> SavedHistory {
        SavedHistory {
            sandbox_id: id.into(),
            ended_at_ms: Some(1_700_000_000_000),
            lines: vec![LogLine {
                at_ms: 1_700_000_000_000,
                line: r#"{"level":"info","message":"Sandbox killed"}"#.into(),
            }],
            samples: vec![MetricSample {
                at_secs: 1_700_000_000,
                guest: GuestMetrics {
                    cpu_count: 2,
                    cpu_used_pct: 12.5,
                    mem_total: 1 << 30,
                    mem_used: 1 << 28,
                    mem_cache: 1 << 20,
                    disk_used: 1 << 29,
                    disk_total: 1 << 31,
                },
            }],
        }
    }

    #[test]
    fn a_saved_history_loads_as_it_was_and_junk_is_removed()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = HistoryStore::open(&dir.path().join("histories"))?;
        store.save(&history("isb1"))?;
        std::fs::write(dir.path().join("histories/junk.json"), b"{not json")?;
        std::fs::write(dir.path().join("histories/.cut.json.0123abcd.tmp"), b"{")?;
        std::fs::write(
            dir.path().join("histories/renamed.json"),
            serde_json::to_vec(&history("other"))?,
        )?;
        assert_eq!(store.load_all()?, vec![history("isb1")]);
        assert!(!dir.path().join("histories/junk.json").exists());
        assert!(!dir.path().join("histories/.cut.json.0123abcd.tmp").exists());
        assert!(!dir.path().join("histories/renamed.json").exists());
        store.remove("isb1");
        assert!(store.load_all()?.is_empty());
        Ok(())
    }

    #[test]
    fn only_plain_ids_become_file_names() {
        let dir = std::env::temp_dir();
        let store = HistoryStore { dir };
        assert!(matches!(
            store.save(&history("../escape")),
            Err(HistoryStoreError::UnsafeId(_))
        ));
        assert!(store.path("").is_err());
        assert!(store.path("a/b").is_err());
        assert!(store.path("isb-1_x").is_ok());
    }
}
