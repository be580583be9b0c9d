//! The binary as an operator runs it: `check-config` prints every problem at once, including
//! what `run` would refuse; `run --listen` with `--log-format json` logs JSON lines whose fields
//! carry the incident and the source; `health` asks the running bot; SIGTERM stops it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn incidentd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_incidentd"));
    c.env_remove("INCIDENTD_CONFIG")
        .env_remove("INCIDENTD_LISTEN")
        .env_remove("INCIDENTD_STORE_PATH")
        .env_remove("INCIDENTD_LOG_FORMAT")
        .env_remove("INCIDENTD_CONSOLE_ADMIN_TOKEN")
        .env_remove("RUST_LOG");
    c
}

#[test]
fn check_config_reports_every_problem_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"0.0.0.0:8080\"\n[engine]\ncard_coalesce_seconds = \"five\"\n[store]\ncache_mb = 1\n",
    )
    .unwrap();
    let out = incidentd()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    for want in [
        "engine.card_coalesce_seconds:",
        "store.cache_mb: 1 is out of range",
        "console.users: the web console would be reachable on 0.0.0.0:8080",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    // The shipped config passes.
    let out = incidentd().arg("check-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_a_malformed_condition_by_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[[playbooks]]
id = "a"
title = "A"
[[playbooks.actions]]
id = "x"
title = "X"
run = { type = "command", argv = ["/bin/true"] }

[[playbooks]]
id = "model"
title = "Model"
[[playbooks.actions]]
id = "fallback"
title = "Fallback"
when = "annotations.confidence <"
run = { type = "command", argv = ["/bin/true"] }
"#,
    )
    .unwrap();
    let out = incidentd()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let want = "playbooks[1].actions[0].when: expected a value after '<' at column 25 (at line 15, column 8)";
    assert!(err.contains(want), "missing {want:?} in\n{err}");
}

/// Kills the child when the test ends, whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_listens_where_told_and_logs_json_with_incident_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        incidentd()
            .args(["run", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("INCIDENTD_STORE_PATH", dir.path().join("store"))
            // With a console user configured there is no first-run login link (printed as a
            // plain line, for people): every line is JSON.
            .env("INCIDENTD_CONSOLE_ADMIN_TOKEN", "0123456789abcdef0123")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // Every line is one JSON object.
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let next_matching = |pred: &dyn Fn(&serde_json::Value) -> bool| loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = rx.recv_timeout(left).expect("the log line in time");
        if pred(&v) {
            return v;
        }
    };
    let listening = next_matching(&|v| v["fields"]["message"] == "incidentd listening.");
    let addr = listening["fields"]["addr"].as_str().unwrap().to_string();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    assert_eq!(listening["level"], "INFO");

    let body = r#"{"title": "Checkout latency high", "severity": "critical", "labels": {"alertname": "CheckoutLatency", "service": "checkout"}}"#;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{addr}/api/v1/alerts"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    let opened = next_matching(&|v| v["fields"]["message"] == "Incident opened.");
    assert_eq!(opened["fields"]["incident"], "INC-1", "{opened}");
    assert_eq!(opened["fields"]["source"], "generic", "{opened}");

    // `health` asks the running bot; against nothing it fails.
    let out = incidentd()
        .args(["health", "--url", &format!("http://{addr}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = incidentd()
        .args(["health", "--ready", "--url", &format!("http://{addr}")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = incidentd()
        .args(["health", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // SIGTERM: a clean stop.
    let pid = child.0.id() as i32;
    // SAFETY: signals our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    next_matching(&|v| v["fields"]["message"] == "Stopped.");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            assert!(s.success(), "{s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
