//! The outbox worker against ports that fail: per-incident order, no head-of-line blocking
//! across incidents, 429 pauses, superseded card edits dropped, nothing lost or duplicated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use incidentd::domain::incident::IncidentId;
use incidentd::engine::outbox::{run_outbox, OutboxConfig};
use incidentd::ports::{
    ChatBody, ChatError, ChatPort, Delivered, Delivery, OutboundMessage, OutboxEntry, Store,
    WriteSet,
};
use incidentd::store::SledStore;
use tokio::sync::{watch, Notify};

/// Fails the first `fail[incident]` attempts for an incident, and rate-limits once on demand.
struct FlakyPort {
    fail: Mutex<HashMap<u64, u32>>,
    rate_limit_once: Mutex<Option<Duration>>,
    log: Mutex<Vec<(Instant, u64, String, bool)>>,
    notify: Notify,
}

impl FlakyPort {
    fn new(fail: &[(u64, u32)]) -> Arc<Self> {
        Arc::new(FlakyPort {
            fail: Mutex::new(fail.iter().copied().collect()),
            rate_limit_once: Mutex::new(None),
            log: Mutex::new(vec![]),
            notify: Notify::new(),
        })
    }

    /// Delivered messages, a line each: notes of one incident that waited together are one
    /// message, a line per note.
    fn delivered(&self) -> Vec<(u64, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.3)
            .flat_map(|l| {
                l.2.lines()
                    .map(|t| (l.1, t.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn wait_delivered(&self, n: usize) -> Vec<(u64, String)> {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let notified = self.notify.notified();
                let d = self.delivered();
                if d.len() >= n {
                    return d;
                }
                notified.await;
            }
        })
        .await
        .expect("deliveries did not arrive")
    }
}

fn text(body: &Delivery) -> String {
    match body {
        Delivery::Note { text, .. } => text.clone(),
        Delivery::PostCard { card } => format!("card {}", card.alert_count),
        Delivery::UpdateCard { card } => format!("edit {}", card.alert_count),
        Delivery::Report { report } => format!("report {}", report.incident),
    }
}

#[async_trait]
impl ChatPort for FlakyPort {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        let id = msg.incident.0;
        let t = text(msg.body);
        let result = if let Some(d) = self.rate_limit_once.lock().unwrap().take() {
            Err(ChatError::RateLimited { retry_after: d })
        } else {
            let mut fail = self.fail.lock().unwrap();
            match fail.get_mut(&id) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    Err(ChatError::Transient("503".into()))
                }
                _ => Ok(Delivered::default()),
            }
        };
        self.log
            .lock()
            .unwrap()
            .push((Instant::now(), id, t, result.is_ok()));
        self.notify.notify_waiters();
        result
    }
}

/// The worker deletes an entry just after the port accepted it: wait (bounded) for that.
async fn wait_empty(store: &Arc<dyn Store>) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while store.outbox_len() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the outbox did not drain");
}

fn builtin() -> Arc<incidentd::config::Config> {
    Arc::new(incidentd::config::Config::builtin())
}

fn note(seq: u64, incident: u64, text: &str) -> OutboxEntry {
    OutboxEntry {
        seq,
        sink: "flaky".into(),
        incident: IncidentId(incident),
        body: ChatBody::Note {
            mentions: vec![],
            text: text.into(),
        },
        created_at: Utc::now(),
    }
}

fn start(
    store: Arc<dyn Store>,
    port: Arc<FlakyPort>,
) -> (
    watch::Sender<u64>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    // Everything committed here counts as durable (the engine's syncer moves this watermark).
    let (commit_tx, commit_rx) = watch::channel(u64::MAX);
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = OutboxConfig {
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..OutboxConfig::default()
    };
    let h = tokio::spawn(run_outbox(store, builtin(), port, commit_rx, stop_rx, cfg));
    (commit_tx, stop_tx, h)
}

