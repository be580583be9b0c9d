//! The PostgreSQL implementation of [`Store`], for replicas sharing one database
//! (docs/replicas.md). Same contract as the sled store: one group commit is one transaction,
//! applied by `commit` and made durable by `flush`, which the writer's syncer calls before
//! anyone is answered. As with sled the two overlap: `commit` returns without waiting for the
//! WAL flush (`synchronous_commit = off` on the pool's connections), so the writer prepares the
//! next group while `flush` (a one-row transaction committed with `synchronous_commit = on`,
//! which returns once the WAL is flushed past every earlier commit) makes the previous one
//! durable. Nothing is acknowledged before that flush.
//!
//! Values are the serde_json documents the sled store writes, in `text` columns; keys are real
//! columns (`COLLATE "C"` where sled orders by bytes, so both list in the same order).
//!
//! A group commit is usually one statement ([`COMMIT_SQL`]: fence, incidents, journal rows, id
//! counter). Timeline events and fingerprint and timer changes go to a few *journal* rows per
//! commit, folded into their tables by [`Store::fold`] when the writer is idle; reads merge
//! both in one statement (docs/replicas.md).
//!
//! **Fencing**: a store opened for a leader carries its term. Every write transaction first
//! takes `FOR KEY SHARE` on the lease row and compares the term: another term means another
//! replica took over, and the write is refused with [`StoreError::Fenced`] (and the store says
//! so on [`PgStore::deposed`]). A take-over locks the row `FOR UPDATE`, so it waits for the
//! old leader's transactions in flight, and every later one sees the new term.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use postgres::{Client, Statement, Transaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::export::{Portable, ThreadRecord};
use crate::domain::incident::{Incident, IncidentId, PastIncident, TimelineEvent};
use crate::ports::{
    Execution, ExecutionStatus, IncidentFilter, OutboxEntry, Recovery, Store, StoreError,
    ThreadRef, Timer, WriteSet,
};

pub mod schema;

/// How many outbox sequence numbers one `nextval` reserves (the sequence's increment).
pub const SEQ_BLOCK: u64 = 1024;

/// Connections kept idle for reuse.
const POOL_IDLE: usize = 8;

/// A connection and the statements prepared on it.
struct Conn {
    /// Always `Some` until dropped.
    client: Option<Client>,
    stmts: HashMap<&'static str, Statement>,
}

impl Conn {
    fn new(client: Client) -> Conn {
        Conn {
            client: Some(client),
            stmts: HashMap::new(),
        }
    }

    fn parts(&mut self) -> (&mut Client, &mut HashMap<&'static str, Statement>) {
        (
            self.client.as_mut().expect("a connection until dropped"),
            &mut self.stmts,
        )
    }

    fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(|c| c.is_closed())
    }
}

impl Drop for Conn {
    /// The client's drop blocks on its own runtime to close the connection, which panics on an
    /// async thread (where the last `Arc` of a store may well be dropped): close it on a
    /// thread of its own.
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = std::thread::Builder::new()
                .name("incidentd-pg-close".into())
                .spawn(move || drop(c));
        }
    }
}

/// Prepares `sql` once per connection.
fn stmt(
    tx: &mut Transaction<'_>,
    stmts: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> Result<Statement, postgres::Error> {
    if let Some(s) = stmts.get(sql) {
        return Ok(s.clone());
    }
    let s = tx.prepare(sql)?;
    stmts.insert(sql, s.clone());
    Ok(s)
}

/// Opens a connection with the settings every connection of the store has.
pub fn connect(url: &str) -> Result<Client, StoreError> {
    let mut cfg: postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Storage(format!("bad PostgreSQL URL: {e}")))?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(std::time::Duration::from_secs(5));
    }
    cfg.keepalives_idle(std::time::Duration::from_secs(10));
    let mut client = cfg
        .connect(postgres::NoTls)
        .map_err(|e| StoreError::Storage(format!("cannot connect to PostgreSQL: {e}")))?;
    // The durability the contract promises, whatever the server's default; no statement may
    // hang a writer for ever; and a process paused inside a transaction (SIGSTOP, a frozen VM)
    // loses its session after 2 s, releasing its hold on the lease row, so a take-over is not
    // blocked by a leader that cannot commit anyway.
    client
        .batch_execute(
            "SET synchronous_commit = on; SET statement_timeout = '30s'; \
             SET idle_in_transaction_session_timeout = '2s'",
        )
        .map_err(pg)?;
    Ok(client)
}

/// A connection of the store's pool: pipelined, its transactions commit without waiting for the
/// WAL flush (`synchronous_commit = off`), and [`Store::flush`] waits for it.
fn store_conn(url: &str, pipelined: bool) -> Result<Client, StoreError> {
    let mut c = connect(url)?;
    if pipelined {
        c.batch_execute("SET synchronous_commit = off")
            .map_err(pg)?;
    }
    Ok(c)
}

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Storage(format!("PostgreSQL: {e}"))
}

fn enc<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records serialize")
}

fn dec<T: DeserializeOwned>(tree: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Codec {
        tree,
        message: e.to_string(),
    })
}

fn id(i: IncidentId) -> i64 {
    i.0 as i64
}

