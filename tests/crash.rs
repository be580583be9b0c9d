//! Durability of the real binary: alerts acknowledged before a `kill -9` (or a SIGTERM) are all
//! there after a restart, exactly once. Runs `target/.../incidentd run` as a child process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

struct Bot {
    child: Child,
    base: String,
}

/// A failed assertion must not leave a bot running.
impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the bot on a free loopback port and waits for its "listening" line.
fn start(store: &Path) -> Bot {
    start_with(store, None)
}

fn start_with(store: &Path, config: Option<&Path>) -> Bot {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_incidentd"));
    cmd.arg("run");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .env("INCIDENTD_LISTEN", "127.0.0.1:0")
        .env("INCIDENTD_STORE_PATH", store)
        .env("RUST_LOG", "info")
        .env_remove("INCIDENTD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start incidentd");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
            {
                if line.contains("incidentd listening") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.to_string());
                    }
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("incidentd did not say where it listens");
    Bot {
        child,
        base: format!("http://{addr}"),
    }
}

/// Posts distinct alerts from several senders until `stop_after` were acknowledged in total,
/// then returns the acknowledged (title, incident) pairs while the senders keep going.
async fn load_until(
    base: &str,
    stop_after: usize,
) -> (
    Arc<Mutex<Vec<(String, String)>>>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let notify = Arc::new(tokio::sync::Notify::new());
    let mut senders = Vec::new();
    for s in 0..4 {
        let acked = acked.clone();
        let notify = notify.clone();
        let url = format!("{base}/api/v1/alerts");
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..100_000 {
                let title = format!("crash-test sender {s} alert {i}");
                let body = serde_json::json!({ "title": title, "severity": "warning" });
                let Ok(r) = http.post(&url).json(&body).send().await else {
                    break; // the process is gone
                };
                if r.status() != 200 {
                    break;
                }
                let Ok(v) = r.json::<Value>().await else {
                    break;
                };
                let id = v["results"][0]["incident"].as_str().unwrap().to_string();
                acked.lock().unwrap().push((title, id));
                notify.notify_one();
            }
        }));
    }
    loop {
        let n = acked.lock().unwrap().len();
        if n >= stop_after {
            break;
        }
        tokio::time::timeout(Duration::from_secs(60), notify.notified())
            .await
            .expect("alerts are not being acknowledged");
    }
    (acked, senders)
}

async fn all_incidents(base: &str) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{base}/api/v1/incidents?status=all&limit=1000"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["incidents"].as_array().unwrap().clone()
}

fn assert_all_present(acked: &[(String, String)], incidents: &[Value]) {
    for (title, id) in acked {
        let found: Vec<&Value> = incidents.iter().filter(|i| i["title"] == *title).collect();
        assert_eq!(
            found.len(),
            1,
            "acknowledged alert {title:?} ({id}) must be stored exactly once"
        );
        assert_eq!(found[0]["id"].as_str(), Some(id.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut bot = start(&store);
    let (acked, senders) = load_until(&bot.base, 300).await;
    bot.child.kill().unwrap(); // SIGKILL, mid-load
    bot.child.wait().unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    // The store as the kill left it, read before any writer can fold what the last commits
    // wrote as per-commit records: every acknowledged incident has its opening event.
    {
        use incidentd::ports::Store;
        let opened = incidentd::store::SledStore::open(&store).unwrap();
        for (title, id) in &acked {
            let n: u64 = id.trim_start_matches("INC-").parse().unwrap();
            let timeline = opened
                .timeline(incidentd::domain::incident::IncidentId(n))
                .unwrap();
            let first = timeline.first().map(|e| serde_json::to_value(e).unwrap());
            assert_eq!(
                first.as_ref().map(|e| &e["type"]),
                Some(&Value::from("opened")),
                "{title} ({id}) in the killed store"
            );
        }
    }

    let mut bot = start(&store);
    let incidents = all_incidents(&bot.base).await;
    assert_all_present(&acked, &incidents);
    // Each with its timeline (written with the incident, in the same commit).
    for (title, id) in &acked {
        let v: Value = reqwest::get(format!("{}/api/v1/incidents/{id}", bot.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let timeline = v["timeline"].as_array().unwrap();
        assert_eq!(
            timeline[0]["type"], "opened",
            "{title} ({id}): {timeline:?}"
        );
    }
    // The id counter survived too: a new alert gets a fresh id.
    let v: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/alerts", bot.base))
        .json(&serde_json::json!({ "title": "after the crash" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_id = v["results"][0]["incident"].as_str().unwrap().to_string();
    assert!(acked.iter().all(|(_, id)| *id != new_id), "{new_id} reused");
    bot.child.kill().unwrap();
    bot.child.wait().unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_accepted_work_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut bot = start(&store);
    let (acked, senders) = load_until(&bot.base, 200).await;
    let status = Command::new("kill")
        .args(["-TERM", &bot.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = bot.child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let mut bot = start(&store);
    let incidents = all_incidents(&bot.base).await;
    assert_all_present(&acked, &incidents);
    bot.child.kill().unwrap();
    bot.child.wait().unwrap();
}

/// A P3 alert whose playbook action runs automatically and takes long: the bot is killed while
/// it runs. After the restart the execution is `interrupted`, a human is asked, and nothing is
/// run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_remediation_leaves_it_interrupted_and_not_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let marker = dir.path().join("runs");
    let config = dir.path().join("incidentd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[playbooks]]
id = "orch"
title = "Orchestration"
kinds = ["orchestration_failure"]
[[playbooks.actions]]
id = "slow-restart"
title = "Slow restart"
auto = true
timeout_seconds = 60
run = {{ type = "command", argv = ["/bin/sh", "-c", "echo run >> {m}; exec sleep 30"] }}
"#,
            m = marker.display()
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let mut bot = start_with(&store, Some(&config));
    let r = http
        .post(format!("{}/api/v1/alerts", bot.base))
        .json(&serde_json::json!({ "title": "Planner agent deadlock", "severity": "info" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Wait (bounded) until the action is running: Started is durable before launch.
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let v: Value = http
                .get(format!("{}/api/v1/incidents/INC-1", bot.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["executions"][0]["status"] == "started" && marker.exists() {
                return v;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the action never started");
    assert_eq!(started["executions"][0]["key"], "INC-1:slow-restart");
    bot.child.kill().unwrap();
    bot.child.wait().unwrap();

    let bot = start_with(&store, Some(&config));
    let v: Value = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let v: Value = http
                .get(format!("{}/api/v1/incidents/INC-1", bot.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let noted = v["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "execution_interrupted");
            if noted {
                return v;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the interruption was not recorded");
    assert_eq!(v["executions"][0]["status"], "interrupted");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().lines().count(),
        1,
        "never re-run automatically"
    );
    let started_events = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "execution_started")
        .count();
    assert_eq!(started_events, 1);
}