#[tokio::test]
async fn a_failing_incident_does_not_block_others_and_order_holds_per_incident() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    store
        .commit(&WriteSet {
            outbox: vec![
                note(1, 1, "a1"),
                note(2, 2, "b1"),
                note(3, 1, "a2"),
                note(4, 2, "b2"),
                note(5, 1, "a3"),
            ],
            ..Default::default()
        })
        .unwrap();
    let port = FlakyPort::new(&[(1, 3)]);
    let (_c, stop, h) = start(store.clone(), port.clone());
    let d = port.wait_delivered(5).await;
    let of = |i: u64| {
        d.iter()
            .filter(|x| x.0 == i)
            .map(|x| x.1.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(1), ["a1", "a2", "a3"], "order per incident");
    assert_eq!(of(2), ["b1", "b2"]);
    // Incident 2 went through while incident 1 was backing off.
    let pos = |t: &str| d.iter().position(|x| x.1 == t).unwrap();
    assert!(pos("b2") < pos("a1"), "no head-of-line blocking: {d:?}");
    // Nothing delivered twice, and the outbox is empty.
    assert_eq!(d.len(), 5);
    wait_empty(&store).await;
    let _ = stop.send(true);
    h.await.unwrap();
}

#[tokio::test]
async fn a_429_pauses_the_sink_for_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    store
        .commit(&WriteSet {
            outbox: vec![note(1, 1, "x"), note(2, 2, "y")],
            ..Default::default()
        })
        .unwrap();
    let port = FlakyPort::new(&[]);
    *port.rate_limit_once.lock().unwrap() = Some(Duration::from_millis(300));
    let (_c, stop, h) = start(store.clone(), port.clone());
    port.wait_delivered(2).await;
    let log = port.log.lock().unwrap().clone();
    assert!(!log[0].3, "first call was rate limited");
    // No call at all (for any incident) before Retry-After passed.
    let gap = log[1].0.duration_since(log[0].0);
    assert!(gap >= Duration::from_millis(300), "retried after {gap:?}");
    assert_eq!(log.len(), 3);
    let _ = stop.send(true);
    h.await.unwrap();
}

#[tokio::test]
async fn superseded_card_edits_are_dropped_and_new_entries_wake_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let port = FlakyPort::new(&[]);
    let (commits, stop, h) = start(store.clone(), port.clone());
    // Build cards from the built-in config's view of an incident.
    let card = |n: u64| {
        let mut c: incidentd::domain::card::IncidentCard =
            serde_json::from_value(serde_json::json!({
                "incident": 1, "title": "t", "severity": "P2",
                "targets": {"detect_seconds": 1, "repair_seconds": 1, "approval": "optional"},
                "kind": "k", "kind_name": "K", "status": "open", "alert_status": "firing",
                "alert_count": n, "opened_at": Utc::now(), "last_seen_at": Utc::now(),
                "links": [], "actions": [], "buttons": []
            }))
            .unwrap();
        c.alert_count = n;
        c
    };
    let edit = |seq: u64, n: u64| OutboxEntry {
        body: ChatBody::UpdateCard { card: card(n) },
        ..note(seq, 1, "")
    };
    store
        .commit(&WriteSet {
            outbox: vec![edit(1, 2), note(2, 1, "between"), edit(3, 3), edit(4, 4)],
            ..Default::default()
        })
        .unwrap();
    commits.send_replace(u64::MAX);
    let d = port.wait_delivered(2).await;
    assert_eq!(
        d.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
        ["between", "edit 4"]
    );
    wait_empty(&store).await;
    let _ = stop.send(true);
    h.await.unwrap();
}

/// A platform that never answers.
struct Hung {
    called: Notify,
}

#[async_trait]
impl ChatPort for Hung {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn deliver(&self, _msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        self.called.notify_one();
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_stop_does_not_wait_for_a_hung_platform_and_keeps_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    store
        .commit(&WriteSet {
            outbox: vec![note(1, 1, "x")],
            ..Default::default()
        })
        .unwrap();
    let port = Arc::new(Hung {
        called: Notify::new(),
    });
    let waiter = port.clone();
    let called = waiter.called.notified();
    let (_commits, commit_rx) = watch::channel(u64::MAX);
    let (stop, stop_rx) = watch::channel(false);
    let cfg = OutboxConfig {
        call_timeout: Duration::from_secs(3600),
        ..OutboxConfig::default()
    };
    let h = tokio::spawn(run_outbox(
        store.clone(),
        builtin(),
        port,
        commit_rx,
        stop_rx,
        cfg,
    ));
    called.await;
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(20), h)
        .await
        .expect("the worker stops although the call never returns")
        .unwrap();
    assert_eq!(store.outbox_len(), 1, "not delivered, so still queued");
}

/// Records, for every delivery, whether its entry was above the watermark the test published.
struct WatermarkPort {
    published: std::sync::atomic::AtomicU64,
    log: Mutex<Vec<(u64, bool)>>,
    notify: Notify,
}

