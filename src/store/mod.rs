//! The sled implementation of [`Store`]. Everything a group commit writes lives in one tree,
//! `state`, in key spaces told apart by a one-byte tag (incidents, timeline events, open
//! fingerprints, outbox, timers, executions, history, counters): a group commit is then one
//! atomic `apply_batch`, which costs a fraction of a multi-tree transaction, and is made durable
//! by one `flush` (fsync) before anyone is answered. Threads and dead letters, written by the
//! outbox alone, have trees of their own; `meta` holds the schema version.
//!
//! Keys are big-endian integers so sled's byte order is numeric order: incidents iterate by id,
//! timeline events by (incident, seq), outbox entries by (sink, seq).
//!
//! A sled insert costs about the same whatever its size (a leaf is copied, and split every few
//! inserts), so a group commit writes per-key records only for incidents, executions, history
//! and counters. The rest is written as a few *per-commit records* of at most [`RECORD_BYTES`]
//! each, in the order made, and folded into per-key records when the writer has nothing else
//! to do ([`Store::fold`]):
//! - *deltas* (`d`): changes of open fingerprints and armed timers. Both are read only when the
//!   store is opened (the writer keeps them in memory); reading replays the deltas left over the
//!   per-key state.
//! - *outbox chunks* (`q`): new outbox entries, all sinks together. The outbox reads the per-key
//!   entries (`o`), then the chunks; an entry delivered while still in a chunk gets a *done
//!   marker* (`k`), which the fold consumes instead of moving the entry.
//! - *event chunks* (`v`): new timeline events. An index in memory (rebuilt on open) lists the
//!   chunks that hold events of each incident; a timeline is its per-key events (`e`), then
//!   those.
//!
//! An alert storm thus pays for one key per new incident (the incident) and the quiet after it
//! for the rest. Records stay small because sled writes a leaf (up to 16 records) over 128 KiB
//! as a separate blob file, which costs a file per write and which sled never fsyncs.
//!
//! Schema 1 (one tree per kind of record) is migrated on open; schemas 2 (no deltas), 3 (no
//! outbox chunks) and 4 (no event chunks) need no change, only the version, which keeps an
//! older build from reading a store with records it would ignore.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sled::{Batch, IVec, Tree};

pub mod export;
pub mod lease;
pub mod manifest;
pub mod pg;
#[doc(hidden)]
pub mod pgtest;

use manifest::{Manifest, Marks};

use crate::dense::DenseMap;
use crate::domain::incident::{Incident, IncidentId, PastIncident, TimelineEvent};
use crate::ports::{
    Execution, ExecutionStatus, IncidentFilter, OutboxEntry, Recovery, Store, StoreError,
    ThreadRef, Timer, WriteSet,
};

/// Bumped when the on-disk layout changes incompatibly.
pub const SCHEMA_VERSION: u64 = 5;

/// The size a per-commit record is cut at (it may exceed it by one item). Sixteen of them (a
/// full sled leaf) stay under the 128 KiB beyond which sled writes the leaf as a blob file.
pub const RECORD_BYTES: usize = 6 * 1024;

/// Changes of open fingerprints and armed timers, in the order made (part of a group commit).
#[derive(Default, Serialize, Deserialize)]
struct Delta {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    f: Vec<(String, Option<IncidentId>)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    t: Vec<(IncidentId, Vec<Timer>)>,
}

/// New outbox entries in sequence order (part of a group commit), all sinks together.
#[derive(Default, Serialize, Deserialize)]
struct Chunk {
    o: Vec<OutboxEntry>,
}

/// New timeline events (part of a group commit): (incident, sequence number, event).
#[derive(Default, Serialize, Deserialize)]
struct EventChunk {
    e: Vec<(IncidentId, u32, TimelineEvent)>,
}

/// Which event chunks hold events of each incident (chunk keys, ascending). During a storm there
/// is an entry per new incident, and nearly all have their events in one chunk: that first key
/// sits in place by incident id (8 bytes, see [`DenseMap`]), and only incidents with events in
/// several chunks have a list.
#[derive(Default)]
struct EventIndex {
    /// The first chunk's key + 1 (so that it is never zero).
    first: DenseMap<Option<std::num::NonZeroU64>>,
    more: std::collections::HashMap<IncidentId, Vec<u64>>,
}

impl EventIndex {
    /// Notes that chunk `key` holds events of incident `id` (keys come in ascending order).
    fn add(&mut self, id: IncidentId, key: u64) {
        match self.first_key(id) {
            None => self.set_first(id, key),
            Some(k) if k == key => {}
            Some(_) => {
                let more = self.more.entry(id).or_default();
                if more.last() != Some(&key) {
                    more.push(key);
                }
            }
        }
    }

    fn first_key(&self, id: IncidentId) -> Option<u64> {
        self.first.get(id.0).copied().flatten().map(|k| k.get() - 1)
    }

    fn set_first(&mut self, id: IncidentId, key: u64) {
        self.first
            .set(id.0, std::num::NonZeroU64::new(key.wrapping_add(1)));
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// The chunks holding events of `id`, ascending.
    fn keys(&self, id: IncidentId) -> impl Iterator<Item = u64> + '_ {
        self.first_key(id)
            .into_iter()
            .chain(self.more.get(&id).into_iter().flatten().copied())
    }

    /// Chunk `key` holds no more events of `id`.
    fn remove(&mut self, id: IncidentId, key: u64) {
        if self.first_key(id) == Some(key) {
            match self.more.get_mut(&id) {
                Some(more) if !more.is_empty() => {
                    let next = more.remove(0);
                    if more.is_empty() {
                        self.more.remove(&id);
                    }
                    self.set_first(id, next);
                }
                _ => {
                    self.first.remove(id.0);
                    self.more.remove(&id);
                }
            }
        } else if let Some(more) = self.more.get_mut(&id) {
            more.retain(|k| *k != key);
            if more.is_empty() {
                self.more.remove(&id);
            }
        }
    }
}

