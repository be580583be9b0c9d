//! Storm threads: during a storm, new P2/P3 incidents are summarized on one card per source
//! (the first one's, whose thread is the storm thread) instead of a card and thread each; one
//! that needs a person gets its own; the storm ends by itself with one note.

use std::collections::HashMap;

use super::writes::{with, TestView};
use super::*;
use crate::domain::incident::StormMember;

/// 25 incidents from Alertmanager opened in the last 30 s (at 600 s): a storm (more than 20
/// within 60 s), with `thread` as its summary's incident if it has one.
fn storm_view(thread: Option<IncidentId>) -> TestView {
    TestView {
        opened: vec![("alertmanager", t0() + Duration::seconds(570)); 25],
        storm_threads: thread
            .map(|t| HashMap::from([("alertmanager", t)]))
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn storm_alert(title: &str, sev: &str, fp: &str) -> Input {
    let mut a = alert(title, sev, AlertStatus::Firing);
    a.fingerprint = fp.into();
    Input::Alert(a)
}

fn opened_in(view: &TestView, input: Input, id: u64) -> Decision {
    let ctx = Ctx {
        next_id: IncidentId(id),
        ..with(view, 600)
    };
    handle(None, input, &cfg(), ctx).unwrap()
}

fn timers(d: &Decision) -> Vec<(TimerKind, DateTime<Utc>)> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::ArmTimer(t) => Some((t.kind, t.at)),
            _ => None,
        })
        .collect()
}

/// The storm's first P2 incident (INC-1) and a later one (INC-2) summarized on its card.
fn lead_and_member() -> (Incident, Incident, Decision) {
    let lead = opened_in(
        &storm_view(None),
        storm_alert("API rate limit", "warning", "a"),
        1,
    )
    .incident
    .unwrap();
    let d = opened_in(
        &storm_view(Some(IncidentId(1))),
        storm_alert("Payments API rate limit", "warning", "b"),
        2,
    );
    (lead, d.incident.clone().unwrap(), d)
}

#[test]
fn the_first_incident_of_a_storm_posts_the_storm_summary_card() {
    let d = opened_in(
        &storm_view(None),
        storm_alert("API rate limit", "warning", "a"),
        1,
    );
    let inc = d.incident.clone().unwrap();
    assert_eq!(inc.severity, Severity::P2);
    // Its own card, which is the storm summary; its thread is the storm thread.
    assert_eq!(chats(&d), [&ChatBody::RenderCard { post: true }]);
    assert_eq!(inc.storm_thread, None);
    let summary = inc.storm_summary.clone().expect("a storm summary");
    assert_eq!(summary.count, 1);
    assert_eq!(summary.source, "alertmanager");
    assert_eq!(
        d.storm_threads,
        [("alertmanager".to_string(), Some(inc.id))]
    );
    assert!(d.events.iter().any(|e| e.kind
        == EventKind::StormSummarized {
            storm_thread: inc.id
        }));
    // The storm's end is checked a window later.
    let lift = t0() + Duration::seconds(660);
    assert!(
        timers(&d).contains(&(TimerKind::StormLift, lift)),
        "{:?}",
        timers(&d)
    );
    let c = card(&inc, &cfg());
    let text = c.storm_summary.expect("the card summarizes the storm");
    assert!(text.contains("1 new incidents from alertmanager"), "{text}");
    assert!(text.contains("INC-1 API rate limit"), "{text}");
    // The storm guard holds its automatic action, as before.
    assert_eq!(inc.storm, Some(26));
    assert!(executes(&d).is_empty());
}

#[test]
fn later_incidents_of_the_storm_join_the_summary_without_a_card_of_their_own() {
    let (lead, member, d) = lead_and_member();
    assert_eq!(member.storm_thread, Some(lead.id));
    assert!(chats(&d).is_empty(), "no card, no note: {:?}", chats(&d));
    assert!(d.storm_threads.is_empty());
    assert!(d.events.iter().any(|e| e.kind
        == EventKind::StormSummarized {
            storm_thread: lead.id
        }));
    // It joins the summary in the same commit.
    let member_of = StormMember {
        id: member.id,
        title: "Payments API rate limit".into(),
        kind: member.kind.clone(),
        severity: Severity::P2,
    };
    match d.then.as_slice() {
        [Input::StormJoined { lead: l, member: m }] => {
            assert_eq!((*l, m), (lead.id, &member_of));
        }
        other => panic!("{other:?}"),
    }
    // The summary's incident counts it and edits its card (coalesced like repeats: the card was
    // posted at 600 s, the edit waits for the window).
    let view = storm_view(Some(lead.id));
    let joined = handle(
        Some(lead.clone()),
        Input::StormJoined {
            lead: lead.id,
            member: member_of.clone(),
        },
        &cfg(),
        with(&view, 601),
    )
    .unwrap();
    let updated = joined.incident.clone().unwrap();
    assert_eq!(updated.storm_summary.as_ref().unwrap().count, 2);
    assert!(updated.card_dirty);
    assert!(timers(&joined).contains(&(TimerKind::CardFlush, t0() + Duration::seconds(605))));
    assert!(timers(&joined).contains(&(TimerKind::StormLift, t0() + Duration::seconds(661))));
    let text = card(&updated, &cfg()).storm_summary.unwrap();
    assert!(text.contains("2 new incidents"), "{text}");
    assert!(
        text.contains("INC-2 Payments API rate limit; INC-1 API rate limit"),
        "{text}"
    );
    assert!(text.contains("P2 2"), "{text}");
    // Joining twice counts once.
    let again = handle(
        Some(updated),
        Input::StormJoined {
            lead: lead.id,
            member: member_of,
        },
        &cfg(),
        with(&view, 700),
    )
    .unwrap();
    assert_eq!(again.incident.unwrap().storm_summary.unwrap().count, 2);
}

