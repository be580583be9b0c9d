//! Clears: the source reports the alert resolved. Escalation stops at once, the incident
//! resolves after the quiet period, and a re-fire within the flap window is the same incident.

use super::*;

fn clear(inc: Incident, secs: i64) -> Decision {
    handle(
        Some(inc),
        Input::Alert(alert("agent deadlock", "critical", AlertStatus::Resolved)),
        &cfg(),
        ctx(secs),
    )
    .unwrap()
}

fn refire(existing: Option<Incident>, c: Ctx<'_>) -> Decision {
    handle(
        existing,
        Input::Alert(alert("agent deadlock", "critical", AlertStatus::Firing)),
        &cfg(),
        c,
    )
    .unwrap()
}

fn disarmed(d: &Decision) -> Vec<TimerKind> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::DisarmTimer(k) => Some(*k),
            _ => None,
        })
        .collect()
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

/// An incident (P1, playbook without `auto_resolve`) whose alert cleared at +30 s.
fn cleared() -> Incident {
    let inc = open("agent deadlock", "critical");
    assert_eq!(inc.playbook.as_deref(), Some("orch"));
    clear(inc, 30).incident.unwrap()
}

#[test]
fn a_clear_stops_escalation_and_starts_the_quiet_period() {
    let d = clear(open("agent deadlock", "critical"), 30);
    let inc = d.incident.clone().unwrap();
    assert_eq!(inc.status, Status::Open);
    assert_eq!(inc.alert_status, AlertStatus::Resolved);
    assert_eq!(
        disarmed(&d),
        [
            TimerKind::AckDeadline,
            TimerKind::RepairDeadline,
            TimerKind::ApprovalExpiry
        ]
    );
    assert_eq!(timers(&d), [(TimerKind::ResolveAfterClear, 30 + 300)]);
    assert!(matches!(
        d.events[..],
        [TimelineEvent {
            kind: EventKind::AlertResolved,
            ..
        }]
    ));
    let n = notes(&d);
    assert_eq!(n.len(), 1, "{n:?}");
    assert!(
        n[0].contains("cleared; escalation stopped") && n[0].contains("resolves in 5 min"),
        "{n:?}"
    );
    // The same clear again changes nothing.
    let again = clear(inc, 40);
    assert!(again.events.is_empty() && again.effects.is_empty());
}

#[test]
fn the_quiet_period_over_resolves_with_a_note() {
    let d = fire(cleared(), TimerKind::ResolveAfterClear, 330, &cfg());
    let inc = d.incident.clone().unwrap();
    assert_eq!(inc.status, Status::Resolved);
    assert!(inc.resolved_by.as_ref().unwrap().is_system());
    assert_eq!(inc.resolved_at, Some(t0() + Duration::seconds(330)));
    assert!(d.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::StatusChanged { from: Status::Open, to: Status::Resolved, note: Some(n) }
            if n == "the alert stayed clear for 5 min"
    )));
    assert_eq!(
        notes(&d),
        ["✅ INC-1 resolved: the alert stayed clear for 5 min."]
    );
    assert!(chats(&d).contains(&&ChatBody::RenderCard { post: false }));
}

#[test]
fn a_refire_during_the_quiet_period_keeps_the_incident_open() {
    let d = refire(Some(cleared()), ctx(100));
    assert!(!d.created);
    let inc = d.incident.clone().unwrap();
    assert_eq!((inc.id, inc.status), (IncidentId(1), Status::Open));
    assert_eq!(inc.alert_status, AlertStatus::Firing);
    assert!(disarmed(&d).contains(&TimerKind::ResolveAfterClear));
    // Escalation starts over from the re-fire.
    assert!(timers(&d).contains(&(TimerKind::AckDeadline, 100 + 60)));
    assert!(d
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::AlertRefired)));
    assert!(
        notes(&d).iter().any(|n| n.contains("firing again")),
        "{:?}",
        notes(&d)
    );
    // Had the quiet-period timer fired anyway, it would do nothing: the alert is firing.
    let late = fire(inc, TimerKind::ResolveAfterClear, 330, &cfg());
    assert!(late.events.is_empty() && late.effects.is_empty());
    assert_eq!(late.incident.unwrap().status, Status::Open);
}

