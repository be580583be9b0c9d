//! `incidentd store export` / `store import`: everything a store holds as JSON lines, in a
//! format that names no storage engine, so a backup can be restored into a fresh sled store
//! (or, later, another [`Store`] implementation).
//!
//! ```text
//! {"format":"incidentd-store","version":1,"next_id":21,"next_seq":4711,"exported_at":"…"}
//! {"incident":{…}}                       one per incident, in id order
//! {"event":{"incident":3,"seq":0,"event":{…}}}   timeline events, in order
//! {"fingerprint":["<fingerprint>",3]}     open incidents by fingerprint
//! {"timers":[3,[{…}]]}                    armed timers per incident
//! {"execution":{…}}                      remediation runs
//! {"history":["<fingerprint>",{…}]}       resolved incidents per fingerprint (recurrence)
//! {"outbox":{…}}                         chat messages not delivered yet
//! {"thread":{"sink":"slack","incident":3,"thread":{…}}}   where each incident's thread is
//! {"dead_letter":{…}}                    messages a platform refused for good
//! {"end":{"records":123}}                the count of records above: a cut file is refused
//! ```
//!
//! `next_id` and `next_seq` are at least the highest ever given out (the manifest's marks
//! included), so an imported store never gives an id or an idempotency key out again, even when
//! the export salvaged a damaged store.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{be_u64, dec, storage, Chunk, SledStore};
use crate::domain::incident::{Incident, IncidentId, PastIncident, TimelineEvent};
use crate::ports::{Execution, OutboxEntry, Store, StoreError, ThreadRef, Timer, WriteSet};

/// The export format's name and version (the first line of every export).
pub const FORMAT: &str = "incidentd-store";
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub next_id: u64,
    pub next_seq: u64,
    pub exported_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EventRecord {
    pub incident: IncidentId,
    pub seq: u32,
    pub event: TimelineEvent,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub sink: String,
    pub incident: IncidentId,
    pub thread: ThreadRef,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct End {
    pub records: u64,
}

/// One line after the header.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    Incident(Box<Incident>),
    Event(Box<EventRecord>),
    Fingerprint(String, IncidentId),
    Timers(IncidentId, Vec<Timer>),
    Execution(Execution),
    History(String, Box<PastIncident>),
    Outbox(Box<OutboxEntry>),
    Thread(ThreadRecord),
    DeadLetter(serde_json::Value),
    End(End),
}

/// What an export or import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub incidents: u64,
    pub records: u64,
    /// Records that could not be read and were left out (salvage only).
    pub skipped: Vec<String>,
    pub next_id: u64,
}

