//! Which sandbox runs at each slot address of a node, as this control plane
//! last heard it from the node. The proxy checks every route against it
//! before forwarding, because slot addresses are reused: a request for a
//! sandbox that is gone must never reach the next sandbox at its address.
//!
//! The node's own answers keep the table (see `sandbox_client.rs`): a create
//! puts the new sandbox at its address, and whoever held that address
//! before is gone, since a slot holds one sandbox at a time; a get confirms
//! where a sandbox runs or that it is gone; a delete removes it as soon as it
//! is asked for, so that its streams end with the kill and not after the VM
//! is torn down; a list removes what the node no longer runs. Each entry
//! holds the sending half of a signal that the sandbox's proxied streams
//! wait on: removing the entry drops it and ends them all.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hearth_proto::orchestrator::SandboxGetRequest;
use tokio::sync::watch;

use super::{Node, bounded, call_within};

/// How long a sandbox that ended stays known as ended, so that answers
/// about it that were already on their way (a get or list asked before
/// the delete) cannot bring it back, until reconciliation forgot its row.
const ENDED_MEMORY: Duration = Duration::from_secs(600);
/// The most ended sandboxes remembered, whatever their age: memory stays
/// bounded under any churn. Forgetting one early only costs a get.
const ENDED_LIMIT: usize = 100_000;

/// One node's sandboxes by id and by slot address.
#[derive(Debug, Default)]
pub struct LiveTable {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sandboxes: HashMap<String, Entry>,
    /// Slot address → the sandbox there.
    owners: HashMap<String, String>,
    /// Ended sandboxes and when they ended, oldest first in `ended_order`.
    ended: HashMap<String, Instant>,
    ended_order: VecDeque<(Instant, String)>,
    /// Counts insertions; an entry remembers the count it was inserted at,
    /// which orders it against answers asked for before or after.
    epoch: u64,
}

#[derive(Debug)]
struct Entry {
    address: String,
    inserted: u64,
    /// Never sent on: dropping it is the signal that the sandbox is gone.
    running: watch::Sender<()>,
}

/// A sandbox the node runs: its slot address, and a signal that fires
/// (`changed()` fails) once the sandbox is gone.
#[derive(Debug, Clone)]
pub struct LiveSandbox {
    pub address: String,
    pub ended: watch::Receiver<()>,
}

/// What the table knows of a sandbox.
#[derive(Debug)]
pub enum Seen {
    Running(LiveSandbox),
    Ended,
    /// Nothing yet: created by another control plane or before this process
    /// started. Only the node can tell.
    Unknown,
}

fn lock(table: &LiveTable) -> std::sync::MutexGuard<'_, Inner> {
    table.inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveTable {
    pub fn seen(&self, id: &str) -> Seen {
        let inner = lock(self);
        if let Some(entry) = inner.sandboxes.get(id) {
            return Seen::Running(LiveSandbox {
                address: entry.address.clone(),
                ended: entry.running.subscribe(),
            });
        }
        if inner.ended.contains_key(id) {
            Seen::Ended
        } else {
            Seen::Unknown
        }
    }

    /// The insertion count now: pass it to [`LiveTable::reported`] or
    /// [`LiveTable::keep_listed`] with the answer to a call asked for now.
    pub fn epoch(&self) -> u64 {
        lock(self).epoch
    }

    /// The node created `id` at `address`: whatever was there is gone.
    pub fn created(&self, id: &str, address: &str) {
        lock(self).insert(id, address, None);
    }

    /// The node said, in an answer asked for at `asked`, that `id` runs at
    /// `address`. A sandbox put at that address after the ask is newer
    /// news, and wins.
    pub fn reported(&self, id: &str, address: &str, asked: u64) {
        lock(self).insert(id, address, Some(asked));
    }

    /// `id` is gone, or going: it was deleted or the node no longer has it.
    pub fn end(&self, id: &str) {
        lock(self).end(id);
    }

    /// `id` was paused: it runs nowhere (its streams end) but is not gone;
    /// a resume puts it at its new address.
    pub fn paused(&self, id: &str) {
        let mut inner = lock(self);
        if let Some(entry) = inner.sandboxes.remove(id)
            && inner.owners.get(&entry.address).is_some_and(|o| o == id)
        {
            inner.owners.remove(&entry.address);
        }
    }

    /// A delete of `id` failed: it may still run, so the node is asked
    /// again on its next request instead of taking it for gone.
    pub fn revive(&self, id: &str) {
        lock(self).ended.remove(id);
    }

    /// The node listed `listed` in an answer asked for at `asked`: sandboxes
    /// known before the ask and not listed are gone. (A list never adds:
    /// it may be older than a create that finished meanwhile.)
    pub fn keep_listed(&self, listed: &HashSet<&str>, asked: u64) {
        let mut inner = lock(self);
        let gone: Vec<String> = inner
            .sandboxes
            .iter()
            .filter(|(id, entry)| entry.inserted <= asked && !listed.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            inner.end(&id);
        }
    }
}

