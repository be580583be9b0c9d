//! The real app over HTTP on loopback: Alertmanager/Grafana/generic webhooks in, incidents,
//! timeline and outbox out; restarts; bad input that gets a clear 4xx and stores nothing.

mod support;

use incidentd::chat::recording::Recorded;
use incidentd::ports::{ChatError, Delivery};
use serde_json::Value;
use support::{alertmanager, TestApp};

fn cards(r: &[Recorded]) -> usize {
    r.iter()
        .filter(|r| matches!(r.body, Delivery::PostCard { .. }))
        .count()
}

async fn open_incidents(app: &TestApp) -> Vec<Value> {
    let (s, v) = app.get("/api/v1/incidents").await;
    assert_eq!(s, 200);
    v["incidents"].as_array().unwrap().clone()
}

#[tokio::test]
async fn alertmanager_alerts_open_one_incident_per_fingerprint_and_repeats_update_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    let body = alertmanager(
        "firing",
        &[
            ("HighErrorRate", "api", "critical", "firing"),
            ("HighLatency", "api", "warning", "firing"),
            ("HighErrorRate", "api", "critical", "firing"), // same alert twice in one request
        ],
    );
    let (s, v) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], 3);
    let r = v["results"].as_array().unwrap();
    assert_eq!(r[0]["incident"], "INC-1");
    assert_eq!(r[0]["created"], true);
    assert_eq!(r[1]["incident"], "INC-2");
    assert_eq!(r[2]["incident"], "INC-1");
    assert_eq!(r[2]["created"], false);

    // Acknowledged means stored: the API sees it at once.
    let list = open_incidents(&app).await;
    assert_eq!(list.len(), 2);
    let inc1 = list.iter().find(|i| i["id"] == "INC-1").unwrap();
    assert_eq!(inc1["severity"], "P1");
    assert_eq!(inc1["kind"], "tool_api_failure");
    assert_eq!(inc1["alert_count"], 2);
    assert_eq!(inc1["playbook"], "api");

    // Each incident gets exactly one card.
    let rec = app.wait_chat(|r| cards(r) == 2).await;
    assert_eq!(cards(&rec), 2);

    // The same alerts again (Alertmanager's repeat_interval): no new incident, no new card.
    let (s, v) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(s, 200);
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["created"] == false));
    let list = open_incidents(&app).await;
    assert_eq!(list.len(), 2);
    assert_eq!(
        list.iter().find(|i| i["id"] == "INC-1").unwrap()["alert_count"],
        4
    );

    // Details with timeline and card.
    let (s, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(s, 200);
    assert_eq!(
        v["incident"]["title"].as_str().unwrap().split(' ').next(),
        Some("HighErrorRate")
    );
    assert_eq!(v["timeline"][0]["type"], "opened");
    assert_eq!(v["card"]["kind_name"], "Tool/API failure");
    assert!(v["card"]["links"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["title"] == "Runbook"));

    // Resolved: INC-1's playbook resolves on clear; INC-2 (no playbook) only marks the alert cleared.
    let resolved = alertmanager(
        "resolved",
        &[
            ("HighErrorRate", "api", "critical", "resolved"),
            ("HighLatency", "api", "warning", "resolved"),
        ],
    );
    let (s, _) = app
        .post_json("/api/v1/alerts/alertmanager", &resolved)
        .await;
    assert_eq!(s, 200);
    let (_, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(v["incident"]["status"], "resolved");
    let (_, v) = app.get("/api/v1/incidents/INC-2").await;
    assert_eq!(v["incident"]["status"], "open");
    assert_eq!(v["incident"]["alert_status"], "resolved");
    let (_, v) = app.get("/api/v1/incidents?status=resolved").await;
    assert_eq!(v["incidents"].as_array().unwrap().len(), 1);

    // It fires again right after incidentd resolved it (within the flap window): the same
    // incident reopens in its thread; INC-2, still open, counts the repeat.
    let (_, v) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(v["results"][0]["incident"], "INC-1");
    assert_eq!(v["results"][0]["created"], false);
    assert_eq!(v["results"][1]["incident"], "INC-2");
    let (_, inc1) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(inc1["incident"]["status"], "open");
    assert_eq!(inc1["incident"]["alert_status"], "firing");
    assert!(inc1["incident"].get("recurrence").is_none());
    let last = inc1["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "alert_refired");
    assert_eq!(open_incidents(&app).await.len(), 2);
    // The repeat in the same request updates the reopened incident, not a third one.
    assert_eq!(v["results"][2]["incident"], "INC-1");
    let rec = app
        .wait_chat(|r| {
            r.iter().any(
                |r| matches!(&r.body, Delivery::Note { text, .. } if text.starts_with("🔁 INC-1 reopened")),
            )
        })
        .await;
    assert_eq!(cards(&rec), 2, "no new thread");
    app.stop().await;
}

#[tokio::test]
async fn a_refire_outside_the_flap_window_is_a_new_incident_that_recurs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::TEST_CONFIG.replace(
        "card_coalesce_seconds = 5",
        "card_coalesce_seconds = 5\nflap_window_seconds = 0",
    );
    let app = TestApp::start_with(dir.path(), &cfg, &|_| None).await;
    let body = alertmanager(
        "firing",
        &[
            ("HighErrorRate", "api", "critical", "firing"),
            ("HighLatency", "api", "warning", "firing"),
        ],
    );
    app.post_json("/api/v1/alerts/alertmanager", &body).await;
    let resolved = alertmanager(
        "resolved",
        &[("HighErrorRate", "api", "critical", "resolved")],
    );
    app.post_json("/api/v1/alerts/alertmanager", &resolved)
        .await;
    let (_, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(v["incident"]["status"], "resolved");

    // It fires again after being resolved: a new incident (the old one stays resolved).
    let (_, v) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(v["results"][0]["incident"], "INC-3");
    assert_eq!(v["results"][0]["created"], true);
    let (_, inc3) = app.get("/api/v1/incidents/INC-3").await;
    assert_eq!(inc3["incident"]["recurrence"]["previous"], 1);
    assert_eq!(inc3["incident"]["recurrence"]["last"], "INC-1");
    assert_eq!(
        inc3["card"]["recurrence"],
        "Recurred: 2nd time in 30 days, last INC-1, fixed by incidentd"
    );
    let (_, inc1) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(inc1["incident"]["status"], "resolved");
    let (_, inc2) = app.get("/api/v1/incidents/INC-2").await;
    assert!(inc2["incident"].get("recurrence").is_none());
    assert_eq!(v["results"][1]["incident"], "INC-2");
    app.stop().await;
}

#[tokio::test]
async fn restart_finds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let body = alertmanager("firing", &[("DiskFull", "db", "warning", "firing")]);
    let app = TestApp::start(dir.path()).await;
    let (_, v) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(v["results"][0]["incident"], "INC-1");
    let (_, before) = app.get("/api/v1/incidents/INC-1").await;
    app.stop().await;

    let app = TestApp::start(dir.path()).await;
    let (s, after) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(s, 200);
    assert_eq!(before["incident"], after["incident"]);
    assert_eq!(before["timeline"], after["timeline"]);
    // The fingerprint index survived: a repeat updates INC-1.
    let (_, v) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(v["results"][0]["incident"], "INC-1");
    assert_eq!(v["results"][0]["created"], false);
    // The id counter survived.
    let other = alertmanager("firing", &[("CPUHigh", "db", "warning", "firing")]);
    let (_, v) = app.post_json("/api/v1/alerts/alertmanager", &other).await;
    assert_eq!(v["results"][0]["incident"], "INC-2");
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = |k: &str| (k == "AM_TOKEN").then(|| "s3cret".to_string());
    let cfg = format!(
        "{}\n[server]\nmax_body_bytes = 2048\n[webhooks.alertmanager]\ntoken_env = \"AM_TOKEN\"\n",
        support::TEST_CONFIG
    );
    let app = TestApp::start_with(dir.path(), &cfg, &env).await;
    let good = alertmanager("firing", &[("X", "api", "critical", "firing")]);
    let post = |path: &'static str, ct: &'static str, auth: Option<&'static str>, body: String| {
        let mut rb = app
            .http
            .post(app.url(path))
            .header("content-type", ct)
            .body(body);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        async move {
            let r = rb.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let am = "/api/v1/alerts/alertmanager";
    let ok_auth = Some("Bearer s3cret");

    let (s, v) = post(am, "application/json", None, good.clone()).await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (401, "missing or wrong bearer token")
    );
    let (s, _) = post(am, "application/json", Some("Bearer wrong"), good.clone()).await;
    assert_eq!(s, 401);
    let (s, v) = post(am, "text/plain", ok_auth, good.clone()).await;
    assert_eq!(s, 415);
    assert!(v["error"].as_str().unwrap().contains("application/json"));
    let (s, v) = post(am, "application/json", ok_auth, "{not json".into()).await;
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().unwrap().starts_with("invalid JSON"),
        "{v}"
    );
    let wrong_type = good.replace("\"service\":\"api\"", "\"service\":5");
    assert_ne!(wrong_type, good);
    let (s, v) = post(am, "application/json", ok_auth, wrong_type).await;
    assert_eq!(s, 422);
    assert!(
        v["error"].as_str().unwrap().contains("alerts[0].labels"),
        "{v}"
    );
    let (s, v) = post(am, "application/json", ok_auth, "x".repeat(4096)).await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"], "request body too large");
    let (s, v) = app
        .post_json("/api/v1/alerts", r#"{"title": "x", "serverity": "P1"}"#)
        .await;
    assert_eq!(s, 422);
    assert!(v["error"].as_str().unwrap().contains("serverity"), "{v}");
    let (s, _) = app
        .post_json("/api/v1/alerts", r#"{"severity": "critical"}"#)
        .await;
    assert_eq!(s, 422);

    // Nothing of that was stored.
    let (_, v) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(v["incidents"].as_array().unwrap().len(), 0);

    // Read API errors.
    let (s, v) = app.get("/api/v1/incidents/INC-99").await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (404, "INC-99 does not exist")
    );
    let (s, _) = app.get("/api/v1/incidents/bogus").await;
    assert_eq!(s, 400);
    let (s, v) = app.get("/api/v1/incidents?status=weird").await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("weird"));
    let (s, _) = app.get("/api/v1/incidents?severity=P9").await;
    assert_eq!(s, 400);

    // And the good request works.
    let (s, _) = post(am, "application/json; charset=utf-8", ok_auth, good).await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test]
