//! The incident and its state machine. Every transition is explicit, checked, and recorded as a
//! timeline event with actor and time; an illegal transition is an error, never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::alert::{AlertSource, AlertStatus, ChatOrigin, Link};
use super::classify::RootCause;
use super::policy::Actor;
use super::severity::Severity;

/// `INC-42`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentId(pub u64);

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INC-{}", self.0)
    }
}

impl FromStr for IncidentId {
    type Err = String;
    /// Accepts `INC-42`, `inc-42`, `#42` and `42`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let digits = t
            .strip_prefix("INC-")
            .or_else(|| t.strip_prefix("inc-"))
            .or_else(|| t.strip_prefix('#'))
            .unwrap_or(t);
        match digits.parse::<u64>() {
            Ok(n) if n > 0 && !digits.starts_with('+') => Ok(IncidentId(n)),
            _ => Err(format!(
                "{t:?} is not an incident id (expected INC-<number>)"
            )),
        }
    }
}

/// Where the incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Acknowledged,
    AwaitingApproval,
    Remediating,
    Verifying,
    Escalated,
    RolledBack,
    Resolved,
    Closed,
}

pub const ALL_STATUSES: [Status; 9] = [
    Status::Open,
    Status::Acknowledged,
    Status::AwaitingApproval,
    Status::Remediating,
    Status::Verifying,
    Status::Escalated,
    Status::RolledBack,
    Status::Resolved,
    Status::Closed,
];

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::AwaitingApproval => "awaiting_approval",
            Status::Remediating => "remediating",
            Status::Verifying => "verifying",
            Status::Escalated => "escalated",
            Status::RolledBack => "rolled_back",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Open => "Open",
            Status::Acknowledged => "Acknowledged",
            Status::AwaitingApproval => "Awaiting approval",
            Status::Remediating => "Remediating",
            Status::Verifying => "Verifying",
            Status::Escalated => "Escalated",
            Status::RolledBack => "Rolled back",
            Status::Resolved => "Resolved",
            Status::Closed => "Closed",
        }
    }

    /// Still needs attention: everything but resolved and closed.
    pub fn is_active(self) -> bool {
        !matches!(self, Status::Resolved | Status::Closed)
    }

    /// The transition table. Anything not listed is illegal.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        match self {
            Open => matches!(
                to,
                Acknowledged | AwaitingApproval | Remediating | Escalated | Resolved
            ),
            // To verifying from any state an action may finish in (it runs on while the
            // incident is acknowledged, escalated, or waits for another action's approval): a
            // fix that finished is verified whatever happened meanwhile.
            Acknowledged => matches!(
                to,
                AwaitingApproval | Remediating | Verifying | Escalated | Resolved
            ),
            AwaitingApproval => matches!(
                to,
                Acknowledged | Remediating | Verifying | Escalated | Resolved
            ),
            Remediating => matches!(to, Verifying | RolledBack | Escalated | Resolved),
            // Back to remediating when a failed verification triggers the rollback.
            Verifying => matches!(to, Resolved | RolledBack | Escalated | Remediating),
            Escalated => matches!(
                to,
                Acknowledged | AwaitingApproval | Remediating | Verifying | Resolved
            ),
            RolledBack => matches!(
                to,
                Acknowledged | AwaitingApproval | Remediating | Verifying | Escalated | Resolved
            ),
            // Reopen goes back to open; closing is final.
            Resolved => matches!(to, Open | Closed),
            Closed => false,
        }
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATUSES
            .into_iter()
            .find(|st| st.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// An illegal transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{id} is {from_label}; it cannot become {to_label}", from_label = .from.label().to_lowercase(), to_label = .to.label().to_lowercase())]
pub struct TransitionError {
    pub id: IncidentId,
    pub from: Status,
    pub to: Status,
}

/// The life of one recommended action on this incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    Proposed,
    Approved,
    Rejected,
    Running,
    Succeeded,
    Failed,
    /// It was running when incidentd stopped: its outcome is unknown and it is never re-run.
    Interrupted,
}