/// The incident as incidentd resolved it after the quiet period, and its history entry.
fn auto_resolved() -> (Incident, PastIncident) {
    let inc = fire(cleared(), TimerKind::ResolveAfterClear, 330, &cfg())
        .incident
        .unwrap();
    let past = PastIncident::of(&inc).unwrap();
    (inc, past)
}

#[test]
fn a_refire_within_the_flap_window_reopens_the_auto_resolved_incident() {
    let (resolved, past) = auto_resolved();
    let history = [past];
    // 330 s resolved + 600 s flap window: +900 s is within it.
    let c = Ctx {
        history: &history,
        recent: Some(&resolved),
        next_id: IncidentId(2),
        ..ctx(900)
    };
    let d = refire(None, c);
    assert!(!d.created);
    let inc = d.incident.clone().unwrap();
    assert_eq!(inc.id, IncidentId(1), "the same incident, not INC-2");
    assert_eq!(inc.status, Status::Open);
    assert_eq!(inc.alert_status, AlertStatus::Firing);
    assert_eq!(inc.resolved_at, None);
    assert_eq!(inc.alert_count, resolved.alert_count + 1);
    assert!(d.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::StatusChanged { from: Status::Resolved, to: Status::Open, note: Some(n) }
            if n.contains("flap window")
    )));
    assert!(d
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::AlertRefired)));
    let n = notes(&d);
    assert!(
        n.len() == 1 && n[0].starts_with("🔁 INC-1 reopened: the alert fired again 9 min 30 s"),
        "{n:?}"
    );
    assert!(timers(&d).contains(&(TimerKind::AckDeadline, 900 + 60)));
    // Its card is edited in place; no second thread.
    assert_eq!(queued_card(&d, &cfg()).map(|(post, _)| post), Some(false));
}

#[test]
fn a_refire_after_the_flap_window_or_after_a_human_resolve_opens_a_new_incident() {
    let (resolved, past) = auto_resolved();
    let history = [past];
    let c = Ctx {
        history: &history,
        recent: Some(&resolved),
        next_id: IncidentId(2),
        ..ctx(330 + 601)
    };
    let d = refire(None, c);
    assert!(d.created);
    let inc = d.incident.unwrap();
    assert_eq!(inc.id, IncidentId(2));
    let r = inc.recurrence.unwrap();
    assert_eq!((r.previous, r.last), (1, IncidentId(1)));

    // A person resolved it: their decision stands, even within the window.
    let by_hand = cmd(&cleared(), "U1", Command::Resolve(IncidentId(1), None), 60)
        .unwrap()
        .incident
        .unwrap();
    let history = [PastIncident::of(&by_hand).unwrap()];
    let c = Ctx {
        history: &history,
        recent: Some(&by_hand),
        next_id: IncidentId(2),
        ..ctx(90)
    };
    let d = refire(None, c);
    assert!(d.created);
    assert_eq!(d.incident.unwrap().id, IncidentId(2));
}

#[test]
fn a_flap_window_of_zero_never_reopens() {
    let text = CFG.replace(
        "card_coalesce_seconds = 5",
        "card_coalesce_seconds = 5\nflap_window_seconds = 0",
    );
    let cfg = Config::from_toml(&text, &|_| None).unwrap();
    let (resolved, past) = auto_resolved();
    let history = [past];
    let c = Ctx {
        history: &history,
        recent: Some(&resolved),
        next_id: IncidentId(2),
        ..ctx(340)
    };
    let d = handle(
        None,
        Input::Alert(alert("agent deadlock", "critical", AlertStatus::Firing)),
        &cfg,
        c,
    )
    .unwrap();
    assert!(d.created);
}