async fn generic_and_grafana_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    let (s, v) = app
        .post_json(
            "/api/v1/alerts",
            r#"{"title": "Checkout latency high", "severity": "warning", "labels": {"service": "checkout"}}"#,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["created"], true);
    let (_, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(v["incident"]["severity"], "P2");
    assert_eq!(v["incident"]["source"], "generic");

    let grafana = r#"{
      "receiver": "incidentd", "status": "firing", "orgId": 1,
      "alerts": [{"status": "firing", "labels": {"alertname": "HighCPU", "instance": "host1", "severity": "info"},
                  "annotations": {"summary": "CPU at 97%"}, "startsAt": "2026-11-29T12:00:00Z",
                  "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://grafana/alerting/1",
                  "fingerprint": "abc123", "silenceURL": "http://grafana/silence", "dashboardURL": "http://grafana/d/1",
                  "panelURL": "", "values": {"A": 97}, "valueString": "A=97"}],
      "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://grafana/",
      "version": "1", "groupKey": "x", "truncatedAlerts": 0, "title": "[FIRING:1] HighCPU", "state": "alerting", "message": "x"
    }"#;
    let (s, v) = app.post_json("/api/v1/alerts/grafana", grafana).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = app.get("/api/v1/incidents/INC-2").await;
    assert_eq!(v["incident"]["severity"], "P3");
    assert_eq!(v["incident"]["source"], "grafana");
    assert_eq!(
        v["incident"]["annotations"]["grafana_fingerprint"],
        "abc123"
    );
    app.stop().await;
}

