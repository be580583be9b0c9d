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
    let id = held[0]["id"].clone();
    let (_, d) = app.get(&format!("/api/v1/incidents/INC-{id}")).await;
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
