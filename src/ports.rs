//! The traits the engine needs from the outside world (store, chat, clock), and the records
//! they exchange. Only `app.rs` knows which implementations stand behind them.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::card::IncidentCard;
use crate::domain::incident::{Incident, IncidentId, PastIncident, Status, TimelineEvent};
use crate::domain::playbook::{ActionSpec, VerifySpec};
use crate::domain::report::Report;
use crate::domain::severity::Severity;

/// Wall-clock time, injected so the core and tests control it.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that follows tokio's (pausable) time from a fixed start: tests advance it with
/// `tokio::time::advance` and timers fire exactly when the clock says they should.
pub struct TokioClock {
    start_wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new(start_wall: DateTime<Utc>) -> Self {
        TokioClock {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.start_wall
            + chrono::Duration::from_std(self.start.elapsed()).unwrap_or(chrono::Duration::zero())
    }
}

/// Where a card lives on a platform: the channel and the message (thread root) id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadRef {
    pub channel: String,
    pub message_id: String,
}

/// What a chat sink is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatBody {
    /// A card post with the card itself, as versions before `RenderCard` stored it: still read
    /// (and delivered as stored) from an older outbox; the engine no longer writes it.
    PostCard { card: IncidentCard },
    /// A card edit with the card itself; like `PostCard`, only read from an older outbox.
    UpdateCard { card: IncidentCard },
    /// A card post (`post`) or edit, as the engine queues it: the card is built from the
    /// incident as it is when the message leaves, so it is never stale after an outage and is
    /// not stored twice. The outbox turns it into a [`Delivery`] card; ports never see it.
    RenderCard { post: bool },
    /// A reply in the incident's thread. `mentions` are people or groups to notify, written
    /// like policy entries (`slack:U123`, `slack-group:S1`, `discord:42`, `discord-role:7`,
    /// `console:alice`); each platform renders the ones that are its own.
    Note {
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<String>,
    },
    /// The post-incident report, in the incident's thread: each platform renders it natively
    /// within its limits (in several messages, in order, when it does not fit one). Only read
    /// from an older outbox: the engine queues `RenderReport`.
    Report { report: Report },
    /// The post-incident report, built from the incident and its timeline as they are when the
    /// message leaves (like `RenderCard`): queued after the note that resolves the incident, and
    /// again when a root cause is confirmed after resolution.
    RenderReport,
}

/// What a chat port delivers: an outbox entry whose card, if any, is built. Unlike
/// [`ChatBody`] it cannot hold a card still to be rendered, so no port has to refuse one.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Start the incident's thread with its card.
    PostCard { card: IncidentCard },
    /// Edit the card in place.
    UpdateCard { card: IncidentCard },
    /// A reply in the incident's thread (see [`ChatBody::Note`] for `mentions`).
    Note { text: String, mentions: Vec<String> },
    /// The post-incident report, rendered natively by each platform.
    Report { report: Report },
}

/// A stored body as the outbox sees it.
// Lives for one delivery attempt; boxing the delivery would cost an allocation and buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Deliverable as stored.
    Ready(Delivery),
    /// A card post (`post`) or edit, to be built from the incident as it is now.
    Render { post: bool },
    /// The report, to be built from the incident and its timeline as they are now.
    RenderReport,
}

impl ChatBody {
    /// What delivering this stored body takes.
    pub fn pending(&self) -> Pending {
        Pending::Ready(match self {
            ChatBody::PostCard { card } => Delivery::PostCard { card: card.clone() },
            ChatBody::UpdateCard { card } => Delivery::UpdateCard { card: card.clone() },
            ChatBody::Note { text, mentions } => Delivery::Note {
                text: text.clone(),
                mentions: mentions.clone(),
            },
            ChatBody::Report { report } => Delivery::Report {
                report: report.clone(),
            },
            ChatBody::RenderCard { post } => return Pending::Render { post: *post },
            ChatBody::RenderReport => return Pending::RenderReport,
        })
    }
}

/// One durable outbox entry: delivered in `seq` order per incident, deleted only after success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub seq: u64,
    pub sink: String,
    pub incident: IncidentId,
    pub body: ChatBody,
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
}

impl OutboxEntry {
    /// Idempotency key: the same for every delivery attempt of this entry.
    pub fn key(&self) -> String {
        format!("incidentd:{}:{}", self.sink, self.seq)
    }
}

/// A message handed to a chat port.
#[derive(Debug, Clone)]
pub struct OutboundMessage<'a> {
    pub key: String,
    pub incident: IncidentId,
    /// When its (first) outbox entry was queued: an entry queued before this process started
    /// may have been sent by an earlier process (a leader killed before recording the result).
    pub created_at: DateTime<Utc>,
    /// The incident's thread on this sink, once its card has been posted.
    pub thread: Option<ThreadRef>,
    pub body: &'a Delivery,
}

