//! Delivery of chat messages from the durable outbox, and the timer wheel.
//!
//! One worker per chat sink. Across incidents the most urgent entry goes first: new P0/P1 cards
//! and escalation mentions, then other new cards, then notes, edits and reports (see
//! [`Urgency`]); notes of one incident that wait together are sent as one message. Within an
//! incident, entries are delivered in sequence order, never reordered; an incident
//! whose head entry is backing off holds back only its own later entries. A 429 pauses the whole
//! sink for `Retry-After`; network errors and 5xx back off exponentially with jitter; an entry
//! is deleted only after the platform accepted it. A card edit that a later edit of the same
//! incident supersedes is dropped instead of sent (after an outage, one edit rather than fifty),
//! and so is an edit queued before its card was posted: the card is built when it is sent, so it
//! already shows the change (in an alert storm under a platform's rate limit, every new incident
//! with a repeat would otherwise cost two calls). A card shows the chart at hand and never
//! waits for Prometheus: a chart not at hand is fetched off the delivery path and added by a
//! later edit (see [`run_chart_edits`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::runner::Engine;
use super::Input;
use crate::config::Config;
use crate::domain::incident::{Incident, IncidentId};
use crate::domain::severity::Severity;
use crate::ports::blocking;
use crate::ports::{
    ChatBody, ChatError, ChatPort, Clock, Delivery, OutboundMessage, OutboxEntry, Pending, Store,
    StoreError, Timer,
};
use crate::telemetry::metrics::{DeliveryResult, Metrics};

/// Tuning for the outbox worker.
#[derive(Clone)]
pub struct OutboxConfig {
    /// How many queued entries a round reads (and orders by urgency) at most.
    pub batch: usize,
    /// Most urgent first (see [`Urgency`]) and notes coalesced; `false`: first in, first out
    /// across incidents (benchmarks compare the two).
    pub priority: bool,
    /// New entries are read again once the worker has spent this many times a read's duration
    /// since the read (or after any delivery slower than the read); 0: after every delivery.
    pub reread_factor: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Per-call timeout: a hung platform call counts as a transient error.
    pub call_timeout: Duration,
    /// Where delivery counts and latencies are recorded.
    pub metrics: Arc<Metrics>,
    /// Draws the metric on cards as they are rendered for delivery (`None`: no charts).
    pub charts: Option<Arc<dyn crate::ports::ChartSource>>,
    /// Told the incidents whose card went out without its chart once the chart came (the app
    /// turns each into a card edit through the engine: see [`run_chart_edits`]).
    pub chart_ready: Option<mpsc::UnboundedSender<IncidentId>>,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            batch: 1024,
            priority: true,
            reread_factor: 10,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            call_timeout: Duration::from_secs(15),
            metrics: Arc::new(Metrics::new()),
            charts: None,
            chart_ready: None,
        }
    }
}

