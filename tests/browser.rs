//! The console in a real headless Chromium, driven over the W3C WebDriver protocol (chromedriver)
//! from Rust with a minimal client: log in, see an incident appear live after a webhook POST
//! (one Preview button per action, relative times and countdowns), read a private answer rendered
//! from Markdown, approve an action and watch the card and thread update, open the incident page
//! (the report rendered, an escalation on the timeline once), post an alert message, resolve an
//! incident and see its card fold, read the stats against their targets over a chosen window, and
//! have requests without session or CSRF token refused. Screenshots (the alert channel, an
//! incident page, the stats page, …) go to `<target>/console-screenshots/`; the test prints the
//! path.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them). Only when
//! they are not installed does the test pass with a "skipped" message; any failure once they are
//! there fails it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use incidentd::app::{run, Deps, PlaybookExecutor};
use incidentd::chat::console::ConsoleSurface;
use incidentd::config::Config;
use incidentd::ports::SystemClock;
use serde_json::{json, Value};
use support::{alertmanager, fast_outbox};
use tokio::io::{AsyncBufReadExt, BufReader};

const ALICE: &str = "alice-token-0123456789";
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

# Not acknowledged within 2 s: incidentd escalates P2 incidents (the pasted alert) by itself.
[severity.P2]
detect_seconds = 2

[[console.users]]
name = "alice"
token_env = "ALICE_TOKEN"
"#;