impl Inner {
    fn insert(&mut self, id: &str, address: &str, asked: Option<u64>) {
        if self.ended.contains_key(id) {
            return;
        }
        if let Some(owner) = self.owners.get(address).cloned()
            && owner != id
        {
            let newer = asked.is_some_and(|asked| {
                self.sandboxes
                    .get(&owner)
                    .is_some_and(|entry| entry.inserted > asked)
            });
            if newer {
                return;
            }
            // One slot, one sandbox: the one that had it is gone.
            self.end(&owner);
        }
        if let Some(entry) = self.sandboxes.get(id) {
            if entry.address == address {
                return;
            }
            // The same id at another address is not the same VM any more.
            let old = entry.address.clone();
            self.owners.remove(&old);
            self.sandboxes.remove(id);
        }
        self.epoch += 1;
        let (running, _) = watch::channel(());
        self.sandboxes.insert(
            id.to_owned(),
            Entry {
                address: address.to_owned(),
                inserted: self.epoch,
                running,
            },
        );
        self.owners.insert(address.to_owned(), id.to_owned());
    }

    fn end(&mut self, id: &str) {
        if let Some(entry) = self.sandboxes.remove(id)
            && self.owners.get(&entry.address).is_some_and(|o| o == id)
        {
            self.owners.remove(&entry.address);
        }
        let now = Instant::now();
        self.ended.insert(id.to_owned(), now);
        self.ended_order.push_back((now, id.to_owned()));
        while let Some((at, _)) = self.ended_order.front() {
            if now.duration_since(*at) < ENDED_MEMORY && self.ended_order.len() <= ENDED_LIMIT {
                break;
            }
            if let Some((at, old)) = self.ended_order.pop_front()
                // Ended again later (after a revive): that later entry rules.
                && self.ended.get(&old) == Some(&at)
            {
                self.ended.remove(&old);
            }
        }
    }
}

impl Node {
    /// Where sandbox `id` runs on this node, checked against the live
    /// table: what this control plane last heard, else the node's answer to
    /// a get (within `deadline`). `None`: it does not run there (any more).
    pub async fn running(
        &self,
        id: &str,
        deadline: Duration,
    ) -> Result<Option<LiveSandbox>, tonic::Status> {
        match self.live.seen(id) {
            Seen::Running(sandbox) => return Ok(Some(sandbox)),
            Seen::Ended => return Ok(None),
            Seen::Unknown => {}
        }
        let request = call_within(
            SandboxGetRequest {
                sandbox_id: id.to_owned(),
            },
            deadline,
        );
        let mut client = self.sandboxes();
        match bounded(deadline, client.get(request)).await {
            // The client put the answer into the table.
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(status),
        }
        Ok(match self.live.seen(id) {
            Seen::Running(sandbox) => Some(sandbox),
            Seen::Ended | Seen::Unknown => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address_of(table: &LiveTable, id: &str) -> Option<String> {
        match table.seen(id) {
            Seen::Running(sandbox) => Some(sandbox.address),
            _ => None,
        }
    }

    #[test]
    fn a_new_sandbox_at_an_address_ends_the_one_before() {
        let table = LiveTable::default();
        table.created("a", "10.0.0.2");
        let Seen::Running(a) = table.seen("a") else {
            panic!("a is not running");
        };
        table.created("b", "10.0.0.2");
        assert!(matches!(table.seen("a"), Seen::Ended));
        assert_eq!(address_of(&table, "b").as_deref(), Some("10.0.0.2"));
        // Its streams were told.
        assert!(a.ended.has_changed().is_err());
        // A late answer about a cannot bring it back.
        table.reported("a", "10.0.0.2", 0);
        assert!(matches!(table.seen("a"), Seen::Ended));
    }

    #[test]
    fn older_answers_lose_to_newer_news() {
        let table = LiveTable::default();
        let asked = table.epoch();
        table.created("b", "10.0.0.2");
        // Asked before b was created there: a was there then, not now.
        table.reported("a", "10.0.0.2", asked);
        assert!(matches!(table.seen("a"), Seen::Unknown));
        assert!(address_of(&table, "b").is_some());
        // A list asked before b was created does not end it either.
        table.keep_listed(&HashSet::new(), asked);
        assert!(address_of(&table, "b").is_some());
        table.keep_listed(&HashSet::new(), table.epoch());
        assert!(matches!(table.seen("b"), Seen::Ended));
    }

    #[test]
    fn a_paused_sandbox_runs_nowhere_until_it_is_resumed_elsewhere() {
        let table = LiveTable::default();
        table.created("a", "10.0.0.2");
        let Seen::Running(before) = table.seen("a") else {
            panic!("a is not running");
        };
        table.paused("a");
        assert!(matches!(table.seen("a"), Seen::Unknown));
        assert!(before.ended.has_changed().is_err(), "its streams were told");
        table.created("a", "10.0.0.6");
        assert_eq!(address_of(&table, "a").as_deref(), Some("10.0.0.6"));
        // Its old address is free for another sandbox.
        table.created("b", "10.0.0.2");
        assert_eq!(address_of(&table, "a").as_deref(), Some("10.0.0.6"));
    }

    #[test]
    fn a_failed_delete_is_taken_back() {
        let table = LiveTable::default();
        table.created("a", "10.0.0.2");
        table.end("a");
        assert!(matches!(table.seen("a"), Seen::Ended));
        table.revive("a");
        assert!(matches!(table.seen("a"), Seen::Unknown));
        table.reported("a", "10.0.0.2", table.epoch());
        assert!(address_of(&table, "a").is_some());
    }
}
