//! The real Prometheus Alertmanager (Debian's `prometheus-alertmanager`, 0.25) on loopback,
//! sending its webhook to the real app: alerts are posted to Alertmanager's own API, and what
//! incidentd makes of Alertmanager's notifications is checked.
//!
//! - two pods of one group (`group_by: [alertname]`) are one incident;
//! - the group clears piecemeal: the incident resolves after the quiet period, and nobody is
//!   paged although the detection target passed in between;
//! - a re-fire (a flap) reopens the same incident.
//!
//! With `CI` set the test fails when the binary is missing; elsewhere it says so and passes
//! (install it: `apt-get install -y prometheus-alertmanager`). Starting Alertmanager is
//! `support::alertmanager`'s, shared with `tests/alertmanager_chat.rs`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use incidentd::ports::Delivery;
use serde_json::Value;
use support::alertmanager::{binary, webhook_receiver, Alertmanager};
use support::fake_discord::eventually;
use support::TestApp;

/// A pager endpoint that counts the pages it gets.
async fn pager() -> (String, Arc<AtomicUsize>) {
    let pages = Arc::new(AtomicUsize::new(0));
    let p = pages.clone();
    let app = axum::Router::new().route(
        "/page",
        axum::routing::post(move || {
            let p = p.clone();
            async move {
                p.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/page", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, pages)
}

async fn incidents(app: &TestApp) -> Vec<Value> {
    let (s, v) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(s, 200, "{v}");
    v["incidents"].as_array().cloned().unwrap_or_default()
}

/// Member statuses of the incident's group: (firing, resolved).
fn counts(inc: &Value) -> (usize, usize) {
    let members = inc["group"]["members"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let firing = members.values().filter(|m| m["status"] == "firing").count();
    (firing, members.len() - firing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_alertmanager_groups_clears_piecemeal_without_paging_and_a_flap_reopens() {
    let Some(bin) = binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (pager_url, pages) = pager().await;
    // The detection target (5 s) passes while the group is clear and waiting for its quiet
    // period (8 s): a clear that did not stop escalation would page.
    let config = format!(
        r#"
[engine]
card_coalesce_seconds = 0
resolve_after_clear_seconds = 8
flap_window_seconds = 600

[severity.P2]
detect_seconds = 5
repair_seconds = 1800
approval = "optional"

[escalation]
oncall = ["console:alice"]
[escalation.pager]
id = "pager"
title = "Page"
run = {{ type = "http", method = "POST", url = "{pager_url}", expect_status = 202 }}
"#
    );
    let app = TestApp::start_with(dir.path(), &config, &|_| None).await;
    let am = Alertmanager::start(
        &bin,
        dir.path(),
        &webhook_receiver(&app.url("/api/v1/alerts/alertmanager")),
    )
    .await;

    // Two pods of one group: one incident with both.
    am.post(&[("api-1", true), ("api-2", true)]).await;
    let inc = eventually("one incident with both pods", || async {
        let list = incidents(&app).await;
        let one = list.first()?;
        (counts(one) == (2, 0)).then(|| one.clone())
    })
    .await;
    assert_eq!(incidents(&app).await.len(), 1);
    let id = inc["id"].clone();
    assert_eq!(inc["severity"], "P2");

    // Piecemeal: one pod clears, the incident stays open.
    am.post(&[("api-1", false), ("api-2", true)]).await;
    let inc = eventually("api-1 cleared", || async {
        let list = incidents(&app).await;
        let one = list.first()?;
        (counts(one) == (1, 1)).then(|| one.clone())
    })
    .await;
    assert_eq!(inc["status"], "open", "{inc}");

    // The other clears: resolved after the quiet period, which ends after the detection target.
    am.post(&[("api-1", false), ("api-2", false)]).await;
    let inc = eventually("resolved after the quiet period", || async {
        let list = incidents(&app).await;
        let one = list.first()?;
        (one["status"] == "resolved").then(|| one.clone())
    })
    .await;
    assert_eq!(inc["id"], id);
    let (_, detail) = app
        .get(&format!("/api/v1/incidents/{}", id.as_str().unwrap()))
        .await;
    let texts: Vec<String> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        !texts.iter().any(|t| t.to_lowercase().contains("escalat")),
        "{texts:#?}"
    );
    assert_eq!(pages.load(Ordering::SeqCst), 0, "nobody is paged");
    let mentioned = app
        .port
        .delivered()
        .iter()
        .any(|r| matches!(&r.body, Delivery::Note { mentions, .. } if !mentions.is_empty()));
    assert!(!mentioned, "nobody is mentioned");

    // A flap: one pod fires again and the same incident reopens.
    am.post(&[("api-1", true)]).await;
    let inc = eventually("the incident reopened", || async {
        let list = incidents(&app).await;
        let one = list.first()?;
        (one["status"] != "resolved").then(|| one.clone())
    })
    .await;
    assert_eq!(inc["id"], id);
    assert_eq!(incidents(&app).await.len(), 1, "no second incident");
    drop(am);
    app.stop().await;
}
