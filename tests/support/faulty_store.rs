//! A [`Store`] that passes every call to a real one, except when a test injects a fault: writes
//! that fail as on a full disk, or syncs that hang as on a stalled one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Utc};
use incidentd::domain::incident::{Incident, IncidentId, PastIncident, TimelineEvent};
use incidentd::ports::{
    Execution, IncidentFilter, OutboxEntry, Recovery, Store, StoreError, ThreadRef, Timer, WriteSet,
};

pub struct FaultyStore {
    inner: Arc<dyn Store>,
    /// Commits, syncs and outbox writes fail with ENOSPC's words.
    fail_writes: AtomicBool,
    /// Commits that write an incident fail with ENOSPC's words; smaller ones (an empty group
    /// commit, outbox deletions) and syncs still fit: a disk with a little room left.
    fail_incident_writes: AtomicBool,
    /// Syncs block until released.
    hang: Mutex<bool>,
    released: Condvar,
    /// Syncs blocked right now.
    pub hung: AtomicUsize,
}

fn enospc() -> StoreError {
    StoreError::Storage("No space left on device (os error 28)".into())
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            fail_writes: AtomicBool::new(false),
            fail_incident_writes: AtomicBool::new(false),
            hang: Mutex::new(false),
            released: Condvar::new(),
            hung: AtomicUsize::new(0),
        })
    }

    pub fn fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    /// See `fail_incident_writes`: webhooks' writes fail, background ones still fit.
    pub fn fail_incident_writes(&self, on: bool) {
        self.fail_incident_writes.store(on, Ordering::SeqCst);
    }

    pub fn hang_syncs(&self, on: bool) {
        *self.hang.lock().unwrap() = on;
        if !on {
            self.released.notify_all();
        }
    }

    fn write(&self) -> Result<(), StoreError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            Err(enospc())
        } else {
            Ok(())
        }
    }
}

impl Store for FaultyStore {
    fn get_incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        self.inner.get_incident(id)
    }
    fn list_incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        self.inner.list_incidents(filter)
    }
    fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEvent>, StoreError> {
        self.inner.timeline(id)
    }
    fn for_each_incident(&self, f: &mut dyn FnMut(Incident) -> bool) -> Result<(), StoreError> {
        self.inner.for_each_incident(f)
    }
    fn next_incident_id(&self) -> Result<u64, StoreError> {
        self.inner.next_incident_id()
    }
    fn next_seq(&self) -> Result<u64, StoreError> {
        self.inner.next_seq()
    }
    fn commit(&self, w: &WriteSet) -> Result<(), StoreError> {
        self.write()?;
        if !w.incidents.is_empty() && self.fail_incident_writes.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.inner.commit(w)
    }
    fn flush(&self) -> Result<(), StoreError> {
        let mut hang = self.hang.lock().unwrap();
        if *hang {
            self.hung.fetch_add(1, Ordering::SeqCst);
            while *hang {
                hang = self.released.wait(hang).unwrap();
            }
            self.hung.fetch_sub(1, Ordering::SeqCst);
        }
        drop(hang);
        self.write()?;
        self.inner.flush()
    }
    fn outbox_pending(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_pending(sink, limit)
    }
    fn outbox_complete(
        &self,
        entry: &OutboxEntry,
        thread: Option<&ThreadRef>,
    ) -> Result<(), StoreError> {
        self.write()?;
        self.inner.outbox_complete(entry, thread)
    }
    fn outbox_dead_letter(&self, entry: &OutboxEntry, error: &str) -> Result<(), StoreError> {
        self.write()?;
        self.inner.outbox_dead_letter(entry, error)
    }
    fn outbox_len(&self) -> usize {
        self.inner.outbox_len()
    }
    fn thread_for(&self, sink: &str, id: IncidentId) -> Result<Option<ThreadRef>, StoreError> {
        self.inner.thread_for(sink, id)
    }
    fn incident_for_thread(
        &self,
        sink: &str,
        channel: &str,
        message_id: &str,
    ) -> Result<Option<IncidentId>, StoreError> {
        self.inner.incident_for_thread(sink, channel, message_id)
    }
    fn timers(&self) -> Result<Vec<Timer>, StoreError> {
        self.inner.timers()
    }
    fn open_fingerprints(&self) -> Result<Vec<(String, IncidentId)>, StoreError> {
        self.inner.open_fingerprints()
    }
    fn history_fingerprints(&self) -> Result<Vec<String>, StoreError> {
        self.inner.history_fingerprints()
    }
    fn history(&self, fingerprint: &str) -> Result<Vec<PastIncident>, StoreError> {
        self.inner.history(fingerprint)
    }
    fn executions(&self, id: IncidentId) -> Result<Vec<Execution>, StoreError> {
        self.inner.executions(id)
    }
    fn execution(&self, key: &str) -> Result<Option<Execution>, StoreError> {
        self.inner.execution(key)
    }
    fn recover(&self, now: DateTime<Utc>) -> Result<Recovery, StoreError> {
        self.inner.recover(now)
    }
    fn fold(&self, max: usize) -> Result<usize, StoreError> {
        self.write()?;
        self.inner.fold(max)
    }
    fn unfolded(&self) -> usize {
        self.inner.unfolded()
    }
}