fn status_name(s: ExecutionStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Why a write did not commit.
enum Refused {
    Pg(postgres::Error),
    Fenced(i64),
    Other(StoreError),
}

impl From<postgres::Error> for Refused {
    fn from(e: postgres::Error) -> Self {
        Refused::Pg(e)
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Other(e)
    }
}

pub struct PgStore {
    url: String,
    idle: Mutex<Vec<Conn>>,
    /// The leader term this store writes under; `None`: unfenced (the `store` commands).
    term: Option<i64>,
    deposed: tokio::sync::watch::Sender<bool>,
    outbox_len: AtomicUsize,
    /// Changes in journal rows, not folded yet.
    unfolded: AtomicUsize,
    /// The block of outbox sequence numbers reserved: (next, end).
    seq: Mutex<(u64, u64)>,
    /// Transactions commit asynchronously and `flush` makes them durable (see the module doc).
    pipelined: bool,
}

impl PgStore {
    /// Connects, applies the migrations this build knows (refusing a newer schema), and counts
    /// the outbox. `term`: the leader term every write must still hold (`None`: no fencing, for
    /// the `store` commands and single-process use).
    pub fn open(url: &str, term: Option<i64>) -> Result<PgStore, StoreError> {
        Self::open_with(url, term, true)
    }

    /// As [`PgStore::open`]; `pipelined` false commits every transaction with
    /// `synchronous_commit = on` (each `COMMIT` waits for its WAL flush, and `flush` has nothing
    /// to do) instead of committing asynchronously and making them durable at `flush` (for
    /// measurements: BENCHMARKS.md).
    pub fn open_with(url: &str, term: Option<i64>, pipelined: bool) -> Result<PgStore, StoreError> {
        let mut client = store_conn(url, pipelined)?;
        schema::migrate(&mut client)?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM outbox", &[])
            .map_err(pg)?
            .get(0);
        let unfolded: i64 = client
            .query_one("SELECT coalesce(sum(n), 0)::int8 FROM journal", &[])
            .map_err(pg)?
            .get(0);
        let s = PgStore {
            unfolded: AtomicUsize::new(unfolded as usize),
            url: url.to_owned(),
            idle: Mutex::new(vec![Conn::new(client)]),
            term,
            deposed: tokio::sync::watch::channel(false).0,
            outbox_len: AtomicUsize::new(n as usize),
            seq: Mutex::new((0, 0)),
            pipelined,
        };
        Ok(s)
    }

    /// The term this store writes under.
    pub fn term(&self) -> Option<i64> {
        self.term
    }

    /// Becomes true when a write was refused because another replica leads now.
    pub fn deposed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.deposed.subscribe()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, Refused>) -> Result<T, StoreError> {
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match conn {
            Some(c) if !c.is_closed() => c,
            _ => Conn::new(store_conn(&self.url, self.pipelined)?),
        };
        let r = f(&mut conn);
        if !conn.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < POOL_IDLE {
                idle.push(conn);
            }
        }
        match r {
            Ok(v) => Ok(v),
            Err(Refused::Pg(e)) => Err(pg(e)),
            Err(Refused::Other(e)) => Err(e),
            Err(Refused::Fenced(now)) => {
                self.deposed.send_replace(true);
                Err(StoreError::Fenced(format!(
                    "this replica wrote under term {} but term {now} leads now",
                    self.term.unwrap_or_default()
                )))
            }
        }
    }

    /// Runs `f` in a read-only statement context (no transaction needed for one statement).
    fn read<T>(
        &self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        f: impl FnOnce(Vec<postgres::Row>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let rows = self.with(|c| {
            let (client, stmts) = c.parts();
            let st = match stmts.get(sql) {
                Some(s) => s.clone(),
                None => {
                    let s = client.prepare(sql)?;
                    stmts.insert(sql, s.clone());
                    s
                }
            };
            Ok(client.query(&st, params)?)
        })?;
        f(rows)
    }

    /// One write transaction, fenced: refused when the lease's term is no longer ours.
    fn write<T>(
        &self,
        f: impl FnOnce(
            &mut Transaction<'_>,
            &mut HashMap<&'static str, Statement>,
        ) -> Result<T, Refused>,
    ) -> Result<T, StoreError> {
        self.with(|c| {
            let (client, stmts) = c.parts();
            let mut tx = client.transaction()?;
            if let Some(term) = self.term {
                let st = stmt(
                    &mut tx,
                    stmts,
                    "SELECT term FROM lease WHERE id = 1 FOR KEY SHARE",
                )?;
                let now: i64 = tx.query_opt(&st, &[])?.map(|r| r.get(0)).unwrap_or(0);
                if now != term {
                    return Err(Refused::Fenced(now));
                }
            }
            let v = f(&mut tx, stmts)?;
            tx.commit()?;
            Ok(v)
        })
    }

    /// The armed timers (`timers`) and the open fingerprints (`fps`) as their tables hold them
    /// with the journal's changes applied in commit order, read in one statement (one
    /// snapshot, so a fold in between changes nothing).
    #[allow(clippy::type_complexity)]
    fn replayed(
        &self,
        timers: bool,
        fps: bool,
    ) -> Result<(BTreeMap<String, IncidentId>, BTreeMap<i64, Vec<Timer>>), StoreError> {
        self.read(
            "SELECT 0::int8, 't', incident::text, body FROM timers WHERE $1 \
             UNION ALL SELECT 0, 'f', fingerprint, incident::text FROM fingerprints WHERE $2 \
             UNION ALL SELECT seq, 'j', '', deltas FROM journal WHERE deltas IS NOT NULL",
            &[&timers, &fps],
            |mut rows| {
                rows.sort_by_key(|r| r.get::<_, i64>(0));
                let mut f = BTreeMap::new();
                let mut t = BTreeMap::new();
                for r in rows {
                    let key: &str = r.get(2);
                    let body: &str = r.get(3);
                    match r.get::<_, &str>(1) {
                        "t" => {
                            let n: i64 = key.parse().unwrap_or_default();
                            t.insert(n, dec::<Vec<Timer>>("timers", body)?);
                        }
                        "f" => {
                            let n: u64 = body.parse().unwrap_or_default();
                            f.insert(key.to_owned(), IncidentId(n));
                        }
                        _ => {
                            let (dfps, dtimers): Deltas = dec("journal", body)?;
                            if fps {
                                for (k, v) in dfps {
                                    match v {
                                        Some(v) => f.insert(k, v),
                                        None => f.remove(&k),
                                    };
                                }
                            }
                            if timers {
                                for (k, v) in dtimers {
                                    if v.is_empty() {
                                        t.remove(&k);
                                    } else {
                                        t.insert(k, v);
                                    }
                                }
                            }
                        }
                    }
                }
                Ok((f, t))
            },
        )
    }

    /// Every incident, oldest first, a page at a time.
    fn incidents_from(
        &self,
        after: i64,
        newest_first: bool,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let map =
            |rows: Vec<postgres::Row>| Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect());
        if newest_first {
            self.read(
                "SELECT id, body FROM incidents WHERE id < $1 ORDER BY id DESC LIMIT $2",
                &[&after, &limit],
                map,
            )
        } else {
            self.read(
                "SELECT id, body FROM incidents WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &limit],
                map,
            )
        }
    }
}

