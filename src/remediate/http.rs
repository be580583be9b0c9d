//! The HTTP executor: one request (a webhook, a feature-flag switch, a load-balancer drain) sent
//! with the caller's `reqwest::Client`, bounded by the plan's timeout.
//!
//! Success means exactly the expected status. Only what provably did not reach or was not taken
//! on by the server is retried by [`super::execute`]: a failure to connect, 429 and 503. A
//! timeout, a reset, any other 5xx may come after the server acted: reported, never sent again. The response body is kept (last 16 KiB) as the output, and every
//! known secret is masked in it and in error text — an endpoint that echoes its `Authorization`
//! header must not put the token in the incident thread.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::time::Duration;

use reqwest::StatusCode;

use super::{redact, Attempt, RunOutput, Tail};

/// One request, borrowed from a [`super::Plan::Http`].
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    pub(crate) url: &'a str,
    pub(crate) headers: &'a BTreeMap<String, String>,
    pub(crate) body: Option<&'a serde_json::Value>,
    pub(crate) expect_status: u16,
    pub(crate) timeout: Duration,
}

/// Sends the request once.
pub(crate) async fn send(req: Request<'_>, secrets: &[&str], client: &reqwest::Client) -> Attempt {
    let Ok(method) = reqwest::Method::from_bytes(req.method.as_bytes()) else {
        return Attempt::failed(format!("{:?} is not an HTTP method", req.method), false);
    };
    // The timeout covers connecting, sending and reading the whole response body.
    let mut builder = client.request(method, req.url).timeout(req.timeout);
    for (name, value) in req.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = req.body {
        builder = builder.json(body);
    }
    let mut response = match builder.send().await {
        Ok(response) => response,
        Err(e) => {
            // Retried only when the request provably never reached the server (no connection):
            // a timeout or a reset after sending may come after the server did the work.
            let transient = e.is_connect();
            let error = redact(&describe(e, req.timeout), secrets);
            return Attempt::failed(error, transient);
        }
    };

    let status = response.status();
    let mut body = Tail::new(secrets);
    let mut incomplete = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => body.push(&chunk),
            Ok(None) => break,
            Err(e) => {
                incomplete = Some(describe(e, req.timeout));
                break;
            }
        }
    }
    let mut stdout = body.finish(secrets);
    if let Some(why) = incomplete {
        // The status already answered the question; a cut-off body is only worth a note.
        stdout.push_str(&redact(
            &format!("\n[response body incomplete: {why}]"),
            secrets,
        ));
    }

    let success = status.as_u16() == req.expect_status;
    // 429 and 503 say the server did not take the request on (rate limit, not available); any
    // other failure may come after it acted, so it is reported, not sent again.
    let transient = !success
        && (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS);
    let error = (!success).then(|| format!("got HTTP {status}, expected {}", req.expect_status));
    Attempt {
        output: RunOutput {
            success,
            exit_code: None,
            http_status: Some(status.as_u16()),
            stdout,
            stderr: String::new(),
            duration_ms: 0,
            attempts: 1,
            error,
        },
        transient,
    }
}