/// Writes items as JSON records `{"<field>":[item,…],…}` (the shape of [`Delta`] and [`Chunk`]),
/// starting a new record once one reaches [`RECORD_BYTES`]. Items are serialized once, straight
/// from where they are.
#[derive(Default)]
struct Records {
    done: Vec<Vec<u8>>,
    cur: Vec<u8>,
    field: Option<&'static str>,
}

impl Records {
    /// Adds an item; returns the position of the record it went into.
    fn push<T: Serialize>(&mut self, field: &'static str, item: &T) -> usize {
        if self.cur.len() >= RECORD_BYTES {
            self.close();
        }
        if self.field == Some(field) {
            self.cur.push(b',');
        } else {
            if self.cur.is_empty() {
                self.cur.reserve(RECORD_BYTES + 512);
                self.cur.extend_from_slice(b"{\"");
            } else {
                self.cur.extend_from_slice(b"],\"");
            }
            self.cur.extend_from_slice(field.as_bytes());
            self.cur.extend_from_slice(b"\":[");
            self.field = Some(field);
        }
        serde_json::to_writer(&mut self.cur, item).expect("records serialize");
        self.done.len()
    }

    fn close(&mut self) {
        if !self.cur.is_empty() {
            self.cur.extend_from_slice(b"]}");
            self.done.push(std::mem::take(&mut self.cur));
            self.field = None;
        }
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.close();
        self.done
    }
}

impl Delta {
    fn len(&self) -> usize {
        self.f.len() + self.t.len()
    }
}

/// One kind of record inside the `state` tree: its keys start with `tag`. Keys given to and
/// returned by these methods are without the tag.
#[derive(Clone)]
struct Space {
    tree: Tree,
    tag: u8,
}

type Entry = sled::Result<(IVec, IVec)>;

impl Space {
    fn key(&self, k: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(k.len() + 1);
        v.push(self.tag);
        v.extend_from_slice(k);
        v
    }

    fn get(&self, k: impl AsRef<[u8]>) -> sled::Result<Option<IVec>> {
        self.tree.get(self.key(k.as_ref()))
    }

    fn insert(&self, k: impl AsRef<[u8]>, v: impl Into<IVec>) -> sled::Result<Option<IVec>> {
        self.tree.insert(self.key(k.as_ref()), v)
    }

    fn remove(&self, k: impl AsRef<[u8]>) -> sled::Result<Option<IVec>> {
        self.tree.remove(self.key(k.as_ref()))
    }

    fn batch_insert(&self, b: &mut Batch, k: impl AsRef<[u8]>, v: impl Into<IVec>) {
        b.insert(self.key(k.as_ref()), v);
    }

    fn batch_remove(&self, b: &mut Batch, k: impl AsRef<[u8]>) {
        b.remove(self.key(k.as_ref()));
    }

    /// Entries whose key (without the tag) starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> impl DoubleEndedIterator<Item = Entry> + use<> {
        self.tree
            .scan_prefix(self.key(prefix))
            .map(|kv| kv.map(|(k, v)| (IVec::from(&k[1..]), v)))
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = Entry> + use<> {
        self.scan_prefix(&[])
    }

    /// Entries from key `from` on (keys without the tag), in key order.
    fn iter_from(&self, from: &[u8]) -> impl DoubleEndedIterator<Item = Entry> + use<> {
        let end = [self.tag + 1];
        self.tree
            .range(self.key(from)..end.to_vec())
            .map(|kv| kv.map(|(k, v)| (IVec::from(&k[1..]), v)))
    }

    fn count(&self) -> usize {
        self.tree.scan_prefix([self.tag]).keys().count()
    }
}

/// A space of per-commit records (see the module doc), keyed by a sequence number in the
/// order written.
struct Journal {
    space: Space,
    /// The next record's key.
    next: AtomicU64,
}

impl std::ops::Deref for Journal {
    type Target = Space;
    fn deref(&self) -> &Space {
        &self.space
    }
}

impl Journal {
    fn new(space: Space) -> Journal {
        Journal {
            space,
            next: AtomicU64::new(0),
        }
    }

    /// Adds `records` to `b` under fresh keys, in order; returns the first key.
    fn append(&self, b: &mut Batch, records: Vec<Vec<u8>>) -> u64 {
        let first = self.next.fetch_add(records.len() as u64, Ordering::SeqCst);
        for (at, record) in records.into_iter().enumerate() {
            self.space
                .batch_insert(b, (first + at as u64).to_be_bytes(), record);
        }
        first
    }

    /// Decodes every record in key order (the store opening); the next key follows the last.
    fn replay<T: DeserializeOwned>(
        &self,
        what: &'static str,
        mut f: impl FnMut(u64, T) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for kv in self.space.iter() {
            let (k, v) = kv.map_err(storage)?;
            let key = be_u64(&k).ok_or_else(|| StoreError::Codec {
                tree: what,
                message: "bad record key".into(),
            })?;
            self.next.store(key + 1, Ordering::SeqCst);
            f(key, dec(what, &v)?)?;
        }
        Ok(())
    }
}

/// The key spaces of the `state` tree, and the trees of schema 1 they replace.
const SPACES: [(u8, &str); 8] = [
    (b'i', "incidents"),
    (b'e', "events"),
    (b'f', "fingerprints"),
    (b'o', "outbox"),
    (b'x', "executions"),
    (b't', "timers"),
    (b'h', "history"),
    (b'm', "meta"),
];

