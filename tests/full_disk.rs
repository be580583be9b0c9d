//! A real full disk: the store on a 16 MiB tmpfs that the test mounts (root only; skipped with a
//! note otherwise), loaded until it is full. Every request is answered (200 or 503, never a
//! hang), /readyz turns 503, /healthz stays 200, and shutdown ends.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::TestApp;

struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy: a thread stuck in the store may still hold a file.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_writes_with_503_and_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(&dir.path().join("small"), "16m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let config = format!(
        "{}\n[store]\nwrite_timeout_seconds = 2\ncache_mb = 8\n",
        support::TEST_CONFIG
    );
    let app = TestApp::start_with(&dir.path().join("small"), &config, &|_| None).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let filler = "x".repeat(8 * 1024);
    let mut ok = 0;
    let mut unavailable = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for n in 0..20_000 {
        let body = serde_json::json!({
            "title": format!("Disk filler {n}"),
            "severity": "warning",
            "description": filler,
            "labels": { "n": n.to_string() },
        })
        .to_string();
        let r = client
            .post(app.url("/api/v1/alerts"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("a webhook hung on the full disk");
        match r.status().as_u16() {
            200 => ok += 1,
            503 => {
                unavailable += 1;
                let text = r.text().await.unwrap();
                assert!(text.contains("not stored"), "{text}");
                if unavailable >= 5 {
                    break;
                }
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the disk never filled"
        );
    }
    assert!(unavailable >= 5, "the disk never filled ({ok} stored)");
    // After a failed webhook write, /readyz stays 503, however many background writes that
    // still fit (the outbox deleting a delivered entry) and probe syncs succeed in between:
    // only an alert stored again makes it ready.
    let mut readyz = Vec::new();
    for n in 0..20 {
        let body = serde_json::json!({
            "title": format!("Disk filler again {n}"),
            "severity": "warning",
            "description": filler,
            "labels": { "again": n.to_string() },
        })
        .to_string();
        let r = client
            .post(app.url("/api/v1/alerts"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("a webhook hung on the full disk");
        if r.status() != 503 {
            continue;
        }
        let r = client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("/readyz hung");
        readyz.push(r.status().as_u16());
        // And again, after a probe's own sync had the time to succeed.
        let r = client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("/readyz hung");
        readyz.push(r.status().as_u16());
    }
    assert!(!readyz.is_empty(), "no write failed any more");
    assert!(
        readyz.iter().all(|s| *s == 503),
        "/readyz after failed webhook writes: {readyz:?}"
    );
    let r = client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("/healthz hung");
    assert_eq!(r.status(), 200);
    // It stops (the last flush may report the full disk: nothing unacknowledged is kept).
    let stopped = tokio::time::timeout(Duration::from_secs(40), app.stop_result())
        .await
        .expect("shutdown hung on the full disk");
    if let Err(e) = stopped {
        assert!(e.to_string().contains("No space left"), "{e:#}");
    }
    eprintln!("{ok} alerts stored before the disk was full");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_the_real_binary_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(&dir.path().join("small"), "16m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.path().join("incidentd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\npath = {:?}\nwrite_timeout_seconds = 2\ncache_mb = 8\n",
            dir.path().join("small/store").display().to_string()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("INCIDENTD_CONFIG")
        .env_remove("INCIDENTD_LISTEN")
        .env_remove("INCIDENTD_STORE_PATH")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    support::eventually("the bot to get ready", || async {
        let r = client.get(format!("{base}/readyz")).send().await;
        r.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    let filler = "y".repeat(8 * 1024);
    let mut full = false;
    for n in 0..20_000 {
        let body = serde_json::json!({
            "title": format!("Filler {n}"), "description": filler, "labels": { "n": n.to_string() },
        })
        .to_string();
        let r = client
            .post(format!("{base}/api/v1/alerts"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("a webhook hung on the full disk");
        if r.status() == 503 {
            full = true;
            break;
        }
        assert_eq!(r.status(), 200);
    }
    assert!(full, "the disk never filled");
    let pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("SIGTERM did not end the process on a full disk")
        .unwrap();
    eprintln!("exited after SIGTERM: {status}");
}
