//! The functional core: `handle(incident, input, config, ctx) -> Decision`. No I/O, no tokio;
//! the runner persists each decision with its effects in one transaction and dispatches them.

pub mod book;
pub mod dispatch;
pub mod due;
pub mod health;
pub mod keys;
pub mod outbox;
pub mod runner;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::domain::alert::{Alert, AlertStatus};
use crate::domain::card::{build_card, IncidentCard};
use crate::domain::command::Command;
use crate::domain::condition::Facts;
use crate::domain::followup::{self, FollowUpChange, FollowUpState};
use crate::domain::incident::{
    ActionState, ActionStatus, AlertGroup, EventKind, Incident, IncidentId, MemberChange,
    PastIncident, Recurrence, RootCauseInfo, Status, StormMember, StormSummary, TimelineEvent,
};
use crate::domain::playbook::{ActionSpec, VerifySpec};
use crate::domain::policy::{check_approval, Actor, Refusal};
use crate::domain::severity::{human_seconds, Severity};
use crate::ports::{ChatBody, Execution, ExecutionStatus, Timer, TimerKind};

/// What an alert alone decides about the incident it would open: severity, kind, playbook and
/// the suggested root cause. A pure function of the alert and the config.
#[derive(Debug, Clone, PartialEq)]
pub struct PreTriage {
    pub triage: crate::domain::classify::Triage,
    pub root_cause: crate::domain::classify::RootCause,
}

impl PreTriage {
    pub fn of(alert: &Alert, cfg: &Config) -> PreTriage {
        // The alert's words are read once, for the kind and for the cause.
        let words = crate::domain::classify::alert_match_text(alert);
        let triage = cfg.classifier.classify_with_words(alert, Some(&words));
        let root_cause =
            crate::domain::report::suggest_from_words(&words, &triage.kind, &cfg.classifier);
        PreTriage { triage, root_cause }
    }
}

/// Everything that can happen to an incident.
#[derive(Debug, Clone)]
pub enum Input {
    /// An alert from a webhook or a chat message.
    Alert(Alert),
    /// The same, with the triage a new incident would get already computed (by the submitter,
    /// in parallel, instead of on the single writer thread).
    Triaged(Alert, Box<PreTriage>),
    /// A state-changing command (slash command or button) by someone.
    Command { actor: Actor, command: Command },
    /// A human wrote in the incident's thread: recorded on the timeline, not echoed.
    ThreadMessage {
        actor: Actor,
        incident: IncidentId,
        text: String,
    },
    /// A persisted timer came due.
    Timer(Timer),
    /// An approved action is about to run (the runner writes its execution `Started` first).
    ExecutionStarted {
        incident: IncidentId,
        action: String,
        key: String,
        preview: String,
    },
    /// An action finished (or was refused before launch).
    ExecutionFinished {
        incident: IncidentId,
        action: String,
        key: String,
        success: bool,
        summary: String,
    },
    /// An HTTP or command verification finished.
    VerificationFinished {
        incident: IncidentId,
        action: String,
        ok: bool,
        summary: String,
    },
    /// One check of a running verification and what it saw (a Prometheus query's value).
    VerificationCheck {
        incident: IncidentId,
        action: String,
        ok: bool,
        summary: String,
    },
    /// What the playbook's evidence queries found.
    Evidence {
        incident: IncidentId,
        found: Vec<crate::ports::EvidenceFound>,
    },
    /// Found `Started` after a restart.
    ExecutionInterrupted {
        incident: IncidentId,
        action: String,
        key: String,
    },
    /// An incident opened during a storm joins the storm summary on `lead`'s card (the core
    /// asks for it in [`Decision::then`]; nobody submits it).
    StormJoined {
        lead: IncidentId,
        member: StormMember,
    },
    /// The chart of the incident's card came after the card went out without it (the shell
    /// fetches charts off the delivery path): the card is edited, coalesced like any edit.
    ChartFetched { incident: IncidentId },
    /// A follow-up's export (`[followups.export]`) finished; `link` is what its response named.
    FollowUpExported {
        incident: IncidentId,
        n: u32,
        key: String,
        success: bool,
        summary: String,
        link: Option<String>,
    },
}

/// What the core wants done besides changing state.
// Effects live for one decision; boxing the card would cost an allocation and buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Sent to every chat sink through the outbox.
    Chat(ChatBody),
    ArmTimer(Timer),
    DisarmTimer(TimerKind),
    /// Run an approved action (exactly once per key).
    Execute {
        action: String,
        key: String,
    },
    /// Run the playbook's root-cause evidence queries for this incident (they only read).
    GatherEvidence,
}

/// A user-facing error: shown in chat as is ("INC-4 is already resolved").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// The result of handling one input: the new state, and everything the writer must write
/// for it. The writer applies it without deciding anything.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// The incident after the input; `None` when nothing changed (e.g. a resolved alert for no incident).
    pub incident: Option<Incident>,
    pub created: bool,
    pub events: Vec<TimelineEvent>,
    pub effects: Vec<Effect>,
    /// An answer for whoever sent the input (ephemeral in chat).
    pub reply: Option<String>,
    /// The input was refused (not authorized, already decided…) and the refusal recorded.
    pub refused: bool,
    /// Execution records to write (queued, started, finished), in order.
    pub executions: Vec<Execution>,
    /// Group keys whose open incident changes: `Some` opened or reopened it, `None` closed it.
    pub open: Vec<(String, Option<IncidentId>)>,
    /// The incident's entry in its key's history, when this decision ended its response.
    pub past: Option<(String, PastIncident)>,
    /// What the decision means for the process's metrics, recorded once it is durable.
    pub observed: Vec<Observed>,
    /// Inputs that follow from this decision, for other incidents: the writer applies them
    /// right after it, in the same group commit (a storm member joining its summary).
    pub then: Vec<Input>,
    /// Sources whose storm summary changes: `Some` starts one on that incident, `None` ends it.
    pub storm_threads: Vec<(String, Option<IncidentId>)>,
}

/// A metric event derived from a decision (the runner records each once the decision is
/// durable). Outcome numbers (docs/metrics.md) come from tallies, not from these.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    AlertReceived {
        source: &'static str,
        firing: bool,
    },
    IncidentOpened {
        severity: Severity,
        kind: String,
    },
    IncidentResolved {
        severity: Severity,
        kind: String,
        /// From the incident's opening to its resolution.
        seconds: f64,
    },
    Acknowledged {
        severity: Severity,
        /// From the incident's opening to the first acknowledgement.
        seconds: f64,
    },
    Approval(ApprovalOutcome),
    ExecutionFinished {
        executor: &'static str,
        success: bool,
    },
    Escalated,
}

/// How an approval click ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalOutcome {
    Approved,
    Rejected,
    /// The policy refused the person.
    Refused,
}

/// What the core may look up beyond the incident itself: the committed state plus what earlier
/// inputs of the same group commit decided. Reads only; a storage failure behind it fails the
/// whole batch in the writer, so the core sees plain answers.
pub trait View {
    /// The active incident of a group key (or, for incidents opened before groups existed, of
    /// an alert fingerprint).
    fn open_incident(&self, key: &str) -> Option<IncidentId>;
    /// The execution record of a key (`{incident}:{action}`).
    fn execution(&self, key: &str) -> Option<Execution>;
    /// How many incidents from this source opened at or after `since` (the storm guard).
    fn openings(&self, source: &str, since: DateTime<Utc>) -> usize;
    /// The incident whose card summarizes this source's storm, while one does.
    fn storm_thread(&self, _source: &str) -> Option<IncidentId> {
        None
    }
}

/// A view of an empty world (tests, `simulate`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoView;

impl View for NoView {
    fn open_incident(&self, _: &str) -> Option<IncidentId> {
        None
    }
    fn execution(&self, _: &str) -> Option<Execution> {
        None
    }
    fn openings(&self, _: &str, _: DateTime<Utc>) -> usize {
        0
    }
}

/// The context the runner supplies.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub now: DateTime<Utc>,
    /// The id a new incident would get.
    pub next_id: IncidentId,
    /// For alerts: earlier incidents of the same fingerprint that were resolved (recurrence).
    pub history: &'a [PastIncident],
    /// For alerts with no open incident: the most recently resolved incident of the
    /// fingerprint (the newest of `history`), which a re-fire within the flap window reopens.
    pub recent: Option<&'a Incident>,
    /// Open incidents by key and execution records.
    pub view: &'a dyn View,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("now", &self.now)
            .field("next_id", &self.next_id)
            .field("history", &self.history)
            .field("recent", &self.recent.map(|i| i.id))
            .finish_non_exhaustive()
    }
}

/// A short, serializable account of what happened to one input (HTTP and chat answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentId>,
    pub created: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