/// A 1.4 MB generic alert with 50 000 links, twice at once: both answered, the incident keeps
/// 20 links and says how many it dropped, and what is stored and served stays small.
#[tokio::test]
async fn fifty_thousand_links_are_capped_and_the_stored_incident_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    let links: Vec<String> = (0..50_000)
        .map(|i| format!(r#"{{"url": "https://example.com/{i}"}}"#))
        .collect();
    let body = format!(
        r#"{{"title": "Link flood", "labels": {{"service": "api"}}, "links": [{}]}}"#,
        links.join(",")
    );
    assert!(body.len() > 1_400_000);
    let (a, b) = tokio::join!(
        app.post_json("/api/v1/alerts", &body),
        app.post_json("/api/v1/alerts", &body)
    );
    assert_eq!((a.0, b.0), (200, 200), "{} {}", a.1, b.1);
    let (s, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(s, 200);
    let inc = &v["incident"];
    assert_eq!(inc["alert_count"], 2, "{inc}");
    assert_eq!(inc["links"].as_array().unwrap().len(), 20);
    assert_eq!(inc["annotations"]["incidentd_links_dropped"], "49980");
    let served = v.to_string().len();
    assert!(served < 64 * 1024, "{served} bytes for one incident");
    app.stop().await;
}

#[tokio::test]
async fn outbox_survives_rate_limits_and_errors_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    app.port.fail_next([
        ChatError::RateLimited {
            retry_after: std::time::Duration::from_millis(50),
        },
        ChatError::Transient("502 bad gateway".into()),
        ChatError::Transient("connection reset".into()),
        ChatError::RateLimited {
            retry_after: std::time::Duration::from_millis(20),
        },
    ]);
    for i in 0..5 {
        let body = alertmanager(
            "firing",
            &[(&format!("Alert{i}"), "svc", "warning", "firing")],
        );
        let (s, _) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
        assert_eq!(s, 200);
    }
    let rec = app.wait_chat(|r| cards(r) == 5).await;
    assert!(app.port.attempts() >= 9, "the failures were really hit");
    // Exactly one card per incident, each with a distinct idempotency key.
    let mut ids: Vec<u64> = rec.iter().map(|r| r.incident.0).collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let mut keys: Vec<&str> = rec.iter().map(|r| r.key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 5);
    app.stop().await;
}

#[tokio::test]
async fn undelivered_messages_are_delivered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    // The platform is down for a long time: every attempt fails.
    app.port.fail_next(std::iter::repeat_n(
        ChatError::Transient("down".into()),
        10_000,
    ));
    let body = alertmanager("firing", &[("Outage", "svc", "critical", "firing")]);
    let (s, _) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(s, 200);
    app.stop().await;

    // Next start, the platform is back: the card queued before the restart arrives, once.
    let app = TestApp::start(dir.path()).await;
    let rec = app.wait_chat(|r| cards(r) == 1).await;
    assert_eq!(rec[0].incident.0, 1);
    app.stop().await;
}