#[test]
fn an_acknowledged_incident_stays_open_after_its_clear() {
    // Acknowledged before the clear: no quiet period, escalation still stops.
    let inc = open("agent deadlock", "critical");
    let acked = cmd(&inc, "U1", Command::Ack(inc.id), 10)
        .unwrap()
        .incident
        .unwrap();
    let d = clear(acked, 30);
    assert!(timers(&d).is_empty(), "{:?}", timers(&d));
    assert!(disarmed(&d).contains(&TimerKind::RepairDeadline));
    let n = notes(&d);
    assert!(
        n.len() == 1 && n[0].contains("acknowledged by slack:U1, so it stays open"),
        "{n:?}"
    );
    assert_eq!(d.incident.unwrap().status, Status::Acknowledged);

    // Acknowledged during the quiet period: the timer leaves it open, and says so.
    let inc = cleared();
    let acked = cmd(&inc, "U1", Command::Ack(inc.id), 60)
        .unwrap()
        .incident
        .unwrap();
    let d = fire(acked, TimerKind::ResolveAfterClear, 330, &cfg());
    assert_eq!(d.incident.clone().unwrap().status, Status::Acknowledged);
    assert!(notes(&d)[0].contains("stays open until resolved by hand"));
    assert!(matches!(
        d.events[..],
        [TimelineEvent {
            kind: EventKind::Note { .. },
            ..
        }]
    ));
}

#[test]
fn escalation_timers_firing_after_the_clear_do_nothing() {
    for kind in [
        TimerKind::AckDeadline,
        TimerKind::RepairDeadline,
        TimerKind::ApprovalExpiry,
    ] {
        // While the alert fires, each of them escalates…
        let firing = fire(open("agent deadlock", "critical"), kind, 1000, &cfg());
        assert!(
            firing
                .events
                .iter()
                .any(|e| matches!(e.kind, EventKind::Escalated { .. })),
            "{kind:?}"
        );
        // …once it cleared, none does.
        let d = fire(cleared(), kind, 1000, &cfg());
        assert!(
            d.events.is_empty() && d.effects.is_empty(),
            "{kind:?}: {d:?}"
        );
        assert_eq!(d.incident.unwrap().status, Status::Open);
    }
}

#[test]
fn an_action_in_flight_postpones_the_resolve() {
    let inc = cleared();
    let d = cmd(&inc, "U1", Command::Approve(inc.id, "restart".into()), 60).unwrap();
    let running = d.incident.unwrap();
    assert_eq!(running.status, Status::Remediating);
    let d = fire(running, TimerKind::ResolveAfterClear, 330, &cfg());
    assert_eq!(d.incident.clone().unwrap().status, Status::Remediating);
    assert_eq!(timers(&d), [(TimerKind::ResolveAfterClear, 330 + 300)]);
    assert!(notes(&d)[0].contains("`restart` is still running"));
}

#[test]
fn quiet_period_settings_apply_per_severity_and_playbook() {
    // P1 with its own quiet period; a playbook that never resolves on clear.
    let text = format!("{CFG}\n[severity.P1]\nresolve_after_clear_seconds = 60\n").replace(
        "kinds = [\"orchestration_failure\"]",
        "kinds = [\"orchestration_failure\"]\nresolve_after_clear_seconds = 0",
    );
    let never = Config::from_toml(&text, &|_| None).unwrap();
    let d = handle(
        Some(open("agent deadlock", "critical")),
        Input::Alert(alert("agent deadlock", "critical", AlertStatus::Resolved)),
        &never,
        ctx(30),
    )
    .unwrap();
    assert!(timers(&d).is_empty());
    assert!(notes(&d)[0].contains("Resolve the incident when you are satisfied"));
    assert_eq!(disarmed(&d).len(), 3, "escalation stops all the same");

    let text = format!("{CFG}\n[severity.P1]\nresolve_after_clear_seconds = 60\n");
    let p1 = Config::from_toml(&text, &|_| None).unwrap();
    let d = handle(
        Some(open("agent deadlock", "critical")),
        Input::Alert(alert("agent deadlock", "critical", AlertStatus::Resolved)),
        &p1,
        ctx(30),
    )
    .unwrap();
    assert_eq!(timers(&d), [(TimerKind::ResolveAfterClear, 90)]);
}

#[test]
fn an_incident_reopened_and_resolved_again_counts_once_for_recurrence() {
    let (resolved, past) = auto_resolved();
    let again = PastIncident {
        resolved_at: past.resolved_at + Duration::seconds(1000),
        ..past.clone()
    };
    let history = [past, again];
    let c = Ctx {
        history: &history,
        recent: Some(&resolved),
        next_id: IncidentId(2),
        ..ctx(5000)
    };
    let d = refire(None, c);
    assert!(d.created);
    let r = d.incident.unwrap().recurrence.unwrap();
    assert_eq!((r.previous, r.last), (1, IncidentId(1)));
}