impl ActionStatus {
    /// A decision has been taken: no more approve/reject buttons.
    pub fn is_decided(self) -> bool {
        !matches!(self, ActionStatus::Proposed)
    }
}

/// A recommended action (from the playbook) and its approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionState {
    pub id: String,
    pub title: String,
    pub auto: bool,
    /// Templated preview (`kubectl -n prod rollout restart deployment/api`).
    pub summary: String,
    pub status: ActionStatus,
    #[serde(default)]
    pub approvals: Vec<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
}

/// What happened, for the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Opened {
        severity: Severity,
        kind: String,
        rule: Option<String>,
    },
    StatusChanged {
        from: Status,
        to: Status,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    AlertResolved,
    AlertRefired,
    ActionApproved {
        action: String,
        approvals: u32,
        needed: u32,
    },
    ActionRejected {
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    ApprovalRefused {
        action: String,
        reason: super::policy::Refusal,
    },
    ExecutionQueued {
        action: String,
        execution: String,
        /// Queued to undo this action after it did not verify.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollback_of: Option<String>,
    },
    ExecutionStarted {
        action: String,
        execution: String,
        /// The exact command or request, after templating.
        preview: String,
    },
    ExecutionFinished {
        action: String,
        execution: String,
        success: bool,
        summary: String,
    },
    /// The process died while this ran: a human must decide; it is never re-run automatically.
    ExecutionInterrupted {
        action: String,
        execution: String,
    },
    Verified {
        action: String,
        ok: bool,
        summary: String,
    },
    /// One check of a running verification: what it saw (a Prometheus query and its value)
    /// and whether the condition held.
    VerificationChecked {
        action: String,
        ok: bool,
        summary: String,
    },
    /// A root-cause evidence query's answer when the incident opened; `conclusive` when it met
    /// its threshold.
    Evidence {
        name: String,
        query: String,
        summary: String,
        conclusive: bool,
    },
    Note {
        text: String,
    },
    /// The storm guard held the incident's automatic actions back for approval.
    StormGuard {
        new_incidents: u32,
        window_seconds: u64,
    },
    /// Opened during a storm: summarized in `thread`'s storm summary, no card of its own (its
    /// own id when it is the summary's incident).
    StormSummarized {
        storm_thread: IncidentId,
    },
    /// A summarized incident got its own card and thread (it needs a person).
    StormOwnThread {
        reason: String,
    },
    /// The storm this incident's card summarized is over.
    StormLifted {
        incidents: u32,
    },
    Escalated {
        reason: String,
    },
    Assigned {
        to: String,
    },
    RootCauseSet {
        category: RootCause,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    FollowUpAdded {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        #[serde(default)]
        kind: super::followup::FollowUpKind,
    },
    /// Follow-up `n` (from 1) changed state.
    FollowUpChanged {
        n: u32,
        text: String,
        to: super::followup::FollowUpState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A reminder about overdue follow-ups (`overdue`: their numbers) or, `undefined`, about a
    /// resolved incident without any.
    FollowUpReminder {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        overdue: Vec<u32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        undefined: bool,
    },
    /// A command someone was not allowed to run.
    Refused {
        what: String,
        reason: String,
    },
    SeverityChanged {
        from: Severity,
        to: Severity,
    },
    /// Someone took the incident while an action was already running or verifying (the
    /// status stays as it is).
    Acknowledged,
}

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    pub at: DateTime<Utc>,
    pub actor: Actor,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl TimelineEvent {
    /// One line for chat and the console.
    pub fn describe(&self) -> String {
        let who = self.actor.display();
        match &self.kind {
            EventKind::Opened { severity, kind, .. } => format!("Opened as {severity} ({kind})"),
            EventKind::StatusChanged { to, note, .. } => {
                let mut s = format!("{} by {who}", to.label());
                if let Some(n) = note {
                    s.push_str(": ");
                    s.push_str(n);
                }
                s
            }
            EventKind::AlertResolved => "Monitoring reports the alert resolved".into(),
            EventKind::AlertRefired => "Alert is firing again".into(),
            EventKind::ActionApproved {
                action,
                approvals,
                needed,
            } => format!("{who} approved `{action}` ({approvals}/{needed})"),
            EventKind::ActionRejected { action, reason } => match reason {
                Some(r) => format!("{who} rejected `{action}`: {r}"),
                None => format!("{who} rejected `{action}`"),
            },
            EventKind::ApprovalRefused { action, reason } => {
                format!(
                    "Refused approval of `{action}` by {who}: {}",
                    reason.message()
                )
            }
            EventKind::ExecutionQueued {
                action, execution, ..
            } => {
                format!("`{action}` queued for execution ({execution})")
            }
            EventKind::ExecutionStarted {
                action, preview, ..
            } => format!("Started `{action}`: {preview}"),
            EventKind::ExecutionFinished {
                action,
                success,
                summary,
                ..
            } => format!(
                "`{action}` {}: {summary}",
                if *success { "succeeded" } else { "failed" }
            ),
            EventKind::ExecutionInterrupted { action, .. } => format!(
                "`{action}` was interrupted by a restart; it will not be re-run automatically"
            ),
            EventKind::Note { text } => format!("{who}: {text}"),
            EventKind::StormGuard {
                new_incidents,
                window_seconds,
            } => format!(
                "Storm guard: {new_incidents} new incidents from this source within {window_seconds} s; automatic actions wait for approval"
            ),
            EventKind::StormSummarized { storm_thread } => format!(
                "Storm: summarized in {storm_thread}'s storm thread instead of a card and thread of its own"
            ),
            EventKind::StormOwnThread { reason } => {
                format!("Storm: gets a card and thread of its own ({reason})")
            }
            EventKind::StormLifted { incidents } => format!(
                "Storm over: {incidents} incidents were summarized here; new incidents get their own cards again"
            ),
            EventKind::Escalated { reason } => format!("Escalated: {reason}"),
            EventKind::Assigned { to } => format!("Assigned to {to} by {who}"),
            EventKind::RootCauseSet { category, text } => match text {
                Some(t) => format!("Root cause set by {who}: {} — {t}", category.label()),
                None => format!("Root cause set by {who}: {}", category.label()),
            },
            EventKind::FollowUpAdded { text, owner, kind } => match owner {
                Some(o) => format!("Follow-up ({}) by {who}: {text} (owner {o})", kind.label()),
                None => format!("Follow-up ({}) by {who}: {text}", kind.label()),
            },
            EventKind::FollowUpChanged {
                n,
                text,
                to,
                reason,
            } => match reason {
                Some(r) => format!("Follow-up #{n} ({text}) {} by {who}: {r}", to.label()),
                None => format!("Follow-up #{n} ({text}) {} by {who}", to.label()),
            },
            EventKind::FollowUpReminder { overdue, undefined } => {
                let mut parts = vec![];
                if *undefined {
                    parts.push("no follow-up defined yet".to_string());
                }
                if !overdue.is_empty() {
                    let ns: Vec<String> = overdue.iter().map(|n| format!("#{n}")).collect();
                    parts.push(format!("overdue follow-ups {}", ns.join(", ")));
                }
                format!("Reminder: {}", parts.join("; "))
            }
            EventKind::Refused { what, reason } => format!("Refused {what} by {who}: {reason}"),
            EventKind::Verified {
                action,
                ok,
                summary,
            } => format!(
                "`{action}` {}: {summary}",
                if *ok { "verified" } else { "did not verify" }
            ),
            EventKind::VerificationChecked {
                action,
                ok,
                summary,
            } => format!(
                "Checked `{action}` ({}): {summary}",
                if *ok { "holds" } else { "does not hold" }
            ),
            EventKind::Evidence {
                name,
                query,
                summary,
                conclusive,
            } => format!(
                "Evidence: {name} = {summary}{} (`{query}`)",
                if *conclusive { ", conclusive" } else { "" }
            ),
            EventKind::Acknowledged => format!("Acknowledged by {who}"),
            EventKind::SeverityChanged { from, to } => {
                format!("Severity changed from {from} to {to} by {who}")
            }
        }
    }
}

/// The timeline as people read it. An escalation that changes the status is recorded twice (an
/// `Escalated` event, which the stats count, and the `StatusChanged` to escalated); shown, it is
/// one line: the status change, which also says who escalated.
pub fn shown_timeline(events: &[TimelineEvent]) -> impl Iterator<Item = &TimelineEvent> {
    events.iter().enumerate().filter_map(move |(i, e)| {
        let EventKind::Escalated { reason } = &e.kind else {
            return Some(e);
        };
        let doubled = events.get(i + 1).is_some_and(|n| {
            n.at == e.at
                && matches!(&n.kind, EventKind::StatusChanged { to: Status::Escalated, note, .. }
                    if note.as_deref() == Some(reason.as_str()))
        });
        (!doubled).then_some(e)
    })
}

/// An incident: one per firing alert fingerprint at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: IncidentId,
    pub fingerprint: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub source: AlertSource,
    pub severity: Severity,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub status: Status,
    pub alert_status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub links: Vec<Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ChatOrigin>,
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    pub opened_at: DateTime<Utc>,
    /// When the monitoring system says it started (detection time = opened_at − started_at).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    pub last_seen_at: DateTime<Utc>,
    pub alert_count: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<Actor>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<Actor>,
    #[serde(default)]
    pub actions: Vec<ActionState>,
    /// Number of timeline events written so far (the next event's sequence number).
    pub timeline_len: u32,
    /// When the card was last sent to chat; repeats within the coalescing window only mark it dirty.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub card_sent_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub card_dirty: bool,
    /// The action whose verification is running (status `Verifying`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifying: Option<String>,
    /// The action being undone by its rollback after a failed verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_back: Option<String>,
    /// Who owns it now (as typed: `@alice`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Suggested at triage, confirmed (or overridden) by a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<RootCauseInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followups: Vec<FollowUp>,
    /// What follow-up reminders have said so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<super::followup::Reminders>,
    /// When the first action succeeded (time to mitigate).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub mitigated_at: Option<DateTime<Utc>>,
    /// Earlier incidents of the same fingerprint within the recurrence window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
    /// The timeline's fold for the outcome numbers; `None` in incidents stored before it
    /// existed (the writer folds their timeline when it next loads them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<super::tally::Tally>,
    /// The group of related alerts this incident stands for (`None`: opened before incidents
    /// were groups; it stands for the one alert of `fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<AlertGroup>,
    /// Opened during an alert storm: its automatic actions wait for approval. The number of new
    /// incidents from its source within the storm window when it opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<u32>,
    /// Opened during a storm and summarized in that incident's storm thread instead of getting
    /// a card and thread of its own; `None` once it has its own (or never was summarized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_thread: Option<IncidentId>,
    /// This incident's card is its source's storm summary: the incidents opened during the
    /// storm, summarized in its thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_summary: Option<StormSummary>,
}

/// Newest incidents a storm summary names; the others are counted.
pub const STORM_SUMMARY_NEWEST: usize = 10;

/// The incidents of one source's storm, summarized on one card (bounded: counts, and the
/// newest [`STORM_SUMMARY_NEWEST`] by id and title).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormSummary {
    /// The alert source (`alertmanager`, `slack`…).
    pub source: String,
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    pub since: DateTime<Utc>,
    /// Incidents summarized, the summary's own included.
    pub count: u32,
    /// Incidents per kind.
    #[serde(default)]
    pub kinds: BTreeMap<String, u32>,
    /// Incidents per severity (`P2`, `P3`).
    #[serde(default)]
    pub severities: BTreeMap<String, u32>,
    /// The newest incidents, newest first.
    #[serde(default)]
    pub newest: Vec<StormNamed>,
    /// When the storm was over (the guard lifted); new incidents get their own cards again.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub lifted_at: Option<DateTime<Utc>>,
}

/// An incident a storm summary names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormNamed {
    pub incident: IncidentId,
    pub title: String,
}