/// The result of a delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Set when a card was posted: where its thread is.
    pub thread: Option<ThreadRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// 429: wait at least this long before the next call.
    #[error("rate limited, retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// Network errors, 5xx: retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// The platform rejected the request for good (bad payload, missing channel…).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A chat surface the outbox delivers to (Slack, Discord, console, a test recorder).
#[async_trait]
pub trait ChatPort: Send + Sync {
    /// The sink name, used in outbox keys (`slack`, `discord`, `console`).
    fn name(&self) -> &str;
    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError>;
}

/// Persisted timers, re-armed after restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Send the card edit that coalescing held back.
    CardFlush,
    /// Not acknowledged within the severity's detection target: escalate.
    AckDeadline,
    /// Not resolved within the severity's repair target: escalate.
    RepairDeadline,
    /// Recommended actions still waiting for approval after the policy's expiry: escalate.
    ApprovalExpiry,
    /// An "alert resolves within N seconds" verification ran out of time.
    VerifyDeadline,
    /// The alert has stayed clear for the quiet period (`resolve_after_clear_seconds`):
    /// resolve. Disarmed when the alert fires again.
    ResolveAfterClear,
    /// The storm this incident's card summarizes may be over: check the rate again.
    StormLift,
    /// A follow-up due date passed, or a resolved incident still has no follow-up: remind in
    /// its thread (at most once per `[followups] remind_every_seconds`).
    FollowUpReminder,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::CardFlush => "card_flush",
            TimerKind::AckDeadline => "ack_deadline",
            TimerKind::RepairDeadline => "repair_deadline",
            TimerKind::ApprovalExpiry => "approval_expiry",
            TimerKind::VerifyDeadline => "verify_deadline",
            TimerKind::ResolveAfterClear => "resolve_after_clear",
            TimerKind::StormLift => "storm_lift",
            TimerKind::FollowUpReminder => "followup_reminder",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub incident: IncidentId,
    pub kind: TimerKind,
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Approved, waiting for an executor.
    Queued,
    /// Written before the process or request is launched.
    Started,
    Succeeded,
    Failed,
    /// Was `Started` when the process died: needs a human, never re-run automatically.
    Interrupted,
}

/// One run of an approved action. The key makes replays and double clicks run once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    pub key: String,
    pub incident: IncidentId,
    pub action: String,
    pub status: ExecutionStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Everything one group commit writes, in one transaction. Keyed operations are applied in
/// order, so a later set or delete of the same key wins.
#[derive(Debug, Default)]
pub struct WriteSet {
    /// The latest version of each changed incident (a later one of the same id wins).
    pub incidents: Vec<Incident>,
    pub events: Vec<(IncidentId, u32, TimelineEvent)>,
    /// fingerprint → open incident, or `None` to drop the mapping.
    pub fingerprints: Vec<(String, Option<IncidentId>)>,
    pub outbox: Vec<OutboxEntry>,
    /// Every armed timer of each incident whose timers changed (empty: none are armed).
    pub timers: Vec<(IncidentId, Vec<Timer>)>,
    pub executions: Vec<Execution>,
    /// Resolved incidents remembered per fingerprint (recurrence).
    pub history: Vec<(String, PastIncident)>,
    pub next_id: Option<u64>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
            && self.events.is_empty()
            && self.fingerprints.is_empty()
            && self.outbox.is_empty()
            && self.timers.is_empty()
            && self.executions.is_empty()
            && self.history.is_empty()
            && self.next_id.is_none()
    }
}

/// Which incidents a listing wants.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// `None`: any status. `Some(true)`: active only. `Some(false)`: resolved/closed only.
    pub active: Option<bool>,
    pub status: Option<Status>,
    pub severity: Option<Severity>,
    pub limit: usize,
}

impl IncidentFilter {
    pub fn matches(&self, inc: &Incident) -> bool {
        self.active.is_none_or(|a| inc.status.is_active() == a)
            && self.status.is_none_or(|s| inc.status == s)
            && self.severity.is_none_or(|s| inc.severity == s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("corrupt record in {tree}: {message}")]
    Codec { tree: &'static str, message: String },
    /// The store is damaged or partly lost (found when it is opened or checked): starting on it
    /// would serve missing data and give out ids again. The text says what and how to recover.
    #[error("{0}")]
    Damaged(String),
    /// A replica's write was refused because another replica has taken over as leader (a newer
    /// term holds the lease): this process must stop writing and acting (docs/replicas.md).
    #[error("fenced: {0}")]
    Fenced(String),
}

/// What start-up recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub incidents: usize,
    pub outbox_pending: usize,
    pub interrupted: Vec<Execution>,
    /// Approved but never launched: safe to dispatch again.
    pub queued: Vec<Execution>,
}

/// The result of running an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub success: bool,
    /// One line for the thread and timeline ("exit 0 in 1.2 s", "HTTP 503", "refused: …").
    pub summary: String,
}

