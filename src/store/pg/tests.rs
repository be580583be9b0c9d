//! PostgreSQL-only behaviour: migrations, the lease and fencing (the shared contract is in
//! `store/tests/contract.rs`).

use std::time::Duration;

use super::*;
use crate::store::lease::Lease;

fn db() -> Option<String> {
    crate::store::pgtest::database()
}

fn note_incident(n: u64) -> Incident {
    serde_json::from_value(serde_json::json!({
        "id": n, "fingerprint": format!("fp{n}"), "title": "t", "source": "generic",
        "severity": "P2", "kind": "unclassified", "status": "open", "alert_status": "firing",
        "labels": {}, "annotations": {}, "links": [], "opened_at": Utc::now(),
        "last_seen_at": Utc::now(), "alert_count": 1, "timeline_len": 0
    }))
    .unwrap()
}

/// Makes the lease look expired now (instead of waiting for it: the database's clock decides).
fn expire(url: &str) {
    let mut c = connect(url).unwrap();
    c.execute(
        "UPDATE lease SET expires_at = clock_timestamp() - interval '1 second'",
        &[],
    )
    .unwrap();
}

#[test]
fn migrations_apply_once_and_a_newer_schema_is_refused() {
    let Some(url) = db() else { return };
    let mut c = connect(&url).unwrap();
    assert_eq!(schema::migrate(&mut c).unwrap(), 0, "a new database");
    assert_eq!(
        schema::migrate(&mut c).unwrap(),
        schema::VERSION,
        "nothing to do"
    );
    drop(PgStore::open(&url, None).unwrap());
    c.execute(
        "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
        &[&(schema::VERSION + 1).to_string()],
    )
    .unwrap();
    let e = PgStore::open(&url, None).err().unwrap().to_string();
    assert!(
        e.contains(&format!(
            "schema version {}; this build knows up to {}",
            schema::VERSION + 1,
            schema::VERSION
        )),
        "{e}"
    );
}

