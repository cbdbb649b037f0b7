//! Watchers created by `CreateWatcher` and polled by `GetWatcherEvents`
//! (the Python sync SDK's way of watching a directory).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envd_proto::filesystem::FilesystemEvent;
use tokio::sync::mpsc;

use super::events::DirWatch;

struct PolledWatcher {
    _watch: DirWatch,
    events: mpsc::Receiver<FilesystemEvent>,
}

#[derive(Clone, Default)]
pub struct WatcherRegistry {
    inner: Arc<Mutex<HashMap<String, PolledWatcher>>>,
}

impl std::fmt::Debug for WatcherRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatcherRegistry").finish_non_exhaustive()
    }
}

impl WatcherRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PolledWatcher>> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn add(&self, watch: DirWatch, events: mpsc::Receiver<FilesystemEvent>) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock().insert(
            id.clone(),
            PolledWatcher {
                _watch: watch,
                events,
            },
        );
        id
    }

    /// The events since the last poll, or `None` for an unknown watcher.
    pub fn take_events(&self, id: &str) -> Option<Vec<FilesystemEvent>> {
        let mut map = self.lock();
        let watcher = map.get_mut(id)?;
        let mut events = Vec::new();
        while let Ok(event) = watcher.events.try_recv() {
            events.push(event);
        }
        Some(events)
    }

    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }
}
