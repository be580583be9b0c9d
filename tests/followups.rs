//! Follow-up reminders through the real app: the reminder is a persisted timer, so a resolved
//! incident without follow-ups is reminded after a restart once its day has passed, by the
//! injected clock (no sleeping).

mod support;

use std::sync::{Arc, Mutex};

use chrono::{Duration, TimeZone, Utc};
use incidentd::ports::Delivery;
use support::{alertmanager, ManualClock, TestApp};

const CONFIG: &str = r#"
[[rules]]
name = "disk"
match = { alertname = "DiskFull" }
playbook = "disk"

[[playbooks]]
id = "disk"
title = "Disk"
auto_resolve = true

[followups]
define_within_seconds = 86400
"#;

fn notes(d: &[incidentd::chat::recording::Recorded]) -> Vec<String> {
    d.iter()
        .filter_map(|r| match &r.body {
            Delivery::Note { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_incident_without_followups_is_reminded_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let clock = Arc::new(ManualClock(Mutex::new(t0)));
    let app = TestApp::start_with_clock(dir.path(), CONFIG, clock.clone()).await;
    let (s, _) = app
        .post_json(
            "/api/v1/alerts/alertmanager",
            &alertmanager("firing", &[("DiskFull", "db", "warning", "firing")]),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .post_json(
            "/api/v1/alerts/alertmanager",
            &alertmanager("resolved", &[("DiskFull", "db", "warning", "resolved")]),
        )
        .await;
    assert_eq!(s, 200);
    app.wait_chat(|d| d.iter().any(|r| matches!(r.body, Delivery::Report { .. })))
        .await;
    let (_, inc) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(inc["incident"]["status"], "resolved", "{inc}");
    assert!(!notes(&app.port.delivered())
        .iter()
        .any(|n| n.contains("Follow-up reminder")));
    app.stop().await;

    // A day and a second later, after a restart: the stored timer fires once.
    *clock.0.lock().unwrap() = t0 + Duration::seconds(86_401);
    let app = TestApp::start_with_clock(dir.path(), CONFIG, clock.clone()).await;
    let d = app
        .wait_chat(|d| notes(d).iter().any(|n| n.contains("Follow-up reminder")))
        .await;
    let n = notes(&d);
    let reminder = n.iter().find(|n| n.contains("Follow-up reminder")).unwrap();
    assert!(
        reminder.contains("INC-1 was resolved 24 h ago and has no follow-up yet"),
        "{reminder}"
    );
    let (_, inc) = app.get("/api/v1/incidents/INC-1").await;
    let reminders: Vec<&serde_json::Value> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "follow_up_reminder")
        .collect();
    assert_eq!(reminders.len(), 1, "{inc}");
    assert_eq!(reminders[0]["undefined"], true);
    app.stop().await;
}
