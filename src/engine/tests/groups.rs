//! Incidents are groups of related alerts: the pods of one Alertmanager group are one incident,
//! and the clear logic starts only once every alert of the group has cleared.

use super::*;
use crate::domain::alert::fingerprint_labels;
use crate::domain::incident::MAX_GROUP_MEMBERS;

/// One pod's alert of an Alertmanager group (`group_by: [alertname]`).
fn pod(name: &str, status: AlertStatus) -> Alert {
    let labels: std::collections::BTreeMap<String, String> = [
        ("alertname", "PodCrashLooping"),
        ("namespace", "prod"),
        ("pod", name),
        ("severity", "critical"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Alert {
        source: AlertSource::Alertmanager,
        fingerprint: fingerprint_labels(&labels),
        status,
        title: format!("PodCrashLooping ({name})"),
        description: None,
        labels,
        annotations: Default::default(),
        starts_at: None,
        ends_at: None,
        links: vec![],
        origin: None,
        group_labels: [("alertname".to_string(), "PodCrashLooping".to_string())]
            .into_iter()
            .collect(),
    }
}

fn send(inc: Option<Incident>, a: Alert, secs: i64) -> Decision {
    handle(inc, Input::Alert(a), &cfg(), ctx(secs)).unwrap()
}

fn counts(inc: &Incident) -> (usize, usize) {
    let g = inc.group.as_ref().expect("a grouped incident");
    (g.count(AlertStatus::Firing), g.count(AlertStatus::Resolved))
}

/// INC-1 with pods a and b firing.
fn two_pods() -> Incident {
    let first = send(None, pod("a", AlertStatus::Firing), 0);
    assert!(first.created);
    let second = send(first.incident, pod("b", AlertStatus::Firing), 10);
    assert!(
        !second.created,
        "the second pod joins the first one's incident"
    );
    second.incident.unwrap()
}

#[test]
fn two_pods_of_one_group_are_one_incident_with_two_firing() {
    let a = pod("a", AlertStatus::Firing);
    let b = pod("b", AlertStatus::Firing);
    assert_ne!(a.fingerprint, b.fingerprint);
    let by = &cfg().engine.group_by;
    assert_eq!(a.group_key(by), b.group_key(by));
    let inc = two_pods();
    assert_eq!(inc.id, IncidentId(1));
    assert_eq!(inc.key(), a.group_key(by));
    assert_eq!(counts(&inc), (2, 0));
    assert_eq!(inc.alert_status, AlertStatus::Firing);
    let card = card(&inc, &cfg());
    assert_eq!(
        card.alerts.as_deref(),
        Some("2 firing, 0 resolved: pod=b (firing), pod=a (firing)")
    );
    // The same pod again is a repeat, not a third member.
    let d = send(Some(inc), pod("a", AlertStatus::Firing), 20);
    assert_eq!(counts(d.incident.as_ref().unwrap()), (2, 0));
}

#[test]
fn one_pod_clearing_keeps_the_incident_open_and_escalating() {
    let d = send(Some(two_pods()), pod("a", AlertStatus::Resolved), 30);
    let inc = d.incident.clone().unwrap();
    assert_eq!(counts(&inc), (1, 1));
    assert_eq!(inc.status, Status::Open);
    assert_eq!(inc.alert_status, AlertStatus::Firing);
    // No clear logic: nothing disarmed, no quiet period, no note, no timeline entry.
    assert!(
        !d.effects.iter().any(|e| matches!(
            e,
            Effect::DisarmTimer(_)
                | Effect::ArmTimer(Timer {
                    kind: TimerKind::ResolveAfterClear,
                    ..
                })
                | Effect::Chat(ChatBody::Note { .. })
        )),
        "{:?}",
        d.effects
    );
    assert!(d.events.is_empty(), "{:?}", d.events);
    assert_eq!(
        card(&inc, &cfg()).alerts.as_deref(),
        Some("1 firing, 1 resolved: pod=a (resolved), pod=b (firing)")
    );
    // The escalation timers still do their job.
    let esc = fire(inc, TimerKind::AckDeadline, 60, &cfg());
    assert!(esc
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Escalated { .. })));
}

#[test]
fn the_clear_logic_starts_when_every_pod_has_cleared() {
    let one = send(Some(two_pods()), pod("a", AlertStatus::Resolved), 30)
        .incident
        .unwrap();
    let d = send(Some(one), pod("b", AlertStatus::Resolved), 40);
    let inc = d.incident.clone().unwrap();
    assert_eq!(counts(&inc), (0, 2));
    assert_eq!(inc.alert_status, AlertStatus::Resolved);
    assert!(d
        .effects
        .contains(&Effect::DisarmTimer(TimerKind::AckDeadline)));
    assert_eq!(timers(&d), [(TimerKind::ResolveAfterClear, 40 + 300)]);
    assert!(matches!(
        d.events[..],
        [TimelineEvent {
            kind: EventKind::AlertResolved,
            ..
        }]
    ));
    // A pod firing again: the group fires again, the quiet period is off.
    let d = send(Some(inc), pod("b", AlertStatus::Firing), 50);
    let inc = d.incident.unwrap();
    assert_eq!(counts(&inc), (1, 1));
    assert_eq!(inc.alert_status, AlertStatus::Firing);
    assert!(d
        .effects
        .contains(&Effect::DisarmTimer(TimerKind::ResolveAfterClear)));
}

#[test]
fn a_huge_group_stays_bounded_and_is_never_clear_by_itself() {
    let mut inc = send(None, pod("p0", AlertStatus::Firing), 0).incident;
    for i in 1..MAX_GROUP_MEMBERS + 20 {
        inc = send(inc, pod(&format!("p{i}"), AlertStatus::Firing), 1).incident;
    }
    let inc = inc.unwrap();
    let g = inc.group.as_ref().unwrap();
    assert_eq!(g.members.len(), MAX_GROUP_MEMBERS);
    assert_eq!(g.untracked, 20);
    let line = card(&inc, &cfg()).alerts.unwrap();
    assert!(
        line.starts_with(&format!("{} firing, 0 resolved: ", MAX_GROUP_MEMBERS + 20)),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(" and {} more", MAX_GROUP_MEMBERS + 20 - 5)),
        "{line}"
    );
    // Every tracked pod clears: the untracked ones may still fire, so no quiet period.
    let mut inc = Some(inc);
    for i in 0..MAX_GROUP_MEMBERS {
        inc = send(inc, pod(&format!("p{i}"), AlertStatus::Resolved), 2).incident;
    }
    let inc = inc.unwrap();
    assert_eq!(inc.alert_status, AlertStatus::Firing);
    assert_eq!(inc.status, Status::Open);
}
