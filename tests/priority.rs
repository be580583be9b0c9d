//! Priority delivery: a platform paced at its limit sends new P0/P1 cards before P2/P3 cards,
//! and those before notes and edits; notes of one incident that wait together are one message;
//! nothing is reordered within an incident's thread. The real app, a chat sink whose every
//! delivery waits for the test's go (a platform at its rate limit, without clocks).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use incidentd::domain::incident::IncidentId;
use incidentd::domain::severity::Severity;
use incidentd::engine::outbox::OutboxConfig;
use incidentd::ports::{ChatError, ChatPort, Delivered, Delivery, OutboundMessage, ThreadRef};
use support::{fast_outbox, TestApp};
use tokio::sync::{Notify, Semaphore};

/// A platform at its rate limit: each delivery waits for a permit the test hands out.
struct GatePort {
    permits: Semaphore,
    /// (key, incident, what) in delivery order.
    log: Mutex<Vec<(String, IncidentId, String)>>,
    waiting: Mutex<usize>,
    notify: Notify,
}

impl GatePort {
    fn new() -> Arc<Self> {
        Arc::new(GatePort {
            permits: Semaphore::new(0),
            log: Mutex::new(vec![]),
            waiting: Mutex::new(0),
            notify: Notify::new(),
        })
    }

