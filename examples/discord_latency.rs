//! The bot's own Discord latency: from the fake Discord writing MESSAGE_CREATE (an
//! Alertmanager webhook post in an alert channel) onto the gateway socket to the fake receiving
//! the bot's request to start the incident thread, and the card post in it. Alerts are sent one
//! at a time (each a new incident), so the numbers are per-alert latency, not queueing.
//!
//! `cargo run --release --example discord_latency -- [N]` (default 200).

#[path = "../tests/support/fake_discord.rs"]
mod fake_discord;

use std::sync::Arc;
use std::time::Duration;

use fake_discord::*;
use incidentd::app::{run, Deps, PlaybookExecutor};
use incidentd::chat::discord::DiscordSurface;
use incidentd::config::Config;
use incidentd::engine::outbox::OutboxConfig;
use incidentd::ports::SystemClock;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name}: n={} p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?}",
        v.len(),
        percentile(&v, 0.50),
        percentile(&v, 0.90),
        percentile(&v, 0.99),
        v[v.len() - 1]
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let fake = FakeDiscord::start().await;
    let toml = format!(
        "[engine]\ncard_coalesce_seconds = 0\n[discord]\napi_url = \"{}\"\nguild_ids = [\"{GUILD}\"]\nalert_channels = [\"{ALERTS}\"]\nincident_channel = \"{INCIDENTS}\"\n",
        fake.base
    );
    let env = |k: &str| (k == "DISCORD_TOKEN").then(|| TOKEN.to_string());
    let mut cfg = Config::from_toml(&toml, &env).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    cfg.store.path = dir.path().join("store");
    let surface = Arc::new(DiscordSurface::new(cfg.discord.as_ref().unwrap()));
    let deps = Deps {
        clock: Arc::new(SystemClock),
        surfaces: vec![surface],
        sinks: vec![],
        outbox: OutboxConfig::default(),
        executor: Arc::new(PlaybookExecutor::new("kubectl")),
        store: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = tokio::spawn(run(cfg, listener, deps, async move {
        let _ = rx.await;
    }));
    fake.wait("READY", |f| {
        (f.connected() && f.commands(GUILD).is_some()).then_some(())
    })
    .await;

    let (mut thread, mut card) = (Vec::new(), Vec::new());
    for i in 0..n {
        let instance = format!("10.0.{}.{}:8080", i / 250, i % 250);
        let description = format!(
            "\nAlerts Firing:\nLabels:\n - alertname = HighErrorRate\n - instance = {instance}\n - service = api\n - severity = critical\nAnnotations:\n - summary = Error rate above 5%\n\n"
        );
        let id = fake.post_webhook_alert(
            ALERTS,
            &format!("[FIRING:1] HighErrorRate ({instance} api critical)"),
            &description,
        );
        let thread_path = format!("/api/v10/channels/{ALERTS}/messages/{id}/threads");
        let card_path = format!("/api/v10/channels/{id}/messages");
        let (t_at, c_at) = fake
            .wait("the thread and card requests", |f| {
                let reqs = f.requests();
                let t = reqs.iter().find(|r| r.path == thread_path)?.at;
                let c = reqs.iter().find(|r| r.path == card_path)?.at;
                Some((t, c))
            })
            .await;
        let sent = fake.dispatched_at(id).expect("dispatched on a live socket");
        thread.push(t_at.duration_since(sent));
        card.push(c_at.duration_since(sent));
    }
    report("MESSAGE_CREATE → thread start request", thread);
    report("MESSAGE_CREATE → card post request", card);
    let _ = tx.send(());
    app.await??;
    Ok(())
}