/// What export and import need of a store beyond [`Store`]: every record of the kinds the
/// store's readers only ask for by key, and a way to write what `commit` does not. Both
/// backends implement it, so an export of one imports into the other.
pub trait Portable: Store {
    /// Every incident, in id order. With `salvage`, unreadable records are listed in `skipped`
    /// instead of failing.
    fn export_incidents(
        &self,
        salvage: bool,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<Incident>, StoreError> {
        let _ = (salvage, skipped);
        let mut out = Vec::new();
        self.for_each_incident(&mut |i| {
            out.push(i);
            true
        })?;
        out.sort_by_key(|i| i.id);
        Ok(out)
    }
    /// Every execution, in key order (`salvage` as for incidents).
    fn export_executions(
        &self,
        salvage: bool,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<Execution>, StoreError>;
    /// Every dead letter as kept (`{"entry": …, "error": …}`), `salvage` as for incidents.
    fn export_dead_letters(
        &self,
        salvage: bool,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<serde_json::Value>, StoreError>;
    /// Every queued outbox entry, all sinks, in sequence order.
    fn all_outbox(&self) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Every incident's thread on every sink.
    fn all_threads(&self) -> Result<Vec<ThreadRecord>, StoreError>;
    /// Records where an incident's thread is (as a delivered card does).
    fn put_thread(&self, sink: &str, id: IncidentId, t: &ThreadRef) -> Result<(), StoreError>;
    /// Keeps a dead letter as exported.
    fn put_dead_letter(&self, record: &serde_json::Value) -> Result<(), StoreError>;
    /// Nothing stored yet (an import's target must be empty).
    fn is_empty(&self) -> Result<bool, StoreError>;
    /// Makes the outbox sequence continue at or after `next`.
    fn ensure_next_seq(&self, next: u64) -> Result<(), StoreError>;
    /// The highest counters ever given out, where the store records them apart from its
    /// records (sled's manifest); zero otherwise.
    fn given_out(&self) -> super::Marks {
        super::Marks::default()
    }
}

/// Writes every record of `store` to `out`. With `salvage`, records that cannot be read are
/// left out and listed in the summary instead of failing the export.
pub fn export(
    store: &dyn Portable,
    out: &mut dyn Write,
    salvage: bool,
) -> Result<Summary, StoreError> {
    let mut sum = Summary::default();
    let io = |e: std::io::Error| StoreError::Storage(format!("cannot write the export: {e}"));
    let marks = store.given_out();
    let incidents = store.export_incidents(salvage, &mut sum.skipped)?;
    let highest = incidents.iter().map(|i| i.id.0).max().unwrap_or(0);
    let next_id = store
        .next_incident_id()
        .unwrap_or(1)
        .max(marks.next_id)
        .max(highest + 1);
    let next_seq = store.next_seq()?.max(marks.next_seq);
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        next_id,
        next_seq,
        exported_at: chrono::Utc::now().to_rfc3339(),
    };
    serde_json::to_writer(&mut *out, &header).map_err(|e| io(e.into()))?;
    out.write_all(b"\n").map_err(io)?;
    let mut line = |r: &Record, sum: &mut Summary| -> Result<(), StoreError> {
        serde_json::to_writer(&mut *out, r).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
        sum.records += 1;
        Ok(())
    };
    macro_rules! salvaged {
        ($what:expr, $e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) if salvage => {
                    sum.skipped.push(format!("{}: {e}", $what));
                    Default::default()
                }
                Err(e) => return Err(e),
            }
        };
    }
    for inc in incidents {
        let id = inc.id;
        line(&Record::Incident(Box::new(inc)), &mut sum)?;
        sum.incidents += 1;
        let events: Vec<TimelineEvent> = salvaged!(format!("{id}'s timeline"), store.timeline(id));
        for (seq, event) in events.into_iter().enumerate() {
            let seq = seq as u32;
            line(
                &Record::Event(Box::new(EventRecord {
                    incident: id,
                    seq,
                    event,
                })),
                &mut sum,
            )?;
        }
    }
    let open: Vec<(String, IncidentId)> =
        salvaged!("the open fingerprints", store.open_fingerprints());
    for (fp, id) in open {
        line(&Record::Fingerprint(fp, id), &mut sum)?;
    }
    let timers: Vec<Timer> = salvaged!("the timers", store.timers());
    let mut per: BTreeMap<IncidentId, Vec<Timer>> = BTreeMap::new();
    for t in timers {
        per.entry(t.incident).or_default().push(t);
    }
    for (id, t) in per {
        line(&Record::Timers(id, t), &mut sum)?;
    }
    let mut skipped = Vec::new();
    let executions = store.export_executions(salvage, &mut skipped)?;
    sum.skipped.append(&mut skipped);
    for x in executions {
        line(&Record::Execution(x), &mut sum)?;
    }
    let fps: Vec<String> = salvaged!("the history", store.history_fingerprints());
    for fp in fps {
        let past: Vec<PastIncident> = salvaged!(format!("history of {fp}"), store.history(&fp));
        for p in past {
            line(&Record::History(fp.clone(), Box::new(p)), &mut sum)?;
        }
    }
    let outbox: Vec<OutboxEntry> = salvaged!("the outbox", store.all_outbox());
    for e in outbox {
        line(&Record::Outbox(Box::new(e)), &mut sum)?;
    }
    let threads: Vec<ThreadRecord> = salvaged!("the threads", store.all_threads());
    for t in threads {
        line(&Record::Thread(t), &mut sum)?;
    }
    let mut skipped = Vec::new();
    let dead = store.export_dead_letters(salvage, &mut skipped)?;
    sum.skipped.append(&mut skipped);
    for v in dead {
        line(&Record::DeadLetter(v), &mut sum)?;
    }
    let end = Record::End(End {
        records: sum.records,
    });
    serde_json::to_writer(&mut *out, &end).map_err(|e| io(e.into()))?;
    out.write_all(b"\n").map_err(io)?;
    out.flush().map_err(io)?;
    sum.next_id = next_id;
    Ok(sum)
}

