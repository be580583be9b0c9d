use chrono::Utc;

use super::*;
use crate::domain::incident::{EventKind, Status};
use crate::domain::policy::Actor;
use crate::ports::{ChatBody, TimerKind};

mod contract;

fn incident(id: u64, fp: &str) -> Incident {
    let mut i: Incident = serde_json::from_value(serde_json::json!({
        "id": id, "fingerprint": fp, "title": "t", "source": "generic", "severity": "P2",
        "kind": "unclassified", "status": "open", "alert_status": "firing", "labels": {},
        "annotations": {}, "links": [], "opened_at": Utc::now(), "last_seen_at": Utc::now(),
        "alert_count": 1, "timeline_len": 0
    }))
    .unwrap();
    i.id = IncidentId(id);
    i
}

/// The open incident of a fingerprint, as the engine loads it at start (`open_fingerprints`).
fn open_for<S: Store + ?Sized>(s: &S, fp: &str) -> Option<IncidentId> {
    s.open_fingerprints()
        .unwrap()
        .into_iter()
        .find(|(f, _)| f == fp)
        .map(|(_, id)| id)
}

fn entry(seq: u64, sink: &str, id: u64) -> OutboxEntry {
    OutboxEntry {
        seq,
        sink: sink.into(),
        incident: IncidentId(id),
        body: ChatBody::Note {
            mentions: vec![],
            text: format!("n{seq}"),
        },
        created_at: Utc::now(),
    }
}

#[test]
fn refuses_a_store_from_another_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.meta
            .insert("schema_version", &99u64.to_be_bytes())
            .unwrap();
        s.flush().unwrap();
    }
    let e = SledStore::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("schema version Some(99)"), "{e}");
}

#[test]
fn a_schema_1_store_is_migrated_on_open_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Schema 1's layout, written by hand: one tree per kind of record.
        let db = sled::open(dir.path()).unwrap();
        let t = |n: &str| db.open_tree(n).unwrap();
        t("incidents")
            .insert(id_key(IncidentId(1)), enc(&incident(1, "fpA")))
            .unwrap();
        t("fingerprints")
            .insert("fpA", &id_key(IncidentId(1)))
            .unwrap();
        let at = Utc::now();
        for kind in [TimerKind::AckDeadline, TimerKind::RepairDeadline] {
            let timer = Timer {
                incident: IncidentId(1),
                kind,
                at,
            };
            t("timers")
                .insert(timer_key(IncidentId(1), kind), enc(&timer))
                .unwrap();
        }
        t("outbox")
            .insert(outbox_key("slack", 5), enc(&entry(5, "slack", 1)))
            .unwrap();
        let past = PastIncident {
            id: IncidentId(9),
            resolved_at: Utc::now(),
            fixed_by: Some("restart".into()),
        };
        let mut hk = sink_prefix("fpA");
        hk.extend_from_slice(&id_key(IncidentId(9)));
        t("history").insert(hk, enc(&past)).unwrap();
        t("meta")
            .insert("schema_version", &1u64.to_be_bytes())
            .unwrap();
        // One incident stored: the next id is 2 (a counter ahead of the incidents would be
        // a damaged store).
        t("meta").insert("next_id", &2u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    for _ in 0..2 {
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            s.get_incident(IncidentId(1)).unwrap().unwrap().fingerprint,
            "fpA"
        );
        assert_eq!(open_for(&s, "fpA"), Some(IncidentId(1)));
        assert_eq!(s.outbox_pending("slack", 10).unwrap()[0].seq, 5);
        assert_eq!(s.outbox_len(), 1);
        assert_eq!(s.next_incident_id().unwrap(), 2);
        assert_eq!(
            s.history("fpA").unwrap()[0].fixed_by.as_deref(),
            Some("restart")
        );
        assert_eq!(s.history_fingerprints().unwrap(), ["fpA"]);
        let mut kinds: Vec<_> = s.timers().unwrap().iter().map(|t| t.kind).collect();
        kinds.sort();
        assert_eq!(kinds, [TimerKind::AckDeadline, TimerKind::RepairDeadline]);
        let names = s.db().tree_names();
        assert!(
            !names.iter().any(|n| n == b"incidents".as_slice()),
            "old trees dropped"
        );
        assert_eq!(
            s.meta.get("schema_version").unwrap().as_deref(),
            Some(SCHEMA_VERSION.to_be_bytes().as_slice())
        );
    }
}

