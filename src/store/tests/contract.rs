//! The `Store` contract: one suite, run against both implementations (sled in a temporary
//! directory, PostgreSQL in a fresh database of the test binary's throw-away cluster, see
//! [`crate::store::pgtest`]). A backend's own tests (sled's record layout, its manifest) stay
//! beside it.

use super::*;
use crate::store::export::Portable;
use crate::store::pg::PgStore;

/// A store that can be opened again (a restart).
pub(super) trait Backend {
    fn open(&self) -> Box<dyn Portable>;
}

struct Sled(tempfile::TempDir);

impl Sled {
    fn new() -> Sled {
        Sled(tempfile::tempdir().unwrap())
    }
}

impl Backend for Sled {
    fn open(&self) -> Box<dyn Portable> {
        Box::new(SledStore::open(self.0.path()).unwrap())
    }
}

struct Pg(String);

impl Pg {
    /// `None` without PostgreSQL (never under CI: see `pgtest`).
    fn new() -> Option<Pg> {
        crate::store::pgtest::database().map(Pg)
    }
}

impl Backend for Pg {
    fn open(&self) -> Box<dyn Portable> {
        Box::new(PgStore::open(&self.0, None).unwrap())
    }
}

/// Runs each named contract test against both backends.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sled_backend {
            $( #[test] fn $name() { super::$name(&super::Sled::new()) } )*
        }
        mod pg_backend {
            $( #[test] fn $name() {
                let Some(b) = super::Pg::new() else { return };
                super::$name(&b)
            } )*
        }
    };
}

contract!(
    listing_filters_limits_and_reads_every_incident_in_order,
    chat_cursors_and_sequence_numbers_survive_a_reopen,
    commit_is_atomic_across_trees_and_survives_reopen,
    outbox_completion_records_threads_and_dead_letters_are_kept,
    a_thread_that_is_its_own_channel_is_found_by_that_channel,
    recovery_marks_started_executions_interrupted_only,
    open_and_history_fingerprints_list_what_the_writer_caches,
    the_outbox_length_follows_commits_completions_and_dead_letters,
    the_quiet_period_timer_is_stored_under_a_stable_name_and_survives_a_reopen,
    timelines_fingerprints_and_timers_read_the_same_folded_or_not_and_after_a_reopen,
);

/// What the reads return: every timeline of incidents 1..=5, the open fingerprints, the timers.
type View = (Vec<Vec<String>>, Vec<(String, IncidentId)>, Vec<Timer>);

fn view(s: &dyn Portable) -> View {
    (
        (1..=5)
            .map(|i| texts(&s.timeline(IncidentId(i)).unwrap()))
            .collect(),
        s.open_fingerprints().unwrap(),
        s.timers().unwrap(),
    )
}