fn put_thread(
    tx: &mut Transaction<'_>,
    stmts: &mut HashMap<&'static str, Statement>,
    sink: &str,
    inc: IncidentId,
    t: &ThreadRef,
) -> Result<(), postgres::Error> {
    let idx = stmt(
        tx,
        stmts,
        "INSERT INTO thread_index (sink, channel, message_id, incident) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sink, channel, message_id) DO UPDATE SET incident = EXCLUDED.incident",
    )?;
    // Where a thread is a channel of its own (Discord), replies name only that channel: index
    // it as (channel, channel) too, whatever message holds the card.
    if t.channel != t.message_id {
        tx.execute(&idx, &[&sink, &t.channel, &t.channel, &id(inc)])?;
    }
    tx.execute(&idx, &[&sink, &t.channel, &t.message_id, &id(inc)])?;
    let th = stmt(
        tx,
        stmts,
        "INSERT INTO threads (sink, incident, body) VALUES ($1, $2, $3) \
         ON CONFLICT (sink, incident) DO UPDATE SET body = EXCLUDED.body",
    )?;
    tx.execute(&th, &[&sink, &id(inc), &enc(t)])?;
    Ok(())
}

/// The last write of each key wins (PostgreSQL refuses an upsert touching a row twice).
fn last_wins<K: Ord + Clone, V: Clone>(items: impl IntoIterator<Item = (K, V)>) -> Vec<(K, V)> {
    let mut m: BTreeMap<K, V> = BTreeMap::new();
    for (k, v) in items {
        m.insert(k, v);
    }
    m.into_iter().collect()
}

/// A group commit in one statement: the fence (the lease row `FOR KEY SHARE`, its term compared
/// with ours, `$1`; `NULL`: unfenced), the incidents (`$2`, `$3`), the journal rows (`$4`…`$8`,
/// columns, in commit order) and the id counter (`$9`, unchanged when `NULL`). Every write is
/// conditional on the fence, so a deposed leader's statement writes nothing and returns the
/// term that leads now. Data-modifying CTEs run on one snapshot, in one transaction; the lease
/// row is locked as in a separate `SELECT … FOR KEY SHARE` (a take-over committed meanwhile is
/// seen: the lock follows the row's update).
const COMMIT_SQL: &str = "\
    WITH l AS (SELECT term FROM lease WHERE id = 1 FOR KEY SHARE), \
    ok AS (SELECT 1 FROM l WHERE $1::int8 IS NULL OR l.term = $1::int8), \
    i AS (INSERT INTO incidents (id, body) \
      SELECT * FROM UNNEST($2::int8[], $3::text[]) WHERE EXISTS (SELECT 1 FROM ok) \
      ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body), \
    j AS (INSERT INTO journal (lo, hi, n, events, deltas) \
      SELECT lo, hi, n, e, d \
      FROM UNNEST($4::int8[], $5::int8[], $6::int4[], $7::text[], $8::text[]) \
        WITH ORDINALITY AS x(lo, hi, n, e, d, o) \
      WHERE EXISTS (SELECT 1 FROM ok) ORDER BY o), \
    m AS (INSERT INTO meta (key, value) \
      SELECT 'next_id', $9::text WHERE $9::text IS NOT NULL AND EXISTS (SELECT 1 FROM ok) \
      ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value) \
    SELECT (SELECT term FROM l)";