/// The error and its causes on one line, without the URL (the plan shows it already, and a URL
/// may carry a token in its query).
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} s", timeout.as_secs());
    }
    let e = e.without_url();
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use axum::Router;
    use serde_json::json;

    use super::*;
    use crate::domain::incident::tests_support::incident;
    use crate::domain::playbook::{ActionSpec, ExecutorSpec};
    use crate::remediate::{execute, plan, Plan, RetryPolicy};

    /// What the fake endpoint saw.
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        headers: HeaderMap,
        body: String,
    }

    #[derive(Default)]
    struct Server {
        seen: Mutex<Vec<Seen>>,
        flaky_calls: AtomicU32,
    }

    /// Starts the fake endpoint on 127.0.0.1:0:
    /// `/ok` → 200 echoing the `Authorization` header, `/flaky` → 500 then 200,
    /// `/missing` → 404, `/busy` → 429, `/hang` → never answers; any other path → 200,
    /// recorded with its query exactly as it arrived (still percent-encoded).
    async fn start() -> (String, Arc<Server>) {
        async fn record(s: &Server, path: &str, headers: HeaderMap, body: String) {
            s.seen.lock().unwrap().push(Seen {
                path: path.into(),
                headers,
                body,
            });
        }
        /// Any other path: 200, recorded with its query as it arrived (still percent-encoded).
        async fn any_path(
            State(s): State<Arc<Server>>,
            uri: axum::http::Uri,
            h: HeaderMap,
            body: String,
        ) -> (StatusCode, &'static str) {
            let target = uri.path_and_query().map_or("", |p| p.as_str());
            record(&s, target, h, body).await;
            (StatusCode::OK, "ok")
        }
        let state = Arc::new(Server::default());
        let app = Router::new()
            .route(
                "/ok",
                post(
                    |State(s): State<Arc<Server>>, h: HeaderMap, body: String| async move {
                        let auth = h
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        record(&s, "/ok", h, body).await;
                        (StatusCode::OK, format!("switched; you sent {auth}"))
                    },
                ),
            )
            .route(
                "/flaky",
                post(
                    |State(s): State<Arc<Server>>, h: HeaderMap, body: String| async move {
                        record(&s, "/flaky", h, body).await;
                        if s.flaky_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                            (StatusCode::SERVICE_UNAVAILABLE, "try again")
                        } else {
                            (StatusCode::OK, "ok now")
                        }
                    },
                ),
            )
            .route(
                "/missing",
                post(
                    |State(s): State<Arc<Server>>, h: HeaderMap, body: String| async move {
                        record(&s, "/missing", h, body).await;
                        (StatusCode::NOT_FOUND, "no such thing")
                    },
                ),
            )
            .route(
                "/busy",
                post(
                    |State(s): State<Arc<Server>>, h: HeaderMap, body: String| async move {
                        record(&s, "/busy", h, body).await;
                        (StatusCode::TOO_MANY_REQUESTS, "slow down")
                    },
                ),
            )
            .route(
                "/hang",
                post(
                    |State(s): State<Arc<Server>>, h: HeaderMap, body: String| async move {
                        record(&s, "/hang", h, body).await;
                        std::future::pending::<&'static str>().await
                    },
                ),
            )
            .route(
                "/broken",
                post(
                    |State(s): State<Arc<Server>>, h: HeaderMap, body: String| async move {
                        record(&s, "/broken", h, body).await;
                        (StatusCode::INTERNAL_SERVER_ERROR, "half done")
                    },
                ),
            )
            .fallback(any_path)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), state)
    }

    /// No proxy from the environment may stand between the test and its loopback server.
    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    fn quick_retry(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base_backoff: Duration::from_millis(1),
        }
    }

    fn http_plan(url: String, expect_status: u16, timeout_seconds: u64) -> Plan {
        Plan::Http {
            method: "POST".into(),
            url,
            headers: BTreeMap::new(),
            body: None,
            expect_status,
            timeout_seconds,
        }
    }

    #[tokio::test]
    async fn templated_request_arrives_and_secrets_never_show() {
        let (base, server) = start().await;
        let token = "tok-9f8e7d";
        let mut inc = incident();
        inc.labels.insert("service".into(), "api".into());
        let action = ActionSpec {
            id: "fallback".into(),
            title: "Switch to backup".into(),
            description: None,
            auto: true,
            when: None,
            allowed_pattern: None,
            timeout_seconds: 10,
            verify: None,
            rollback: None,
            run: ExecutorSpec::Http {
                method: "POST".into(),
                url: format!("{base}/ok"),
                headers: [
                    ("Authorization".to_string(), format!("Bearer {token}")),
                    ("X-Incident".to_string(), "{incident.id}".to_string()),
                ]
                .into(),
                body: Some(json!({"service": "{labels.service}", "weight": 0, "drain": true})),
                expect_status: 200,
            },
        };
        let plan = plan(&action, &inc, "kubectl").unwrap();
        let preview = plan.preview();
        assert!(!preview.contains(token), "{preview}");
        assert!(preview.contains("[Authorization: ***]"), "{preview}");

        let out = execute(&plan, &quick_retry(3), &[token], &client()).await;
        assert!(out.success, "{out:?}");
        assert_eq!(out.http_status, Some(200));
        assert_eq!(out.attempts, 1);
        assert_eq!(out.exit_code, None);
        // The whole header value is masked, not just the token the caller named.
        assert_eq!(out.stdout, "switched; you sent ***");
        assert!(!format!("{out:?}").contains(token));

        // Even a caller that names no secrets gets the Authorization value masked.
        let out = execute(&plan, &quick_retry(3), &[], &client()).await;
        assert!(out.success, "{out:?}");
        assert!(!out.stdout.contains(token), "{}", out.stdout);
        assert!(out.stdout.ends_with("you sent ***"), "{}", out.stdout);

        let seen = server.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        let req = &seen[0];
        assert_eq!(req.path, "/ok");
        assert_eq!(
            req.headers["authorization"],
            format!("Bearer {token}").as_str()
        );
        assert_eq!(req.headers["x-incident"], "INC-7");
        assert_eq!(req.headers["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(body, json!({"service": "api", "weight": 0, "drain": true}));
    }

    /// With an allowed pattern that lets anything through, each hostile value still arrives as
    /// exactly one path segment and one query value: `%2e%2e` (which URL parsers read as `..`),
    /// `/`, `?`, `#`, `@`, `\`, a space and non-ASCII text. `.` and `..` are refused.
    #[tokio::test]
    async fn hostile_url_values_arrive_as_one_segment_with_any_pattern() {
        let (base, server) = start().await;
        let cases = [
            ("%2e%2e", "%252e%252e"),
            ("%2E%2E%2Fetc", "%252E%252E%252Fetc"),
            ("a/../../b", "a%2F..%2F..%2Fb"),
            ("x?admin=1", "x%3Fadmin%3D1"),
            ("x#frag", "x%23frag"),
            ("user@evil.example", "user%40evil.example"),
            ("a\\b c", "a%5Cb%20c"),
            ("dépl☃y", "d%C3%A9pl%E2%98%83y"),
            (".%2e", ".%252e"),
        ];
        for (value, encoded) in cases {
            let mut inc = incident();
            inc.labels.insert("target".into(), value.into());
            let action = ActionSpec {
                id: "probe".into(),
                title: "Probe".into(),
                description: None,
                auto: true,
                allowed_pattern: Some("^.+$".into()),
                timeout_seconds: 10,
                verify: None,
                rollback: None,
                when: None,
                run: ExecutorSpec::Http {
                    method: "POST".into(),
                    url: format!("{base}/probe/{{labels.target}}/x?t={{labels.target}}"),
                    headers: BTreeMap::new(),
                    body: None,
                    expect_status: 200,
                },
            };
            let plan = plan(&action, &inc, "kubectl").unwrap();
            let out = execute(&plan, &quick_retry(1), &[], &client()).await;
            assert!(out.success, "{value}: {out:?}");
            let seen = server.seen.lock().unwrap().pop().unwrap();
            assert_eq!(
                seen.path,
                format!("/probe/{encoded}/x?t={encoded}"),
                "{value}"
            );
        }
        for value in [".", ".."] {
            let mut inc = incident();
            inc.labels.insert("target".into(), value.into());
            let action = ActionSpec {
                id: "probe".into(),
                title: "Probe".into(),
                description: None,
                auto: true,
                allowed_pattern: Some("^.+$".into()),
                timeout_seconds: 10,
                verify: None,
                rollback: None,
                when: None,
                run: ExecutorSpec::Http {
                    method: "POST".into(),
                    url: format!("{base}/probe/{{labels.target}}"),
                    headers: BTreeMap::new(),
                    body: None,
                    expect_status: 200,
                },
            };
            assert!(plan(&action, &inc, "kubectl").is_err(), "{value}");
        }
    }

    /// `target = "../../etc"` matches the default allowed pattern; substituted into a URL path
    /// it must stay one path segment under `/probe/`, and a query value one query value.
    #[tokio::test]
    async fn a_templated_url_value_stays_inside_its_segment() {
        let (base, server) = start().await;
        let mut inc = incident();
        inc.labels.insert("target".into(), "../../etc".into());
        inc.labels.insert("since".into(), "a=1/b".into());
        let action = ActionSpec {
            id: "probe".into(),
            title: "Probe".into(),
            description: None,
            auto: true,
            when: None,
            allowed_pattern: None,
            timeout_seconds: 10,
            verify: None,
            rollback: None,
            run: ExecutorSpec::Http {
                method: "POST".into(),
                url: format!("{base}/probe/{{labels.target}}?since={{labels.since}}&x=1"),
                headers: BTreeMap::new(),
                body: None,
                expect_status: 200,
            },
        };
        let plan = plan(&action, &inc, "kubectl").unwrap();
        let out = execute(&plan, &quick_retry(1), &[], &client()).await;
        assert!(out.success, "{out:?}");
        let seen = server.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/probe/..%2F..%2Fetc?since=a%3D1%2Fb&x=1");

        // `..` alone as the segment is refused before anything is sent.
        inc.labels.insert("target".into(), "..".into());
        let err = crate::remediate::plan(&action, &inc, "kubectl").unwrap_err();
        assert!(err.to_string().contains("{labels.target}"), "{err}");
        assert!(err.to_string().contains("refusing to run"), "{err}");
    }

    #[tokio::test]
    async fn server_error_is_retried_until_it_succeeds() {
        let (base, server) = start().await;
        let out = execute(
            &http_plan(format!("{base}/flaky"), 200, 10),
            &quick_retry(3),
            &[],
            &client(),
        )
        .await;
        assert!(out.success, "{out:?}");
        assert_eq!(out.attempts, 2);
        assert_eq!(out.http_status, Some(200));
        assert_eq!(out.stdout, "ok now");
        assert_eq!(server.seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_request_that_timed_out_or_failed_inside_the_server_is_sent_once() {
        // The server got it: it may have done the work. Reported, never sent again.
        let (base, server) = start().await;
        for (path, want) in [("/hang", "timed out after 1 s"), ("/broken", "HTTP 500")] {
            let out = execute(
                &http_plan(format!("{base}{path}"), 200, 1),
                &quick_retry(3),
                &[],
                &client(),
            )
            .await;
            assert!(!out.success);
            assert_eq!(out.attempts, 1, "{path}: {out:?}");
            assert!(out.error.as_deref().unwrap().contains(want), "{out:?}");
        }
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "each sent once");
    }

    #[tokio::test]
    async fn client_error_is_not_retried() {
        let (base, server) = start().await;
        let out = execute(
            &http_plan(format!("{base}/missing"), 200, 10),
            &quick_retry(3),
            &[],
            &client(),
        )
        .await;
        assert!(!out.success);
        assert_eq!(out.attempts, 1);
        assert_eq!(out.http_status, Some(404));
        assert_eq!(out.stdout, "no such thing");
        assert_eq!(
            out.error.as_deref(),
            Some("got HTTP 404 Not Found, expected 200")
        );
        assert_eq!(server.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_expected_status_is_what_counts() {
        let (base, _server) = start().await;
        let out = execute(
            &http_plan(format!("{base}/ok"), 202, 10),
            &quick_retry(3),
            &[],
            &client(),
        )
        .await;
        assert!(!out.success, "200 is not the 202 the action expects");
        assert_eq!(out.attempts, 1);

        let out = execute(
            &http_plan(format!("{base}/missing"), 404, 10),
            &quick_retry(3),
            &[],
            &client(),
        )
        .await;
        assert!(out.success);
    }

    #[tokio::test]
    async fn too_many_requests_is_retried_to_the_limit() {
        let (base, server) = start().await;
        let out = execute(
            &http_plan(format!("{base}/busy"), 200, 10),
            &quick_retry(3),
            &[],
            &client(),
        )
        .await;
        assert!(!out.success);
        assert_eq!(out.attempts, 3);
        assert_eq!(out.http_status, Some(429));
        assert_eq!(server.seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn connection_refused_is_retried() {
        // A port that was free a moment ago and has no listener now.
        let port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let out = execute(
            &http_plan(format!("http://127.0.0.1:{port}/x?token=abc"), 200, 10),
            &quick_retry(2),
            &["abc"],
            &client(),
        )
        .await;
        assert!(!out.success);
        assert_eq!(out.attempts, 2);
        assert_eq!(out.http_status, None);
        let error = out.error.unwrap();
        assert!(!error.contains("abc"), "{error}");
        assert!(error.to_lowercase().contains("connect"), "{error}");
    }

    #[tokio::test]
    async fn a_hanging_server_times_out() {
        let (base, _server) = start().await;
        let out = execute(
            &http_plan(format!("{base}/hang"), 200, 1),
            &quick_retry(1),
            &[],
            &client(),
        )
        .await;
        assert!(!out.success);
        assert_eq!(out.error.as_deref(), Some("timed out after 1 s"));
        assert!(out.duration_ms < 10_000, "{}", out.duration_ms);
    }

    #[tokio::test]
    async fn unusable_requests_fail_without_retry() {
        let bad_method = Plan::Http {
            method: "NOT A METHOD".into(),
            url: "http://127.0.0.1:1/".into(),
            headers: BTreeMap::new(),
            body: None,
            expect_status: 200,
            timeout_seconds: 1,
        };
        let out = execute(&bad_method, &quick_retry(3), &[], &client()).await;
        assert_eq!((out.success, out.attempts), (false, 1));
        assert!(out.error.unwrap().contains("not an HTTP method"));

        let bad_url = http_plan("not a url".into(), 200, 1);
        let out = execute(&bad_url, &quick_retry(3), &[], &client()).await;
        assert_eq!((out.success, out.attempts), (false, 1), "{:?}", out.error);
    }
}
