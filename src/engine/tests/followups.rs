//! Follow-ups (§9): their lifecycle under the policy, their due dates from `[followups]`, and
//! the reminders' timers, all on the injected clock.

use super::*;
use crate::domain::followup::{FollowUpChange, FollowUpKind, FollowUpState};

const DAY: i64 = 86_400;

fn fcfg() -> Config {
    Config::from_toml(
        &format!("{CFG}\n[followups]\nmention_owners = true\n"),
        &|_| None,
    )
    .unwrap()
}

fn run(inc: &Incident, input: Input, secs: i64) -> Result<Decision, UserError> {
    handle(Some(inc.clone()), input, &fcfg(), ctx(secs))
}

fn by(inc: &Incident, actor: &str, c: Command, secs: i64) -> Result<Decision, UserError> {
    run(
        inc,
        Input::Command {
            actor: user(actor),
            command: c,
        },
        secs,
    )
}

fn add(inc: &Incident, actor: &str, text: &str, owner: Option<&str>, secs: i64) -> Incident {
    let c = Command::FollowUp(
        inc.id,
        text.into(),
        owner.map(String::from),
        FollowUpKind::Process,
    );
    by(inc, actor, c, secs).unwrap().incident.unwrap()
}

fn set(inc: &Incident, actor: &str, n: u32, c: FollowUpChange, secs: i64) -> Decision {
    by(inc, actor, Command::FollowUpSet(inc.id, n, c), secs).unwrap()
}

/// The reminder timer a decision arms (`Some(Some(at))`), disarms (`Some(None)`), or leaves.
fn reminder(d: &Decision) -> Option<Option<DateTime<Utc>>> {
    d.effects.iter().find_map(|e| match e {
        Effect::ArmTimer(t) if t.kind == TimerKind::FollowUpReminder => Some(Some(t.at)),
        Effect::DisarmTimer(TimerKind::FollowUpReminder) => Some(None),
        _ => None,
    })
}

fn fire(inc: &Incident, secs: i64) -> Decision {
    let t = Timer {
        incident: inc.id,
        kind: TimerKind::FollowUpReminder,
        at: t0() + Duration::seconds(secs),
    };
    run(inc, Input::Timer(t), secs).unwrap()
}

fn notes(d: &Decision) -> Vec<(&str, &[String])> {
    chats(d)
        .into_iter()
        .filter_map(|b| match b {
            ChatBody::Note { text, mentions } => Some((text.as_str(), mentions.as_slice())),
            _ => None,
        })
        .collect()
}

fn resolved(secs: i64) -> Incident {
    let inc = open("Checkout slow", "warning");
    by(&inc, "U1", Command::Resolve(inc.id, None), secs)
        .unwrap()
        .incident
        .unwrap()
}

#[test]
fn a_resolved_incident_without_followups_is_reminded_once_after_a_day() {
    let inc = open("Checkout slow", "warning");
    let d = by(&inc, "U1", Command::Resolve(inc.id, None), 100).unwrap();
    // Due 24 h after resolution.
    assert_eq!(
        reminder(&d),
        Some(Some(t0() + Duration::seconds(100 + DAY)))
    );
    let inc = d.incident.unwrap();
    // Fired early (a clock jump back): nothing said, armed again for the due date.
    let d = fire(&inc, 100 + DAY - 1);
    assert!(notes(&d).is_empty());
    assert_eq!(
        reminder(&d),
        Some(Some(t0() + Duration::seconds(100 + DAY)))
    );
    let d = fire(&inc, 100 + DAY);
    let n = notes(&d);
    assert_eq!(n.len(), 1, "{n:?}");
    assert!(n[0].0.contains("has no follow-up yet"), "{}", n[0].0);
    assert!(n[0].1.is_empty(), "nobody to mention");
    assert!(d.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::FollowUpReminder { undefined: true, overdue } if overdue.is_empty()
    )));
    // Reminded: no timer left, and a second firing says nothing.
    assert_eq!(reminder(&d), None);
    let inc = d.incident.unwrap();
    let d = fire(&inc, 100 + 3 * DAY);
    assert!(notes(&d).is_empty());
    assert_eq!(reminder(&d), None);
}

