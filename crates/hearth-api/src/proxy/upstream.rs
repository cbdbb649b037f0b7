//! The HTTP clients that talk to sandboxes: one per sandbox, because slot
//! addresses are reused and a kept-alive connection to a sandbox that is
//! gone must never carry a request meant for the next one at its address.
//! Each sandbox's entry also holds the signal its exchanges end on when the
//! control plane forgets it (killed, timed out, reconciled away).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;

use super::gone::Gone;

pub type GuestClient = Client<HttpConnector, Body>;

/// Per-sandbox clients and their signals.
#[derive(Debug, Default)]
pub struct Upstream {
    sandboxes: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    client: GuestClient,
    /// Never sent on: dropping the entry is the signal.
    forgotten: watch::Sender<()>,
    /// The end signal of the node's live-table entry the client was made
    /// for; once it fired, the next route replaces this entry.
    ended: Option<watch::Receiver<()>>,
}

impl Entry {
    fn new(ended: Option<watch::Receiver<()>>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        // A VM that vanished sends no FIN; keepalives find out.
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let (forgotten, _) = watch::channel(());
        Self {
            client,
            forgotten,
            ended,
        }
    }

    fn stale(&self) -> bool {
        self.ended
            .as_ref()
            .is_some_and(|ended| ended.has_changed().is_err())
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Upstream {
    pub fn new() -> Self {
        Self::default()
    }

    /// The client for a sandbox the node runs, and the signal its
    /// exchanges end on: `ended` is its live-table entry's.
    pub fn route(&self, sandbox_id: &str, ended: &watch::Receiver<()>) -> (GuestClient, Gone) {
        let mut sandboxes = locked(&self.sandboxes);
        if sandboxes.get(sandbox_id).is_some_and(Entry::stale) {
            sandboxes.remove(sandbox_id);
        }
        let entry = sandboxes
            .entry(sandbox_id.to_owned())
            .or_insert_with(|| Entry::new(Some(ended.clone())));
        if entry.ended.is_none() {
            entry.ended = Some(ended.clone());
        }
        let gone = Gone::new(entry.forgotten.subscribe(), Some(ended.clone()));
        (entry.client.clone(), gone)
    }

    /// Sends `request` to sandbox `sandbox_id` (the URI names its address),
    /// for the control plane's own calls to envd.
    pub async fn send(
        &self,
        sandbox_id: &str,
        request: axum::http::Request<Body>,
    ) -> Result<axum::http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>
    {
        let client = locked(&self.sandboxes)
            .entry(sandbox_id.to_owned())
            .or_insert_with(|| Entry::new(None))
            .client
            .clone();
        client.request(request).await
    }

    /// Drops a sandbox that is gone: its connections, and every exchange
    /// still running with it (streams, spliced connections).
    pub fn forget(&self, sandbox_id: &str) {
        let entry = locked(&self.sandboxes).remove(sandbox_id);
        // Dropped outside the lock: its connections close as it goes.
        drop(entry);
    }

    /// Forgets every sandbox `keep` says no to (reconciliation with the
    /// store, which other control planes may have changed).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<Entry> = {
            let mut sandboxes = locked(&self.sandboxes);
            let ids: Vec<String> = sandboxes.keys().filter(|id| !keep(id)).cloned().collect();
            ids.iter().filter_map(|id| sandboxes.remove(id)).collect()
        };
        drop(gone);
    }
}