/// The core. Every decision's timeline events are also folded into the incident's tally, the
/// one place the outcome numbers (docs/metrics.md) are derived from; the decision also says
/// which group keys open or close, what enters the history and which metric events happened.
pub fn handle(
    incident: Option<Incident>,
    input: Input,
    cfg: &Config,
    ctx: Ctx<'_>,
) -> Result<Decision, UserError> {
    // How the incident the decision is about was before it: the one passed in, or the recent
    // one a re-fire reopens. (id, active, acknowledged)
    let before: Vec<(IncidentId, bool, bool)> = incident
        .iter()
        .chain(ctx.recent)
        .map(|i| (i.id, i.status.is_active(), i.acknowledged_at.is_some()))
        .collect();
    let by_person = matches!(&input, Input::Command { actor, .. } if !actor.is_system());
    // The follow-up reminder armed for the incident: the one its state implies, unless it just
    // fired (a fired timer is no longer armed).
    let fired = match &input {
        Input::Timer(t) if t.kind == TimerKind::FollowUpReminder => Some(t.incident),
        _ => None,
    };
    let reminders_before: Vec<(IncidentId, Option<DateTime<Utc>>)> = incident
        .iter()
        .chain(ctx.recent)
        .map(|i| {
            let armed = followup::next_reminder(i, &cfg.followups).filter(|_| fired != Some(i.id));
            (i.id, armed)
        })
        .collect();
    let received = match &input {
        Input::Alert(a) | Input::Triaged(a, _) => Some(Observed::AlertReceived {
            source: a.source.as_str(),
            firing: a.status == AlertStatus::Firing,
        }),
        _ => None,
    };
    let mut d = decide(incident, input, cfg, ctx)?;
    d.observed.extend(received);
    let Some(inc) = d.incident.as_mut() else {
        return Ok(d);
    };
    let (was_active, was_acked) = before
        .iter()
        .find(|b| b.0 == inc.id)
        .map_or((None, false), |b| (Some(b.1), b.2));
    let active = inc.status.is_active();
    // The post-incident report goes into the thread after the note that resolves it.
    if was_active == Some(true) && inc.status == Status::Resolved {
        d.effects.push(Effect::Chat(ChatBody::RenderReport));
    }
    if inc.storm_thread.is_some() {
        storm_member_chat(inc, by_person, ctx, &mut d.effects, &mut d.events);
        // Out of the storm's summary, with a thread of its own: now it gathers its evidence.
        if inc.storm_thread.is_none() && asks_evidence(inc, cfg) {
            d.effects.push(Effect::GatherEvidence);
        }
    }
    let tally = inc.tally.get_or_insert_with(Default::default);
    for ev in &d.events {
        tally.record(ev);
    }
    tally.settle(Some(inc.verifying.as_deref()));
    // The group key's open incident, and its history when the response ended.
    match (was_active, active) {
        (None | Some(false), true) => d.open.push((inc.key().to_string(), Some(inc.id))),
        (Some(true), false) => {
            if ctx.view.open_incident(inc.key()) == Some(inc.id) {
                d.open.push((inc.key().to_string(), None));
            }
            d.past = PastIncident::of(inc).map(|p| (inc.key().to_string(), p));
        }
        _ => {}
    }
    let inc = d.incident.as_ref().expect("checked");
    // Follow-up reminders: armed for the next due date, re-armed as follow-ups change.
    let armed = reminders_before
        .iter()
        .find(|r| r.0 == inc.id)
        .and_then(|r| r.1);
    let next = followup::next_reminder(inc, &cfg.followups);
    if next != armed {
        d.effects.push(match next {
            Some(at) => Effect::ArmTimer(Timer {
                incident: inc.id,
                kind: TimerKind::FollowUpReminder,
                at,
            }),
            None => Effect::DisarmTimer(TimerKind::FollowUpReminder),
        });
    }
    let mut observed = observe(inc, &d.events, cfg);
    if d.created {
        observed.push(Observed::IncidentOpened {
            severity: inc.severity,
            kind: inc.kind.clone(),
        });
    }
    if !was_acked {
        if let Some(at) = inc.acknowledged_at {
            observed.push(Observed::Acknowledged {
                severity: inc.severity,
                seconds: seconds(inc.opened_at, at),
            });
        }
    }
    d.observed.extend(observed);
    Ok(d)
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

/// The metric events of a decision's timeline events.
fn observe(inc: &Incident, events: &[TimelineEvent], cfg: &Config) -> Vec<Observed> {
    events
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::StatusChanged {
                to: Status::Resolved,
                ..
            } => Some(Observed::IncidentResolved {
                severity: inc.severity,
                kind: inc.kind.clone(),
                seconds: seconds(inc.opened_at, ev.at),
            }),
            EventKind::ActionApproved { .. } => Some(Observed::Approval(ApprovalOutcome::Approved)),
            EventKind::ActionRejected { .. } => Some(Observed::Approval(ApprovalOutcome::Rejected)),
            EventKind::ApprovalRefused { .. } => Some(Observed::Approval(ApprovalOutcome::Refused)),
            EventKind::ExecutionFinished {
                action, success, ..
            } => Some(Observed::ExecutionFinished {
                executor: action_spec(inc, action, cfg).map_or("unknown", |s| s.run.type_name()),
                success: *success,
            }),
            EventKind::Escalated { .. } => Some(Observed::Escalated),
            _ => None,
        })
        .collect()
}

fn execution_exists(key: &str, ctx: Ctx<'_>, d: &Decision) -> bool {
    ctx.view.execution(key).is_some() || d.executions.iter().any(|x| x.key == key)
}

/// Queues an action's execution exactly once per key: a key that exists (stored, or queued
/// earlier in this decision) is not queued again. Returns whether it was queued.
fn queue_execution(
    inc: &Incident,
    action: &str,
    key: &str,
    ctx: Ctx<'_>,
    d: &mut Decision,
) -> bool {
    if execution_exists(key, ctx, d) {
        d.reply
            .get_or_insert_with(|| format!("`{action}` already ran or is running"));
        return false;
    }
    d.executions.push(Execution {
        key: key.to_string(),
        incident: inc.id,
        action: action.to_string(),
        status: ExecutionStatus::Queued,
        created_at: ctx.now,
        updated_at: ctx.now,
    });
    d.effects.push(Effect::Execute {
        action: action.to_string(),
        key: key.to_string(),
    });
    true
}

fn decide(
    incident: Option<Incident>,
    input: Input,
    cfg: &Config,
    ctx: Ctx<'_>,
) -> Result<Decision, UserError> {
    match input {
        Input::Alert(alert) => Ok(on_alert(incident, alert, None, cfg, ctx)),
        Input::Triaged(alert, pre) => Ok(on_alert(incident, alert, Some(*pre), cfg, ctx)),
        Input::Command { actor, command } => {
            let inc = incident.ok_or_else(|| {
                UserError(match command_target(&command) {
                    Some(id) => format!("{id} does not exist"),
                    None => "no such incident".into(),
                })
            })?;
            on_command(inc, actor, command, cfg, ctx)
        }
        Input::ThreadMessage {
            actor,
            incident: id,
            text,
        } => {
            let inc = incident.ok_or_else(|| UserError(format!("{id} does not exist")))?;
            let mut d = Decision::default();
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor,
                kind: EventKind::Note { text },
            });
            d.incident = Some(inc);
            Ok(d)
        }
        Input::Timer(t) => Ok(on_timer(incident, t, cfg, ctx)),
        Input::StormJoined { lead: _, member } => Ok(on_storm_joined(incident, member, cfg, ctx)),
        Input::ExecutionStarted {
            incident: id,
            action,
            key,
            preview,
        } => {
            // Exactly once: only a queued execution may start; `Started` is durable before launch.
            let x = match ctx.view.execution(&key) {
                Some(x) if x.status == ExecutionStatus::Queued => x,
                other => {
                    return Err(UserError(format!(
                        "execution {key} is {}; not starting it again",
                        other.map_or("unknown".into(), |x| format!("{:?}", x.status)
                            .to_lowercase())
                    )))
                }
            };
            let mut inc = incident.ok_or_else(|| UserError(format!("{id} does not exist")))?;
            let mut d = Decision::default();
            d.executions.push(Execution {
                status: ExecutionStatus::Started,
                updated_at: ctx.now,
                ..x
            });
            if let Some(a) = inc.action_mut(&action) {
                a.status = ActionStatus::Running;
            }
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: Actor::system(),
                kind: EventKind::ExecutionStarted {
                    action: action.clone(),
                    execution: key,
                    preview: preview.clone(),
                },
            });
            d.effects.push(Effect::Chat(ChatBody::Note {
                mentions: vec![],
                text: format!("▶️ Running `{action}`: `{preview}`"),
            }));
            push_card(&mut inc, ctx, &mut d);
            d.incident = Some(inc);
            Ok(d)
        }
        Input::ExecutionFinished {
            incident: id,
            action,
            key,
            success,
            summary,
        } => {
            let finished = ctx.view.execution(&key).map(|x| Execution {
                status: if success {
                    ExecutionStatus::Succeeded
                } else {
                    ExecutionStatus::Failed
                },
                updated_at: ctx.now,
                ..x
            });
            let inc = incident.ok_or_else(|| UserError(format!("{id} does not exist")))?;
            let mut d = on_execution_finished(inc, action, key, success, summary, cfg, ctx);
            d.executions.splice(0..0, finished);
            Ok(d)
        }
        Input::VerificationFinished {
            incident: id,
            action,
            ok,
            summary,
        } => {
            let mut inc = incident.ok_or_else(|| UserError(format!("{id} does not exist")))?;
            let mut d = Decision::default();
            if inc.status == Status::Verifying && inc.verifying.as_deref() == Some(action.as_str())
            {
                verification_done(&mut inc, &action, ok, summary, cfg, ctx, &mut d);
            }
            d.incident = Some(inc);
            Ok(d)
        }
        Input::FollowUpExported {
            incident: id,
            n,
            key,
            success,
            summary,
            link,
        } => {
            let mut inc = incident.ok_or_else(|| UserError(format!("{id} does not exist")))?;
            let mut d = Decision::default();
            d.executions
                .extend(ctx.view.execution(&key).map(|x| Execution {
                    status: if success {
                        ExecutionStatus::Succeeded
                    } else {
                        ExecutionStatus::Failed
                    },
                    updated_at: ctx.now,
                    ..x
                }));
            let action = export_action(n as usize);
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: Actor::system(),
                kind: EventKind::ExecutionFinished {
                    action,
                    execution: key,
                    success,
                    summary: summary.clone(),
                },
            });
            let f = inc.followups.get_mut((n as usize).wrapping_sub(1));
            let text = f.as_ref().map(|f| f.text.clone()).unwrap_or_default();
            d.effects.push(note(match (success, &link) {
                (true, Some(l)) => {
                    if let Some(f) = f {
                        f.link = Some(l.clone());
                    }
                    format!("🔗 Follow-up #{n} of {} ({text}) is tracked at {l}", inc.id)
                }
                (true, None) => format!(
                    "🔗 Follow-up #{n} of {} ({text}) exported ({summary}); the answer named no link.",
                    inc.id
                ),
                (false, _) => format!(
                    "⚠️ Follow-up #{n} of {} ({text}) could not be exported: {summary}. It is not retried; track it by hand.",
                    inc.id
                ),
            }));
            d.incident = Some(inc);
            Ok(d)
        }
        Input::VerificationCheck {
            incident: id,
            action,
            ok,
            summary,
        } => {
            let inc = incident.ok_or_else(|| UserError(format!("{id} does not exist")))?;
            let mut d = Decision::default();
            // Only while that verification runs: a late check after its outcome is not news.
            if inc.status == Status::Verifying && inc.verifying.as_deref() == Some(action.as_str())
            {
                d.effects.push(note(format!(
                    "{} `{action}` check: {summary}",
                    if ok { "🟢" } else { "🟡" }
                )));
                d.events.push(TimelineEvent {
                    at: ctx.now,
                    actor: Actor::system(),
                    kind: EventKind::VerificationChecked {
                        action,
                        ok,
                        summary,
                    },
                });
            }
            d.incident = Some(inc);
            Ok(d)
        }
        Input::ChartFetched { incident: id } => {
            let mut inc = incident.ok_or_else(|| UserError(format!("{id} does not exist")))?;
            let mut d = Decision::default();
            // A storm member has no card of its own (its storm thread summarizes it).
            if inc.storm_thread.is_none() {
                coalesce_card(&mut inc, cfg, ctx, &mut d);
            }
            d.incident = Some(inc);
            Ok(d)
        }
        Input::Evidence {
            incident: id,
            found,
        } => {
            let inc = incident.ok_or_else(|| UserError(format!("{id} does not exist")))?;
            Ok(on_evidence(inc, found, cfg))
        }
        Input::ExecutionInterrupted {
            incident: id,
            action,
            key,
        } => {
            let mut inc = incident.ok_or_else(|| UserError(format!("{id} does not exist")))?;
            let mut d = Decision::default();
            if let Some(a) = inc.action_mut(&action) {
                a.status = ActionStatus::Interrupted;
            }
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: Actor::system(),
                kind: EventKind::ExecutionInterrupted {
                    action: action.clone(),
                    execution: key,
                },
            });
            let text = match export_number(&action) {
                Some(n) => format!(
                    "⚠️ The export of follow-up #{n} was running when incidentd stopped. Whether the tracker got it is unknown and it will not be re-sent: check the tracker."
                ),
                None => format!(
                    "⚠️ `{action}` was running when incidentd stopped. Its outcome is unknown and it will not be re-run automatically: check the system, then resolve or escalate."
                ),
            };
            d.effects.push(Effect::Chat(ChatBody::Note {
                mentions: vec![],
                text,
            }));
            push_card(&mut inc, ctx, &mut d);
            d.incident = Some(inc);
            Ok(d)
        }
    }
}

