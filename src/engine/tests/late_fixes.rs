//! An automatic fix that finishes after its incident escalated (its executor was slow, or the
//! detection target passed while it ran) is still verified: the incident goes to verifying,
//! and the verification resolves it or escalates it again. Before, the fix's note said
//! "Verifying" and nothing verified it: the incident sat escalated, paging, with a fix that
//! may well have worked.

use super::writes::{with, TestView};
use super::*;

const TITLE: &str = "Payments API rate limit";

fn late_cfg() -> Config {
    let text = CFG.replace(
        "run = { type = \"http\", url = \"http://127.0.0.1:1/x\" }",
        "run = { type = \"http\", url = \"http://127.0.0.1:1/x\" }\n\
         verify = { type = \"alert_resolves\", within_seconds = 120 }",
    );
    Config::from_toml(&text, &|_| None).unwrap()
}

fn step(view: &TestView, inc: Incident, input: Input, secs: i64, cfg: &Config) -> Incident {
    handle(Some(inc), input, cfg, with(view, secs))
        .unwrap()
        .incident
        .unwrap()
}

/// Opens the incident (its fix queued), lets the detection target pass (escalated), then runs
/// the fix to success at `secs`.
fn fixed_after_escalation(view: &TestView, secs: i64, cfg: &Config) -> Incident {
    let d = handle(
        None,
        Input::Alert(alert(TITLE, "warning", AlertStatus::Firing)),
        cfg,
        with(view, 0),
    )
    .unwrap();
    assert_eq!(executes(&d), ["fallback"]);
    let x = d.executions[0].clone();
    view.executions
        .borrow_mut()
        .insert(x.key.clone(), x.clone());
    let inc = d.incident.unwrap();
    let inc = fire(inc, TimerKind::AckDeadline, secs - 10, cfg)
        .incident
        .unwrap();
    assert_eq!(inc.status, Status::Escalated);
    let inc = run_to_success(view, inc, &x, secs, cfg);
    assert_eq!(inc.status, Status::Verifying, "the late fix is verified");
    assert_eq!(inc.verifying.as_deref(), Some("fallback"));
    inc
}

#[test]
fn a_fix_that_finishes_after_escalation_is_verified_by_the_alert_clearing() {
    let cfg = late_cfg();
    let view = TestView::default();
    let inc = fixed_after_escalation(&view, 1800, &cfg);
    let clear = Input::Alert(alert(TITLE, "warning", AlertStatus::Resolved));
    let inc = step(&view, inc, clear, 1830, &cfg);
    assert_eq!(inc.status, Status::Resolved, "verified: the alert resolved");
    let tally = inc.tally.as_ref().expect("tally");
    assert_eq!(tally.auto_counts(), (1, 1), "one automatic success");
}

#[test]
fn a_fix_that_finishes_after_escalation_and_does_not_verify_escalates_again() {
    let cfg = late_cfg();
    let view = TestView::default();
    let inc = fixed_after_escalation(&view, 1800, &cfg);
    let d = fire(inc, TimerKind::VerifyDeadline, 1800 + 120, &cfg);
    let inc = d.incident.unwrap();
    assert_eq!(inc.status, Status::Escalated, "did not verify: escalated");
    let tally = inc.tally.as_ref().expect("tally");
    assert_eq!(tally.auto_counts(), (1, 0), "one automatic failure");
}

/// The other order: the fix is being verified when the detection target passes. People are
/// paged, and the verification goes on and decides: the incident stays verifying. Before,
/// the escalation moved it to escalated and the verification was dropped unfinished.
#[test]
fn an_escalation_during_verification_pages_and_lets_the_verification_decide() {
    let cfg = late_cfg();
    let view = TestView::default();
    let d = handle(
        None,
        Input::Alert(alert(TITLE, "warning", AlertStatus::Firing)),
        &cfg,
        with(&view, 0),
    )
    .unwrap();
    let x = d.executions[0].clone();
    view.executions
        .borrow_mut()
        .insert(x.key.clone(), x.clone());
    let inc = run_to_success(&view, d.incident.unwrap(), &x, 11, &cfg);
    assert_eq!(inc.status, Status::Verifying);
    let d = fire(inc, TimerKind::AckDeadline, 60, &cfg);
    assert!(
        d.events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Escalated { .. })),
        "escalated: {:?}",
        d.events
    );
    assert!(
        chats(&d)
            .iter()
            .any(|b| matches!(b, ChatBody::Note { text, .. } if text.contains("escalated"))),
        "people are told"
    );
    let inc = d.incident.unwrap();
    assert_eq!(inc.status, Status::Verifying, "the verification goes on");
    let clear = Input::Alert(alert(TITLE, "warning", AlertStatus::Resolved));
    let inc = step(&view, inc, clear, 90, &cfg);
    assert_eq!(inc.status, Status::Resolved, "verified: the alert resolved");
    assert_eq!(inc.tally.as_ref().unwrap().auto_counts(), (1, 1));
}