/// The element key of the WebDriver spec.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// A WebDriver session.
struct Browser {
    http: reqwest::Client,
    session: String,
    shots: PathBuf,
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Waits (the session's implicit wait) for an element.
    async fn find(&self, using: &str, value: &str) -> String {
        let v = self
            .post("/element", json!({ "using": using, "value": value }))
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn css(&self, selector: &str) -> String {
        self.find("css selector", selector).await
    }

    async fn xpath(&self, xpath: &str) -> String {
        self.find("xpath", xpath).await
    }

    async fn click(&self, el: &str) {
        self.post(&format!("/element/{el}/click"), json!({})).await;
    }

    async fn type_into(&self, el: &str, text: &str) {
        self.post(&format!("/element/{el}/value"), json!({ "text": text }))
            .await;
    }

    async fn text(&self, el: &str) -> String {
        self.call(reqwest::Method::GET, &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Runs synchronous JavaScript; its return value.
    async fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    async fn attr(&self, el: &str, name: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{el}/attribute/{name}"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    async fn script(&self, script: &str) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": [] }))
            .await
    }

    async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn quit(&self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// Starts chromedriver on a free port; resolves once it says it is listening.
async fn chromedriver(bin: &Path) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("started successfully") {
                return;
            }
        }
        panic!("chromedriver exited before it was ready");
    })
    .await
    .expect("chromedriver did not start in time");
    // Keep reading its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_headless_chromium() {
    let (Some(driver), Some(chrome)) = (
        which(&["chromedriver"]),
        which(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        eprintln!(
            "SKIPPED console_in_headless_chromium: chromium and chromedriver are not installed \
             (apt-get install -y chromium chromium-driver)"
        );
        return;
    };
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    eprintln!("screenshots go to {}", shots.display());

    // The app.
    let dir = tempfile::tempdir().unwrap();
    let env = |k: &str| (k == "ALICE_TOKEN").then(|| ALICE.to_string());
    let mut cfg = Config::from_toml(CONFIG, &env).unwrap();
    cfg.store.path = dir.path().join("store");
    let deps = Deps {
        clock: Arc::new(SystemClock),
        surfaces: vec![Arc::new(
            ConsoleSurface::new(cfg.console.users.clone()).unwrap(),
        )],
        sinks: vec![],
        outbox: fast_outbox(),
        executor: Arc::new(PlaybookExecutor::new("kubectl")),
        store: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = tokio::spawn(run(cfg, listener, deps, async move {
        let _ = stopped.await;
    }));

    // The browser.
    let (_driver, wd) = chromedriver(&driver).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chrome,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"],
        },
    } } });
    let r: Value = http
        .post(format!("{wd}/session"))
        .json(&caps)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = r["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {r}"));
    let b = Browser {
        http,
        session: format!("{wd}/session/{session}"),
        shots: shots.clone(),
    };
    b.post(
        "/timeouts",
        json!({ "implicit": 30000, "script": 30000, "pageLoad": 60000 }),
    )
    .await;

    // Log in with the form.
    b.goto(&format!("{base}/console/alerts")).await;
    let token = b.css("#token").await;
    b.screenshot("01-login").await;
    b.type_into(&token, ALICE).await;
    b.click(&b.css("form.login button[type=submit]").await)
        .await;
    b.css("#live.on").await; // the event stream is open
    b.screenshot("02-alert-channel-empty").await;

    // A webhook POST: the incident appears without a reload.
    let hook = reqwest::Client::new()
        .post(format!("{base}/api/v1/alerts/alertmanager"))
        .header("content-type", "application/json")
        .body(alertmanager(
            "firing",
            &[("HighErrorRate", "api", "critical", "firing")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 200);
    let title = b.css("#thread-INC-1 h3").await;
    assert!(b.text(&title).await.contains("HighErrorRate"));
    b.screenshot("03-incident-live").await;

    // One Preview button per proposed action.
    let previews = b
        .js("return document.querySelectorAll('#card-INC-1 button[value^=\"preview:\"]').length;")
        .await;
    assert_eq!(previews, 1);
    // How long it has been open, the absolute time as a title, and the countdowns.
    let age = b.css("#card-INC-1 time.age").await;
    assert!(b.text(&age).await.starts_with("open for "));
    let title = b.attr(&age, "title").await;
    assert!(
        title.starts_with("opened ") && title.ends_with(" UTC"),
        "{title}"
    );
    let ack = b.css("#card-INC-1 [data-what=acknowledge]").await;
    let ack = b.text(&ack).await;
    assert!(
        ack.ends_with(" left to acknowledge") || ack.starts_with("acknowledge overdue by "),
        "{ack}"
    );
    b.css("#card-INC-1 [data-what=repair]").await;

    // A private answer is rendered Markdown: code, not backticks.
    b.click(&b.css(r#"button[value="preview:INC-1:restart"]"#).await)
        .await;
    let code = b
        .xpath("//div[@id='card-INC-1']//div[contains(@class,'ephemeral') and contains(., 'Preview of')]//code")
        .await;
    assert_eq!(b.text(&code).await, "restart");
    let answer = b.css("#card-INC-1 .ephemeral").await;
    let answer = b.text(&answer).await;
    assert!(!answer.contains('`'), "{answer}");

    // Approve the action: the private answer, the thread notes and the card update live.
    b.click(&b.css(r#"button[value="approve:INC-1:restart"]"#).await)
        .await;
    b.xpath(
        "//div[@id='card-INC-1']//div[contains(@class,'ephemeral') and contains(., 'Approval of')]",
    )
    .await;
    b.xpath("//ol[@id='replies-INC-1']/li[contains(., 'queued for execution')]")
        .await;
    b.xpath("//ol[@id='replies-INC-1']/li[contains(., 'succeeded')]")
        .await;
    b.xpath("//div[@id='card-INC-1']//td[normalize-space(.)='succeeded']")
        .await;
    b.screenshot("04-approved").await;

    // The incident page: card, timeline, and the report rendered (a table, no Markdown marks).
    b.click(&b.css("#title-INC-1 a").await).await;
    let timeline = b.css("ol.timeline").await;
    let tl = b.text(&timeline).await;
    assert!(tl.contains("approved") && tl.contains("succeeded"), "{tl}");
    b.css("div.report.md table td").await;
    let report = b.css("div.report.md").await;
    let report = b.text(&report).await;
    assert!(report.contains("Severity"), "{report}");
    assert!(
        !report.contains("| Severity") && !report.contains("## ") && !report.contains('`'),
        "{report}"
    );
    b.screenshot("05-incident-page").await;
    b.js("document.getElementById('rp-h').scrollIntoView(); return true;")
        .await;
    b.screenshot("06-incident-report").await;

    // A pasted alert message opens an incident, live.
    b.goto(&format!("{base}/console/alerts")).await;
    b.css("#live.on").await;
    let compose = b.css("#compose-text").await;
    b.type_into(&compose, "[FIRING:1] QueueBacklog (worker warning)")
        .await;
    b.click(&b.css("#compose button[type=submit]").await).await;
    let t2 = b.css("#thread-INC-2 h3").await;
    assert!(b.text(&t2).await.contains("QueueBacklog"));
    b.screenshot("07-pasted-alert").await;

    // `/incident help` in the compose box: its answer rendered too.
    b.type_into(&compose, "/incident help").await;
    b.click(&b.css("#compose button[type=submit]").await).await;
    b.xpath("//form[@id='compose']//div[contains(@class,'ephemeral')]//code[.='ack INC-n']")
        .await;

    // INC-2 is not acknowledged in time and escalates: its timeline says so once.
    b.css(r#"#card-INC-2[data-status="escalated"]"#).await;
    b.goto(&format!("{base}/console/incidents/INC-2")).await;
    let escalations = b
        .js("return [...document.querySelectorAll('ol.timeline li')].filter(l => l.textContent.includes('Escalated')).length;")
        .await;
    assert_eq!(escalations, 1);
    b.screenshot("08-escalated-incident-page").await;

    // Resolve INC-1: its card folds to a line, much smaller than the open INC-2's.
    b.goto(&format!("{base}/console/alerts")).await;
    b.css("#live.on").await;
    b.click(&b.css(r#"button[value="resolve:INC-1"]"#).await)
        .await;
    let folded = b.css("#card-INC-1.compact").await;
    assert!(b.text(&folded).await.contains("resolved after "));
    let heights = b
        .js("return ['card-INC-1', 'card-INC-2'].map(id => document.getElementById(id).getBoundingClientRect().height);")
        .await;
    let (resolved, open) = (heights[0].as_f64().unwrap(), heights[1].as_f64().unwrap());
    assert!(
        resolved * 2.0 < open,
        "resolved {resolved}px, open {open}px"
    );
    b.screenshot("09-alert-channel").await;

    // Stats: the outcome numbers against their targets, a window, and the trend.
    b.goto(&format!("{base}/console/stats")).await;
    b.css(r#".windows a[aria-current="page"][href="/console/stats?days=7"]"#)
        .await;
    b.click(&b.css(r#".windows a[href="/console/stats?days=30"]"#).await)
        .await;
    b.css(r#".windows a[aria-current="page"][href="/console/stats?days=30"]"#)
        .await;
    let outcomes = b.css("table.outcomes").await;
    let outcomes = b.text(&outcomes).await;
    for want in [
        "MTTR",
        "MTTA",
        "Manual intervention",
        "RCA completion",
        "Recurrence",
        "≥ 95%",
    ] {
        assert!(outcomes.contains(want), "{want} in {outcomes}");
    }
    let trends = b
        .js("return document.querySelectorAll('svg.chart.trend').length;")
        .await;
    assert_eq!(trends, 2);
    b.css("table.targets").await;
    b.screenshot("10-stats").await;
    b.js("document.querySelector('.charts').scrollIntoView(); return true;")
        .await;
    b.screenshot("11-stats-trend").await;

    // From the logged-in page, a post without the CSRF token is refused (403) ...
    let status = b
        .script(
            "const done = arguments[arguments.length - 1];
             fetch('/console/button', {method: 'POST', credentials: 'same-origin',
               headers: {'accept': 'application/json'},
               body: new URLSearchParams({action_id: 'resolve:INC-2'})})
             .then(r => done(r.status), e => done(String(e)));",
        )
        .await;
    assert_eq!(status, 403);
    // ... and without a session, 401.
    let r = reqwest::Client::new()
        .post(format!("{base}/console/button"))
        .form(&[("action_id", "resolve:INC-2")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let inc: Value = reqwest::get(format!("{base}/api/v1/incidents/INC-2"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(inc["incident"]["status"], "resolved");

    b.quit().await;
    let _ = stop.send(());
    app.await.unwrap().unwrap();
    eprintln!("screenshots in {}", shots.display());
}