#[tokio::test]
async fn repeats_within_the_window_become_one_card_edit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        support::TEST_CONFIG.replace("card_coalesce_seconds = 5", "card_coalesce_seconds = 2");
    let app = TestApp::start_with(dir.path(), &cfg, &|_| None).await;
    let body = alertmanager("firing", &[("Flapping", "svc", "warning", "firing")]);
    for _ in 0..4 {
        let (s, _) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
        assert_eq!(s, 200);
    }
    let updated = |r: &[Recorded]| {
        r.iter()
            .filter(|r| matches!(&r.body, Delivery::UpdateCard { card } if card.alert_count == 4))
            .count()
    };
    let rec = app.wait_chat(|r| updated(r) == 1).await;
    assert_eq!(cards(&rec), 1, "one thread");
    let edits = rec
        .iter()
        .filter(|r| matches!(r.body, Delivery::UpdateCard { .. }))
        .count();
    assert_eq!(edits, 1, "three repeats, one coalesced edit: {rec:#?}");
    // The edit goes to the card's thread.
    let posted = rec
        .iter()
        .find(|r| matches!(r.body, Delivery::PostCard { .. }))
        .unwrap();
    let edit = rec
        .iter()
        .find(|r| matches!(r.body, Delivery::UpdateCard { .. }))
        .unwrap();
    assert!(posted.thread.is_none());
    assert_eq!(edit.thread.as_ref().unwrap().channel, "C-INCIDENTS");
    app.stop().await;
}