pub struct SledStore {
    db: sled::Db,
    incidents: Space,
    events: Space,
    fingerprints: Space,
    outbox: Space,
    executions: Space,
    timers: Space,
    history: Space,
    /// Counters (`next_id`).
    counters: Space,
    /// Fingerprint and timer changes not folded yet, a few records per group commit.
    deltas: Journal,
    /// New outbox entries not folded yet, a few records per group commit.
    chunks: Journal,
    /// Done markers of entries delivered (or dead-lettered) while still in a chunk.
    done: Space,
    /// The lowest sequence number still in a chunk (`u64::MAX`: none). Sequence numbers grow
    /// from commit to commit, so a lower one is folded (or was never stored).
    first_chunk_seq: AtomicU64,
    /// Held by whatever reads or changes chunks and done markers (the outbox workers, the
    /// fold), so that no entry is moved out of its chunk between being looked for and marked.
    /// Holds, per sink, the first chunk that may still have entries of that sink to deliver.
    outbox_lock: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// New timeline events not folded yet, a few records per group commit.
    event_chunks: Journal,
    /// Held by whatever reads or changes event chunks, so that a timeline never sees an event
    /// twice or not at all while it is folded.
    event_index: std::sync::Mutex<EventIndex>,
    /// The deltas as decoded when the store was opened, for the start-up reads
    /// (`open_fingerprints`, `timers`) that follow; dropped by the first commit or fold.
    opened_deltas: std::sync::Mutex<Option<std::sync::Arc<Vec<Delta>>>>,
    /// Changes in the delta records plus entries and events in the chunks.
    unfolded: AtomicUsize,
    state: Tree,
    dead: Tree,
    threads: Tree,
    meta: Tree,
    /// Entries in the outbox space (counting them would scan it).
    outbox_len: AtomicUsize,
    /// sled's log file. sled 0.34's `flush` only calls `sync_file_range`, which does not make
    /// the data durable against power loss; an explicit `sync_data` on the file does.
    log: std::fs::File,
    /// The highest counters ever made durable, outside sled (see [`manifest`]); `None` when
    /// the store was opened without checks (to inspect or salvage it).
    manifest: Option<Manifest>,
    /// The counters as committed (the id the next incident gets, one past the highest outbox
    /// sequence number written): what the manifest records after the next flush.
    high_id: AtomicU64,
    high_seq: AtomicU64,
    /// What the manifest said when the store was opened (zero if none, or unreadable).
    recorded: Marks,
}

/// How to get out of a damaged store (the text is shown when the store refuses to open).
pub const RECOVERY_HINT: &str = "incidentd does not start on it: it would serve incomplete data \
and give incident ids out again. See what is wrong with `incidentd store check`. To recover, \
import the latest backup into an empty store directory (`incidentd store import --from \
BACKUP.jsonl`, with [store] path or INCIDENTD_STORE_PATH naming the new directory), or salvage \
what is still readable (`incidentd store export --salvage --out rescue.jsonl`) and import that; \
imported stores continue after the highest id ever given out. See docs/backups.md.";

