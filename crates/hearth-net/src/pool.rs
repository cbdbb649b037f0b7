//! A pool of ready network slots, so that creating a sandbox does not wait
//! for namespace set-up: a background task keeps `size` slots ready, and
//! slots of deleted sandboxes are recycled, with the connections tracked
//! for them forgotten when they come back and again when they go out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::connections;
use crate::error::NetError;
use crate::slot::{NetSlot, SlotNaming};

/// How long a returned slot rests before reuse, so that late packets for
/// the sandbox that had it (which the slot, having forgotten its
/// connections, resets or drops) are over before its successor starts.
const REUSE_DELAY: Duration = Duration::from_secs(3);

/// A slot ready to hand out, and whether a sandbox had it before.
#[derive(Debug)]
struct Ready {
    slot: NetSlot,
    recycled: bool,
}

/// Ready slots of one user of the host.
#[derive(Debug)]
pub struct SlotPool {
    naming: SlotNaming,
    size: usize,
    ready: Mutex<VecDeque<Ready>>,
    resting: Mutex<VecDeque<(Instant, NetSlot)>>,
    wake: Notify,
    /// Set by [`SlotPool::drain`]: the refill task ends and returned slots
    /// are deleted.
    closed: AtomicBool,
    /// Held by the refill task while it makes a slot, so that a drain waits
    /// for that slot instead of missing it.
    making: tokio::sync::Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl SlotPool {
    /// A pool that keeps `size` slots ready once [`SlotPool::refill`] runs.
    pub fn new(naming: SlotNaming, size: usize) -> Arc<Self> {
        Arc::new(Self {
            naming,
            size,
            ready: Mutex::new(VecDeque::new()),
            resting: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            making: tokio::sync::Mutex::new(()),
        })
    }

    pub fn naming(&self) -> &SlotNaming {
        &self.naming
    }

    /// Slots ready to hand out now.
    pub fn ready(&self) -> usize {
        lock(&self.ready).len()
    }

    /// A ready slot, or a new one when none is ready. A recycled slot's
    /// tracked connections are forgotten once more, since its rest may have
    /// left some (a late packet for the sandbox before).
    pub async fn take(&self) -> Result<NetSlot, NetError> {
        self.promote_rested();
        let ready = lock(&self.ready).pop_front();
        self.wake.notify_one();
        match ready {
            Some(Ready {
                slot,
                recycled: false,
            }) => Ok(slot),
            Some(Ready {
                slot,
                recycled: true,
            }) => match connections::forget_all(&slot).await {
                Ok(()) => Ok(slot),
                Err(error) => {
                    tracing::warn!(%error, netns = %slot.netns, "a recycled slot is deleted instead");
                    let _ = slot.destroy().await;
                    NetSlot::create_free(&self.naming, 0).await
                }
            },
            None => NetSlot::create_free(&self.naming, 0).await,
        }
    }

    /// Takes back a slot whose sandbox is gone: its tracked connections
    /// are forgotten and it is reused after a rest, or it is deleted when
    /// the pool is full (or its connections could not be forgotten).
    pub async fn give_back(&self, slot: NetSlot) -> Result<(), NetError> {
        let held = lock(&self.ready).len() + lock(&self.resting).len();
        if held >= self.size || self.closed.load(Ordering::Acquire) {
            return slot.destroy().await;
        }
        if let Err(error) = connections::forget_all(&slot).await {
            tracing::warn!(%error, netns = %slot.netns, "a returned slot is deleted instead");
            return slot.destroy().await;
        }
        lock(&self.resting).push_back((Instant::now() + REUSE_DELAY, slot));
        self.wake.notify_one();
        Ok(())
    }

    fn promote_rested(&self) {
        let now = Instant::now();
        let mut resting = lock(&self.resting);
        while resting.front().is_some_and(|(until, _)| *until <= now) {
            if let Some((_, slot)) = resting.pop_front() {
                lock(&self.ready).push_back(Ready {
                    slot,
                    recycled: true,
                });
            }
        }
    }

    /// Keeps the pool full, forever: run it as a background task.
    pub async fn refill(self: Arc<Self>) {
        while !self.closed.load(Ordering::Acquire) {
            self.promote_rested();
            let held = lock(&self.ready).len() + lock(&self.resting).len();
            if held < self.size {
                let _making = self.making.lock().await;
                if self.closed.load(Ordering::Acquire) {
                    break;
                }
                match NetSlot::create_free(&self.naming, 0).await {
                    // A drain while this slot was being made must not miss it.
                    Ok(slot) if self.closed.load(Ordering::Acquire) => {
                        let _ = slot.destroy().await;
                    }
                    Ok(slot) => lock(&self.ready).push_back(Ready {
                        slot,
                        recycled: false,
                    }),
                    Err(error) => {
                        tracing::warn!(%error, "refilling the slot pool failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                continue;
            }
            // Wake for a take, a return, or a resting slot's turn.
            let _ = tokio::time::timeout(REUSE_DELAY, self.wake.notified()).await;
        }
    }

    /// Stops refilling and deletes every slot the pool holds (shutdown).
    pub async fn drain(&self) -> Result<(), NetError> {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
        let _no_slot_in_the_making = self.making.lock().await;
        let slots: Vec<NetSlot> = {
            let mut ready = lock(&self.ready);
            let mut resting = lock(&self.resting);
            ready
                .drain(..)
                .map(|ready| ready.slot)
                .chain(resting.drain(..).map(|(_, s)| s))
                .collect()
        };
        let mut result = Ok(());
        for slot in slots {
            if let Err(error) = slot.destroy().await {
                result = Err(error);
            }
        }
        result
    }
}