#[test]
fn adding_a_followup_within_the_day_disarms_the_define_reminder() {
    let inc = resolved(0);
    let d = by(
        &inc,
        "U5",
        Command::FollowUp(inc.id, "add an alert".into(), None, FollowUpKind::Technical),
        3600,
    )
    .unwrap();
    // The define reminder is gone; the follow-up's own due date (7 days) takes its place.
    assert_eq!(
        reminder(&d),
        Some(Some(t0() + Duration::seconds(3600 + 7 * DAY)))
    );
    let f = &d.incident.as_ref().unwrap().followups[0];
    assert_eq!(f.state, FollowUpState::Open);
    assert_eq!(f.due, Some(t0() + Duration::seconds(3600 + 7 * DAY)));
    assert!(notes(&d)[0].0.contains("Follow-up #1"), "{:?}", notes(&d));
}

#[test]
fn overdue_followups_are_reminded_once_each_and_at_most_daily_mentioning_owners() {
    let inc = resolved(0);
    let inc = add(&inc, "U5", "rate-limit alert", Some("<@U7>"), 0);
    // #2 falls due an hour after #1; its owner is plain text and is named, never pinged.
    let inc = add(&inc, "U5", "runbook <!channel>", Some("@bob"), 3600);
    let due1 = 7 * DAY;
    let d = fire(&inc, due1);
    let n = notes(&d);
    assert_eq!(n.len(), 1);
    assert!(
        n[0].0.contains("#1 rate-limit alert") && n[0].0.contains("OVERDUE"),
        "{}",
        n[0].0
    );
    assert!(!n[0].0.contains("#2"), "{}", n[0].0);
    assert_eq!(n[0].1, ["slack:U7".to_string()]);
    // #2 falls due an hour later, but the next reminder waits a day after the last one.
    assert_eq!(
        reminder(&d),
        Some(Some(t0() + Duration::seconds(due1 + DAY)))
    );
    let inc = d.incident.unwrap();
    let d = fire(&inc, due1 + DAY);
    let n = notes(&d);
    assert!(
        n[0].0.contains("#2 runbook") && !n[0].0.contains("#1"),
        "{}",
        n[0].0
    );
    assert!(
        n[0].1.is_empty(),
        "a typed @bob is not a mention: {:?}",
        n[0].1
    );
    // Both reminded about: nothing more until one of them moves on.
    assert_eq!(reminder(&d), None);
    let inc = d.incident.unwrap();
    // #1 done late: its verification is due 7 days later and reminded then.
    let d = set(&inc, "U7", 1, FollowUpChange::Done, due1 + 2 * DAY);
    let verify_due = due1 + 9 * DAY;
    assert_eq!(
        reminder(&d),
        Some(Some(t0() + Duration::seconds(verify_due)))
    );
    let inc = d.incident.unwrap();
    assert_eq!(
        inc.followups[0].verify_due,
        Some(t0() + Duration::seconds(verify_due))
    );
    let d = fire(&inc, verify_due);
    let n = notes(&d);
    assert!(
        n[0].0.contains("#1") && n[0].0.contains("verify by"),
        "{}",
        n[0].0
    );
}

#[test]
fn reminders_are_off_mentions_unless_configured() {
    let inc = resolved(0);
    let inc = add(&inc, "U5", "x", Some("<@U7>"), 0);
    let t = Timer {
        incident: inc.id,
        kind: TimerKind::FollowUpReminder,
        at: t0() + Duration::seconds(7 * DAY),
    };
    let d = handle(Some(inc), Input::Timer(t), &cfg(), ctx(7 * DAY)).unwrap();
    assert!(notes(&d)[0].1.is_empty());
}