/// One incident joining a storm summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormMember {
    pub id: IncidentId,
    pub title: String,
    pub kind: String,
    pub severity: Severity,
}

impl StormSummary {
    pub fn new(source: &str, since: DateTime<Utc>) -> Self {
        StormSummary {
            source: source.to_string(),
            since,
            count: 0,
            kinds: BTreeMap::new(),
            severities: BTreeMap::new(),
            newest: Vec::new(),
            lifted_at: None,
        }
    }

    /// Counts an incident in (once: a repeat of an id already named is not counted again).
    pub fn add(&mut self, m: &StormMember) {
        if self.newest.iter().any(|n| n.incident == m.id) {
            return;
        }
        self.count += 1;
        *self.kinds.entry(m.kind.clone()).or_default() += 1;
        *self
            .severities
            .entry(m.severity.as_str().to_string())
            .or_default() += 1;
        self.newest.insert(
            0,
            StormNamed {
                incident: m.id,
                title: m.title.clone(),
            },
        );
        self.newest.truncate(STORM_SUMMARY_NEWEST);
    }
}

/// Most member alerts an incident tells apart; more only count (memory stays bounded however
/// large a group grows).
pub const MAX_GROUP_MEMBERS: usize = 500;

/// The alerts of an incident's group, by fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertGroup {
    /// The group key (`Alert::group_key`): the incident is the open one of this key.
    pub key: String,
    #[serde(default)]
    pub members: BTreeMap<String, Member>,
    /// Firing notifications of alerts beyond `MAX_GROUP_MEMBERS`: they cannot be told apart,
    /// so once there are any the group never counts as clear by itself (a person resolves).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub untracked: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One alert of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// What tells it apart within the group (`pod=api-7`).
    pub instance: String,
    pub status: AlertStatus,
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    pub last_seen: DateTime<Utc>,
}

