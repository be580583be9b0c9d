//! Prometheus verification against a real Prometheus (Debian's `prometheus`, started on
//! loopback, scraping a target whose values the test scripts): a verification that holds
//! resolves the incident, one that does not rolls the action back, a Prometheus that never
//! answers fails the check in bounded time, and a hostile label value cannot change the query.

mod support;

use std::borrow::Cow;
use std::time::Duration;

use incidentd::domain::promql::QueryTemplate;
use incidentd::remediate::prometheus::Prometheus;
use support::prometheus::{Fate, HeldPrometheus, PromServer, Target};
use support::TestApp;

/// One playbook: an automatic action verified by `query` below 0.05 for 2 s, with a rollback.
fn config(prom_url: &str, timeout_seconds: u64, within: u64) -> String {
    format!(
        r#"
[prometheus]
url = "{prom_url}"
timeout_seconds = {timeout_seconds}

[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
[[playbooks.actions]]
id = "fallback"
title = "Switch to the fallback"
auto = true
rollback = "undo"
run = {{ type = "command", argv = ["/bin/true"] }}
verify = {{ type = "prometheus", query = 'max(errors_ratio{{service="{{labels.service}}"}})', below = 0.05, for_seconds = 2, within_seconds = {within}, interval_seconds = 1 }}
[[playbooks.actions]]
id = "undo"
title = "Undo the fallback"
run = {{ type = "command", argv = ["/bin/true"] }}

[policy.P2]
approvers = ["slack:U1"]
"#
    )
}

/// A P2 rate-limit alert (kind tool_api_failure) for `service`.
async fn fire(app: &TestApp, service: &str) {
    let body = serde_json::json!({
        "title": "Payments API rate limit",
        "severity": "warning",
        "labels": { "alertname": "RateLimited", "service": service }
    });
    let (s, v) = app.post_json("/api/v1/alerts", &body.to_string()).await;
    assert_eq!(s, 200, "{v}");
}

/// Waits (bounded) until INC-1 satisfies `pred`; returns its detail (incident and timeline).
async fn wait_incident(
    app: &TestApp,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(app, "INC-1", pred).await
}

/// Waits (bounded) until incident `id` satisfies `pred`; returns its detail.
async fn wait_for(
    app: &TestApp,
    id: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let (_, v) = app.get(&format!("/api/v1/incidents/{id}")).await;
        if pred(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "not reached: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn timeline(v: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

/// The text of a thread note ("" for anything else).
fn note(r: &incidentd::chat::recording::Recorded) -> &str {
    match &r.body {
        incidentd::ports::Delivery::Note { text, .. } => text,
        _ => "",
    }
}

fn undo_succeeded(v: &serde_json::Value) -> bool {
    v["incident"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == "undo" && a["status"] == "succeeded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_that_holds_resolves_the_incident_and_shows_each_value() {
    let target = Target::start().await;
    let Some(prom) = PromServer::start(&target).await else {
        return;
    };
    target.set(r#"errors_ratio{service="api"}"#, 0.01);
    target.set(r#"errors_ratio{service="web"}"#, 0.9);
    prom.wait_values(r#"errors_ratio{service="api"}"#, &[0.01])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &config(&prom.url, 5, 20), &|_| None).await;
    fire(&app, "api").await;
    let v = wait_incident(&app, |v| v["incident"]["status"] == "resolved").await;
    let checks = timeline(&v, "verification_checked");
    // Held for 2 s with a check every second: at least three checks, each with the value.
    assert!(checks.len() >= 3, "{checks:#?}");
    for c in &checks {
        assert_eq!(c["ok"], true, "{c}");
        let s = c["summary"].as_str().unwrap();
        assert!(
            s.starts_with(r#"`max(errors_ratio{service="api"})` = 0.01 (< 0.05 ✓"#),
            "{s}"
        );
    }
    let verified = timeline(&v, "verified");
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0]["ok"], true);
    assert!(
        verified[0]["summary"].as_str().unwrap().contains("for 2 s"),
        "{verified:?}"
    );
    assert!(!undo_succeeded(&v), "no rollback");
    // The thread shows each value (notes may be coalesced into fewer messages).
    let chat = app
        .wait_chat(|r| r.iter().any(|m| note(m).contains("`fallback` verified")))
        .await;
    let text: String = chat.iter().map(note).collect::<Vec<_>>().join("\n");
    assert!(
        text.contains("Verifying: Prometheus `max(errors_ratio{service=\"api\"})` < 0.05 for 2 s"),
        "{text}"
    );
    assert!(
        text.matches("`fallback` check: `max(errors_ratio{service=\"api\"})` = 0.01")
            .count()
            >= 3,
        "{text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_that_does_not_hold_rolls_the_action_back() {
    let target = Target::start().await;
    let Some(prom) = PromServer::start(&target).await else {
        return;
    };
    target.set(r#"errors_ratio{service="api"}"#, 0.5);
    prom.wait_values(r#"errors_ratio{service="api"}"#, &[0.5])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &config(&prom.url, 5, 3), &|_| None).await;
    fire(&app, "api").await;
    let v = wait_incident(&app, |v| {
        undo_succeeded(v) && v["incident"]["status"] == "escalated"
    })
    .await;
    let checks = timeline(&v, "verification_checked");
    assert!(!checks.is_empty());
    for c in &checks {
        assert_eq!(c["ok"], false, "{c}");
        assert!(
            c["summary"].as_str().unwrap().contains("= 0.5 (< 0.05 ✗)"),
            "{c}"
        );
    }
    let verified = timeline(&v, "verified");
    assert_eq!(verified[0]["ok"], false);
    let why = verified[0]["summary"].as_str().unwrap();
    assert!(
        why.contains("did not stay < 0.05 for 2 s within 3 s; last: 0.5"),
        "{why}"
    );
    app.stop().await;
}

/// A "Prometheus" that accepts connections and never says a word: its URL, and the task holding
/// the connections (abort it at the end).
async fn silent_prometheus() -> (String, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    (url, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_that_never_answers_fails_the_check_in_bounded_time() {
    let (url, held) = silent_prometheus().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &config(&url, 1, 3), &|_| None).await;
    let started = std::time::Instant::now();
    fire(&app, "api").await;
    let v = wait_incident(&app, |v| {
        undo_succeeded(v) && v["incident"]["status"] == "escalated"
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let checks = timeline(&v, "verification_checked");
    assert!(!checks.is_empty());
    assert!(checks.iter().all(|c| c["summary"]
        .as_str()
        .unwrap()
        .contains("Prometheus did not answer within 1 s")));
    let verified = timeline(&v, "verified");
    assert!(
        verified[0]["summary"]
            .as_str()
            .unwrap()
            .contains("last: Prometheus did not answer within 1 s"),
        "{verified:?}"
    );
    held.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_label_value_cannot_change_the_query() {
    let target = Target::start().await;
    let Some(prom) = PromServer::start(&target).await else {
        return;
    };
    target.set(r#"errors_ratio{service="api"}"#, 0.5);
    // A real label value full of quoting characters (exposition-format escaped).
    target.set(r#"errors_ratio{service="we\"ird\\na}me"}"#, 0.25);
    prom.wait_values("count(errors_ratio)", &[2.0]).await;

    let template = r#"max(errors_ratio{service="{labels.service}"})"#;
    let hostile = r#"x"}) or vector(0) #"#;
    // Pasted in naively, the value would turn the query into `… or vector(0)`: 0, which passes.
    let naive = template.replace("{labels.service}", hostile);
    assert_eq!(
        prom.values(&naive).await,
        [0.0],
        "the value is really hostile"
    );
    // Quoted, it is only a label value: no such series, no data.
    let t = QueryTemplate::parse(template).unwrap();
    let quoted = |v: &str| {
        t.render(|_| Ok::<_, ()>(Cow::Owned(v.to_string())))
            .unwrap()
    };
    let client = Prometheus::new(
        &prom.url,
        None,
        Duration::from_secs(5),
        reqwest::Client::new(),
    );
    assert_eq!(client.instant(&quoted(hostile)).await.unwrap(), []);
    // And quoting keeps meaning: the odd but real value finds its series.
    let odd = client.instant(&quoted("we\"ird\\na}me")).await.unwrap();
    assert_eq!(odd.len(), 1);
    assert_eq!(odd[0].value, 0.25);

    // Through the app: the verification sees no data, fails, and rolls back.
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &config(&prom.url, 5, 3), &|_| None).await;
    fire(&app, hostile).await;
    let v = wait_incident(&app, |v| {
        undo_succeeded(v) && v["incident"]["status"] == "escalated"
    })
    .await;
    let checks = timeline(&v, "verification_checked");
    assert!(!checks.is_empty());
    for c in &checks {
        assert_eq!(c["ok"], false, "{c}");
        let s = c["summary"].as_str().unwrap();
        assert!(
            s.starts_with(r#"`max(errors_ratio{service="x\"}) or vector(0) #"})` = no data"#),
            "{s}"
        );
    }
    app.stop().await;
}

/// An Alertmanager webhook whose alert carries its expression in the generator URL.
fn alertmanager_with_expr(expr: &str) -> String {
    alertmanager_with(expr, "warning")
}

/// The same with the alert's `severity` label.
fn alertmanager_with(expr: &str, severity: &str) -> String {
    let url = format!(
        "http://prometheus:9090/graph?g0.expr={}&g0.tab=1",
        form_urlencoded::byte_serialize(expr.as_bytes()).collect::<String>()
    );
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighErrorRate\"}",
        "status": "firing",
        "receiver": "incidentd",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": "HighErrorRate", "service": "api", "severity": severity },
            "annotations": { "summary": "API rate limit errors" },
            "startsAt": "2026-11-29T12:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": url,
            "fingerprint": "f1"
        }]
    })
    .to_string()
}

fn chart_config(prom_url: &str) -> String {
    format!(
        r#"
[engine]
card_coalesce_seconds = 0

[prometheus]
url = "{prom_url}"
"#
    )
}

/// The cards delivered so far, with their charts.
fn cards(r: &[incidentd::chat::recording::Recorded]) -> Vec<incidentd::domain::card::IncidentCard> {
    r.iter()
        .filter_map(|m| match &m.body {
            incidentd::ports::Delivery::PostCard { card }
            | incidentd::ports::Delivery::UpdateCard { card } => Some(card.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_chart_the_alert_metric_and_refresh_it_when_edited() {
    let target = Target::start().await;
    let Some(prom) = PromServer::start(&target).await else {
        return;
    };
    target.set(r#"errors_ratio{service="api"}"#, 0.5);
    prom.wait_values(r#"errors_ratio{service="api"}"#, &[0.5])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &chart_config(&prom.url), &|_| None).await;
    let body = alertmanager_with_expr(r#"errors_ratio{service="api"} > 0.05"#);
    let (s, v) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(s, 200, "{v}");
    // The card is posted at once, without waiting for Prometheus; its chart comes in an edit
    // (or with the first card rendered after the chart is at hand).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let card = loop {
        let now = cards(&app.port.delivered());
        if let Some(c) = now.iter().find(|c| c.chart.is_some()) {
            break c.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no card with a chart: {now:#?}"
        );
        if !now.is_empty() {
            app.post_json("/api/v1/alerts/alertmanager", &body).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let chart = card.chart.clone().expect("the card has its chart");
    // The alert's condition is the threshold; the chart shows its left side.
    assert_eq!(chart.query, r#"errors_ratio{service="api"}"#);
    assert_eq!(chart.threshold, Some(0.05));
    assert_eq!(chart.current(), Some(0.5));
    assert!(chart.points.iter().all(|p| p.1 == 0.5), "{chart:?}");
    // A known series: every point at 0.5, far above the threshold → full bars.
    let bars = "█".repeat(chart.sparkline(30).chars().count());
    assert!(!bars.is_empty());
    let line = format!("{bars} now 0.5 · threshold 0.05 · 30 min");
    assert_eq!(chart.line(incidentd::domain::chart::show_value), line);
    // As Slack and Discord show it.
    let slack = serde_json::to_string(&incidentd::chat::slack::render::card_blocks(&card)).unwrap();
    assert!(
        slack.contains(&format!(
            r#""*Metric* `errors_ratio{{service=\"api\"}}`\n{line}""#
        )),
        "{slack}"
    );
    let discord = incidentd::chat::discord::render::card_message(&card).to_string();
    assert!(
        discord.contains(&format!(
            r#""value":"`errors_ratio{{service=\"api\"}}`\n{line}""#
        )),
        "{discord}"
    );
    // The value changes; the next edit of the card shows it.
    target.set(r#"errors_ratio{service="api"}"#, 0.9);
    prom.wait_values(r#"errors_ratio{service="api"}"#, &[0.9])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, _) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
        assert_eq!(s, 200);
        let now = cards(&app.port.delivered());
        if now
            .last()
            .and_then(|c| c.chart.as_ref())
            .and_then(|c| c.current())
            == Some(0.9)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no edit showed 0.9: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_comes_without_its_chart_when_prometheus_does_not_answer() {
    let (url, held) = silent_prometheus().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &chart_config(&url), &|_| None).await;
    let started = std::time::Instant::now();
    let body = alertmanager_with_expr(r#"errors_ratio{service="api"} > 0.05"#);
    let (s, _) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(s, 200);
    let got = app.wait_chat(|r| !cards(r).is_empty()).await;
    assert_eq!(cards(&got)[0].chart, None);
    // Delivered without waiting for the chart's query (not after the configured 5 s).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // No note about it in the thread.
    assert!(got.iter().all(|m| !note(m).contains("Prometheus")));
    held.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p0_card_does_not_wait_for_a_hanging_prometheus_and_its_chart_comes_in_a_later_edit() {
    // A Prometheus that holds every request unanswered until the test releases it. The
    // configured timeout is long, so a chart fetch that waited for it would hold the card.
    let prom = HeldPrometheus::start().await;
    let config = format!(
        r#"
[engine]
card_coalesce_seconds = 0

[prometheus]
url = "{}"
timeout_seconds = 60
"#,
        prom.url
    );
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &config, &|_| None).await;
    let body = alertmanager_with(r#"errors_ratio{service="api"} > 0.05"#, "p0");
    let (s, v) = app.post_json("/api/v1/alerts/alertmanager", &body).await;
    assert_eq!(s, 200, "{v}");
    // The P0 card is posted while the chart's query is unanswered: no request to Prometheus
    // was answered or given up on when it arrived (nothing was released yet).
    let got = app.wait_chat(|r| !cards(r).is_empty()).await;
    let asked = prom.requests();
    assert!(
        asked.iter().all(|r| r.fate == Fate::Held),
        "the card waited for the chart's query: {asked:?}"
    );
    let posted = &got[0];
    assert!(
        matches!(&posted.body, incidentd::ports::Delivery::PostCard { card } if card.chart.is_none() && card.severity == incidentd::domain::severity::Severity::P0),
        "{posted:?}"
    );
    // The query is asked off the delivery path and stays held: the card is not sent again.
    prom.wait("the chart's query", |r| {
        r.iter().any(|r| r.path == "/api/v1/query_range")
    })
    .await;
    assert_eq!(cards(&app.port.delivered()).len(), 1);
    // Prometheus answers: a later edit of the card brings the chart.
    let now = chrono::Utc::now().timestamp() as f64;
    prom.release(
        &serde_json::json!({
            "status": "success",
            "data": { "resultType": "matrix", "result": [
                { "metric": { "service": "api" },
                  "values": [[now - 60.0, "0.5"], [now, "0.7"]] }
            ]}
        })
        .to_string(),
    );
    let got = app
        .wait_chat(|r| cards(r).iter().any(|c| c.chart.is_some()))
        .await;
    let with_chart = got
        .iter()
        .position(|m| matches!(&m.body, incidentd::ports::Delivery::UpdateCard { card } if card.chart.is_some()))
        .expect("the chart comes in a card edit");
    assert!(matches!(
        got[0].body,
        incidentd::ports::Delivery::PostCard { .. }
    ));
    assert!(with_chart > 0);
    assert!(
        got[with_chart].thread.is_some(),
        "an edit of the posted card"
    );
    let chart = cards(&got[with_chart..])[0].chart.clone().unwrap();
    assert_eq!(chart.query, r#"errors_ratio{service="api"}"#);
    assert_eq!(chart.threshold, Some(0.05));
    assert_eq!(chart.current(), Some(0.7));
    assert_eq!(chart.points.len(), 2);
    // The very request that was held is the one that answered: nobody gave up on it.
    assert!(
        prom.requests().iter().all(|r| r.fate != Fate::GaveUp),
        "{:?}",
        prom.requests()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclusive_evidence_names_the_root_cause_in_the_timeline_and_the_report() {
    let target = Target::start().await;
    let Some(prom) = PromServer::start(&target).await else {
        return;
    };
    target.set(r#"upstream_429_per_second{service="api"}"#, 37.0);
    target.set(r#"cpu_saturation{service="api"}"#, 0.4);
    prom.wait_values(r#"upstream_429_per_second{service="api"}"#, &[37.0])
        .await;
    prom.wait_values(r#"cpu_saturation{service="api"}"#, &[0.4])
        .await;
    let config = evidence_config(&prom.url, 5);
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &config, &|_| None).await;
    fire(&app, "api").await;
    let v = wait_incident(&app, |v| !timeline(v, "evidence").is_empty()).await;
    let evidence = timeline(&v, "evidence");
    assert_eq!(evidence.len(), 2, "{evidence:#?}");
    assert_eq!(evidence[0]["name"], "CPU saturation");
    assert_eq!(evidence[0]["summary"], "0.4");
    assert_eq!(evidence[0]["conclusive"], false);
    assert_eq!(evidence[1]["name"], "429 rate");
    assert_eq!(evidence[1]["summary"], "37");
    assert_eq!(evidence[1]["conclusive"], true);
    assert_eq!(
        evidence[1]["query"],
        r#"sum(upstream_429_per_second{service="api"})"#
    );
    let rc = &v["incident"]["root_cause"];
    assert_eq!(rc["category"], "external_dependency", "{rc}");
    let text = rc["text"].as_str().unwrap();
    assert!(
        text.starts_with("429 rate 37 at ")
            && text.ends_with(" UTC ⇒ external dependency: rate limit"),
        "{text}"
    );
    // The thread says it, and the report lists the evidence under Root cause.
    app.wait_chat(|r| {
        r.iter()
            .any(|m| note(m).contains("Suggested root cause: 429 rate 37 at"))
    })
    .await;
    let md = app
        .http
        .get(app.url("/api/v1/incidents/INC-1/report.md"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        md.contains("**External dependency** — 429 rate 37 at "),
        "{md}"
    );
    assert!(
        md.contains("Evidence:\n\n- CPU saturation = 0.4 at "),
        "{md}"
    );
    assert!(md.contains(" UTC, conclusive\n"), "{md}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_is_sent_and_never_shown_and_a_refused_query_is_final() {
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::{Arc, Mutex};
    // A stand-in that records the Authorization header and refuses the query as Prometheus
    // does (400 bad_data), echoing the header back in its error.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/prefix/api/v1/query",
        axum::routing::post(move |headers: HeaderMap| {
            let s = s.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                s.lock().unwrap().push(auth.clone());
                (
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"status": "error", "errorType": "bad_data", "error": "parse error"})
                        .to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/prefix/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = Prometheus::new(
        &url,
        Some("s3cret-token".into()),
        Duration::from_secs(5),
        reqwest::Client::new(),
    );
    assert!(!format!("{client:?}").contains("s3cret"));
    let err = client.instant("up{").await.unwrap_err();
    assert_eq!(seen.lock().unwrap().as_slice(), ["Bearer s3cret-token"]);
    assert!(err.is_permanent(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Prometheus refused the query: bad_data: parse error"
    );
    server.abort();
}

/// A playbook with two evidence queries (CPU saturation, the 429 rate), on Prometheus `url`.
fn evidence_config(url: &str, timeout_seconds: u64) -> String {
    format!(
        r#"
[prometheus]
url = "{url}"
timeout_seconds = {timeout_seconds}

[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
[[playbooks.evidence]]
name = "CPU saturation"
query = 'max(cpu_saturation{{service="{{labels.service}}"}})'
above = 0.9
root_cause = "resource_limits"
reason = "CPU saturation"
[[playbooks.evidence]]
name = "429 rate"
query = 'sum(upstream_429_per_second{{service="{{labels.service}}"}})'
above = 5
root_cause = "external_dependency"
reason = "rate limit"

[policy.P2]
approvers = ["slack:U1"]
"#
    )
}

/// Evidence asked for just before a restart (its Prometheus never answered) is gathered after
/// it; evidence already recorded is not gathered again by a later restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_cut_short_by_a_restart_is_gathered_after_it_once() {
    let target = Target::start().await;
    let Some(prom) = PromServer::start(&target).await else {
        return;
    };
    for service in ["api", "web"] {
        target.set(
            &format!(r#"upstream_429_per_second{{service="{service}"}}"#),
            37.0,
        );
        target.set(&format!(r#"cpu_saturation{{service="{service}"}}"#), 0.4);
    }
    prom.wait_values(r#"upstream_429_per_second{service="web"}"#, &[37.0])
        .await;
    prom.wait_values(r#"cpu_saturation{service="web"}"#, &[0.4])
        .await;
    let dir = tempfile::tempdir().unwrap();
    // The first process: its Prometheus never answers, so the evidence is still being gathered
    // when it stops.
    let (silent, held) = silent_prometheus().await;
    let app = TestApp::start_with(dir.path(), &evidence_config(&silent, 60), &|_| None).await;
    fire(&app, "api").await;
    wait_incident(&app, |v| v["incident"]["playbook"] == "api").await;
    app.stop().await;
    held.abort();

    let config = evidence_config(&prom.url, 5);
    let app = TestApp::start_with(dir.path(), &config, &|_| None).await;
    let v = wait_incident(&app, |v| !timeline(v, "evidence").is_empty()).await;
    assert_eq!(timeline(&v, "evidence").len(), 2, "{v:#}");
    assert_eq!(
        v["incident"]["root_cause"]["category"], "external_dependency",
        "{v:#}"
    );
    app.stop().await;

    // Another restart, then a new incident: evidence runs in order, the recovered first, so once
    // INC-2 has its evidence INC-1 would have had a second set if it were gathered again.
    let app = TestApp::start_with(dir.path(), &config, &|_| None).await;
    fire(&app, "web").await;
    wait_for(&app, "INC-2", |v| {
        v["timeline"].is_array() && !timeline(v, "evidence").is_empty()
    })
    .await;
    let (_, v) = app.get("/api/v1/incidents/INC-1").await;
    assert_eq!(timeline(&v, "evidence").len(), 2, "gathered once: {v:#}");
    app.stop().await;
}