/// How many records one import commit takes.
const IMPORT_BATCH: usize = 2048;

/// Reads an export into `store`, which must be empty. Refuses a file of another format or
/// version, a malformed line, and a file cut short (no `end` record, or a wrong count).
pub fn import(store: &dyn Portable, input: &mut dyn BufRead) -> Result<Summary, StoreError> {
    let bad = |n: usize, e: &dyn std::fmt::Display| {
        StoreError::Storage(format!("line {n} of the export: {e}"))
    };
    if store.next_incident_id()? != 1 || !store.is_empty()? {
        return Err(StoreError::Storage(
            "the store to import into is not empty: import into a new, empty directory".into(),
        ));
    }
    let mut lines = input.lines().enumerate();
    let header: Header = match lines.next() {
        Some((_, Ok(l))) => serde_json::from_str(&l).map_err(|e| bad(1, &e))?,
        Some((_, Err(e))) => return Err(bad(1, &e)),
        None => return Err(StoreError::Storage("the export is empty".into())),
    };
    if header.format != FORMAT || header.version != VERSION {
        return Err(StoreError::Storage(format!(
            "not an export this build reads: format {:?} version {} (expected {FORMAT:?} version {VERSION})",
            header.format, header.version
        )));
    }
    let mut sum = Summary::default();
    let mut w = WriteSet::default();
    let mut pending = 0usize;
    let mut ended = None;
    for (n, l) in lines {
        let n = n + 1;
        let l = l.map_err(|e| bad(n, &e))?;
        if ended.is_some() {
            if l.trim().is_empty() {
                continue;
            }
            return Err(bad(n, &"records after the end record"));
        }
        let r: Record = serde_json::from_str(&l).map_err(|e| bad(n, &e))?;
        match r {
            Record::Incident(inc) => {
                sum.incidents += 1;
                w.incidents.push(*inc);
            }
            Record::Event(e) => w.events.push((e.incident, e.seq, e.event)),
            Record::Fingerprint(fp, id) => w.fingerprints.push((fp, Some(id))),
            Record::Timers(id, t) => w.timers.push((id, t)),
            Record::Execution(x) => w.executions.push(x),
            Record::History(fp, p) => w.history.push((fp, *p)),
            Record::Outbox(e) => w.outbox.push(*e),
            Record::Thread(t) => store.put_thread(&t.sink, t.incident, &t.thread)?,
            Record::DeadLetter(v) => store.put_dead_letter(&v)?,
            Record::End(end) => {
                ended = Some(end.records);
                continue;
            }
        }
        sum.records += 1;
        pending += 1;
        if pending >= IMPORT_BATCH {
            store.commit(&std::mem::take(&mut w))?;
            pending = 0;
        }
    }
    match ended {
        Some(count) if count == sum.records => {}
        Some(count) => {
            return Err(StoreError::Storage(format!(
                "the export says {count} records but holds {}",
                sum.records
            )))
        }
        None => {
            return Err(StoreError::Storage(
                "the export is cut short (no end record)".into(),
            ))
        }
    }
    // Ids and sequence numbers continue after the highest ever given out.
    w.next_id = Some(header.next_id);
    store.commit(&w)?;
    store.ensure_next_seq(header.next_seq)?;
    store.flush()?;
    sum.next_id = header.next_id;
    Ok(sum)
}

impl SledStore {
    /// The highest counters the manifest recorded (when the store was opened, or since).
    pub fn manifest_marks(&self) -> super::Marks {
        let now = self
            .manifest
            .as_ref()
            .map(|m| m.marks())
            .unwrap_or_default();
        super::Marks {
            next_id: now.next_id.max(self.recorded.next_id),
            next_seq: now.next_seq.max(self.recorded.next_seq),
        }
    }
}

