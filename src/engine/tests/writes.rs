//! What a decision asks the writer to write, decided by the core from its view: executions
//! exactly once, the group's open incident, its history, the metric events.

use std::cell::RefCell;
use std::collections::HashMap;

use super::*;

/// A view the test fills in, as the writer's committed state would be.
#[derive(Default)]
pub(super) struct TestView {
    pub(super) open: HashMap<String, IncidentId>,
    pub(super) executions: RefCell<HashMap<String, Execution>>,
    /// When earlier incidents opened, by source.
    pub(super) opened: Vec<(&'static str, DateTime<Utc>)>,
    /// Storm threads by source.
    pub(super) storm_threads: HashMap<&'static str, IncidentId>,
}

impl View for TestView {
    fn open_incident(&self, key: &str) -> Option<IncidentId> {
        self.open.get(key).copied()
    }
    fn execution(&self, key: &str) -> Option<Execution> {
        self.executions.borrow().get(key).cloned()
    }
    fn openings(&self, source: &str, since: DateTime<Utc>) -> usize {
        self.opened
            .iter()
            .filter(|(s, at)| *s == source && *at >= since)
            .count()
    }
    fn storm_thread(&self, source: &str) -> Option<IncidentId> {
        self.storm_threads.get(source).copied()
    }
}

pub(super) fn with<'a>(view: &'a TestView, secs: i64) -> Ctx<'a> {
    Ctx { view, ..ctx(secs) }
}

#[test]
fn a_new_incident_opens_its_group_key_and_counts_as_opened() {
    let view = TestView::default();
    let d = handle(
        None,
        Input::Alert(alert("API rate limit", "warning", AlertStatus::Firing)),
        &cfg(),
        with(&view, 0),
    )
    .unwrap();
    let inc = d.incident.as_ref().unwrap();
    assert_eq!(d.open, [(inc.key().to_string(), Some(inc.id))]);
    assert!(d.past.is_none());
    assert!(d.observed.contains(&Observed::AlertReceived {
        source: "alertmanager",
        firing: true
    }));
    assert!(d.observed.contains(&Observed::IncidentOpened {
        severity: Severity::P2,
        kind: "tool_api_failure".into()
    }));
    // The automatic action is queued by the decision itself, with its record.
    assert_eq!(executes(&d), ["fallback"]);
    assert_eq!(d.executions.len(), 1);
    assert_eq!(d.executions[0].key, "INC-1:fallback");
    assert_eq!(d.executions[0].status, ExecutionStatus::Queued);
}

#[test]
fn an_execution_that_exists_is_not_queued_again_nor_claimed_on_the_timeline() {
    let inc = open("Orders API 503 errors", "critical");
    let view = TestView::default();
    view.executions.borrow_mut().insert(
        format!("{}:restart", inc.id),
        Execution {
            key: format!("{}:restart", inc.id),
            incident: inc.id,
            action: "restart".into(),
            status: ExecutionStatus::Succeeded,
            created_at: t0(),
            updated_at: t0(),
        },
    );
    let d = handle(
        Some(inc.clone()),
        Input::Command {
            actor: user("U1"),
            command: Command::Approve(inc.id, "restart".into()),
        },
        &cfg(),
        with(&view, 5),
    )
    .unwrap();
    assert!(executes(&d).is_empty());
    assert!(d.executions.is_empty());
    assert_eq!(
        d.reply.as_deref(),
        Some("`restart` already ran or is running")
    );
    assert!(!d
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::ExecutionQueued { .. })));
}

#[test]
fn only_a_queued_execution_starts_and_its_record_moves_on() {
    let inc = open("Orders API 503 errors", "critical");
    let key = format!("{}:restart", inc.id);
    let start = |view: &TestView| {
        handle(
            Some(inc.clone()),
            Input::ExecutionStarted {
                incident: inc.id,
                action: "restart".into(),
                key: key.clone(),
                preview: "/bin/true".into(),
            },
            &cfg(),
            with(view, 5),
        )
    };
    let view = TestView::default();
    assert_eq!(
        start(&view).unwrap_err().0,
        format!("execution {key} is unknown; not starting it again")
    );
    let queued = Execution {
        key: key.clone(),
        incident: inc.id,
        action: "restart".into(),
        status: ExecutionStatus::Queued,
        created_at: t0(),
        updated_at: t0(),
    };
    view.executions
        .borrow_mut()
        .insert(key.clone(), queued.clone());
    let d = start(&view).unwrap();
    assert_eq!(d.executions.len(), 1);
    assert_eq!(d.executions[0].status, ExecutionStatus::Started);
    view.executions
        .borrow_mut()
        .insert(key.clone(), d.executions[0].clone());
    assert_eq!(
        start(&view).unwrap_err().0,
        format!("execution {key} is started; not starting it again")
    );
    let d = handle(
        d.incident,
        Input::ExecutionFinished {
            incident: inc.id,
            action: "restart".into(),
            key: key.clone(),
            success: false,
            summary: "exit 1".into(),
        },
        &cfg(),
        with(&view, 9),
    )
    .unwrap();
    assert_eq!(d.executions[0].status, ExecutionStatus::Failed);
    assert!(d.observed.contains(&Observed::ExecutionFinished {
        executor: "command",
        success: false
    }));
}

