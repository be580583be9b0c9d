//! Delivery of chat messages from the durable outbox, and the timer wheel.
//!
//! One worker per chat sink. Entries are delivered in sequence order per incident; an incident
//! whose head entry is backing off holds back only its own later entries. A 429 pauses the whole
//! sink for `Retry-After`; network errors and 5xx back off exponentially with jitter; an entry
//! is deleted only after the platform accepted it. A card edit that a later edit of the same
//! incident supersedes is dropped instead of sent (after an outage, one edit rather than fifty),
//! and so is an edit queued before its card was posted: the card is built when it is sent, so it
//! already shows the change (in an alert storm under a platform's rate limit, every new incident
//! with a repeat would otherwise cost two calls).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::runner::Engine;
use super::Input;
use crate::config::Config;
use crate::domain::incident::IncidentId;
use crate::ports::blocking;
use crate::ports::{
    ChatBody, ChatError, ChatPort, Clock, Delivery, OutboundMessage, OutboxEntry, Pending, Store,
    StoreError, Timer, TimerKind,
};
use crate::telemetry::metrics::{DeliveryResult, Metrics};

/// Tuning for the outbox worker.
#[derive(Clone)]
pub struct OutboxConfig {
    pub batch: usize,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Per-call timeout: a hung platform call counts as a transient error.
    pub call_timeout: Duration,
    /// Where delivery counts and latencies are recorded.
    pub metrics: Arc<Metrics>,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            batch: 256,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            call_timeout: Duration::from_secs(15),
            metrics: Arc::new(Metrics::new()),
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
/// is now.
fn render(store: &dyn Store, config: &Config, entry: &OutboxEntry) -> Result<Delivery, StoreError> {
    let pending = entry.body.pending();
    if let Pending::Ready(d) = pending {
        return Ok(d);
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
            return Ok(Delivery::Report { report });
        }
    };
    let card = crate::engine::card(&inc, config);
    Ok(if post {
        Delivery::PostCard { card }
    } else {
        Delivery::UpdateCard { card }
    })
}