/// What an alert did to its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// A new alert of the group.
    Joined,
    /// A known alert changed status (cleared or fired again).
    Changed,
    /// A known alert repeated its status.
    Repeated,
    /// Beyond the members told apart: counted only.
    Untracked,
}

impl AlertGroup {
    pub fn new(key: String) -> Self {
        AlertGroup {
            key,
            members: BTreeMap::new(),
            untracked: 0,
        }
    }

    /// Records an alert of the group.
    pub fn record(
        &mut self,
        fingerprint: &str,
        instance: String,
        status: AlertStatus,
        now: DateTime<Utc>,
    ) -> MemberChange {
        if let Some(m) = self.members.get_mut(fingerprint) {
            let change = if m.status == status {
                MemberChange::Repeated
            } else {
                MemberChange::Changed
            };
            m.status = status;
            m.last_seen = now;
            return change;
        }
        if self.members.len() >= MAX_GROUP_MEMBERS {
            if status == AlertStatus::Firing {
                self.untracked += 1;
            }
            return MemberChange::Untracked;
        }
        self.members.insert(
            fingerprint.to_string(),
            Member {
                instance,
                status,
                last_seen: now,
            },
        );
        MemberChange::Joined
    }

    pub fn count(&self, status: AlertStatus) -> usize {
        self.members.values().filter(|m| m.status == status).count()
    }