    fn log(&self) -> Vec<(String, IncidentId, String)> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until `pred` holds over (deliveries so far, calls waiting for a permit).
    async fn wait(&self, what: &str, pred: impl Fn(usize, usize) -> bool) {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let notified = self.notify.notified();
                let done = self.log.lock().unwrap().len();
                if pred(done, *self.waiting.lock().unwrap()) {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    /// Lets one call through and waits until it is recorded and the next call waits.
    async fn step(&self) {
        let before = self.log.lock().unwrap().len();
        self.permits.add_permits(1);
        self.wait("a delivery", |done, _| done > before).await;
    }
}

#[async_trait]
impl ChatPort for GatePort {
    fn name(&self) -> &str {
        "gate"
    }

    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        *self.waiting.lock().unwrap() += 1;
        self.notify.notify_waiters();
        let permit = self.permits.acquire().await.expect("open");
        permit.forget();
        *self.waiting.lock().unwrap() -= 1;
        let (what, thread) = match msg.body {
            Delivery::PostCard { card } => (
                format!("card {:?}", card.severity),
                Some(ThreadRef {
                    channel: "C1".into(),
                    message_id: format!("t{}", card.incident.0),
                }),
            ),
            Delivery::UpdateCard { .. } => ("edit".to_string(), None),
            Delivery::Note { text, .. } => (format!("note {text}"), None),
            Delivery::Report { .. } => ("report".to_string(), None),
        };
        self.log
            .lock()
            .unwrap()
            .push((msg.key.clone(), msg.incident, what));
        self.notify.notify_waiters();
        Ok(Delivered { thread })
    }
}

/// P2/P3 incidents run an automatic action, so each queues a card, notes and card edits.
const CONFIG: &str = r#"
[engine]
card_coalesce_seconds = 0
# The burst's automatic actions must run (their notes are what the P0 card competes with),
# so the storm guard, which would hold them, is off here.
storm_new_incidents = 0

[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart"
auto = true
run = { type = "command", argv = ["/bin/true"] }
"#;

fn alert(service: &str, severity: &str) -> String {
    serde_json::json!({
        "title": format!("{service} upstream returns 503"),
        "severity": severity,
        "labels": { "service": service },
    })
    .to_string()
}

/// The outbox sequence numbers a delivery key stands for (`incidentd:gate:7` or `…:7-9`).
fn seqs(key: &str) -> (u64, u64) {
    let tail = key.rsplit(':').next().unwrap();
    match tail.split_once('-') {
        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
        None => (tail.parse().unwrap(), tail.parse().unwrap()),
    }
}

/// A 28-incident burst: 27 P2/P3 incidents with their action notes queued, then a P0.
/// Returns the gate's deliveries after the P0 alert was acknowledged (durable), up to and
/// including the P0 card, and every delivery once all was sent.
async fn burst(outbox: OutboxConfig) -> (usize, Vec<(String, IncidentId, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let gate = GatePort::new();
    let app = TestApp::start_with_sink(dir.path(), CONFIG, gate.clone(), outbox).await;
    for i in 0..27 {
        let sev = if i % 2 == 0 { "warning" } else { "info" };
        let (status, body) = app
            .post_json("/api/v1/alerts", &alert(&format!("svc{i}"), sev))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Every action ran and noted its outcome: the recording sink saw the same entries.
    app.wait_chat(|d| {
        let mut notes: HashMap<IncidentId, usize> = HashMap::new();
        for r in d {
            if let Delivery::Note { text, .. } = &r.body {
                // Notes that waited together are one message, a line each.
                *notes.entry(r.incident).or_default() += text.lines().count();
            }
        }
        notes.len() == 27 && notes.values().all(|n| *n >= 2)
    })
    .await;
    // The platform has taken one message and is busy with the next one.
    gate.wait("the first call", |_, waiting| waiting == 1).await;
    gate.step().await;
    gate.wait("the second call", |_, waiting| waiting == 1)
        .await;
    let (status, body) = app
        .post_json("/api/v1/alerts", &alert("payments", "fatal"))
        .await;
    assert_eq!(status, 200, "{body}");
    let p0 = IncidentId(28);
    app.wait_chat(|d| d.iter().any(|r| r.incident == p0)).await;
    let from = gate.log().len();
    let mut waited = 0;
    loop {
        gate.step().await;
        waited += 1;
        if gate.log()[from..].iter().any(|(_, i, _)| *i == p0) {
            break;
        }
    }
    // Everything else: every note line the recording sink got (it is not paced).
    gate.permits.add_permits(10_000);
    let note_lines = |d: Vec<Delivery>| -> usize {
        d.iter()
            .map(|b| match b {
                Delivery::Note { text, .. } => text.lines().count(),
                _ => 0,
            })
            .sum()
    };
    let want = note_lines(app.port.delivered().into_iter().map(|r| r.body).collect());
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let notified = gate.notify.notified();
            let have: usize = gate
                .log()
                .iter()
                .filter(|(_, _, w)| w.starts_with("note"))
                .map(|(_, _, w)| w.lines().count())
                .sum();
            if have >= want {
                break;
            }
            notified.await;
        }
    })
    .await
    .expect("the rest was delivered");
    app.stop().await;
    (waited, gate.log())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p0_card_goes_before_the_queued_notes_of_a_p2_p3_burst() {
    // First in, first out (as before): the P0 card waits behind every queued note and edit.
    let fifo = OutboxConfig {
        priority: false,
        ..fast_outbox()
    };
    let (waited_fifo, _) = burst(fifo).await;
    assert!(
        waited_fifo > 20,
        "FIFO: the P0 card came after {waited_fifo} deliveries"
    );

    // Read the outbox again after every delivery when something new was queued (the default
    // skips some re-reads on a fast sink; how many depends on timing, which a test must not).
    let prioritized = OutboxConfig {
        reread_factor: 0,
        ..fast_outbox()
    };
    let (waited, log) = burst(prioritized).await;
    // The message already on its way, then the P0 card.
    assert!(
        waited <= 2,
        "the P0 card waited for {waited} deliveries: {log:#?}"
    );
    let p0 = log.iter().find(|(_, i, _)| *i == IncidentId(28)).unwrap();
    assert_eq!(p0.2, format!("card {:?}", Severity::P0));

    // Never reordered within an incident: its card first, then its entries in sequence.
    let mut last: HashMap<IncidentId, u64> = HashMap::new();
    let mut first: HashMap<IncidentId, String> = HashMap::new();
    for (key, inc, what) in &log {
        first.entry(*inc).or_insert_with(|| what.clone());
        let (a, b) = seqs(key);
        assert!(a <= b);
        if let Some(prev) = last.insert(*inc, b) {
            assert!(prev < a, "{inc} reordered: {log:#?}");
        }
    }
    assert_eq!(first.len(), 28);
    assert!(first.values().all(|w| w.starts_with("card")), "{first:?}");

    // Notes that waited together went out as one message.
    let coalesced = log
        .iter()
        .filter(|(k, _, w)| w.starts_with("note") && k.contains('-'))
        .count();
    assert!(coalesced >= 20, "{log:#?}");
    for (k, _, w) in &log {
        if k.contains('-') {
            let (a, b) = seqs(k);
            assert!(b > a);
            assert!(w.contains('\n'), "{w}");
        }
    }
}