#[test]
fn a_held_lock_is_recognized_as_one_to_wait_for() {
    let dir = tempfile::tempdir().unwrap();
    let _holder = sled::open(dir.path()).unwrap();
    let e = sled::Config::new()
        .path(dir.path())
        .open()
        .expect_err("the lock is held");
    assert!(lock_held(&e), "{e:?}");
    assert!(!lock_held(&sled::Error::Unsupported("x".into())));
}

fn timer(id: u64, kind: TimerKind, secs: i64) -> Timer {
    Timer {
        incident: IncidentId(id),
        kind,
        at: chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
    }
}

/// What start-up reads: the open fingerprints and the armed timers.
fn startup_view(s: &SledStore) -> (Vec<(String, IncidentId)>, Vec<Timer>) {
    (s.open_fingerprints().unwrap(), s.timers().unwrap())
}

#[test]
fn fingerprint_and_timer_deltas_read_the_same_folded_or_not_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ack = |id| timer(id, TimerKind::AckDeadline, id as i64);
    let repair = |id| timer(id, TimerKind::RepairDeadline, 100 + id as i64);
    let expected = (
        vec![
            ("fp1".to_string(), IncidentId(1)),
            ("fp3".to_string(), IncidentId(3)),
            ("fp4".to_string(), IncidentId(40)),
        ],
        vec![repair(1), ack(3), repair(3)],
    );
    {
        let s = SledStore::open(dir.path()).unwrap();
        // Three group commits; later changes of a key override earlier ones, also within one.
        let commits = [
            WriteSet {
                fingerprints: vec![
                    ("fp1".into(), Some(IncidentId(1))),
                    ("fp2".into(), Some(IncidentId(2))),
                ],
                timers: vec![
                    (IncidentId(1), vec![ack(1), repair(1)]),
                    (IncidentId(2), vec![ack(2)]),
                ],
                ..Default::default()
            },
            WriteSet {
                fingerprints: vec![
                    ("fp3".into(), Some(IncidentId(3))),
                    ("fp2".into(), None),
                    ("fp4".into(), Some(IncidentId(4))),
                    ("fp4".into(), Some(IncidentId(40))),
                ],
                timers: vec![
                    (IncidentId(1), vec![repair(1)]),
                    (IncidentId(2), vec![]),
                    (IncidentId(3), vec![ack(3), repair(3)]),
                ],
                ..Default::default()
            },
            // A commit without fingerprint or timer changes writes no delta.
            WriteSet {
                incidents: vec![incident(1, "fp1")],
                next_id: Some(2),
                ..Default::default()
            },
        ];
        for w in &commits {
            s.commit(w).unwrap();
        }
        assert_eq!(s.unfolded(), 11);
        assert_eq!(s.deltas.count(), 2);
        assert_eq!(
            s.fingerprints.count() + s.timers.count(),
            0,
            "nothing per key yet"
        );
        assert_eq!(startup_view(&s), expected);
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.unfolded(), 11, "counted again on open");
    assert_eq!(startup_view(&s), expected);
    // Folded in steps smaller than a delta: the answer holds after every step.
    let mut steps = 0;
    loop {
        let moved = s.fold(2).unwrap();
        if moved == 0 {
            break;
        }
        assert!(moved <= 2);
        steps += 1;
        assert_eq!(startup_view(&s), expected, "after step {steps}");
    }
    assert_eq!(steps, 6, "4 changes then 7, two at a time");
    assert_eq!(s.unfolded(), 0);
    assert_eq!(s.deltas.count(), 0, "every delta folded and removed");
    assert_eq!(s.fingerprints.count(), 3);
    assert_eq!(s.timers.count(), 2, "incident 2's timers are gone");
    s.flush().unwrap();
    drop(s);
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.unfolded(), 0);
    assert_eq!(startup_view(&s), expected);
    // New deltas go after the folded state, with keys after the old ones.
    s.commit(&WriteSet {
        fingerprints: vec![("fp1".into(), None)],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(open_for(&s, "fp1"), None);
    assert_eq!(s.fold(1000).unwrap(), 1);
    assert_eq!(open_for(&s, "fp1"), None);
    assert_eq!(s.fold(1000).unwrap(), 0);
}

#[test]
fn schema_2_to_4_stores_are_upgraded_in_place() {
    for version in [2u64, 3, 4] {
        schema_upgrade_from(version);
    }
}

fn schema_upgrade_from(version: u64) {
    let dir = tempfile::tempdir().unwrap();
    {
        // Schema 2 wrote fingerprints and timers one key each, schema 3 outbox entries.
        let s = SledStore::open(dir.path()).unwrap();
        s.outbox
            .insert(outbox_key("slack", 9), enc(&entry(9, "slack", 7)))
            .unwrap();
        s.events
            .insert(event_key(IncidentId(7), 0), enc(&note("opened")))
            .unwrap();
        s.fingerprints
            .insert("fpA", &id_key(IncidentId(7)))
            .unwrap();
        let t = vec![timer(7, TimerKind::AckDeadline, 0)];
        s.timers.insert(id_key(IncidentId(7)), enc(&t)).unwrap();
        s.meta
            .insert("schema_version", &version.to_be_bytes())
            .unwrap();
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        s.meta.get("schema_version").unwrap().as_deref(),
        Some(SCHEMA_VERSION.to_be_bytes().as_slice())
    );
    assert_eq!(open_for(&s, "fpA"), Some(IncidentId(7)));
    assert_eq!(s.timers().unwrap(), [timer(7, TimerKind::AckDeadline, 0)]);
    assert_eq!(s.outbox_len(), 1);
    assert_eq!(pending_seqs(&s, "slack", 10), [9]);
    assert_eq!(texts(&s.timeline(IncidentId(7)).unwrap()), ["opened"]);
    // Its per-key state is the base the deltas replay over.
    s.commit(&WriteSet {
        fingerprints: vec![("fpA".into(), None)],
        timers: vec![(IncidentId(7), vec![])],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(startup_view(&s), (vec![], vec![]));
    s.fold(10).unwrap();
    assert_eq!(startup_view(&s), (vec![], vec![]));
    assert_eq!(s.fingerprints.count() + s.timers.count(), 0);
}

#[test]
fn per_commit_records_are_cut_at_the_record_size_and_read_back_in_order() {
    let f: Vec<(String, Option<IncidentId>)> = (0..2000)
        .map(|i| {
            (
                format!("fingerprint-{i}"),
                (i % 3 != 0).then_some(IncidentId(i)),
            )
        })
        .collect();
    let t: Vec<(IncidentId, Vec<Timer>)> = (0..300)
        .map(|i| {
            (
                IncidentId(i),
                vec![timer(i, TimerKind::AckDeadline, i as i64)],
            )
        })
        .collect();
    let mut r = Records::default();
    for x in &f {
        r.push("f", x);
    }
    for x in &t {
        r.push("t", x);
    }
    let records = r.finish();
    assert!(records.len() > 5, "{} records", records.len());
    let (mut all_f, mut all_t) = (Vec::new(), Vec::new());
    for rec in &records {
        assert!(
            rec.len() < RECORD_BYTES + 256,
            "a record of {} bytes",
            rec.len()
        );
        let d: Delta = serde_json::from_slice(rec).unwrap();
        all_f.extend(d.f);
        all_t.extend(d.t);
    }
    assert_eq!(all_f, f);
    assert_eq!(all_t, t);
    assert!(Records::default().finish().is_empty(), "nothing, no record");
}

/// Notes of `n` entries per commit, for sinks `slack` and `discord` in turn.
fn outbox_commit(s: &SledStore, first_seq: u64, n: u64) -> Vec<OutboxEntry> {
    let entries: Vec<OutboxEntry> = (first_seq..first_seq + n)
        .map(|seq| {
            entry(
                seq,
                if seq % 2 == 0 { "slack" } else { "discord" },
                seq / 10,
            )
        })
        .collect();
    s.commit(&WriteSet {
        outbox: entries.clone(),
        ..Default::default()
    })
    .unwrap();
    entries
}

fn pending_seqs(s: &SledStore, sink: &str, limit: usize) -> Vec<u64> {
    s.outbox_pending(sink, limit)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[test]
fn outbox_entries_read_the_same_from_chunks_folded_or_not_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let delivered: Vec<u64> = (0..400).filter(|s| s % 3 == 0).collect();
    let expected = |sink: &str| -> Vec<u64> {
        let parity = u64::from(sink == "discord");
        (0..400)
            .filter(|s| s % 2 == parity && !delivered.contains(s))
            .collect()
    };
    {
        let s = SledStore::open(dir.path()).unwrap();
        let mut all = outbox_commit(&s, 0, 200);
        all.extend(outbox_commit(&s, 200, 200));
        assert!(s.chunks.count() > 2, "several chunk records");
        assert_eq!(s.outbox.count(), 0, "nothing per key yet");
        assert_eq!(s.unfolded(), 400);
        assert_eq!(s.outbox_len(), 400);
        for e in all.iter().filter(|e| delivered.contains(&e.seq)) {
            if e.seq % 2 == 0 {
                s.outbox_complete(e, None).unwrap();
            } else {
                s.outbox_dead_letter(e, "gone").unwrap();
            }
        }
        // A redelivery counts once.
        s.outbox_complete(&all[0], None).unwrap();
        assert_eq!(s.outbox_len(), 400 - delivered.len());
        assert_eq!(pending_seqs(&s, "slack", 1000), expected("slack"));
        assert_eq!(pending_seqs(&s, "discord", 1000), expected("discord"));
        assert_eq!(
            pending_seqs(&s, "slack", 7),
            expected("slack")[..7],
            "the limit holds across chunks"
        );
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        s.outbox_len(),
        400 - delivered.len(),
        "counted again on open"
    );
    assert_eq!(s.unfolded(), 400);
    assert_eq!(pending_seqs(&s, "slack", 1000), expected("slack"));
    // Folded in steps that cut chunks: the answer holds after every step.
    let mut steps = 0;
    while s.fold(37).unwrap() > 0 {
        steps += 1;
        assert_eq!(
            pending_seqs(&s, "slack", 1000),
            expected("slack"),
            "step {steps}"
        );
        assert_eq!(pending_seqs(&s, "discord", 1000), expected("discord"));
        assert_eq!(s.outbox_len(), 400 - delivered.len());
    }
    assert_eq!(steps, 11);
    assert_eq!(s.unfolded(), 0);
    assert_eq!(s.chunks.count(), 0);
    assert_eq!(s.done.count(), 0, "every marker consumed");
    assert_eq!(s.outbox.count(), 400 - delivered.len());
    // Per-key entries now: completing one deletes it; one folded away done counts nothing.
    s.outbox_complete(&entry(2, "slack", 0), None).unwrap();
    s.outbox_complete(&entry(0, "slack", 0), None).unwrap();
    assert_eq!(s.outbox_len(), 400 - delivered.len() - 1);
    assert_eq!(s.done.count(), 0, "no marker for a folded entry");
    assert_eq!(pending_seqs(&s, "slack", 1000), expected("slack")[1..]);
    // New chunks go after the per-key entries.
    outbox_commit(&s, 400, 4);
    assert_eq!(pending_seqs(&s, "slack", 1000).last(), Some(&402));
    assert_eq!(pending_seqs(&s, "slack", 1000)[0], 4);
}

#[test]
fn the_outbox_skips_chunks_it_has_delivered_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let first = outbox_commit(&s, 0, 100);
    let second = outbox_commit(&s, 100, 100);
    for e in first.iter().filter(|e| e.sink == "slack") {
        s.outbox_complete(e, None).unwrap();
    }
    assert_eq!(pending_seqs(&s, "slack", 1)[0], 100);
    let cursor = |sink: &str| s.outbox_lock.lock().unwrap().get(sink).copied();
    let skipped = cursor("slack").expect("slack's cursor moved");
    assert!(skipped > 0);
    assert_eq!(cursor("discord"), None, "discord delivered nothing");
    assert_eq!(pending_seqs(&s, "discord", 1)[0], 1);
    // Nothing of slack is lost behind the cursor, folded or not.
    let slack: Vec<u64> = second
        .iter()
        .filter(|e| e.sink == "slack")
        .map(|e| e.seq)
        .collect();
    assert_eq!(pending_seqs(&s, "slack", 1000), slack);
    while s.fold(64).unwrap() > 0 {}
    assert_eq!(pending_seqs(&s, "slack", 1000), slack);
    assert_eq!(s.outbox_len(), 150);
}

#[test]
fn a_storm_sized_commit_writes_no_blob_files() {
    // sled writes a leaf over 128 KiB as a file of its own, and never fsyncs it: per-commit
    // records must stay small enough that sixteen of them do not make such a leaf.
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    for c in 0..40u64 {
        let ids = c * 500..(c + 1) * 500;
        s.commit(&WriteSet {
            fingerprints: ids
                .clone()
                .map(|i| (format!("fp-{i:016x}"), Some(IncidentId(i))))
                .collect(),
            timers: ids
                .clone()
                .map(|i| {
                    let t = [TimerKind::AckDeadline, TimerKind::RepairDeadline];
                    (IncidentId(i), t.map(|k| timer(i, k, i as i64)).to_vec())
                })
                .collect(),
            events: ids
                .clone()
                .map(|i| (IncidentId(i), 0, note("opened")))
                .collect(),
            outbox: ids.map(|i| entry(i, "slack", i)).collect(),
            ..Default::default()
        })
        .unwrap();
        s.flush().unwrap();
    }
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "blob files written");
    assert_eq!(s.unfolded(), 40 * 2000);
}

fn note(text: &str) -> TimelineEvent {
    TimelineEvent {
        at: Utc::now(),
        actor: Actor::system(),
        kind: EventKind::Note { text: text.into() },
    }
}

fn texts(events: &[TimelineEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Note { text } => text.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn timelines_read_the_same_from_event_chunks_folded_or_not_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // Incident i gets events "i/0", "i/1", … over three commits; incident 1 gets many, so
    // that its events span several chunk records, and the others some in each commit.
    let mut expected: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut commit = |s: &SledStore, plan: &[(u64, usize)]| {
        let mut events = Vec::new();
        for &(id, n) in plan {
            let seen = expected.entry(id).or_default();
            for _ in 0..n {
                let seq = seen.len() as u32;
                let text = format!("{id}/{seq} {}", "x".repeat(40));
                events.push((IncidentId(id), seq, note(&text)));
                seen.push(text);
            }
        }
        s.commit(&WriteSet {
            events,
            ..Default::default()
        })
        .unwrap();
    };
    let check = |s: &SledStore, when: &str, expected: &BTreeMap<u64, Vec<String>>| {
        for (id, want) in expected {
            assert_eq!(
                &texts(&s.timeline(IncidentId(*id)).unwrap()),
                want,
                "{when}: incident {id}"
            );
        }
        assert!(s.timeline(IncidentId(99)).unwrap().is_empty());
    };
    {
        let s = SledStore::open(dir.path()).unwrap();
        commit(&s, &[(1, 150), (2, 1), (3, 2)]);
        commit(&s, &[(2, 3), (1, 1)]);
        commit(&s, &[(3, 1), (4, 1)]);
        assert!(s.event_chunks.count() > 3, "several chunk records");
        assert_eq!(s.events.count(), 0, "nothing per key yet");
        assert_eq!(s.unfolded(), 159);
        check(&s, "unfolded", &expected);
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.unfolded(), 159, "counted again on open");
    check(&s, "reopened", &expected);
    // Folded in steps that cut chunks: every timeline is whole after every step.
    let mut steps = 0;
    while s.fold(23).unwrap() > 0 {
        steps += 1;
        check(&s, &format!("step {steps}"), &expected);
    }
    assert_eq!(steps, 7);
    assert_eq!(s.unfolded(), 0);
    assert_eq!(s.event_chunks.count(), 0);
    assert_eq!(s.events.count(), 159);
    assert!(
        s.event_index.lock().unwrap().is_empty(),
        "the index is empty"
    );
    // New events go after the folded ones.
    let mut more = expected.clone();
    more.get_mut(&2).unwrap().push("2/4 late".into());
    s.commit(&WriteSet {
        events: vec![(IncidentId(2), 4, note("2/4 late"))],
        ..Default::default()
    })
    .unwrap();
    check(&s, "after a late event", &more);
    s.flush().unwrap();
    drop(s);
    let s = SledStore::open(dir.path()).unwrap();
    check(&s, "reopened at the end", &more);
}

#[test]
fn folding_while_the_outbox_delivers_and_timelines_are_read_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let mut all = Vec::new();
    for c in 0..6 {
        all.extend(outbox_commit(&s, c * 100, 100));
    }
    // Incident 1 gets a long timeline over several commits.
    let mut want = Vec::new();
    for c in 0..4u32 {
        let events: Vec<_> = (0..60)
            .map(|i| {
                let text = format!("{} {}", c * 60 + i, "y".repeat(30));
                want.push(text.clone());
                (IncidentId(1), c * 60 + i, note(&text))
            })
            .collect();
        s.commit(&WriteSet {
            events,
            ..Default::default()
        })
        .unwrap();
    }
    let (slack, discord): (Vec<_>, Vec<_>) = all.into_iter().partition(|e| e.sink == "slack");
    let delivered: Vec<OutboxEntry> = slack.iter().step_by(2).cloned().collect();
    std::thread::scope(|t| {
        t.spawn(|| while s.fold(7).unwrap() > 0 {});
        t.spawn(|| {
            for e in &delivered {
                s.outbox_complete(e, None).unwrap();
            }
        });
        t.spawn(|| {
            for _ in 0..200 {
                assert_eq!(texts(&s.timeline(IncidentId(1)).unwrap()), want);
                // Pending entries come in order, without repeats, whatever was folded.
                let seqs = pending_seqs(&s, "discord", 1000);
                assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            }
        });
    });
    while s.fold(1000).unwrap() > 0 {}
    let left: Vec<u64> = slack.iter().skip(1).step_by(2).map(|e| e.seq).collect();
    assert_eq!(pending_seqs(&s, "slack", 1000), left);
    assert_eq!(pending_seqs(&s, "discord", 1000).len(), discord.len());
    assert_eq!(s.outbox_len(), left.len() + discord.len());
    assert_eq!(s.done.count(), 0);
    assert_eq!(texts(&s.timeline(IncidentId(1)).unwrap()), want);
}

#[test]
fn the_deltas_decoded_at_open_serve_start_up_and_give_way_to_the_first_commit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.commit(&WriteSet {
            fingerprints: vec![("fpA".into(), Some(IncidentId(1)))],
            timers: vec![(IncidentId(1), vec![timer(1, TimerKind::AckDeadline, 0)])],
            ..Default::default()
        })
        .unwrap();
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert!(s.opened_deltas.lock().unwrap().is_some());
    assert_eq!(open_for(&s, "fpA"), Some(IncidentId(1)));
    assert_eq!(s.timers().unwrap().len(), 1);
    // A commit after start-up is seen: the copy from open is not used any more.
    s.commit(&WriteSet {
        fingerprints: vec![("fpA".into(), None), ("fpB".into(), Some(IncidentId(2)))],
        timers: vec![(IncidentId(1), vec![])],
        ..Default::default()
    })
    .unwrap();
    assert!(s.opened_deltas.lock().unwrap().is_none());
    assert_eq!(open_for(&s, "fpA"), None);
    assert_eq!(open_for(&s, "fpB"), Some(IncidentId(2)));
    assert!(s.timers().unwrap().is_empty());
}