/// A backend may keep a commit's events, fingerprint and timer changes in per-commit records
/// first and fold them later (`Store::fold`): every read is the same before, during and after
/// the fold, and after a reopen, and later writes of the same keys win.
fn timelines_fingerprints_and_timers_read_the_same_folded_or_not_and_after_a_reopen(
    b: &dyn Backend,
) {
    let ack = |i, s| timer(i, TimerKind::AckDeadline, s);
    let first = WriteSet {
        incidents: (1..=3).map(|i| incident(i, &format!("fp{i}"))).collect(),
        events: vec![
            (IncidentId(1), 0, note("1/0")),
            (IncidentId(2), 0, note("2/0")),
            (IncidentId(1), 1, note("1/1")),
        ],
        fingerprints: vec![
            ("fp1".into(), Some(IncidentId(1))),
            ("fp2".into(), Some(IncidentId(2))),
            ("fp3".into(), Some(IncidentId(3))),
        ],
        timers: vec![
            (IncidentId(1), vec![ack(1, 60)]),
            (IncidentId(2), vec![ack(2, 60)]),
        ],
        next_id: Some(4),
        ..Default::default()
    };
    let second = WriteSet {
        events: vec![
            (IncidentId(3), 0, note("3/0")),
            (IncidentId(1), 2, note("1/2")),
            (IncidentId(2), 1, note("2/1")),
        ],
        fingerprints: vec![("fp2".into(), None), ("fp9".into(), Some(IncidentId(3)))],
        timers: vec![
            (IncidentId(2), vec![]),
            (IncidentId(3), vec![ack(3, 30), ack(3, 90)]),
        ],
        ..Default::default()
    };
    let expected: View = (
        vec![
            vec!["1/0".into(), "1/1".into(), "1/2".into()],
            vec!["2/0".into(), "2/1".into()],
            vec!["3/0".into()],
            vec![],
            vec![],
        ],
        vec![
            ("fp1".into(), IncidentId(1)),
            ("fp3".into(), IncidentId(3)),
            ("fp9".into(), IncidentId(3)),
        ],
        vec![ack(1, 60), ack(3, 30), ack(3, 90)],
    );
    {
        let s = b.open();
        s.commit(&first).unwrap();
        s.commit(&second).unwrap();
        s.flush().unwrap();
        assert_eq!(view(&*s), expected, "as committed");
    }
    let s = b.open();
    assert_eq!(view(&*s), expected, "reopened");
    let before = s.unfolded();
    let mut steps = 0;
    loop {
        let moved = s.fold(2).unwrap();
        if moved == 0 {
            break;
        }
        steps += 1;
        assert!(steps < 100, "the fold ends");
        assert_eq!(view(&*s), expected, "after fold step {steps}");
    }
    assert_eq!(s.unfolded(), 0, "all folded ({before} before)");
    // Later writes go after the folded state.
    s.commit(&WriteSet {
        events: vec![
            (IncidentId(2), 2, note("2/2")),
            (IncidentId(4), 0, note("4/0")),
        ],
        fingerprints: vec![("fp2".into(), Some(IncidentId(4))), ("fp1".into(), None)],
        timers: vec![(IncidentId(1), vec![]), (IncidentId(4), vec![ack(4, 10)])],
        ..Default::default()
    })
    .unwrap();
    s.flush().unwrap();
    let later: View = (
        vec![
            vec!["1/0".into(), "1/1".into(), "1/2".into()],
            vec!["2/0".into(), "2/1".into(), "2/2".into()],
            vec!["3/0".into()],
            vec!["4/0".into()],
            vec![],
        ],
        vec![
            ("fp2".into(), IncidentId(4)),
            ("fp3".into(), IncidentId(3)),
            ("fp9".into(), IncidentId(3)),
        ],
        vec![ack(3, 30), ack(3, 90), ack(4, 10)],
    );
    assert_eq!(view(&*s), later, "after later writes");
    drop(s);
    let s = b.open();
    assert_eq!(view(&*s), later, "reopened at the end");
    while s.fold(1000).unwrap() > 0 {}
    assert_eq!(view(&*s), later, "folded at the end");
}