/// Earlier incidents of this fingerprint resolved within the recurrence window.
fn recurrence(ctx: Ctx<'_>, cfg: &Config) -> Option<Recurrence> {
    let days = cfg.engine.recurrence_days;
    let since = ctx.now - Duration::days(days as i64);
    let recent: Vec<&PastIncident> = ctx
        .history
        .iter()
        .filter(|p| p.resolved_at >= since)
        .collect();
    let last = recent.iter().max_by_key(|p| p.resolved_at)?;
    // An incident reopened within the flap window and resolved again is remembered twice.
    let mut ids: Vec<IncidentId> = recent.iter().map(|p| p.id).collect();
    ids.sort_unstable();
    ids.dedup();
    Some(Recurrence {
        previous: ids.len() as u32,
        window_days: days,
        last: last.id,
        last_resolved_at: Some(last.resolved_at),
        last_fixed_by: last.fixed_by.clone(),
    })
}

/// The playbook spec of an action on this incident.
pub fn action_spec<'a>(inc: &Incident, action: &str, cfg: &'a Config) -> Option<&'a ActionSpec> {
    if action == PAGER_ACTION {
        return cfg.escalation.pager.as_ref();
    }
    if export_number(action).is_some() {
        return cfg.followups.export.as_ref();
    }
    inc.playbook
        .as_deref()
        .and_then(|p| cfg.playbook(p))
        .and_then(|p| p.actions.iter().find(|a| a.id == action))
}

fn note(text: String) -> Effect {
    Effect::Chat(ChatBody::Note {
        text,
        mentions: vec![],
    })
}

fn on_execution_finished(
    mut inc: Incident,
    action: String,
    key: String,
    success: bool,
    summary: String,
    cfg: &Config,
    ctx: Ctx<'_>,
) -> Decision {
    let mut d = Decision::default();
    let system = Actor::system();
    if let Some(a) = inc.action_mut(&action) {
        a.status = if success {
            ActionStatus::Succeeded
        } else {
            ActionStatus::Failed
        };
    }
    if success && action != PAGER_ACTION && inc.mitigated_at.is_none() {
        inc.mitigated_at = Some(ctx.now);
    }
    d.events.push(TimelineEvent {
        at: ctx.now,
        actor: system.clone(),
        kind: EventKind::ExecutionFinished {
            action: action.clone(),
            execution: key,
            success,
            summary: summary.clone(),
        },
    });
    let undone = inc.rolling_back.clone().filter(|orig| {
        action_spec(&inc, orig, cfg).and_then(|s| s.rollback.as_deref()) == Some(action.as_str())
    });
    if let Some(orig) = undone {
        // The rollback of an action that did not verify.
        inc.rolling_back = None;
        if success {
            d.effects.push(note(format!(
                "↩️ Rolled back `{orig}` with `{action}`: {summary}"
            )));
            if inc.status.can_become(Status::RolledBack) {
                if let Ok(ev) = inc.transition(Status::RolledBack, &system, ctx.now, None) {
                    d.events.push(ev);
                }
            }
            let reason = format!("`{orig}` did not fix it and was rolled back");
            escalate(&mut inc, &system, reason, cfg, ctx, &mut d);
        } else {
            d.effects
                .push(note(format!("❌ Rollback `{action}` failed: {summary}")));
            let reason = format!("the rollback of `{orig}` failed");
            escalate(&mut inc, &system, reason, cfg, ctx, &mut d);
        }
    } else if !success {
        d.effects
            .push(note(format!("❌ `{action}` failed: {summary}")));
        escalate(
            &mut inc,
            &system,
            format!("`{action}` failed"),
            cfg,
            ctx,
            &mut d,
        );
    } else if let Some((spec, v)) =
        action_spec(&inc, &action, cfg).and_then(|s| Some((s, s.verify.clone()?)))
    {
        d.effects.push(note(format!(
            "✅ `{action}` ran: {summary}. Verifying: {}.",
            crate::remediate::preview::verification(spec, &v, &inc)
        )));
        if inc.status.can_become(Status::Verifying) {
            if let Ok(ev) = inc.transition(Status::Verifying, &system, ctx.now, None) {
                d.events.push(ev);
            }
        }
        inc.verifying = Some(action.clone());
        if let VerifySpec::AlertResolves { within_seconds } = v {
            if inc.alert_status == AlertStatus::Resolved {
                let s = "the alert is already resolved".to_string();
                verification_done(&mut inc, &action, true, s, cfg, ctx, &mut d);
            } else {
                d.effects.push(Effect::ArmTimer(Timer {
                    incident: inc.id,
                    kind: TimerKind::VerifyDeadline,
                    at: ctx.now + Duration::seconds(within_seconds as i64),
                }));
            }
        }
    } else {
        d.effects
            .push(note(format!("✅ `{action}` succeeded: {summary}")));
    }
    push_card(&mut inc, ctx, &mut d);
    d.incident = Some(inc);
    d
}

/// Evidence on the timeline and in the thread; the first conclusive finding whose spec names
/// a root cause becomes the suggested root cause, with the reason stated, unless a person
/// already confirmed one (then the keywords' suggestion stays too when nothing is conclusive).
fn on_evidence(
    mut inc: Incident,
    found: Vec<crate::ports::EvidenceFound>,
    cfg: &Config,
) -> Decision {
    let mut d = Decision::default();
    let specs = inc
        .playbook
        .as_deref()
        .and_then(|p| cfg.playbook(p))
        .map(|p| p.evidence.as_slice())
        .unwrap_or_default();
    let mut lines = Vec::new();
    let mut suggested = None;
    for f in found {
        let spec = specs.iter().find(|s| s.name == f.name);
        let cond = spec
            .and_then(|s| s.threshold())
            .map(|t| format!(" ({t} {})", if f.conclusive { "✓" } else { "✗" }))
            .unwrap_or_default();
        lines.push(format!("• {} = {}{cond}", f.name, f.summary));
        if suggested.is_none() && f.conclusive {
            if let Some(category) = spec.and_then(|s| s.root_cause) {
                let reason = spec.and_then(|s| s.reason.as_deref()).unwrap_or("");
                let text = format!(
                    "{} {} at {} UTC ⇒ {}{}",
                    f.name,
                    f.summary,
                    f.at.format("%H:%M"),
                    category.label().to_lowercase(),
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    }
                );
                suggested = Some((category, text));
            }
        }
        d.events.push(TimelineEvent {
            at: f.at,
            actor: Actor::system(),
            kind: EventKind::Evidence {
                name: f.name,
                query: f.query,
                summary: f.summary,
                conclusive: f.conclusive,
            },
        });
    }
    if lines.is_empty() {
        d.incident = Some(inc);
        return d;
    }
    let confirmed = inc
        .root_cause
        .as_ref()
        .is_some_and(|r| r.confirmed_by.is_some());
    let mut text = format!("🔎 Evidence:\n{}", lines.join("\n"));
    match suggested {
        Some((category, why)) if !confirmed => {
            text.push_str(&format!("\nSuggested root cause: {why}"));
            inc.root_cause = Some(RootCauseInfo {
                category,
                text: Some(why),
                confirmed_by: None,
            });
        }
        _ => {}
    }
    d.effects.push(note(text));
    d.incident = Some(inc);
    d
}

/// A verification passed (resolve) or failed (roll back per playbook and policy, escalate).
fn verification_done(
    inc: &mut Incident,
    action: &str,
    ok: bool,
    summary: String,
    cfg: &Config,
    ctx: Ctx<'_>,
    d: &mut Decision,
) {
    let system = Actor::system();
    inc.verifying = None;
    d.effects
        .push(Effect::DisarmTimer(TimerKind::VerifyDeadline));
    d.events.push(TimelineEvent {
        at: ctx.now,
        actor: system.clone(),
        kind: EventKind::Verified {
            action: action.to_string(),
            ok,
            summary: summary.clone(),
        },
    });
    if ok {
        d.effects.push(note(format!(
            "✅ `{action}` verified ({summary}). {} resolved.",
            inc.id
        )));
        if let Ok(ev) = inc.transition(
            Status::Resolved,
            &system,
            ctx.now,
            Some(format!("`{action}` verified")),
        ) {
            d.events.push(ev);
        }
        push_card(inc, ctx, d);
        return;
    }
    d.effects
        .push(note(format!("❌ `{action}` did not verify: {summary}")));
    let rollback = action_spec(inc, action, cfg)
        .and_then(|s| s.rollback.as_deref())
        .and_then(|rb| action_spec(inc, rb, cfg))
        .cloned();
    if let Some(spec) = &rollback {
        if inc.action(&spec.id).is_none() {
            inc.actions.push(action_state(spec));
        }
    }
    let Some(rb) = rollback.map(|s| s.id) else {
        let reason = format!("`{action}` did not verify and has no rollback");
        escalate(inc, &system, reason, cfg, ctx, d);
        return;
    };
    inc.rolling_back = Some(action.to_string());
    if let Some(a) = inc.action_mut(&rb) {
        // Offer (or run) the rollback afresh, whatever was decided about it before.
        a.status = ActionStatus::Proposed;
        a.approvals.clear();
        a.decided_by = None;
        a.decided_at = None;
    }
    let auto = cfg.targets(inc.severity).approval.allows_auto() && inc.severity != Severity::P0;
    if auto {
        d.effects
            .push(note(format!("↩️ Rolling back `{action}` with `{rb}`.")));
        if let Ok(ev) = inc.transition(Status::Remediating, &system, ctx.now, None) {
            d.events.push(ev);
        }
        approve_fully(inc, &rb, Some(action), &system, ctx, d);
        push_card(inc, ctx, d);
    } else {
        let reason = format!("`{action}` did not verify; rollback `{rb}` needs approval");
        escalate(inc, &system, reason, cfg, ctx, d);
    }
}