#[tokio::test]
async fn a_held_back_card_edit_is_sent_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        support::TEST_CONFIG.replace("card_coalesce_seconds = 5", "card_coalesce_seconds = 2");
    let app = TestApp::start_with(dir.path(), &cfg, &|_| None).await;
    let body = alertmanager("firing", &[("Flapping", "svc", "warning", "firing")]);
    for _ in 0..2 {
        let (s, _) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
        assert_eq!(s, 200);
    }
    // Stop before the flush timer fires: the timer is persisted, not lost.
    app.stop().await;
    let app = TestApp::start_with(dir.path(), &cfg, &|_| None).await;
    app.wait_chat(|r| {
        r.iter()
            .any(|r| matches!(&r.body, Delivery::UpdateCard { card } if card.alert_count == 2))
    })
    .await;
    let (_, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(v["incident"]["card_dirty"], false);
    app.stop().await;
}

#[tokio::test]
async fn unanswered_approvals_escalate_when_their_timer_fires() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}\n[escalation]\noncall = [\"slack-group:SONCALL\"]\n",
        support::TEST_CONFIG.replace(
            "approvers = [\"slack:U1\"]",
            "approvers = [\"slack:U1\"]\nexpiry_seconds = 1"
        )
    );
    let app = TestApp::start_with(dir.path(), &cfg, &|_| None).await;
    let body = alertmanager("firing", &[("HighErrorRate", "api", "critical", "firing")]);
    let (s, _) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(s, 200);
    let rec = app
        .wait_chat(|r| {
            r.iter().any(|r| {
                matches!(&r.body, Delivery::Note { text, .. } if text.contains("escalated: approval of `restart` unanswered after 1 s"))
            })
        })
        .await;
    let note = rec
        .iter()
        .find_map(|r| match &r.body {
            Delivery::Note { text, mentions } if text.contains("escalated") => {
                Some(mentions.clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(note, ["slack-group:SONCALL"]);
    let (_, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(v["incident"]["status"], "escalated");
    app.stop().await;
}

#[tokio::test]
async fn resolving_posts_the_report_and_the_api_exports_it_and_the_stats() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    let body = alertmanager("firing", &[("HighErrorRate", "api", "critical", "firing")]);
    app.post_json("/api/v1/alerts/alertmanager", &body).await;
    let resolved = alertmanager(
        "resolved",
        &[("HighErrorRate", "api", "critical", "resolved")],
    );
    app.post_json("/api/v1/alerts/alertmanager", &resolved)
        .await;
    // The report lands in the thread: one structured entry, rendered by each sink.
    let rec = app
        .wait_chat(|r| {
            r.iter()
                .any(|r| matches!(&r.body, Delivery::Report { report } if report.incident.0 == 1))
        })
        .await;
    let reports: Vec<_> = rec
        .iter()
        .filter_map(|r| match &r.body {
            Delivery::Report { report } => Some((r.thread.clone(), report.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1, "one report entry per sink");
    let (thread, report) = &reports[0];
    assert!(thread.is_some(), "in the incident's thread");
    let rc = report.root_cause.as_ref().expect("a suggested root cause");
    assert_eq!(rc.label, "External dependency");
    assert_eq!(rc.confirmed_by, None, "suggested, not confirmed");
    assert_eq!(report.resolved_by.as_deref(), Some("incidentd"));
    assert!(report.durations.resolve.is_some());
    let md = report.to_markdown();
    assert!(md.contains("**External dependency**"), "{md}");
    assert!(md.contains("Resolved by incidentd"), "{md}");

    let r = app
        .http
        .get(app.url("/api/v1/incidents/INC-1/report.md"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/markdown"));
    let md = r.text().await.unwrap();
    assert!(
        md.contains("## Timeline") && md.contains("Monitoring reports the alert resolved"),
        "{md}"
    );
    let (s, _) = app.get("/api/v1/incidents/INC-9/report.md").await;
    assert_eq!(s, 404);

    let (s, v) = app.get("/api/v1/stats?window=30d").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["window_days"], 30);
    assert_eq!(v["total"], 1);
    assert_eq!(v["resolved"], 1);
    assert_eq!(v["rca_completion_rate"], 0.0, "suggested, not confirmed");
    assert_eq!(v["targets"]["mttr_seconds"], 480.0);
    let (s, v) = app.get("/api/v1/stats?window=forever").await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("7d or 30d"));
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    let body = alertmanager(
        "firing",
        &[
            ("HighErrorRate", "api", "critical", "firing"),
            ("DiskFull", "db", "warning", "firing"),
        ],
    );
    app.post_json("/api/v1/alerts/alertmanager", &body).await;
    app.post_json("/api/v1/alerts/alertmanager", &body).await;
    let resolved = alertmanager(
        "resolved",
        &[("HighErrorRate", "api", "critical", "resolved")],
    );
    app.post_json("/api/v1/alerts/alertmanager", &resolved)
        .await;
    app.wait_chat(|r| r.len() >= 3).await;
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    let text = r.text().await.unwrap();
    for want in [
        "incidentd_alerts_received_total{source=\"alertmanager\",status=\"firing\"} 4",
        "incidentd_alerts_received_total{source=\"alertmanager\",status=\"resolved\"} 1",
        "incidentd_incidents_opened_total{severity=\"P1\",kind=\"tool_api_failure\"} 1",
        "incidentd_incidents_opened_total{severity=\"P2\",kind=\"orchestration_failure\"} 1",
        "incidentd_incidents_resolved_total{severity=\"P1\",kind=\"tool_api_failure\"} 1",
        "incidentd_time_to_resolve_seconds_count{severity=\"P1\"} 1",
        "incidentd_incidents_active 1",
        "incidentd_commit_seconds_count",
        "incidentd_chat_deliveries_total{sink=\"test\",result=\"ok\"}",
        "# TYPE incidentd_outbox_depth gauge",
        "incidentd_rca_completion_ratio 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_cleared_alert_resolves_after_the_quiet_period_and_nobody_is_chased() {
    let dir = tempfile::tempdir().unwrap();
    // The detection target (1 s) runs out during the quiet period (2 s): before clears stopped
    // escalation, the cleared incident escalated here and stayed open.
    let cfg = support::TEST_CONFIG.replace(
        "card_coalesce_seconds = 5",
        "card_coalesce_seconds = 5\nresolve_after_clear_seconds = 2",
    ) + "\n[severity.P1]\ndetect_seconds = 1\n";
    let app = TestApp::start_with(dir.path(), &cfg, &|_| None).await;
    let firing = alertmanager("firing", &[("DiskFull", "db", "critical", "firing")]);
    let (s, v) = app.post_json("/api/v1/alerts/alertmanager", &firing).await;
    assert_eq!(
        (s, &v["results"][0]["incident"]),
        (200, &Value::from("INC-1"))
    );
    let resolved = alertmanager("resolved", &[("DiskFull", "db", "critical", "resolved")]);
    let (s, _) = app
        .post_json("/api/v1/alerts/alertmanager", &resolved)
        .await;
    assert_eq!(s, 200);
    let (_, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(v["incident"]["status"], "open", "{v:#}");
    assert_eq!(v["incident"]["alert_status"], "resolved");
    assert_eq!(v["incident"]["severity"], "P1");

    // The quiet period over, the thread says so (waited on, not polled); then the incident is
    // resolved as committed.
    app.wait_chat(|r| {
        r.iter().any(|r| {
            matches!(&r.body, Delivery::Note { text, .. } if text.contains("INC-1 resolved: the alert stayed clear"))
        })
    })
    .await;
    let (_, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(v["incident"]["status"], "resolved", "{v:#}");
    let timeline = v["timeline"].as_array().unwrap();
    assert!(
        timeline.iter().all(|e| e["type"] != "escalated"),
        "{timeline:#?}"
    );
    assert!(
        timeline.iter().any(|e| e["type"] == "status_changed"
            && e["to"] == "resolved"
            && e["note"] == "the alert stayed clear for 2 s"),
        "{timeline:#?}"
    );
    // The thread says what happened at each step, and nobody is mentioned.
    let rec = app
        .wait_chat(|r| {
            r.iter().any(|r| {
                matches!(&r.body, Delivery::Note { text, .. } if text.contains("INC-1 resolved: the alert stayed clear"))
            })
        })
        .await;
    let notes: Vec<&str> = rec
        .iter()
        .filter_map(|r| match &r.body {
            Delivery::Note { text, mentions } => {
                assert!(mentions.is_empty(), "{text}: {mentions:?}");
                Some(text.as_str())
            }
            _ => None,
        })
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("cleared; escalation stopped")),
        "{notes:?}"
    );
    assert!(!notes.iter().any(|n| n.contains("escalated")), "{notes:?}");
    app.stop().await;
}

/// An Alertmanager notification for the group `{alertname="PodCrashLooping"}` (a route with
/// `group_by: [alertname]`): every pod of the group, each with its status.
fn pod_group(pods: &[(&str, &str)]) -> String {
    let alerts: Vec<Value> = pods
        .iter()
        .map(|(pod, st)| {
            serde_json::json!({
                "status": st,
                "labels": { "alertname": "PodCrashLooping", "namespace": "prod", "pod": pod, "severity": "warning" },
                "annotations": { "summary": format!("{pod} is crash looping") },
                "startsAt": "2026-11-29T12:00:00Z",
                "endsAt": if *st == "resolved" { "2026-11-29T12:10:00Z" } else { "0001-01-01T00:00:00Z" },
                "fingerprint": ""
            })
        })
        .collect();
    let status = if pods.iter().any(|(_, s)| *s == "firing") {
        "firing"
    } else {
        "resolved"
    };
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"PodCrashLooping\"}",
        "status": status,
        "receiver": "incidentd",
        "groupLabels": { "alertname": "PodCrashLooping" },
        "commonLabels": { "alertname": "PodCrashLooping", "namespace": "prod" },
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts
    })
    .to_string()
}

#[tokio::test]
async fn the_pods_of_one_alertmanager_group_are_one_incident_until_all_clear() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    let post = |body: String| {
        let app = &app;
        async move {
            let (s, v) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    let v = post(pod_group(&[("api-1", "firing"), ("api-2", "firing")])).await;
    assert_eq!(v["results"][0]["incident"], "INC-1");
    assert_eq!(v["results"][1]["incident"], "INC-1");
    assert_eq!(v["results"][1]["created"], false);
    assert_eq!(open_incidents(&app).await.len(), 1);
    let (_, inc) = app.get("/api/v1/incidents/INC-1").await;
    // Seen at the same moment: most recent first, then by name.
    assert_eq!(
        inc["card"]["alerts"],
        "2 firing, 0 resolved: pod=api-1 (firing), pod=api-2 (firing)"
    );
    // One thread for the group, its card edited in place.
    let rec = app.wait_chat(|r| cards(r) == 1).await;
    assert_eq!(cards(&rec), 1);

    // One pod recovers: still open, still firing.
    post(pod_group(&[("api-1", "resolved"), ("api-2", "firing")])).await;
    let (_, inc) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(inc["incident"]["status"], "open");
    assert_eq!(inc["incident"]["alert_status"], "firing");
    assert!(
        inc["card"]["alerts"]
            .as_str()
            .unwrap()
            .starts_with("1 firing, 1 resolved: "),
        "{inc:#}"
    );

    // Both recover: the clear logic starts (the quiet period runs).
    post(pod_group(&[("api-1", "resolved"), ("api-2", "resolved")])).await;
    let (_, inc) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(inc["incident"]["status"], "open");
    assert_eq!(inc["incident"]["alert_status"], "resolved");
    let last = inc["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "alert_resolved");
    assert_eq!(open_incidents(&app).await.len(), 1);
    app.stop().await;
}

/// The store is a dependency like the others: an injected one is used, and `[store] path` is
/// not opened (how another `Store` implementation plugs in without touching `app::run`).
#[tokio::test]
async fn an_injected_store_is_the_one_the_app_uses() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn incidentd::ports::Store> =
        Arc::new(incidentd::store::SledStore::open(&dir.path().join("injected")).unwrap());
    // The harness points `[store] path` at `dir/store`.
    let app = TestApp::start_on_store(dir.path(), support::TEST_CONFIG, store.clone()).await;
    let (s, _) = app
        .post_json(
            "/api/v1/alerts",
            r#"{"title": "Payments API returning 503", "severity": "critical"}"#,
        )
        .await;
    assert_eq!(s, 200);
    app.stop().await;
    let stored = store
        .list_incidents(&incidentd::ports::IncidentFilter::default())
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].title, "Payments API returning 503");
    assert!(
        !dir.path().join("store").exists(),
        "the configured path was not opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refire_after_an_automatic_fix_runs_the_fix_again_once_then_leaves_it_to_a_person() {
    let config = r#"
[engine]
card_coalesce_seconds = 0

[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
auto_resolve = true
[[playbooks.actions]]
id = "fallback"
title = "Switch to the fallback"
auto = true
run = { type = "command", argv = ["/bin/true"] }

[policy.P2]
approvers = ["slack:U1"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), config, &|_| None).await;
    let alert = |status: &str| {
        serde_json::json!({
            "title": "Payments API rate limit",
            "severity": "warning",
            "status": status,
            "labels": { "alertname": "RateLimited", "service": "api" }
        })
        .to_string()
    };
    // Runs (n) of `fallback` finished successfully, per the incident's timeline.
    let runs = |v: &serde_json::Value| -> Vec<String> {
        v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "execution_finished" && e["success"] == true)
            .map(|e| e["execution"].as_str().unwrap().to_string())
            .collect()
    };
    let wait_runs = |n: usize| {
        let (app, runs) = (&app, &runs);
        support::eventually("the fix's runs", move || async move {
            let (_, v) = app.get("/api/v1/incidents/INC-1").await;
            (runs(&v).len() >= n).then_some(v)
        })
    };
    for (round, want) in [(1, "INC-1:fallback"), (2, "INC-1:fallback#2")] {
        // The second time it fires again after incidentd resolved it: reopened, and the fix
        // runs again.
        let (s, v) = app.post_json("/api/v1/alerts", &alert("firing")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["results"][0]["incident"], "INC-1", "{v}");
        let v = wait_runs(round).await;
        assert_eq!(runs(&v).last().map(String::as_str), Some(want), "{v:#}");
        let (s, _) = app.post_json("/api/v1/alerts", &alert("resolved")).await;
        assert_eq!(s, 200);
        let (_, v) = app.get("/api/v1/incidents/INC-1").await;
        assert_eq!(v["incident"]["status"], "resolved", "{v:#}");
    }
    // The third firing: the cap (2 runs) is reached; the thread says a person decides.
    let (_, v) = app.post_json("/api/v1/alerts", &alert("firing")).await;
    assert_eq!(v["results"][0]["incident"], "INC-1", "{v}");
    app.wait_chat(|r| {
        r.iter().any(|m| {
            matches!(&m.body, Delivery::Note { text, .. }
                if text.contains("`fallback` already ran 2 times for INC-1"))
        })
    })
    .await;
    let (_, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(runs(&v).len(), 2, "{v:#}");
    assert_eq!(v["incident"]["status"], "open");
    let notes: Vec<String> = app
        .port
        .delivered()
        .iter()
        .filter_map(|m| match &m.body {
            Delivery::Note { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n
                .contains("🔁 Running the automatic fix `fallback` again (run 2 of at most 2)")),
        "{notes:#?}"
    );
    app.stop().await;
}
