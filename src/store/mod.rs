//! The sled implementation of [`Store`]. One tree per kind of record; every group commit is one
//! multi-tree transaction, made durable by one `flush` (fsync) before anyone is answered.
//!
//! Keys are big-endian integers so sled's byte order is numeric order: incidents iterate by id,
//! timeline events by (incident, seq), outbox entries by (sink, seq).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch, Transactional, Tree};

use crate::domain::incident::{Incident, IncidentId, PastIncident, TimelineEvent};
use crate::ports::{
    Execution, ExecutionStatus, IncidentFilter, OutboxEntry, Recovery, Store, StoreError,
    ThreadRef, Timer, TimerKind, WriteSet,
};

/// Bumped when the on-disk layout changes incompatibly.
pub const SCHEMA_VERSION: u64 = 1;

pub struct SledStore {
    db: sled::Db,
    incidents: Tree,
    events: Tree,
    fingerprints: Tree,
    outbox: Tree,
    dead: Tree,
    executions: Tree,
    timers: Tree,
    threads: Tree,
    history: Tree,
    meta: Tree,
    /// sled's log file. sled 0.34's `flush` only calls `sync_file_range`, which does not make
    /// the data durable against power loss; an explicit `sync_data` on the file does.
    log: std::fs::File,
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

fn dec<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Codec {
        tree,
        message: e.to_string(),
    })
}

fn id_key(id: IncidentId) -> [u8; 8] {
    id.0.to_be_bytes()
}