#[test]
fn a_summary_names_the_newest_ten_and_counts_the_rest() {
    let mut s = crate::domain::incident::StormSummary::new("alertmanager", t0());
    for i in 1..=25 {
        s.add(&StormMember {
            id: IncidentId(i),
            title: format!("Alert {i}"),
            kind: if i % 5 == 0 {
                "model_output_failure"
            } else {
                "tool_api_failure"
            }
            .into(),
            severity: Severity::P3,
        });
    }
    assert_eq!(s.count, 25);
    assert_eq!(s.newest.len(), 10);
    let text = crate::domain::card::storm_summary_line(&s);
    assert!(text.contains("INC-25 Alert 25; INC-24"), "{text}");
    assert!(text.ends_with("INC-16 Alert 16 and 15 more"), "{text}");
    assert!(
        text.contains("Kinds: tool_api_failure 20, model_output_failure 5"),
        "{text}"
    );
    assert!(text.contains("Severities: P3 25"), "{text}");
}

#[test]
fn p0_and_p1_incidents_keep_their_own_card_during_a_storm() {
    let view = storm_view(Some(IncidentId(1)));
    let d = opened_in(&view, storm_alert("API rate limit", "critical", "c"), 3);
    let inc = d.incident.clone().unwrap();
    assert!(inc.severity <= Severity::P1, "{:?}", inc.severity);
    assert_eq!(chats(&d), [&ChatBody::RenderCard { post: true }]);
    assert_eq!(inc.storm_thread, None);
    assert_eq!(inc.storm_summary, None);
    assert!(d.then.is_empty());
}

#[test]
fn no_storm_no_summary() {
    let view = TestView {
        opened: vec![("alertmanager", t0() + Duration::seconds(570)); 5],
        ..Default::default()
    };
    let d = opened_in(&view, storm_alert("API rate limit", "warning", "a"), 1);
    let inc = d.incident.unwrap();
    assert_eq!((inc.storm_thread, inc.storm_summary), (None, None));
    assert!(d.storm_threads.is_empty() && d.then.is_empty());
}

#[test]
fn a_summarized_incident_gets_its_own_card_when_it_needs_a_person() {
    let (_, member, _) = lead_and_member();
    // Its alert clears: timeline only, nothing in chat.
    let mut clear = alert("Payments API rate limit", "warning", AlertStatus::Resolved);
    clear.fingerprint = "b".into();
    let d = handle(Some(member.clone()), Input::Alert(clear), &cfg(), ctx(650)).unwrap();
    assert!(chats(&d).is_empty(), "{:?}", chats(&d));
    assert!(d.incident.unwrap().storm_thread.is_some());

    // A person acknowledges it: its card is posted first, then what the ack says.
    let d = cmd(&member, "U1", Command::Ack(member.id), 650).unwrap();
    let inc = d.incident.clone().unwrap();
    assert_eq!(inc.storm_thread, None);
    assert_eq!(chats(&d)[0], &ChatBody::RenderCard { post: true });
    assert!(d.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::StormOwnThread { reason } if reason == "a person acted on it"
    )));
    // From then on it is an incident like any other.
    let d = cmd(&inc, "U1", Command::Note(inc.id, "looking".into()), 660).unwrap();
    assert!(!chats(&d).is_empty());

    // Not acknowledged within its detection target: it escalates in a thread of its own.
    let due = Timer {
        incident: member.id,
        kind: TimerKind::AckDeadline,
        at: t0() + Duration::seconds(900),
    };
    let d = handle(Some(member.clone()), Input::Timer(due), &cfg(), ctx(900)).unwrap();
    assert_eq!(d.incident.as_ref().unwrap().storm_thread, None);
    assert_eq!(chats(&d)[0], &ChatBody::RenderCard { post: true });
    assert!(d.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::StormOwnThread { reason } if reason == "it escalates"
    )));
}

