//! The REST actions end to end: the real app, tokens from the environment naming their holder,
//! each action through the engine and its policy, the refusals with their status codes, and
//! `INC-n` ids in every answer.

mod support;

use serde_json::Value;
use support::{alertmanager, TestApp};

const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-0123456789abcdef";
const ONCALL: &str = "oncall-0123456789abcdef";

fn config() -> String {
    // Responders (and approvers) at P1: the Slack user U1 and the console user bob.
    support::TEST_CONFIG.replace(
        "approvers = [\"slack:U1\"]",
        "approvers = [\"slack:U1\", \"console:bob\"]",
    ) + r#"
[severity.P1]
approval = "required"

[[api.tokens]]
holder = "alice"
token_env = "ALICE_API_TOKEN"

[[api.tokens]]
holder = "bob"
token_env = "BOB_API_TOKEN"

[[api.tokens]]
holder = "slack:U1"
token_env = "ONCALL_API_TOKEN"
"#
}

fn env(k: &str) -> Option<String> {
    match k {
        "ALICE_API_TOKEN" => Some(ALICE.into()),
        "ONCALL_API_TOKEN" => Some(ONCALL.into()),
        "BOB_API_TOKEN" => Some(BOB.into()),
        _ => None,
    }
}

async fn call(app: &TestApp, token: Option<&str>, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut r = app.http.post(app.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn timeline_text(v: &Value) -> String {
    v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn automation_acts_on_incidents_under_the_same_policy_as_chat() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &config(), &env).await;
    let firing = alertmanager("firing", &[("HighErrorRate", "api", "critical", "firing")]);
    let (s, v) = app.post_json("/api/v1/alerts/alertmanager", &firing).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["incident"], "INC-1");

    // Without a token, with a wrong one: 401, and nothing happens.
    let ack = "/api/v1/incidents/INC-1/acknowledge";
    assert_eq!(call(&app, None, ack, None).await.0, 401);
    let (s, v) = call(&app, Some("not-a-token-at-all"), ack, None).await;
    assert_eq!(s, 401, "{v}");
    let (_, inc) = app.get("/api/v1/incidents/INC-1").await;
    assert_ne!(inc["incident"]["status"], "acknowledged");

    // alice is no responder at P1: refused with the policy's words (403), as in chat.
    let (s, v) = call(&app, Some(ALICE), ack, None).await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("policy.P1"), "{v}");

    // bob is: acknowledged, as bob.
    let (s, v) = call(&app, Some(BOB), ack, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["incident"], "INC-1");
    assert_eq!(v["status"], "acknowledged");
    assert_eq!(v["by"], "bob");

    // alice may not approve either; the refusal is counted like a refused click.
    let approve = "/api/v1/incidents/INC-1/actions/restart/approve";
    let (s, v) = call(&app, Some(ALICE), approve, None).await;
    assert_eq!(s, 403, "{v}");
    let m = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("incidentd_approvals_total{outcome=\"refused\"}"),
        "{m}"
    );

    // The on-call's token approves; the action runs (argv /bin/true) and the incident, whose
    // playbook resolves on success, resolves.
    let (s, v) = call(&app, Some(ONCALL), approve, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["by"], "U1");
    let inc = support::eventually("the approved action ran", || async {
        let (_, inc) = app.get("/api/v1/incidents/INC-1").await;
        let ran = inc["executions"]
            .as_array()
            .is_some_and(|x| x.iter().any(|e| e["incident"] == "INC-1"));
        ran.then_some(inc)
    })
    .await;
    assert_eq!(inc["incident"]["id"], "INC-1");

    // A note and a root cause, as bob.
    let (s, v) = call(
        &app,
        Some(BOB),
        "/api/v1/incidents/INC-1/notes",
        Some(r#"{"text": "rolled by the deploy bot"}"#),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &app,
        Some(BOB),
        "/api/v1/incidents/INC-1/root-cause",
        Some(r#"{"category": "configuration", "text": "bad flag"}"#),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (_, inc) = app.get("/api/v1/incidents/INC-1").await;
    let text = timeline_text(&inc);
    assert!(text.contains("rolled by the deploy bot"), "{text}");
    assert!(text.contains("bob (API)"), "{text}");

    // Bad requests: an unknown category, an empty note, an unknown incident, a bad id.
    let (s, v) = call(
        &app,
        Some(ALICE),
        "/api/v1/incidents/INC-1/root-cause",
        Some(r#"{"category": "gremlins"}"#),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("configuration"),
        "{v}"
    );
    let (s, _) = call(
        &app,
        Some(ALICE),
        "/api/v1/incidents/INC-1/notes",
        Some("{\"text\": \" \"}"),
    )
    .await;
    assert_eq!(s, 400);
    let (s, v) = call(
        &app,
        Some(ALICE),
        "/api/v1/incidents/INC-99/acknowledge",
        None,
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"], "INC-99 does not exist");
    let (s, _) = call(
        &app,
        Some(ALICE),
        "/api/v1/incidents/nope/acknowledge",
        None,
    )
    .await;
    assert_eq!(s, 400);

    // Resolve (if the action did not already), then a second resolve conflicts; reopen.
    let resolve = "/api/v1/incidents/INC-1/resolve";
    let (_, inc) = app.get("/api/v1/incidents/INC-1").await;
    if inc["incident"]["status"] != "resolved" {
        let (s, v) = call(&app, Some(BOB), resolve, Some(r#"{"note": "done"}"#)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "resolved");
    }
    let (s, v) = call(&app, Some(BOB), resolve, None).await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = call(&app, Some(BOB), "/api/v1/incidents/INC-1/reopen", None).await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["status"], "resolved");

    // Every incident id in the API's answers is INC-n.
    let (_, list) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(list["incidents"][0]["id"], "INC-1", "{list}");
    let (_, one) = app.get("/api/v1/incidents/INC-1").await;
    let mut numbers = Vec::new();
    find_numeric_ids(&one, &mut numbers);
    assert!(numbers.is_empty(), "numeric incident ids at {numbers:?}");
    app.stop().await;
}

fn find_numeric_ids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if matches!(k.as_str(), "incident" | "last") && x.is_u64() {
                    out.push(k.clone());
                }
                find_numeric_ids(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| find_numeric_ids(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn without_configured_tokens_the_actions_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    let firing = alertmanager("firing", &[("DiskFull", "db", "warning", "firing")]);
    app.post_json("/api/v1/alerts/alertmanager", &firing).await;
    let (s, v) = call(
        &app,
        Some(ALICE),
        "/api/v1/incidents/INC-1/acknowledge",
        None,
    )
    .await;
    assert_eq!(s, 401, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("[[api.tokens]]"),
        "{v}"
    );
    app.stop().await;
}