fn damaged(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged(format!(
        "the store at {} is damaged: {what}. {RECOVERY_HINT}",
        path.display()
    ))
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

/// Schema 1's timer key (one record per incident and kind), for tests that write schema 1.
#[cfg(test)]
fn timer_key(id: IncidentId, kind: crate::ports::TimerKind) -> Vec<u8> {
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

/// sled's page cache unless `[store] cache_mb` says otherwise. sled counts less than it
/// keeps: with 128 a storm of 370 000 new alerts peaked at 512 MB, with 16 at 348 MB (before
/// the per-incident tables were compacted); a storm of 400 000 peaks at 247–253 MB with 8
/// against 278–279 MB with 32, at 0.91–0.99× the intake speed (BENCHMARKS.md). The writer reads
/// little (repeats of large groups come from its own cache), and what sled does not keep the
/// operating system's page cache does, outside the process.
pub const DEFAULT_CACHE_MB: u64 = 8;

/// Another handle (or its background flusher) holds the store's file lock. sled reports that as
/// an `Other` error wrapping the `WouldBlock` one.
fn lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

/// sled's background flusher keeps the file lock for a moment after the last handle is
/// dropped, so a quick restart (or a test reopening the store) can find it held: wait a little.
fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(e) if lock_held(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e @ sled::Error::Corruption { .. }) => {
                return Err(damaged(path, format!("sled cannot read it ({e})")))
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
    /// Opens (or creates) the store at `path` with the default page cache
    /// ([`DEFAULT_CACHE_MB`]); see [`SledStore::open_with_cache`].
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_MB)
    }

    /// Opens (or creates) the store at `path`, checks its schema version and upgrades a store of
    /// schema 1 or 2. `cache_mb` bounds sled's page cache (with sled's own default, 1 GiB, a
    /// storm of 200 000 new incidents took the process to 1.3 GB; with 128 MiB, to 1.0 GB; both
    /// measured before transparent huge pages were turned off, which brought the latter to
    /// 0.69 GB).
    ///
    /// Refuses a damaged or partly lost store ([`StoreError::Damaged`]): counters behind the
    /// manifest, an incident missing below the id counter (or one above it), records without
    /// their schema version.
    pub fn open_with_cache(path: &Path, cache_mb: u64) -> Result<SledStore, StoreError> {
        Self::open_inner(path, cache_mb, true)
    }

    /// Opens the store without the integrity checks and without writing the manifest: to
    /// inspect or salvage a damaged store (`incidentd store check`, `store export --salvage`).
    pub fn open_unchecked(path: &Path, cache_mb: u64) -> Result<SledStore, StoreError> {
        Self::open_inner(path, cache_mb, false)
    }

    fn open_inner(path: &Path, cache_mb: u64, checked: bool) -> Result<SledStore, StoreError> {
        let db = open_db(path, cache_mb.saturating_mul(1 << 20))?;
        let tree = |n: &str| db.open_tree(n).map_err(storage);
        let state = tree("state")?;
        let space = |tag: u8| Space {
            tree: state.clone(),
            tag,
        };
        let meta = tree("meta")?;
        let mut s = SledStore {
            incidents: space(b'i'),
            events: space(b'e'),
            fingerprints: space(b'f'),
            outbox: space(b'o'),
            executions: space(b'x'),
            timers: space(b't'),
            history: space(b'h'),
            counters: space(b'm'),
            deltas: Journal::new(space(b'd')),
            chunks: Journal::new(space(b'q')),
            done: space(b'k'),
            first_chunk_seq: AtomicU64::new(u64::MAX),
            outbox_lock: Default::default(),
            event_chunks: Journal::new(space(b'v')),
            event_index: Default::default(),
            opened_deltas: Default::default(),
            unfolded: AtomicUsize::new(0),
            state,
            dead: tree("outbox_dead")?,
            threads: tree("threads")?,
            meta,
            outbox_len: AtomicUsize::new(0),
            log: std::fs::File::open(path.join("db")).map_err(|e| {
                StoreError::Storage(format!("cannot open {}/db: {e}", path.display()))
            })?,
            db,
            manifest: None,
            high_id: AtomicU64::new(0),
            high_seq: AtomicU64::new(0),
            recorded: manifest::read(path).ok().flatten().unwrap_or_default(),
        };
        match s.meta.get("schema_version").map_err(storage)? {
            // Records without a schema version: the meta tree was lost.
            None if checked && !s.state.is_empty() => {
                return Err(damaged(
                    path,
                    "it holds records but no schema version (its meta tree is lost)",
                ))
            }
            None => {
                if checked {
                    s.set_schema_version()?;
                }
            }
            Some(v) if be_u64(&v) == Some(SCHEMA_VERSION) => {}
            Some(v) if be_u64(&v) == Some(1) => s.migrate_from_1()?,
            // Schema 2 is schema 5 without per-commit records, schema 3 with deltas only,
            // schema 4 without event chunks.
            Some(v) if matches!(be_u64(&v), Some(2..=4)) => s.set_schema_version()?,
            Some(v) => {
                return Err(StoreError::Storage(format!(
                    "{} has schema version {:?}; this build reads version {SCHEMA_VERSION}",
                    path.display(),
                    be_u64(&v)
                )))
            }
        }
        // Trees of schema 1 left by a migration that stopped after switching the version.
        for (_, name) in SPACES {
            if name != "meta" && s.db.tree_names().iter().any(|n| n == name.as_bytes()) {
                s.db.drop_tree(name).map_err(storage)?;
            }
        }
        let mut unfolded = 0;
        let mut deltas = Vec::new();
        s.deltas.replay("deltas", |_, d: Delta| {
            unfolded += d.len();
            deltas.push(d);
            Ok(())
        })?;
        *s.opened_deltas.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::sync::Arc::new(deltas));
        let mut queued = s.outbox.count();
        s.chunks.replay("outbox", |_, chunk: Chunk| {
            unfolded += chunk.o.len();
            for e in &chunk.o {
                s.first_chunk_seq.fetch_min(e.seq, Ordering::SeqCst);
                let key = outbox_key(&e.sink, e.seq);
                if s.done.get(key).map_err(storage)?.is_none() {
                    queued += 1;
                }
            }
            Ok(())
        })?;
        s.outbox_len.store(queued, Ordering::SeqCst);
        let mut index = EventIndex::default();
        s.event_chunks.replay("events", |key, chunk: EventChunk| {
            unfolded += chunk.e.len();
            for (id, _, _) in &chunk.e {
                index.add(*id, key);
            }
            Ok(())
        })?;
        *s.event_index.lock().unwrap_or_else(|e| e.into_inner()) = index;
        s.unfolded.store(unfolded, Ordering::SeqCst);
        let marks = Marks {
            next_id: s.next_incident_id()?,
            next_seq: s.db.generate_id().map_err(storage)?,
        };
        s.high_id.store(marks.next_id, Ordering::SeqCst);
        s.high_seq.store(marks.next_seq, Ordering::SeqCst);
        if checked {
            let recorded = s.verify(path, marks)?;
            let m = Manifest::open(
                path,
                Marks {
                    next_id: marks.next_id.max(recorded.next_id),
                    next_seq: marks.next_seq.max(recorded.next_seq),
                },
            )
            .map_err(|e| {
                StoreError::Storage(format!(
                    "cannot write {}: {e}",
                    manifest::path(path).display()
                ))
            })?;
            s.manifest = Some(m);
        }
        Ok(s)
    }

    /// The start-up checks: the manifest's counters are not ahead of the store's, and the
    /// incidents are exactly ids 1 to the counter (keys only: sled checksums what it reads).
    /// Returns what the manifest recorded.
    fn verify(&self, path: &Path, marks: Marks) -> Result<Marks, StoreError> {
        let recorded = manifest::read(path).map_err(|e| damaged(path, e))?;
        if let Some(m) = recorded {
            if m.next_id > marks.next_id {
                return Err(damaged(
                    path,
                    format!(
                        "incidents up to INC-{} were stored, but its id counter is back at {} \
                         (incidents were lost)",
                        m.next_id - 1,
                        marks.next_id
                    ),
                ));
            }
            if m.next_seq > marks.next_seq {
                return Err(damaged(
                    path,
                    format!(
                        "its outbox sequence is back at {} from {} (records were lost)",
                        marks.next_seq, m.next_seq
                    ),
                ));
            }
        }
        let mut expect = 1u64;
        for k in self.state.scan_prefix([b'i']).keys() {
            let k = k.map_err(|e| damaged(path, format!("reading its incidents failed: {e}")))?;
            let id =
                be_u64(&k[1..]).ok_or_else(|| damaged(path, "an incident key is malformed"))?;
            if id != expect {
                return Err(damaged(
                    path,
                    format!("INC-{expect} is missing (the next stored incident is INC-{id})"),
                ));
            }
            expect += 1;
        }
        if expect != marks.next_id {
            return Err(damaged(
                path,
                format!(
                    "it holds INC-1 to INC-{} but its id counter says {}",
                    expect - 1,
                    marks.next_id
                ),
            ));
        }
        Ok(recorded.unwrap_or_default())
    }

    /// The counters a flush started now makes durable.
    fn marks(&self) -> Marks {
        Marks {
            next_id: self.high_id.load(Ordering::SeqCst),
            next_seq: self.high_seq.load(Ordering::SeqCst),
        }
    }

    /// The delta records in commit order (decoded once for all start-up reads).
    fn deltas(&self) -> Result<std::sync::Arc<Vec<Delta>>, StoreError> {
        if let Some(d) = &*self.opened_deltas.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(d.clone());
        }
        self.deltas
            .iter()
            .map(|kv| {
                let (_, v) = kv.map_err(storage)?;
                dec("deltas", &v)
            })
            .collect::<Result<Vec<Delta>, StoreError>>()
            .map(std::sync::Arc::new)
    }

    /// The deltas change: the copy decoded at open is stale.
    fn forget_opened_deltas(&self) {
        self.opened_deltas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    fn set_schema_version(&self) -> Result<(), StoreError> {
        self.meta
            .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
            .map_err(storage)?;
        self.flush()
    }

    /// Schema 1 had one tree per kind of record: copy each into its key space (the same keys),
    /// sync, then switch the version. Copying again after a crash is harmless.
    fn migrate_from_1(&self) -> Result<(), StoreError> {
        for (tag, name) in SPACES {
            let old = self.db.open_tree(name).map_err(storage)?;
            let mut b = Batch::default();
            if name == "timers" {
                // Schema 1: one record per (incident, kind); schema 2: one list per incident.
                let mut per: std::collections::BTreeMap<IncidentId, Vec<Timer>> =
                    Default::default();
                for kv in old.iter() {
                    let (_, v) = kv.map_err(storage)?;
                    let t: Timer = dec("timers", &v)?;
                    per.entry(t.incident).or_default().push(t);
                }
                for (id, timers) in per {
                    self.timers.batch_insert(&mut b, id_key(id), enc(&timers));
                }
                self.state.apply_batch(b).map_err(storage)?;
                continue;
            }
            for kv in old.iter() {
                let (k, v) = kv.map_err(storage)?;
                if name == "meta" && &*k == b"schema_version" {
                    continue;
                }
                let mut key = vec![tag];
                key.extend_from_slice(&k);
                b.insert(key, v);
            }
            self.state.apply_batch(b).map_err(storage)?;
        }
        self.flush()?;
        self.meta.remove("next_id").map_err(storage)?;
        self.set_schema_version()
    }

    /// Takes a delivered (or dead-lettered) entry off the queue: deletes its record, or marks
    /// it done while it is in a chunk. Doing it twice (a redelivery) counts once.
    fn remove_outbox(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        let key = outbox_key(&entry.sink, entry.seq);
        let _chunks = self.outbox_lock.lock().unwrap_or_else(|e| e.into_inner());
        let removed = if self.outbox.remove(&key).map_err(storage)?.is_some() {
            true
        } else if entry.seq >= self.first_chunk_seq.load(Ordering::SeqCst) {
            self.done.insert(&key, &[]).map_err(storage)?.is_none()
        } else {
            false
        };
        if removed {
            let _ = self
                .outbox_len
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
        Ok(())
    }

    /// Folds up to `budget` outbox entries out of the oldest chunks: each becomes a per-key
    /// entry, or, if marked done, is dropped with its marker. One atomic batch, like a delta
    /// fold step; a chunk folded in part is rewritten with what is left.
    fn fold_chunks(&self, budget: usize) -> Result<usize, StoreError> {
        let _chunks = self.outbox_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut moved = 0;
        let mut first_left = u64::MAX;
        let mut b = Batch::default();
        for kv in self.chunks.iter() {
            let (k, v) = kv.map_err(storage)?;
            let mut c: Chunk = dec("outbox", &v)?;
            if moved >= budget {
                first_left = c.o.first().map_or(u64::MAX, |e| e.seq);
                break;
            }
            let take = c.o.len().min(budget - moved);
            for e in c.o.drain(..take) {
                let key = outbox_key(&e.sink, e.seq);
                if self.done.get(&key).map_err(storage)?.is_some() {
                    self.done.batch_remove(&mut b, &key);
                } else {
                    self.outbox.batch_insert(&mut b, &key, enc(&e));
                }
            }
            moved += take;
            if c.o.is_empty() {
                self.chunks.batch_remove(&mut b, &k);
            } else {
                first_left = c.o.first().map_or(u64::MAX, |e| e.seq);
                self.chunks.batch_insert(&mut b, &k, enc(&c));
                break;
            }
        }
        if first_left == u64::MAX {
            // No chunk left: markers of entries that were never in one go too.
            for kv in self.done.iter() {
                let (k, _) = kv.map_err(storage)?;
                self.done.batch_remove(&mut b, &k);
            }
        }
        self.state.apply_batch(b).map_err(storage)?;
        self.first_chunk_seq.store(first_left, Ordering::SeqCst);
        self.unfolded.fetch_sub(moved, Ordering::SeqCst);
        Ok(moved)
    }

    /// Folds up to `budget` events out of the oldest event chunks into per-key events, in one
    /// atomic batch (a chunk folded in part is rewritten with what is left), and drops the
    /// folded chunks from the index.
    fn fold_events(&self, budget: usize) -> Result<usize, StoreError> {
        let mut index = self.event_index.lock().unwrap_or_else(|e| e.into_inner());
        let mut moved = 0;
        let mut b = Batch::default();
        // (chunk key, incidents whose events all left it)
        let mut emptied: Vec<(u64, Vec<IncidentId>)> = Vec::new();
        for kv in self.event_chunks.iter() {
            if moved >= budget {
                break;
            }
            let (k, v) = kv.map_err(storage)?;
            let key = be_u64(&k).unwrap_or(u64::MAX);
            let mut c: EventChunk = dec("events", &v)?;
            let take = c.e.len().min(budget - moved);
            let mut gone: Vec<IncidentId> = Vec::new();
            for (id, seq, ev) in c.e.drain(..take) {
                self.events
                    .batch_insert(&mut b, event_key(id, seq), enc(&ev));
                gone.push(id);
            }
            moved += take;
            gone.sort_unstable();
            gone.dedup();
            gone.retain(|id| !c.e.iter().any(|(left, _, _)| left == id));
            emptied.push((key, gone));
            if c.e.is_empty() {
                self.event_chunks.batch_remove(&mut b, &k);
            } else {
                self.event_chunks.batch_insert(&mut b, &k, enc(&c));
            }
        }
        if moved == 0 {
            return Ok(0);
        }
        self.state.apply_batch(b).map_err(storage)?;
        for (key, ids) in emptied {
            for id in ids {
                index.remove(id, key);
            }
        }
        self.unfolded.fetch_sub(moved, Ordering::SeqCst);
        Ok(moved)
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

    fn for_each_incident(&self, f: &mut dyn FnMut(Incident) -> bool) -> Result<(), StoreError> {
        for kv in self.incidents.iter() {
            let (_, v) = kv.map_err(storage)?;
            if !f(dec("incidents", &v)?) {
                break;
            }
        }
        Ok(())
    }

    fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEvent>, StoreError> {
        let index = self.event_index.lock().unwrap_or_else(|e| e.into_inner());
        // Per-key events first: they were folded from older chunks.
        let mut events = self
            .events
            .scan_prefix(&id_key(id))
            .map(|kv| {
                let (_, v) = kv.map_err(storage)?;
                dec("events", &v)
            })
            .collect::<Result<Vec<TimelineEvent>, StoreError>>()?;
        let mut unfolded: Vec<(u32, TimelineEvent)> = Vec::new();
        for key in index.keys(id) {
            // A chunk the index names before its commit is applied is not there yet.
            let Some(v) = self.event_chunks.get(key.to_be_bytes()).map_err(storage)? else {
                continue;
            };
            let chunk: EventChunk = dec("events", &v)?;
            unfolded.extend(
                chunk
                    .e
                    .into_iter()
                    .filter(|(of, _, _)| *of == id)
                    .map(|(_, seq, ev)| (seq, ev)),
            );
        }
        unfolded.sort_by_key(|(seq, _)| *seq);
        events.extend(unfolded.into_iter().map(|(_, ev)| ev));
        Ok(events)
    }

    fn next_incident_id(&self) -> Result<u64, StoreError> {
        Ok(self
            .counters
            .get("next_id")
            .map_err(storage)?
            .and_then(|v| be_u64(&v))
            .unwrap_or(1))
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        self.db.generate_id().map_err(storage)
    }

    fn commit(&self, w: &WriteSet) -> Result<(), StoreError> {
        // One atomic batch on one tree: all of it or, after a crash, none of it.
        let mut b = Batch::default();
        for inc in &w.incidents {
            self.incidents
                .batch_insert(&mut b, id_key(inc.id), enc(inc));
        }
        // Timeline events: per-commit records, named in the index before they are written (a
        // reader finds a missing chunk empty; a failed commit leaves only such names).
        let mut chunks = Records::default();
        let placed: Vec<(IncidentId, usize)> = w
            .events
            .iter()
            .map(|e| (e.0, chunks.push("e", e)))
            .collect();
        let records = chunks.finish();
        if !records.is_empty() {
            let first = self.event_chunks.append(&mut b, records);
            let mut index = self.event_index.lock().unwrap_or_else(|e| e.into_inner());
            for (id, at) in placed {
                index.add(id, first + at as u64);
            }
        }
        // Outbox entries, fingerprints and timers: per-commit records (see the module doc).
        // The timers are each incident's whole set: an empty one means none are armed.
        let mut outbox: Vec<&OutboxEntry> = w.outbox.iter().collect();
        outbox.sort_by_key(|e| e.seq);
        let mut chunks = Records::default();
        for e in &outbox {
            chunks.push("o", e);
        }
        self.chunks.append(&mut b, chunks.finish());
        let mut deltas = Records::default();
        if !w.fingerprints.is_empty() || !w.timers.is_empty() {
            self.forget_opened_deltas();
        }
        for f in &w.fingerprints {
            deltas.push("f", f);
        }
        for t in &w.timers {
            deltas.push("t", t);
        }
        self.deltas.append(&mut b, deltas.finish());
        for x in &w.executions {
            self.executions
                .batch_insert(&mut b, x.key.as_bytes(), enc(x));
        }
        for (fp, past) in &w.history {
            let mut k = sink_prefix(fp);
            k.extend_from_slice(&id_key(past.id));
            self.history.batch_insert(&mut b, k, enc(past));
        }
        if let Some(n) = w.next_id {
            self.counters
                .batch_insert(&mut b, "next_id", &n.to_be_bytes());
        }
        self.state.apply_batch(b).map_err(storage)?;
        if let Some(n) = w.next_id {
            self.high_id.fetch_max(n, Ordering::SeqCst);
        }
        if let Some(last) = outbox.last() {
            self.high_seq.fetch_max(last.seq + 1, Ordering::SeqCst);
        }
        // Outbox entries have fresh sequence numbers: each is a new one.
        if let Some(first) = outbox.first() {
            self.first_chunk_seq.fetch_min(first.seq, Ordering::SeqCst);
        }
        self.outbox_len.fetch_add(w.outbox.len(), Ordering::SeqCst);
        self.unfolded.fetch_add(
            w.fingerprints.len() + w.timers.len() + w.outbox.len() + w.events.len(),
            Ordering::SeqCst,
        );
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Taken before the flush: everything committed so far is made durable by it.
        let marks = self.marks();
        self.db.flush().map_err(storage)?;
        // fdatasync: what "durable before acknowledged" promises (≈ 0.1 ms more per commit).
        self.log.sync_data().map_err(storage)?;
        if let Some(m) = &self.manifest {
            // Written when a new incident was made durable, and for the outbox sequence only
            // every 65 536 numbers (a regression of the sled generator is large): one more small
            // write and fdatasync per group commit that opened incidents.
            let written = m.marks();
            if marks.next_id > written.next_id || marks.next_seq >= written.next_seq + (1 << 16) {
                m.advance(marks).map_err(storage)?;
            }
        }
        Ok(())
    }

    fn outbox_pending(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut cursors = self.outbox_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Per-key entries first: they were folded from older chunks.
        let mut out = self
            .outbox
            .scan_prefix(&sink_prefix(sink))
            .take(limit)
            .map(|kv| {
                let (_, v) = kv.map_err(storage)?;
                dec("outbox", &v)
            })
            .collect::<Result<Vec<OutboxEntry>, StoreError>>()?;
        let from = cursors.get(sink).copied().unwrap_or(0);
        // Chunks before the first with something of this sink left are skipped next time (a
        // chunk never gains entries).
        let mut skip_to = None;
        let mut clean = true;
        for kv in self.chunks.iter_from(&from.to_be_bytes()) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv.map_err(storage)?;
            let chunk: Chunk = dec("outbox", &v)?;
            for e in chunk.o {
                if out.len() >= limit {
                    break;
                }
                if e.sink != sink
                    || self
                        .done
                        .get(outbox_key(sink, e.seq))
                        .map_err(storage)?
                        .is_some()
                {
                    continue;
                }
                clean = false;
                out.push(e);
            }
            if clean {
                skip_to = be_u64(&k).map(|n| n + 1);
            }
        }
        if let Some(n) = skip_to {
            cursors.insert(sink.to_owned(), n);
        }
        Ok(out)
    }

    fn outbox_complete(
        &self,
        entry: &OutboxEntry,
        thread: Option<&ThreadRef>,
    ) -> Result<(), StoreError> {
        match thread {
            None => {
                self.remove_outbox(entry)?;
            }
            Some(t) => {
                // The thread's records first, then the entry's deletion: each write atomic on its
                // own, and no batch, because a batch takes sled's process-wide write lock. That
                // lock waits for every reader and for the writer's group commit, so during an
                // alert storm each posted card waited for a commit. A crash in between leaves the
                // entry queued: it is sent again under the same idempotency key, as after a crash
                // before the deletion. The index entries go first, so the thread record never
                // names a message the index does not know; a stale index entry still names the
                // right incident.
                let id = id_key(entry.incident);
                let idx = thread_index_key(&entry.sink, &t.channel, &t.message_id);
                // Where a thread is a channel of its own (Discord), replies name only that
                // channel: index it as (channel, channel) too, whatever message holds the card.
                let own = thread_index_key(&entry.sink, &t.channel, &t.channel);
                if own != idx {
                    self.threads.insert(own, &id).map_err(storage)?;
                }
                self.threads.insert(idx, &id).map_err(storage)?;
                self.threads
                    .insert(thread_key(&entry.sink, entry.incident), enc(t))
                    .map_err(storage)?;
                self.remove_outbox(entry)?;
            }
        }
        Ok(())
    }

    fn outbox_dead_letter(&self, entry: &OutboxEntry, error: &str) -> Result<(), StoreError> {
        let key = outbox_key(&entry.sink, entry.seq);
        let record = serde_json::json!({ "entry": entry, "error": error });
        // Kept first, then deleted: a crash in between leaves it in both, never in neither.
        self.dead
            .insert(key.as_slice(), enc(&record))
            .map_err(storage)?;
        self.remove_outbox(entry)
    }

    fn outbox_len(&self) -> usize {
        self.outbox_len.load(Ordering::SeqCst)
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
        let mut armed: BTreeMap<IncidentId, Vec<Timer>> = BTreeMap::new();
        for kv in self.timers.iter() {
            let (k, v) = kv.map_err(storage)?;
            let id = be_u64(&k)
                .map(IncidentId)
                .ok_or_else(|| StoreError::Codec {
                    tree: "timers",
                    message: "bad key".into(),
                })?;
            armed.insert(id, dec("timers", &v)?);
        }
        for d in self.deltas()?.iter() {
            for (id, timers) in &d.t {
                if timers.is_empty() {
                    armed.remove(id);
                } else {
                    armed.insert(*id, timers.clone());
                }
            }
        }
        Ok(armed.into_values().flatten().collect())
    }

    fn open_fingerprints(&self) -> Result<Vec<(String, IncidentId)>, StoreError> {
        let mut open: BTreeMap<String, IncidentId> = BTreeMap::new();
        for kv in self.fingerprints.iter() {
            let (k, v) = kv.map_err(storage)?;
            let fp = String::from_utf8(k.to_vec()).map_err(|e| StoreError::Codec {
                tree: "fingerprints",
                message: e.to_string(),
            })?;
            let id = be_u64(&v).ok_or_else(|| StoreError::Codec {
                tree: "fingerprints",
                message: format!("bad incident id for {fp}"),
            })?;
            open.insert(fp, IncidentId(id));
        }
        for d in self.deltas()?.iter() {
            for (fp, id) in &d.f {
                match id {
                    Some(id) => open.insert(fp.clone(), *id),
                    None => open.remove(fp),
                };
            }
        }
        Ok(open.into_iter().collect())
    }

    fn fold(&self, max: usize) -> Result<usize, StoreError> {
        if self.unfolded.load(Ordering::SeqCst) == 0 {
            return Ok(0);
        }
        self.forget_opened_deltas();
        // Oldest deltas first (then outbox and event chunks), each change in order, in one
        // atomic batch with the deltas' removal (or, for one folded in part, its rewrite with
        // what is left): after a crash either all of this step or none of it happened, and
        // replaying the deltas left over the per-key state gives the same answer either way.
        let budget = max.max(1);
        let mut moved = 0;
        let mut b = Batch::default();
        for kv in self.deltas.iter() {
            if moved >= budget {
                break;
            }
            let (k, v) = kv.map_err(storage)?;
            let mut d: Delta = dec("deltas", &v)?;
            let take_f = d.f.len().min(budget - moved);
            for (fp, id) in d.f.drain(..take_f) {
                match id {
                    Some(id) => self.fingerprints.batch_insert(&mut b, fp, &id_key(id)),
                    None => self.fingerprints.batch_remove(&mut b, fp),
                }
            }
            moved += take_f;
            let take_t = d.t.len().min(budget - moved);
            for (id, timers) in d.t.drain(..take_t) {
                if timers.is_empty() {
                    self.timers.batch_remove(&mut b, id_key(id));
                } else {
                    self.timers.batch_insert(&mut b, id_key(id), enc(&timers));
                }
            }
            moved += take_t;
            if d.len() == 0 {
                self.deltas.batch_remove(&mut b, &k);
            } else {
                self.deltas.batch_insert(&mut b, &k, enc(&d));
            }
        }
        if moved > 0 {
            self.state.apply_batch(b).map_err(storage)?;
            self.unfolded.fetch_sub(moved, Ordering::SeqCst);
        }
        if moved < budget && self.first_chunk_seq.load(Ordering::SeqCst) != u64::MAX {
            moved += self.fold_chunks(budget - moved)?;
        }
        if moved < budget {
            moved += self.fold_events(budget - moved)?;
        }
        Ok(moved)
    }

    fn unfolded(&self) -> usize {
        self.unfolded.load(Ordering::SeqCst)
    }

    // Chat bookmarks live in `meta` under `chat_cursor:`: a few small keys, no schema change.
    fn chat_cursor(&self, key: &str) -> Result<Option<String>, StoreError> {
        let v = self
            .meta
            .get(format!("chat_cursor:{key}"))
            .map_err(storage)?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn set_chat_cursor(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta
            .insert(format!("chat_cursor:{key}"), value.as_bytes())
            .map_err(storage)?;
        Ok(())
    }

    fn history_fingerprints(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for kv in self.history.iter() {
            // Keys are `fingerprint \0 id(8 bytes)`.
            let (k, _) = kv.map_err(storage)?;
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
            .scan_prefix(&sink_prefix(fingerprint))
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
            // Ids are given out in order and incidents are never deleted: no scan needed.
            incidents: self.next_incident_id()?.saturating_sub(1) as usize,
            outbox_pending: self.outbox_len(),
            interrupted,
            queued,
        })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod event_index_tests {
    use super::{EventIndex, IncidentId};
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Against the list-per-incident index it replaced, as the reference.
        #[test]
        fn agrees_with_a_list_per_incident(
            ops in proptest::collection::vec((0u64..6, any::<bool>(), 0u64..4), 0..120)
        ) {
            let mut ours = EventIndex::default();
            let mut reference: HashMap<IncidentId, Vec<u64>> = HashMap::new();
            let mut next_key = 0u64;
            for (id, add, pick) in ops {
                let id = IncidentId(id);
                if add {
                    // Keys come in ascending order; the same chunk may name an incident twice.
                    next_key += pick.min(1);
                    ours.add(id, next_key);
                    let keys = reference.entry(id).or_default();
                    if keys.last() != Some(&next_key) {
                        keys.push(next_key);
                    }
                } else if let Some(keys) = reference.get_mut(&id) {
                    let key = keys[(pick as usize) % keys.len()];
                    ours.remove(id, key);
                    keys.retain(|k| *k != key);
                    if keys.is_empty() {
                        reference.remove(&id);
                    }
                }
            }
            for id in 0..6 {
                let id = IncidentId(id);
                let got: Vec<u64> = ours.keys(id).collect();
                prop_assert_eq!(got, reference.get(&id).cloned().unwrap_or_default());
            }
            prop_assert_eq!(ours.first.len(), reference.len());
        }
    }
}