/// Fingerprint and timer changes of one commit, in a journal row:
/// (fingerprint → open incident or `None`, incident → armed timers or none).
type Deltas = (Vec<(String, Option<IncidentId>)>, Vec<(i64, Vec<Timer>)>);

/// Changes of one kind in one journal row at most: a fold step moves whole rows, so this bounds
/// a step's cost (a few milliseconds) while a storm's commit still writes a handful of rows.
const PIECE: usize = 256;

/// One group commit's timeline events, fingerprint and timer changes, as a few journal rows
/// (docs/replicas.md) instead of one row per change; [`Store::fold`] moves them into their
/// tables later, and reads merge both. Columns of the rows, in commit order.
#[derive(Default)]
struct Journal {
    /// Per row, the lowest and highest incident with events in it (`lo > hi`: none).
    lo: Vec<i64>,
    hi: Vec<i64>,
    /// Per row, the changes in it.
    n: Vec<i32>,
    /// `[[incident, seq, event], …]` in commit order.
    events: Vec<Option<String>>,
    /// [`Deltas`].
    deltas: Vec<Option<String>>,
    /// Changes in all rows.
    total: usize,
}

impl Journal {
    fn of(w: &WriteSet) -> Journal {
        let mut j = Journal::default();
        for piece in w.events.chunks(PIECE) {
            let ids = piece.iter().map(|(i, _, _)| id(*i));
            let events: Vec<(i64, u32, &TimelineEvent)> =
                piece.iter().map(|(i, s, e)| (id(*i), *s, e)).collect();
            j.lo.push(ids.clone().min().unwrap_or(1));
            j.hi.push(ids.max().unwrap_or(0));
            j.n.push(piece.len() as i32);
            j.events.push(Some(enc(&events)));
            j.deltas.push(None);
        }
        let mut fps = w.fingerprints.chunks(PIECE);
        let mut timers = w.timers.chunks(PIECE);
        loop {
            let (f, t) = (fps.next().unwrap_or(&[]), timers.next().unwrap_or(&[]));
            if f.is_empty() && t.is_empty() {
                break;
            }
            let t: Vec<(i64, &Vec<Timer>)> = t.iter().map(|(i, t)| (id(*i), t)).collect();
            j.lo.push(1);
            j.hi.push(0);
            j.n.push((f.len() + t.len()) as i32);
            j.events.push(None);
            j.deltas.push(Some(enc(&(f, t))));
        }
        j.total = j.n.iter().map(|n| *n as usize).sum();
        j
    }
}

/// Upserts timeline events ((incident, seq) → JSON).
fn put_events(
    tx: &mut Transaction<'_>,
    stmts: &mut HashMap<&'static str, Statement>,
    events: Vec<((i64, i32), String)>,
) -> Result<(), postgres::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let st = stmt(
        tx,
        stmts,
        "INSERT INTO events (incident, seq, body) \
         SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::text[]) \
         ON CONFLICT (incident, seq) DO UPDATE SET body = EXCLUDED.body",
    )?;
    let mut a = (Vec::new(), Vec::new(), Vec::new());
    for ((i, s), b) in events {
        a.0.push(i);
        a.1.push(s);
        a.2.push(b);
    }
    tx.execute(&st, &[&a.0, &a.1, &a.2])?;
    Ok(())
}

/// Sets or drops open fingerprints.
fn put_fingerprints(
    tx: &mut Transaction<'_>,
    stmts: &mut HashMap<&'static str, Statement>,
    fps: Vec<(String, Option<IncidentId>)>,
) -> Result<(), postgres::Error> {
    let (set, gone): (Vec<_>, Vec<_>) = fps.into_iter().partition(|(_, v)| v.is_some());
    if !set.is_empty() {
        let st = stmt(
            tx,
            stmts,
            "INSERT INTO fingerprints (fingerprint, incident) \
             SELECT * FROM UNNEST($1::text[], $2::int8[]) \
             ON CONFLICT (fingerprint) DO UPDATE SET incident = EXCLUDED.incident",
        )?;
        let (k, v): (Vec<String>, Vec<i64>) = set
            .into_iter()
            .map(|(k, v)| (k, v.map(id).unwrap_or_default()))
            .unzip();
        tx.execute(&st, &[&k, &v])?;
    }
    if !gone.is_empty() {
        let st = stmt(
            tx,
            stmts,
            "DELETE FROM fingerprints WHERE fingerprint = ANY($1::text[])",
        )?;
        let k: Vec<String> = gone.into_iter().map(|(k, _)| k).collect();
        tx.execute(&st, &[&k])?;
    }
    Ok(())
}