/// Exponential backoff with full jitter in [d/2, d].
pub fn backoff(cfg: &OutboxConfig, attempts: u32) -> Duration {
    let exp = cfg
        .base_backoff
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
    let d = exp.min(cfg.max_backoff);
    let half = d / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

/// The longest a delivered entry's deletion waits for its sync while a round goes on.
const COMPLETION_SYNC: Duration = Duration::from_millis(200);

/// Deletions made since the last sync.
struct Unsynced {
    since: Option<Instant>,
}

impl Unsynced {
    fn note(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    /// Syncs when `now_anyway` or when the oldest unsynced deletion is older than `COMPLETION_SYNC`.
    async fn sync(&mut self, store: &Arc<dyn Store>, sink: &str, now_anyway: bool) {
        let Some(since) = self.since else { return };
        if !now_anyway && since.elapsed() < COMPLETION_SYNC {
            return;
        }
        let s = store.clone();
        match blocking(move || s.flush()).await {
            Ok(()) => self.since = None,
            Err(e) => {
                error!(sink = %sink, error = %e, "Cannot sync delivered entries' deletions; they may be sent again after a crash.")
            }
        }
    }
}

/// Is this entry a card edit (which a later edit of the same incident supersedes)?
fn is_card_edit(body: &ChatBody) -> bool {
    matches!(
        body,
        ChatBody::UpdateCard { .. } | ChatBody::RenderCard { post: false }
    )
}

/// What the port is given: stored card and report entries are built from the incident as it
/// is now. A card comes with its incident (for its chart).
fn render(
    store: &dyn Store,
    config: &Config,
    entry: &OutboxEntry,
) -> Result<(Delivery, Option<Incident>), StoreError> {
    let pending = entry.body.pending();
    if let Pending::Ready(d) = pending {
        return Ok((d, None));
    }
    let Some(inc) = store.get_incident(entry.incident)? else {
        return Err(StoreError::Storage(format!(
            "{} has a queued card or report but is not stored",
            entry.incident
        )));
    };
    let post = match pending {
        Pending::Ready(_) => unreachable!("returned above"),
        Pending::Render { post } => post,
        Pending::RenderReport => {
            let timeline = store.timeline(entry.incident)?;
            let report = crate::domain::report::build_report(&inc, &timeline, &config.classifier);
            return Ok((Delivery::Report { report }, None));
        }
    };
    let card = crate::engine::card(&inc, config);
    let d = if post {
        Delivery::PostCard { card }
    } else {
        Delivery::UpdateCard { card }
    };
    Ok((d, Some(inc)))
}

/// How urgent a queued entry is. Across incidents the most urgent goes first; within one
/// incident's thread the order never changes (an incident's queue is as urgent as the most
/// urgent entry in it, so its earlier entries go with that one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// A new P0/P1 card, or a note that mentions people (an escalation).
    Page,
    /// A new P2/P3 card.
    Card,
    /// Notes, card edits, reports.
    Routine,
}

/// The urgency of a stored body; `severity` is the incident's, for cards built at delivery.
pub fn urgency(body: &ChatBody, severity: Option<Severity>) -> Urgency {
    let card = |s: Option<Severity>| match s {
        Some(s) if s <= Severity::P1 => Urgency::Page,
        _ => Urgency::Card,
    };
    match body {
        ChatBody::Note { mentions, .. } if !mentions.is_empty() => Urgency::Page,
        ChatBody::RenderCard { post: true } => card(severity),
        ChatBody::PostCard { card: c } => card(Some(c.severity)),
        _ => Urgency::Routine,
    }
}

/// Notes of one incident that wait together are sent as one message, up to this many
/// characters (Discord's content limit is 2000; Slack's section text 3000).
pub const NOTE_COALESCE_CHARS: usize = 1800;

/// While new entries keep arriving, the worker reads the outbox again after a delivery that
/// took longer than the last read, or once it has spent `reread_factor` times the read's own
/// duration since the read (reading costs at most about a tenth of its time on a fast sink),
/// and at least every `REREAD_MAX`: so a page queued behind a long backlog waits for the
/// message being sent, not for the backlog.
const REREAD_MAX: Duration = Duration::from_millis(500);

/// One incident's queued entries, in `seq` order.
struct Queue {
    entries: VecDeque<OutboxEntry>,
    /// The most urgent of `entries`.
    urgency: Urgency,
}

impl Queue {
    /// Lower goes first: the most urgent queue, and among equals the oldest head.
    fn rank(&self, prioritize: bool) -> (Urgency, u64) {
        let head = self.entries.front().map_or(u64::MAX, |e| e.seq);
        if !prioritize {
            return (Urgency::Routine, head);
        }
        (self.urgency, head)
    }

    fn refresh(&mut self, sev: &HashMap<IncidentId, Severity>) {
        self.urgency = self
            .entries
            .iter()
            .map(|e| urgency(&e.body, sev.get(&e.incident).copied()))
            .min()
            .unwrap_or(Urgency::Routine);
    }
}

/// Takes the head entry and, when it is a note and `coalesce`, the notes right behind it (up
/// to [`NOTE_COALESCE_CHARS`]) and the card edits between them that `superseded` says a later
/// edit replaces (they are dropped, not sent).
fn take_group(
    q: &mut VecDeque<OutboxEntry>,
    coalesce: bool,
    superseded: impl Fn(&OutboxEntry) -> bool,
) -> Vec<OutboxEntry> {
    let Some(head) = q.pop_front() else {
        return vec![];
    };
    let mut len = match &head.body {
        ChatBody::Note { text, .. } if coalesce => text.chars().count(),
        _ => return vec![head],
    };
    let mut group = vec![head];
    // Superseded edits taken so far, kept only if a note follows them.
    let mut skipped = vec![];
    while let Some(next) = q.front() {
        match &next.body {
            ChatBody::Note { text, .. } => {
                let n = text.chars().count() + 1;
                if len + n > NOTE_COALESCE_CHARS {
                    break;
                }
                len += n;
                group.append(&mut skipped);
                group.extend(q.pop_front());
            }
            _ if is_card_edit(&next.body) && superseded(next) => skipped.extend(q.pop_front()),
            _ => break,
        }
    }
    for e in skipped.into_iter().rev() {
        q.push_front(e);
    }
    group
}

/// One message for a group of notes: their texts, one per line, and everyone they mention.
fn coalesced(group: &[OutboxEntry]) -> Delivery {
    let mut texts = vec![];
    let mut mentions: Vec<String> = vec![];
    for e in group {
        if let ChatBody::Note { text, mentions: m } = &e.body {
            texts.push(text.as_str());
            for x in m {
                if !mentions.contains(x) {
                    mentions.push(x.clone());
                }
            }
        }
    }
    Delivery::Note {
        text: texts.join("\n"),
        mentions,
    }
}

/// The idempotency key of a group: the entry's own for one entry, else its first and last
/// `seq` (a group made differently after a crash is a different message, never a dropped one).
fn group_key(group: &[OutboxEntry]) -> String {
    match group {
        [one] => one.key(),
        [first, .., last] => format!("incidentd:{}:{}-{}", first.sink, first.seq, last.seq),
        [] => String::new(),
    }
}

/// Runs until `shutdown` turns true. Survives store and platform errors by retrying.
/// `durable` is the writer's durable watermark: only entries with `seq` at or below it are sent.
///
/// Each round reads up to `cfg.batch` queued entries and sends them most urgent first (see
/// [`Urgency`]), in `seq` order within an incident; while new entries keep arriving it reads
/// again after a delivery (see `REREAD_MAX`), so a new P0 card waits for the message being
/// sent, not for the backlog.
pub async fn run_outbox(
    store: Arc<dyn Store>,
    config: Arc<Config>,
    port: Arc<dyn ChatPort>,
    mut durable: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    cfg: OutboxConfig,
) {
    let sink = port.name().to_string();
    let mut attempts: HashMap<u64, u32> = HashMap::new();
    let mut not_before: HashMap<IncidentId, Instant> = HashMap::new();
    let mut paused_until: Option<Instant> = None;
    let mut unsynced = Unsynced { since: None };
    // Severity of incidents with a card post queued (read once per card).
    let mut sev: HashMap<IncidentId, Severity> = HashMap::new();
    'rounds: loop {
        if *shutdown.borrow() {
            break;
        }
        let watermark = *durable.borrow_and_update();
        let read_at = Instant::now();
        let s = store.clone();
        let sk = sink.clone();
        let limit = cfg.batch;
        let entries = match blocking(move || s.outbox_pending(&sk, limit)).await {
            Ok(mut e) => {
                // Committed but not yet synced: wait for the watermark to pass them.
                e.retain(|e| e.seq <= watermark);
                e
            }
            Err(e) => {
                error!(sink = %sink, error = %e, "Cannot read the outbox; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let read = entries.len();
        let read_cost = read_at.elapsed();
        let reread_after = (read_cost * cfg.reread_factor).min(REREAD_MAX);
        if cfg.priority {
            let unknown: Vec<IncidentId> = entries
                .iter()
                .filter(|e| matches!(e.body, ChatBody::RenderCard { post: true }))
                .map(|e| e.incident)
                .filter(|i| !sev.contains_key(i))
                .collect();
            if !unknown.is_empty() {
                let s = store.clone();
                let found = blocking(move || {
                    let mut found = vec![];
                    for id in unknown {
                        if let Some(inc) = s.get_incident(id)? {
                            found.push((id, inc.severity));
                        }
                    }
                    Ok(found)
                })
                .await;
                match found {
                    Ok(found) => sev.extend(found),
                    // Not fatal: such a card counts as a P2/P3 card this round.
                    Err(e) => warn!(sink = %sink, error = %e, "Cannot read incidents' severity."),
                }
            }
        }
        let mut queues: HashMap<IncidentId, Queue> = HashMap::new();
        // The last card edit queued per incident: earlier ones are superseded.
        let mut last_update: HashMap<IncidentId, u64> = HashMap::new();
        for e in entries {
            if is_card_edit(&e.body) {
                last_update.insert(e.incident, e.seq);
            }
            queues
                .entry(e.incident)
                .or_insert_with(|| Queue {
                    entries: VecDeque::new(),
                    urgency: Urgency::Routine,
                })
                .entries
                .push_back(e);
        }
        sev.retain(|i, _| queues.contains_key(i));
        for q in queues.values_mut() {
            q.entries.make_contiguous().sort_by_key(|e| e.seq);
            q.refresh(&sev);
        }
        let mut wake_at: Option<Instant> = paused_until;
        let mut progressed = false;
        let mut reread = false;
        let mut held: HashSet<IncidentId> = HashSet::new();
        // Incidents whose card was posted in this round. The card was built at delivery from
        // the incident as stored then, which includes every change of this round's entries
        // (read before it, and committed with their incident): their later edits are
        // superseded too. Cards stored in the entry (older outboxes) do not count.
        let mut posted: HashSet<IncidentId> = HashSet::new();
        loop {
            let now = Instant::now();
            if paused_until.is_some_and(|t| t > now) {
                break;
            }
            paused_until = None;
            // The most urgent incident that may send now.
            let mut best: Option<((Urgency, u64), IncidentId)> = None;
            for (id, q) in &queues {
                if q.entries.is_empty() || held.contains(id) {
                    continue;
                }
                if let Some(t) = not_before.get(id).copied() {
                    if t > now {
                        held.insert(*id);
                        wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                        continue;
                    }
                }
                let rank = q.rank(cfg.priority);
                if best.is_none_or(|(r, _)| rank < r) {
                    best = Some((rank, *id));
                }
            }
            let Some((_, incident)) = best else { break };
            let q = queues.get_mut(&incident).expect("picked from the map");
            let is_superseded = |e: &OutboxEntry| {
                is_card_edit(&e.body)
                    && (last_update.get(&e.incident) != Some(&e.seq)
                        || posted.contains(&e.incident))
            };
            let group = take_group(&mut q.entries, cfg.priority, is_superseded);
            let entry = group[0].clone();
            let superseded = is_superseded(&entry);
            let mut call_started = Instant::now();
            let result = if superseded {
                Ok(Default::default())
            } else {
                let s = store.clone();
                let (sk, e2, conf) = (sink.clone(), entry.clone(), config.clone());
                let looked_up = blocking(move || {
                    let thread = s.thread_for(&sk, e2.incident)?;
                    Ok((thread, render(&*s, &conf, &e2)?))
                });
                let (thread, (mut rendered, card_of)) = match looked_up.await {
                    Ok(t) => t,
                    Err(e) => {
                        error!(sink = %sink, error = %e, "Cannot read the thread or the incident; retrying.");
                        put_back(q, group);
                        held.insert(incident);
                        wake_at = Some(Instant::now() + Duration::from_secs(1));
                        continue;
                    }
                };
                if group.len() > 1 {
                    rendered = coalesced(&group);
                }
                // The metric on the card: only what is at hand. Delivery never waits for
                // Prometheus; a chart not at hand (or a stale one) is fetched off this path,
                // and a card that went out without it gets an edit when it comes.
                if let (Some(charts), Some(inc)) = (&cfg.charts, card_of) {
                    if let Delivery::PostCard { card } | Delivery::UpdateCard { card } =
                        &mut rendered
                    {
                        let at_hand = charts.at_hand(&inc);
                        card.chart = at_hand.chart;
                        if at_hand.fetch {
                            let (charts, ready) = (charts.clone(), cfg.chart_ready.clone());
                            tokio::spawn(async move {
                                for id in charts.fetch(&inc).await {
                                    if let Some(ready) = &ready {
                                        let _ = ready.send(id);
                                    }
                                }
                            });
                        }
                    }
                }
                call_started = Instant::now();
                let msg = OutboundMessage {
                    key: group_key(&group),
                    incident: entry.incident,
                    created_at: entry.created_at,
                    thread,
                    body: &rendered,
                };
                // A stop does not wait for a slow platform: the entry stays queued for next time.
                let call = tokio::time::timeout(cfg.call_timeout, port.deliver(msg));
                tokio::select! {
                    r = call => match r {
                        Ok(r) => r,
                        Err(_) => Err(ChatError::Transient("timed out".into())),
                    },
                    _ = shutdown.changed() => break 'rounds,
                }
            };
            let outcome = match &result {
                Ok(_) => DeliveryResult::Ok,
                Err(ChatError::RateLimited { .. }) => DeliveryResult::RateLimited,
                Err(ChatError::Transient(_)) => DeliveryResult::Transient,
                Err(ChatError::Permanent(_)) => DeliveryResult::Permanent,
            };
            if !superseded {
                cfg.metrics.chat_delivery(&sink, outcome);
            }
            match result {
                Ok(delivered) => {
                    if !superseded {
                        for e in &group {
                            let waited = (chrono::Utc::now() - e.created_at)
                                .num_milliseconds()
                                .max(0) as f64
                                / 1000.0;
                            cfg.metrics.chat_delivery_latency(&sink, waited);
                        }
                    }
                    let s = store.clone();
                    let g2 = group.clone();
                    let thread = delivered.thread.clone();
                    let completed = blocking(move || {
                        for e in &g2 {
                            s.outbox_complete(e, thread.as_ref())?;
                        }
                        Ok(())
                    })
                    .await;
                    if let Err(e) = completed {
                        error!(sink = %sink, error = %e, "Delivered but cannot delete the outbox entry; it may be sent again.");
                        held.insert(incident);
                        wake_at = Some(Instant::now() + Duration::from_secs(1));
                        continue;
                    }
                    if matches!(
                        entry.body,
                        ChatBody::RenderCard { post: true } | ChatBody::PostCard { .. }
                    ) {
                        sev.remove(&incident);
                        if matches!(entry.body, ChatBody::RenderCard { .. }) {
                            posted.insert(incident);
                        }
                    }
                    q.refresh(&sev);
                    unsynced.note();
                    unsynced.sync(&store, &sink, false).await;
                    for e in &group {
                        attempts.remove(&e.seq);
                    }
                    not_before.remove(&incident);
                    progressed = true;
                    debug!(sink = %sink, incident = %entry.incident, seq = entry.seq, coalesced = group.len(), superseded, "Chat message delivered.");
                    // A sink slower than a read (a paced platform) reads after every delivery.
                    if !superseded
                        && durable.has_changed().unwrap_or(false)
                        && (read_at.elapsed() >= reread_after
                            || call_started.elapsed() >= read_cost)
                    {
                        // Something new was queued: it may be more urgent than what is left.
                        reread = true;
                        break;
                    }
                }
                Err(ChatError::RateLimited { retry_after }) => {
                    warn!(sink = %sink, incident = %entry.incident, ?retry_after, "Rate limited; pausing the sink.");
                    put_back(q, group);
                    let t = Instant::now() + retry_after;
                    paused_until = Some(t);
                    wake_at = Some(t);
                    break;
                }
                Err(ChatError::Transient(msg)) => {
                    let n = attempts.entry(entry.seq).or_insert(0);
                    *n += 1;
                    let wait = backoff(&cfg, *n);
                    warn!(sink = %sink, incident = %entry.incident, attempt = *n, ?wait, error = %msg, "Chat delivery failed; will retry.");
                    put_back(q, group);
                    let t = Instant::now() + wait;
                    not_before.insert(incident, t);
                    held.insert(incident);
                    wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                }
                Err(ChatError::Permanent(msg)) => {
                    error!(sink = %sink, incident = %entry.incident, seq = entry.seq, coalesced = group.len(), error = %msg, "The platform rejected a message for good; moved to the dead-letter tree.");
                    let s = store.clone();
                    let g2 = group.clone();
                    let m = msg.clone();
                    let dead = blocking(move || {
                        for e in &g2 {
                            s.outbox_dead_letter(e, &m)?;
                        }
                        Ok(())
                    })
                    .await;
                    if let Err(e) = dead {
                        error!(sink = %sink, error = %e, "Cannot dead-letter the entry.");
                        held.insert(incident);
                        wake_at = Some(Instant::now() + Duration::from_secs(1));
                        continue;
                    }
                    q.refresh(&sev);
                    unsynced.note();
                    for e in &group {
                        attempts.remove(&e.seq);
                    }
                    progressed = true;
                }
            }
        }
        unsynced.sync(&store, &sink, true).await;
        if *shutdown.borrow() {
            break;
        }
        if reread || (progressed && read >= cfg.batch) {
            continue;
        }
        if progressed && wake_at.is_none() {
            // Something new may have been queued while we delivered.
            continue;
        }
        let sleep = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = durable.changed() => {}
            _ = sleep => {}
            _ = shutdown.changed() => {}
        }
    }
    unsynced.sync(&store, &sink, true).await;
    info!(sink = %sink, "Outbox worker stopped.");
}

/// Returns a group that was not delivered to the front of its incident's queue.
fn put_back(q: &mut Queue, group: Vec<OutboxEntry>) {
    for e in group.into_iter().rev() {
        q.entries.push_front(e);
    }
}

/// Edits the cards that went out without their chart, once it came: each incident named on
/// `ready` goes to the engine as [`Input::ChartFetched`], which queues the edit through the
/// outbox like any other (durable, in the thread's order, coalesced with the card's other
/// edits).
pub async fn run_chart_edits(
    engine: Engine,
    mut ready: mpsc::UnboundedReceiver<IncidentId>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            id = ready.recv() => match id {
                Some(incident) => {
                    if let Err(e) = engine.submit_one(Input::ChartFetched { incident }).await {
                        debug!(%incident, error = %e, "No card edit for the chart.");
                    }
                }
                None => break,
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// Fires persisted timers: those from the store at start, and those the writer arms later.
pub async fn run_timers(
    engine: Engine,
    clock: Arc<dyn Clock>,
    initial: Vec<Timer>,
    mut armed: mpsc::UnboundedReceiver<Timer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut due = super::due::DueTimers::new(initial);
    loop {
        let now = clock.now();
        while let Some(t) = due.pop_due(now) {
            if let Err(e) = engine.submit_one(Input::Timer(t)).await {
                warn!(incident = %t.incident, error = %e, "Timer input failed.");
            }
        }
        let next = due.first().map(|t| t.at);
        let sleep = async {
            match next {
                Some(at) => {
                    let wait = (at - clock.now()).to_std().unwrap_or(Duration::ZERO);
                    tokio::time::sleep(wait).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            t = armed.recv() => match t {
                Some(t) => {
                    // Everything armed meanwhile at once: during a storm the writer arms
                    // thousands a second, and a backlog here costs memory in the channel.
                    due.insert(t);
                    while let Ok(t) = armed.try_recv() {
                        due.insert(t);
                    }
                }
                None => break,
            },
            _ = sleep => {}
            _ = shutdown.changed() => break,
        }
    }
}