#[test]
fn the_storm_ends_by_itself_with_one_note() {
    let (lead, _, _) = lead_and_member();
    let due = |secs: i64| Timer {
        incident: lead.id,
        kind: TimerKind::StormLift,
        at: t0() + Duration::seconds(secs),
    };
    // Still storming at 620 s (25 openings at 570 s): checked again a window later.
    let view = storm_view(Some(lead.id));
    let d = handle(
        Some(lead.clone()),
        Input::Timer(due(620)),
        &cfg(),
        with(&view, 620),
    )
    .unwrap();
    assert!(chats(&d).is_empty());
    assert_eq!(
        timers(&d),
        [(TimerKind::StormLift, t0() + Duration::seconds(680))]
    );
    assert!(d.storm_threads.is_empty());
    // At 640 s the openings are out of the window: over. One note, the card says so, and the
    // source's next incidents get their own cards.
    let d = handle(
        Some(lead.clone()),
        Input::Timer(due(640)),
        &cfg(),
        with(&view, 640),
    )
    .unwrap();
    let inc = d.incident.clone().unwrap();
    assert_eq!(d.storm_threads, [("alertmanager".to_string(), None)]);
    let notes: Vec<&ChatBody> = chats(&d)
        .into_iter()
        .filter(|b| matches!(b, ChatBody::Note { .. }))
        .collect();
    assert_eq!(notes.len(), 1);
    assert!(format!("{notes:?}").contains("Storm over: 1 incidents from alertmanager"));
    assert!(chats(&d).contains(&&ChatBody::RenderCard { post: false }));
    assert!(d
        .events
        .iter()
        .any(|e| e.kind == EventKind::StormLifted { incidents: 1 }));
    let text = card(&inc, &cfg()).storm_summary.unwrap();
    assert!(text.starts_with("⛅ Storm over at 12:10:40 UTC"), "{text}");
    // A late check does nothing more.
    let d = handle(Some(inc), Input::Timer(due(700)), &cfg(), with(&view, 700)).unwrap();
    assert!(chats(&d).is_empty() && timers(&d).is_empty());
}

/// Evidence during a storm: the storm's summary incident asks Prometheus; the incidents that
/// join it do not (a storm of thousands would otherwise send thousands of query sets, one
/// incident at a time, to a Prometheus that is likely under the same load). A P1 in the storm
/// is not summarized and asks as usual, and so does a summarized one once it gets its own
/// thread.
#[test]
fn in_a_storm_only_the_summary_and_unsummarized_incidents_gather_evidence() {
    let text = format!(
        "[prometheus]\nurl = \"http://127.0.0.1:9\"\n{}",
        CFG.replace(
            "auto_resolve = true\n",
            "auto_resolve = true\n[[playbooks.evidence]]\nname = \"429 rate\"\nquery = 'sum(rate_429{service=\"{labels.service}\"})'\nabove = 5\n",
        )
    );
    let cfg = Config::from_toml(&text, &|_| None).unwrap();
    let asks = |d: &Decision| {
        d.effects
            .iter()
            .any(|e| matches!(e, Effect::GatherEvidence))
    };
    let open = |thread: Option<IncidentId>, sev: &str, fp: &str, id: u64| {
        let view = storm_view(thread);
        let ctx = Ctx {
            next_id: IncidentId(id),
            ..with(&view, 600)
        };
        handle(
            None,
            storm_alert("Payments API rate limit", sev, fp),
            &cfg,
            ctx,
        )
        .unwrap()
    };
    let lead = open(None, "warning", "a", 1);
    assert!(lead.incident.as_ref().unwrap().storm_summary.is_some());
    assert!(asks(&lead), "the storm's summary gathers evidence");
    let member = open(Some(IncidentId(1)), "warning", "b", 2);
    assert_eq!(
        member.incident.as_ref().unwrap().storm_thread,
        Some(IncidentId(1))
    );
    assert!(!asks(&member), "a summarized incident does not");
    // ...until it gets a card and thread of its own: a person acts on it.
    let member = member.incident.unwrap();
    let acked = handle(
        Some(member.clone()),
        Input::Command {
            actor: user("U1"),
            command: Command::Ack(member.id),
        },
        &cfg,
        ctx(650),
    )
    .unwrap();
    assert!(acked.incident.as_ref().unwrap().storm_thread.is_none());
    assert!(asks(&acked), "with its own thread, it gathers its evidence");
    let p1 = open(Some(IncidentId(1)), "critical", "c", 3);
    assert!(p1.incident.as_ref().unwrap().storm_thread.is_none());
    assert!(asks(&p1), "an incident with its own card does");
}