/// Sets each incident's armed timers (none: its row goes).
fn put_timers(
    tx: &mut Transaction<'_>,
    stmts: &mut HashMap<&'static str, Statement>,
    timers: Vec<(i64, Vec<Timer>)>,
) -> Result<(), postgres::Error> {
    let (armed, disarmed): (Vec<_>, Vec<_>) = timers.into_iter().partition(|(_, t)| !t.is_empty());
    if !armed.is_empty() {
        let st = stmt(
            tx,
            stmts,
            "INSERT INTO timers (incident, body) SELECT * FROM UNNEST($1::int8[], $2::text[]) \
             ON CONFLICT (incident) DO UPDATE SET body = EXCLUDED.body",
        )?;
        let (k, v): (Vec<i64>, Vec<String>) = armed.into_iter().map(|(k, t)| (k, enc(&t))).unzip();
        tx.execute(&st, &[&k, &v])?;
    }
    if !disarmed.is_empty() {
        let st = stmt(
            tx,
            stmts,
            "DELETE FROM timers WHERE incident = ANY($1::int8[])",
        )?;
        let k: Vec<i64> = disarmed.into_iter().map(|(k, _)| k).collect();
        tx.execute(&st, &[&k])?;
    }
    Ok(())
}

impl Store for PgStore {
    fn get_incident(&self, inc: IncidentId) -> Result<Option<Incident>, StoreError> {
        self.read(
            "SELECT body FROM incidents WHERE id = $1",
            &[&id(inc)],
            |rows| rows.first().map(|r| dec("incidents", r.get(0))).transpose(),
        )
    }

