//! A re-fire that reopens an incident its automatic fix had fixed runs that fix again, once
//! per reopen, under the same policy and storm guard, up to `max_auto_runs` runs per incident.

use super::writes::{with, TestView};
use super::*;

const TITLE: &str = "Payments API rate limit";

/// Applies a decision's execution records to the view, as the writer would.
fn apply(view: &TestView, d: &Decision) {
    for x in &d.executions {
        view.executions
            .borrow_mut()
            .insert(x.key.clone(), x.clone());
    }
}

fn step(view: &TestView, inc: Option<Incident>, input: Input, secs: i64, cfg: &Config) -> Decision {
    let d = handle(inc, input, cfg, with(view, secs)).unwrap();
    apply(view, &d);
    d
}

fn notes(d: &Decision) -> Vec<String> {
    chats(d)
        .into_iter()
        .filter_map(|b| match b {
            ChatBody::Note { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// Runs the queued execution of `d` (one) to success, then clears the alert: the playbook
/// resolves on the clear. Returns the resolved incident.
fn fix_and_clear(view: &TestView, d: Decision, secs: i64, cfg: &Config) -> Incident {
    let x = d.executions.last().expect("an execution queued").clone();
    let inc = run_to_success(view, d.incident.unwrap(), &x, secs + 1, cfg);
    let clear = Input::Alert(alert(TITLE, "warning", AlertStatus::Resolved));
    let inc = step(view, Some(inc), clear, secs + 2, cfg)
        .incident
        .unwrap();
    assert_eq!(inc.status, Status::Resolved);
    assert!(inc.resolved_by.as_ref().is_some_and(Actor::is_system));
    inc
}

/// The alert fires again at `secs`, within the flap window of `resolved`.
fn refire(view: &TestView, resolved: &Incident, secs: i64, cfg: &Config) -> Decision {
    let history = [PastIncident::of(resolved).unwrap()];
    let c = Ctx {
        history: &history,
        recent: Some(resolved),
        next_id: IncidentId(2),
        ..with(view, secs)
    };
    let d = handle(
        None,
        Input::Alert(alert(TITLE, "warning", AlertStatus::Firing)),
        cfg,
        c,
    )
    .unwrap();
    apply(view, &d);
    assert_eq!(d.incident.as_ref().unwrap().id, resolved.id, "reopened");
    d
}

fn opened(view: &TestView, cfg: &Config) -> Decision {
    let d = step(
        view,
        None,
        Input::Alert(alert(TITLE, "warning", AlertStatus::Firing)),
        0,
        cfg,
    );
    assert_eq!(executes(&d), ["fallback"]);
    d
}

#[test]
fn a_reopened_auto_fixed_incident_runs_its_fix_again_once_per_reopen_up_to_the_cap() {
    let cfg = cfg();
    assert_eq!(cfg.engine.max_auto_runs, 2, "the default");
    let view = TestView::default();
    let resolved = fix_and_clear(&view, opened(&view, &cfg), 1, &cfg);
    // The first re-fire: the fix runs again, under its own execution key, and the thread says so.
    let d = refire(&view, &resolved, 60, &cfg);
    assert_eq!(executes(&d), ["fallback"]);
    assert_eq!(d.executions.len(), 1);
    assert_eq!(d.executions[0].key, "INC-1:fallback#2");
    assert!(d.events.iter().any(|e| e.actor.is_system()
        && matches!(&e.kind, EventKind::ExecutionQueued { action, execution, .. }
            if action == "fallback" && execution == "INC-1:fallback#2")));
    assert_eq!(d.incident.as_ref().unwrap().status, Status::Remediating);
    let n = notes(&d);
    assert!(
        n.iter().any(|t| t
            == "🔁 Running the automatic fix `fallback` again (run 2 of at most 2): it fixed INC-1 before the alert fired again."),
        "{n:?}"
    );
    // It fixes it again; the next re-fire finds the cap reached: a person decides.
    let resolved = fix_and_clear(&view, d, 61, &cfg);
    let d = refire(&view, &resolved, 120, &cfg);
    assert!(executes(&d).is_empty(), "{:?}", d.effects);
    assert!(d.executions.is_empty());
    assert_eq!(d.incident.as_ref().unwrap().status, Status::Open);
    let n = notes(&d);
    assert!(
        n.iter().any(|t| t
            == "⚠️ The automatic fix `fallback` already ran 2 times for INC-1 (`max_auto_runs` = 2): it is not run again; a person decides."),
        "{n:?}"
    );
}

#[test]
fn a_rerun_obeys_the_policy_the_storm_guard_and_a_cap_of_one() {
    let cfg = cfg();
    // The incident is P1 now (raised): automatic actions need approval at P1.
    let view = TestView::default();
    let mut resolved = fix_and_clear(&view, opened(&view, &cfg), 1, &cfg);
    resolved.severity = Severity::P1;
    let d = refire(&view, &resolved, 60, &cfg);
    assert!(executes(&d).is_empty());
    assert_eq!(d.incident.as_ref().unwrap().status, Status::Open);

    // A storm from its source: held like a new incident's automatic actions.
    let mut view = TestView::default();
    let resolved = fix_and_clear(&view, opened(&view, &cfg), 1, &cfg);
    view.opened = vec![("alertmanager", t0() + Duration::seconds(50)); 25];
    let d = refire(&view, &resolved, 60, &cfg);
    assert!(executes(&d).is_empty());
    assert!(d
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::StormGuard { .. })));
    let n = notes(&d);
    assert!(
        n.iter()
            .any(|t| t.contains("storm guard") && t.contains("`fallback`")),
        "{n:?}"
    );

    // `max_auto_runs = 1`: never again on its own.
    let text = CFG.replace(
        "card_coalesce_seconds = 5",
        "card_coalesce_seconds = 5\nmax_auto_runs = 1",
    );
    let one = Config::from_toml(&text, &|_| None).unwrap();
    let view = TestView::default();
    let resolved = fix_and_clear(&view, opened(&view, &one), 1, &one);
    let d = refire(&view, &resolved, 60, &one);
    assert!(executes(&d).is_empty());
    assert!(notes(&d)
        .iter()
        .any(|t| t.contains("already ran 1 time for INC-1")));
}