/// Reads every value of a sled key space, listing unreadable ones in `skipped` (salvage).
fn salvage_all<T: serde::de::DeserializeOwned>(
    iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    tree: &'static str,
    what: &str,
    salvage: bool,
    skipped: &mut Vec<String>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for kv in iter {
        match kv.map_err(storage).and_then(|(_, v)| dec::<T>(tree, &v)) {
            Ok(v) => out.push(v),
            Err(e) if salvage => skipped.push(format!("{what}: {e}")),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

impl Portable for SledStore {
    fn export_incidents(
        &self,
        salvage: bool,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<Incident>, StoreError> {
        salvage_all(
            self.incidents.iter(),
            "incidents",
            "an incident",
            salvage,
            skipped,
        )
    }

    fn export_executions(
        &self,
        salvage: bool,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<Execution>, StoreError> {
        salvage_all(
            self.executions.iter(),
            "executions",
            "an execution",
            salvage,
            skipped,
        )
    }

    fn export_dead_letters(
        &self,
        salvage: bool,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        salvage_all(
            self.dead.iter(),
            "outbox_dead",
            "a dead letter",
            salvage,
            skipped,
        )
    }

    fn all_outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let _chunks = self.outbox_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for kv in self.outbox.iter() {
            let (_, v) = kv.map_err(storage)?;
            out.push(dec::<OutboxEntry>("outbox", &v)?);
        }
        for kv in self.chunks.iter() {
            let (_, v) = kv.map_err(storage)?;
            let chunk: Chunk = dec("outbox", &v)?;
            for e in chunk.o {
                if self
                    .done
                    .get(super::outbox_key(&e.sink, e.seq))
                    .map_err(storage)?
                    .is_none()
                {
                    out.push(e);
                }
            }
        }
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    fn all_threads(&self) -> Result<Vec<ThreadRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.threads.scan_prefix(b"i\0") {
            let (k, v) = kv.map_err(storage)?;
            let rest = &k[2..];
            let bad = || StoreError::Codec {
                tree: "threads",
                message: "bad key".into(),
            };
            let at = rest.iter().position(|b| *b == 0).ok_or_else(bad)?;
            let sink = std::str::from_utf8(&rest[..at]).map_err(|_| bad())?;
            let id = be_u64(&rest[at + 1..]).ok_or_else(bad)?;
            out.push(ThreadRecord {
                sink: sink.to_owned(),
                incident: IncidentId(id),
                thread: dec("threads", &v)?,
            });
        }
        Ok(out)
    }

    fn put_thread(&self, sink: &str, id: IncidentId, t: &ThreadRef) -> Result<(), StoreError> {
        let key = super::id_key(id);
        let idx = super::thread_index_key(sink, &t.channel, &t.message_id);
        let own = super::thread_index_key(sink, &t.channel, &t.channel);
        if own != idx {
            self.threads.insert(own, &key).map_err(storage)?;
        }
        self.threads.insert(idx, &key).map_err(storage)?;
        self.threads
            .insert(super::thread_key(sink, id), super::enc(t))
            .map_err(storage)?;
        Ok(())
    }

    fn put_dead_letter(&self, record: &serde_json::Value) -> Result<(), StoreError> {
        let entry: OutboxEntry =
            serde_json::from_value(record["entry"].clone()).map_err(|e| StoreError::Codec {
                tree: "outbox_dead",
                message: e.to_string(),
            })?;
        self.dead
            .insert(
                super::outbox_key(&entry.sink, entry.seq),
                super::enc(record),
            )
            .map_err(storage)?;
        Ok(())
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.state.is_empty() && self.threads.is_empty() && self.dead.is_empty())
    }

    fn ensure_next_seq(&self, next: u64) -> Result<(), StoreError> {
        while self.db.generate_id().map_err(storage)? < next {}
        self.high_seq.fetch_max(next, Ordering::SeqCst);
        Ok(())
    }

    fn given_out(&self) -> super::Marks {
        self.manifest_marks()
    }
}

/// What `incidentd store check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub incidents: u64,
    pub events: u64,
    pub next_id: u64,
    /// Everything wrong, one line each; empty when the store is sound.
    pub problems: Vec<String>,
}

/// Reads every record of the store at `path` (opened without the start-up checks, so a damaged
/// store can be examined): the start-up checks, then every incident, timeline, execution,
/// outbox entry and thread decoded.
pub fn check(path: &std::path::Path, cache_mb: u64) -> Result<CheckReport, StoreError> {
    let mut r = CheckReport::default();
    let store = match SledStore::open_unchecked(path, cache_mb) {
        Ok(s) => s,
        Err(e @ StoreError::Damaged(_)) => {
            r.problems.push(e.to_string());
            return Ok(r);
        }
        Err(e) => return Err(e),
    };
    let marks = super::Marks {
        next_id: store.next_incident_id()?,
        next_seq: store.next_seq()?,
    };
    r.next_id = marks.next_id;
    if store.meta.get("schema_version").map_err(storage)?.is_none() && !store.state.is_empty() {
        r.problems
            .push("records but no schema version (the meta tree is lost)".into());
    }
    if let Err(StoreError::Damaged(e)) = store.verify(path, marks) {
        // The first line: what is wrong (the rest is the recovery hint, printed once).
        r.problems.push(
            e.split(". incidentd does not start")
                .next()
                .unwrap_or(&e)
                .into(),
        );
    }
    for kv in store.incidents.iter() {
        match kv
            .map_err(storage)
            .and_then(|(_, v)| dec::<Incident>("incidents", &v))
        {
            Ok(inc) => {
                r.incidents += 1;
                match store.timeline(inc.id) {
                    Ok(t) => {
                        if t.len() as u64 != u64::from(inc.timeline_len) {
                            r.problems.push(format!(
                                "{} has {} timeline events, its record says {}",
                                inc.id,
                                t.len(),
                                inc.timeline_len
                            ));
                        }
                        r.events += t.len() as u64;
                    }
                    Err(e) => r.problems.push(format!("{}'s timeline: {e}", inc.id)),
                }
            }
            Err(e) => r.problems.push(format!("an incident: {e}")),
        }
    }
    for kv in store.executions.iter() {
        if let Err(e) = kv
            .map_err(storage)
            .and_then(|(_, v)| dec::<Execution>("executions", &v))
        {
            r.problems.push(format!("an execution: {e}"));
        }
    }
    for (what, res) in [
        ("the outbox", store.all_outbox().map(|_| ())),
        ("the threads", store.all_threads().map(|_| ())),
        (
            "the open fingerprints",
            store.open_fingerprints().map(|_| ()),
        ),
        ("the timers", store.timers().map(|_| ())),
    ] {
        if let Err(e) = res {
            r.problems.push(format!("{what}: {e}"));
        }
    }
    Ok(r)
}

/// `incidentd store check` for a store other than sled (PostgreSQL): every incident and
/// timeline decoded, timeline lengths as recorded, ids 1 to the counter present, and every
/// execution, outbox entry, thread, open fingerprint and timer decoded.
pub fn check_portable(store: &dyn Portable) -> Result<CheckReport, StoreError> {
    let mut r = CheckReport {
        next_id: store.next_incident_id()?,
        ..CheckReport::default()
    };
    let mut skipped = Vec::new();
    let incidents = store.export_incidents(false, &mut skipped);
    match incidents {
        Ok(incidents) => {
            for (n, inc) in incidents.iter().enumerate() {
                if inc.id.0 != n as u64 + 1 {
                    r.problems.push(format!(
                        "INC-{} is missing (the next stored is {})",
                        n + 1,
                        inc.id
                    ));
                    break;
                }
            }
            if incidents.len() as u64 + 1 != r.next_id {
                r.problems.push(format!(
                    "it holds {} incidents but its id counter says {}",
                    incidents.len(),
                    r.next_id
                ));
            }
            for inc in incidents {
                r.incidents += 1;
                match store.timeline(inc.id) {
                    Ok(t) if t.len() as u64 != u64::from(inc.timeline_len) => {
                        r.problems.push(format!(
                            "{} has {} timeline events, its record says {}",
                            inc.id,
                            t.len(),
                            inc.timeline_len
                        ))
                    }
                    Ok(t) => r.events += t.len() as u64,
                    Err(e) => r.problems.push(format!("{}'s timeline: {e}", inc.id)),
                }
            }
        }
        Err(e) => r.problems.push(format!("the incidents: {e}")),
    }
    for (what, res) in [
        (
            "the executions",
            store.export_executions(false, &mut skipped).map(|_| ()),
        ),
        ("the outbox", store.all_outbox().map(|_| ())),
        ("the threads", store.all_threads().map(|_| ())),
        (
            "the open fingerprints",
            store.open_fingerprints().map(|_| ()),
        ),
        ("the timers", store.timers().map(|_| ())),
    ] {
        if let Err(e) = res {
            r.problems.push(format!("{what}: {e}"));
        }
    }
    Ok(r)
}
