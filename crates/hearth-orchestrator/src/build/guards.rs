//! What a build holds that must be let go however it ends, also when its
//! future is dropped (a cancelled build).

use std::path::PathBuf;
use std::sync::Arc;

use hearth_net::NetSlot;

use crate::error::Result;

/// A network slot for a build VM that goes back to the pool however the
/// build ends, also when its future is dropped (a cancelled build).
pub(super) struct SlotGuard {
    slot: Option<NetSlot>,
    pool: Arc<hearth_net::SlotPool>,
}

impl SlotGuard {
    pub(super) async fn take(pool: Arc<hearth_net::SlotPool>) -> Result<Self> {
        let slot = pool.take().await?;
        Ok(Self {
            slot: Some(slot),
            pool,
        })
    }

    #[allow(clippy::expect_used)]
    pub(super) fn get(&self) -> &NetSlot {
        // Only `give_back` and `drop` take the slot out, and both consume.
        self.slot
            .as_ref()
            .expect("a slot guard holds its slot until it is consumed")
    }

    pub(super) async fn give_back(mut self) {
        if let Some(slot) = self.slot.take() {
            let _ = self.pool.give_back(slot).await;
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                let _ = pool.give_back(slot).await;
            });
        }
    }
}

/// A directory removed when the last owner lets go of it (also when a
/// build's future is dropped; a blocking task that still writes into it
/// holds a clone of the `Arc` it is kept in).
pub(super) struct RemoveOnDrop(pub(super) PathBuf);

impl RemoveOnDrop {
    pub(super) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
