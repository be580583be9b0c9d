//! Whether the store makes writes durable: set by the writer and the syncer (a failed commit or
//! sync, a sync that hangs), read by `/readyz`, cleared by the next sync that succeeds.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether writes are being made durable: read by `/readyz`.
pub struct StoreHealth {
    /// A sync running longer than this makes the engine not ready (the disk is stalled).
    stalled_after: std::time::Duration,
    /// The last commit or sync failed; cleared by the next sync that succeeds.
    pub(super) failing: AtomicBool,
    /// When the sync in progress started (milliseconds since `base`, plus one); 0: none.
    syncing_since: std::sync::atomic::AtomicU64,
    base: std::sync::OnceLock<std::time::Instant>,
}

impl StoreHealth {
    pub(super) fn new(stalled_after: std::time::Duration) -> StoreHealth {
        StoreHealth {
            stalled_after,
            failing: AtomicBool::new(false),
            syncing_since: Default::default(),
            base: Default::default(),
        }
    }

    fn millis(&self) -> u64 {
        let base = self.base.get_or_init(std::time::Instant::now);
        base.elapsed().as_millis() as u64 + 1
    }

    pub(super) fn sync_started(&self) {
        let now = self.millis();
        self.syncing_since.store(now, Ordering::SeqCst);
    }

    pub(super) fn sync_ended(&self) {
        self.syncing_since.store(0, Ordering::SeqCst);
    }

    /// `Err(why)` while writes fail or a sync has hung for longer than `stalled_after`.
    pub fn check(&self) -> Result<(), String> {
        if self.failing.load(Ordering::SeqCst) {
            return Err("store writes are failing (see the log); retrying".into());
        }
        let since = self.syncing_since.load(Ordering::SeqCst);
        if since != 0 {
            let for_ms = self.millis().saturating_sub(since);
            if for_ms > self.stalled_after.as_millis() as u64 {
                return Err(format!(
                    "store sync has not finished for {} s (disk stalled?)",
                    for_ms / 1000
                ));
            }
        }
        Ok(())
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }
}
