//! The writer's group commit and the syncer: callers are answered, and chat messages may leave,
//! only after the sync that makes their batch durable; a failed sync answers with an error and
//! stops the engine instead of acknowledging what may not be on disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use incidentd::config::Config;
use incidentd::domain::alert::{Alert, AlertSource, AlertStatus};
use incidentd::domain::incident::{Incident, IncidentId, PastIncident, TimelineEvent};
use incidentd::engine::runner::Engine;
use incidentd::engine::Input;
use incidentd::ports::{
    Execution, IncidentFilter, OutboxEntry, Recovery, Store, StoreError, SystemClock, ThreadRef,
    Timer, WriteSet,
};
use incidentd::store::SledStore;

/// A real sled store whose `flush` waits for the test to open a gate, and can be made to fail.
struct GatedStore {
    inner: SledStore,
    open: Mutex<bool>,
    opened: Condvar,
    fail: AtomicBool,
    flushes_waiting: Mutex<usize>,
}

impl GatedStore {
    fn set_open(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.opened.notify_all();
    }
}

impl Store for GatedStore {
    fn get_incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        self.inner.get_incident(id)
    }
    fn list_incidents(&self, f: &IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        self.inner.list_incidents(f)
    }
    fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEvent>, StoreError> {
        self.inner.timeline(id)
    }
    fn next_incident_id(&self) -> Result<u64, StoreError> {
        self.inner.next_incident_id()
    }
    fn next_seq(&self) -> Result<u64, StoreError> {
        self.inner.next_seq()
    }
    fn commit(&self, w: &WriteSet) -> Result<(), StoreError> {
        self.inner.commit(w)
    }
    fn flush(&self) -> Result<(), StoreError> {
        *self.flushes_waiting.lock().unwrap() += 1;
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        *self.flushes_waiting.lock().unwrap() -= 1;
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Storage(
                "injected: fdatasync failed (EIO)".into(),
            ));
        }
        self.inner.flush()
    }
    fn outbox_pending(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_pending(sink, limit)
    }
    fn outbox_complete(&self, e: &OutboxEntry, t: Option<&ThreadRef>) -> Result<(), StoreError> {
        self.inner.outbox_complete(e, t)
    }
    fn outbox_dead_letter(&self, e: &OutboxEntry, error: &str) -> Result<(), StoreError> {
        self.inner.outbox_dead_letter(e, error)
    }
    fn outbox_len(&self) -> usize {
        self.inner.outbox_len()
    }
    fn thread_for(&self, sink: &str, id: IncidentId) -> Result<Option<ThreadRef>, StoreError> {
        self.inner.thread_for(sink, id)
    }
    fn incident_for_thread(
        &self,
        sink: &str,
        channel: &str,
        message_id: &str,
    ) -> Result<Option<IncidentId>, StoreError> {
        self.inner.incident_for_thread(sink, channel, message_id)
    }
    fn timers(&self) -> Result<Vec<Timer>, StoreError> {
        self.inner.timers()
    }
    fn open_fingerprints(&self) -> Result<Vec<(String, IncidentId)>, StoreError> {
        self.inner.open_fingerprints()
    }
    fn history_fingerprints(&self) -> Result<Vec<String>, StoreError> {
        self.inner.history_fingerprints()
    }
    fn history(&self, fp: &str) -> Result<Vec<PastIncident>, StoreError> {
        self.inner.history(fp)
    }
    fn executions(&self, id: IncidentId) -> Result<Vec<Execution>, StoreError> {
        self.inner.executions(id)
    }
    fn execution(&self, key: &str) -> Result<Option<Execution>, StoreError> {
        self.inner.execution(key)
    }
    fn recover(&self, now: DateTime<Utc>) -> Result<Recovery, StoreError> {
        self.inner.recover(now)
    }
    fn fold(&self, max: usize) -> Result<usize, StoreError> {
        self.inner.fold(max)
    }
    fn unfolded(&self) -> usize {
        self.inner.unfolded()
    }
}