#[test]
fn a_version_1_database_gets_the_journal_and_keeps_its_rows() {
    let Some(url) = db() else { return };
    {
        let s = PgStore::open(&url, None).unwrap();
        s.commit(&WriteSet {
            incidents: vec![note_incident(1)],
            fingerprints: vec![("fp1".into(), Some(IncidentId(1)))],
            next_id: Some(2),
            ..Default::default()
        })
        .unwrap();
        while s.fold(100).unwrap() > 0 {}
    }
    // Back to what version 1 had: no journal.
    let mut c = connect(&url).unwrap();
    c.batch_execute("DROP TABLE journal; UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        .unwrap();
    assert_eq!(schema::migrate(&mut c).unwrap(), 1, "found version 1");
    let s = PgStore::open(&url, None).unwrap();
    assert_eq!(
        s.open_fingerprints().unwrap(),
        [("fp1".into(), IncidentId(1))]
    );
    assert!(s.get_incident(IncidentId(1)).unwrap().is_some());
    s.commit(&WriteSet {
        fingerprints: vec![("fp1".into(), None)],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.open_fingerprints().unwrap(), []);
}

#[test]
fn the_lease_goes_to_one_holder_at_a_time_and_to_the_next_only_after_it_expires() {
    let Some(url) = db() else { return };
    let v = Duration::from_secs(5);
    let mut a = Lease::connect(&url, "a", v).unwrap();
    let mut b = Lease::connect(&url, "b", v).unwrap();
    let t1 = a.try_acquire().unwrap().expect("free: a takes it");
    assert_eq!(t1, 1);
    assert_eq!(b.try_acquire().unwrap(), None, "held and valid");
    assert!(a.renew(t1).unwrap());
    assert_eq!(b.try_acquire().unwrap(), None, "renewed");
    expire(&url);
    let t2 = b.try_acquire().unwrap().expect("expired: b takes it");
    assert_eq!(t2, t1 + 1, "a new term");
    assert!(
        !a.renew(t1).unwrap(),
        "a is deposed: its renewal finds another term"
    );
    assert_eq!(a.try_acquire().unwrap(), None);
    let now = a.current().unwrap();
    assert_eq!(
        (now.holder.as_str(), now.term, now.expired),
        ("b", t2, false)
    );
    // A clean stop hands over at once.
    b.release(t2).unwrap();
    assert_eq!(a.try_acquire().unwrap(), Some(t2 + 1));
}

#[test]
fn a_deposed_leaders_writes_are_refused_and_it_is_told() {
    let Some(url) = db() else { return };
    let v = Duration::from_secs(5);
    let mut a = Lease::connect(&url, "a", v).unwrap();
    let t1 = a.try_acquire().unwrap().unwrap();
    let old = PgStore::open(&url, Some(t1)).unwrap();
    let deposed = old.deposed();
    old.commit(&WriteSet {
        incidents: vec![note_incident(1)],
        next_id: Some(2),
        ..Default::default()
    })
    .unwrap();
    assert!(!*deposed.borrow());

    expire(&url);
    let mut b = Lease::connect(&url, "b", v).unwrap();
    let t2 = b.try_acquire().unwrap().unwrap();
    let new = PgStore::open(&url, Some(t2)).unwrap();

    // Every kind of write of the old leader is refused; nothing of it is stored.
    let e = old
        .commit(&WriteSet {
            incidents: vec![note_incident(2)],
            next_id: Some(3),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(e, StoreError::Fenced(_)), "{e}");
    assert!(
        e.to_string().contains(&format!("term {t2} leads now")),
        "{e}"
    );
    assert!(
        *deposed.borrow(),
        "the old leader is told it lost the lease"
    );
    assert!(matches!(
        old.set_chat_cursor("slack:C1", "1.0"),
        Err(StoreError::Fenced(_))
    ));
    assert!(matches!(
        old.recover(Utc::now()),
        Err(StoreError::Fenced(_))
    ));
    assert_eq!(new.next_incident_id().unwrap(), 2);
    assert_eq!(new.get_incident(IncidentId(2)).unwrap(), None);
    assert_eq!(new.chat_cursor("slack:C1").unwrap(), None);

    // The new leader writes under its own term.
    new.commit(&WriteSet {
        incidents: vec![note_incident(2)],
        next_id: Some(3),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(new.next_incident_id().unwrap(), 3);
}

#[test]
fn a_take_over_waits_for_the_old_leaders_transaction_in_flight() {
    // The old leader's commit holds FOR KEY SHARE on the lease row: the take-over's FOR UPDATE
    // waits for it, so the commit either lands before the new term or is refused after it.
    let Some(url) = db() else { return };
    let v = Duration::from_secs(5);
    let mut a = Lease::connect(&url, "a", v).unwrap();
    let t1 = a.try_acquire().unwrap().unwrap();
    expire(&url);
    let mut old = connect(&url).unwrap();
    let mut tx = old.transaction().unwrap();
    let term: i64 = tx
        .query_one("SELECT term FROM lease WHERE id = 1 FOR KEY SHARE", &[])
        .unwrap()
        .get(0);
    assert_eq!(term, t1);
    let taker = std::thread::spawn(move || {
        let mut b = Lease::connect(&url, "b", v).unwrap();
        b.try_acquire().unwrap()
    });
    // The take-over blocks on the row lock until the old transaction ends.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !taker.is_finished(),
        "the take-over must wait for the commit in flight"
    );
    tx.execute("INSERT INTO meta (key, value) VALUES ('probe', 'x')", &[])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(taker.join().unwrap(), Some(t1 + 1));
}

#[test]
fn outbox_sequence_numbers_grow_across_stores_and_an_import_floor() {
    let Some(url) = db() else { return };
    let a = PgStore::open(&url, None).unwrap();
    let x = a.next_seq().unwrap();
    let y = a.next_seq().unwrap();
    assert_eq!(y, x + 1, "from the block in memory");
    // Another store (a new leader) reserves a new block, above everything the first used.
    let b = PgStore::open(&url, None).unwrap();
    let z = b.next_seq().unwrap();
    assert!(z >= x + SEQ_BLOCK, "{z} vs {x}");
    b.ensure_next_seq(1_000_000).unwrap();
    assert!(b.next_seq().unwrap() >= 1_000_000);
}

#[test]
fn what_flush_made_durable_survives_a_server_crash() {
    // A cluster of its own, with fsync on and a WAL writer that would not write the WAL for
    // 10 s: an asynchronously committed transaction is then only in shared memory, lost by an
    // immediate stop, unless `flush` forced the WAL out.
    let Some(_) = crate::store::pgtest::cluster() else {
        return;
    };
    let c = crate::store::pgtest::Cluster::start_with(true, "-c wal_writer_delay=10s")
        .expect("a cluster of its own");
    let url = c.create_database("crash").unwrap();
    let s = PgStore::open(&url, None).unwrap();
    s.commit(&WriteSet {
        incidents: vec![note_incident(1)],
        next_id: Some(2),
        ..Default::default()
    })
    .unwrap();
    s.flush().unwrap();
    drop(s);
    c.crash_and_restart().unwrap();
    let s = PgStore::open(&url, None).unwrap();
    let found = (
        s.next_incident_id().unwrap(),
        s.get_incident(IncidentId(1)).unwrap().is_some(),
    );
    drop(s);
    c.stop();
    assert_eq!(found, (2, true), "acknowledged after flush, then lost");
}

#[test]
fn a_group_commit_keeps_events_and_deltas_in_one_journal_row_until_folded() {
    // A storm's group commit writes one row per incident and a few journal rows, not a row per
    // event, fingerprint and timer as well (the write path's cost: BENCHMARKS.md).
    let Some(url) = db() else { return };
    let s = PgStore::open(&url, None).unwrap();
    let at = Utc::now();
    let note = |n: u64| TimelineEvent {
        at,
        actor: crate::domain::policy::Actor::system(),
        kind: crate::domain::incident::EventKind::Note {
            text: format!("opened {n}"),
        },
    };
    let timer = |n: u64| Timer {
        incident: IncidentId(n),
        kind: crate::ports::TimerKind::AckDeadline,
        at: Utc::now(),
    };
    let ids = 1..=50u64;
    s.commit(&WriteSet {
        incidents: ids.clone().map(note_incident).collect(),
        events: ids.clone().map(|n| (IncidentId(n), 0, note(n))).collect(),
        fingerprints: ids
            .clone()
            .map(|n| (format!("fp{n}"), Some(IncidentId(n))))
            .collect(),
        timers: ids
            .clone()
            .map(|n| (IncidentId(n), vec![timer(n)]))
            .collect(),
        next_id: Some(51),
        ..Default::default()
    })
    .unwrap();
    s.flush().unwrap();
    let mut c = connect(&url).unwrap();
    let mut count = |table: &str| -> i64 {
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    };
    let counts = |count: &mut dyn FnMut(&str) -> i64| {
        ["incidents", "events", "fingerprints", "timers", "journal"].map(count)
    };
    assert_eq!(
        counts(&mut count),
        [50, 0, 0, 0, 2],
        "events in one row, deltas in one"
    );
    assert_eq!(s.unfolded(), 150);
    assert_eq!(s.timeline(IncidentId(7)).unwrap(), [note(7)]);
    assert_eq!(s.open_fingerprints().unwrap().len(), 50);
    assert_eq!(s.timers().unwrap().len(), 50);
    while s.fold(64).unwrap() > 0 {}
    assert_eq!(s.unfolded(), 0);
    assert_eq!(counts(&mut count), [50, 50, 50, 50, 0]);
    assert_eq!(s.timeline(IncidentId(7)).unwrap(), [note(7)]);
}
