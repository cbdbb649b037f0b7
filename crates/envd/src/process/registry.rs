//! The processes envd started that are still running, by pid and tag.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::handle::ProcessHandle;

#[derive(Debug, Clone, Default)]
pub struct ProcessRegistry {
    inner: Arc<Mutex<HashMap<u32, Arc<ProcessHandle>>>>,
}

/// How a request names a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Pid(u32),
    Tag(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Pid(pid) => write!(f, "process with pid {pid}"),
            Selector::Tag(tag) => write!(f, "process with tag '{tag}'"),
        }
    }
}

impl ProcessRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<ProcessHandle>>> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn insert(&self, handle: Arc<ProcessHandle>) {
        self.lock().insert(handle.pid, handle);
    }

    pub fn remove(&self, pid: u32) {
        self.lock().remove(&pid);
    }

    pub fn find(&self, selector: &Selector) -> Option<Arc<ProcessHandle>> {
        let map = self.lock();
        match selector {
            Selector::Pid(pid) => map.get(pid).cloned(),
            Selector::Tag(tag) => map
                .values()
                .find(|h| h.tag.as_deref() == Some(tag.as_str()))
                .cloned(),
        }
    }

    pub fn list(&self) -> Vec<Arc<ProcessHandle>> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|h| h.pid);
        all
    }
}