    /// Every alert of the group has cleared.
    pub fn all_clear(&self) -> bool {
        self.untracked == 0 && self.count(AlertStatus::Firing) == 0
    }

    /// The members, most recently seen first.
    pub fn recent(&self) -> Vec<&Member> {
        let mut v: Vec<&Member> = self.members.values().collect();
        v.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.instance.cmp(&b.instance))
        });
        v
    }
}

/// The root cause: a category and an explanation; `confirmed_by` is None while it is only a suggestion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCauseInfo {
    pub category: RootCause,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_by: Option<Actor>,
}

pub use super::followup::FollowUp;

/// A resolved incident as remembered per fingerprint, for recurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastIncident {
    pub id: IncidentId,
    pub resolved_at: DateTime<Utc>,
    /// What fixed it: the actions that succeeded, or who resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_by: Option<String>,
}

impl PastIncident {
    pub fn of(inc: &Incident) -> Option<PastIncident> {
        let resolved_at = inc.resolved_at?;
        let actions: Vec<String> = inc
            .actions
            .iter()
            .filter(|a| a.status == ActionStatus::Succeeded)
            .map(|a| format!("`{}`", a.id))
            .collect();
        let fixed_by = if actions.is_empty() {
            inc.resolved_by.as_ref().map(|a| a.display())
        } else {
            Some(actions.join(", "))
        };
        Some(PastIncident {
            id: inc.id,
            resolved_at,
            fixed_by,
        })
    }
}