/// The command's verb, for refusals.
fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Ack(_) => "ack",
        Command::Resolve(..) => "resolve",
        Command::Reopen(_) => "reopen",
        Command::Escalate(_) => "escalate",
        Command::Assign(..) => "assign",
        Command::Severity(..) => "severity",
        Command::RootCause(..) => "rootcause",
        Command::FollowUp(..) => "followup",
        Command::FollowUpSet(_, _, c) => match c {
            FollowUpChange::Done => "followup done",
            FollowUpChange::Verified => "followup verify",
            FollowUpChange::Dropped { .. } => "followup drop",
        },
        Command::Note(..) => "note",
        Command::Approve(..) => "approve",
        Command::Reject(..) => "reject",
        _ => "command",
    }
}

/// The incident a command is about.
pub fn command_target(c: &Command) -> Option<IncidentId> {
    match c {
        Command::Help
        | Command::New(_)
        | Command::List { .. }
        | Command::Stats(_)
        | Command::FollowUps(_) => None,
        Command::Timeline(i)
        | Command::Report(i)
        | Command::Assign(i, _)
        | Command::Severity(i, _)
        | Command::RootCause(i, _, _)
        | Command::FollowUp(i, ..)
        | Command::FollowUpSet(i, ..)
        | Command::FollowUpList(i)
        | Command::Status(i)
        | Command::Ack(i)
        | Command::Resolve(i, _)
        | Command::Reopen(i)
        | Command::Escalate(i)
        | Command::Approve(i, _)
        | Command::Reject(i, _, _)
        | Command::Note(i, _) => Some(*i),
    }
}

/// The card for an incident under this config.
/// Each action shows what it runs for this incident, templated exactly as the executor will
/// template it (or why it cannot run).
pub fn card(inc: &Incident, cfg: &Config) -> IncidentCard {
    let mut card = build_card(
        inc,
        cfg.classifier.kind_name(&inc.kind),
        cfg.targets(inc.severity),
        cfg.policy(inc.severity).min_approvals,
        cfg.engine.max_description_chars,
    );
    for a in &mut card.actions {
        if let Some(spec) = action_spec(inc, &a.id, cfg) {
            a.summary = crate::remediate::preview::action(spec, inc);
        }
    }
    card
}

fn on_alert(
    existing: Option<Incident>,
    alert: Alert,
    pre: Option<PreTriage>,
    cfg: &Config,
    ctx: Ctx<'_>,
) -> Decision {
    let mut d = Decision::default();
    let system = Actor::system();
    let group_by = &cfg.engine.group_by;
    let key = alert.group_key(group_by);
    let mut existing = existing;
    // The alert joins (or updates) its incident's group; the incident's alert status is the
    // group's: firing while any of its alerts fires.
    let change = existing.as_mut().and_then(|inc| {
        let instance = alert.instance(group_by);
        inc.group
            .as_mut()
            .map(|g| g.record(&alert.fingerprint, instance, alert.status, ctx.now))
    });
    let others_firing = existing
        .as_ref()
        .and_then(|i| i.group.as_ref())
        .is_some_and(|g| !g.all_clear());
    match (existing, alert.status) {
        (None, AlertStatus::Resolved) => {
            d.reply = Some(format!(
                "no open incident for fingerprint {}; resolved alert ignored",
                alert.fingerprint
            ));
        }
        (None, AlertStatus::Firing) if ctx.recent.is_some_and(|r| flapped(r, &key, cfg, ctx)) => {
            let inc = ctx.recent.expect("checked").clone();
            return reopen_on_refire(inc, &alert, cfg, ctx);
        }
        (None, AlertStatus::Firing) => {
            let PreTriage { triage, root_cause } =
                pre.unwrap_or_else(|| PreTriage::of(&alert, cfg));
            let facts = Facts {
                labels: &alert.labels,
                annotations: &alert.annotations,
            };
            let actions = proposed_actions(triage.playbook.as_deref(), facts, cfg);
            let mut group = AlertGroup::new(key);
            group.record(
                &alert.fingerprint,
                alert.instance(group_by),
                AlertStatus::Firing,
                ctx.now,
            );
            let mut inc = Incident {
                id: ctx.next_id,
                fingerprint: alert.fingerprint,
                title: alert.title,
                description: alert.description,
                source: alert.source,
                severity: triage.severity,
                kind: triage.kind.clone(),
                playbook: triage.playbook,
                rule: triage.rule.clone(),
                status: Status::Open,
                alert_status: AlertStatus::Firing,
                labels: alert.labels,
                annotations: alert.annotations,
                links: alert.links,
                origin: alert.origin,
                opened_at: ctx.now,
                started_at: alert.starts_at,
                last_seen_at: ctx.now,
                alert_count: 1,
                acknowledged_at: None,
                acknowledged_by: None,
                resolved_at: None,
                resolved_by: None,
                actions,
                timeline_len: 0,
                card_sent_at: Some(ctx.now),
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
                group: Some(group),
                storm: None,
                storm_thread: None,
                storm_summary: None,
            };
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: system.clone(),
                kind: EventKind::Opened {
                    severity: triage.severity,
                    kind: triage.kind,
                    rule: triage.rule,
                },
            });
            inc.recurrence = recurrence(ctx, cfg);
            inc.root_cause = Some(RootCauseInfo {
                category: root_cause,
                text: None,
                confirmed_by: None,
            });
            let storming = storm(&inc, cfg, ctx);
            match storming {
                Some(n) if would_start_auto_actions(&inc, cfg) => {
                    // The storm guard: nothing runs on its own while incidents pour in.
                    inc.storm = Some(n);
                    d.events.push(TimelineEvent {
                        at: ctx.now,
                        actor: system.clone(),
                        kind: EventKind::StormGuard {
                            new_incidents: n,
                            window_seconds: cfg.engine.storm_window_seconds,
                        },
                    });
                }
                _ => start_auto_actions(&mut inc, cfg, ctx, &mut d),
            }
            arm_deadlines(&inc, cfg, ctx, &mut d);
            d.effects
                .insert(0, Effect::Chat(ChatBody::RenderCard { post: true }));
            if storming.is_some() && inc.severity > Severity::P1 {
                summarize_in_storm(&mut inc, cfg, ctx, &mut d);
            }
            // Evidence: not for an incident that joined a storm's summary (the summary's own
            // incident asks), so a storm of thousands does not send thousands of query sets
            // to a Prometheus likely under the same load.
            if asks_evidence(&inc, cfg) && inc.storm_thread.is_none() {
                d.effects.push(Effect::GatherEvidence);
            }
            d.created = true;
            d.incident = Some(inc);
        }
        (Some(mut inc), AlertStatus::Firing) => {
            inc.alert_count += 1;
            inc.last_seen_at = ctx.now;
            if inc.alert_status == AlertStatus::Resolved {
                // A re-fire within the quiet period: the same incident, not resolving any more,
                // and escalation runs again from now.
                inc.alert_status = AlertStatus::Firing;
                d.events.push(TimelineEvent {
                    at: ctx.now,
                    actor: system,
                    kind: EventKind::AlertRefired,
                });
                d.effects
                    .push(Effect::DisarmTimer(TimerKind::ResolveAfterClear));
                d.effects.push(note(format!(
                    "🔁 The alert for {} is firing again: it stays open and escalation starts over.",
                    inc.id
                )));
                arm_deadlines(&inc, cfg, ctx, &mut d);
                push_card(&mut inc, ctx, &mut d);
            } else {
                coalesce_card(&mut inc, cfg, ctx, &mut d);
            }
            d.incident = Some(inc);
        }
        (Some(mut inc), AlertStatus::Resolved) if others_firing => {
            // One alert of the group cleared, others still fire: the card shows it.
            inc.last_seen_at = ctx.now;
            if change != Some(MemberChange::Repeated) {
                coalesce_card(&mut inc, cfg, ctx, &mut d);
            }
            d.incident = Some(inc);
        }
        (Some(mut inc), AlertStatus::Resolved) => {
            if inc.alert_status != AlertStatus::Resolved {
                inc.alert_status = AlertStatus::Resolved;
                inc.last_seen_at = ctx.now;
                d.events.push(TimelineEvent {
                    at: ctx.now,
                    actor: system.clone(),
                    kind: EventKind::AlertResolved,
                });
                // The source's word counts: nobody is chased about an alert that has cleared.
                for kind in ESCALATION_TIMERS {
                    d.effects.push(Effect::DisarmTimer(kind));
                }
                let waiting_for_clear = inc.status == Status::Verifying
                    && inc.verifying.as_deref().is_some_and(|a| {
                        matches!(
                            action_spec(&inc, a, cfg).and_then(|s| s.verify.as_ref()),
                            Some(VerifySpec::AlertResolves { .. })
                        )
                    });
                if waiting_for_clear {
                    let action = inc.verifying.clone().unwrap_or_default();
                    let s = "the alert resolved".to_string();
                    verification_done(&mut inc, &action, true, s, cfg, ctx, &mut d);
                    d.incident = Some(inc);
                    return d;
                }
                let quiet = cfg.resolve_after_clear(inc.playbook.as_deref(), inc.severity);
                let id = inc.id;
                match (quiet, &inc.acknowledged_by) {
                    (Some(0), _) if inc.status.can_become(Status::Resolved) => {
                        let ev = inc
                            .transition(
                                Status::Resolved,
                                &system,
                                ctx.now,
                                Some(
                                    "the alert resolved and the playbook resolves on clear".into(),
                                ),
                            )
                            .expect("checked above");
                        d.events.push(ev);
                        d.effects
                            .push(note(format!("✅ {id} resolved: the alert cleared.")));
                    }
                    (Some(_), Some(by)) => {
                        d.effects.push(note(format!(
                            "🟢 The alert for {id} cleared; escalation stopped. {id} was acknowledged by {}, so it stays open: resolve it when you are satisfied.",
                            by.display()
                        )));
                    }
                    (Some(secs), None) => {
                        d.effects.push(Effect::ArmTimer(Timer {
                            incident: id,
                            kind: TimerKind::ResolveAfterClear,
                            at: ctx.now + Duration::seconds(secs as i64),
                        }));
                        d.effects.push(note(format!(
                            "🟢 The alert for {id} cleared; escalation stopped. {id} resolves in {} unless the alert fires again or someone acknowledges it.",
                            human_seconds(secs)
                        )));
                    }
                    (None, _) => {
                        d.effects.push(note(format!(
                            "🟢 Monitoring reports the alert for {id} resolved; escalation stopped. Resolve the incident when you are satisfied."
                        )));
                    }
                }
                push_card(&mut inc, ctx, &mut d);
            }
            d.incident = Some(inc);
        }
    }
    d
}

