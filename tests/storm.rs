//! The storm guard on the real app: a storm of unique P2 alerts whose playbook has an automatic
//! action runs it for the first incidents only; after the bound, the actions wait for approval
//! and the card says why. With the shipped config on the fake Slack, a storm's new incidents
//! beyond the bound are summarized on one card instead of a card and thread each.

#[path = "support/fake_slack.rs"]
mod fake_slack;
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
    // The first held incident's card says it and summarizes the storm: the seven held
    // incidents (the 6th to the 12th), the other six without a card of their own.
    let recorded = app
        .wait_chat(|r| {
            r.iter().any(|x| {
                let s = format!("{x:?}");
                s.contains("Storm guard: ") && s.contains("7 new incidents from generic")
            })
        })
        .await;
    let posted: Vec<u64> = recorded
        .iter()
        .filter(|r| matches!(r.body, incidentd::ports::Delivery::PostCard { .. }))
        .map(|r| r.incident.0)
        .collect();
    assert_eq!(posted, [1, 2, 3, 4, 5, 6], "{recorded:#?}");
    assert!(recorded.iter().all(|r| r.incident.0 <= 6), "{recorded:#?}");
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

/// The shipped config (`config/incidentd.toml`) on the fake Slack, a storm of 45 unique alerts
/// from one source (45 groups, so 45 incidents): the first 20 (`storm_new_incidents`) get their
/// own cards, the 21st's card becomes the storm summary, and the other 24 get no message at all:
/// 21 cards whatever the storm's size, the summary edited in place as they join. A summarized
/// incident stays usable, and gets its own card once a person acts on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_shipped_config_a_storm_posts_a_bounded_number_of_slack_messages() {
    use fake_slack::*;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSlack::start().await;
    let (config, bound) = shipped_on_slack(&fake);
    assert_eq!(bound, 20, "the shipped bound");
    let app = TestApp::start_with_chat(dir.path(), &config, &slack_env).await;
    fake.wait_connected(1).await;

    const N: usize = 45;
    let storm = storm_of;
    let lead = format!("INC-{}", bound + 1);
    let summary_says = |f: &FakeSlack, n: usize| summary_counts(f, &lead, n);
    // 30 first: the storm summary's card (INC-21) counts the 10 from the 21st on.
    let (s, v) = app.post_json("/api/v1/alerts", &storm(0, 30)).await;
    assert_eq!(s, 200, "{v}");
    fake.wait("the storm summary's card", |f| summary_says(f, 30 - bound))
        .await;
    // 15 more join it: the same card, edited, counts 25.
    let (s, v) = app.post_json("/api/v1/alerts", &storm(30, N)).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(v["incidents"].as_array().unwrap().len(), N);
    fake.wait("the storm summary counts the storm", |f| {
        summary_says(f, N - bound)
    })
    .await;
    let cards = fake.cards();
    let mut carded: Vec<String> = cards.iter().map(incident_of).collect();
    carded.sort_by_key(|id| id[4..].parse::<u32>().unwrap());
    let expected: Vec<String> = (1..=bound + 1).map(|i| format!("INC-{i}")).collect();
    assert_eq!(
        carded, expected,
        "one card each up to the bound, then the summary"
    );
    // Nothing at all for the summarized incidents.
    let posted: Vec<FakeMessage> = fake
        .messages()
        .into_iter()
        .filter(|m| m.user.as_deref() == Some(BOT_USER))
        .collect();
    for m in &posted {
        let n: usize = incident_of(m)[4..].parse().unwrap();
        assert!(n <= bound + 1, "a message for a summarized incident: {m:?}");
    }
    // With the shipped config those incidents post no notes: 21 messages in all (README).
    assert_eq!(posted.len(), bound + 1, "{posted:#?}");
    let summary = cards.iter().find(|c| incident_of(c) == lead).unwrap();
    assert!(summary.edits >= 1, "the summary is edited in place");

    // A summarized incident is an incident like any other in the API...
    let (s, d) = app.get("/api/v1/incidents/INC-30").await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["incident"]["storm_thread"], lead.as_str(), "{d}");
    let timeline = d["timeline"].as_array().unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e["type"] == "storm_summarized" && e["storm_thread"] == lead.as_str()),
        "{d}"
    );
    // The summary's incident names the newest by `INC-n` too.
    let (_, l) = app.get(&format!("/api/v1/incidents/{lead}")).await;
    assert_eq!(
        l["incident"]["storm_summary"]["newest"][0]["incident"],
        format!("INC-{N}"),
        "{l}"
    );
    // ...and gets its own card once a person acts on it.
    fake.command("UALICE", "ack INC-30").await;
    fake.wait("INC-30's own card", |f| {
        f.cards().iter().any(|c| incident_of(c) == "INC-30")
    })
    .await;
    app.stop().await;
}

