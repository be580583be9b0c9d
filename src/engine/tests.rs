//! The core, exhaustively and without tokio.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::domain::alert::{AlertSource, Platform};
use crate::domain::incident::{ActionStatus, PastIncident};
use crate::domain::policy::Refusal;

mod clears;
mod conditions;
mod evidence;
mod followups;
mod groups;
mod late_fixes;
mod previews;
mod refires;
mod storms;
mod writes;

const CFG: &str = r#"
[engine]
card_coalesce_seconds = 5

[[rules]]
name = "sev-from-label"
match = { team = "payments" }
severity = "P0"

[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
auto_resolve = true
[[playbooks.actions]]
id = "fallback"
title = "Switch to fallback"
auto = true
run = { type = "http", url = "http://127.0.0.1:1/x" }
[[playbooks.actions]]
id = "restart"
title = "Restart"
run = { type = "command", argv = ["/bin/true"] }

[[playbooks]]
id = "orch"
title = "Orchestration"
kinds = ["orchestration_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart agent"
run = { type = "command", argv = ["/bin/true"] }

[policy.P0]
approvers = ["slack:U1", "slack:U2", "slack:U3"]
min_approvals = 2
allow_proposer = false
[policy.P1]
approvers = ["slack:U1", "slack-group:S-ONCALL"]
[policy.P2]
approvers = ["slack:U1"]
[policy.P3]
approvers = ["slack:U1"]
"#;

fn cfg() -> Config {
    Config::from_toml(CFG, &|_| None).unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
}

fn ctx(secs: i64) -> Ctx<'static> {
    Ctx {
        history: &[],
        recent: None,
        view: &crate::engine::NoView,
        now: t0() + Duration::seconds(secs),
        next_id: IncidentId(1),
    }
}

fn alert(title: &str, sev: &str, status: AlertStatus) -> Alert {
    Alert {
        source: AlertSource::Alertmanager,
        fingerprint: "fp1".into(),
        status,
        title: title.into(),
        description: Some("details".into()),
        labels: [("severity".to_string(), sev.to_string())]
            .into_iter()
            .collect(),
        annotations: Default::default(),
        starts_at: None,
        ends_at: None,
        links: vec![],
        origin: None,
        group_labels: Default::default(),
    }
}

fn user(id: &str) -> Actor {
    Actor::new(Platform::Slack, id)
}

fn cmd(inc: &Incident, actor: &str, c: Command, secs: i64) -> Result<Decision, UserError> {
    handle(
        Some(inc.clone()),
        Input::Command {
            actor: user(actor),
            command: c,
        },
        &cfg(),
        ctx(secs),
    )
}

/// Runs execution `x` of `inc` to success as the executor would (started at `secs - 1`,
/// finished at `secs`), recording the execution in `view` as the writer would; returns the
/// incident after it finished.
fn run_to_success(
    view: &writes::TestView,
    inc: Incident,
    x: &crate::ports::Execution,
    secs: i64,
    cfg: &Config,
) -> Incident {
    let mut inc = inc;
    for (at, input) in [
        (
            secs - 1,
            Input::ExecutionStarted {
                incident: inc.id,
                action: x.action.clone(),
                key: x.key.clone(),
                preview: "POST http://127.0.0.1:1/x".into(),
            },
        ),
        (
            secs,
            Input::ExecutionFinished {
                incident: inc.id,
                action: x.action.clone(),
                key: x.key.clone(),
                success: true,
                summary: "200".into(),
            },
        ),
    ] {
        let d = handle(Some(inc), input, cfg, writes::with(view, at)).unwrap();
        for e in &d.executions {
            view.executions
                .borrow_mut()
                .insert(e.key.clone(), e.clone());
        }
        inc = d.incident.unwrap();
    }
    inc
}

/// Opens an incident from a firing alert and returns it.
fn open(title: &str, sev: &str) -> Incident {
    let d = handle(
        None,
        Input::Alert(alert(title, sev, AlertStatus::Firing)),
        &cfg(),
        ctx(0),
    )
    .unwrap();
    d.incident.unwrap()
}

/// The card a decision queues (post or edit), as the outbox will build it from the incident.
fn queued_card(d: &Decision, cfg: &Config) -> Option<(bool, IncidentCard)> {
    let post = chats(d).into_iter().find_map(|b| match b {
        ChatBody::RenderCard { post } => Some(*post),
        _ => None,
    })?;
    Some((post, card(d.incident.as_ref()?, cfg)))
}

fn chats(d: &Decision) -> Vec<&ChatBody> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Chat(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn executes(d: &Decision) -> Vec<&str> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Execute { action, .. } => Some(action.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_firing_alert_opens_a_triaged_incident_with_its_card() {
    let d = handle(
        None,
        Input::Alert(alert(
            "Orders API 503 errors",
            "critical",
            AlertStatus::Firing,
        )),
        &cfg(),
        ctx(0),
    )
    .unwrap();
    assert!(d.created);
    let inc = d.incident.as_ref().unwrap();
    assert_eq!(inc.id, IncidentId(1));
    assert_eq!(inc.severity, Severity::P1);
    assert_eq!(inc.kind, "tool_api_failure");
    assert_eq!(inc.playbook.as_deref(), Some("api"));
    assert_eq!(
        inc.status,
        Status::Open,
        "P1: the auto action waits for a human"
    );
    assert!(inc
        .actions
        .iter()
        .all(|a| a.status == ActionStatus::Proposed));
    assert!(executes(&d).is_empty());
    assert!(matches!(
        d.events[0].kind,
        EventKind::Opened {
            severity: Severity::P1,
            ..
        }
    ));
    let bodies = chats(&d);
    assert_eq!(bodies, [&ChatBody::RenderCard { post: true }]);
    let (_, card) = queued_card(&d, &cfg()).unwrap();
    assert_eq!(card.incident, IncidentId(1));
    assert_eq!(card.kind_name, "Tool/API failure");
    assert_eq!(card.targets.repair_seconds, 900);
    assert_eq!(card.actions.len(), 2);
    assert!(card
        .buttons
        .iter()
        .any(|b| b.action
            == crate::domain::card::ButtonAction::Approve(IncidentId(1), "restart".into())));
}

#[test]
fn auto_actions_run_at_p2_and_p3_but_never_at_p0_or_p1() {
    for (sev, runs) in [
        ("info", true),
        ("warning", true),
        ("critical", false),
        ("fatal", false),
    ] {
        let d = handle(
            None,
            Input::Alert(alert("API rate limit", sev, AlertStatus::Firing)),
            &cfg(),
            ctx(0),
        )
        .unwrap();
        let inc = d.incident.as_ref().unwrap();
        if runs {
            assert_eq!(executes(&d), ["fallback"], "{sev}");
            assert_eq!(inc.status, Status::Remediating);
            assert_eq!(
                inc.action("fallback").unwrap().status,
                ActionStatus::Approved
            );
            assert_eq!(
                inc.action("restart").unwrap().status,
                ActionStatus::Proposed
            );
        } else {
            assert!(executes(&d).is_empty(), "{sev}");
            assert_eq!(inc.status, Status::Open);
        }
    }
}

#[test]
fn repeats_coalesce_card_edits_within_the_window() {
    let cfg = cfg();
    let inc = open("API 503", "critical");
    let firing = || Input::Alert(alert("API 503", "critical", AlertStatus::Firing));
    // 1 s later: counted, card held back, flush timer armed at sent + 5 s.
    let d = handle(Some(inc), firing(), &cfg, ctx(1)).unwrap();
    let inc = d.incident.clone().unwrap();
    assert_eq!(inc.alert_count, 2);
    assert_eq!(inc.last_seen_at, t0() + Duration::seconds(1));
    assert!(inc.card_dirty);
    assert!(chats(&d).is_empty());
    assert_eq!(
        d.effects,
        vec![Effect::ArmTimer(Timer {
            incident: inc.id,
            kind: TimerKind::CardFlush,
            at: t0() + Duration::seconds(5)
        })]
    );
    assert!(d.events.is_empty(), "repeats do not flood the timeline");
    // 2 s: already dirty, nothing more.
    let d = handle(Some(inc), firing(), &cfg, ctx(2)).unwrap();
    assert!(d.effects.is_empty());
    let inc = d.incident.unwrap();
    assert_eq!(inc.alert_count, 3);
    // The timer fires: one edit with the count.
    let d = handle(
        Some(inc),
        Input::Timer(Timer {
            incident: IncidentId(1),
            kind: TimerKind::CardFlush,
            at: t0() + Duration::seconds(5),
        }),
        &cfg,
        ctx(5),
    )
    .unwrap();
    assert_eq!(chats(&d), [&ChatBody::RenderCard { post: false }]);
    assert!(matches!(queued_card(&d, &cfg), Some((false, card)) if card.alert_count == 3));
    let inc = d.incident.unwrap();
    assert!(!inc.card_dirty);
    // A stale timer does nothing.
    let d = handle(
        Some(inc.clone()),
        Input::Timer(Timer {
            incident: IncidentId(1),
            kind: TimerKind::CardFlush,
            at: t0(),
        }),
        &cfg,
        ctx(6),
    )
    .unwrap();
    assert!(d.effects.is_empty());
    // Past the window: edited at once.
    let d = handle(Some(inc), firing(), &cfg, ctx(20)).unwrap();
    assert_eq!(chats(&d), [&ChatBody::RenderCard { post: false }]);
    assert!(matches!(queued_card(&d, &cfg), Some((false, card)) if card.alert_count == 4));
}

#[test]
fn resolved_alerts() {
    let cfg = cfg();
    // No incident: ignored, with a reason.
    let d = handle(
        None,
        Input::Alert(alert("x", "critical", AlertStatus::Resolved)),
        &cfg,
        ctx(0),
    )
    .unwrap();
    assert!(d.incident.is_none() && !d.created);
    assert!(d.reply.unwrap().contains("no open incident"));

    // Playbook with auto_resolve: the incident resolves.
    let inc = open("API 503", "critical");
    let d = handle(
        Some(inc),
        Input::Alert(alert("API 503", "critical", AlertStatus::Resolved)),
        &cfg,
        ctx(30),
    )
    .unwrap();
    let inc = d.incident.unwrap();
    assert_eq!(inc.alert_status, AlertStatus::Resolved);
    assert_eq!(inc.status, Status::Resolved);
    assert!(inc.resolved_by.as_ref().unwrap().is_system());

    // Without auto_resolve: the alert is marked cleared; the quiet period starts (see `clears`).
    let inc = open("agent deadlock", "critical");
    assert_eq!(inc.playbook.as_deref(), Some("orch"));
    let d = handle(
        Some(inc),
        Input::Alert(alert("agent deadlock", "critical", AlertStatus::Resolved)),
        &cfg,
        ctx(30),
    )
    .unwrap();
    let inc = d.incident.clone().unwrap();
    assert_eq!(inc.alert_status, AlertStatus::Resolved);
    assert_eq!(inc.status, Status::Open);
    assert!(matches!(
        d.events[..],
        [TimelineEvent {
            kind: EventKind::AlertResolved,
            ..
        }]
    ));
    // It fires again: recorded, card edited at once.
    let d = handle(
        Some(inc),
        Input::Alert(alert("agent deadlock", "critical", AlertStatus::Firing)),
        &cfg,
        ctx(31),
    )
    .unwrap();
    assert!(matches!(
        d.events[..],
        [TimelineEvent {
            kind: EventKind::AlertRefired,
            ..
        }]
    ));
    assert!(matches!(
        chats(&d)[..],
        [ChatBody::Note { text, .. }, ChatBody::RenderCard { post: false }] if text.contains("firing again")
    ));
}

#[test]
fn acknowledge_once_and_only_by_a_responder() {
    let inc = open("agent deadlock", "critical");
    // U9 is not on the P1 policy: refused privately and recorded, nothing changes.
    let d = cmd(&inc, "U9", Command::Ack(inc.id), 5).unwrap();
    assert!(d.refused);
    assert!(d
        .reply
        .as_deref()
        .unwrap()
        .contains("not a responder for P1"));
    assert!(
        matches!(&d.events[..], [TimelineEvent { kind: EventKind::Refused { what, .. }, .. }] if what == "ack")
    );
    assert_eq!(d.incident.as_ref().unwrap().status, Status::Open);
    assert!(d.effects.is_empty());

    let d = cmd(&inc, "U1", Command::Ack(inc.id), 10).unwrap();
    let acked = d.incident.clone().unwrap();
    assert_eq!(acked.status, Status::Acknowledged);
    assert_eq!(acked.acknowledged_by, Some(user("U1")));
    assert!(chats(&d).iter().any(
        |b| matches!(b, ChatBody::Note { text, .. } if text.contains("Acknowledged by slack:U1"))
    ));
    assert!(
        matches!(queued_card(&d, &cfg()), Some((false, card)) if card.acknowledged_by.is_some())
    );
    let e = cmd(&acked, "U1", Command::Ack(inc.id), 11).unwrap_err();
    assert_eq!(e.0, "INC-1 is already acknowledged by slack:U1");
}

#[test]
fn retriage_root_cause_followups_and_assignment() {
    let inc = open("agent deadlock", "critical");
    assert_eq!(
        inc.root_cause
            .as_ref()
            .map(|r| (r.category, r.confirmed_by.is_none())),
        Some((crate::domain::classify::RootCause::ResourceLimits, true)),
        "suggested from the kind"
    );
    // Raising to P0 needs a responder at P0 too: U1 is one.
    let d = cmd(&inc, "U1", Command::Severity(inc.id, Severity::P0), 1).unwrap();
    let inc = d.incident.unwrap();
    assert_eq!(inc.severity, Severity::P0);
    assert!(d.events.iter().any(|e| matches!(
        e.kind,
        EventKind::SeverityChanged {
            from: Severity::P1,
            to: Severity::P0
        }
    )));
    let e = cmd(&inc, "U1", Command::Severity(inc.id, Severity::P0), 2).unwrap_err();
    assert_eq!(e.0, "INC-1 is already P0");
    let d = cmd(
        &inc,
        "U2",
        Command::RootCause(
            inc.id,
            crate::domain::classify::RootCause::Configuration,
            Some("bad env".into()),
        ),
        3,
    )
    .unwrap();
    let inc = d.incident.unwrap();
    let rc = inc.root_cause.clone().unwrap();
    assert_eq!(rc.confirmed_by, Some(user("U2")));
    assert_eq!(rc.text.as_deref(), Some("bad env"));
    // Anyone may add a follow-up.
    let d = cmd(
        &inc,
        "U9",
        Command::FollowUp(
            inc.id,
            "add a check".into(),
            Some("@bob".into()),
            crate::domain::followup::FollowUpKind::Technical,
        ),
        4,
    )
    .unwrap();
    let inc = d.incident.unwrap();
    assert_eq!(inc.followups.len(), 1);
    assert_eq!(inc.followups[0].owner.as_deref(), Some("@bob"));
    let d = cmd(&inc, "U1", Command::Assign(inc.id, "@carol".into()), 5).unwrap();
    assert_eq!(d.incident.unwrap().assignee.as_deref(), Some("@carol"));
    // A non-responder cannot re-triage.
    let d = cmd(&inc, "U9", Command::Severity(inc.id, Severity::P3), 6).unwrap();
    assert!(d.refused);
}

#[test]
fn approvals_follow_the_policy_and_refusals_are_recorded() {
    let inc = open("agent deadlock", "critical"); // P1, orch playbook, 1 approval
    let d = cmd(&inc, "U7", Command::Approve(inc.id, "restart".into()), 10).unwrap();
    assert!(d.refused);
    assert!(d
        .reply
        .as_deref()
        .unwrap()
        .contains("not an authorized approver"));
    assert!(matches!(
        &d.events[..],
        [TimelineEvent {
            kind: EventKind::ApprovalRefused {
                reason: Refusal::NotAuthorized,
                ..
            },
            ..
        }]
    ));
    assert!(executes(&d).is_empty());
    let inc2 = d.incident.unwrap();
    assert_eq!(
        inc2.action("restart").unwrap().status,
        ActionStatus::Proposed
    );

    // A group member may approve at P1.
    let mut oncall = user("U8");
    oncall.roles = vec!["S-ONCALL".into()];
    let d = handle(
        Some(inc2),
        Input::Command {
            actor: oncall,
            command: Command::Approve(IncidentId(1), "restart".into()),
        },
        &cfg(),
        ctx(11),
    )
    .unwrap();
    assert!(!d.refused);
    assert_eq!(executes(&d), ["restart"]);
    let inc3 = d.incident.unwrap();
    assert_eq!(inc3.status, Status::Remediating);
    assert_eq!(
        inc3.action("restart").unwrap().status,
        ActionStatus::Approved
    );
    // A second click: already decided, refused and recorded, nothing runs.
    let d = cmd(&inc3, "U1", Command::Approve(inc3.id, "restart".into()), 12).unwrap();
    assert!(d.refused && executes(&d).is_empty());
    assert!(matches!(
        &d.events[..],
        [TimelineEvent {
            kind: EventKind::ApprovalRefused {
                reason: Refusal::AlreadyDecided,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn p0_needs_two_distinct_approvers_and_not_the_acknowledger() {
    let mut a = alert("payments down", "critical", AlertStatus::Firing);
    a.labels.insert("team".into(), "payments".into());
    a.title = "payments API 503".into();
    let d = handle(None, Input::Alert(a), &cfg(), ctx(0)).unwrap();
    assert!(executes(&d).is_empty(), "P0 never runs without humans");
    let inc = d.incident.unwrap();
    assert_eq!(inc.severity, Severity::P0);
    assert_eq!(inc.rule.as_deref(), Some("sev-from-label"));

    let inc = cmd(&inc, "U1", Command::Ack(inc.id), 1)
        .unwrap()
        .incident
        .unwrap();
    // Two-person rule: U1 acknowledged, so U1 may not approve.
    let d = cmd(&inc, "U1", Command::Approve(inc.id, "restart".into()), 2).unwrap();
    assert!(d.refused);
    assert!(d.reply.unwrap().contains("two-person rule"));
    let inc = d.incident.unwrap();
    // U2: 1 of 2, awaiting approval.
    let d = cmd(&inc, "U2", Command::Approve(inc.id, "restart".into()), 3).unwrap();
    assert!(!d.refused && executes(&d).is_empty());
    let inc = d.incident.unwrap();
    assert_eq!(inc.status, Status::AwaitingApproval);
    assert!(matches!(
        d.events[0].kind,
        EventKind::ActionApproved {
            approvals: 1,
            needed: 2,
            ..
        }
    ));
    // U2 again: does not count twice.
    let d = cmd(&inc, "U2", Command::Approve(inc.id, "restart".into()), 4).unwrap();
    assert!(d.refused);
    assert!(d.reply.unwrap().contains("already approved"));
    let inc = d.incident.unwrap();
    // U3: 2 of 2, runs.
    let d = cmd(&inc, "U3", Command::Approve(inc.id, "restart".into()), 5).unwrap();
    assert_eq!(executes(&d), ["restart"]);
    assert_eq!(d.incident.unwrap().status, Status::Remediating);
}

#[test]
fn reject_then_approve_is_refused() {
    let inc = open("agent deadlock", "critical");
    let d = cmd(
        &inc,
        "U1",
        Command::Reject(inc.id, "restart".into(), Some("too risky".into())),
        1,
    )
    .unwrap();
    let inc = d.incident.unwrap();
    assert_eq!(
        inc.action("restart").unwrap().status,
        ActionStatus::Rejected
    );
    let d = cmd(&inc, "U1", Command::Approve(inc.id, "restart".into()), 2).unwrap();
    assert!(d.refused);
    // Non-approvers cannot reject either.
    let inc = open("agent deadlock", "critical");
    let d = cmd(
        &inc,
        "U7",
        Command::Reject(inc.id, "restart".into(), None),
        1,
    )
    .unwrap();
    assert!(d.refused);
    assert_eq!(
        d.incident.unwrap().action("restart").unwrap().status,
        ActionStatus::Proposed
    );
}

#[test]
fn user_errors_are_clear() {
    let inc = open("agent deadlock", "critical");
    let e = cmd(&inc, "U1", Command::Approve(inc.id, "nuke".into()), 1).unwrap_err();
    assert_eq!(e.0, "INC-1 has no action `nuke`; its actions are: restart");
    let e = handle(
        None,
        Input::Command {
            actor: user("U1"),
            command: Command::Ack(IncidentId(9)),
        },
        &cfg(),
        ctx(0),
    )
    .unwrap_err();
    assert_eq!(e.0, "INC-9 does not exist");

    let resolved = cmd(
        &inc,
        "U1",
        Command::Resolve(inc.id, Some("fixed".into())),
        2,
    )
    .unwrap()
    .incident
    .unwrap();
    assert_eq!(resolved.status, Status::Resolved);
    let e = cmd(&resolved, "U1", Command::Resolve(inc.id, None), 3).unwrap_err();
    assert_eq!(e.0, "INC-1 is resolved; it cannot become resolved");
    let e = cmd(
        &resolved,
        "U1",
        Command::Approve(inc.id, "restart".into()),
        3,
    )
    .unwrap_err();
    assert!(e.0.contains("nothing to approve"));
    let reopened = cmd(&resolved, "U1", Command::Reopen(inc.id), 4)
        .unwrap()
        .incident
        .unwrap();
    assert_eq!(reopened.status, Status::Open);
}

#[test]
fn notes_and_thread_messages_go_to_the_timeline() {
    let inc = open("agent deadlock", "critical");
    let d = cmd(&inc, "U1", Command::Note(inc.id, "looking at it".into()), 1).unwrap();
    assert!(
        matches!(&d.events[..], [TimelineEvent { kind: EventKind::Note { text }, .. }] if text == "looking at it")
    );
    assert!(matches!(chats(&d)[..], [ChatBody::Note { .. }]));
    let d = handle(
        Some(inc),
        Input::ThreadMessage {
            actor: user("U2"),
            incident: IncidentId(1),
            text: "deploy 42 looks bad".into(),
        },
        &cfg(),
        ctx(2),
    )
    .unwrap();
    assert_eq!(d.events.len(), 1);
    assert!(d.effects.is_empty(), "thread messages are not echoed back");
}

#[test]
fn escalate() {
    let inc = open("agent deadlock", "critical");
    let d = cmd(&inc, "U1", Command::Escalate(inc.id), 1).unwrap();
    let inc = d.incident.unwrap();
    assert_eq!(inc.status, Status::Escalated);
    let e = cmd(&inc, "U1", Command::Escalate(inc.id), 2).unwrap_err();
    assert!(e.0.contains("cannot become escalated"));
}

#[test]
fn a_manual_escalation_is_recorded_and_counted_like_an_automatic_one() {
    let inc = open("agent deadlock", "critical");
    let d = cmd(&inc, "U1", Command::Escalate(inc.id), 1).unwrap();
    // The Escalated event, by the person, with why.
    let escalated: Vec<&TimelineEvent> = d
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Escalated { .. }))
        .collect();
    assert_eq!(escalated.len(), 1, "{:?}", d.events);
    assert_eq!(escalated[0].actor, user("U1"));
    assert_eq!(
        escalated[0].kind,
        EventKind::Escalated {
            reason: "escalated by hand".into()
        }
    );
    // Counted where escalations are counted (incidentd_escalations_total).
    assert_eq!(
        d.observed
            .iter()
            .filter(|o| **o == Observed::Escalated)
            .count(),
        1
    );
    // Shown once in the timeline: the status change, saying who and why.
    let lines: Vec<String> = crate::domain::incident::shown_timeline(&d.events)
        .map(|e| e.describe())
        .collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("scalated"))
            .collect::<Vec<_>>(),
        [&format!(
            "Escalated by {}: escalated by hand",
            user("U1").display()
        )],
        "{lines:?}"
    );
}

fn timers(d: &Decision) -> Vec<(TimerKind, i64)> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::ArmTimer(t) => Some((t.kind, (t.at - t0()).num_seconds())),
            _ => None,
        })
        .collect()
}

fn fire(inc: Incident, kind: TimerKind, secs: i64, cfg: &Config) -> Decision {
    handle(
        Some(inc),
        Input::Timer(Timer {
            incident: IncidentId(1),
            kind,
            at: t0() + Duration::seconds(secs),
        }),
        cfg,
        ctx(secs),
    )
    .unwrap()
}

#[test]
fn new_incidents_arm_their_deadlines_from_the_targets_and_policy() {
    let d = handle(
        None,
        Input::Alert(alert("agent deadlock", "critical", AlertStatus::Firing)),
        &cfg(),
        ctx(0),
    )
    .unwrap();
    // P1: detect 60 s, repair 15 min, approval expiry 120 s (policy default).
    assert_eq!(
        timers(&d),
        [
            (TimerKind::AckDeadline, 60),
            (TimerKind::RepairDeadline, 900),
            (TimerKind::ApprovalExpiry, 120)
        ]
    );
    // No actions waiting: no approval expiry.
    let d = handle(
        None,
        Input::Alert(alert("something odd", "info", AlertStatus::Firing)),
        &cfg(),
        ctx(0),
    )
    .unwrap();
    assert_eq!(
        timers(&d),
        [
            (TimerKind::AckDeadline, 900),
            (TimerKind::RepairDeadline, 3600)
        ]
    );
}

#[test]
fn missed_acknowledgement_escalates_and_mentions_the_oncall() {
    let text = format!(
        "{CFG}\n[escalation]\noncall = [\"slack-group:SONCALL\", \"discord-role:77\"]\nraise_severity = true\n"
    );
    let cfg = Config::from_toml(&text, &|_| None).unwrap();
    let inc = open("agent deadlock", "critical");
    let d = fire(inc.clone(), TimerKind::AckDeadline, 60, &cfg);
    let after = d.incident.clone().unwrap();
    assert_eq!(after.status, Status::Escalated);
    assert_eq!(after.severity, Severity::P0, "raised one step");
    assert!(d
        .events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Escalated { reason } if reason.contains("not acknowledged within the P1 detection target (1 min)"))));
    assert!(d.events.iter().any(|e| matches!(
        e.kind,
        EventKind::SeverityChanged {
            from: Severity::P1,
            to: Severity::P0
        }
    )));
    let notes: Vec<_> = chats(&d)
        .into_iter()
        .filter_map(|b| match b {
            ChatBody::Note { text, mentions } => Some((text.clone(), mentions.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].1, ["slack-group:SONCALL", "discord-role:77"]);
    assert!(executes(&d).is_empty(), "no pager configured");

    // Acknowledged in time: the deadline does nothing.
    let acked = cmd(&inc, "U1", Command::Ack(inc.id), 10)
        .unwrap()
        .incident
        .unwrap();
    let d = fire(acked, TimerKind::AckDeadline, 60, &cfg);
    assert!(d.events.is_empty() && d.effects.is_empty());
}

#[test]
fn unanswered_approvals_and_missed_repair_escalate_but_not_when_settled() {
    let cfg = cfg();
    let inc = open("agent deadlock", "critical");
    let d = fire(inc.clone(), TimerKind::ApprovalExpiry, 120, &cfg);
    assert!(d.events.iter().any(|e| matches!(&e.kind, EventKind::Escalated { reason } if reason.contains("`restart` unanswered after 2 min"))));
    // Decided in time: nothing to escalate.
    let rejected = cmd(
        &inc,
        "U1",
        Command::Reject(inc.id, "restart".into(), None),
        5,
    )
    .unwrap()
    .incident
    .unwrap();
    let d = fire(rejected, TimerKind::ApprovalExpiry, 120, &cfg);
    assert!(d.events.is_empty());
    // Repair deadline on an open incident escalates; on a resolved one it does nothing.
    let d = fire(inc.clone(), TimerKind::RepairDeadline, 900, &cfg);
    assert_eq!(d.incident.unwrap().status, Status::Escalated);
    let resolved = cmd(&inc, "U1", Command::Resolve(inc.id, None), 5)
        .unwrap()
        .incident
        .unwrap();
    let d = fire(resolved, TimerKind::RepairDeadline, 900, &cfg);
    assert!(d.events.is_empty() && d.effects.is_empty());
}

#[test]
fn escalation_pages_once_through_the_configured_pager() {
    let text = format!(
        "{CFG}\n[escalation.pager]\nid = \"pager\"\ntitle = \"PagerDuty\"\nrun = {{ type = \"http\", url = \"https://events.pagerduty.com/v2/enqueue\", body = {{ routing_key = \"x\", event_action = \"trigger\" }}, expect_status = 202 }}\n"
    );
    let cfg = Config::from_toml(&text, &|_| None).unwrap();
    let inc = open("agent deadlock", "critical");
    let d = fire(inc, TimerKind::AckDeadline, 60, &cfg);
    assert_eq!(executes(&d), [PAGER_ACTION]);
    // A manual escalation is recorded with who did it.
    let inc = open("agent deadlock", "critical");
    let d = cmd(&inc, "U1", Command::Escalate(inc.id), 3).unwrap();
    assert!(d.events.iter().any(|e| e.actor == user("U1")
        && matches!(
            e.kind,
            EventKind::StatusChanged {
                to: Status::Escalated,
                ..
            }
        )));
}

#[test]
fn recurrence_counts_resolutions_within_the_window_only() {
    let past = |id: u64, days_ago: i64| PastIncident {
        id: IncidentId(id),
        resolved_at: t0() - Duration::days(days_ago),
        fixed_by: Some(format!("`fix{id}`")),
    };
    let history = [past(1, 40), past(2, 20), past(3, 2)];
    let c = Ctx {
        history: &history,
        ..ctx(0)
    };
    let d = handle(
        None,
        Input::Alert(alert("agent deadlock", "critical", AlertStatus::Firing)),
        &cfg(),
        c,
    )
    .unwrap();
    let r = d.incident.clone().unwrap().recurrence.unwrap();
    assert_eq!((r.previous, r.last, r.window_days), (2, IncidentId(3), 30));
    assert_eq!(r.last_fixed_by.as_deref(), Some("`fix3`"));
    let (true, card) = queued_card(&d, &cfg()).unwrap() else {
        panic!("a new incident posts its card")
    };
    assert_eq!(
        card.recurrence.as_deref(),
        Some("Recurred: 3rd time in 30 days, last INC-3, fixed by `fix3`")
    );
    // Only old history: not a recurrence.
    let old = [past(1, 40)];
    let c = Ctx {
        history: &old,
        ..ctx(0)
    };
    let d = handle(
        None,
        Input::Alert(alert("agent deadlock", "critical", AlertStatus::Firing)),
        &cfg(),
        c,
    )
    .unwrap();
    assert!(d.incident.unwrap().recurrence.is_none());
}

#[test]
fn triage_computed_before_the_writer_decides_exactly_what_the_writer_would() {
    let cfg = cfg();
    for (title, sev) in [
        ("Orders API 503 errors", "critical"),
        ("Pod OOMKilled", "warning"),
        ("Model returned malformed JSON", "info"),
        ("Something odd", "p0"),
    ] {
        let a = alert(title, sev, AlertStatus::Firing);
        let pre = PreTriage::of(&a, &cfg);
        let plain = handle(None, Input::Alert(a.clone()), &cfg, ctx(0)).unwrap();
        let triaged = handle(None, Input::Triaged(a, Box::new(pre)), &cfg, ctx(0)).unwrap();
        assert_eq!(plain.incident, triaged.incident, "{title}");
        assert_eq!(plain.effects, triaged.effects, "{title}");
        assert_eq!(plain.events, triaged.events, "{title}");
    }
}

#[test]
fn the_report_follows_the_resolving_note_and_a_later_root_cause() {
    let inc = open("Tool API returning 503", "critical");
    let d = cmd(
        &inc,
        "U1",
        Command::Resolve(inc.id, Some("fixed".into())),
        2,
    )
    .unwrap();
    let bodies = chats(&d);
    let note = bodies
        .iter()
        .position(|b| matches!(b, ChatBody::Note { text, .. } if text.starts_with("✅ Resolved")))
        .expect("a resolving note");
    let report = bodies
        .iter()
        .position(|b| matches!(b, ChatBody::RenderReport))
        .expect("a report");
    assert!(note < report, "{bodies:?}");
    let resolved = d.incident.unwrap();
    // A root cause confirmed after resolution posts the report again, after its note.
    let d = cmd(
        &resolved,
        "U1",
        Command::RootCause(
            inc.id,
            crate::domain::classify::RootCause::Configuration,
            None,
        ),
        3,
    )
    .unwrap();
    let bodies = chats(&d);
    let reports = bodies
        .iter()
        .filter(|b| matches!(b, ChatBody::RenderReport))
        .count();
    assert_eq!(reports, 1, "{bodies:?}");
    // While the incident is open a root cause is no reason for a report.
    let d = cmd(
        &inc,
        "U1",
        Command::RootCause(
            inc.id,
            crate::domain::classify::RootCause::Configuration,
            None,
        ),
        3,
    )
    .unwrap();
    assert!(!chats(&d)
        .iter()
        .any(|b| matches!(b, ChatBody::RenderReport)));
    // Nothing else that touches a resolved incident posts a report.
    let d = cmd(&resolved, "U1", Command::Note(inc.id, "done".into()), 4).unwrap();
    assert!(!chats(&d)
        .iter()
        .any(|b| matches!(b, ChatBody::RenderReport)));
}

#[test]
fn an_interrupted_action_shows_as_interrupted_not_failed() {
    let inc = open("Tool API returning 503", "critical");
    let d = handle(
        Some(inc.clone()),
        Input::ExecutionInterrupted {
            incident: inc.id,
            action: "restart".into(),
            key: format!("{}:restart", inc.id),
        },
        &cfg(),
        ctx(5),
    )
    .unwrap();
    let after = d.incident.unwrap();
    assert_eq!(
        after.action("restart").map(|a| a.status),
        Some(ActionStatus::Interrupted)
    );
    let c = card(&after, &cfg());
    let a = c.actions.iter().find(|a| a.id == "restart").unwrap();
    assert_eq!(a.status, ActionStatus::Interrupted);
}

#[test]
fn a_chart_that_came_late_edits_the_card_coalesced_like_any_edit() {
    let inc = open("Payments API rate limit", "warning");
    let chart = |inc: &Incident, secs: i64| {
        handle(
            Some(inc.clone()),
            Input::ChartFetched { incident: inc.id },
            &cfg(),
            ctx(secs),
        )
        .unwrap()
    };
    // Within the coalescing window of the card's post (5 s): held back for the flush timer.
    let d = chart(&inc, 1);
    assert!(chats(&d).is_empty(), "{:?}", d.effects);
    let held = d.incident.clone().unwrap();
    assert!(held.card_dirty);
    assert!(d.effects.iter().any(|e| matches!(
        e,
        Effect::ArmTimer(Timer {
            kind: TimerKind::CardFlush,
            ..
        })
    )));
    assert!(d.events.is_empty(), "no timeline entry for a chart");
    // After it: an edit at once.
    let d = chart(&inc, 6);
    assert_eq!(chats(&d), [&ChatBody::RenderCard { post: false }]);
    // An incident summarized in a storm thread has no card of its own to edit.
    let mut member = inc.clone();
    member.storm_thread = Some(IncidentId(99));
    assert!(chats(&chart(&member, 6)).is_empty());
    // An unknown incident is an error, not a card.
    assert!(handle(
        None,
        Input::ChartFetched {
            incident: IncidentId(42)
        },
        &cfg(),
        ctx(6)
    )
    .is_err());
}
