//! How long a P0 card waits at a platform's rate limit while a burst of lower-severity
//! incidents is queued ahead of it: the real app, a chat sink that takes one message per second
//! (the platform), 30 P2/P3 incidents whose automatic actions queue notes and card edits, then
//! one P0 alert. The delay is from the P0 alert's POST to the sink taking its card. Each run is
//! made with priority delivery (the default) and, once, first in first out, as before.
//!
//! `cargo run --example priority_latency -- [RUNS]` (default 10 priority runs and 1 FIFO run;
//! a FIFO run takes about as many seconds as messages are queued ahead of the P0 card).
//!
//! With `PRIORITY_PROMETHEUS=hang`, the config also names a Prometheus that accepts every
//! connection and never answers, and the playbook charts a per-service query, so every card
//! (the P0's among them) has a chart to fetch from it; the FIFO run is left out.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use incidentd::domain::incident::IncidentId;
use incidentd::engine::outbox::OutboxConfig;
use incidentd::ports::{ChatError, ChatPort, Delivered, Delivery, OutboundMessage, ThreadRef};
use support::TestApp;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A platform that takes one message per second (no burst), like a paced chat API.
struct Paced {
    next: Mutex<Option<Instant>>,
    /// (when taken, incident, is a card post)
    log: Mutex<Vec<(Instant, IncidentId, bool)>>,
    notify: Notify,
}

#[async_trait]
impl ChatPort for Paced {
    fn name(&self) -> &str {
        "paced"
    }

    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        let at = {
            let mut next = self.next.lock().unwrap();
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + Duration::from_secs(1));
            at
        };
        tokio::time::sleep_until(at).await;
        let card = matches!(msg.body, Delivery::PostCard { .. });
        self.log
            .lock()
            .unwrap()
            .push((Instant::now(), msg.incident, card));
        self.notify.notify_waiters();
        Ok(Delivered {
            thread: card.then(|| ThreadRef {
                channel: "C1".into(),
                message_id: format!("t{}", msg.incident.0),
            }),
        })
    }
}

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

/// Connections the hanging Prometheus accepted (and never answered), over all runs.
static HUNG: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `PRIORITY_PROMETHEUS=hang`: cards chart a query from a Prometheus that never answers.
fn hanging_prometheus() -> bool {
    std::env::var("PRIORITY_PROMETHEUS").is_ok_and(|v| v == "hang")
}

/// The config, with a hanging Prometheus at `prometheus` when there is one.
fn config(prometheus: Option<std::net::SocketAddr>) -> String {
    match prometheus {
        None => CONFIG.to_string(),
        Some(addr) => {
            CONFIG.replace(
                "[[playbooks.actions]]",
                "chart_query = 'errors_ratio{service=\"{labels.service}\"}'\n[[playbooks.actions]]",
            ) + &format!("\n[prometheus]\nurl = \"http://{addr}\"\n")
        }
    }
}

/// One run: returns the P0 card's delay and how many messages the sink took before it.
async fn run(priority: bool, offset: Duration) -> (Duration, usize) {
    let dir = tempfile::tempdir().unwrap();
    // Accepts every connection and never says a word.
    let prometheus = if hanging_prometheus() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = vec![];
            while let Ok((c, _)) = silent.accept().await {
                held.push(c);
                HUNG.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Some(addr)
    } else {
        None
    };
    let sink = Arc::new(Paced {
        next: Mutex::new(None),
        log: Mutex::new(vec![]),
        notify: Notify::new(),
    });
    let outbox = OutboxConfig {
        priority,
        ..OutboxConfig::default()
    };
    let app = TestApp::start_with_sink(dir.path(), &config(prometheus), sink.clone(), outbox).await;
    for i in 0..30 {
        let sev = if i % 2 == 0 { "warning" } else { "info" };
        let (status, body) = app
            .post_json("/api/v1/alerts", &alert(&format!("svc{i}"), sev))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // The burst's actions ran and their notes are queued (the unpaced recording sink saw them).
    // (Bounded, generously: cards that each waited for a hanging Prometheus took minutes.)
    let burst = app.port.wait_for(|d| {
        let mut with_notes = std::collections::HashSet::new();
        for r in d {
            if let Delivery::Note { text, .. } = &r.body {
                if text.contains("succeeded") {
                    with_notes.insert(r.incident);
                }
            }
        }
        with_notes.len() == 30
    });
    tokio::time::timeout(Duration::from_secs(600), burst)
        .await
        .expect("the burst's notes did not arrive");
    // At different points of the platform's one-second rhythm from run to run.
    tokio::time::sleep(offset).await;
    let t0 = Instant::now();
    let (status, body) = app
        .post_json("/api/v1/alerts", &alert("payments", "fatal"))
        .await;
    assert_eq!(status, 200, "{body}");
    let p0 = IncidentId(31);
    let (at, before) = loop {
        let notified = sink.notify.notified();
        {
            let log = sink.log.lock().unwrap();
            if let Some(i) = log.iter().position(|(_, inc, card)| *inc == p0 && *card) {
                break (log[i].0, i);
            }
        }
        notified.await;
    };
    app.stop().await;
    (at - t0, before)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let mut delays = vec![];
    for i in 0..runs {
        let offset = Duration::from_millis((i as u64 * 1000) / runs as u64);
        let (d, before) = run(true, offset).await;
        println!(
            "priority run {i}: P0 card after {:.3} s ({before} messages taken before it; P0 posted {} ms after the burst was queued)",
            d.as_secs_f64(),
            offset.as_millis()
        );
        delays.push(d);
    }
    delays.sort();
    println!(
        "priority: n={} min={:.3} s p50={:.3} s max={:.3} s",
        delays.len(),
        delays[0].as_secs_f64(),
        delays[delays.len() / 2].as_secs_f64(),
        delays[delays.len() - 1].as_secs_f64()
    );
    if hanging_prometheus() {
        println!(
            "hanging Prometheus: {} chart queries held unanswered",
            HUNG.load(std::sync::atomic::Ordering::Relaxed)
        );
        return;
    }
    let (d, before) = run(false, Duration::ZERO).await;
    println!(
        "fifo: P0 card after {:.3} s ({before} messages taken before it)",
        d.as_secs_f64()
    );
}