    fn list_incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        let mut out = Vec::new();
        let mut before = i64::MAX;
        loop {
            let page = self.incidents_from(before, true, 500)?;
            let Some(last) = page.last() else { break };
            before = last.0;
            for (_, body) in &page {
                let inc: Incident = dec("incidents", body)?;
                if filter.matches(&inc) {
                    out.push(inc);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    fn for_each_incident(&self, f: &mut dyn FnMut(Incident) -> bool) -> Result<(), StoreError> {
        let mut after = 0;
        loop {
            let page = self.incidents_from(after, false, 500)?;
            let Some(last) = page.last() else { break };
            after = last.0;
            for (_, body) in &page {
                if !f(dec("incidents", body)?) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn timeline(&self, inc: IncidentId) -> Result<Vec<TimelineEvent>, StoreError> {
        // One statement (one snapshot), so that a fold in between cannot hide or repeat an
        // event: the folded events (journal seq 0), then the journal rows that may hold some.
        self.read(
            "SELECT 0::int8, seq, body FROM events WHERE incident = $1 \
             UNION ALL SELECT seq, 0, events FROM journal \
               WHERE lo <= $1 AND hi >= $1 AND events IS NOT NULL",
            &[&id(inc)],
            |mut rows| {
                rows.sort_by_key(|r| r.get::<_, i64>(0));
                let mut out: BTreeMap<i32, TimelineEvent> = BTreeMap::new();
                for r in rows {
                    if r.get::<_, i64>(0) == 0 {
                        out.insert(r.get(1), dec("events", r.get(2))?);
                        continue;
                    }
                    let events: Vec<(i64, i32, TimelineEvent)> = dec("journal", r.get(2))?;
                    for (i, seq, e) in events {
                        if i == id(inc) {
                            out.insert(seq, e);
                        }
                    }
                }
                Ok(out.into_values().collect())
            },
        )
    }

    fn next_incident_id(&self) -> Result<u64, StoreError> {
        self.read(
            "SELECT value FROM meta WHERE key = 'next_id'",
            &[],
            |rows| {
                Ok(rows
                    .first()
                    .and_then(|r| r.get::<_, String>(0).parse().ok())
                    .unwrap_or(1))
            },
        )
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        if seq.0 >= seq.1 {
            // A block of SEQ_BLOCK numbers: the sequence's value is the block's start.
            let start: i64 = self.read("SELECT nextval('outbox_seq')", &[], |rows| {
                Ok(rows[0].get(0))
            })?;
            *seq = (start as u64, start as u64 + SEQ_BLOCK);
        }
        let n = seq.0;
        seq.0 += 1;
        Ok(n)
    }

    fn commit(&self, w: &WriteSet) -> Result<(), StoreError> {
        let incidents = last_wins(w.incidents.iter().map(|i| (id(i.id), enc(i))));
        let (ids, bodies): (Vec<i64>, Vec<String>) = incidents.into_iter().unzip();
        let journal = Journal::of(w);
        let outbox = last_wins(
            w.outbox
                .iter()
                .map(|e| ((e.sink.clone(), e.seq as i64), (id(e.incident), enc(e)))),
        );
        let executions = last_wins(w.executions.iter().map(|x| (x.key.clone(), x.clone())));
        let history = last_wins(
            w.history
                .iter()
                .map(|(fp, p)| ((fp.clone(), id(p.id)), enc(p))),
        );
        let term = self.term.unwrap_or(0);
        let next_id = w.next_id.map(|n| n.to_string());
        let j = &journal;
        let params: [&(dyn postgres::types::ToSql + Sync); 9] = [
            &self.term, &ids, &bodies, &j.lo, &j.hi, &j.n, &j.events, &j.deltas, &next_id,
        ];
        let check = |row: postgres::Row| -> Result<(), Refused> {
            let now: Option<i64> = row.get(0);
            match (self.term, now) {
                (Some(t), now) if now != Some(t) => Err(Refused::Fenced(now.unwrap_or(0))),
                _ => Ok(()),
            }
        };
        let rest = !outbox.is_empty() || !executions.is_empty() || !history.is_empty();
        let inserted = self.with(|c| {
            let (client, stmts) = c.parts();
            if !rest {
                // The common case (a storm: new incidents, their events, fingerprints and
                // timers): one statement, its own transaction, one round trip.
                let st = match stmts.get(COMMIT_SQL) {
                    Some(s) => s.clone(),
                    None => {
                        let s = client.prepare(COMMIT_SQL)?;
                        stmts.insert(COMMIT_SQL, s.clone());
                        s
                    }
                };
                check(client.query_one(&st, &params)?)?;
                return Ok(0);
            }
            let mut tx = client.transaction()?;
            let st = stmt(&mut tx, stmts, COMMIT_SQL)?;
            check(tx.query_one(&st, &params)?)?;
            let mut inserted = 0;
            if !outbox.is_empty() {
                let st = stmt(
                    &mut tx,
                    stmts,
                    "INSERT INTO outbox (sink, seq, incident, body) \
                     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[]) \
                     ON CONFLICT (sink, seq) DO NOTHING",
                )?;
                let mut a = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for ((sink, seq), (i, b)) in outbox {
                    a.0.push(sink);
                    a.1.push(seq);
                    a.2.push(i);
                    a.3.push(b);
                }
                inserted = tx.execute(&st, &[&a.0, &a.1, &a.2, &a.3])? as usize;
            }
            if !executions.is_empty() {
                let st = stmt(
                    &mut tx,
                    stmts,
                    "INSERT INTO executions (key, incident, status, term, body) \
                     SELECT k, i, s, $4, b FROM UNNEST($1::text[], $2::int8[], $3::text[], $5::text[]) \
                       AS x(k, i, s, b) \
                     ON CONFLICT (key) DO UPDATE SET incident = EXCLUDED.incident, \
                       status = EXCLUDED.status, term = EXCLUDED.term, body = EXCLUDED.body",
                )?;
                let mut a = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for (k, x) in executions {
                    a.0.push(k);
                    a.1.push(id(x.incident));
                    a.2.push(status_name(x.status));
                    a.3.push(enc(&x));
                }
                tx.execute(&st, &[&a.0, &a.1, &a.2, &term, &a.3])?;
            }
            if !history.is_empty() {
                let st = stmt(
                    &mut tx,
                    stmts,
                    "INSERT INTO history (fingerprint, id, body) \
                     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[]) \
                     ON CONFLICT (fingerprint, id) DO UPDATE SET body = EXCLUDED.body",
                )?;
                let mut a = (Vec::new(), Vec::new(), Vec::new());
                for ((fp, i), b) in history {
                    a.0.push(fp);
                    a.1.push(i);
                    a.2.push(b);
                }
                tx.execute(&st, &[&a.0, &a.1, &a.2])?;
            }
            tx.commit()?;
            Ok(inserted)
        })?;
        self.outbox_len.fetch_add(inserted, Ordering::SeqCst);
        self.unfolded.fetch_add(journal.total, Ordering::SeqCst);
        Ok(())
    }

    fn fold(&self, max: usize) -> Result<usize, StoreError> {
        if self.unfolded.load(Ordering::SeqCst) == 0 {
            return Ok(0);
        }
        let moved = self.write(|tx, stmts| {
            let st = stmt(
                tx,
                stmts,
                "SELECT seq, n, events, deltas FROM journal ORDER BY seq LIMIT 64",
            )?;
            let rows = tx.query(&st, &[])?;
            let mut moved = 0;
            let mut seqs = Vec::new();
            let mut events = BTreeMap::new();
            let mut fps = BTreeMap::new();
            let mut timers = BTreeMap::new();
            for r in rows {
                if moved >= max.max(1) {
                    break;
                }
                seqs.push(r.get::<_, i64>(0));
                moved += r.get::<_, i32>(1) as usize;
                if let Some(e) = r.get::<_, Option<&str>>(2) {
                    let e: Vec<(i64, i32, TimelineEvent)> = dec("journal", e)?;
                    for (i, s, ev) in e {
                        events.insert((i, s), enc(&ev));
                    }
                }
                if let Some(d) = r.get::<_, Option<&str>>(3) {
                    let d: Deltas = dec("journal", d)?;
                    fps.extend(d.0);
                    timers.extend(d.1);
                }
            }
            put_events(tx, stmts, events.into_iter().collect())?;
            put_fingerprints(tx, stmts, fps.into_iter().collect())?;
            put_timers(tx, stmts, timers.into_iter().collect())?;
            let st = stmt(tx, stmts, "DELETE FROM journal WHERE seq = ANY($1::int8[])")?;
            tx.execute(&st, &[&seqs])?;
            Ok(moved)
        })?;
        let _ = self
            .unfolded
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(moved))
            });
        Ok(moved)
    }

    fn unfolded(&self) -> usize {
        self.unfolded.load(Ordering::SeqCst)
    }

    fn flush(&self) -> Result<(), StoreError> {
        if !self.pipelined {
            // `COMMIT` returned after the WAL was flushed (synchronous_commit = on).
            return Ok(());
        }
        // A barrier: a transaction that writes one WAL record and commits with
        // synchronous_commit on returns once the WAL is flushed up to its commit record, so
        // every transaction committed before it is durable too (the WAL is one sequence).
        self.with(|c| {
            let (client, stmts) = c.parts();
            let mut tx = client.transaction()?;
            let st = stmt(
                &mut tx,
                stmts,
                "UPDATE meta SET value = value WHERE key = 'schema_version'",
            )?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(&st, &[])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn outbox_pending(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(
            "SELECT body FROM outbox WHERE sink = $1 ORDER BY seq LIMIT $2",
            &[&sink, &limit],
            |rows| rows.iter().map(|r| dec("outbox", r.get(0))).collect(),
        )
    }

    fn outbox_complete(
        &self,
        entry: &OutboxEntry,
        thread: Option<&ThreadRef>,
    ) -> Result<(), StoreError> {
        let removed = self.write(|tx, stmts| {
            if let Some(t) = thread {
                put_thread(tx, stmts, &entry.sink, entry.incident, t)?;
            }
            let st = stmt(tx, stmts, "DELETE FROM outbox WHERE sink = $1 AND seq = $2")?;
            Ok(tx.execute(&st, &[&entry.sink, &(entry.seq as i64)])?)
        })?;
        if removed > 0 {
            let _ = self
                .outbox_len
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
        Ok(())
    }

    fn outbox_dead_letter(&self, entry: &OutboxEntry, error: &str) -> Result<(), StoreError> {
        let record = enc(&serde_json::json!({ "entry": entry, "error": error }));
        let removed = self.write(|tx, stmts| {
            let st = stmt(
                tx,
                stmts,
                "INSERT INTO outbox_dead (sink, seq, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (sink, seq) DO UPDATE SET record = EXCLUDED.record",
            )?;
            tx.execute(&st, &[&entry.sink, &(entry.seq as i64), &record])?;
            let st = stmt(tx, stmts, "DELETE FROM outbox WHERE sink = $1 AND seq = $2")?;
            Ok(tx.execute(&st, &[&entry.sink, &(entry.seq as i64)])?)
        })?;
        if removed > 0 {
            let _ = self
                .outbox_len
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
        Ok(())
    }

    fn outbox_len(&self) -> usize {
        self.outbox_len.load(Ordering::SeqCst)
    }

    fn thread_for(&self, sink: &str, inc: IncidentId) -> Result<Option<ThreadRef>, StoreError> {
        self.read(
            "SELECT body FROM threads WHERE sink = $1 AND incident = $2",
            &[&sink, &id(inc)],
            |rows| rows.first().map(|r| dec("threads", r.get(0))).transpose(),
        )
    }

    fn incident_for_thread(
        &self,
        sink: &str,
        channel: &str,
        message_id: &str,
    ) -> Result<Option<IncidentId>, StoreError> {
        self.read(
            "SELECT incident FROM thread_index WHERE sink = $1 AND channel = $2 AND message_id = $3",
            &[&sink, &channel, &message_id],
            |rows| {
                Ok(rows
                    .first()
                    .map(|r| IncidentId(r.get::<_, i64>(0) as u64)))
            },
        )
    }

    fn timers(&self) -> Result<Vec<Timer>, StoreError> {
        let (_, timers) = self.replayed(true, false)?;
        Ok(timers.into_values().flatten().collect())
    }

    fn open_fingerprints(&self) -> Result<Vec<(String, IncidentId)>, StoreError> {
        let (fps, _) = self.replayed(false, true)?;
        Ok(fps.into_iter().collect())
    }

    fn history_fingerprints(&self) -> Result<Vec<String>, StoreError> {
        self.read(
            "SELECT DISTINCT fingerprint FROM history ORDER BY fingerprint",
            &[],
            |rows| Ok(rows.iter().map(|r| r.get(0)).collect()),
        )
    }

    fn history(&self, fingerprint: &str) -> Result<Vec<PastIncident>, StoreError> {
        self.read(
            "SELECT body FROM history WHERE fingerprint = $1 ORDER BY id",
            &[&fingerprint],
            |rows| rows.iter().map(|r| dec("history", r.get(0))).collect(),
        )
    }

    fn executions(&self, inc: IncidentId) -> Result<Vec<Execution>, StoreError> {
        self.read(
            "SELECT body FROM executions WHERE incident = $1 ORDER BY key",
            &[&id(inc)],
            |rows| rows.iter().map(|r| dec("executions", r.get(0))).collect(),
        )
    }

    fn execution(&self, key: &str) -> Result<Option<Execution>, StoreError> {
        self.read(
            "SELECT body FROM executions WHERE key = $1",
            &[&key],
            |rows| {
                rows.first()
                    .map(|r| dec("executions", r.get(0)))
                    .transpose()
            },
        )
    }

    fn recover(&self, now: DateTime<Utc>) -> Result<Recovery, StoreError> {
        let term = self.term.unwrap_or(0);
        let (interrupted, queued) = self.write(|tx, _| {
            let rows = tx.query(
                "SELECT body FROM executions WHERE status IN ('queued', 'started') ORDER BY key \
                 FOR UPDATE",
                &[],
            )?;
            let mut interrupted = Vec::new();
            let mut queued = Vec::new();
            for r in rows {
                let mut x: Execution = dec("executions", r.get(0))?;
                match x.status {
                    ExecutionStatus::Queued => queued.push(x),
                    ExecutionStatus::Started => {
                        // Started by a process (or an older leader term) that is gone: a human
                        // decides; never re-run.
                        x.status = ExecutionStatus::Interrupted;
                        x.updated_at = now;
                        tx.execute(
                            "UPDATE executions SET status = $2, term = $3, body = $4 WHERE key = $1",
                            &[&x.key, &status_name(x.status), &term, &enc(&x)],
                        )?;
                        interrupted.push(x);
                    }
                    _ => {}
                }
            }
            Ok((interrupted, queued))
        })?;
        Ok(Recovery {
            incidents: self.next_incident_id()?.saturating_sub(1) as usize,
            outbox_pending: self.outbox_len(),
            interrupted,
            queued,
        })
    }

    fn chat_cursor(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read(
            "SELECT value FROM chat_cursors WHERE key = $1",
            &[&key],
            |rows| Ok(rows.first().map(|r| r.get(0))),
        )
    }

    fn set_chat_cursor(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|tx, stmts| {
            let st = stmt(
                tx,
                stmts,
                "INSERT INTO chat_cursors (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )?;
            tx.execute(&st, &[&key, &value])?;
            Ok(())
        })
    }
}

impl Portable for PgStore {
    /// Every execution, in key order (export).
    fn export_executions(
        &self,
        _salvage: bool,
        _skipped: &mut Vec<String>,
    ) -> Result<Vec<Execution>, StoreError> {
        self.read("SELECT body FROM executions ORDER BY key", &[], |rows| {
            rows.iter().map(|r| dec("executions", r.get(0))).collect()
        })
    }

    /// Every queued outbox entry, all sinks, in sequence order (export).
    fn all_outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read("SELECT body FROM outbox ORDER BY seq, sink", &[], |rows| {
            rows.iter().map(|r| dec("outbox", r.get(0))).collect()
        })
    }

    /// Every incident's thread on every sink (export).
    fn all_threads(&self) -> Result<Vec<ThreadRecord>, StoreError> {
        self.read(
            "SELECT sink, incident, body FROM threads ORDER BY sink, incident",
            &[],
            |rows| {
                rows.iter()
                    .map(|r| {
                        let n: i64 = r.get(1);
                        Ok(ThreadRecord {
                            sink: r.get(0),
                            incident: IncidentId(n as u64),
                            thread: dec("threads", r.get(2))?,
                        })
                    })
                    .collect()
            },
        )
    }

    /// Every dead letter as stored (`{"entry": …, "error": …}`), in key order (export).
    fn export_dead_letters(
        &self,
        _salvage: bool,
        _skipped: &mut Vec<String>,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        self.read(
            "SELECT record FROM outbox_dead ORDER BY sink, seq",
            &[],
            |rows| rows.iter().map(|r| dec("outbox_dead", r.get(0))).collect(),
        )
    }

    /// Records where an incident's thread is (as a delivered card does).
    fn put_thread(&self, sink: &str, inc: IncidentId, t: &ThreadRef) -> Result<(), StoreError> {
        self.write(|tx, stmts| {
            put_thread(tx, stmts, sink, inc, t)?;
            Ok(())
        })
    }

    /// Keeps a dead letter as exported.
    fn put_dead_letter(&self, record: &serde_json::Value) -> Result<(), StoreError> {
        let entry: OutboxEntry =
            serde_json::from_value(record["entry"].clone()).map_err(|e| StoreError::Codec {
                tree: "outbox_dead",
                message: e.to_string(),
            })?;
        let body = enc(record);
        self.write(|tx, stmts| {
            let st = stmt(
                tx,
                stmts,
                "INSERT INTO outbox_dead (sink, seq, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (sink, seq) DO UPDATE SET record = EXCLUDED.record",
            )?;
            tx.execute(&st, &[&entry.sink, &(entry.seq as i64), &body])?;
            Ok(())
        })
    }

    /// Nothing stored yet (an import's target must be empty).
    fn is_empty(&self) -> Result<bool, StoreError> {
        self.read(
            "SELECT NOT EXISTS (SELECT 1 FROM incidents) AND NOT EXISTS (SELECT 1 FROM outbox) \
             AND NOT EXISTS (SELECT 1 FROM executions) AND NOT EXISTS (SELECT 1 FROM threads) \
             AND NOT EXISTS (SELECT 1 FROM outbox_dead)",
            &[],
            |rows| Ok(rows[0].get(0)),
        )
    }

    /// Makes the outbox sequence continue at or after `next` (import).
    fn ensure_next_seq(&self, next: u64) -> Result<(), StoreError> {
        self.write(|tx, _| {
            tx.execute(
                "SELECT setval('outbox_seq', greatest($1, (SELECT last_value FROM outbox_seq)))",
                &[&(next as i64)],
            )?;
            Ok(())
        })?;
        // The block held in memory may be below it.
        *self.seq.lock().unwrap_or_else(|e| e.into_inner()) = (0, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
