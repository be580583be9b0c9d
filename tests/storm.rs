//! The storm guard on the real app: a storm of unique P2 alerts whose playbook has an automatic
//! action runs it for the first incidents only; after the bound, the actions wait for approval
//! and the card says why.

mod support;

use support::TestApp;

const CONFIG: &str = r#"
[engine]
storm_new_incidents = 5
storm_window_seconds = 600

[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
[[playbooks.actions]]
id = "fallback"
title = "Switch to the fallback"
auto = true
run = { type = "command", argv = ["/bin/true"] }

[policy.P2]
approvers = ["slack:U1"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_runs_automatic_actions_for_the_first_incidents_only() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), CONFIG, &|_| None).await;
    // 12 unique alerts (12 groups) in one request: a storm of new incidents.
    let alerts: Vec<serde_json::Value> = (0..12)
        .map(|i| {
            serde_json::json!({
                "title": format!("Payments API rate limit on shard {}", ["alpha","bravo","charlie","delta","echo","foxtrot","golf","hotel","india","juliet","kilo","lima"][i]),
                "severity": "warning",
                "labels": { "alertname": format!("RateLimited{i}") }
            })
        })
        .collect();
    let (s, v) = app
        .post_json(
            "/api/v1/alerts",
            &serde_json::Value::Array(alerts).to_string(),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = app.get("/api/v1/incidents?status=all").await;
    let list = v["incidents"].as_array().unwrap();
    assert_eq!(list.len(), 12);
    let held: Vec<&serde_json::Value> = list.iter().filter(|i| i["storm"].is_number()).collect();
    // The first 5 are within the bound; the 6th to the 12th are held.
    assert_eq!(held.len(), 7, "{v}");
    for i in list {
        let action = i["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == "fallback")
            .unwrap();
        if i["storm"].is_number() {
            assert_eq!(action["status"], "proposed", "{i}");
        } else {
            assert_ne!(action["status"], "proposed", "{i}");
        }
    }
    // The held incident's timeline says why; its card (rendered at delivery) too.
    let id = held[0]["id"].as_str().unwrap();
    assert!(id.starts_with("INC-"), "{id}");
    let (_, d) = app.get(&format!("/api/v1/incidents/{id}")).await;
    assert!(
        d["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "storm_guard"),
        "{d}"
    );
    // Seven cards say it (one per held incident), none of the others.
    app.wait_chat(|r| {
        r.iter()
            .filter(|x| format!("{x:?}").contains("Storm guard: "))
            .count()
            >= 7
    })
    .await;
    app.stop().await;
}

/// A group of many alerts is kept by the writer between batches (not read back from the
/// store each time): what it stores is what it kept, across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_group_reads_the_same_before_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    let pods = |from: usize, status: &str| {
        let alerts: Vec<serde_json::Value> = (from..from + 10)
            .map(|i| {
                serde_json::json!({
                    "status": status,
                    "labels": { "alertname": "PodCrashLooping", "namespace": "shop", "pod": format!("api-{i}"), "severity": "warning" },
                    "annotations": { "summary": "Pod is crash looping" },
                    "startsAt": "2026-11-29T12:00:00Z",
                    "fingerprint": format!("fp-{i}")
                })
            })
            .collect();
        serde_json::json!({
            "version": "4", "status": status, "receiver": "incidentd",
            "groupKey": "{}:{alertname=\"PodCrashLooping\"}",
            "groupLabels": { "alertname": "PodCrashLooping" },
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
            "alerts": alerts
        })
        .to_string()
    };
    for (from, status) in [
        (0, "firing"),
        (10, "firing"),
        (20, "firing"),
        (5, "resolved"),
    ] {
        let (s, v) = app
            .post_json("/api/v1/alerts/alertmanager", &pods(from, status))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (_, before) = app.get("/api/v1/incidents/INC-1").await;
    let group = before["incident"]["group"].clone();
    assert_eq!(group["members"].as_object().unwrap().len(), 30, "{group}");
    let firing = group["members"]
        .as_object()
        .unwrap()
        .values()
        .filter(|m| m["status"] == "firing")
        .count();
    assert_eq!(firing, 20, "api-5..api-14 cleared");
    app.stop().await;
    let app = TestApp::start(dir.path()).await;
    let (_, after) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(after["incident"]["group"], group);
    assert_eq!(
        after["incident"]["alert_count"],
        before["incident"]["alert_count"]
    );
    app.stop().await;
}