fn commit_is_atomic_across_trees_and_survives_reopen(b: &dyn Backend) {
    {
        let s = b.open();
        assert_eq!(s.next_incident_id().unwrap(), 1);
        let w = WriteSet {
            incidents: vec![incident(1, "fpA"), incident(2, "fpB")],
            events: vec![(
                IncidentId(1),
                0,
                TimelineEvent {
                    at: Utc::now(),
                    actor: Actor::system(),
                    kind: EventKind::Note { text: "hi".into() },
                },
            )],
            fingerprints: vec![
                ("fpA".into(), Some(IncidentId(1))),
                ("fpB".into(), Some(IncidentId(2))),
                ("fpB".into(), None),
            ],
            outbox: vec![
                entry(5, "slack", 1),
                entry(3, "slack", 2),
                entry(4, "discord", 1),
            ],
            timers: vec![],
            executions: vec![],
            history: vec![],
            next_id: Some(3),
        };
        s.commit(&w).unwrap();
        s.flush().unwrap();
    }
    let s = b.open();
    assert_eq!(s.next_incident_id().unwrap(), 3);
    assert_eq!(open_for(&*s, "fpA"), Some(IncidentId(1)));
    assert_eq!(open_for(&*s, "fpB"), None, "later delete wins");
    assert_eq!(
        s.get_incident(IncidentId(2)).unwrap().unwrap().fingerprint,
        "fpB"
    );
    assert_eq!(s.timeline(IncidentId(1)).unwrap().len(), 1);
    assert!(s.timeline(IncidentId(2)).unwrap().is_empty());
    let slack: Vec<u64> = s
        .outbox_pending("slack", 10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(slack, [3, 5], "outbox in sequence order, per sink");
    assert_eq!(s.outbox_pending("discord", 10).unwrap().len(), 1);
    let list = s
        .list_incidents(&IncidentFilter {
            active: Some(true),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        list.iter().map(|i| i.id.0).collect::<Vec<_>>(),
        [2, 1],
        "newest first"
    );
    let mut resolved = incident(3, "fpC");
    resolved.status = Status::Resolved;
    s.commit(&WriteSet {
        incidents: vec![resolved],
        ..Default::default()
    })
    .unwrap();
    let list = s
        .list_incidents(&IncidentFilter {
            active: Some(false),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(list.len(), 1);
}

fn outbox_completion_records_threads_and_dead_letters_are_kept(b: &dyn Backend) {
    let s = b.open();
    let e1 = entry(1, "slack", 7);
    let e2 = entry(2, "slack", 7);
    s.commit(&WriteSet {
        outbox: vec![e1.clone(), e2.clone()],
        ..Default::default()
    })
    .unwrap();
    let t = ThreadRef {
        channel: "C1".into(),
        message_id: "123.456".into(),
    };
    s.outbox_complete(&e1, Some(&t)).unwrap();
    assert_eq!(s.thread_for("slack", IncidentId(7)).unwrap(), Some(t));
    assert_eq!(s.thread_for("discord", IncidentId(7)).unwrap(), None);
    assert_eq!(
        s.incident_for_thread("slack", "C1", "123.456").unwrap(),
        Some(IncidentId(7))
    );
    assert_eq!(s.incident_for_thread("slack", "C1", "999").unwrap(), None);
    s.outbox_dead_letter(&e2, "invalid_blocks").unwrap();
    assert_eq!(s.outbox_len(), 0);
    assert_eq!(s.export_dead_letters(false, &mut vec![]).unwrap().len(), 1);
}

fn a_thread_that_is_its_own_channel_is_found_by_that_channel(b: &dyn Backend) {
    // Discord: the thread is a channel; the card may be another message inside it.
    let s = b.open();
    let e = entry(1, "discord", 9);
    s.commit(&WriteSet {
        outbox: vec![e.clone()],
        ..Default::default()
    })
    .unwrap();
    let t = ThreadRef {
        channel: "1001".into(),
        message_id: "1002".into(),
    };
    s.outbox_complete(&e, Some(&t)).unwrap();
    for (channel, message) in [("1001", "1001"), ("1001", "1002")] {
        assert_eq!(
            s.incident_for_thread("discord", channel, message).unwrap(),
            Some(IncidentId(9))
        );
    }
    assert_eq!(
        s.incident_for_thread("slack", "1001", "1001").unwrap(),
        None
    );
}

fn recovery_marks_started_executions_interrupted_only(b: &dyn Backend) {
    let now = Utc::now();
    {
        let s = b.open();
        let x = |key: &str, status| Execution {
            key: key.into(),
            incident: IncidentId(1),
            action: key.into(),
            status,
            created_at: now,
            updated_at: now,
        };
        s.commit(&WriteSet {
            executions: vec![
                x("INC-1:a", ExecutionStatus::Started),
                x("INC-1:b", ExecutionStatus::Succeeded),
                x("INC-1:c", ExecutionStatus::Queued),
            ],
            timers: vec![(
                IncidentId(1),
                vec![Timer {
                    incident: IncidentId(1),
                    kind: TimerKind::CardFlush,
                    at: now,
                }],
            )],
            ..Default::default()
        })
        .unwrap();
        s.flush().unwrap();
    }
    let s = b.open();
    let r = s.recover(now).unwrap();
    assert_eq!(r.interrupted.len(), 1);
    assert_eq!(r.interrupted[0].key, "INC-1:a");
    assert_eq!(s.timers().unwrap().len(), 1, "timers survive the restart");
    assert_eq!(r.queued.len(), 1);
    assert_eq!(r.queued[0].key, "INC-1:c");
    let status = |k: &str| s.execution(k).unwrap().unwrap().status;
    assert_eq!(status("INC-1:a"), ExecutionStatus::Interrupted);
    assert_eq!(status("INC-1:b"), ExecutionStatus::Succeeded);
    assert_eq!(status("INC-1:c"), ExecutionStatus::Queued);
    assert_eq!(s.executions(IncidentId(1)).unwrap().len(), 3);
    assert!(s.executions(IncidentId(10)).unwrap().is_empty());
    // Nothing left to interrupt the second time.
    assert!(s.recover(now).unwrap().interrupted.is_empty());
}

fn open_and_history_fingerprints_list_what_the_writer_caches(b: &dyn Backend) {
    let s = b.open();
    let past = |id: u64| PastIncident {
        id: IncidentId(id),
        resolved_at: Utc::now(),
        fixed_by: None,
    };
    s.commit(&WriteSet {
        fingerprints: vec![
            ("fpA".into(), Some(IncidentId(1))),
            ("fpB".into(), Some(IncidentId(2))),
            ("fpB".into(), None),
            ("fpC".into(), Some(IncidentId(7))),
        ],
        history: vec![
            ("fpB".into(), past(2)),
            ("fpB".into(), past(5)),
            ("fp\u{e9}".into(), past(3)),
        ],
        ..Default::default()
    })
    .unwrap();
    let mut open = s.open_fingerprints().unwrap();
    open.sort();
    assert_eq!(
        open,
        [("fpA".into(), IncidentId(1)), ("fpC".into(), IncidentId(7))]
    );
    assert_eq!(s.history_fingerprints().unwrap(), ["fpB", "fp\u{e9}"]);
}

fn the_outbox_length_follows_commits_completions_and_dead_letters(b: &dyn Backend) {
    {
        let s = b.open();
        s.commit(&WriteSet {
            outbox: vec![
                entry(1, "slack", 1),
                entry(2, "slack", 1),
                entry(3, "discord", 2),
            ],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.outbox_len(), 3);
        s.outbox_complete(&entry(1, "slack", 1), None).unwrap();
        // Completing twice (a redelivery) does not count twice.
        s.outbox_complete(&entry(1, "slack", 1), None).unwrap();
        s.outbox_dead_letter(&entry(3, "discord", 2), "gone")
            .unwrap();
        assert_eq!(s.outbox_len(), 1);
        s.flush().unwrap();
    }
    let s = b.open();
    assert_eq!(s.outbox_len(), 1, "counted again on open");
    assert_eq!(s.recover(Utc::now()).unwrap().outbox_pending, 1);
}

fn the_quiet_period_timer_is_stored_under_a_stable_name_and_survives_a_reopen(b: &dyn Backend) {
    let clear = timer(5, TimerKind::ResolveAfterClear, 300);
    // The stored name is part of the format: renaming the variant would strand stored timers.
    assert_eq!(
        serde_json::to_value(clear).unwrap()["kind"],
        "resolve_after_clear"
    );
    assert_eq!(TimerKind::ResolveAfterClear.as_str(), "resolve_after_clear");
    {
        let s = b.open();
        s.commit(&WriteSet {
            timers: vec![(
                IncidentId(5),
                vec![timer(5, TimerKind::AckDeadline, 1), clear],
            )],
            ..Default::default()
        })
        .unwrap();
        s.flush().unwrap();
    }
    let s = b.open();
    assert_eq!(
        s.timers().unwrap(),
        [timer(5, TimerKind::AckDeadline, 1), clear]
    );
}

fn listing_filters_limits_and_reads_every_incident_in_order(b: &dyn Backend) {
    let s = b.open();
    let mut incidents: Vec<Incident> = (1..=1203).map(|n| incident(n, &format!("fp{n}"))).collect();
    for i in incidents.iter_mut().filter(|i| i.id.0 % 3 == 0) {
        i.status = Status::Resolved;
    }
    s.commit(&WriteSet {
        incidents,
        next_id: Some(1204),
        ..Default::default()
    })
    .unwrap();
    s.flush().unwrap();
    let ids = |f: IncidentFilter| -> Vec<u64> {
        s.list_incidents(&f)
            .unwrap()
            .iter()
            .map(|i| i.id.0)
            .collect()
    };
    assert_eq!(ids(IncidentFilter::default()).len(), 1203, "every page");
    assert_eq!(
        ids(IncidentFilter {
            limit: 3,
            ..Default::default()
        }),
        [1203, 1202, 1201],
        "newest first"
    );
    assert_eq!(
        ids(IncidentFilter {
            active: Some(false),
            limit: 2,
            ..Default::default()
        }),
        [1203, 1200]
    );
    assert_eq!(
        ids(IncidentFilter {
            active: Some(true),
            ..Default::default()
        })
        .len(),
        802
    );
    let mut seen = Vec::new();
    s.for_each_incident(&mut |i| {
        seen.push(i.id.0);
        seen.len() < 600
    })
    .unwrap();
    assert_eq!(seen.len(), 600, "stops when told");
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 600, "no incident twice");
    assert_eq!(s.next_incident_id().unwrap(), 1204);
}

fn chat_cursors_and_sequence_numbers_survive_a_reopen(b: &dyn Backend) {
    let last = {
        let s = b.open();
        assert_eq!(s.chat_cursor("slack:C1").unwrap(), None);
        s.set_chat_cursor("slack:C1", "1700000000.000100").unwrap();
        s.set_chat_cursor("slack:C1", "1700000000.000200").unwrap();
        s.set_chat_cursor("discord:9", "42").unwrap();
        let a = s.next_seq().unwrap();
        let b2 = s.next_seq().unwrap();
        assert!(b2 > a, "increasing");
        s.commit(&WriteSet {
            outbox: vec![entry(b2, "slack", 1)],
            ..Default::default()
        })
        .unwrap();
        s.flush().unwrap();
        b2
    };
    let s = b.open();
    assert_eq!(
        s.chat_cursor("slack:C1").unwrap().as_deref(),
        Some("1700000000.000200")
    );
    assert_eq!(s.chat_cursor("discord:9").unwrap().as_deref(), Some("42"));
    // A restarted store never gives a sequence number out again (idempotency keys).
    assert!(s.next_seq().unwrap() > last);
}
