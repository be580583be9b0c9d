//! A damaged or partly lost store refuses to start (never serving missing incidents or giving
//! an id out twice), `incidentd store check` says what is wrong, and `store export` /
//! `store import` round-trip a store to identical API output.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use incidentd::ports::StoreError;
use incidentd::store::SledStore;
use support::TestApp;

fn incidentd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(args)
        .env_remove("INCIDENTD_CONFIG")
        .env_remove("INCIDENTD_LISTEN")
        .env_remove("INCIDENTD_STORE_PATH")
        .output()
        .expect("the binary runs")
}

fn alert(n: usize) -> String {
    serde_json::json!({
        "title": format!("Disk {n} full"),
        "severity": if n % 2 == 0 { "critical" } else { "warning" },
        "labels": { "host": format!("db-{n}") },
        "links": [{ "title": "Dashboard", "url": format!("https://grafana.example/d/{n}") }],
    })
    .to_string()
}

/// A store with `n` incidents made by the real app; returns its directory.
async fn store_with(dir: &Path, n: usize) -> PathBuf {
    let app = TestApp::start(dir).await;
    for i in 1..=n {
        let (s, body) = app.post_json("/api/v1/alerts", &alert(i)).await;
        assert_eq!(s, 200, "{body}");
    }
    app.stop().await;
    dir.join("store")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Opening a damaged copy: refused, or (if the damage hit nothing in use) every incident is
/// there and the counter is where it was. Never "opened with less".
fn assert_refused_or_whole(path: &Path, n: u64, what: &str) {
    use incidentd::ports::Store;
    match SledStore::open(path) {
        Err(StoreError::Damaged(msg)) => {
            assert!(msg.contains("is damaged"), "{what}: {msg}");
            assert!(msg.contains("incidentd store check"), "{what}: {msg}");
            assert!(msg.contains("store import"), "{what}: {msg}");
        }
        Err(other) => {
            // sled itself refused (an unreadable log): also a refusal, with its reason.
            let msg = other.to_string();
            assert!(msg.contains("cannot open"), "{what}: {msg}");
        }
        Ok(s) => {
            assert_eq!(
                s.next_incident_id().unwrap(),
                n + 1,
                "{what}: ids would be reused"
            );
            for id in 1..=n {
                assert!(
                    s.get_incident(incidentd::domain::incident::IncidentId(id))
                        .unwrap()
                        .is_some(),
                    "{what}: INC-{id} missing"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_store_is_refused_never_opened_with_less() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 20).await;
    let db_len = std::fs::metadata(store.join("db")).unwrap().len() as usize;

    // The db file deleted: sled would start an empty store and hand out INC-1 again.
    let c = dir.path().join("deleted");
    copy_dir(&store, &c);
    std::fs::remove_file(c.join("db")).unwrap();
    match SledStore::open(&c) {
        Err(StoreError::Damaged(msg)) => {
            assert!(msg.contains("INC-20 were stored"), "{msg}");
            assert!(msg.contains("incidents were lost"), "{msg}");
        }
        other => panic!("opened a store without its db file: {:?}", other.err()),
    }
    // The bot refuses to start on it, with the same words and the recovery commands.
    let config = dir.path().join("deleted.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n",
            c.display().to_string()
        ),
    )
    .unwrap();
    let out = incidentd(&["run", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("incidentd store import"), "{err}");
    // `store check` says so too, and exits 1.
    let out = incidentd(&["store", "check", "--store", c.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("DAMAGED"), "{said}");

    // A zeroed header, 64 bytes flipped in the middle, a byte flipped every 4 KiB.
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damages: [(&str, Damage); 3] = [
        (
            "zeroed header",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len().min(4096);
                b[..n].fill(0)
            }),
        ),
        (
            "64 bytes flipped in the middle",
            Box::new(move |b: &mut Vec<u8>| {
                let mid = db_len / 2;
                for x in &mut b[mid..mid + 64] {
                    *x ^= 0xa5;
                }
            }),
        ),
        (
            "a byte flipped every 4 KiB",
            Box::new(|b: &mut Vec<u8>| {
                for at in (100..b.len()).step_by(4096) {
                    b[at] ^= 0xff;
                }
            }),
        ),
    ];
    for (i, (what, damage)) in damages.iter().enumerate() {
        let c = dir.path().join(format!("damaged-{i}"));
        copy_dir(&store, &c);
        let mut bytes = std::fs::read(c.join("db")).unwrap();
        damage(&mut bytes);
        std::fs::write(c.join("db"), &bytes).unwrap();
        assert_refused_or_whole(&c, 20, what);
    }

    // The sound store opens, and `store check` says it is sound.
    let out = incidentd(&["store", "check", "--store", store.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("store ok: 20 incidents"), "{said}");
}

/// Every API answer that shows stored state, for the incidents there are.
async fn api_view(app: &TestApp, n: u64) -> Vec<(String, String)> {
    let mut paths = vec!["/api/v1/incidents?status=all".to_string()];
    for id in 1..=n {
        paths.push(format!("/api/v1/incidents/INC-{id}"));
        paths.push(format!("/api/v1/incidents/INC-{id}/report.md"));
    }
    let mut out = Vec::new();
    for p in paths {
        let r = app.http.get(app.url(&p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
        out.push((p, r.text().await.unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn export_and_import_round_trip_to_identical_api_output() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    for i in 1..=6 {
        let (s, _) = app.post_json("/api/v1/alerts", &alert(i)).await;
        assert_eq!(s, 200);
    }
    // A repeat and a clear, so timelines have more than one event.
    app.post_json("/api/v1/alerts", &alert(2)).await;
    let (s, _) = app
        .post_json(
            "/api/v1/alerts/alertmanager",
            &support::alertmanager("resolved", &[("HighLatency", "api", "critical", "firing")]),
        )
        .await;
    assert_eq!(s, 200);
    let before = api_view(&app, 7).await;
    app.stop().await;

    // Export with the binary, import into a new directory, start the app on it.
    let export = dir.path().join("backup.jsonl");
    let out = incidentd(&[
        "store",
        "export",
        "--store",
        dir.path().join("store").to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&export).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["format"], "incidentd-store");
    assert_eq!(header["version"], 1);
    assert_eq!(header["next_id"], 8);
    assert!(text.lines().last().unwrap().starts_with("{\"end\":"));

    let restored = tempfile::tempdir().unwrap();
    let out = incidentd(&[
        "store",
        "import",
        "--store",
        restored.path().join("store").to_str().unwrap(),
        "--from",
        export.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Importing again into the same (now full) store is refused.
    let again = incidentd(&[
        "store",
        "import",
        "--store",
        restored.path().join("store").to_str().unwrap(),
        "--from",
        export.to_str().unwrap(),
    ]);
    assert!(!again.status.success());

    let app = TestApp::start(restored.path()).await;
    let after = api_view(&app, 7).await;
    for ((p, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{p} differs after the round trip");
    }
    // The next incident gets the next id, not one given out before.
    let (s, body) = app.post_json("/api/v1/alerts", &alert(99)).await;
    assert_eq!(s, 200);
    assert_eq!(body["results"][0]["incident"], "INC-8", "{body}");
    app.stop().await;

    // A cut export is refused.
    let cut = dir.path().join("cut.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&cut, lines[..lines.len() - 2].join("\n")).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = incidentd(&[
        "store",
        "import",
        "--store",
        fresh.path().join("store").to_str().unwrap(),
        "--from",
        cut.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cut short"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn incidentd_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(args)
        .env_remove("INCIDENTD_CONFIG")
        .env_remove("INCIDENTD_LISTEN")
        .env_remove("INCIDENTD_STORE_PATH")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sled_to_postgres_and_back_round_trips_to_identical_api_output() {
    // The store's client blocks: set up off the async threads, as the app calls it.
    let Some(url) = tokio::task::spawn_blocking(incidentd::store::pgtest::database)
        .await
        .unwrap()
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    for i in 1..=5 {
        let (s, _) = app.post_json("/api/v1/alerts", &alert(i)).await;
        assert_eq!(s, 200);
    }
    app.post_json("/api/v1/alerts", &alert(3)).await;
    let (s, _) = app
        .post_json(
            "/api/v1/alerts/alertmanager",
            &support::alertmanager("resolved", &[("HighLatency", "api", "critical", "firing")]),
        )
        .await;
    assert_eq!(s, 200);
    let before = api_view(&app, 6).await;
    app.stop().await;

    // sled → export → PostgreSQL (the binary, with a PostgreSQL config and the URL in the env).
    let export = dir.path().join("from-sled.jsonl");
    ok(&incidentd(&[
        "store",
        "export",
        "--store",
        dir.path().join("store").to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]));
    let pg_config = dir.path().join("pg.toml");
    std::fs::write(&pg_config, "[store]\nbackend = \"postgres\"\n").unwrap();
    let env = [("INCIDENTD_DATABASE_URL", url.as_str())];
    let pg = |args: &[&str]| {
        let mut all = vec!["--config", pg_config.to_str().unwrap()];
        all.extend_from_slice(args);
        incidentd_env(&all, &env)
    };
    ok(&pg(&[
        "store",
        "import",
        "--from",
        export.to_str().unwrap(),
    ]));
    let again = pg(&["store", "import", "--from", export.to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "a second import into a full database"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let check = pg(&["store", "check"]);
    ok(&check);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.contains("store ok: 6 incidents"), "{said}");

    // The app on PostgreSQL answers the same.
    let u = url.clone();
    let store = tokio::task::spawn_blocking(move || incidentd::store::pg::PgStore::open(&u, None))
        .await
        .unwrap()
        .unwrap();
    let on_pg = tempfile::tempdir().unwrap();
    let app = TestApp::start_on_store(
        on_pg.path(),
        support::TEST_CONFIG,
        std::sync::Arc::new(store),
    )
    .await;
    let after = api_view(&app, 6).await;
    for ((p, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{p} differs on PostgreSQL");
    }
    app.stop().await;

    // PostgreSQL → export → a new sled store: the same again.
    let back = dir.path().join("from-pg.jsonl");
    ok(&pg(&["store", "export", "--out", back.to_str().unwrap()]));
    let restored = tempfile::tempdir().unwrap();
    ok(&incidentd(&[
        "store",
        "import",
        "--store",
        restored.path().join("store").to_str().unwrap(),
        "--from",
        back.to_str().unwrap(),
    ]));
    let app = TestApp::start(restored.path()).await;
    let after = api_view(&app, 6).await;
    for ((p, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{p} differs after sled → PostgreSQL → sled");
    }
    let (s, body) = app.post_json("/api/v1/alerts", &alert(99)).await;
    assert_eq!(s, 200);
    assert_eq!(body["results"][0]["incident"], "INC-7", "{body}");
    app.stop().await;
}
