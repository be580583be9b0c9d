//! The imperative shell around the core. One writer thread owns every state change: it takes
//! inputs from a queue, runs `handle` on each, and writes all decisions of a batch in one sled
//! transaction (group commit). A second thread, the syncer, makes committed batches durable
//! (one `flush` + fdatasync for every batch committed since its last one) and only then answers
//! the callers and lets anything leave the process: chat messages (the outbox only delivers
//! entries up to the durable watermark), timers, executions, metrics. The writer goes on with
//! the next batch while the syncer waits for the disk, so the disk's latency and the writer's
//! CPU overlap instead of adding up.
//!
//! Reads (API, console) may see a commit up to one fsync before it is durable. If the process
//! dies in that window, nobody was told it happened: the sender got no answer and retries, and
//! the incident id is given out again. The same holds for a card the outbox renders at delivery
//! (it shows the incident as stored at that moment): at worst it shows one commit early.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, warn};

use super::book::StatsBook;
use super::health::StoreHealth;
use super::keys::{KeySet, OpenKeys};
use super::{
    command_target, handle, ApprovalOutcome, Ctx, Decision, Effect, Input, Observed, Outcome,
    PreTriage, UserError, View,
};
use crate::config::Config;
use crate::dense::DenseMap;
use crate::domain::incident::{Incident, IncidentId, PastIncident};
use crate::domain::stats::Stats;
use crate::ports::{Clock, Execution, OutboxEntry, Store, StoreError, Timer, TimerKind, WriteSet};
use crate::telemetry::metrics::Metrics;

/// The most inputs one group commit takes (bounds latency and transaction size).
const MAX_BATCH_INPUTS: usize = 8192;
/// Changes (fingerprints, timers, outbox entries, timeline events) folded per step when the
/// writer is idle (a step of 512 is a few milliseconds: the longest a new submission waits).
const FOLD_STEP: usize = 512;
/// How long without work before the writer starts folding.
const QUIET: std::time::Duration = std::time::Duration::from_millis(20);
/// Beyond this many unfolded changes the writer also folds after each commit (bounds what
/// start-up replays: about a second's work at this size).
const MAX_UNFOLDED: usize = 1_000_000;
/// Queue depth before submitters wait (backpressure instead of unbounded memory).
const QUEUE_DEPTH: usize = 1024;

/// Why a submission failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The write was not confirmed durable in time (a hung or failing disk): the request fails
    /// instead of waiting; the write may still become durable later (at least once, never
    /// acknowledged without it).
    #[error("the store did not confirm the write within {0:?}; it is failing or stalled")]
    Timeout(std::time::Duration),
}

impl EngineError {
    /// A store that fails or stalls (503 and retry later), not a bug in the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            EngineError::Store(StoreError::Storage(_))
                | EngineError::Timeout(_)
                | EngineError::ShuttingDown
        )
    }
}

type Reply = Result<Vec<Result<Outcome, UserError>>, Arc<EngineError>>;
/// A caller's reply channel and the results of its inputs, sent once they are durable.
type Answer = (oneshot::Sender<Reply>, Vec<Result<Outcome, UserError>>);

struct Job {
    inputs: Vec<Input>,
    reply: oneshot::Sender<Reply>,
}

/// Cheap to clone; every clone submits to the same writer.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Job>,
    alive: Arc<AtomicBool>,
    /// Whether writes are being made durable.
    health: Arc<StoreHealth>,
    cfg: Arc<Config>,
    /// The writer's open fingerprints: alerts that will only update an incident skip triage.
    open: OpenMap,
    metrics: Arc<Metrics>,
    /// The outcome numbers, updated as decisions become durable.
    book: Arc<StatsBook>,
    /// The writer's clock (what is overdue is read by it).
    clock: Arc<dyn Clock>,
}

/// What the writer tells the rest of the shell after each durable commit.
pub struct Notifications {
    /// The durable watermark: every outbox entry with `seq` at or below it is durable and may
    /// be delivered; entries above it are committed but not yet synced.
    pub outbox: watch::Receiver<u64>,
    /// The timers armed when the engine started (read from the store once, for the writer and
    /// for whoever runs them).
    pub armed: Vec<Timer>,
    /// Timers armed by committed decisions.
    pub timers: mpsc::UnboundedReceiver<Timer>,
    /// Keys of executions queued by committed decisions.
    pub executions: mpsc::UnboundedReceiver<String>,
    /// Incidents whose evidence queries committed decisions asked for.
    pub evidence: mpsc::UnboundedReceiver<IncidentId>,
}

impl Engine {
    /// Starts the writer thread. `sinks` are the chat sink names every chat effect goes to.
    pub fn start(
        store: Arc<dyn Store>,
        cfg: Arc<Config>,
        clock: Arc<dyn Clock>,
        sinks: Vec<String>,
    ) -> Result<(Engine, Notifications, std::thread::JoinHandle<()>), StoreError> {
        let metrics = Arc::new(Metrics::new());
        Self::start_with(store, cfg, clock, sinks, metrics, Folding::default())
    }

