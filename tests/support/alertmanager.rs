//! The real Prometheus Alertmanager (Debian's `prometheus-alertmanager`, 0.25) on loopback, for
//! the end-to-end tests: started with a receiver the test chooses (incidentd's webhook, or
//! Alertmanager's own `slack_configs` / `discord_configs` pointed at the fakes), fed through its
//! own API, killed on drop.
//!
//! With `CI` set, a missing binary fails the test; elsewhere the test says so and passes
//! (install it: `apt-get install -y prometheus-alertmanager`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::{json, Value};

use super::fake_discord::eventually;

pub const BINARY: &str = "prometheus-alertmanager";

/// The binary, or `None` (outside CI) when it is not installed.
pub fn binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(BINARY))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{BINARY} is not installed: .ci/run installs it (apt-get install -y prometheus-alertmanager)"
        );
        eprintln!(
            "SKIPPED: {BINARY} is not installed (apt-get install -y prometheus-alertmanager)"
        );
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A receiver sending Alertmanager's webhook (`version: "4"`) to `url`.
pub fn webhook_receiver(url: &str) -> String {
    format!("    webhook_configs:\n      - url: \"{url}\"\n        send_resolved: true\n")
}

/// A running Alertmanager, killed on drop.
pub struct Alertmanager {
    pub base: String,
    _child: tokio::process::Child,
    log: PathBuf,
}

impl Alertmanager {
    /// Starts one routing everything to one receiver, `receiver` being the YAML of its
    /// `*_configs` (indented four spaces, as [`webhook_receiver`] makes it). Groups by
    /// `alertname`, with one-second waits so tests do not wait long for a notification.
    pub async fn start(bin: &Path, dir: &Path, receiver: &str) -> Alertmanager {
        let config = format!(
            r#"
route:
  receiver: incidentd
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: incidentd
{receiver}"#
        );
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(&cfg, config).unwrap();
        let port = free_port();
        let log = dir.join("alertmanager.log");
        let child = tokio::process::Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager {
            base: format!("http://127.0.0.1:{port}"),
            _child: child,
            log,
        };
        let http = reqwest::Client::new();
        let url = format!("{}/-/ready", am.base);
        eventually("Alertmanager ready", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(url).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
        am
    }

    /// What Alertmanager logged so far (its notification errors say why a post failed).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Posts `KubePodCrashLooping` alerts of namespace `shop` to Alertmanager's API:
    /// `(pod, firing)`; a cleared alert ends now.
    pub async fn post(&self, alerts: &[(&str, bool)]) {
        let now = Utc::now();
        let body: Vec<Value> = alerts
            .iter()
            .map(|(pod, firing)| {
                let ends = if *firing {
                    now + ChronoDuration::hours(1)
                } else {
                    now - ChronoDuration::seconds(1)
                };
                json!({
                    "labels": {
                        "alertname": "KubePodCrashLooping", "namespace": "shop",
                        "pod": pod, "severity": "warning"
                    },
                    "annotations": {
                        "summary": format!("Pod shop/{pod} is crash looping"),
                        "description": format!("Pod shop/{pod} restarted 5 times in 10 minutes.")
                    },
                    "startsAt": (now - ChronoDuration::minutes(1)).to_rfc3339(),
                    "endsAt": ends.to_rfc3339(),
                    "generatorURL": "http://prometheus:9090/graph"
                })
            })
            .collect();
        let r = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "{}; log: {}",
            r.text().await.unwrap_or_default(),
            self.log()
        );
    }
}
