//! Storage faults are loud and safe: a write that cannot be made durable fails its request with
//! 503, nothing blocks, `/readyz` is 503 while writes fail and 200 again once they succeed (after
//! a failed webhook write: once an alert is stored again), and shutdown ends even on a hung disk.

mod support;

use std::sync::Arc;
use std::time::Duration;

use incidentd::ports::Store;
use support::faulty_store::FaultyStore;
use support::TestApp;

fn config() -> String {
    format!(
        "{}\n[store]\nwrite_timeout_seconds = 1\n",
        support::TEST_CONFIG
    )
}

fn alert(title: &str) -> String {
    serde_json::json!({ "title": title, "severity": "critical" }).to_string()
}

async fn readyz(app: &TestApp) -> (u16, String) {
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Polls `/readyz` until it answers `want` (bounded).
async fn wait_readyz(app: &TestApp, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, text) = readyz(app).await;
        if status == want {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status} ({text}), expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_writes_answer_503_and_readyz_follows_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sled: Arc<dyn Store> =
        Arc::new(incidentd::store::SledStore::open(&dir.path().join("faulty")).unwrap());
    let store = FaultyStore::new(sled.clone());
    let app = TestApp::start_on_store(dir.path(), &config(), store.clone()).await;
    let (s, first) = app.post_json("/api/v1/alerts", &alert("Disk A")).await;
    assert_eq!(s, 200, "{first}");

    store.fail_writes(true);
    let (s, body) = app.post_json("/api/v1/alerts", &alert("Disk B")).await;
    assert_eq!(s, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("not stored, retry later"), "{error}");
    assert!(error.contains("No space left on device"), "{error}");
    let why = wait_readyz(&app, 503).await;
    assert!(why.contains("failing"), "{why}");
    // Still alive and still answering: liveness and reads do not depend on writes.
    let (s, _) = app.get("/healthz").await;
    assert_eq!(s, 200);
    let (s, _) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(s, 200);
    // Every write keeps failing fast while the disk is full.
    for n in 0..5 {
        let (s, body) = app
            .post_json("/api/v1/alerts", &alert(&format!("Disk C{n}")))
            .await;
        assert_eq!(s, 503, "{body}");
    }

    // Space is back: the next alert is stored and acknowledged, and that makes it ready (a
    // probe's sync alone does not, after a failed webhook write: see the next test).
    store.fail_writes(false);
    let (s, body) = app.post_json("/api/v1/alerts", &alert("Disk D")).await;
    assert_eq!(s, 200, "{body}");
    wait_readyz(&app, 200).await;
    app.stop().await;
    // No id was given out twice.
    let all = sled
        .list_incidents(&incidentd::ports::IncidentFilter::default())
        .unwrap();
    let mut ids: Vec<u64> = all.iter().map(|i| i.id.0).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "an id was reused: {ids:?}");
    assert!(all.iter().any(|i| i.title == "Disk D"));
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_stays_503_after_a_failed_webhook_write_until_an_alert_is_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let sled: Arc<dyn Store> =
        Arc::new(incidentd::store::SledStore::open(&dir.path().join("faulty")).unwrap());
    let store = FaultyStore::new(sled.clone());
    let app = TestApp::start_on_store(dir.path(), &config(), store.clone()).await;
    let (s, first) = app.post_json("/api/v1/alerts", &alert("Disk A")).await;
    assert_eq!(s, 200, "{first}");
    // Nearly full: an alert's write does not fit, smaller writes and syncs still do.
    store.fail_incident_writes(true);
    for n in 0..3 {
        let (s, body) = app
            .post_json("/api/v1/alerts", &alert(&format!("Disk B{n}")))
            .await;
        assert_eq!(s, 503, "{body}");
        // Each probe syncs, and that sync succeeds: it does not make it ready, nor does the
        // writer's own work in between (an engine sync, an empty group commit).
        for _ in 0..3 {
            let (status, why) = readyz(&app).await;
            assert_eq!(
                status, 503,
                "ready again after a failed webhook write: {why}"
            );
            assert!(why.contains("alert"), "{why}");
        }
    }
    // Room again: the next alert is stored and acknowledged, and that makes it ready.
    store.fail_incident_writes(false);
    let (status, _) = readyz(&app).await;
    assert_eq!(status, 503, "not before an alert is stored");
    let (s, body) = app.post_json("/api/v1/alerts", &alert("Disk C")).await;
    assert_eq!(s, 200, "{body}");
    let (status, why) = readyz(&app).await;
    assert_eq!(status, 200, "{why}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_sync_fails_requests_in_time_and_shutdown_still_ends() {
    let dir = tempfile::tempdir().unwrap();
    let sled: Arc<dyn Store> =
        Arc::new(incidentd::store::SledStore::open(&dir.path().join("faulty")).unwrap());
    let store = FaultyStore::new(sled);
    let app = TestApp::start_on_store(dir.path(), &config(), store.clone()).await;
    store.hang_syncs(true);
    // The request fails after `write_timeout_seconds` instead of hanging.
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        app.post_json("/api/v1/alerts", &alert("Stalled disk")),
    )
    .await
    .expect("the webhook hung");
    assert_eq!(r.0, 503, "{}", r.1);
    assert!(
        r.1["error"].as_str().unwrap().contains("did not confirm"),
        "{}",
        r.1
    );
    let why = wait_readyz(&app, 503).await;
    assert!(why.contains("has not finished"), "{why}");
    let (s, _) = app.get("/healthz").await;
    assert_eq!(s, 200);
    // Shutdown ends although a sync is stuck in the store.
    tokio::time::timeout(Duration::from_secs(30), app.stop())
        .await
        .expect("shutdown hung on a stalled store");
    store.hang_syncs(false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stall_that_ends_makes_it_ready_again() {
    let dir = tempfile::tempdir().unwrap();
    let sled: Arc<dyn Store> =
        Arc::new(incidentd::store::SledStore::open(&dir.path().join("faulty")).unwrap());
    let store = FaultyStore::new(sled);
    let app = TestApp::start_on_store(dir.path(), &config(), store.clone()).await;
    store.hang_syncs(true);
    let (s, _) = app.post_json("/api/v1/alerts", &alert("Slow disk")).await;
    assert_eq!(s, 503);
    wait_readyz(&app, 503).await;
    store.hang_syncs(false);
    wait_readyz(&app, 200).await;
    // The alert that timed out was made durable by the sync that finished: the retry updates
    // the same incident instead of opening a second one.
    let (s, body) = app.post_json("/api/v1/alerts", &alert("Slow disk")).await;
    assert_eq!(s, 200, "{body}");
    let (_, list) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 1, "{list}");
    app.stop().await;
}