fn alert(name: &str) -> Alert {
    let labels = [
        ("alertname", name),
        ("service", "api"),
        ("severity", "warning"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Alert {
        source: AlertSource::Generic,
        fingerprint: incidentd::domain::alert::fingerprint_labels(&labels),
        status: AlertStatus::Firing,
        title: name.into(),
        description: None,
        labels,
        annotations: Default::default(),
        starts_at: None,
        ends_at: None,
        links: vec![],
        origin: None,
        group_labels: Default::default(),
    }
}

fn setup(dir: &std::path::Path) -> Arc<GatedStore> {
    Arc::new(GatedStore {
        inner: SledStore::open(dir).unwrap(),
        open: Mutex::new(false),
        opened: Condvar::new(),
        fail: AtomicBool::new(false),
        flushes_waiting: Mutex::new(0),
    })
}

/// The engine over `store`, with the built-in config and one chat sink.
fn start(
    store: &Arc<GatedStore>,
) -> (
    Engine,
    incidentd::engine::runner::Notifications,
    std::thread::JoinHandle<()>,
) {
    Engine::start(
        store.clone(),
        Arc::new(Config::builtin()),
        Arc::new(SystemClock),
        vec!["console".into()],
    )
    .unwrap()
}

/// Drops the engine and waits for its writer to finish (everything answered and synced).
async fn stop(engine: Engine, writer: std::thread::JoinHandle<()>) {
    drop(engine);
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !f() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_and_chat_wait_for_the_sync_and_the_writer_goes_on_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let store = setup(dir.path());
    let (engine, notes, _writer) = start(&store);
    let watermark = *notes.outbox.borrow();

    let e = engine.clone();
    let first = tokio::spawn(async move { e.submit_one(Input::Alert(alert("First"))).await });
    // Committed (readable) while its sync waits at the gate…
    until("the first commit", || {
        store.get_incident(IncidentId(1)).unwrap().is_some()
    })
    .await;
    until("the first sync to start", || {
        *store.flushes_waiting.lock().unwrap() == 1
    })
    .await;
    // …and the writer takes the next batch meanwhile instead of waiting for the disk.
    let e = engine.clone();
    let second = tokio::spawn(async move { e.submit_one(Input::Alert(alert("Second"))).await });
    until("the second commit", || {
        store.get_incident(IncidentId(2)).unwrap().is_some()
    })
    .await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "nobody is answered before the sync"
    );
    assert_eq!(
        *notes.outbox.borrow(),
        watermark,
        "no chat message may leave yet"
    );
    let pending = store.outbox_pending("console", 10).unwrap();
    assert_eq!(pending.len(), 2, "both cards are queued");

    store.set_open(true);
    let a = first.await.unwrap().unwrap();
    let b = second.await.unwrap().unwrap();
    assert_eq!(
        (a.incident, b.incident),
        (Some(IncidentId(1)), Some(IncidentId(2)))
    );
    let max = pending.iter().map(|e| e.seq).max().unwrap();
    until("the watermark to pass both cards", || {
        *notes.outbox.borrow() >= max
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_not_acknowledged_and_the_engine_recovers_with_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = setup(dir.path());
    store.fail.store(true, Ordering::SeqCst);
    store.set_open(true);
    let (engine, notes, _writer) = start(&store);
    let watermark = *notes.outbox.borrow();
    assert!(engine.is_alive());
    let err = engine
        .submit_one(Input::Alert(alert("Lost")))
        .await
        .expect_err("a batch whose sync failed is not acknowledged");
    assert!(err.to_string().contains("EIO"), "{err}");
    assert!(!engine.is_alive(), "not ready while syncs fail");
    assert_eq!(*notes.outbox.borrow(), watermark, "its card does not leave");
    // Still failing: still refused, still not ready.
    let err = engine
        .submit_one(Input::Alert(alert("Again")))
        .await
        .expect_err("refused while the disk fails");
    assert!(err.to_string().contains("EIO"), "{err}");
    // The disk heals: the next batch is acknowledged and the engine is ready again.
    store.fail.store(false, Ordering::SeqCst);
    let ok = engine
        .submit_one(Input::Alert(alert("After")))
        .await
        .expect("acknowledged once a sync succeeds");
    assert!(engine.is_alive(), "ready again");
    // The batches that failed were committed; the good sync made them durable, so their cards
    // leave now too (no id was given out twice: After is the third incident).
    assert_eq!(ok.incident, Some(IncidentId(3)));
    let pending = store.outbox_pending("console", 10).unwrap();
    let max = pending.iter().map(|e| e.seq).max().unwrap();
    until("the watermark to pass every card", || {
        *notes.outbox.borrow() >= max
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn armed_timers_are_stored_per_incident_and_a_fired_one_is_gone_after_a_restart() {
    use incidentd::ports::TimerKind;
    let dir = tempfile::tempdir().unwrap();
    let kinds = |store: &dyn Store| {
        let mut k: Vec<(u64, TimerKind)> = store
            .timers()
            .unwrap()
            .iter()
            .map(|t| (t.incident.0, t.kind))
            .collect();
        k.sort();
        k
    };
    {
        let store = setup(dir.path());
        store.set_open(true);
        let (engine, _notes, writer) = start(&store);
        engine.submit_one(Input::Alert(alert("One"))).await.unwrap();
        engine.submit_one(Input::Alert(alert("Two"))).await.unwrap();
        let armed = kinds(&*store);
        assert!(armed.contains(&(1, TimerKind::AckDeadline)), "{armed:?}");
        assert!(armed.contains(&(2, TimerKind::AckDeadline)), "{armed:?}");
        let t = store
            .timers()
            .unwrap()
            .into_iter()
            .find(|t| t.incident == IncidentId(1) && t.kind == TimerKind::AckDeadline)
            .unwrap();
        // The acknowledgement deadline of INC-1 fires (escalates) and is disarmed.
        engine.submit_one(Input::Timer(t)).await.unwrap();
        stop(engine, writer).await;
    }
    let store = SledStore::open(dir.path()).unwrap();
    let after = kinds(&store);
    assert!(!after.contains(&(1, TimerKind::AckDeadline)), "{after:?}");
    assert!(after.contains(&(2, TimerKind::AckDeadline)), "{after:?}");
    assert!(after.contains(&(1, TimerKind::RepairDeadline)), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_folds_fingerprint_and_timer_deltas_when_idle_and_a_restart_sees_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let open_before;
    {
        let store = setup(dir.path());
        store.set_open(true);
        let (engine, _notes, writer) = start(&store);
        let alerts = ["One", "Two", "Three"].map(|n| Input::Alert(alert(n)));
        engine.submit(alerts.to_vec()).await.unwrap();
        // Each new incident changed a fingerprint and its timers; with nothing more to do, the
        // writer moves them out of the commit's delta into their per-key form.
        until("the writer to fold", || store.unfolded() == 0).await;
        open_before = store.open_fingerprints().unwrap();
        assert_eq!(open_before.len(), 3);
        stop(engine, writer).await;
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.unfolded(), 0);
    assert_eq!(store.open_fingerprints().unwrap(), open_before);
    assert_eq!(
        store.timers().unwrap().len(),
        6,
        "two deadlines per incident"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_without_pauses_is_folded_down_to_the_bound_after_each_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = setup(dir.path());
    store.set_open(true);
    // Never idle long enough for the idle fold: only the bound can make the writer fold.
    let folding = incidentd::engine::runner::Folding {
        quiet: Duration::from_secs(3600),
        max_unfolded: 10,
    };
    let (engine, _notes, writer) = Engine::start_with(
        store.clone(),
        Arc::new(Config::builtin()),
        Arc::new(SystemClock),
        vec!["console".into()],
        Arc::new(incidentd::telemetry::metrics::Metrics::new()),
        folding,
    )
    .unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("Storm{i}")).collect();
    let alerts: Vec<Input> = names.iter().map(|n| Input::Alert(alert(n))).collect();
    engine.submit(alerts).await.unwrap();
    // 20 new incidents: a fingerprint, timers, an outbox entry and an event each.
    until("the writer to fold down to the bound", || {
        store.unfolded() <= 10
    })
    .await;
    assert_eq!(store.open_fingerprints().unwrap().len(), 20);
    stop(engine, writer).await;
    let unfolded = store.unfolded();
    drop(store);
    let reopened = SledStore::open(dir.path()).unwrap();
    assert_eq!(reopened.unfolded(), unfolded, "what start-up replays");
    assert_eq!(reopened.open_fingerprints().unwrap().len(), 20);
}