#[test]
fn reopening_is_refused_while_another_incident_of_the_group_is_open() {
    let inc = open("Orders API 503 errors", "critical");
    let resolved = cmd(&inc, "U1", Command::Resolve(inc.id, None), 60)
        .unwrap()
        .incident
        .unwrap();
    let mut view = TestView::default();
    view.open.insert(resolved.key().to_string(), IncidentId(7));
    let refused = handle(
        Some(resolved.clone()),
        Input::Command {
            actor: user("U1"),
            command: Command::Reopen(resolved.id),
        },
        &cfg(),
        with(&view, 90),
    )
    .unwrap_err();
    assert_eq!(
        refused.0,
        "INC-7 is already open for this alert; INC-1 stays resolved"
    );
    // Without another open incident it reopens, and opens the key again.
    let d = cmd(&resolved, "U1", Command::Reopen(resolved.id), 90).unwrap();
    assert_eq!(d.open, [(resolved.key().to_string(), Some(resolved.id))]);
}

#[test]
fn resolving_closes_the_key_and_enters_the_history_once() {
    let inc = open("Orders API 503 errors", "critical");
    let mut view = TestView::default();
    view.open.insert(inc.key().to_string(), inc.id);
    let d = handle(
        Some(inc.clone()),
        Input::Command {
            actor: user("U1"),
            command: Command::Resolve(inc.id, None),
        },
        &cfg(),
        with(&view, 120),
    )
    .unwrap();
    assert_eq!(d.open, [(inc.key().to_string(), None)]);
    let (key, past) = d.past.clone().unwrap();
    assert_eq!((key.as_str(), past.id), (inc.key(), inc.id));
    assert!(d.observed.iter().any(|o| matches!(
        o,
        Observed::IncidentResolved { seconds, .. } if *seconds == 120.0
    )));
    // Another incident owns the key by now (opened after a flap window): it stays open.
    view.open.insert(inc.key().to_string(), IncidentId(9));
    let d = handle(
        Some(inc.clone()),
        Input::Command {
            actor: user("U1"),
            command: Command::Resolve(inc.id, None),
        },
        &cfg(),
        with(&view, 120),
    )
    .unwrap();
    assert!(d.open.is_empty());
    assert!(d.past.is_some());
    // A note on a resolved incident changes neither.
    let resolved = d.incident.unwrap();
    let d = cmd(
        &resolved,
        "U1",
        Command::Note(resolved.id, "later".into()),
        200,
    )
    .unwrap();
    assert!(d.open.is_empty() && d.past.is_none());
}

/// A P2 alert whose playbook has an automatic action, opened after `earlier` incidents from
/// the same source opened `ago` seconds before.
fn p2_after(earlier: usize, ago: i64, source: &'static str) -> Decision {
    let view = TestView {
        opened: vec![(source, t0() + Duration::seconds(600 - ago)); earlier],
        ..Default::default()
    };
    handle(
        None,
        Input::Alert(alert("API rate limit", "warning", AlertStatus::Firing)),
        &cfg(),
        with(&view, 600),
    )
    .unwrap()
}

#[test]
fn in_a_storm_automatic_actions_wait_for_approval_and_the_card_says_why() {
    // 20 in the last minute, this is the 21st: a storm (default: more than 20 within 60 s).
    let d = p2_after(20, 30, "alertmanager");
    let inc = d.incident.clone().unwrap();
    assert!(executes(&d).is_empty(), "nothing runs on its own");
    assert!(d.executions.is_empty());
    assert_eq!(inc.status, Status::Open);
    assert_eq!(
        inc.action("fallback").unwrap().status,
        ActionStatus::Proposed
    );
    assert_eq!(inc.storm, Some(21));
    assert!(d.events.iter().any(|e| e.kind
        == EventKind::StormGuard {
            new_incidents: 21,
            window_seconds: 60
        }));
    let c = card(&inc, &cfg());
    assert_eq!(
        c.storm.as_deref(),
        Some("⛈️ Storm guard: 21 new incidents from alertmanager in a short time; automatic actions wait for approval.")
    );
    // No extra message: the card says it.
    assert_eq!(chats(&d), [&ChatBody::RenderCard { post: true }]);
    // The action can still be approved by a person, and then runs.
    let approved = cmd(&inc, "U1", Command::Approve(inc.id, "fallback".into()), 610).unwrap();
    assert_eq!(executes(&approved), ["fallback"]);
}

#[test]
fn the_storm_guard_counts_one_source_within_its_window_and_lifts_by_itself() {
    // 19 earlier: the 20th is not above the bound.
    assert_eq!(executes(&p2_after(19, 30, "alertmanager")), ["fallback"]);
    // Openings older than the window do not count: the guard has lifted.
    assert_eq!(executes(&p2_after(50, 61, "alertmanager")), ["fallback"]);
    // Another source's storm does not hold this one's actions.
    let d = p2_after(50, 10, "grafana");
    assert_eq!(executes(&d), ["fallback"]);
    assert_eq!(d.incident.unwrap().storm, None);
}

#[test]
fn the_storm_guard_can_be_turned_off() {
    let mut cfg = cfg();
    cfg.engine.storm_new_incidents = 0;
    let view = TestView {
        opened: vec![("alertmanager", t0()); 500],
        ..Default::default()
    };
    let d = handle(
        None,
        Input::Alert(alert("API rate limit", "warning", AlertStatus::Firing)),
        &cfg,
        with(&view, 1),
    )
    .unwrap();
    assert_eq!(executes(&d), ["fallback"]);
}