/// The timers that chase people about a firing alert: disarmed when it clears, and doing
/// nothing if they fire for an incident whose alert has cleared.
const ESCALATION_TIMERS: [TimerKind; 3] = [
    TimerKind::AckDeadline,
    TimerKind::RepairDeadline,
    TimerKind::ApprovalExpiry,
];

/// This alert fires again soon enough after incidentd itself resolved `recent` (on its clear,
/// or by a verified action) that it is the same trouble flapping, not a new incident. An
/// incident a person resolved stays resolved: the re-fire opens a new one (a recurrence).
fn flapped(recent: &Incident, key: &str, cfg: &Config, ctx: Ctx<'_>) -> bool {
    let window = cfg.engine.flap_window_seconds;
    recent.status == Status::Resolved
        && recent.key() == key
        && window > 0
        && recent.resolved_by.as_ref().is_some_and(Actor::is_system)
        && recent
            .resolved_at
            .is_some_and(|at| ctx.now - at <= Duration::seconds(window as i64))
}

/// Reopens an incident incidentd resolved within the flap window: the same thread and
/// history, escalation from now.
fn reopen_on_refire(mut inc: Incident, alert: &Alert, cfg: &Config, ctx: Ctx<'_>) -> Decision {
    let mut d = Decision::default();
    if let Some(g) = inc.group.as_mut() {
        let instance = alert.instance(&cfg.engine.group_by);
        g.record(&alert.fingerprint, instance, AlertStatus::Firing, ctx.now);
    }
    let system = Actor::system();
    let ago = inc
        .resolved_at
        .map_or(0, |at| (ctx.now - at).num_seconds().max(0));
    let reason = format!(
        "the alert fired again {} after {} resolved (flap window {})",
        human_seconds(ago as u64),
        inc.id,
        human_seconds(cfg.engine.flap_window_seconds)
    );
    let ev = inc
        .transition(Status::Open, &system, ctx.now, Some(reason.clone()))
        .expect("a resolved incident can be reopened");
    d.events.push(ev);
    inc.alert_status = AlertStatus::Firing;
    inc.alert_count += 1;
    inc.last_seen_at = ctx.now;
    d.events.push(TimelineEvent {
        at: ctx.now,
        actor: system,
        kind: EventKind::AlertRefired,
    });
    d.effects
        .push(note(format!("🔁 {} reopened: {reason}.", inc.id)));
    rerun_auto_fix(&mut inc, cfg, ctx, &mut d);
    arm_deadlines(&inc, cfg, ctx, &mut d);
    push_card(&mut inc, ctx, &mut d);
    d.incident = Some(inc);
    d
}

/// A re-fire reopened an incident that its automatic fix had fixed (the action ran on its own
/// and succeeded): the fix runs again, as an on-call would try first, under the same rules as
/// a new incident's automatic actions (the severity's policy, the storm guard), once per reopen
/// and at most `max_auto_runs` times per incident in all (each run has its own execution key,
/// `INC-n:action#2`…, so each still runs exactly once). The thread says why it runs, or why not.
fn rerun_auto_fix(inc: &mut Incident, cfg: &Config, ctx: Ctx<'_>, d: &mut Decision) {
    let fixes: Vec<String> = inc
        .actions
        .iter()
        .filter(|a| {
            a.auto
                && a.status == ActionStatus::Succeeded
                && a.decided_by.as_ref().is_some_and(Actor::is_system)
        })
        .map(|a| a.id.clone())
        .collect();
    if fixes.is_empty() {
        return;
    }
    let id = inc.id;
    let named = fixes
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if !auto_allowed(inc, cfg) {
        d.effects.push(note(format!(
            "⏸️ The automatic fix {named} is not run again on its own at {} (the policy wants a person): a person decides.",
            inc.severity
        )));
        return;
    }
    if let Some(n) = storm(inc, cfg, ctx) {
        d.events.push(TimelineEvent {
            at: ctx.now,
            actor: Actor::system(),
            kind: EventKind::StormGuard {
                new_incidents: n,
                window_seconds: cfg.engine.storm_window_seconds,
            },
        });
        d.effects.push(note(format!(
            "⏸️ The storm guard holds the automatic fix {named}: {n} incidents opened within {}; it is not run again on its own.",
            human_seconds(cfg.engine.storm_window_seconds)
        )));
        return;
    }
    let max = cfg.engine.max_auto_runs.max(1);
    let system = Actor::system();
    for action in fixes {
        let key = |n: u32| match n {
            1 => format!("{id}:{action}"),
            n => format!("{id}:{action}#{n}"),
        };
        match (1..=max).find(|n| !execution_exists(&key(*n), ctx, d)) {
            Some(n) => {
                d.effects.push(note(format!(
                    "🔁 Running the automatic fix `{action}` again (run {n} of at most {max}): it fixed {id} before the alert fired again."
                )));
                approve_keyed(inc, &action, key(n), None, &system, ctx, d);
            }
            None => d.effects.push(note(format!(
                "⚠️ The automatic fix `{action}` already ran {max} {} for {id} (`max_auto_runs` = {max}): it is not run again; a person decides.",
                if max == 1 { "time" } else { "times" }
            ))),
        }
    }
}

/// The playbook's actions for a new incident: those whose `when` holds for its labels and
/// annotations (an action without `when` always), rollback-only actions left out.
fn proposed_actions(playbook: Option<&str>, facts: Facts<'_>, cfg: &Config) -> Vec<ActionState> {
    let Some(pb) = playbook.and_then(|p| cfg.playbook(p)) else {
        return vec![];
    };
    // Actions that only undo another one are offered when their rollback is needed, not before.
    let rollbacks: Vec<&str> = pb
        .actions
        .iter()
        .filter_map(|a| a.rollback.as_deref())
        .collect();
    pb.actions
        .iter()
        .filter(|a| !rollbacks.contains(&a.id.as_str()))
        .filter(|a| a.when.as_ref().is_none_or(|c| c.eval(facts)))
        .map(action_state)
        .collect()
}

fn action_state(a: &ActionSpec) -> ActionState {
    ActionState {
        id: a.id.clone(),
        title: a.title.clone(),
        auto: a.auto,
        summary: a.run.summary(),
        status: ActionStatus::Proposed,
        approvals: vec![],
        decided_by: None,
        decided_at: None,
    }
}

/// The escalation timers of a new incident: acknowledgement (detection target), repair, and
/// approval expiry when actions wait for a human.
fn arm_deadlines(inc: &Incident, cfg: &Config, ctx: Ctx<'_>, d: &mut Decision) {
    let t = cfg.targets(inc.severity);
    let at = |secs: u64| ctx.now + Duration::seconds(secs as i64);
    let mut arm = |kind, at| {
        d.effects.push(Effect::ArmTimer(Timer {
            incident: inc.id,
            kind,
            at,
        }))
    };
    arm(TimerKind::AckDeadline, at(t.detect_seconds));
    arm(TimerKind::RepairDeadline, at(t.repair_seconds));
    if inc
        .actions
        .iter()
        .any(|a| a.status == ActionStatus::Proposed)
    {
        let expiry = cfg.policy(inc.severity).expiry_seconds;
        arm(TimerKind::ApprovalExpiry, at(expiry));
    }
}

/// The storm guard: when more than `[engine] storm_new_incidents` incidents from the alert's
/// source opened within `storm_window_seconds` (this one included), their number. The guard
/// lifts by itself as the rate falls.
fn storm(inc: &Incident, cfg: &Config, ctx: Ctx<'_>) -> Option<u32> {
    let e = &cfg.engine;
    if e.storm_new_incidents == 0 {
        return None;
    }
    let since = ctx.now - Duration::seconds(e.storm_window_seconds as i64);
    let n = ctx.view.openings(inc.source.as_str(), since) as u32 + 1;
    (n > e.storm_new_incidents).then_some(n)
}

/// The storm window as a duration.
fn storm_window(cfg: &Config) -> Duration {
    Duration::seconds(cfg.engine.storm_window_seconds as i64)
}

/// A new P2/P3 incident during a storm: instead of a card and thread each, the first becomes its
/// source's storm summary (its card lists the storm's incidents; its thread is the storm
/// thread) and the others join that summary without a card of their own. P0/P1 incidents are
/// never summarized: each needs a person within its detection target (30 s, 60 s), and their
/// cards go first in the outbox.
fn summarize_in_storm(inc: &mut Incident, cfg: &Config, ctx: Ctx<'_>, d: &mut Decision) {
    let member = StormMember {
        id: inc.id,
        title: inc.title.clone(),
        kind: inc.kind.clone(),
        severity: inc.severity,
    };
    let source = inc.source.as_str();
    let thread = match ctx.view.storm_thread(source) {
        Some(lead) => {
            inc.storm_thread = Some(lead);
            d.then.push(Input::StormJoined { lead, member });
            lead
        }
        None => {
            let mut summary = StormSummary::new(source, ctx.now);
            summary.add(&member);
            inc.storm_summary = Some(summary);
            d.storm_threads.push((source.to_string(), Some(inc.id)));
            d.effects.push(Effect::ArmTimer(Timer {
                incident: inc.id,
                kind: TimerKind::StormLift,
                at: ctx.now + storm_window(cfg),
            }));
            inc.id
        }
    };
    d.events.push(TimelineEvent {
        at: ctx.now,
        actor: Actor::system(),
        kind: EventKind::StormSummarized {
            storm_thread: thread,
        },
    });
}