/// Runs approved actions. The dispatcher records `Started` durably before calling `run`.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Templates the action for this incident: the exact command/request to show, or why it is
    /// refused (e.g. a label value that does not match the allowed pattern).
    fn plan(&self, incident: &Incident, action: &ActionSpec) -> Result<String, String>;
    /// Runs it (with its timeout and retries). Dropping the future kills any child process.
    async fn run(&self, incident: &Incident, action: &ActionSpec) -> ExecOutcome;
    /// Checks an HTTP or command verification, retrying until it passes or its time is up.
    async fn verify(
        &self,
        incident: &Incident,
        action: &ActionSpec,
        spec: &VerifySpec,
    ) -> ExecOutcome;
    /// [`Executor::plan`] for the export of follow-up `n` (from 1), with its values.
    fn plan_followup(
        &self,
        _incident: &Incident,
        _n: usize,
        _followup: &crate::domain::followup::FollowUp,
        _action: &ActionSpec,
    ) -> Result<String, String> {
        Err("this executor does not export follow-ups".into())
    }
    /// Runs the export of follow-up `n`; the link the response names, if any.
    async fn run_followup(
        &self,
        _incident: &Incident,
        _n: usize,
        _followup: &crate::domain::followup::FollowUp,
        _action: &ActionSpec,
    ) -> (ExecOutcome, Option<String>) {
        let summary = "this executor does not export follow-ups".to_string();
        (
            ExecOutcome {
                success: false,
                summary,
            },
            None,
        )
    }
    /// [`Executor::verify`], telling `checked` what each check saw as it happens (a Prometheus
    /// verification reports every value it read). By default, only the outcome.
    async fn verify_observed(
        &self,
        incident: &Incident,
        action: &ActionSpec,
        spec: &VerifySpec,
        checked: &(dyn Fn(ExecOutcome) + Send + Sync),
    ) -> ExecOutcome {
        let _ = checked;
        self.verify(incident, action, spec).await
    }
}

/// The metric behind an incident, for its card (the shell asks when it renders a card for
/// delivery; the engine never does). Delivery never waits for it: a card shows the chart at
/// hand, and a chart not at hand is fetched off the delivery path, then added by a card edit.
#[async_trait]
pub trait ChartSource: Send + Sync {
    /// What the card shows now, without waiting: the chart from the cache, if any. When this
    /// says `fetch`, the caller starts [`ChartSource::fetch`] off the delivery path (nobody is
    /// fetching this query yet). An incident whose card goes without its chart is remembered,
    /// and the fetch under way names it when the chart comes.
    fn at_hand(&self, incident: &Incident) -> ChartAtHand;
    /// Fetches this incident's chart into the cache (bounded by `[prometheus] timeout_seconds`)
    /// and returns the incidents whose card went out without it while it was not at hand:
    /// their cards are to be edited now (empty when no chart came: a failure, no data).
    async fn fetch(&self, incident: &Incident) -> Vec<IncidentId>;
}

/// A card's chart as [`ChartSource::at_hand`] finds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChartAtHand {
    /// The series over the last 30 minutes, or `None` — no query, not fetched yet, no answer,
    /// no data. Never an error: a card without its chart is still the card.
    pub chart: Option<crate::domain::chart::Chart>,
    /// Fetch it (new or fresher) off the delivery path.
    pub fetch: bool,
}

/// What one evidence query found.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceFound {
    /// The spec's name (`429 rate`).
    pub name: String,
    /// The query as it ran.
    pub query: String,
    /// The value(s), or why there is none.
    pub summary: String,
    /// When it was read.
    pub at: chrono::DateTime<chrono::Utc>,
    /// It met its threshold.
    pub conclusive: bool,
}

/// Runs a playbook's evidence queries for an incident (the shell, after the engine asked).
#[async_trait]
pub trait EvidenceSource: Send + Sync {
    async fn gather(
        &self,
        incident: &Incident,
        specs: &[crate::domain::playbook::EvidenceSpec],
    ) -> Vec<EvidenceFound>;
}

