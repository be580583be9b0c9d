//! The web console over real HTTP: login and sessions, the alert channel page, the live event
//! stream, buttons and posts through the chat service and the policy, and the refusals
//! (no session → 401, no CSRF token → 403, nothing changes).

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use incidentd::app::{run, Deps, PlaybookExecutor};
use incidentd::chat::console::ConsoleSurface;
use incidentd::chat::Surface;
use incidentd::config::Config;
use incidentd::ports::{Executor, SystemClock};
use reqwest::redirect::Policy;
use serde_json::Value;
use support::sse::Events;
use support::{alertmanager, fast_outbox};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789abc";

const CONFIG: &str = r#"
[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart"
run = { type = "command", argv = ["/bin/true"] }

[policy.P1]
approvers = ["console:alice"]

[[console.users]]
name = "alice"
token_env = "ALICE_TOKEN"
[[console.users]]
name = "bob"
token_env = "BOB_TOKEN"
"#;

const WAIT: Duration = Duration::from_secs(20);

struct Console {
    base: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Console {
    async fn start(dir: &std::path::Path) -> Console {
        Self::start_with(dir, CONFIG, Arc::new(PlaybookExecutor::new("kubectl"))).await
    }

    async fn start_with(
        dir: &std::path::Path,
        config: &str,
        executor: Arc<dyn Executor>,
    ) -> Console {
        let env = |k: &str| match k {
            "ALICE_TOKEN" => Some(ALICE.to_string()),
            "BOB_TOKEN" => Some(BOB.to_string()),
            _ => None,
        };
        let mut cfg = Config::from_toml(config, &env).expect("test config");
        cfg.store.path = dir.join("store");
        let surface: Arc<dyn Surface> =
            Arc::new(ConsoleSurface::new(cfg.console.users.clone()).unwrap());
        let deps = Deps {
            clock: Arc::new(SystemClock),
            surfaces: vec![surface],
            sinks: vec![],
            outbox: fast_outbox(),
            executor,
            store: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(cfg, listener, deps, async move {
            let _ = rx.await;
        }));
        Console {
            base,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.handle.take().unwrap())
            .await
            .expect("the app did not stop (an open event stream must not hold it)")
            .unwrap()
            .unwrap();
    }

    /// A browser-like client: cookie jar, redirects not followed (tests look at them).
    fn browser() -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .unwrap()
    }

    /// Logs in with `token`; the client and the session's CSRF token.
    async fn login(&self, token: &str) -> (reqwest::Client, String) {
        let c = Self::browser();
        let r = c
            .post(self.url("/console/login"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let page = c
            .get(self.url("/console/alerts"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = page
            .split(r#"name="csrf-token" content=""#)
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("the page carries the CSRF token")
            .to_string();
        (c, csrf)
    }

    async fn webhook(&self, alerts: &[(&str, &str, &str, &str)]) {
        let r = reqwest::Client::new()
            .post(self.url("/api/v1/alerts/alertmanager"))
            .header("content-type", "application/json")
            .body(alertmanager("firing", alerts))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn api(&self, path: &str) -> Value {
        reqwest::get(self.url(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Posts a form as the page's script does; the status and the JSON answer.
async fn post(
    c: &reqwest::Client,
    url: String,
    form: &[(&str, &str)],
    csrf_header: Option<&str>,
) -> (u16, Value) {
    let mut req = c.post(url).header("accept", "application/json").form(form);
    if let Some(t) = csrf_header {
        req = req.header("x-csrf-token", t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn login_refuses_bad_tokens_and_pages_need_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let app = Console::start(dir.path()).await;
    let anon = Console::browser();

    let r = anon.get(app.url("/")).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()["location"], "/console/alerts");
    for page in [
        "/console/alerts",
        "/console/incidents",
        "/console/stats",
        "/console/incidents/INC-1",
    ] {
        let r = anon.get(app.url(page)).send().await.unwrap();
        assert!(r.status().is_redirection(), "{page}");
        assert_eq!(r.headers()["location"], "/console/login", "{page}");
    }
    let r = anon.get(app.url("/console/events")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let r = anon.get(app.url("/console/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"<label for="token">"#), "{page}");

    // Wrong tokens: refused, no cookie.
    for bad in ["nope", "alice-token-012345678", ""] {
        let r = anon
            .post(app.url("/console/login"))
            .form(&[("token", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad:?}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    let r = anon
        .get(app.url("/console/login?token=wrong-token-0123456789"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("That token is not valid."));

    // The one-click link logs in: HttpOnly, SameSite=Strict session cookie.
    let c = Console::browser();
    let r = c
        .get(app.url(&format!("/console/login?token={ALICE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("incidentd_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let sid = cookie["incidentd_session=".len()..]
        .split(';')
        .next()
        .unwrap();
    assert_eq!(sid.len(), 64);
    let r = c.get(app.url("/console/alerts")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let page = r.text().await.unwrap();
    assert!(page.contains("Signed in as <strong>alice</strong>"));
    assert!(page.contains("No incidents yet."));

    // Assets are served from the binary.
    for (path, ty) in [
        ("/console/assets/console.css", "text/css"),
        ("/console/assets/console.js", "text/javascript"),
    ] {
        let r = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ty));
    }

    // Logging out ends the session (it needs the CSRF token too).
    let csrf = page
        .split(r#"name="csrf-token" content=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let r = c
        .post(app.url("/console/logout"))
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(app.url("/console/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = c.get(app.url("/console/alerts")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/console/login");
    app.stop().await;
}

#[tokio::test]
async fn webhook_alert_appears_live_and_on_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let app = Console::start(dir.path()).await;
    let (c, _) = app.login(ALICE).await;
    let mut live = Events::open(&c, &app.url("/console/events")).await;

    app.webhook(&[
        ("HighErrorRate", "api", "critical", "firing"),
        ("DiskAlmostFull", "db", "info", "firing"),
    ])
    .await;
    let ev = live
        .wait("card", |v| v["incident"] == "INC-1" && v["new"] == true)
        .await;
    let thread = ev["thread"].as_str().unwrap();
    assert!(thread.contains(r#"<article class="thread" id="thread-INC-1""#));
    assert!(thread.contains("HighErrorRate"));
    assert!(
        thread.contains(r#"value="approve:INC-1:restart""#),
        "{thread}"
    );
    assert!(thread.contains(r#"value="preview:INC-1:restart""#));
    live.wait("card", |v| v["incident"] == "INC-2").await;

    // A fresh page shows both threads with their cards.
    let page = c
        .get(app.url("/console/alerts"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"id="thread-INC-1""#) && page.contains(r#"id="thread-INC-2""#));
    assert!(page.contains("Acknowledge"));
    assert!(page.contains(r#"<span class="sev sev-P1">P1</span>"#));

    // The dashboard: list and filters, incident page, stats.
    let list = |q: &'static str| {
        let c = c.clone();
        let url = app.url(&format!("/console/incidents{q}"));
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let all = list("").await;
    assert!(all.contains("/console/incidents/INC-1") && all.contains("/console/incidents/INC-2"));
    let p1 = list("?severity=P1").await;
    assert!(p1.contains("/console/incidents/INC-1") && !p1.contains("/console/incidents/INC-2"));
    let text = list("?q=diskalmost").await;
    assert!(
        !text.contains("/console/incidents/INC-1") && text.contains("/console/incidents/INC-2")
    );
    let kind = list("?kind=tool_api_failure&status=open").await;
    assert!(
        kind.contains("/console/incidents/INC-1") && !kind.contains("/console/incidents/INC-2")
    );
    let none = list("?status=resolved").await;
    assert!(none.contains("0 incidents"));
    let bad = list("?severity=P9").await;
    assert!(bad.contains(r#"class="error""#));

    let r = c
        .get(app.url("/console/incidents/INC-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc = r.text().await.unwrap();
    assert!(inc.contains("Timeline") && inc.contains("Opened as P1"));
    assert!(
        inc.contains("<h3>Post-incident report: INC-1"),
        "the incident page shows the report, rendered: {inc}"
    );
    assert!(inc.contains("Executions"));
    let r = c
        .get(app.url("/console/incidents/INC-99"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let stats = c
        .get(app.url("/console/stats"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(stats.contains("<svg class=\"chart\" role=\"img\""));
    assert!(
        stats.contains("By severity: P0 0, P1 1, P2 0, P3 1"),
        "{stats}"
    );
    app.stop().await;
}

#[tokio::test]
async fn approver_click_queues_the_execution_and_a_non_approver_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = Console::start(dir.path()).await;
    let (alice, alice_csrf) = app.login(ALICE).await;
    let (bob, bob_csrf) = app.login(BOB).await;
    let mut live = Events::open(&alice, &app.url("/console/events")).await;
    app.webhook(&[("HighErrorRate", "api", "critical", "firing")])
        .await;
    live.wait("card", |v| v["incident"] == "INC-1").await;

    // Preview: what would run, privately.
    let (s, v) = post(
        &alice,
        app.url("/console/button"),
        &[
            ("action_id", "preview:INC-1:restart"),
            ("csrf", &alice_csrf),
        ],
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(v["text"].as_str().unwrap().contains("/bin/true"), "{v}");

    // Bob is not an approver at P1: refused, and nothing is queued.
    let (s, v) = post(
        &bob,
        app.url("/console/button"),
        &[("action_id", "approve:INC-1:restart"), ("csrf", &bob_csrf)],
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("not an authorized approver"),
        "{v}"
    );
    let api = app.api("/api/v1/incidents/INC-1").await;
    assert!(api["executions"].as_array().unwrap().is_empty());

    // Alice is: the execution is queued, runs, and the thread says so.
    let (s, v) = post(
        &alice,
        app.url("/console/button"),
        &[("action_id", "approve:INC-1:restart")],
        Some(&alice_csrf),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["text"], "Approval of `restart` on INC-1 recorded.");
    let note = live
        .wait("reply", |v| {
            v["incident"] == "INC-1" && v["html"].as_str().unwrap().contains("queued for execution")
        })
        .await;
    assert!(note["html"]
        .as_str()
        .unwrap()
        .contains("console:alice approved <code>restart</code>"));
    live.wait("reply", |v| {
        v["html"].as_str().unwrap().contains("succeeded")
    })
    .await;
    let api = app.api("/api/v1/incidents/INC-1").await;
    assert_eq!(api["executions"][0]["key"], "INC-1:restart");

    // The thread notes are on the page for anyone who opens it now.
    let page = bob
        .get(app.url("/console/alerts"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("queued for execution"));
    app.stop().await;
}

#[tokio::test]
async fn state_changes_need_a_session_and_the_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = Console::start(dir.path()).await;
    app.webhook(&[("HighErrorRate", "api", "critical", "firing")])
        .await;
    let (alice, csrf) = app.login(ALICE).await;
    let (_, other_csrf) = app.login(ALICE).await;

    // No session at all: 401, even with a token that is valid elsewhere.
    let anon = Console::browser();
    let (s, _) = post(
        &anon,
        app.url("/console/button"),
        &[("action_id", "ack:INC-1"), ("csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = post(
        &anon,
        app.url("/console/post"),
        &[("text", "/incident resolve INC-1"), ("csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(s, 401);

    // A session but no token, a wrong one, or another session's: 403.
    let zeros = "0".repeat(64);
    for form in [
        vec![("action_id", "ack:INC-1")],
        vec![("action_id", "ack:INC-1"), ("csrf", "")],
        vec![("action_id", "ack:INC-1"), ("csrf", zeros.as_str())],
        vec![("action_id", "ack:INC-1"), ("csrf", other_csrf.as_str())],
    ] {
        let (s, v) = post(&alice, app.url("/console/button"), &form, None).await;
        assert_eq!(s, 403, "{form:?}: {v}");
    }
    let (s, _) = post(
        &alice,
        app.url("/console/post"),
        &[("text", "/incident resolve INC-1")],
        None,
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = post(
        &alice,
        app.url("/console/post"),
        &[("text", "[FIRING:1] Sneaky (x critical)")],
        Some("wrong"),
    )
    .await;
    assert_eq!(s, 403);

    // Nothing changed.
    let inc = app.api("/api/v1/incidents/INC-1").await;
    assert_eq!(inc["incident"]["status"], "open");
    assert!(inc["incident"]["acknowledged_by"].is_null());
    let all = app.api("/api/v1/incidents?status=all").await;
    assert_eq!(all["incidents"].as_array().unwrap().len(), 1);

    // With its token, the same click works.
    let (s, v) = post(
        &alice,
        app.url("/console/button"),
        &[("action_id", "ack:INC-1"), ("csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["text"], "INC-1 acknowledged.");
    let inc = app.api("/api/v1/incidents/INC-1").await;
    assert_eq!(inc["incident"]["acknowledged_by"]["id"], "alice");
    assert_eq!(inc["incident"]["acknowledged_by"]["platform"], "console");
    app.stop().await;
}

#[tokio::test]
async fn pasted_alert_opens_an_incident_and_commands_and_replies_work() {
    let dir = tempfile::tempdir().unwrap();
    let app = Console::start(dir.path()).await;
    let (c, csrf) = app.login(ALICE).await;
    let mut live = Events::open(&c, &app.url("/console/events")).await;

    let (s, v) = post(
        &c,
        app.url("/console/post"),
        &[
            ("text", "[FIRING:1] HighErrorRate (api critical)"),
            ("csrf", &csrf),
        ],
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["text"], "Posted to #console-alerts.");
    let msg = live.wait("chat", |_| true).await;
    assert!(msg["html"].as_str().unwrap().contains("HighErrorRate"));
    let card = live.wait("card", |v| v["incident"] == "INC-1").await;
    assert!(card["card"].as_str().unwrap().contains("HighErrorRate"));
    let inc = app.api("/api/v1/incidents/INC-1").await;
    // Read exactly as the Slack path reads it (same parser, same classification).
    assert_eq!(inc["incident"]["kind"], "tool_api_failure");
    assert_eq!(inc["incident"]["source"], "console");
    assert_eq!(inc["incident"]["origin"]["channel"], "console-alerts");

    // The same message again: the same incident, counted (one incident per fingerprint).
    post(
        &c,
        app.url("/console/post"),
        &[
            ("text", "[FIRING:1] HighErrorRate (api critical)"),
            ("csrf", &csrf),
        ],
        None,
    )
    .await;
    let all = app.api("/api/v1/incidents?status=all").await;
    assert_eq!(all["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(all["incidents"][0]["alert_count"], 2);

    // `/incident` commands answer only the user who typed them.
    let (s, v) = post(
        &c,
        app.url("/console/post"),
        &[("text", "/incident list"), ("csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(s, 200);
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("INC-1") && text.contains("HighErrorRate"),
        "{text}"
    );
    assert_eq!(v["ephemeral"], true);
    let (_, v) = post(
        &c,
        app.url("/console/post"),
        &[("text", "/incident bogus"), ("csrf", &csrf)],
        None,
    )
    .await;
    assert!(!v["text"].as_str().unwrap().is_empty());

    // Follow-ups: the same subcommands, and the report's buttons as console buttons.
    let say = |text: &'static str| {
        let (c, csrf) = (&c, &csrf);
        let url = app.url("/console/post");
        async move {
            post(c, url, &[("text", text), ("csrf", csrf)], None)
                .await
                .1
        }
    };
    let v = say("/incident followup add INC-1 process: write the runbook @alice").await;
    assert_eq!(v["text"], "Follow-up added to INC-1.", "{v}");
    let v = say("/incident followup list INC-1").await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("#1 write the runbook — @alice (process, open, due"),
        "{v}"
    );
    assert_eq!(v["ephemeral"], true);
    // The report's "Done #1" button, as the console posts it (Alice owns it and responds).
    let (s, v) = post(
        &c,
        app.url("/console/button"),
        &[("action_id", "fu-done:INC-1:1"), ("csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["text"], "Follow-up #1 of INC-1 is done.", "{v}");
    let v = say("/incident followups mine").await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("☑ #1 write the runbook"),
        "{v}"
    );

    // A reply in the thread: shown live and written to the timeline.
    let (s, v) = post(
        &c,
        app.url("/console/post"),
        &[
            ("text", "looking at the <b>api</b> pods"),
            ("thread", "INC-1"),
            ("csrf", &csrf),
        ],
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let reply = live
        .wait("reply", |v| v["html"].as_str().unwrap().contains("pods"))
        .await;
    let html = reply["html"].as_str().unwrap();
    assert!(
        html.contains("alice") && html.contains("&lt;b&gt;api&lt;/b&gt;"),
        "{html}"
    );
    let inc = app.api("/api/v1/incidents/INC-1").await;
    let notes: Vec<&Value> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "note")
        .collect();
    assert_eq!(notes.len(), 1);
    assert_eq!(
        notes[0]["text"],
        "console:alice: looking at the <b>api</b> pods"
    );

    // Without JavaScript the answer is a page.
    let r = c
        .post(app.url("/console/post"))
        .form(&[("text", "/incident help"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    app.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_event_streams() {
    let dir = tempfile::tempdir().unwrap();
    let app = Console::start(dir.path()).await;
    let (c, _) = app.login(BOB).await;
    let mut live = Events::open(&c, &app.url("/console/events")).await;
    // An open page must not keep the server from draining and closing the store.
    app.stop().await;
    let rest = tokio::time::timeout(WAIT, async {
        while let Some(chunk) = live.body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(rest.is_ok(), "the event stream did not end");
}

#[tokio::test]
async fn demo_script_fills_the_console() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped config (the demo's default) with the test's console users.
    let config = format!(
        "{}\n[[console.users]]\nname = \"alice\"\ntoken_env = \"ALICE_TOKEN\"\n",
        include_str!("../config/incidentd.toml")
    );
    let app = Console::start_with(
        dir.path(),
        &config,
        Arc::new(incidentd::demo::DemoExecutor::default()),
    )
    .await;
    let lines = std::sync::Mutex::new(Vec::new());
    let n = incidentd::demo::feed(
        &app.base,
        &Default::default(),
        Duration::ZERO,
        &|l: &str| lines.lock().unwrap().push(l.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(lines.lock().unwrap().len(), n);
    let all = app.api("/api/v1/incidents?status=all").await;
    let list = all["incidents"].as_array().unwrap();
    let sev = |s: &str| list.iter().filter(|i| i["severity"] == s).count();
    assert!(sev("P0") >= 1 && sev("P1") >= 1 && sev("P2") >= 1 && sev("P3") >= 1);
    let mut kinds: Vec<&str> = list.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    kinds.sort();
    kinds.dedup();
    assert!(kinds.len() >= 4, "{kinds:?}");
    // Repeats counted on one incident.
    assert!(list.iter().any(|i| i["alert_count"] == 3));
    // The alert that cleared resolved its incident (its playbook resolves on the clear), and
    // firing again within the flap window reopened that same incident.
    let llm: Vec<&Value> = list
        .iter()
        .filter(|i| i["labels"]["alertname"] == "LLMProviderRateLimit")
        .collect();
    assert_eq!(llm.len(), 1, "{list:?}");
    assert_eq!(llm[0]["status"], "open", "{list:?}");
    let timeline = app
        .api(&format!(
            "/api/v1/incidents/{}",
            llm[0]["id"].as_str().unwrap()
        ))
        .await["timeline"]
        .clone();
    let to: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "status_changed")
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert!(to.ends_with(&["resolved", "open"]), "{timeline:#}");
    // Demo alerts started shortly before they were sent: reports do not say "181 h" to detect.
    let mut with_start = 0;
    for i in list {
        let at = |k: &str| {
            i[k].as_str()
                .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap())
        };
        let Some(started) = at("started_at") else {
            continue; // generic JSON alerts carry no start
        };
        with_start += 1;
        let detect = at("opened_at").unwrap() - started;
        assert!(
            detect >= chrono::Duration::zero() && detect <= chrono::Duration::minutes(10),
            "{} detected after {detect}",
            i["id"]
        );
    }
    assert!(with_start >= 4, "{list:?}");
    app.stop().await;
}

#[tokio::test]
async fn answers_and_the_report_are_rendered_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let app = Console::start(dir.path()).await;
    let (c, csrf) = app.login(ALICE).await;
    app.webhook(&[("HighErrorRate", "api", "critical", "firing")])
        .await;

    // A private answer to the page's script: its text, and the same as safe HTML.
    let (s, v) = post(
        &c,
        app.url("/console/post"),
        &[("text", "/incident help"), ("csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(v["text"].as_str().unwrap().contains("`ack INC-n`"), "{v}");
    let html = v["html"].as_str().unwrap_or_else(|| panic!("no html: {v}"));
    assert!(html.contains("<code>ack INC-n</code>"), "{html}");
    assert!(html.contains("<em>/incident</em>"), "{html}");
    assert!(!html.contains('`'), "{html}");
    // Without JavaScript: the answer page shows it rendered too.
    let page = c
        .post(app.url("/console/post"))
        .form(&[("text", "/incident help"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<code>ack INC-n</code>"), "{page}");
    assert!(!page.contains("`ack INC-n`"), "{page}");

    // The incident page shows the report rendered, not its Markdown source.
    let page = c
        .get(app.url("/console/incidents/INC-1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let report = &page[page.find("id=\"rp-h\"").expect("report section")..];
    assert!(report.contains("<td>Severity</td>"), "{report}");
    assert!(!report.contains("| Severity |"), "{report}");
    assert!(!report.contains("## Facts"), "{report}");
    assert!(!report.contains("<script"), "{report}");
    app.stop().await;
}

#[tokio::test]
async fn logout_ends_the_live_stream() {
    let dir = tempfile::tempdir().unwrap();
    let app = Console::start(dir.path()).await;
    let (c, csrf) = app.login(BOB).await;
    let mut live = Events::open(&c, &app.url("/console/events")).await;
    let r = c
        .post(app.url("/console/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // The next event is not delivered to a session that ended: the stream closes instead.
    app.webhook(&[("HighErrorRate", "api", "critical", "firing")])
        .await;
    let rest = tokio::time::timeout(WAIT, async {
        let mut seen = String::new();
        while let Some(Ok(chunk)) = live.body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        seen
    })
    .await
    .expect("the event stream did not end after logout");
    assert!(!rest.contains("event: card"), "{rest}");
    app.stop().await;
}

#[tokio::test]
async fn chatter_opens_nothing_but_a_mention_or_incident_new_does() {
    let dir = tempfile::tempdir().unwrap();
    let app = Console::start(dir.path()).await;
    let (c, csrf) = app.login(ALICE).await;
    let say = |text: &'static str| {
        let (c, url, csrf) = (c.clone(), app.url("/console/post"), csrf.clone());
        async move { post(&c, url, &[("text", text), ("csrf", &csrf)], None).await }
    };

    // The post is handled before it is answered: chatter is posted, and nothing opens.
    let (s, v) = say("anyone around? checkout looks slow to me").await;
    assert_eq!(
        (s, v["text"].as_str()),
        (200, Some("Posted to #console-alerts."))
    );
    let all = app.api("/api/v1/incidents?status=all").await;
    assert_eq!(all["incidents"], serde_json::json!([]), "{all}");

    let (s, _) = say("@incidentd checkout is down").await;
    assert_eq!(s, 200);
    let all = app.api("/api/v1/incidents?status=all").await;
    assert_eq!(all["incidents"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all["incidents"][0]["title"], "checkout is down");
    assert_eq!(
        all["incidents"][0]["annotations"]["reported_by"],
        "console:alice"
    );

    let (s, v) = say("/incident new Checkout slow").await;
    assert_eq!(s, 200);
    assert_eq!(
        v["text"], "INC-2 opened by console:alice: Checkout slow",
        "{v}"
    );
    let all = app.api("/api/v1/incidents?status=all").await;
    assert_eq!(all["incidents"].as_array().unwrap().len(), 2, "{all}");
    app.stop().await;
}

/// The card of `incident` in `page` (up to its private answer's place).
fn card_html<'a>(page: &'a str, incident: &str) -> &'a str {
    let id = page
        .find(&format!("id=\"card-{incident}\""))
        .unwrap_or_else(|| panic!("no card of {incident} in {page}"));
    let from = page[..id].rfind("<div").unwrap();
    let rest = &page[from..];
    &rest[..rest.find("class=\"ephemeral").unwrap_or(rest.len())]
}

async fn get_text(c: &reqwest::Client, url: String) -> String {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn cards_say_how_long_and_what_is_left_escalations_show_once_resolved_cards_fold() {
    let dir = tempfile::tempdir().unwrap();
    // Not acknowledged within 1 s: incidentd escalates P1 incidents by itself.
    let config = format!("{CONFIG}\n[severity.P1]\ndetect_seconds = 1\n");
    let app = Console::start_with(
        dir.path(),
        &config,
        Arc::new(PlaybookExecutor::new("kubectl")),
    )
    .await;
    let (c, csrf) = app.login(ALICE).await;
    let mut live = Events::open(&c, &app.url("/console/events")).await;
    app.webhook(&[("HighErrorRate", "api", "critical", "firing")])
        .await;

    let page = get_text(&c, app.url("/console/alerts")).await;
    let card = card_html(&page, "INC-1");
    // One Preview button per proposed action.
    assert_eq!(
        card.matches("value=\"preview:INC-1:restart\"").count(),
        1,
        "{card}"
    );
    // Relative times, the absolute one in the title; countdowns to the P1 targets.
    assert!(card.contains("open for "), "{card}");
    assert!(card.contains(" UTC\""), "absolute time as a title: {card}");
    // (The wording, "3 min left to acknowledge" or "acknowledge overdue by 1 min", depends on
    // the time and is checked with a fixed clock in the unit tests.)
    assert!(card.contains("data-what=\"acknowledge\""), "{card}");
    assert!(card.contains("data-what=\"repair\""), "{card}");

    // The escalation: two events on record (the stats count the first), one line on the page.
    live.wait("card", |v| {
        v["incident"] == "INC-1" && v["status"] == "escalated"
    })
    .await;
    let inc = app.api("/api/v1/incidents/INC-1").await;
    let types: Vec<&str> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["text"].as_str().unwrap_or("").starts_with("Escalated"))
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["escalated", "status_changed"], "{inc}");
    let page = get_text(&c, app.url("/console/incidents/INC-1")).await;
    let tl = &page[page.find("<ol class=\"timeline\">").unwrap()..];
    let tl = &tl[..tl.find("</ol>").unwrap()];
    let escalations: Vec<&str> = tl
        .split("<li")
        .filter(|l| l.contains("Escalated"))
        .collect();
    assert_eq!(escalations.len(), 1, "{tl}");
    assert!(
        escalations[0].contains("Escalated by incidentd: not acknowledged"),
        "{tl}"
    );

    // Resolve: the card folds its details and says how long it took.
    let (s, _) = post(
        &c,
        app.url("/console/button"),
        &[("action_id", "resolve:INC-1"), ("csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(s, 200);
    let page = get_text(&c, app.url("/console/alerts")).await;
    let card = card_html(&page, "INC-1");
    assert!(card.contains("class=\"card compact\""), "{card}");
    assert!(card.contains("resolved after "), "{card}");
    assert!(card.contains("<details class=\"more\">"), "{card}");
    assert!(!card.contains("data-what=\"acknowledge\""), "{card}");
    app.stop().await;
}

#[tokio::test]
async fn stats_page_shows_the_outcome_numbers_against_targets_over_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let app = Console::start(dir.path()).await;
    let (c, csrf) = app.login(ALICE).await;
    app.webhook(&[("HighErrorRate", "api", "critical", "firing")])
        .await;
    let (s, _) = post(
        &c,
        app.url("/console/button"),
        &[("action_id", "resolve:INC-1"), ("csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(s, 200);

    let page = get_text(&c, app.url("/console/stats")).await;
    for want in [
        "Last 7 days",
        "MTTR",
        "p90",
        "from the alert",
        "MTTA",
        "Manual intervention",
        "Auto-remediation success",
        "RCA completion",
        "Recurrence",
        // One resolved incident, resolved by a person, no root cause confirmed.
        "(0/1)",
        "(1/1)",
        "<td>≥ 95%</td>",
        "<td>&lt; 8 min</td>",
        "Incidents per day",
        "MTTR per week",
    ] {
        assert!(page.contains(want), "missing {want:?} in {page}");
    }
    assert!(page.contains(r#"href="/console/stats?days=30""#), "{page}");
    assert!(
        page.contains(r#"aria-current="page" href="/console/stats?days=7""#)
            || page.contains(r#"href="/console/stats?days=7" aria-current="page""#),
        "{page}"
    );
    assert!(page.contains("svg class=\"chart trend\""), "{page}");

    let page = get_text(&c, app.url("/console/stats?days=90")).await;
    assert!(page.contains("Last 90 days"), "{page}");
    assert!(
        page.contains(r#"href="/console/stats?days=90" aria-current="page""#),
        "{page}"
    );
    // A window that is not offered falls back to 7 days and says so.
    let page = get_text(&c, app.url("/console/stats?days=abc")).await;
    assert!(page.contains("Last 7 days"), "{page}");
    app.stop().await;
}