/// The chat effects of an incident summarized in a storm thread: none (its timeline, the API
/// and the console have everything), until it needs a person: when it escalates (a note that
/// mentions people) or a person acts on it (acknowledges, approves… through `/incident`, the
/// console or the API), it gets its card and thread of its own first, and keeps them.
fn storm_member_chat(
    inc: &mut Incident,
    by_person: bool,
    ctx: Ctx<'_>,
    effects: &mut Vec<Effect>,
    events: &mut Vec<TimelineEvent>,
) {
    let escalates = events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Escalated { .. }))
        || effects.iter().any(
            |e| matches!(e, Effect::Chat(ChatBody::Note { mentions, .. }) if !mentions.is_empty()),
        );
    let reason = if escalates {
        "it escalates"
    } else if by_person && inc.status.is_active() {
        "a person acted on it"
    } else {
        effects.retain(|e| !matches!(e, Effect::Chat(_)));
        return;
    };
    inc.storm_thread = None;
    inc.card_sent_at = Some(ctx.now);
    // The card is built when it leaves, so it shows everything so far; edits before it go.
    effects.retain(|e| !matches!(e, Effect::Chat(ChatBody::RenderCard { post: false })));
    effects.insert(0, Effect::Chat(ChatBody::RenderCard { post: true }));
    events.push(TimelineEvent {
        at: ctx.now,
        actor: Actor::system(),
        kind: EventKind::StormOwnThread {
            reason: reason.to_string(),
        },
    });
}

/// An incident joins the storm summary on this incident's card: counted, named if among the
/// newest, and the card edited (coalesced like repeats). The storm goes on, so the check for
/// its end moves a window later.
fn on_storm_joined(
    incident: Option<Incident>,
    member: StormMember,
    cfg: &Config,
    ctx: Ctx<'_>,
) -> Decision {
    let mut d = Decision::default();
    let Some(mut inc) = incident else {
        return d;
    };
    if let Some(summary) = inc.storm_summary.as_mut() {
        summary.add(&member);
        if summary.lifted_at.is_none() {
            d.effects.push(Effect::ArmTimer(Timer {
                incident: inc.id,
                kind: TimerKind::StormLift,
                at: ctx.now + storm_window(cfg),
            }));
        }
        coalesce_card(&mut inc, cfg, ctx, &mut d);
    }
    d.incident = Some(inc);
    d
}

/// The storm check on the summary's incident: while a new incident would still be held by the
/// storm guard, check again a window later; once not, the storm is over: one note in the storm
/// thread, the card says so, and new incidents of the source get their own cards again.
fn storm_lift(inc: &mut Incident, cfg: &Config, ctx: Ctx<'_>, d: &mut Decision) {
    let Some(summary) = inc.storm_summary.as_mut().filter(|s| s.lifted_at.is_none()) else {
        return;
    };
    let e = &cfg.engine;
    let recent = ctx
        .view
        .openings(&summary.source, ctx.now - storm_window(cfg)) as u32;
    if e.storm_new_incidents > 0 && recent + 1 > e.storm_new_incidents {
        d.effects.push(Effect::ArmTimer(Timer {
            incident: inc.id,
            kind: TimerKind::StormLift,
            at: ctx.now + storm_window(cfg),
        }));
        return;
    }
    summary.lifted_at = Some(ctx.now);
    let (count, source) = (summary.count, summary.source.clone());
    d.events.push(TimelineEvent {
        at: ctx.now,
        actor: Actor::system(),
        kind: EventKind::StormLifted { incidents: count },
    });
    d.effects.push(note(format!(
        "⛅ Storm over: {count} incidents from {source} were summarized in this thread; new incidents get their own cards again."
    )));
    d.storm_threads.push((source, None));
    push_card(inc, ctx, d);
}

/// Whether the incident's playbook has evidence queries to run (with a Prometheus to ask).
pub(crate) fn asks_evidence(inc: &Incident, cfg: &Config) -> bool {
    cfg.prometheus.is_some()
        && inc
            .playbook
            .as_deref()
            .and_then(|p| cfg.playbook(p))
            .is_some_and(|p| !p.evidence.is_empty())
}

/// Whether [`start_auto_actions`] would start anything.
fn would_start_auto_actions(inc: &Incident, cfg: &Config) -> bool {
    auto_allowed(inc, cfg)
        && inc
            .actions
            .iter()
            .any(|a| a.auto && a.status == ActionStatus::Proposed)
}

fn auto_allowed(inc: &Incident, cfg: &Config) -> bool {
    cfg.targets(inc.severity).approval.allows_auto() && inc.severity != Severity::P0
}

/// Actions marked `auto` run at once where the severity allows it (never at P0/P1 by default).
fn start_auto_actions(inc: &mut Incident, cfg: &Config, ctx: Ctx<'_>, d: &mut Decision) {
    if !auto_allowed(inc, cfg) {
        return;
    }
    let system = Actor::system();
    let auto: Vec<String> = inc
        .actions
        .iter()
        .filter(|a| a.auto && a.status == ActionStatus::Proposed)
        .map(|a| a.id.clone())
        .collect();
    for id in auto {
        approve_fully(inc, &id, None, &system, ctx, d);
    }
}

/// Marks an action approved, queues its execution and moves the incident to remediating.
/// `rollback_of`: the action it undoes, when it is a rollback.
fn approve_fully(
    inc: &mut Incident,
    action: &str,
    rollback_of: Option<&str>,
    by: &Actor,
    ctx: Ctx<'_>,
    d: &mut Decision,
) {
    let key = format!("{}:{}", inc.id, action);
    approve_keyed(inc, action, key, rollback_of, by, ctx, d);
}

/// [`approve_fully`] under a given execution key (a re-run's).
fn approve_keyed(
    inc: &mut Incident,
    action: &str,
    key: String,
    rollback_of: Option<&str>,
    by: &Actor,
    ctx: Ctx<'_>,
    d: &mut Decision,
) {
    if execution_exists(&key, ctx, d) {
        d.reply
            .get_or_insert_with(|| format!("`{action}` already ran or is running"));
        return;
    }
    if let Some(a) = inc.action_mut(action) {
        a.status = ActionStatus::Approved;
        a.decided_by = Some(by.clone());
        a.decided_at = Some(ctx.now);
    }
    d.events.push(TimelineEvent {
        at: ctx.now,
        actor: by.clone(),
        kind: EventKind::ExecutionQueued {
            action: action.to_string(),
            execution: key.clone(),
            rollback_of: rollback_of.map(String::from),
        },
    });
    queue_execution(inc, action, &key, ctx, d);
    if inc.status != Status::Remediating && inc.status.can_become(Status::Remediating) {
        if let Ok(ev) = inc.transition(Status::Remediating, by, ctx.now, None) {
            d.events.push(ev);
        }
    }
}

/// Sends the card edit now, clearing any held-back edit.
fn push_card(inc: &mut Incident, ctx: Ctx<'_>, d: &mut Decision) {
    inc.card_sent_at = Some(ctx.now);
    if inc.card_dirty {
        inc.card_dirty = false;
        d.effects.push(Effect::DisarmTimer(TimerKind::CardFlush));
    }
    d.effects
        .push(Effect::Chat(ChatBody::RenderCard { post: false }));
}

/// Repeats: at most one card edit per coalescing window; the rest wait for the flush timer.
fn coalesce_card(inc: &mut Incident, cfg: &Config, ctx: Ctx<'_>, d: &mut Decision) {
    let window = Duration::seconds(cfg.engine.card_coalesce_seconds as i64);
    let due = inc.card_sent_at.map_or(ctx.now, |t| t + window);
    if due <= ctx.now {
        push_card(inc, ctx, d);
    } else if !inc.card_dirty {
        inc.card_dirty = true;
        d.effects.push(Effect::ArmTimer(Timer {
            incident: inc.id,
            kind: TimerKind::CardFlush,
            at: due,
        }));
    }
}

fn on_timer(incident: Option<Incident>, t: Timer, cfg: &Config, ctx: Ctx<'_>) -> Decision {
    let mut d = Decision::default();
    let Some(mut inc) = incident else {
        return d;
    };
    let esc = &cfg.escalation;
    let targets = cfg.targets(inc.severity);
    match t.kind {
        TimerKind::CardFlush => {
            if inc.card_dirty {
                inc.card_dirty = false;
                inc.card_sent_at = Some(ctx.now);
                d.effects
                    .push(Effect::Chat(ChatBody::RenderCard { post: false }));
            }
        }
        // Set before the alert cleared (or by an older version that did not disarm them).
        kind if ESCALATION_TIMERS.contains(&kind) && inc.alert_status == AlertStatus::Resolved => {}
        TimerKind::AckDeadline => {
            if esc.on_missed_ack && inc.status.is_active() && inc.acknowledged_at.is_none() {
                let reason = format!(
                    "not acknowledged within the {} detection target ({})",
                    inc.severity,
                    human_seconds(targets.detect_seconds)
                );
                escalate(&mut inc, &Actor::system(), reason, cfg, ctx, &mut d);
            }
        }
        TimerKind::RepairDeadline => {
            if esc.on_missed_repair && inc.status.is_active() {
                let reason = format!(
                    "not resolved within the {} repair target ({})",
                    inc.severity,
                    human_seconds(targets.repair_seconds)
                );
                escalate(&mut inc, &Actor::system(), reason, cfg, ctx, &mut d);
            }
        }
        TimerKind::VerifyDeadline => {
            if inc.status == Status::Verifying {
                if let Some(action) = inc.verifying.clone() {
                    let s = "the alert did not resolve in time".to_string();
                    verification_done(&mut inc, &action, false, s, cfg, ctx, &mut d);
                }
            }
        }
        TimerKind::ApprovalExpiry => {
            let waiting: Vec<String> = inc
                .actions
                .iter()
                .filter(|a| a.status == ActionStatus::Proposed)
                .map(|a| format!("`{}`", a.id))
                .collect();
            if esc.on_approval_expiry && inc.status.is_active() && !waiting.is_empty() {
                let reason = format!(
                    "approval of {} unanswered after {}",
                    waiting.join(", "),
                    human_seconds(cfg.policy(inc.severity).expiry_seconds)
                );
                escalate(&mut inc, &Actor::system(), reason, cfg, ctx, &mut d);
            }
        }
        TimerKind::ResolveAfterClear => resolve_after_clear(&mut inc, cfg, ctx, &mut d),
        TimerKind::StormLift => storm_lift(&mut inc, cfg, ctx, &mut d),
        TimerKind::FollowUpReminder => remind_followups(&mut inc, cfg, ctx, &mut d),
    }
    d.incident = Some(inc);
    d
}

