//! Whether the store makes writes durable: set by the writer and the syncer (a failed commit or
//! sync, a sync that hangs), read by `/readyz`, cleared by the next sync that succeeds — except
//! after a failed webhook write (an alert's): then only an alert stored again clears it, because
//! on a nearly full disk a small background write or sync can still succeed in between without
//! meaning that the next alert fits.

use std::sync::atomic::{AtomicBool, Ordering};

/// After a failed webhook write, how long no webhook may have tried to write before a sync that
/// succeeds makes the process ready again.
pub const INTAKE_QUIET: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether writes are being made durable: read by `/readyz`.
pub struct StoreHealth {
    /// A sync running longer than this makes the engine not ready (the disk is stalled).
    stalled_after: std::time::Duration,
    /// The last commit or sync failed; cleared by the next sync that succeeds.
    pub(super) failing: AtomicBool,
    /// A batch with alerts (webhook intake) failed to commit or sync, and none has been
    /// stored since.
    intake_failing: AtomicBool,
    /// When a batch with alerts was last written, stored or not (milliseconds since `base`,
    /// plus one); 0: never.
    intake_at: std::sync::atomic::AtomicU64,
    /// When the sync in progress started (milliseconds since `base`, plus one); 0: none.
    syncing_since: std::sync::atomic::AtomicU64,
    base: std::sync::OnceLock<std::time::Instant>,
}

impl StoreHealth {
    pub(super) fn new(stalled_after: std::time::Duration) -> StoreHealth {
        StoreHealth {
            stalled_after,
            failing: AtomicBool::new(false),
            intake_failing: AtomicBool::new(false),
            intake_at: Default::default(),
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

    /// A batch with alerts is being written (stored or not, it is an attempt).
    pub(super) fn intake_written(&self) {
        let now = self.millis();
        self.intake_at.store(now, Ordering::SeqCst);
    }

    /// A batch with alerts failed to commit or sync: not ready until one is stored.
    pub(super) fn intake_failed(&self) {
        self.intake_written();
        self.intake_failing.store(true, Ordering::SeqCst);
    }

    /// A batch with alerts was stored and acknowledged.
    pub(super) fn intake_stored(&self) {
        self.intake_failing.store(false, Ordering::SeqCst);
    }

    /// `Err(why)` while writes fail, a sync has hung for longer than `stalled_after`, or the
    /// last webhook write failed and no alert has been stored since. The last holds for as
    /// long as webhooks keep trying, however many smaller writes and syncs succeed in between;
    /// once none has tried for [`INTAKE_QUIET`] (an orchestrator stopped sending traffic to the
    /// unready process, say), a sync that succeeds makes it ready again, so that alerts can
    /// reach it and show whether they fit.
    pub fn check(&self) -> Result<(), String> {
        self.check_at(self.millis())
    }

    fn check_at(&self, now: u64) -> Result<(), String> {
        if self.failing.load(Ordering::SeqCst) {
            return Err("store writes are failing (see the log); retrying".into());
        }
        if self.intake_failing.load(Ordering::SeqCst)
            && now.saturating_sub(self.intake_at.load(Ordering::SeqCst))
                < INTAKE_QUIET.as_millis() as u64
        {
            return Err(
                "the last alert could not be stored (see the log); not ready until an alert is stored again"
                    .into(),
            );
        }
        let since = self.syncing_since.load(Ordering::SeqCst);
        if since != 0 {
            let for_ms = now.saturating_sub(since);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_webhook_write_holds_readiness_until_an_alert_is_stored_or_webhooks_stop_trying() {
        let h = StoreHealth::new(std::time::Duration::from_secs(5));
        let t0 = h.millis();
        assert!(h.check_at(t0).is_ok());
        h.intake_failed();
        let at = h.intake_at.load(Ordering::SeqCst);
        // A sync that succeeds (the writer clears `failing`) does not make it ready.
        h.failing.store(false, Ordering::SeqCst);
        let why = h.check_at(at + 1).unwrap_err();
        assert!(why.contains("alert"), "{why}");
        let quiet = INTAKE_QUIET.as_millis() as u64;
        assert!(h.check_at(at + quiet - 1).is_err());
        // Webhooks keep trying (and failing): the quiet period starts again.
        h.intake_failed();
        let again = h.intake_at.load(Ordering::SeqCst);
        assert!(h.check_at(again + quiet - 1).is_err());
        // Nobody tried for the quiet period: a sync that succeeded is enough.
        assert!(h.check_at(again + quiet).is_ok());
        // But not while writes fail.
        h.failing.store(true, Ordering::SeqCst);
        assert!(h.check_at(again + quiet).is_err());
        h.failing.store(false, Ordering::SeqCst);
        // An alert stored: ready at once.
        h.intake_failed();
        h.intake_stored();
        assert!(h.check_at(h.intake_at.load(Ordering::SeqCst)).is_ok());
    }
}