/// A storm of one source across a restart: the new process goes on with the same storm (its
/// summary, and the storm guard's count of recent openings), so the incidents after the
/// restart join the summary card instead of each getting a card until a second summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_that_spans_a_restart_keeps_one_summary() {
    use fake_slack::*;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSlack::start().await;
    let (config, bound) = shipped_on_slack(&fake);
    let lead = format!("INC-{}", bound + 1);
    let app = TestApp::start_with_chat(dir.path(), &config, &slack_env).await;
    fake.wait_connected(1).await;
    let (s, v) = app.post_json("/api/v1/alerts", &storm_of(0, 30)).await;
    assert_eq!(s, 200, "{v}");
    fake.wait("the storm summary's card", |f| {
        summary_counts(f, &lead, 30 - bound)
    })
    .await;
    app.stop().await;

    let app = TestApp::start_with_chat(dir.path(), &config, &slack_env).await;
    fake.wait_connected(2).await;
    let (s, v) = app.post_json("/api/v1/alerts", &storm_of(30, 45)).await;
    assert_eq!(s, 200, "{v}");
    fake.wait("the same summary counts the storm", |f| {
        summary_counts(f, &lead, 45 - bound)
    })
    .await;
    let carded: Vec<String> = fake.cards().iter().map(incident_of).collect();
    assert_eq!(
        carded.len(),
        bound + 1,
        "no new cards after the restart: {carded:?}"
    );
    let (_, l) = app.get(&format!("/api/v1/incidents/{lead}")).await;
    assert!(
        l["incident"]["storm_summary"]["lifted_at"].is_null(),
        "the storm goes on: {l}"
    );
    assert!(
        !fake
            .messages()
            .iter()
            .any(|m| m.text.contains("Storm over")),
        "no end note while the storm goes on"
    );
    app.stop().await;
}

/// The shipped config (`config/incidentd.toml`) with Slack on the fake in socket mode, and its
/// storm bound (`storm_new_incidents`).
fn shipped_on_slack(fake: &fake_slack::FakeSlack) -> (String, usize) {
    use fake_slack::*;
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/incidentd.toml"
    ))
    .unwrap();
    let config = format!(
        "{shipped}\n[slack]\nmode = \"socket\"\napi_url = \"{}\"\nalert_channels = [\"{ALERTS}\"]\nincident_channel = \"{INCIDENTS}\"\n",
        fake.api_url
    );
    let bound = incidentd::config::Config::from_toml(&config, &slack_env)
        .unwrap()
        .engine
        .storm_new_incidents as usize;
    (config, bound)
}

fn slack_env(k: &str) -> Option<String> {
    match k {
        "SLACK_BOT_TOKEN" => Some(fake_slack::BOT_TOKEN.to_string()),
        "SLACK_APP_TOKEN" => Some(fake_slack::APP_TOKEN.to_string()),
        _ => None,
    }
}

/// Generic alerts `from..to` of one source, each its own incident.
fn storm_of(from: usize, to: usize) -> String {
    let alerts: Vec<serde_json::Value> = (from..to)
        .map(|i| {
            serde_json::json!({
                "title": format!("Payments API rate limit on shard {i}"),
                "severity": "warning",
                "labels": { "alertname": format!("RateLimited{i}") }
            })
        })
        .collect();
    serde_json::Value::Array(alerts).to_string()
}

fn incident_of(m: &fake_slack::FakeMessage) -> String {
    m.metadata["event_payload"]["incident"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Whether `lead`'s card (the storm summary) counts `n` new incidents.
fn summary_counts(f: &fake_slack::FakeSlack, lead: &str, n: usize) -> bool {
    f.cards().iter().any(|c| {
        incident_of(c) == lead
            && fake_slack::mrkdwn_texts(&serde_json::Value::Array(c.blocks.clone()))
                .iter()
                .any(|t| t.contains(&format!("{n} new incidents from generic")))
    })
}