/// Runs until `shutdown` turns true. Survives store and platform errors by retrying.
/// `durable` is the writer's durable watermark: only entries with `seq` at or below it are sent.
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
    loop {
        if *shutdown.borrow() {
            break;
        }
        let watermark = *durable.borrow_and_update();
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
        let mut wake_at: Option<Instant> = paused_until;
        let mut progressed = false;
        let mut held: HashSet<IncidentId> = HashSet::new();
        // The last card edit queued per incident: earlier ones are superseded.
        let mut last_update: HashMap<IncidentId, u64> = HashMap::new();
        // Incidents whose card was posted in this round. The card was built at delivery from
        // the incident as stored then, which includes every change of this round's entries
        // (read before it, and committed with their incident): their later edits are
        // superseded too. Cards stored in the entry (older outboxes) do not count.
        let mut posted: HashSet<IncidentId> = HashSet::new();
        for e in &entries {
            if is_card_edit(&e.body) {
                last_update.insert(e.incident, e.seq);
            }
        }
        for entry in &entries {
            let now = Instant::now();
            if paused_until.is_some_and(|t| t > now) {
                break;
            }
            paused_until = None;
            if held.contains(&entry.incident) {
                continue;
            }
            if let Some(t) = not_before.get(&entry.incident).copied() {
                if t > now {
                    held.insert(entry.incident);
                    wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                    continue;
                }
            }
            let superseded = is_card_edit(&entry.body)
                && (last_update.get(&entry.incident) != Some(&entry.seq)
                    || posted.contains(&entry.incident));
            let result = if superseded {
                Ok(Default::default())
            } else {
                let s = store.clone();
                let (sk, e2, conf) = (sink.clone(), entry.clone(), config.clone());
                let looked_up = blocking(move || {
                    let thread = s.thread_for(&sk, e2.incident)?;
                    Ok((thread, render(&*s, &conf, &e2)?))
                });
                let (thread, rendered) = match looked_up.await {
                    Ok(t) => t,
                    Err(e) => {
                        error!(sink = %sink, error = %e, "Cannot read the thread or the incident; retrying.");
                        held.insert(entry.incident);
                        wake_at = Some(Instant::now() + Duration::from_secs(1));
                        continue;
                    }
                };
                let msg = OutboundMessage {
                    key: entry.key(),
                    incident: entry.incident,
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
                    _ = shutdown.changed() => break,
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
                        let waited = (chrono::Utc::now() - entry.created_at)
                            .num_milliseconds()
                            .max(0) as f64
                            / 1000.0;
                        cfg.metrics.chat_delivery_latency(&sink, waited);
                    }
                    let s = store.clone();
                    let e2 = entry.clone();
                    let thread = delivered.thread.clone();
                    if let Err(e) = blocking(move || s.outbox_complete(&e2, thread.as_ref())).await
                    {
                        error!(sink = %sink, error = %e, "Delivered but cannot delete the outbox entry; it may be sent again.");
                        held.insert(entry.incident);
                        wake_at = Some(Instant::now() + Duration::from_secs(1));
                        continue;
                    }
                    if matches!(entry.body, ChatBody::RenderCard { post: true }) {
                        posted.insert(entry.incident);
                    }
                    unsynced.note();
                    unsynced.sync(&store, &sink, false).await;
                    attempts.remove(&entry.seq);
                    not_before.remove(&entry.incident);
                    progressed = true;
                    debug!(sink = %sink, incident = %entry.incident, seq = entry.seq, superseded, "Chat message delivered.");
                }
                Err(ChatError::RateLimited { retry_after }) => {
                    warn!(sink = %sink, incident = %entry.incident, ?retry_after, "Rate limited; pausing the sink.");
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
                    let t = Instant::now() + wait;
                    not_before.insert(entry.incident, t);
                    held.insert(entry.incident);
                    wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                }
                Err(ChatError::Permanent(msg)) => {
                    error!(sink = %sink, incident = %entry.incident, seq = entry.seq, error = %msg, "The platform rejected a message for good; moved to the dead-letter tree.");
                    let s = store.clone();
                    let e2 = entry.clone();
                    let m = msg.clone();
                    if let Err(e) = blocking(move || s.outbox_dead_letter(&e2, &m)).await {
                        error!(sink = %sink, error = %e, "Cannot dead-letter the entry.");
                        held.insert(entry.incident);
                        wake_at = Some(Instant::now() + Duration::from_secs(1));
                        continue;
                    }
                    unsynced.note();
                    attempts.remove(&entry.seq);
                    progressed = true;
                }
            }
        }
        unsynced.sync(&store, &sink, true).await;
        if *shutdown.borrow() {
            break;
        }
        if progressed && entries.len() >= cfg.batch {
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

/// Fires persisted timers: those from the store at start, and those the writer arms later.
pub async fn run_timers(
    engine: Engine,
    clock: Arc<dyn Clock>,
    initial: Vec<Timer>,
    mut armed: mpsc::UnboundedReceiver<Timer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut due: BTreeSet<(chrono::DateTime<chrono::Utc>, IncidentId, TimerKind)> =
        initial.iter().map(|t| (t.at, t.incident, t.kind)).collect();
    loop {
        let now = clock.now();
        while let Some(&(at, incident, kind)) = due.first() {
            if at > now {
                break;
            }
            due.pop_first();
            let t = Timer { incident, kind, at };
            if let Err(e) = engine.submit_one(Input::Timer(t)).await {
                warn!(%incident, error = %e, "Timer input failed.");
            }
        }
        let sleep = async {
            match due.first() {
                Some(&(at, _, _)) => {
                    let wait = (at - clock.now()).to_std().unwrap_or(Duration::ZERO);
                    tokio::time::sleep(wait).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            t = armed.recv() => match t {
                Some(t) => { due.insert((t.at, t.incident, t.kind)); }
                None => break,
            },
            _ = sleep => {}
            _ = shutdown.changed() => break,
        }
    }
}