/// This incident's fingerprint was resolved before, recently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    /// How many earlier incidents within the window (1 = this is the 2nd time).
    pub previous: u32,
    pub window_days: u32,
    pub last: IncidentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resolved_at: Option<DateTime<Utc>>,
    /// What fixed it last time (the action that succeeded, or who resolved it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fixed_by: Option<String>,
}

impl Incident {
    /// The key of its group: what the open-incident map and the history are keyed by.
    pub fn key(&self) -> &str {
        self.group.as_ref().map_or(&self.fingerprint, |g| &g.key)
    }

    /// Moves to `to`, or says why not. Returns the timeline event to record.
    pub fn transition(
        &mut self,
        to: Status,
        actor: &Actor,
        now: DateTime<Utc>,
        note: Option<String>,
    ) -> Result<TimelineEvent, TransitionError> {
        let from = self.status;
        if !from.can_become(to) {
            return Err(TransitionError {
                id: self.id,
                from,
                to,
            });
        }
        self.status = to;
        match to {
            Status::Acknowledged if self.acknowledged_at.is_none() => {
                self.acknowledged_at = Some(now);
                self.acknowledged_by = Some(actor.clone());
            }
            Status::Resolved => {
                self.resolved_at = Some(now);
                self.resolved_by = Some(actor.clone());
            }
            Status::Open => {
                // Reopened: it is unresolved again.
                self.resolved_at = None;
                self.resolved_by = None;
            }
            _ => {}
        }
        Ok(TimelineEvent {
            at: now,
            actor: actor.clone(),
            kind: EventKind::StatusChanged { from, to, note },
        })
    }

    pub fn action(&self, id: &str) -> Option<&ActionState> {
        self.actions.iter().find(|a| a.id == id)
    }

    pub fn action_mut(&mut self, id: &str) -> Option<&mut ActionState> {
        self.actions.iter_mut().find(|a| a.id == id)
    }
}