#[test]
fn the_lifecycle_follows_the_policy() {
    let inc = resolved(0);
    let inc = add(&inc, "U5", "rate-limit alert", Some("<@U7>"), 0);
    // Neither owner nor responder: refused, recorded.
    let d = set(&inc, "U9", 1, FollowUpChange::Done, 10);
    assert!(d.refused);
    assert!(d
        .events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Refused { what, .. } if what == "followup done")));
    assert_eq!(
        d.incident.as_ref().unwrap().followups[0].state,
        FollowUpState::Open
    );
    // The owner may mark it done.
    let d = set(&inc, "U7", 1, FollowUpChange::Done, 20);
    assert!(!d.refused);
    let inc = d.incident.unwrap();
    assert_eq!(inc.followups[0].state, FollowUpState::Done);
    assert!(d.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::FollowUpChanged {
            n: 1,
            to: FollowUpState::Done,
            ..
        }
    )));
    // Verifying takes a responder, even for the owner.
    assert!(set(&inc, "U7", 1, FollowUpChange::Verified, 30).refused);
    let d = set(&inc, "U1", 1, FollowUpChange::Verified, 30);
    let inc = d.incident.unwrap();
    assert_eq!(inc.followups[0].state, FollowUpState::Verified);
    assert!(inc.followups[0].completed_on_time());
    // Forward only; numbers that do not exist say which do.
    let e = by(
        &inc,
        "U1",
        Command::FollowUpSet(inc.id, 1, FollowUpChange::Done),
        40,
    )
    .unwrap_err();
    assert!(e.0.contains("already verified"), "{e}");
    let e = by(
        &inc,
        "U1",
        Command::FollowUpSet(inc.id, 3, FollowUpChange::Done),
        40,
    )
    .unwrap_err();
    assert!(e.0.contains("#1 to #1"), "{e}");
}

#[test]
fn dropping_takes_a_responder_and_keeps_the_reason() {
    let inc = resolved(0);
    let inc = add(&inc, "U5", "x", Some("<@U7>"), 0);
    let drop = FollowUpChange::Dropped {
        reason: "superseded".into(),
    };
    assert!(set(&inc, "U7", 1, drop.clone(), 10).refused);
    let d = set(&inc, "U1", 1, drop, 10);
    let inc = d.incident.clone().unwrap();
    assert_eq!(inc.followups[0].state, FollowUpState::Dropped);
    assert_eq!(
        inc.followups[0].dropped_reason.as_deref(),
        Some("superseded")
    );
    // Nothing is due any more: the reminder is disarmed.
    assert_eq!(reminder(&d), Some(None));
}

#[test]
fn a_reopened_incident_is_not_reminded_about_missing_followups() {
    let inc = resolved(0);
    let d = by(&inc, "U1", Command::Reopen(inc.id), 60).unwrap();
    assert_eq!(reminder(&d), Some(None));
    let d = fire(&d.incident.unwrap(), DAY);
    assert!(notes(&d).is_empty());
}

#[test]
fn an_export_is_queued_once_per_followup_and_an_interrupted_one_is_not_resent() {
    let cfg = Config::from_toml(
        &format!(
            "{CFG}\n[followups.export]\nid='t'\ntitle='T'\nrun={{type='http', url='http://127.0.0.1:1/issues'}}\n"
        ),
        &|_| None,
    )
    .unwrap();
    let inc = resolved(0);
    let c = Command::FollowUp(inc.id, "x".into(), None, FollowUpKind::Technical);
    let d = handle(
        Some(inc),
        Input::Command {
            actor: user("U5"),
            command: c,
        },
        &cfg,
        ctx(10),
    )
    .unwrap();
    assert_eq!(d.executions.len(), 1);
    assert_eq!(d.executions[0].key, "INC-1:followup-export:1");
    assert!(d.effects.iter().any(|e| matches!(
        e,
        Effect::Execute { action, .. } if action == "followup-export:1"
    )));
    let inc = d.incident.unwrap();
    // Found `Started` after a restart: a note, never a second request.
    let d = handle(
        Some(inc.clone()),
        Input::ExecutionInterrupted {
            incident: inc.id,
            action: "followup-export:1".into(),
            key: "INC-1:followup-export:1".into(),
        },
        &cfg,
        ctx(20),
    )
    .unwrap();
    assert!(!d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Execute { .. })));
    assert!(
        notes(&d)[0].0.contains("export of follow-up #1"),
        "{:?}",
        notes(&d)
    );
    // The link an export reports is kept on its follow-up.
    let d = handle(
        Some(inc.clone()),
        Input::FollowUpExported {
            incident: inc.id,
            n: 1,
            key: "INC-1:followup-export:1".into(),
            success: true,
            summary: "HTTP 201 in 5 ms".into(),
            link: Some("https://tracker.example/1".into()),
        },
        &cfg,
        ctx(20),
    )
    .unwrap();
    assert_eq!(
        d.incident.unwrap().followups[0].link.as_deref(),
        Some("https://tracker.example/1")
    );
}
