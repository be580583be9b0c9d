//! Test harness: the real app on 127.0.0.1:0 with a temp sled store and a recording chat port.
#![allow(dead_code)]

pub mod alertmanager;
pub mod fake_discord;
pub mod faulty_store;
pub mod prometheus;
pub mod sse;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use incidentd::app::{run, Deps};
use incidentd::chat::recording::{Recorded, RecordingPort};
use incidentd::config::Config;
use incidentd::engine::outbox::OutboxConfig;
use incidentd::ports::SystemClock;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestApp {
    pub base: String,
    pub port: Arc<RecordingPort>,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The config tests use unless they bring their own.
pub const TEST_CONFIG: &str = r#"
[engine]
card_coalesce_seconds = 5

[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
auto_resolve = true
[[playbooks.actions]]
id = "restart"
title = "Restart"
run = { type = "command", argv = ["/bin/true"] }

[policy.P1]
approvers = ["slack:U1"]
"#;

pub fn fast_outbox() -> OutboxConfig {
    OutboxConfig {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        ..OutboxConfig::default()
    }
}

impl TestApp {
    pub async fn start(dir: &Path) -> TestApp {
        Self::start_with(dir, TEST_CONFIG, &|_| None).await
    }

    pub async fn start_with(
        dir: &Path,
        config: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> TestApp {
        Self::launch(dir, config, env, None, None, fast_outbox(), false).await
    }

    /// The app with the chat surfaces its config enables (`[slack]`, `[discord]`; the console
    /// surface stays off), the recording port delivering beside them.
    pub async fn start_with_chat(
        dir: &Path,
        config: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> TestApp {
        Self::launch(dir, config, env, None, None, fast_outbox(), true).await
    }

    /// The app with one more chat sink beside the recording port, and its own outbox tuning.
    pub async fn start_with_sink(
        dir: &Path,
        config: &str,
        sink: Arc<dyn incidentd::ports::ChatPort>,
        outbox: OutboxConfig,
    ) -> TestApp {
        Self::launch(dir, config, &|_| None, None, Some(sink), outbox, false).await
    }

    /// The app on an injected clock (timers fire by it).
    pub async fn start_with_clock(
        dir: &Path,
        config: &str,
        clock: Arc<dyn incidentd::ports::Clock>,
    ) -> TestApp {
        let mut cfg = Config::from_toml(config, &|_| None).expect("test config");
        cfg.store.path = dir.join("store");
        Self::launch_cfg(cfg, None, None, fast_outbox(), clock, false).await
    }

    /// The app on an injected store instead of the one at `[store] path`.
    pub async fn start_on_store(
        dir: &Path,
        config: &str,
        store: Arc<dyn incidentd::ports::Store>,
    ) -> TestApp {
        Self::launch(
            dir,
            config,
            &|_| None,
            Some(store),
            None,
            fast_outbox(),
            false,
        )
        .await
    }

    async fn launch(
        dir: &Path,
        config: &str,
        env: &dyn Fn(&str) -> Option<String>,
        store: Option<Arc<dyn incidentd::ports::Store>>,
        sink: Option<Arc<dyn incidentd::ports::ChatPort>>,
        outbox: OutboxConfig,
        chat: bool,
    ) -> TestApp {
        let mut cfg = Config::from_toml(config, env).expect("test config");
        cfg.store.path = dir.join("store");
        Self::launch_cfg(cfg, store, sink, outbox, Arc::new(SystemClock), chat).await
    }

    async fn launch_cfg(
        cfg: Config,
        store: Option<Arc<dyn incidentd::ports::Store>>,
        sink: Option<Arc<dyn incidentd::ports::ChatPort>>,
        outbox: OutboxConfig,
        clock: Arc<dyn incidentd::ports::Clock>,
        chat: bool,
    ) -> TestApp {
        let port = Arc::new(RecordingPort::new("test"));
        let mut sinks: Vec<Arc<dyn incidentd::ports::ChatPort>> = vec![port.clone()];
        sinks.extend(sink);
        let surfaces = if chat {
            let mut d = Deps::from_config(&cfg).expect("chat surfaces");
            d.surfaces
                .retain(|s| s.platform() != incidentd::domain::alert::Platform::Console);
            d.surfaces
        } else {
            vec![]
        };
        let deps = Deps {
            clock,
            surfaces,
            sinks,
            // Charts on cards when the config names a Prometheus, as `Deps::from_config` does.
            outbox: OutboxConfig {
                charts: incidentd::app::charts_for(&cfg),
                ..outbox
            },
            executor: Arc::new(incidentd::app::PlaybookExecutor::for_config(
                "kubectl", &cfg,
            )),
            store,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(cfg, listener, deps, async move {
            let _ = rx.await;
        }));
        let mut app = TestApp {
            base,
            port,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
        };
        app.wait_ready().await;
        app
    }

    /// Waits (bounded) until the app answers /readyz; if it stopped instead, fails with its error.
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.handle.as_ref().unwrap().is_finished() {
                let result = self.handle.take().unwrap().await.unwrap();
                panic!("the app stopped while starting: {result:?}");
            }
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the app did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Graceful stop; waits until the store is closed.
    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap();
    }

    /// Graceful stop; what `run` returned (a failing store may make the last flush fail).
    pub async fn stop_result(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Waits (bounded) until the recorded deliveries satisfy `pred`.
    pub async fn wait_chat(&self, pred: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        tokio::time::timeout(Duration::from_secs(20), self.port.wait_for(pred))
            .await
            .expect("chat deliveries did not arrive in time")
    }
}

/// An Alertmanager v4 webhook body.
pub fn alertmanager(status: &str, alerts: &[(&str, &str, &str, &str)]) -> String {
    // (alertname, service, severity, status)
    let alerts: Vec<serde_json::Value> = alerts
        .iter()
        .map(|(name, service, sev, st)| {
            serde_json::json!({
                "status": st,
                "labels": { "alertname": name, "service": service, "severity": sev },
                "annotations": { "summary": format!("{name} on {service}"), "runbook_url": "https://runbooks.example/x" },
                "startsAt": "2026-11-29T12:00:00Z",
                "endsAt": if *st == "resolved" { "2026-11-29T12:10:00Z" } else { "0001-01-01T00:00:00Z" },
                "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
                "fingerprint": ""
            })
        })
        .collect();
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"x\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "incidentd",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts
    })
    .to_string()
}

/// A clock that only moves when the test moves it.
pub struct ManualClock(pub std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

impl incidentd::ports::Clock for ManualClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }
}

/// Polls `check` until it yields a value, for state with nothing to wait on (the app's HTTP
/// API, an external process): short pauses between tries, panics after 30 s. The one place
/// the harness polls; everything the fakes see is waited on by condition instead.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