    /// As `start`, recording into the given metrics, with the store's folding as given.
    pub fn start_with(
        store: Arc<dyn Store>,
        cfg: Arc<Config>,
        clock: Arc<dyn Clock>,
        sinks: Vec<String>,
        metrics: Arc<Metrics>,
        folding: Folding,
    ) -> Result<(Engine, Notifications, std::thread::JoinHandle<()>), StoreError> {
        let next_id = store.next_incident_id()?;
        let open: OpenMap = Arc::new(RwLock::new(
            store.open_fingerprints()?.into_iter().collect(),
        ));
        let with_history: KeySet = store.history_fingerprints()?.into_iter().collect();
        let stored_timers = store.timers()?;
        let mut armed = Armed::default();
        for t in &stored_timers {
            armed.push(*t);
        }
        let (openings, storm_threads) = recover_storms(&*store, &cfg, &stored_timers, clock.now())?;
        // Everything stored so far is durable; new entries get higher sequence numbers.
        let durable = store.next_seq()?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (outbox_tx, outbox_rx) = watch::channel(durable);
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let (exec_tx, exec_rx) = mpsc::unbounded_channel();
        let (evidence_tx, evidence_rx) = mpsc::unbounded_channel();
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel(SYNC_DEPTH);
        let alive = Arc::new(AtomicBool::new(true));
        // A sync slower than a request may wait is a stalled disk.
        let health = Arc::new(StoreHealth::new(
            cfg.store
                .write_timeout
                .min(std::time::Duration::from_secs(5)),
        ));
        let engine_cfg = cfg.clone();
        let engine_clock = clock.clone();
        let book = StatsBook::new();
        book.build_in_background(store.clone());
        let syncer = Syncer {
            book: book.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            held: Vec::new(),
            outbox_tx,
            timer_tx,
            exec_tx,
            evidence_tx,
        };
        let writer = Writer {
            store,
            cfg,
            clock,
            sinks,
            next_id,
            open: open.clone(),
            with_history,
            armed,
            openings,
            storm_threads,
            hot: HotIncidents::default(),
            health: health.clone(),
            sync_tx,
            folding,
        };
        let flag = alive.clone();
        let handle = std::thread::Builder::new()
            .name("incidentd-writer".into())
            .spawn(move || {
                let syncer = std::thread::Builder::new()
                    .name("incidentd-sync".into())
                    .spawn(move || syncer.run(sync_rx))
                    .expect("spawn sync thread");
                writer.run(rx);
                // The writer's channel to the syncer is gone: it syncs and answers what is
                // left, then stops. Joining the writer thus means everything was answered.
                let _ = syncer.join();
                flag.store(false, Ordering::SeqCst);
            })
            .expect("spawn writer thread");
        Ok((
            Engine {
                tx,
                alive,
                health,
                cfg: engine_cfg,
                open,
                metrics,
                book,
                clock: engine_clock,
            },
            Notifications {
                outbox: outbox_rx,
                armed: stored_timers,
                timers: timer_rx,
                executions: exec_rx,
                evidence: evidence_rx,
            },
            handle,
        ))
    }

    /// Submits inputs; resolves once their decisions are durable. One result per input, in order.
    pub async fn submit(
        &self,
        inputs: Vec<Input>,
    ) -> Result<Vec<Result<Outcome, UserError>>, Arc<EngineError>> {
        // Alerts that will likely open an incident are triaged here, on the submitter's thread
        // and in parallel with other submitters, so the single writer only applies the result.
        // (Only a hint: the writer triages itself if the fingerprint's state changed meanwhile.)
        let inputs = {
            let open = self.open.read().unwrap_or_else(|e| e.into_inner());
            inputs
                .into_iter()
                .map(|i| match i {
                    Input::Alert(a)
                        if !open.contains(&a.group_key(&self.cfg.engine.group_by))
                            && !open.contains(&a.fingerprint) =>
                    {
                        let pre = PreTriage::of(&a, &self.cfg);
                        Input::Triaged(a, Box::new(pre))
                    }
                    other => other,
                })
                .collect()
        };
        let (reply, rx) = oneshot::channel();
        // Bounded: a store that hangs (a full or broken disk) fails the request instead of
        // holding it, and the caller answers 503.
        let deadline = self.cfg.store.write_timeout;
        let wait = async {
            self.tx
                .send(Job { inputs, reply })
                .await
                .map_err(|_| Arc::new(EngineError::ShuttingDown))?;
            rx.await.map_err(|_| Arc::new(EngineError::ShuttingDown))?
        };
        match tokio::time::timeout(deadline, wait).await {
            Ok(r) => r,
            Err(_) => Err(Arc::new(EngineError::Timeout(deadline))),
        }
    }

    /// Makes everything committed so far durable (an empty group commit: one sync). `/readyz`
    /// uses it to find out whether a store that failed works again.
    pub async fn sync(&self) -> Result<(), Arc<EngineError>> {
        self.submit(Vec::new()).await.map(|_| ())
    }

    /// `Err(why)` while writes fail or a sync hangs.
    pub fn store_health(&self) -> Result<(), String> {
        self.health.check()
    }

    /// The last commit or sync failed (as opposed to one still running).
    pub fn store_health_failing(&self) -> bool {
        self.health.is_failing()
    }

    /// Submits one input.
    pub async fn submit_one(&self, input: Input) -> Result<Outcome, EngineSubmitError> {
        let mut v = self.submit(vec![input]).await?;
        Ok(v.pop().expect("one result per input")?)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The outcome numbers (docs/metrics.md) over incidents opened in the last `days`.
    pub async fn stats(&self, days: u32) -> Result<Stats, StoreError> {
        self.book.stats(self.clock.now(), days).await
    }

    /// The time by the engine's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Incidents not yet resolved.
    pub async fn active_incidents(&self) -> Result<usize, StoreError> {
        self.book.active().await
    }

    /// The writer thread is running and writes are being made durable.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst) && !self.tx.is_closed() && self.health.check().is_ok()
    }

    /// The writer thread is running (whether or not the store works).
    pub fn is_running(&self) -> bool {
        self.alive.load(Ordering::SeqCst) && !self.tx.is_closed()
    }
}

/// Either a user error (show it) or an engine failure (internal error).
#[derive(Debug, thiserror::Error)]
pub enum EngineSubmitError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Engine(#[from] Arc<EngineError>),
}

/// fingerprint → open incident, as committed.
type OpenMap = Arc<RwLock<OpenKeys>>;