#[async_trait]
impl ChatPort for WatermarkPort {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        let seq: u64 = msg.key.rsplit(':').next().unwrap().parse().unwrap();
        let allowed = seq <= self.published.load(std::sync::atomic::Ordering::SeqCst);
        self.log.lock().unwrap().push((seq, allowed));
        self.notify.notify_waiters();
        Ok(Delivered::default())
    }
}

#[tokio::test]
async fn entries_above_the_durable_watermark_wait_for_it() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    store
        .commit(&WriteSet {
            outbox: vec![note(1, 1, "a"), note(2, 2, "b"), note(3, 1, "c")],
            ..Default::default()
        })
        .unwrap();
    let port = Arc::new(WatermarkPort {
        published: 1.into(),
        log: Mutex::new(vec![]),
        notify: Notify::new(),
    });
    let (durable, durable_rx) = watch::channel(1u64);
    let (stop, stop_rx) = watch::channel(false);
    let h = tokio::spawn(run_outbox(
        store.clone(),
        builtin(),
        port.clone(),
        durable_rx,
        stop_rx,
        OutboxConfig::default(),
    ));
    let wait = |n: usize| {
        let port = port.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    let notified = port.notify.notified();
                    if port.log.lock().unwrap().len() >= n {
                        return;
                    }
                    notified.await;
                }
            })
            .await
            .expect("deliveries did not arrive")
        }
    };
    wait(1).await;
    // Give a worker that ignored the watermark every chance to send the rest now: wait until
    // entry 1 is deleted, then let the worker run on for a while.
    tokio::time::timeout(Duration::from_secs(20), async {
        while store.outbox_len() > 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("entry 1 was not deleted");
    for _ in 0..2000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        port.log.lock().unwrap().len(),
        1,
        "2 and 3 are not durable yet"
    );
    port.published.store(3, Ordering::SeqCst);
    durable.send_replace(3);
    wait(3).await;
    let log = port.log.lock().unwrap().clone();
    assert_eq!(
        log,
        [(1, true), (2, true), (3, true)],
        "sent only once durable, in order"
    );
    wait_empty(&store).await;
    let _ = stop.send(true);
    h.await.unwrap();
}

#[tokio::test]
async fn stored_cards_are_built_from_the_incident_as_it_is_when_they_leave() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let mut inc: incidentd::domain::incident::Incident =
        serde_json::from_value(serde_json::json!({
            "id": 1, "fingerprint": "fp", "title": "Payments API 503", "source": "generic",
            "severity": "P2", "kind": "unclassified", "status": "open", "alert_status": "firing",
            "labels": {}, "annotations": {}, "links": [], "opened_at": Utc::now(),
            "last_seen_at": Utc::now(), "alert_count": 1, "timeline_len": 0
        }))
        .unwrap();
    let card = |seq: u64, post: bool| OutboxEntry {
        body: ChatBody::RenderCard { post },
        ..note(seq, 1, "")
    };
    store
        .commit(&WriteSet {
            incidents: vec![inc.clone()],
            outbox: vec![card(1, true), card(2, false), card(3, false)],
            ..Default::default()
        })
        .unwrap();
    // Repeats arrive before anything was delivered: the card shows them.
    inc.alert_count = 7;
    let mut inc2 = inc.clone();
    store
        .commit(&WriteSet {
            incidents: vec![inc],
            ..Default::default()
        })
        .unwrap();
    let port = FlakyPort::new(&[]);
    let (commits, stop, h) = start(store.clone(), port.clone());
    port.wait_delivered(1).await;
    wait_empty(&store).await;
    // Only the post goes out, rendered with the count as it is now: the edits queued before it
    // was sent change nothing it does not already show.
    let sent =
        |port: &FlakyPort| -> Vec<String> { port.delivered().into_iter().map(|x| x.1).collect() };
    assert_eq!(sent(&port), ["card 7"]);
    // An edit queued after the card was posted is sent.
    inc2.alert_count = 9;
    store
        .commit(&WriteSet {
            incidents: vec![inc2],
            outbox: vec![card(4, false)],
            ..Default::default()
        })
        .unwrap();
    commits.send_replace(u64::MAX);
    port.wait_delivered(2).await;
    wait_empty(&store).await;
    assert_eq!(sent(&port), ["card 7", "edit 9"]);
    let _ = stop.send(true);
    h.await.unwrap();
}