fn event_key(id: IncidentId, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&id.0.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn sink_prefix(sink: &str) -> Vec<u8> {
    let mut k = sink.as_bytes().to_vec();
    k.push(0);
    k
}

fn outbox_key(sink: &str, seq: u64) -> Vec<u8> {
    let mut k = sink_prefix(sink);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn timer_key(id: IncidentId, kind: TimerKind) -> Vec<u8> {
    let mut k = id.0.to_be_bytes().to_vec();
    k.extend_from_slice(kind.as_str().as_bytes());
    k
}

fn thread_key(sink: &str, id: IncidentId) -> Vec<u8> {
    let mut k = b"i\0".to_vec();
    k.extend_from_slice(&sink_prefix(sink));
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

fn thread_index_key(sink: &str, channel: &str, message_id: &str) -> Vec<u8> {
    let mut k = b"t\0".to_vec();
    k.extend_from_slice(&sink_prefix(sink));
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(message_id.as_bytes());
    k
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// sled's background flusher keeps the file lock for a moment after the last handle is
/// dropped, so a quick restart (or a test reopening the store) can find it held: wait a little.
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(StoreError::Storage(format!(
                    "cannot open {}: {e}",
                    path.display()
                )))
            }
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store at `path` and checks its schema version.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        let db = open_db(path)?;
        let tree = |n: &str| db.open_tree(n).map_err(storage);
        let s = SledStore {
            incidents: tree("incidents")?,
            events: tree("events")?,
            fingerprints: tree("fingerprints")?,
            outbox: tree("outbox")?,
            dead: tree("outbox_dead")?,
            executions: tree("executions")?,
            timers: tree("timers")?,
            threads: tree("threads")?,
            history: tree("history")?,
            meta: tree("meta")?,
            log: std::fs::File::open(path.join("db")).map_err(|e| {
                StoreError::Storage(format!("cannot open {}/db: {e}", path.display()))
            })?,
            db,
        };
        match s.meta.get("schema_version").map_err(storage)? {
            None => {
                s.meta
                    .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(storage)?;
                s.db.flush().map_err(storage)?;
            }
            Some(v) if be_u64(&v) == Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(StoreError::Storage(format!(
                    "{} has schema version {:?}; this build reads version {SCHEMA_VERSION}",
                    path.display(),
                    be_u64(&v)
                )))
            }
        }
        Ok(s)
    }

    /// The raw sled handle (benchmarks compare against it).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

impl Store for SledStore {
    fn get_incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        self.incidents
            .get(id_key(id))
            .map_err(storage)?
            .map(|v| dec("incidents", &v))
            .transpose()
    }

    fn open_incident_for(&self, fingerprint: &str) -> Result<Option<IncidentId>, StoreError> {
        Ok(self
            .fingerprints
            .get(fingerprint)
            .map_err(storage)?
            .and_then(|v| be_u64(&v))
            .map(IncidentId))
    }

    fn list_incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        let mut out = Vec::new();
        for kv in self.incidents.iter().rev() {
            let (_, v) = kv.map_err(storage)?;
            let inc: Incident = dec("incidents", &v)?;
            if filter.matches(&inc) {
                out.push(inc);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEvent>, StoreError> {
        self.events
            .scan_prefix(id_key(id))
            .map(|kv| {
                let (_, v) = kv.map_err(storage)?;
                dec("events", &v)
            })
            .collect()
    }

    fn next_incident_id(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get("next_id")
            .map_err(storage)?
            .and_then(|v| be_u64(&v))
            .unwrap_or(1))
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        self.db.generate_id().map_err(storage)
    }

    fn commit(&self, w: &WriteSet) -> Result<(), StoreError> {
        // Encode outside the transaction: its closure may run more than once.
        let mut incidents = Batch::default();
        for inc in &w.incidents {
            incidents.insert(&id_key(inc.id), enc(inc));
        }
        let mut events = Batch::default();
        for (id, seq, ev) in &w.events {
            events.insert(&event_key(*id, *seq), enc(ev));
        }
        let mut fps = Batch::default();
        for (fp, id) in &w.fingerprints {
            match id {
                Some(id) => fps.insert(fp.as_bytes(), &id_key(*id)),
                None => fps.remove(fp.as_bytes()),
            }
        }
        let mut outbox = Batch::default();
        for e in &w.outbox {
            outbox.insert(outbox_key(&e.sink, e.seq), enc(e));
        }
        let mut timers = Batch::default();
        for (id, kind, t) in &w.timers {
            match t {
                Some(t) => timers.insert(timer_key(*id, *kind), enc(t)),
                None => timers.remove(timer_key(*id, *kind)),
            }
        }
        let mut execs = Batch::default();
        for x in &w.executions {
            execs.insert(x.key.as_bytes(), enc(x));
        }
        let mut history = Batch::default();
        for (fp, past) in &w.history {
            let mut k = sink_prefix(fp);
            k.extend_from_slice(&id_key(past.id));
            history.insert(k, enc(past));
        }
        let mut meta = Batch::default();
        if let Some(n) = w.next_id {
            meta.insert("next_id", &n.to_be_bytes());
        }
        let trees = (
            &self.incidents,
            &self.events,
            &self.fingerprints,
            &self.outbox,
            &self.timers,
            &self.executions,
            &self.history,
            &self.meta,
        );
        trees
            .transaction(|(ti, te, tf, to, tt, tx, th, tm)| {
                ti.apply_batch(&incidents)?;
                te.apply_batch(&events)?;
                tf.apply_batch(&fps)?;
                to.apply_batch(&outbox)?;
                tt.apply_batch(&timers)?;
                tx.apply_batch(&execs)?;
                th.apply_batch(&history)?;
                tm.apply_batch(&meta)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| storage(format!("{e:?}")))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(storage)?;
        // fdatasync: what "durable before acknowledged" promises (≈ 0.1 ms more per commit).
        self.log.sync_data().map_err(storage)
    }

    fn outbox_pending(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox
            .scan_prefix(sink_prefix(sink))
            .take(limit)
            .map(|kv| {
                let (_, v) = kv.map_err(storage)?;
                dec("outbox", &v)
            })
            .collect()
    }

    fn outbox_complete(
        &self,
        entry: &OutboxEntry,
        thread: Option<&ThreadRef>,
    ) -> Result<(), StoreError> {
        let key = outbox_key(&entry.sink, entry.seq);
        match thread {
            None => {
                self.outbox.remove(key).map_err(storage)?;
            }
            Some(t) => {
                // The thread first, then the entry's deletion, each atomic on its own tree (no
                // cross-tree transaction: this runs once per posted card). A crash in between
                // leaves the entry queued with its thread known: it is sent again, under the
                // same idempotency key, which is what a crash before the deletion does anyway.
                let mut b = Batch::default();
                b.insert(thread_key(&entry.sink, entry.incident), enc(t));
                let idx = thread_index_key(&entry.sink, &t.channel, &t.message_id);
                // Where a thread is a channel of its own (Discord), replies name only that
                // channel: index it as (channel, channel) too, whatever message holds the card.
                let own = thread_index_key(&entry.sink, &t.channel, &t.channel);
                if own != idx {
                    b.insert(own, &id_key(entry.incident));
                }
                b.insert(idx, &id_key(entry.incident));
                self.threads.apply_batch(b).map_err(storage)?;
                self.outbox.remove(key).map_err(storage)?;
            }
        }
        Ok(())
    }

    fn outbox_dead_letter(&self, entry: &OutboxEntry, error: &str) -> Result<(), StoreError> {
        let key = outbox_key(&entry.sink, entry.seq);
        let record = serde_json::json!({ "entry": entry, "error": error });
        (&self.outbox, &self.dead)
            .transaction(|(o, d)| {
                o.remove(key.as_slice())?;
                d.insert(key.as_slice(), enc(&record))?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| storage(format!("{e:?}")))?;
        Ok(())
    }

    fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    fn thread_for(&self, sink: &str, id: IncidentId) -> Result<Option<ThreadRef>, StoreError> {
        self.threads
            .get(thread_key(sink, id))
            .map_err(storage)?
            .map(|v| dec("threads", &v))
            .transpose()
    }

    fn incident_for_thread(
        &self,
        sink: &str,
        channel: &str,
        message_id: &str,
    ) -> Result<Option<IncidentId>, StoreError> {
        Ok(self
            .threads
            .get(thread_index_key(sink, channel, message_id))
            .map_err(storage)?
            .and_then(|v| be_u64(&v))
            .map(IncidentId))
    }

    fn timers(&self) -> Result<Vec<Timer>, StoreError> {
        self.timers
            .iter()
            .map(|kv| {
                let (_, v) = kv.map_err(storage)?;
                dec("timers", &v)
            })
            .collect()
    }

    fn open_fingerprints(&self) -> Result<Vec<(String, IncidentId)>, StoreError> {
        self.fingerprints
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(storage)?;
                let fp = String::from_utf8(k.to_vec()).map_err(|e| StoreError::Codec {
                    tree: "fingerprints",
                    message: e.to_string(),
                })?;
                let id = be_u64(&v).ok_or_else(|| StoreError::Codec {
                    tree: "fingerprints",
                    message: format!("bad incident id for {fp}"),
                })?;
                Ok((fp, IncidentId(id)))
            })
            .collect()
    }

    fn history_fingerprints(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for k in self.history.iter().keys() {
            // Keys are `fingerprint \0 id(8 bytes)`.
            let k = k.map_err(storage)?;
            let fp = k.len().checked_sub(9).map(|n| &k[..n]);
            let fp = fp
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| StoreError::Codec {
                    tree: "history",
                    message: "bad key".into(),
                })?;
            if out.last().map(String::as_str) != Some(fp) {
                out.push(fp.to_string());
            }
        }
        Ok(out)
    }

    fn history(&self, fingerprint: &str) -> Result<Vec<PastIncident>, StoreError> {
        self.history
            .scan_prefix(sink_prefix(fingerprint))
            .map(|kv| {
                let (_, v) = kv.map_err(storage)?;
                dec("history", &v)
            })
            .collect()
    }

    fn executions(&self, id: IncidentId) -> Result<Vec<Execution>, StoreError> {
        let prefix = format!("{id}:");
        self.executions
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (_, v) = kv.map_err(storage)?;
                dec("executions", &v)
            })
            .collect()
    }

    fn execution(&self, key: &str) -> Result<Option<Execution>, StoreError> {
        self.executions
            .get(key.as_bytes())
            .map_err(storage)?
            .map(|v| dec("executions", &v))
            .transpose()
    }

    fn recover(&self, now: DateTime<Utc>) -> Result<Recovery, StoreError> {
        let mut interrupted = Vec::new();
        let mut queued = Vec::new();
        for kv in self.executions.iter() {
            let (k, v) = kv.map_err(storage)?;
            let mut x: Execution = dec("executions", &v)?;
            if x.status == ExecutionStatus::Queued {
                queued.push(x.clone());
            }
            if x.status == ExecutionStatus::Started {
                x.status = ExecutionStatus::Interrupted;
                x.updated_at = now;
                self.executions.insert(k, enc(&x)).map_err(storage)?;
                interrupted.push(x);
            }
        }
        if !interrupted.is_empty() {
            self.flush()?;
        }
        Ok(Recovery {
            incidents: self.incidents.len(),
            outbox_pending: self.outbox.len(),
            timers: self.timers.len(),
            interrupted,
            queued,
        })
    }
}

#[cfg(test)]
mod tests;