/// Committed batches waiting for the syncer; bounds memory when the disk is slow.
const SYNC_DEPTH: usize = 64;

struct Writer {
    store: Arc<dyn Store>,
    cfg: Arc<Config>,
    clock: Arc<dyn Clock>,
    sinks: Vec<String>,
    next_id: u64,
    /// The fingerprints tree in memory (the writer is its only writer): a new alert's lookup
    /// costs no store read. As large as the number of open incidents.
    open: OpenMap,
    /// Fingerprints that have history (recurrence): the others skip the store scan.
    with_history: KeySet,
    /// Every armed timer per incident (the writer is the timers' only writer): a change is
    /// written as the incident's whole set, without reading it first.
    armed: Armed,
    /// When recent incidents opened, per source (the storm guard's rate).
    openings: Openings,
    /// The incident whose card summarizes each source's storm, while one does (the core says;
    /// read back at start-up with `openings`).
    storm_threads: HashMap<String, IncidentId>,
    /// Committed versions of recently written large incidents.
    hot: HotIncidents,
    /// Set when a commit or sync failed (no folding then), cleared by the next good sync.
    health: Arc<StoreHealth>,
    sync_tx: std::sync::mpsc::SyncSender<Committed>,
    folding: Folding,
}

/// Every armed timer per open incident, as committed. One entry per open incident, so during
/// a storm as many as the storm's alerts: the deadlines sit inline (16 bytes each, two without
/// a heap block), in place by incident id ([`DenseMap`]): 40 bytes per open incident.
#[derive(Default)]
struct Armed(DenseMap<TimerSet>);

/// One incident's armed timers: (due, kind), two inline.
type TimerSet = smallvec::SmallVec<[(chrono::DateTime<chrono::Utc>, TimerKind); 2]>;

impl Armed {
    fn push(&mut self, t: Timer) {
        let mut set = self.0.remove(t.incident.0).unwrap_or_default();
        set.push((t.at, t.kind));
        self.0.set(t.incident.0, set);
    }