/// A minimal incident for tests across the crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn incident() -> Incident {
        let now = Utc::now();
        Incident {
            id: IncidentId(7),
            fingerprint: "fp".into(),
            title: "t".into(),
            description: None,
            source: AlertSource::Generic,
            severity: Severity::P2,
            kind: "unclassified".into(),
            playbook: None,
            rule: None,
            status: Status::Open,
            alert_status: AlertStatus::Firing,
            labels: Default::default(),
            annotations: Default::default(),
            links: vec![],
            origin: None,
            opened_at: now,
            started_at: None,
            last_seen_at: now,
            alert_count: 1,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            actions: vec![],
            timeline_len: 0,
            card_sent_at: None,
            card_dirty: false,
            verifying: None,
            rolling_back: None,
            assignee: None,
            root_cause: None,
            followups: vec![],
            reminders: None,
            mitigated_at: None,
            recurrence: None,
            tally: Some(Default::default()),
            group: None,
            storm: None,
            storm_thread: None,
            storm_summary: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::incident;
    use super::*;
    use crate::domain::alert::Platform;

    #[test]
    fn every_pair_of_states_follows_the_table() {
        use Status::*;
        let legal: &[(Status, &[Status])] = &[
            (
                Open,
                &[
                    Acknowledged,
                    AwaitingApproval,
                    Remediating,
                    Escalated,
                    Resolved,
                ],
            ),
            (
                Acknowledged,
                &[
                    AwaitingApproval,
                    Remediating,
                    Verifying,
                    Escalated,
                    Resolved,
                ],
            ),
            (
                AwaitingApproval,
                &[Acknowledged, Remediating, Verifying, Escalated, Resolved],
            ),
            (Remediating, &[Verifying, RolledBack, Escalated, Resolved]),
            (Verifying, &[Resolved, RolledBack, Escalated, Remediating]),
            (
                Escalated,
                &[
                    Acknowledged,
                    AwaitingApproval,
                    Remediating,
                    Verifying,
                    Resolved,
                ],
            ),
            (
                RolledBack,
                &[
                    Acknowledged,
                    AwaitingApproval,
                    Remediating,
                    Verifying,
                    Escalated,
                    Resolved,
                ],
            ),
            (Resolved, &[Open, Closed]),
            (Closed, &[]),
        ];
        let actor = Actor::new(Platform::Slack, "U1");
        for (from, tos) in legal {
            for to in ALL_STATUSES {
                let mut inc = incident();
                inc.status = *from;
                let r = inc.transition(to, &actor, Utc::now(), None);
                if tos.contains(&to) {
                    let ev = r.unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e}"));
                    assert_eq!(inc.status, to);
                    assert_eq!(ev.actor, actor);
                    assert!(
                        matches!(ev.kind, EventKind::StatusChanged { from: f, to: t, .. } if f == *from && t == to)
                    );
                } else {
                    let e = r.expect_err(&format!("{from:?} -> {to:?} must be illegal"));
                    assert_eq!((e.from, e.to), (*from, to));
                    assert_eq!(inc.status, *from, "state unchanged on error");
                }
            }
        }
    }

    #[test]
    fn ack_and_resolve_record_who_and_when_and_reopen_clears() {
        let mut inc = incident();
        let alice = Actor::new(Platform::Slack, "U1");
        let t0 = Utc::now();
        inc.transition(Status::Acknowledged, &alice, t0, None)
            .unwrap();
        assert_eq!(inc.acknowledged_by.as_ref(), Some(&alice));
        assert_eq!(inc.acknowledged_at, Some(t0));
        inc.transition(Status::Resolved, &alice, t0, Some("fixed".into()))
            .unwrap();
        assert!(inc.resolved_at.is_some());
        let e = inc
            .transition(Status::Acknowledged, &alice, t0, None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "INC-7 is resolved; it cannot become acknowledged"
        );
        inc.transition(Status::Open, &alice, t0, None).unwrap();
        assert_eq!(inc.resolved_at, None);
    }

    #[test]
    fn an_escalation_is_shown_once() {
        let mut inc = incident();
        let t0 = inc.opened_at;
        let sys = Actor::system();
        let esc = |reason: &str| TimelineEvent {
            at: t0,
            actor: sys.clone(),
            kind: EventKind::Escalated {
                reason: reason.into(),
            },
        };
        let changed = inc
            .transition(Status::Escalated, &sys, t0, Some("not acknowledged".into()))
            .unwrap();
        // Escalating again keeps the status: only the Escalated event, which stays.
        let events = vec![esc("not acknowledged"), changed, esc("worse")];
        let lines: Vec<String> = shown_timeline(&events).map(|e| e.describe()).collect();
        assert_eq!(
            lines,
            vec![
                "Escalated by incidentd: not acknowledged".to_string(),
                "Escalated: worse".to_string()
            ]
        );
    }

    #[test]
    fn ids_parse_and_print() {
        assert_eq!("INC-42".parse::<IncidentId>(), Ok(IncidentId(42)));
        assert_eq!("inc-3".parse::<IncidentId>(), Ok(IncidentId(3)));
        assert_eq!("#5".parse::<IncidentId>(), Ok(IncidentId(5)));
        assert_eq!("5".parse::<IncidentId>(), Ok(IncidentId(5)));
        assert!("INC-0".parse::<IncidentId>().is_err());
        assert!("INC-x".parse::<IncidentId>().is_err());
        assert!("+5".parse::<IncidentId>().is_err());
        assert_eq!(IncidentId(9).to_string(), "INC-9");
    }
}