/// Follow-up reminders: one note for everything overdue and not yet reminded about (a
/// resolved incident still without follow-ups, follow-ups past their due date), mentioning the
/// owners that were given as chat mentions when `[followups] mention_owners` is on. Nothing
/// within `remind_every_seconds` of the last one: the handler re-arms the timer for then.
fn remind_followups(inc: &mut Incident, cfg: &Config, ctx: Ctx<'_>, d: &mut Decision) {
    let due = followup::due_reminders(inc, &cfg.followups, ctx.now);
    if due.is_empty() {
        return;
    }
    let id = inc.id;
    let mut lines = Vec::new();
    let mut mentions: Vec<String> = Vec::new();
    let mut overdue = Vec::new();
    let mut undefined = false;
    for x in &due {
        match x {
            followup::Due::Undefined { resolved_at } => {
                undefined = true;
                // Rounded down to hours (or days beyond two): a reminder is not a stopwatch.
                let hours = (ctx.now - *resolved_at).num_hours().max(0);
                let ago = if hours >= 48 {
                    format!("{} days", hours / 24)
                } else {
                    format!("{hours} h")
                };
                lines.push(format!(
                    "• {id} was resolved {ago} ago and has no follow-up yet: add one with `/incident followup add {id} <item> [@owner]` (or say why none is needed)."
                ));
            }
            followup::Due::Overdue { n, .. } => {
                let f = &inc.followups[n - 1];
                overdue.push(*n as u32);
                lines.push(format!("• {}", f.line(*n, ctx.now)));
                if cfg.followups.mention_owners {
                    if let Some(m) = f.owner_mention.as_ref().filter(|m| !mentions.contains(m)) {
                        mentions.push(m.clone());
                    }
                }
            }
        }
    }
    followup::mark_reminded(inc, &due, ctx.now);
    d.events.push(TimelineEvent {
        at: ctx.now,
        actor: Actor::system(),
        kind: EventKind::FollowUpReminder { overdue, undefined },
    });
    d.effects.push(Effect::Chat(ChatBody::Note {
        text: format!("⏰ Follow-up reminder for {id}:\n{}", lines.join("\n")),
        mentions,
    }));
}

/// The quiet period after the clear is over: resolve, unless the alert fired again, someone
/// acknowledged the incident meanwhile (then it is theirs to resolve), or an action is still
/// in flight (then wait another quiet period rather than resolve under it).
fn resolve_after_clear(inc: &mut Incident, cfg: &Config, ctx: Ctx<'_>, d: &mut Decision) {
    if !inc.status.is_active() || inc.alert_status != AlertStatus::Resolved {
        return;
    }
    let Some(quiet) = cfg.resolve_after_clear(inc.playbook.as_deref(), inc.severity) else {
        return;
    };
    let system = Actor::system();
    let id = inc.id;
    let say = |d: &mut Decision, text: String| {
        d.events.push(TimelineEvent {
            at: ctx.now,
            actor: system.clone(),
            kind: EventKind::Note { text: text.clone() },
        });
        d.effects.push(note(text));
    };
    if let Some(by) = &inc.acknowledged_by {
        let text = format!(
            "The alert stayed clear, but {id} is acknowledged by {}: it stays open until resolved by hand.",
            by.display()
        );
        say(d, text);
        return;
    }
    let busy: Vec<String> = inc
        .actions
        .iter()
        .filter(|a| matches!(a.status, ActionStatus::Approved | ActionStatus::Running))
        .map(|a| format!("`{}`", a.id))
        .collect();
    if !busy.is_empty()
        || inc.status == Status::Verifying
        || !inc.status.can_become(Status::Resolved)
    {
        let what = if busy.is_empty() {
            "a verification".to_string()
        } else {
            busy.join(", ")
        };
        d.effects.push(Effect::ArmTimer(Timer {
            incident: id,
            kind: TimerKind::ResolveAfterClear,
            at: ctx.now + Duration::seconds(quiet.max(1) as i64),
        }));
        let text = format!(
            "The alert stayed clear, but {what} is still running: {id} resolves in {} if it stays clear.",
            human_seconds(quiet)
        );
        say(d, text);
        return;
    }
    let reason = format!("the alert stayed clear for {}", human_seconds(quiet));
    let ev = inc
        .transition(Status::Resolved, &system, ctx.now, Some(reason.clone()))
        .expect("checked above");
    d.events.push(ev);
    d.effects.push(note(format!("✅ {id} resolved: {reason}.")));
    push_card(inc, ctx, d);
}

/// Escalates: records why, mentions the on-call, raises severity and pages if configured.
/// Escalating an already escalated incident notifies again (the situation got worse).
fn escalate(
    inc: &mut Incident,
    by: &Actor,
    reason: String,
    cfg: &Config,
    ctx: Ctx<'_>,
    d: &mut Decision,
) {
    let system = by.clone();
    let esc = &cfg.escalation;
    d.events.push(TimelineEvent {
        at: ctx.now,
        actor: system.clone(),
        kind: EventKind::Escalated {
            reason: reason.clone(),
        },
    });
    // A verification under way goes on: the incident stays verifying (the verification's
    // outcome resolves it or escalates it), while people are paged. Moving it to escalated
    // would drop the verification, and with it the fix's outcome.
    let verifying = inc.status == Status::Verifying && inc.verifying.is_some();
    if !verifying && inc.status.can_become(Status::Escalated) {
        if let Ok(ev) = inc.transition(Status::Escalated, &system, ctx.now, Some(reason.clone())) {
            d.events.push(ev);
        }
    }
    if esc.raise_severity && inc.severity != Severity::P0 {
        let from = inc.severity;
        inc.severity = from.raised();
        d.events.push(TimelineEvent {
            at: ctx.now,
            actor: system.clone(),
            kind: EventKind::SeverityChanged {
                from,
                to: inc.severity,
            },
        });
    }
    d.effects.push(Effect::Chat(ChatBody::Note {
        text: format!("📣 {} escalated: {reason}.", inc.id),
        mentions: esc.oncall.clone(),
    }));
    if esc.pager.is_some() {
        let key = format!("{}:{PAGER_ACTION}", inc.id);
        queue_execution(inc, PAGER_ACTION, &key, ctx, d);
    }
    push_card(inc, ctx, d);
}

/// The action id of the configured pager (`[escalation.pager]`).
pub const PAGER_ACTION: &str = "pager";

/// The execution action of follow-up `n`'s export: `followup-export:n`.
pub fn export_action(n: usize) -> String {
    format!("followup-export:{n}")
}

/// The follow-up number of an export's execution action.
pub fn export_number(action: &str) -> Option<usize> {
    action
        .strip_prefix("followup-export:")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
}

