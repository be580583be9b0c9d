//! Strict decoding through the real webhooks: a label or annotation key given twice is refused
//! with 422 naming the key (never "last wins"), and a wrong-typed `status` is a 422 naming the
//! field, not "invalid JSON".

mod support;

use support::TestApp;

async fn post(app: &TestApp, path: &str, body: &str) -> (u16, String) {
    let (s, v) = app.post_json(path, body).await;
    (s, v["error"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_keys_and_wrong_typed_status_are_422_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path()).await;
    let cases: [(&str, &str, &str); 9] = [
        (
            "/api/v1/alerts/alertmanager",
            r#"{"alerts": [{"status": "firing", "labels": {"alertname": "A", "service": "x", "service": "y"}}]}"#,
            "alerts[0].labels: duplicate key \"service\"",
        ),
        (
            "/api/v1/alerts/alertmanager",
            r#"{"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "annotations": {"summary": "a", "summary": "b"}}]}"#,
            "alerts[0].annotations: duplicate key \"summary\"",
        ),
        (
            "/api/v1/alerts/alertmanager",
            r#"{"alerts": [{"status": 5, "labels": {"alertname": "A"}}]}"#,
            "alerts[0].status: ",
        ),
        (
            "/api/v1/alerts/alertmanager",
            r#"{"status": ["firing"], "alerts": [{"status": "firing", "labels": {"alertname": "A"}}]}"#,
            "status: ",
        ),
        (
            "/api/v1/alerts/grafana",
            r#"{"alerts": [{"status": "firing", "labels": {"alertname": "A", "alertname": "B"}}]}"#,
            "alerts[0].labels: duplicate key \"alertname\"",
        ),
        (
            "/api/v1/alerts/grafana",
            r#"{"alerts": [{"status": true, "labels": {"alertname": "A"}}]}"#,
            "alerts[0].status: ",
        ),
        (
            "/api/v1/alerts",
            r#"{"title": "X", "labels": {"host": "a", "host": "b"}}"#,
            "labels: duplicate key \"host\"",
        ),
        (
            "/api/v1/alerts",
            r#"{"title": "X", "status": 1}"#,
            "status: ",
        ),
        (
            "/api/v1/alerts",
            r#"[{"title": "X"}, {"title": "Y", "status": {"a": 1}}]"#,
            "[1].status: ",
        ),
    ];
    for (path, body, want) in cases {
        let (status, error) = post(&app, path, body).await;
        assert_eq!(status, 422, "{path} {body}: {error}");
        assert!(
            error.starts_with(want),
            "{path} {body}: {error:?}, want {want:?}"
        );
        assert!(!error.contains("invalid JSON"), "{error}");
    }
    // Nothing was stored.
    let (_, list) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 0, "{list}");
    app.stop().await;
}