    /// The incident's whole set.
    fn of(&self, id: IncidentId) -> Vec<Timer> {
        self.0
            .get(id.0)
            .map(|set| {
                set.iter()
                    .map(|&(at, kind)| Timer {
                        incident: id,
                        kind,
                        at,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn contains(&self, t: &Timer) -> bool {
        self.0
            .get(t.incident.0)
            .is_some_and(|set| set.contains(&(t.at, t.kind)))
    }

    /// Replaces the incident's whole set (empty: forgets the incident).
    fn set(&mut self, id: IncidentId, timers: &[Timer]) {
        let mut set: TimerSet = timers.iter().map(|t| (t.at, t.kind)).collect();
        set.shrink_to_fit();
        self.0.set(id.0, set);
    }
}

/// The committed versions of the incidents the writer wrote last that are expensive to read
/// back: groups of many alerts (each alert of a group rewrites its incident; reading its
/// hundreds of members back from JSON for every batch was most of a grouped storm's cost). The
/// writer is the only writer of incidents, so these are the stored versions. Bounded: at most
/// `HOT_MAX` incidents, the oldest written forgotten first.
#[derive(Default)]
struct HotIncidents {
    map: HashMap<IncidentId, Incident>,
    order: std::collections::VecDeque<IncidentId>,
}

/// Incidents kept by [`HotIncidents`].
const HOT_MAX: usize = 512;
/// Members from which an incident is worth keeping.
const HOT_MEMBERS: usize = 8;

impl HotIncidents {
    fn get(&self, id: IncidentId) -> Option<&Incident> {
        self.map.get(&id)
    }

    fn take(&mut self, id: IncidentId) -> Option<Incident> {
        self.map.remove(&id)
    }

    /// Active groups of many alerts (only active groups get alerts).
    fn worth_keeping(inc: &Incident) -> bool {
        inc.status.is_active()
            && inc
                .group
                .as_ref()
                .is_some_and(|g| g.members.len() >= HOT_MEMBERS)
    }

    /// Keeps the committed version of a large incident.
    fn put(&mut self, inc: Incident) {
        let id = inc.id;
        if self.map.insert(id, inc).is_none() {
            self.order.push_back(id);
            while self.map.len() > HOT_MAX {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
        }
        // `order` may hold ids already removed; it stays bounded by the map's churn.
        if self.order.len() > 4 * HOT_MAX {
            let map = &self.map;
            self.order.retain(|id| map.contains_key(id));
        }
    }
}

/// Most incidents read back at start-up to count the storm guard's recent openings.
const RECOVER_OPENINGS: usize = 4096;

/// A storm that was going on when the process stopped goes on after the restart: the storm
/// guard's recent openings (the newest incidents opened within a storm window, at most
/// [`RECOVER_OPENINGS`]: enough to tell a storm, whose bound is far lower) and each source's
/// storm summary still open (an incident with an armed storm check and a summary not lifted).
fn recover_storms(
    store: &dyn Store,
    cfg: &Config,
    timers: &[Timer],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Openings, HashMap<String, IncidentId>), StoreError> {
    let since = now - chrono::Duration::seconds(cfg.engine.storm_window_seconds as i64);
    let recent = store.list_incidents(&crate::ports::IncidentFilter {
        limit: RECOVER_OPENINGS,
        ..Default::default()
    })?;
    let mut opened: Vec<(&'static str, chrono::DateTime<chrono::Utc>)> = recent
        .iter()
        .filter(|i| i.opened_at >= since)
        .map(|i| (i.source.as_str(), i.opened_at))
        .collect();
    opened.sort_by_key(|(_, at)| *at);
    let mut openings = Openings::default();
    openings.record(opened, since);
    let mut threads = HashMap::new();
    for t in timers.iter().filter(|t| t.kind == TimerKind::StormLift) {
        if let Some(inc) = store.get_incident(t.incident)? {
            if let Some(s) = inc.storm_summary.as_ref().filter(|s| s.lifted_at.is_none()) {
                threads.insert(s.source.clone(), inc.id);
            }
        }
    }
    Ok((openings, threads))
}

/// When incidents opened recently, per source: the storm guard's rate. Kept for one storm
/// window, and read back at start-up ([`recover_storms`]).
#[derive(Default)]
struct Openings(HashMap<&'static str, Window>);

/// One source's openings in time order, run-length encoded: the incidents of one commit share
/// its time, so a storm of 25 000 new incidents a second costs an entry per commit, not per
/// incident. Each entry holds its time and the running count up to it, so a count since any
/// time is one binary search.
#[derive(Default)]
struct Window {
    runs: std::collections::VecDeque<(chrono::DateTime<chrono::Utc>, u64)>,
    /// Openings ever added, and those of the runs already forgotten.
    total: u64,
    forgotten: u64,
}

impl Window {
    fn push(&mut self, at: chrono::DateTime<chrono::Utc>) {
        self.total += 1;
        match self.runs.back_mut() {
            Some(run) if run.0 == at => run.1 = self.total,
            _ => self.runs.push_back((at, self.total)),
        }
    }

    fn since(&self, since: chrono::DateTime<chrono::Utc>) -> usize {
        // In time order (the writer's clock), newest last.
        let i = self.runs.partition_point(|(at, _)| *at < since);
        let before = match i {
            0 => self.forgotten,
            i => self.runs[i - 1].1,
        };
        (self.total - before) as usize
    }

    fn forget_before(&mut self, keep_since: chrono::DateTime<chrono::Utc>) {
        while let Some(&(at, upto)) = self.runs.front() {
            if at >= keep_since {
                break;
            }
            self.forgotten = upto;
            self.runs.pop_front();
        }
    }
}

impl Openings {
    fn since(&self, source: &str, since: chrono::DateTime<chrono::Utc>) -> usize {
        self.0.get(source).map_or(0, |w| w.since(since))
    }

    /// Adds a commit's openings and forgets those before `keep_since`.
    fn record(
        &mut self,
        new: Vec<(&'static str, chrono::DateTime<chrono::Utc>)>,
        keep_since: chrono::DateTime<chrono::Utc>,
    ) {
        for (source, at) in new {
            self.0.entry(source).or_default().push(at);
        }
        for w in self.0.values_mut() {
            w.forget_before(keep_since);
        }
    }
}

#[cfg(test)]
mod openings_tests {
    use super::Openings;
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    proptest! {
        /// Against every opening's time kept in a list, as the reference.
        #[test]
        fn counts_like_a_list_of_times(
            commits in proptest::collection::vec(
                (0i64..4, proptest::collection::vec(0usize..2, 0..6), 0i64..30, 0i64..30),
                0..60,
            )
        ) {
            const SOURCES: [&str; 2] = ["alertmanager", "grafana"];
            let mut ours = Openings::default();
            let mut reference: Vec<(&str, DateTime<Utc>)> = Vec::new();
            let mut now = 0i64;
            for (step, sources, keep, ask) in commits {
                now += step;
                let new: Vec<_> = sources.iter().map(|&s| (SOURCES[s], t(now))).collect();
                reference.extend(new.iter().copied());
                let keep_since = t(now - keep);
                ours.record(new, keep_since);
                reference.retain(|(_, at)| *at >= keep_since);
                for s in SOURCES {
                    let since = t(now - ask);
                    let want = reference.iter().filter(|(x, at)| *x == s && *at >= since).count();
                    prop_assert_eq!(ours.since(s, since), want);
                }
            }
        }
    }
}

/// When the writer folds the store's per-commit records ([`Store::fold`]).
#[derive(Debug, Clone, Copy)]
pub struct Folding {
    /// How long without work before the writer folds.
    pub quiet: std::time::Duration,
    /// Beyond this many unfolded changes the writer also folds after each commit.
    pub max_unfolded: usize,
}

impl Default for Folding {
    fn default() -> Self {
        Folding {
            quiet: QUIET,
            max_unfolded: MAX_UNFOLDED,
        }
    }
}

/// A batch that is committed (visible in the store) but not yet durable, with everything that
/// must wait until it is: the callers' answers and every effect that leaves the process.
struct Committed {
    replies: Vec<Answer>,
    /// Book facts of the incidents the writer kept (not in `writes`).
    facts: Vec<(IncidentId, crate::domain::stats::Facts)>,
    observed: Vec<Observed>,
    /// The highest outbox sequence number the batch wrote.
    max_seq: Option<u64>,
    timers: Vec<Timer>,
    queued: Vec<String>,
    gather: Vec<IncidentId>,
    started: std::time::Instant,
    /// The batch has alerts (webhook intake): its sync decides readiness (see [`StoreHealth`]).
    intake: bool,
    /// Dropped by the syncer, off the writer's path.
    writes: WriteSet,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        // The store's per-commit records (fingerprint and timer deltas, outbox and event chunks)
        // are folded once no work came for `folding.quiet` (not in the short gaps of a storm,
        // where it would only delay the next batch), a small step at a time, for as long as no
        // work comes: new work waits at most one step.
        let timed = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("the writer's timer");
        let mut quiet = false;
        // Cleared when a fold step fails (the records are then kept and read as they are).
        let mut folding = true;
        loop {
            let first = match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) if !folding || self.store.unfolded() == 0 => {
                    match rx.blocking_recv() {
                        Some(job) => job,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) if quiet => {
                    quiet = self.fold(FOLD_STEP) > 0;
                    folding = quiet || self.store.unfolded() == 0;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    match timed.block_on(async {
                        tokio::time::timeout(self.folding.quiet, rx.recv()).await
                    }) {
                        Ok(Some(job)) => job,
                        Ok(None) => break,
                        Err(_) => {
                            quiet = true;
                            continue;
                        }
                    }
                }
            };
            quiet = false;
            let mut jobs = vec![first];
            let mut n = jobs[0].inputs.len();
            while n < MAX_BATCH_INPUTS {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.inputs.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(jobs);
            // A storm that never pauses folds what goes beyond the bound after each commit (it
            // then costs what per-key writes cost), so what start-up replays stays bounded.
            let unfolded = self.store.unfolded();
            let max = self.folding.max_unfolded;
            if folding && unfolded > max {
                folding = self.fold((unfolded - max).max(FOLD_STEP)) > 0;
            }
        }
        debug!("Writer stopped: all submitters gone.");
    }

    /// One fold step; returns the changes moved (a failure is logged and counts as none: the
    /// records stay and are read as they are).
    fn fold(&self, max: usize) -> usize {
        if self.health.is_failing() {
            return 0;
        }
        match self.store.fold(max) {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "Cannot fold the store's per-commit records; they are kept and read as they are.");
                0
            }
        }
    }

    fn commit_batch(&mut self, jobs: Vec<Job>) {
        // After a failed commit or sync the writer goes on trying: each batch fails on its own
        // (503) until the store works again. Batches committed but not synced stay committed
        // (the store's view and the writer's agree); the next good sync makes them durable.
        let now = self.clock.now();
        let open = self.open.clone();
        let open = open.read().unwrap_or_else(|e| e.into_inner());
        let mut batch = Batch {
            store: &*self.store,
            cfg: &self.cfg,
            sinks: &self.sinks,
            now,
            next_id: self.next_id,
            open: &open,
            with_history: &self.with_history,
            armed: &self.armed,
            hot: &mut self.hot,
            openings: &self.openings,
            new_openings: Vec::new(),
            storm_threads: &self.storm_threads,
            new_storm_threads: HashMap::new(),
            timers: HashMap::new(),
            newly_armed: Vec::new(),
            incidents: HashMap::new(),
            fingerprints: HashMap::new(),
            executions: HashMap::new(),
            queued: Vec::new(),
            gather: Vec::new(),
            histories: HashMap::new(),
            observed: Vec::new(),
            w: WriteSet::default(),
        };
        let mut replies = Vec::with_capacity(jobs.len());
        let mut failed: Option<StoreError> = None;
        let intake = jobs.iter().any(|j| {
            j.inputs
                .iter()
                .any(|i| matches!(i, Input::Alert(_) | Input::Triaged(..)))
        });
        if intake {
            self.health.intake_written();
        }
        for job in jobs {
            let mut results = Vec::with_capacity(job.inputs.len());
            for input in job.inputs {
                match batch.apply(input) {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            replies.push((job.reply, results));
            if failed.is_some() {
                break;
            }
        }
        let next_id = batch.next_id;
        let new_openings = std::mem::take(&mut batch.new_openings);
        let new_storm_threads = std::mem::take(&mut batch.new_storm_threads);
        let newly_armed = std::mem::take(&mut batch.newly_armed);
        let changed_timers = std::mem::take(&mut batch.timers);
        let queued = std::mem::take(&mut batch.queued);
        let gather = std::mem::take(&mut batch.gather);
        let observed = std::mem::take(&mut batch.observed);
        let mut w = batch.w;
        // Only the latest version of each incident is written, however many inputs touched it.
        w.incidents = batch.incidents.into_values().collect();
        w.timers = changed_timers
            .iter()
            .map(|(id, t)| (*id, t.clone()))
            .collect();
        let started = std::time::Instant::now();
        let outcome = match failed {
            Some(e) => Err(e),
            None if w.is_empty() => Ok(()),
            None => self.store.commit(&w),
        };
        match outcome {
            Ok(()) => {
                self.next_id = next_id;
                // Large incidents move into the cache (their book facts are taken here); the
                // others go on to the syncer, which records and drops them.
                let (large, rest): (Vec<Incident>, Vec<Incident>) =
                    std::mem::take(&mut w.incidents)
                        .into_iter()
                        .partition(HotIncidents::worth_keeping);
                w.incidents = rest;
                let facts: Vec<_> = large
                    .iter()
                    .map(|i| (i.id, crate::domain::stats::Facts::of(i)))
                    .collect();
                for inc in large {
                    self.hot.put(inc);
                }
                let window = chrono::Duration::seconds(self.cfg.engine.storm_window_seconds as i64);
                self.openings.record(new_openings, now - window);
                for (source, id) in new_storm_threads {
                    match id {
                        Some(id) => self.storm_threads.insert(source, id),
                        None => self.storm_threads.remove(&source),
                    };
                }
                drop(open);
                let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
                for (fp, id) in &w.fingerprints {
                    match id {
                        Some(id) => open.insert(fp, *id),
                        None => open.remove(fp),
                    };
                }
                drop(open);
                for (id, t) in changed_timers {
                    self.armed.set(id, &t);
                }
                for (fp, _) in &w.history {
                    self.with_history.insert(fp);
                }
                let committed = Committed {
                    replies,
                    facts,
                    observed,
                    max_seq: w.outbox.iter().map(|e| e.seq).max(),
                    timers: newly_armed,
                    queued,
                    gather,
                    started,
                    intake,
                    writes: w,
                };
                if let Err(std::sync::mpsc::SendError(c)) = self.sync_tx.send(committed) {
                    // Only if the syncer thread died: nothing can be made durable any more.
                    self.health.failing.store(true, Ordering::SeqCst);
                    let e = Arc::new(EngineError::Store(StoreError::Storage(
                        "the sync thread stopped".into(),
                    )));
                    for (reply, _) in c.replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            Err(e) => {
                if intake {
                    self.health.intake_failed();
                }
                if !self.health.failing.swap(true, Ordering::SeqCst) {
                    error!(error = %e, "Commit failed; the batch was not acknowledged and incidentd is not ready until a write succeeds.");
                } else {
                    debug!(error = %e, "Commit failed again.");
                }
                let e = Arc::new(EngineError::Store(e));
                for (reply, _) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                // Re-read what is really stored: nothing of this batch is.
                match self.store.next_incident_id() {
                    Ok(id) => self.next_id = id,
                    Err(e) => warn!(error = %e, "Cannot re-read the id counter."),
                }
            }
        }
    }
}

/// Most batches whose sync failed that the syncer keeps to publish after a good sync.
const MAX_HELD: usize = 4096;

/// Makes committed batches durable, then answers and publishes them, in commit order.
struct Syncer {
    book: Arc<StatsBook>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    health: Arc<StoreHealth>,
    /// Batches whose sync failed (their callers were answered with the error): their effects
    /// are published after the next good sync, which makes them durable.
    held: Vec<Committed>,
    outbox_tx: watch::Sender<u64>,
    timer_tx: mpsc::UnboundedSender<Timer>,
    exec_tx: mpsc::UnboundedSender<String>,
    evidence_tx: mpsc::UnboundedSender<IncidentId>,
}

impl Syncer {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Committed>) {
        while let Ok(first) = rx.recv() {
            // Every batch committed before this flush starts is made durable by it.
            let mut group = vec![first];
            while let Ok(c) = rx.try_recv() {
                group.push(c);
            }
            self.health.sync_started();
            let result = self.store.flush();
            self.health.sync_ended();
            match result {
                Ok(()) => {
                    if self.health.failing.swap(false, Ordering::SeqCst) {
                        tracing::info!(
                            held = self.held.len(),
                            "Store writes are durable again; incidentd is ready."
                        );
                    }
                    for c in std::mem::take(&mut self.held) {
                        self.publish(c);
                    }
                    // An alert stored and acknowledged: webhook writes fit again.
                    if group.iter().any(|c| c.intake) {
                        self.health.intake_stored();
                    }
                    for c in group {
                        self.publish(c);
                    }
                }
                Err(e) => {
                    if !self.health.failing.swap(true, Ordering::SeqCst) {
                        error!(error = %e, "Sync failed: committed batches were not acknowledged (503) and incidentd is not ready until a sync succeeds.");
                    }
                    if group.iter().any(|c| c.intake) {
                        self.health.intake_failed();
                    }
                    let e = Arc::new(EngineError::Store(e));
                    for mut c in group {
                        for (reply, _) in c.replies.drain(..) {
                            let _ = reply.send(Err(e.clone()));
                        }
                        // Only what publishing needs (the book reads the incidents).
                        c.writes = WriteSet {
                            incidents: std::mem::take(&mut c.writes.incidents),
                            ..WriteSet::default()
                        };
                        self.held.push(c);
                    }
                    // Bounded during a long outage: the oldest batches' timers and queued
                    // executions are then only re-armed by the next start (from the store).
                    if self.held.len() > MAX_HELD {
                        let over = self.held.len() - MAX_HELD;
                        self.held.drain(..over);
                        warn!(dropped = over, "Batches held for a failing store exceed the bound; their timers and executions wait for a restart.");
                    }
                }
            }
        }
    }

    fn publish(&self, c: Committed) {
        self.book.record(&c.writes.incidents);
        self.book.record_facts(&c.facts);
        if !c.writes.is_empty() || !c.facts.is_empty() {
            let secs = c.started.elapsed().as_secs_f64();
            self.metrics.commit(secs);
        }
        for o in &c.observed {
            record(&self.metrics, o);
        }
        if let Some(seq) = c.max_seq {
            self.outbox_tx.send_if_modified(|w| {
                let newer = seq > *w;
                if newer {
                    *w = seq;
                }
                newer
            });
        }
        for t in c.timers {
            let _ = self.timer_tx.send(t);
        }
        for key in c.queued {
            let _ = self.exec_tx.send(key);
        }
        for id in c.gather {
            let _ = self.evidence_tx.send(id);
        }
        for (reply, results) in c.replies {
            let _ = reply.send(Ok(results));
        }
    }
}

/// Records one metric event under its exposed name (docs/metrics.md lists them).
fn record(m: &Metrics, o: &Observed) {
    use crate::telemetry::metrics::Approval;
    match o {
        Observed::AlertReceived { source, firing } => {
            m.alert_received(source, if *firing { "firing" } else { "resolved" })
        }
        Observed::IncidentOpened { severity, kind } => m.incident_opened(severity.as_str(), kind),
        Observed::IncidentResolved {
            severity,
            kind,
            seconds,
        } => {
            m.time_to_resolve(severity.as_str(), *seconds);
            m.incident_resolved(severity.as_str(), kind);
        }
        Observed::Acknowledged { severity, seconds } => {
            m.time_to_acknowledge(severity.as_str(), *seconds)
        }
        Observed::Approval(outcome) => m.approval(match outcome {
            ApprovalOutcome::Approved => Approval::Approved,
            ApprovalOutcome::Rejected => Approval::Rejected,
            ApprovalOutcome::Refused => Approval::Refused,
        }),
        Observed::ExecutionFinished { executor, success } => {
            m.execution_finished(executor, *success)
        }
        Observed::Escalated => m.escalated(),
    }
}

/// The decisions of one group commit, with an overlay so later inputs see earlier ones.
struct Batch<'a> {
    store: &'a dyn Store,
    cfg: &'a Config,
    sinks: &'a [String],
    now: chrono::DateTime<chrono::Utc>,
    next_id: u64,
    /// The writer's committed view of the fingerprints tree.
    open: &'a OpenKeys,
    with_history: &'a KeySet,
    /// The writer's armed timers, as committed.
    armed: &'a Armed,
    /// Large incidents as committed (the writer's cache).
    hot: &'a mut HotIncidents,
    /// Recent openings per source, as committed, and those of this batch.
    openings: &'a Openings,
    new_openings: Vec<(&'static str, chrono::DateTime<chrono::Utc>)>,
    /// Storm threads per source, as committed, and this batch's changes.
    storm_threads: &'a HashMap<String, IncidentId>,
    new_storm_threads: HashMap<String, Option<IncidentId>>,
    /// Incidents whose timers this batch changed, with their whole new set.
    timers: HashMap<IncidentId, Vec<Timer>>,
    /// Timers armed by this batch, handed to the timer task after the commit.
    newly_armed: Vec<Timer>,
    incidents: HashMap<IncidentId, Incident>,
    fingerprints: HashMap<String, Option<IncidentId>>,
    executions: HashMap<String, Execution>,
    /// Executions queued by this batch, handed to the executor after the commit.
    queued: Vec<String>,
    /// Incidents whose evidence this batch asked for, handed over after the commit.
    gather: Vec<IncidentId>,
    histories: HashMap<String, Vec<PastIncident>>,
    /// Metric events of this batch, recorded only once it is durable.
    observed: Vec<Observed>,
    w: WriteSet,
}

/// What the core looks up while the writer decides one input: the batch's overlay over the
/// committed state. A storage failure is kept and fails the batch after the decision.
struct BatchView<'b, 'a> {
    batch: &'b Batch<'a>,
    error: std::cell::RefCell<Option<StoreError>>,
}

impl View for BatchView<'_, '_> {
    fn open_incident(&self, key: &str) -> Option<IncidentId> {
        self.batch.open_for(key)
    }

    fn openings(&self, source: &str, since: chrono::DateTime<chrono::Utc>) -> usize {
        self.batch.openings.since(source, since)
            + self
                .batch
                .new_openings
                .iter()
                .filter(|(s, at)| *s == source && *at >= since)
                .count()
    }

    fn storm_thread(&self, source: &str) -> Option<IncidentId> {
        match self.batch.new_storm_threads.get(source) {
            Some(v) => *v,
            None => self.batch.storm_threads.get(source).copied(),
        }
    }

    fn execution(&self, key: &str) -> Option<Execution> {
        match self.batch.execution(key) {
            Ok(x) => x,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }
}

impl Batch<'_> {
    fn open_for(&self, key: &str) -> Option<IncidentId> {
        match self.fingerprints.get(key) {
            Some(v) => *v,
            None => self.open.get(key),
        }
    }

    /// The open incident of an alert's group; an incident opened before incidents were groups
    /// is still found by the alert's fingerprint.
    fn open_for_alert(&self, a: &crate::domain::alert::Alert) -> Option<IncidentId> {
        self.open_for(&a.group_key(&self.cfg.engine.group_by))
            .or_else(|| self.open_for(&a.fingerprint))
    }

    fn load(&mut self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        if let Some(i) = self.incidents.get(&id) {
            return Ok(Some(i.clone()));
        }
        self.load_committed(id)
    }

    /// The incident as this batch left it, moved out of the batch (no copy: a group's
    /// incident can hold hundreds of members). The caller must put a version back.
    fn take(&mut self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        if let Some(i) = self.incidents.remove(&id) {
            return Ok(Some(i));
        }
        // Moved out of the cache too: the commit puts the new version back.
        match self.hot.take(id) {
            Some(i) => Ok(Some(i)),
            None => self.load_committed(id),
        }
    }

    /// As committed: from the writer's cache of large incidents, else from the store.
    fn load_committed(&mut self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        if let Some(i) = self.hot.get(id) {
            return Ok(Some(i.clone()));
        }
        let mut inc = self.store.get_incident(id)?;
        if let Some(inc) = inc.as_mut().filter(|i| i.tally.is_none()) {
            // Stored before tallies: fold its timeline once, so that the core goes on from it.
            // (Not touched by this batch yet, so the store has all its events.)
            inc.tally = Some(crate::domain::tally::Tally::of(&self.store.timeline(id)?));
        }
        Ok(inc)
    }

    /// Stored history plus what this batch added, and the newest of its incidents as it is
    /// now (the one a re-fire within the flap window reopens).
    fn history(&mut self, fp: &str) -> Result<(Vec<PastIncident>, Option<Incident>), StoreError> {
        let mut h = if self.with_history.contains(fp) {
            self.store.history(fp)?
        } else {
            Vec::new()
        };
        if let Some(extra) = self.histories.get(fp) {
            h.extend(extra.iter().cloned());
        }
        let recent = match h.iter().max_by_key(|p| p.resolved_at) {
            Some(p) => self.load(p.id)?,
            None => None,
        };
        Ok((h, recent))
    }

    fn execution(&self, key: &str) -> Result<Option<Execution>, StoreError> {
        if let Some(x) = self.executions.get(key) {
            return Ok(Some(x.clone()));
        }
        self.store.execution(key)
    }

    fn timers_of(&mut self, id: IncidentId) -> &mut Vec<Timer> {
        let armed = self.armed;
        self.timers.entry(id).or_insert_with(|| armed.of(id))
    }

    /// Whether exactly this timer (kind and time) is armed, as this batch left it.
    fn is_armed(&self, t: &Timer) -> bool {
        match self.timers.get(&t.incident) {
            Some(set) => set.contains(t),
            None => self.armed.contains(t),
        }
    }

    fn arm(&mut self, t: Timer) {
        let set = self.timers_of(t.incident);
        set.retain(|x| x.kind != t.kind);
        set.push(t);
        set.sort_by_key(|x| x.kind);
        self.newly_armed.push(t);
    }

    fn disarm(&mut self, id: IncidentId, kind: TimerKind) {
        let set = self.timers_of(id);
        set.retain(|x| x.kind != kind);
    }

    /// Handles one input: looks up what the core needs, lets it decide, writes the decision.
    /// `Err` only for storage failures (which fail the whole batch).
    fn apply(&mut self, input: Input) -> Result<Result<Outcome, UserError>, StoreError> {
        let target = match &input {
            Input::Alert(a) | Input::Triaged(a, _) => self.open_for_alert(a),
            Input::Command { command, .. } => command_target(command),
            Input::ThreadMessage { incident, .. } => Some(*incident),
            Input::Timer(t) => {
                if !self.is_armed(t) {
                    // Disarmed since, or armed again for another time (a flapping alert's
                    // quiet period): the timer task still held this one. Nothing to do.
                    return Ok(Ok(Outcome {
                        incident: Some(t.incident),
                        created: false,
                        reply: None,
                        refused: false,
                    }));
                }
                // It fired: no longer armed, whatever the core decides.
                self.disarm(t.incident, t.kind);
                Some(t.incident)
            }
            Input::ExecutionStarted { incident, .. }
            | Input::ExecutionFinished { incident, .. }
            | Input::ExecutionInterrupted { incident, .. }
            | Input::FollowUpExported { incident, .. }
            | Input::VerificationFinished { incident, .. }
            | Input::VerificationCheck { incident, .. }
            | Input::Evidence { incident, .. }
            | Input::ChartFetched { incident } => Some(*incident),
            Input::StormJoined { lead, .. } => Some(*lead),
        };
        // An alert always gives its incident back (the core's contract, checked below), so
        // it is moved into the core; other inputs may be refused and get a copy.
        let moved = matches!(input, Input::Alert(_) | Input::Triaged(..));
        let existing = match target {
            Some(id) if moved => self.take(id)?,
            Some(id) => self.load(id)?,
            None => None,
        };
        let had = existing.as_ref().map(|i| i.id);
        // Alerts that may open an incident see the group's history (recurrence) and its most
        // recently resolved incident (flap window).
        let (history, recent) = match (&input, &existing) {
            (Input::Alert(a) | Input::Triaged(a, _), None) => {
                self.history(&a.group_key(&self.cfg.engine.group_by))?
            }
            _ => (Vec::new(), None),
        };
        let cfg = self.cfg;
        let view = BatchView {
            batch: self,
            error: Default::default(),
        };
        let ctx = Ctx {
            history: &history,
            recent: recent.as_ref(),
            now: self.now,
            next_id: IncidentId(self.next_id),
            view: &view,
        };
        let decided = handle(existing, input, cfg, ctx);
        if let Some(e) = view.error.into_inner() {
            return Err(e);
        }
        if let Some(id) = had.filter(|_| moved) {
            if !matches!(&decided, Ok(d) if d.incident.as_ref().is_some_and(|i| i.id == id)) {
                // Never expected: the batch no longer holds this incident's version, so the
                // whole batch fails (nothing is committed, the senders retry).
                return Err(StoreError::Storage(format!(
                    "internal error: an alert's decision did not return {id}"
                )));
            }
        }
        let d = match decided {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        self.write(d)
    }

    /// Writes one decision into the batch. Decides nothing.
    fn write(&mut self, d: Decision) -> Result<Result<Outcome, UserError>, StoreError> {
        self.observed.extend(d.observed);
        for x in d.executions {
            self.executions.insert(x.key.clone(), x.clone());
            self.w.executions.push(x);
        }
        let outcome = Outcome {
            incident: d.incident.as_ref().map(|i| i.id),
            created: d.created,
            reply: d.reply,
            refused: d.refused,
        };
        let Some(mut inc) = d.incident else {
            return Ok(Ok(outcome));
        };
        let id = inc.id;
        if d.created {
            self.next_id += 1;
            self.w.next_id = Some(self.next_id);
            self.new_openings.push((inc.source.as_str(), inc.opened_at));
        }
        for ev in d.events {
            self.w.events.push((id, inc.timeline_len, ev));
            inc.timeline_len += 1;
        }
        if let Some((key, past)) = d.past {
            self.histories
                .entry(key.clone())
                .or_default()
                .push(past.clone());
            self.w.history.push((key, past));
        }
        for (key, v) in d.open {
            self.fingerprints.insert(key.clone(), v);
            self.w.fingerprints.push((key, v));
        }
        for (source, v) in d.storm_threads {
            self.new_storm_threads.insert(source, v);
        }
        for effect in d.effects {
            match effect {
                Effect::Chat(body) => {
                    // Cards and reports come as "render at delivery": the outbox builds them
                    // from the incident when they leave.
                    for sink in self.sinks {
                        self.w.outbox.push(OutboxEntry {
                            seq: self.store.next_seq()?,
                            sink: sink.clone(),
                            incident: id,
                            body: body.clone(),
                            created_at: self.now,
                        });
                    }
                }
                Effect::ArmTimer(t) => self.arm(t),
                Effect::DisarmTimer(kind) => self.disarm(id, kind),
                Effect::Execute { key, .. } => self.queued.push(key),
                Effect::GatherEvidence => self.gather.push(id),
            }
        }
        self.incidents.insert(id, inc);
        // What follows for other incidents, in the same commit; their refusals are nobody's
        // to hear (the core asked), storage failures fail the batch.
        for input in d.then {
            let _refused = self.apply(input)?;
        }
        Ok(Ok(outcome))
    }
}