fn on_command(
    mut inc: Incident,
    actor: Actor,
    command: Command,
    cfg: &Config,
    ctx: Ctx<'_>,
) -> Result<Decision, UserError> {
    let mut d = Decision::default();
    let who = actor.display();
    let transition = |inc: &mut Incident, to: Status, note: Option<String>| {
        inc.transition(to, &actor, ctx.now, note)
            .map_err(|e| UserError(e.to_string()))
    };
    // Invariant 5: state changes (other than notes and new follow-ups) need someone the policy
    // trusts at this severity; a refusal is answered privately and recorded. A follow-up's
    // owner may mark it done; verifying or dropping it takes a responder.
    let needs_responder = match &command {
        Command::Note(..) | Command::FollowUp(..) | Command::Approve(..) | Command::Reject(..) => {
            false
        }
        Command::FollowUpSet(_, n, FollowUpChange::Done) => !inc
            .followups
            .get((*n as usize).wrapping_sub(1))
            .is_some_and(|f| f.is_owner(&actor)),
        _ => true,
    };
    if needs_responder && command.is_mutation() {
        let mut at = vec![inc.severity];
        if let Command::Severity(_, to) = &command {
            at.push(*to);
        }
        if let Some(sev) = at.into_iter().find(|s| !cfg.policy(*s).is_approver(&actor)) {
            let what = command_name(&command).to_string();
            let reason = format!("not a responder for {sev} incidents (policy.{sev}.approvers)");
            d.reply = Some(format!("Not allowed: you are {reason}."));
            d.refused = true;
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: actor.clone(),
                kind: EventKind::Refused { what, reason },
            });
            d.incident = Some(inc);
            return Ok(d);
        }
    }
    match command {
        Command::Help
        | Command::List { .. }
        | Command::Status(_)
        | Command::Timeline(_)
        | Command::Report(_)
        | Command::Stats(_)
        | Command::FollowUpList(_)
        | Command::FollowUps(_) => {
            return Err(UserError("read-only commands are not engine inputs".into()));
        }
        Command::New(_) => {
            return Err(UserError(
                "`new` opens an incident as an alert, not a command".into(),
            ));
        }
        Command::Assign(_, to) => {
            inc.assignee = Some(to.clone());
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: actor.clone(),
                kind: EventKind::Assigned { to: to.clone() },
            });
            d.effects
                .push(note(format!("🙋 {} assigned to {to} by {who}.", inc.id)));
        }
        Command::Severity(_, to) => {
            if inc.severity == to {
                return Err(UserError(format!("{} is already {to}", inc.id)));
            }
            let from = inc.severity;
            inc.severity = to;
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: actor.clone(),
                kind: EventKind::SeverityChanged { from, to },
            });
            d.effects.push(note(format!(
                "🎚️ {} re-triaged from {from} to {to} by {who}.",
                inc.id
            )));
        }
        Command::RootCause(_, category, text) => {
            // The recurrence was decided when the incident opened; a root cause does not change it.
            inc.root_cause = Some(RootCauseInfo {
                category,
                text: text.clone(),
                confirmed_by: Some(actor.clone()),
            });
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: actor.clone(),
                kind: EventKind::RootCauseSet {
                    category,
                    text: text.clone(),
                },
            });
            d.effects.push(note(format!(
                "🔍 Root cause of {} confirmed by {who}: {}{}",
                inc.id,
                category.label(),
                text.map(|t| format!(" — {t}")).unwrap_or_default()
            )));
            if !inc.status.is_active() {
                // The report already in the thread names the suggested cause: post it again.
                d.effects.push(Effect::Chat(ChatBody::RenderReport));
            }
        }
        Command::FollowUp(_, text, owner, kind) => {
            let f = followup::FollowUp::new(
                text.clone(),
                owner.clone(),
                kind,
                &actor,
                ctx.now,
                &cfg.followups,
            );
            let due = f.due;
            inc.followups.push(f);
            let n = inc.followups.len();
            if cfg.followups.export.is_some() {
                // Once per follow-up: the key is the follow-up's, so it is never queued twice.
                let action = export_action(n);
                let key = format!("{}:{action}", inc.id);
                queue_execution(&inc, &action, &key, ctx, &mut d);
            }
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: actor.clone(),
                kind: EventKind::FollowUpAdded {
                    text: text.clone(),
                    owner: owner.clone(),
                    kind,
                },
            });
            d.effects.push(note(format!(
                "📌 Follow-up #{n} for {} ({}): {text}{}{}. Mark it with `/incident followup done {} {n}`.",
                inc.id,
                kind.label(),
                owner.map(|o| format!(" (owner {o})")).unwrap_or_default(),
                due.map(|d| format!(", due {}", d.format("%Y-%m-%d %H:%M UTC")))
                    .unwrap_or_default(),
                inc.id,
            )));
            d.incident = Some(inc);
            return Ok(d);
        }
        Command::FollowUpSet(_, n, change) => {
            let count = inc.followups.len();
            let Some(f) = inc.followups.get_mut((n as usize).wrapping_sub(1)) else {
                return Err(UserError(if count == 0 {
                    format!("{} has no follow-ups", inc.id)
                } else {
                    format!(
                        "{} has no follow-up #{n}; its follow-ups are #1 to #{count}",
                        inc.id
                    )
                }));
            };
            f.apply(&change, &actor, ctx.now, &cfg.followups)
                .map_err(|e| UserError(format!("Follow-up #{n} of {}: {e}", inc.id)))?;
            let text = f.text.clone();
            let verify_due = f.verify_due;
            let reason = match &change {
                FollowUpChange::Dropped { reason } => Some(reason.clone()),
                _ => None,
            };
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: actor.clone(),
                kind: EventKind::FollowUpChanged {
                    n,
                    text: text.clone(),
                    to: change.state(),
                    reason: reason.clone(),
                },
            });
            let id = inc.id;
            d.effects.push(note(match change.state() {
                FollowUpState::Done => format!(
                    "☑ Follow-up #{n} of {id} done by {who}: {text}. Verify its effect by {} with `/incident followup verify {id} {n}`.",
                    verify_due.map_or("—".into(), |d| d.format("%Y-%m-%d %H:%M UTC").to_string())
                ),
                FollowUpState::Verified => {
                    format!("✅ Follow-up #{n} of {id} verified by {who}: {text}.")
                }
                _ => format!(
                    "✖ Follow-up #{n} of {id} dropped by {who}: {text} — {}",
                    reason.unwrap_or_default()
                ),
            }));
            d.incident = Some(inc);
            return Ok(d);
        }
        Command::Ack(_) => {
            if let Some(by) = &inc.acknowledged_by {
                return Err(UserError(format!(
                    "{} is already acknowledged by {}",
                    inc.id,
                    by.display()
                )));
            }
            if inc.status.can_become(Status::Acknowledged) {
                d.events
                    .push(transition(&mut inc, Status::Acknowledged, None)?);
            } else if inc.status.is_active() {
                // Remediating/verifying: record who took it without changing the state.
                inc.acknowledged_at = Some(ctx.now);
                inc.acknowledged_by = Some(actor.clone());
                d.events.push(TimelineEvent {
                    at: ctx.now,
                    actor: actor.clone(),
                    kind: EventKind::Acknowledged,
                });
            } else {
                return Err(UserError(format!(
                    "{} is {}; it cannot be acknowledged",
                    inc.id,
                    inc.status.label().to_lowercase()
                )));
            }
            d.effects.push(Effect::Chat(ChatBody::Note {
                mentions: vec![],
                text: format!("👀 Acknowledged by {who}."),
            }));
        }
        Command::Resolve(_, note) => {
            d.events
                .push(transition(&mut inc, Status::Resolved, note.clone())?);
            let mut text = format!("✅ Resolved by {who}.");
            if let Some(n) = note {
                text.push_str(&format!(" Note: {n}"));
            }
            d.effects.push(Effect::Chat(ChatBody::Note {
                text,
                mentions: vec![],
            }));
        }
        Command::Reopen(_) => {
            // One active incident per group: a resolved one stays resolved while another is open.
            if let Some(other) = ctx.view.open_incident(inc.key()).filter(|o| *o != inc.id) {
                return Err(UserError(format!(
                    "{other} is already open for this alert; {} stays resolved",
                    inc.id
                )));
            }
            d.events
                .push(transition(&mut inc, Status::Open, Some("reopened".into()))?);
            d.effects.push(Effect::Chat(ChatBody::Note {
                mentions: vec![],
                text: format!("↩️ Reopened by {who}."),
            }));
        }
        Command::Escalate(_) => {
            // Recorded like an automatic escalation (an `Escalated` event, which the metrics
            // count, then the status change with the same reason: shown as one line).
            let reason = "escalated by hand".to_string();
            let was_verifying = inc.status == Status::Verifying;
            let changed = transition(&mut inc, Status::Escalated, Some(reason.clone()))?;
            // A person took over from a verification under way: it ends unfinished (its
            // action gets no outcome; docs/metrics.md).
            if was_verifying {
                inc.verifying = None;
                d.effects
                    .push(Effect::DisarmTimer(TimerKind::VerifyDeadline));
            }
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: actor.clone(),
                kind: EventKind::Escalated { reason },
            });
            d.events.push(changed);
            d.effects.push(Effect::Chat(ChatBody::Note {
                mentions: vec![],
                text: format!("📣 Escalated by {who}."),
            }));
        }
        Command::Note(_, text) => {
            if inc.status == Status::Closed {
                return Err(UserError(format!("{} is closed", inc.id)));
            }
            d.effects.push(Effect::Chat(ChatBody::Note {
                mentions: vec![],
                text: format!("📝 {who}: {text}"),
            }));
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: actor.clone(),
                kind: EventKind::Note { text },
            });
            // A note does not change the card.
            d.incident = Some(inc);
            return Ok(d);
        }
        Command::Approve(_, action) => {
            approve(&mut inc, &actor, &action, cfg, ctx, &mut d)?;
            if d.refused {
                d.incident = Some(inc);
                return Ok(d);
            }
        }
        Command::Reject(_, action, reason) => {
            let policy = cfg.policy(inc.severity);
            let state = known_action(&inc, &action)?;
            let refusal = if !policy.is_approver(&actor) {
                Some(Refusal::NotAuthorized)
            } else if state.status.is_decided() {
                Some(Refusal::AlreadyDecided)
            } else {
                None
            };
            if let Some(r) = refusal {
                refuse(&inc, &actor, &action, r, ctx, &mut d);
                d.incident = Some(inc);
                return Ok(d);
            }
            let a = inc.action_mut(&action).expect("checked");
            a.status = ActionStatus::Rejected;
            a.decided_by = Some(actor.clone());
            a.decided_at = Some(ctx.now);
            d.events.push(TimelineEvent {
                at: ctx.now,
                actor: actor.clone(),
                kind: EventKind::ActionRejected {
                    action: action.clone(),
                    reason: reason.clone(),
                },
            });
            d.effects.push(Effect::Chat(ChatBody::Note {
                mentions: vec![],
                text: format!(
                    "🚫 {who} rejected `{action}`{}",
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                ),
            }));
        }
    }
    push_card(&mut inc, ctx, &mut d);
    d.incident = Some(inc);
    Ok(d)
}

fn known_action<'a>(inc: &'a Incident, action: &str) -> Result<&'a ActionState, UserError> {
    inc.action(action).ok_or_else(|| {
        let ids: Vec<&str> = inc.actions.iter().map(|a| a.id.as_str()).collect();
        UserError(if ids.is_empty() {
            format!("{} has no recommended actions", inc.id)
        } else {
            format!(
                "{} has no action `{action}`; its actions are: {}",
                inc.id,
                ids.join(", ")
            )
        })
    })
}

fn refuse(inc: &Incident, actor: &Actor, action: &str, r: Refusal, ctx: Ctx<'_>, d: &mut Decision) {
    d.reply = Some(format!(
        "Not counted: {} ({} `{action}`).",
        r.message(),
        inc.id
    ));
    d.refused = true;
    d.events.push(TimelineEvent {
        at: ctx.now,
        actor: actor.clone(),
        kind: EventKind::ApprovalRefused {
            action: action.to_string(),
            reason: r,
        },
    });
}

fn approve(
    inc: &mut Incident,
    actor: &Actor,
    action: &str,
    cfg: &Config,
    ctx: Ctx<'_>,
    d: &mut Decision,
) -> Result<(), UserError> {
    if !inc.status.is_active() {
        return Err(UserError(format!(
            "{} is {}; nothing to approve",
            inc.id,
            inc.status.label().to_lowercase()
        )));
    }
    let policy = cfg.policy(inc.severity);
    let state = known_action(inc, action)?;
    if state.status.is_decided() {
        refuse(inc, actor, action, Refusal::AlreadyDecided, ctx, d);
        return Ok(());
    }
    let proposers: Vec<&Actor> = inc.acknowledged_by.iter().collect();
    if let Err(r) = check_approval(policy, actor, &state.approvals, &proposers) {
        refuse(inc, actor, action, r, ctx, d);
        return Ok(());
    }
    let needed = policy.min_approvals;
    let a = inc.action_mut(action).expect("checked");
    a.approvals.push(actor.clone());
    let have = a.approvals.len() as u32;
    d.events.push(TimelineEvent {
        at: ctx.now,
        actor: actor.clone(),
        kind: EventKind::ActionApproved {
            action: action.to_string(),
            approvals: have,
            needed,
        },
    });
    let who = actor.display();
    if have >= needed {
        d.effects.push(Effect::Chat(ChatBody::Note {
            mentions: vec![],
            text: format!("✔️ {who} approved `{action}` ({have}/{needed}): queued for execution."),
        }));
        let undoes = inc.rolling_back.clone().filter(|orig| {
            action_spec(inc, orig, cfg).and_then(|s| s.rollback.as_deref()) == Some(action)
        });
        approve_fully(inc, action, undoes.as_deref(), actor, ctx, d);
    } else {
        d.effects.push(Effect::Chat(ChatBody::Note {
            mentions: vec![],
            text: format!(
                "✔️ {who} approved `{action}` ({have}/{needed}): waiting for {} more.",
                needed - have
            ),
        }));
        if inc.status.can_become(Status::AwaitingApproval) {
            if let Ok(ev) = inc.transition(Status::AwaitingApproval, actor, ctx.now, None) {
                d.events.push(ev);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
