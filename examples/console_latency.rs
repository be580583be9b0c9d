//! Measures the web console: the time from a webhook POST to the incident's card arriving on an
//! open server-sent event stream (p50/p99 over N alerts), and the weight of the alert channel
//! page (HTML + JS + CSS). Runs the real app on 127.0.0.1:0 with a temporary store.
//!
//! `cargo run --release --example console_latency -- 200`

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use incidentd::app::{run, Deps, PlaybookExecutor};
use incidentd::chat::console::ConsoleSurface;
use incidentd::config::{Config, ConsoleUser, Secret};
use incidentd::engine::outbox::OutboxConfig;
use incidentd::ports::SystemClock;

const TOKEN: &str = "measure-token-0123456789";

fn alert(i: usize) -> String {
    serde_json::json!({
        "version": "4", "status": "firing", "receiver": "incidentd", "groupKey": "{}",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": format!("Measure{i}"), "service": "api", "severity": "warning" },
            "annotations": { "summary": format!("Measured alert {i}") },
            "startsAt": "2026-11-29T12:00:00Z"
        }]
    })
    .to_string()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::builtin();
    cfg.store.path = dir.path().join("store");
    let users = vec![ConsoleUser {
        name: "measure".into(),
        token: Secret::new(TOKEN),
    }];
    let deps = Deps {
        clock: Arc::new(SystemClock),
        surfaces: vec![Arc::new(ConsoleSurface::new(users)?)],
        sinks: vec![],
        outbox: OutboxConfig::default(),
        executor: Arc::new(PlaybookExecutor::new("kubectl")),
        store: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = tokio::spawn(run(cfg, listener, deps, async move {
        let _ = stopped.await;
    }));

    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    browser
        .get(format!("{base}/console/login?token={TOKEN}"))
        .send()
        .await?;
    let empty_page = browser
        .get(format!("{base}/console/alerts"))
        .send()
        .await?
        .bytes()
        .await?
        .len();
    let mut events = browser
        .get(format!("{base}/console/events"))
        .send()
        .await?
        .bytes_stream();
    let mut buf = String::new();
    // Reads until a `card` event for `id` arrives (skipping `ready`, replies and edits).
    let mut wait_card = async |id: &str| -> anyhow::Result<()> {
        let needle = format!("\"incident\":\"{id}\"");
        loop {
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                if block.starts_with("event: card") && block.contains(&needle) {
                    return Ok(());
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("event stream ended"))??;
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    };

    let hooks = reqwest::Client::new();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        let r: serde_json::Value = hooks
            .post(format!("{base}/api/v1/alerts/alertmanager"))
            .header("content-type", "application/json")
            .body(alert(i))
            .send()
            .await?
            .json()
            .await?;
        let id = r["results"][0]["incident"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no incident in {r}"))?
            .to_string();
        wait_card(&id).await?;
        lat.push(t0.elapsed());
    }
    lat.sort();

    let page = browser
        .get(format!("{base}/console/alerts"))
        .send()
        .await?
        .bytes()
        .await?
        .len();
    let css = browser
        .get(format!("{base}/console/assets/console.css"))
        .send()
        .await?
        .bytes()
        .await?
        .len();
    let js = browser
        .get(format!("{base}/console/assets/console.js"))
        .send()
        .await?
        .bytes()
        .await?
        .len();

    println!("webhook POST → card event on an open SSE stream, {n} alerts (one incident each):");
    println!(
        "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );
    println!("alert channel page weight (uncompressed):");
    println!(
        "  HTML {empty_page} B empty, {page} B with 50 incident threads; JS {js} B; CSS {css} B"
    );
    println!(
        "  total: {} B empty, {} B full",
        empty_page + js + css,
        page + js + css
    );
    drop(events);
    let _ = stop.send(());
    app.await??;
    Ok(())
}
