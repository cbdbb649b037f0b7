//! Watching a directory with inotify (through `notify`) and describing what
//! happened as `FilesystemEvent`s.

use std::path::{Path, PathBuf};

use envd_proto::filesystem::{EventType, FilesystemEvent};
use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::entry::entry_info;
use crate::users::UserDb;

/// Filesystem magic numbers of network filesystems (statfs `f_type`).
const NETWORK_FS_MAGICS: [i64; 5] = [
    0x6969,      // NFS
    0xFF53_4D42, // CIFS
    0xFE53_4D42, // SMB2
    0x517B,      // SMB
    0x0102_1997, // 9P (v9fs)
];

/// Events queued for a watcher whose client is not reading; past this they
/// are dropped, as the kernel's own inotify queue drops them when full.
const MAX_QUEUED_EVENTS: usize = 65_536;

/// What to watch and how to report it.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub root: PathBuf,
    pub recursive: bool,
    pub include_entry: bool,
    pub allow_network_mounts: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("path '{0}' does not exist")]
    NotFound(PathBuf),
    #[error("path '{0}' is not a directory")]
    NotDirectory(PathBuf),
    #[error("path '{0}' is on a network filesystem; set allow_network_mounts to watch it")]
    NetworkMount(PathBuf),
    #[error("watching '{path}'")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

fn is_network_mount(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| NETWORK_FS_MAGICS.contains(&{ s.filesystem_type().0 }))
        .unwrap_or(false)
}

/// A live watch; dropping it stops watching.
pub struct DirWatch {
    _watcher: RecommendedWatcher,
}

/// Starts watching; events arrive on the returned channel as they happen.
pub fn watch(
    spec: WatchSpec,
    users: UserDb,
) -> Result<(DirWatch, mpsc::Receiver<FilesystemEvent>), WatchError> {
    match std::fs::metadata(&spec.root) {
        Err(_) => return Err(WatchError::NotFound(spec.root)),
        Ok(meta) if !meta.is_dir() => return Err(WatchError::NotDirectory(spec.root)),
        Ok(_) => {}
    }
    if !spec.allow_network_mounts && is_network_mount(&spec.root) {
        return Err(WatchError::NetworkMount(spec.root));
    }
    let (tx, rx) = mpsc::channel(MAX_QUEUED_EVENTS);
    let root = spec.root.clone();
    let include_entry = spec.include_entry;
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let Ok(event) = result else { return };
        for fs_event in describe(&root, &event, include_entry, &users) {
            let _ = tx.try_send(fs_event);
        }
    })
    .map_err(|source| WatchError::Watch {
        path: spec.root.clone(),
        source,
    })?;
    let mode = if spec.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher
        .watch(&spec.root, mode)
        .map_err(|source| WatchError::Watch {
            path: spec.root.clone(),
            source,
        })?;
    Ok((DirWatch { _watcher: watcher }, rx))
}

fn event_type(kind: &EventKind) -> Option<EventType> {
    match kind {
        EventKind::Create(_) => Some(EventType::EVENT_TYPE_CREATE),
        EventKind::Remove(_) => Some(EventType::EVENT_TYPE_REMOVE),
        EventKind::Modify(ModifyKind::Metadata(_)) => Some(EventType::EVENT_TYPE_CHMOD),
        // A rename reports the old name as renamed and the new one as created.
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Some(EventType::EVENT_TYPE_RENAME),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Some(EventType::EVENT_TYPE_CREATE),
        EventKind::Modify(ModifyKind::Name(_)) => None,
        EventKind::Modify(_) => Some(EventType::EVENT_TYPE_WRITE),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => None,
    }
}

fn describe(
    root: &Path,
    event: &notify::Event,
    include_entry: bool,
    users: &UserDb,
) -> Vec<FilesystemEvent> {
    let Some(kind) = event_type(&event.kind) else {
        return Vec::new();
    };
    event
        .paths
        .iter()
        .filter_map(|path| {
            let name = path.strip_prefix(root).ok()?.to_string_lossy().into_owned();
            if name.is_empty() {
                return None;
            }
            let entry = if include_entry
                && kind != EventType::EVENT_TYPE_REMOVE
                && kind != EventType::EVENT_TYPE_RENAME
            {
                entry_info(path, users).ok()
            } else {
                None
            };
            Some(FilesystemEvent {
                name,
                r#type: kind.into(),
                entry: entry.into(),
                ..Default::default()
            })
        })
        .collect()
}