/// Durable state. Synchronous: callers run it on a blocking thread.
pub trait Store: Send + Sync {
    fn get_incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError>;
    /// Newest first.
    fn list_incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, StoreError>;
    fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEvent>, StoreError>;
    /// Calls `f` with every incident, one at a time, in no particular order, until it returns
    /// false (start-up reads, without holding every incident in memory at once).
    fn for_each_incident(&self, f: &mut dyn FnMut(Incident) -> bool) -> Result<(), StoreError> {
        for inc in self.list_incidents(&IncidentFilter::default())? {
            if !f(inc) {
                break;
            }
        }
        Ok(())
    }
    /// The id the next new incident gets.
    fn next_incident_id(&self) -> Result<u64, StoreError>;
    /// A fresh, monotonically increasing sequence number (outbox order).
    fn next_seq(&self) -> Result<u64, StoreError>;
    /// Applies everything atomically (not yet durable: call `flush`).
    fn commit(&self, w: &WriteSet) -> Result<(), StoreError>;
    /// Makes everything committed so far durable (fsync).
    fn flush(&self) -> Result<(), StoreError>;

    fn outbox_pending(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Deletes a delivered entry, after recording, for a posted card, where its thread is.
    /// Durable after the next `flush` (until then, or after a crash between the two, the entry
    /// can only be sent again, under the same idempotency key).
    fn outbox_complete(
        &self,
        entry: &OutboxEntry,
        thread: Option<&ThreadRef>,
    ) -> Result<(), StoreError>;
    /// Moves an entry that the platform rejected for good aside (kept for inspection).
    /// Durable after the next `flush`.
    fn outbox_dead_letter(&self, entry: &OutboxEntry, error: &str) -> Result<(), StoreError>;
    fn outbox_len(&self) -> usize;
    fn thread_for(&self, sink: &str, id: IncidentId) -> Result<Option<ThreadRef>, StoreError>;
    fn incident_for_thread(
        &self,
        sink: &str,
        channel: &str,
        message_id: &str,
    ) -> Result<Option<IncidentId>, StoreError>;

    fn timers(&self) -> Result<Vec<Timer>, StoreError>;
    /// Every fingerprint with an open incident (the writer keeps these in memory).
    fn open_fingerprints(&self) -> Result<Vec<(String, IncidentId)>, StoreError>;
    /// Every fingerprint with resolved incidents in its history.
    fn history_fingerprints(&self) -> Result<Vec<String>, StoreError>;
    /// Resolved incidents of this fingerprint, oldest first.
    fn history(&self, fingerprint: &str) -> Result<Vec<PastIncident>, StoreError>;
    fn executions(&self, id: IncidentId) -> Result<Vec<Execution>, StoreError>;
    fn execution(&self, key: &str) -> Result<Option<Execution>, StoreError>;
    /// Start-up: counts what is pending and marks `Started` executions `Interrupted`.
    fn recover(&self, now: DateTime<Utc>) -> Result<Recovery, StoreError>;
    /// A store may record some of a commit's changes in a compact form first (fingerprint and
    /// timer changes, which only start-up reads, new outbox entries and timeline events): this
    /// moves up to about `max` of them into their lasting form, atomically, and returns how many
    /// it moved (0: none left). The writer calls it when it has nothing else to do. No read
    /// depends on it.
    fn fold(&self, max: usize) -> Result<usize, StoreError> {
        let _ = max;
        Ok(0)
    }
    /// Changes not folded yet.
    fn unfolded(&self) -> usize {
        0
    }
    /// A chat surface's bookmark: the last alert-channel message it saw (per platform and
    /// channel), so messages missed while it was disconnected can be read back. `None`: none.
    fn chat_cursor(&self, key: &str) -> Result<Option<String>, StoreError> {
        let _ = key;
        Ok(None)
    }
    /// Sets a bookmark; durable after the next `flush`.
    fn set_chat_cursor(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let _ = (key, value);
        Ok(())
    }
}

/// Runs a synchronous store call off the async threads. A call cancelled by runtime shutdown
/// is an error like any other, not a panic.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Storage(format!("store task did not finish: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_card_to_render_needs_the_outbox() {
        for post in [true, false] {
            assert_eq!(
                ChatBody::RenderCard { post }.pending(),
                Pending::Render { post }
            );
        }
        let note = ChatBody::Note {
            text: "restart done".into(),
            mentions: vec!["slack:U1".into()],
        };
        assert_eq!(
            note.pending(),
            Pending::Ready(Delivery::Note {
                text: "restart done".into(),
                mentions: vec!["slack:U1".into()],
            })
        );
        // A stored note without mentions (the field is skipped when empty) is ready as is.
        let stored: ChatBody = serde_json::from_value(serde_json::json!({
            "type": "note", "text": "hi"
        }))
        .unwrap();
        assert!(
            matches!(stored.pending(), Pending::Ready(Delivery::Note { mentions, .. }) if mentions.is_empty())
        );
    }
}
