//! `incidentd demo`: the whole product in a browser within a minute. It runs the real app with a
//! temporary store and the web console, then plays a realistic sequence of sample alerts through
//! the real webhook endpoints (several kinds and severities, repeats, an alert that clears and
//! resolves its incident, and its re-fire within the flap window, which reopens that incident),
//! so the console fills up while you watch.
//!
//! Remediation is simulated: [`DemoExecutor`] shows exactly what an approved action would run
//! (the real templating and its refusals) but never launches it, so clicking "Approve" in a demo
//! cannot touch your cluster.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tracing::warn;

use crate::app::{self, Deps, PlaybookExecutor};
use crate::chat::console::login_url;
use crate::config::{Config, Secret};
use crate::domain::incident::Incident;
use crate::domain::playbook::{ActionSpec, VerifySpec};
use crate::ports::{ExecOutcome, Executor};

/// Plans actions for real, runs none of them.
pub struct DemoExecutor {
    planner: PlaybookExecutor,
}

impl Default for DemoExecutor {
    fn default() -> Self {
        DemoExecutor {
            planner: PlaybookExecutor::new("kubectl"),
        }
    }
}

#[async_trait::async_trait]
impl Executor for DemoExecutor {
    fn plan(&self, incident: &Incident, action: &ActionSpec) -> Result<String, String> {
        self.planner.plan(incident, action)
    }

    async fn run(&self, incident: &Incident, action: &ActionSpec) -> ExecOutcome {
        match self.planner.plan(incident, action) {
            Ok(p) => ExecOutcome {
                success: true,
                summary: format!("demo mode, not launched (would run: {p})"),
            },
            Err(e) => ExecOutcome {
                success: false,
                summary: format!("refused: {e}"),
            },
        }
    }

    async fn verify(&self, _: &Incident, _: &ActionSpec, spec: &VerifySpec) -> ExecOutcome {
        // Nothing ran, so there is nothing to check: say so rather than pretend.
        ExecOutcome {
            success: true,
            summary: format!("demo mode, not checked (would check: {})", spec.summary()),
        }
    }
}

/// Which webhook a sample goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Alertmanager,
    Generic,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Alertmanager => "/api/v1/alerts/alertmanager",
            Endpoint::Generic => "/api/v1/alerts",
        }
    }
}

/// One step of the demo: what is said, where it goes, and the body.
#[derive(Debug, Clone)]
pub struct Step {
    pub label: &'static str,
    pub endpoint: Endpoint,
    pub body: Value,
}

fn am(
    status: &str,
    name: &str,
    labels: &[(&str, &str)],
    summary: &str,
    description: &str,
) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("alertname".into(), json!(name));
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "incidentd",
        "groupLabels": { "alertname": name },
        "commonLabels": l.clone(),
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.demo:9093",
        "alerts": [{
            "status": status,
            "labels": l,
            "annotations": {
                "summary": summary,
                "description": description,
                "runbook_url": format!("https://runbooks.example/{}", name.to_lowercase()),
            },
            "startsAt": "2026-11-29T12:00:00Z",
            "endsAt": if status == "resolved" { "2026-11-29T12:20:00Z" } else { "0001-01-01T00:00:00Z" },
            "generatorURL": format!("http://prometheus.demo:9090/graph?g0.expr=ALERTS%7Balertname%3D%22{name}%22%7D"),
            "fingerprint": "",
        }]
    })
}

/// The demo's alert sequence.
pub fn script() -> Vec<Step> {
    let errors = || {
        am(
            "firing",
            "HighErrorRate",
            &[("service", "api"), ("severity", "critical")],
            "API 5xx ratio above 5% for 5 minutes",
            "The upstream search tool is unavailable: 503 from search.internal on 7% of requests.",
        )
    };
    let rate_limit = |status: &str| {
        am(
            status,
            "LLMProviderRateLimit",
            &[("service", "summarizer"), ("severity", "warning")],
            "Provider answers 429 Too Many Requests",
            "The summarizer hits the provider's rate limit; requests are retried.",
        )
    };
    vec![
        Step {
            label: "API error rate (Alertmanager, critical → P1, tool/API failure)",
            endpoint: Endpoint::Alertmanager,
            body: errors(),
        },
        Step {
            label: "Payments API down (generic JSON, payments rule → P0)",
            endpoint: Endpoint::Generic,
            body: json!({
                "title": "Payments API returning 503",
                "severity": "critical",
                "labels": { "service": "payments", "env": "prod" },
                "description": "Checkout cannot reach the payments provider: 503 Service Unavailable.",
                "links": [{ "title": "Payments dashboard", "url": "https://grafana.example/d/payments" }],
            }),
        },
        Step {
            label: "LLM provider rate limit (rule → tool/API failure, P2: automatic fallback)",
            endpoint: Endpoint::Alertmanager,
            body: rate_limit("firing"),
        },
        Step {
            label: "Planner agent stuck in a retry loop (orchestration failure, P1)",
            endpoint: Endpoint::Alertmanager,
            body: am(
                "firing",
                "AgentRetryLoop",
                &[
                    ("service", "planner"),
                    ("deployment", "planner"),
                    ("namespace", "agents"),
                    ("severity", "critical"),
                ],
                "Planner agent stuck in a retry loop",
                "The planner has retried the same step 40 times in 10 minutes.",
            ),
        },
        Step {
            label: "Model output fails schema validation (model output failure, P2)",
            endpoint: Endpoint::Generic,
            body: json!({
                "title": "Extractor model output fails schema validation",
                "severity": "warning",
                "labels": { "service": "extractor" },
                "description": "12% of responses are malformed output (JSON schema validation errors).",
            }),
        },
        Step {
            label: "Stale data from the ETL pipeline (custom kind, info → P3)",
            endpoint: Endpoint::Alertmanager,
            body: am(
                "firing",
                "ETLPipelineLag",
                &[("service", "warehouse"), ("severity", "info")],
                "Nightly ETL pipeline lag above 45 minutes",
                "Dashboards show stale data: pipeline lag 47 min.",
            ),
        },
        Step {
            label: "API error rate fires again (repeat: same incident, counter goes up)",
            endpoint: Endpoint::Alertmanager,
            body: errors(),
        },
        Step {
            label: "API error rate fires again (repeat)",
            endpoint: Endpoint::Alertmanager,
            body: errors(),
        },
        Step {
            label: "Missing environment variable after a deploy (configuration boundary, P2)",
            endpoint: Endpoint::Generic,
            body: json!({
                "title": "Worker crash: missing config OPENAI_BASE_URL",
                "severity": "warning",
                "labels": { "service": "worker", "deployment": "worker", "namespace": "prod" },
                "description": "Environment variable OPENAI_BASE_URL is not set since deploy 2026.11.29-3.",
            }),
        },
        Step {
            label: "LLM rate limit clears (its playbook auto-resolves the incident)",
            endpoint: Endpoint::Alertmanager,
            body: rate_limit("resolved"),
        },
        Step {
            label: "LLM rate limit comes back within the flap window (its incident reopens)",
            endpoint: Endpoint::Alertmanager,
            body: rate_limit("firing"),
        },
    ]
}

/// How long before it is sent a demo alert started firing.
const STARTED_BEFORE: chrono::Duration = chrono::Duration::minutes(2);

/// `body` as sent at `now`: each Alertmanager alert started [`STARTED_BEFORE`] it was first
/// sent (repeats keep that start, as Alertmanager does) and a cleared one ends `now`. `starts`
/// remembers the starts by alert name until the alert clears. Generic JSON is left as it is.
pub fn stamp(
    body: &Value,
    starts: &mut HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Value {
    let mut body = body.clone();
    let time = |t: DateTime<Utc>| json!(t.to_rfc3339_opts(SecondsFormat::Secs, true));
    if let Some(alerts) = body.get_mut("alerts").and_then(Value::as_array_mut) {
        for a in alerts {
            let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
            let start = *starts.entry(name.clone()).or_insert(now - STARTED_BEFORE);
            a["startsAt"] = time(start);
            if a["status"] == "resolved" {
                a["endsAt"] = time(now);
                starts.remove(&name);
            }
        }
    }
    body
}

/// Bearer tokens the webhooks need, from the config.
#[derive(Clone, Default)]
pub struct WebhookTokens {
    pub alertmanager: Option<Secret>,
    pub generic: Option<Secret>,
}

impl WebhookTokens {
    pub fn from_config(cfg: &Config) -> Self {
        WebhookTokens {
            alertmanager: cfg.webhooks.alertmanager.clone(),
            generic: cfg.webhooks.generic.clone(),
        }
    }
}

/// Plays the script against `base` (`http://127.0.0.1:8080`), `pace` apart; reports each step
/// through `say`.
pub async fn feed(
    base: &str,
    tokens: &WebhookTokens,
    pace: Duration,
    say: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<usize> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let steps = script();
    let mut starts = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        if i > 0 && !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        let token = match step.endpoint {
            Endpoint::Alertmanager => tokens.alertmanager.as_ref(),
            Endpoint::Generic => tokens.generic.as_ref(),
        };
        let mut req = http
            .post(format!("{base}{}", step.endpoint.path()))
            .json(&stamp(&step.body, &mut starts, Utc::now()));
        if let Some(t) = token {
            req = req.bearer_auth(t.expose());
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("sending {:?}", step.label))?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(
            status.is_success(),
            "the webhook refused {:?}: {status} {v}",
            step.label
        );
        let inc = v["results"][0]["incident"].as_str().unwrap_or("-");
        say(&format!("  {inc:>6}  {}", step.label));
    }
    Ok(steps.len())
}

/// A fresh directory for the demo's store, removed when dropped.
struct TempStore(PathBuf);

impl TempStore {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "incidentd-demo-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the demo store in {}", dir.display()))?;
        Ok(TempStore(dir))
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the demo on `listen` until `shutdown` resolves: the app with a temporary store, the
/// console, simulated remediation, and the sample alerts `pace` apart.
pub async fn run(
    mut cfg: Config,
    listen: SocketAddr,
    pace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = TempStore::new()?;
    cfg.store.path = store.0.join("store");
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    cfg.server.listen = addr;
    // Creates the console (with no users configured, the app prints the admin's login link
    // once it listens).
    let mut deps = Deps::from_config(&cfg)?;
    deps.executor = Arc::new(DemoExecutor::default());
    if !cfg.console.users.is_empty() {
        eprintln!(
            "incidentd demo: log in at {} with a console user's token.",
            login_url(addr)
        );
    }
    let tokens = WebhookTokens::from_config(&cfg);
    let server = tokio::spawn(app::run(cfg, listener, deps, shutdown));
    let base = format!("http://{addr}");
    let feeder = tokio::spawn(async move {
        eprintln!(
            "incidentd demo: store in a temporary directory; remediation is simulated. Sending sample alerts:"
        );
        match feed(&base, &tokens, pace, &|line| eprintln!("{line}")).await {
            Ok(n) => eprintln!(
                "incidentd demo: {n} alerts sent. Open the login link printed above, then acknowledge, preview, approve or resolve; Ctrl-C to stop."
            ),
            Err(e) => warn!(error = %format!("{e:#}"), "The demo could not send its alerts."),
        }
    });
    let result = server.await.context("the app task")?;
    feeder.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_start_shortly_before_they_are_sent() {
        let t0 = "2026-12-07T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let mut starts = HashMap::new();
        let steps = script();
        let starts_at = |v: &Value| v["alerts"][0]["startsAt"].as_str().unwrap().to_string();
        let first = stamp(&steps[0].body, &mut starts, t0);
        assert_eq!(starts_at(&first), "2026-12-07T09:58:00Z");
        // A repeat of the same alert keeps its start; generic JSON has none and is untouched.
        let later = t0 + chrono::Duration::minutes(5);
        let again = stamp(&steps[0].body, &mut starts, later);
        assert_eq!(starts_at(&again), "2026-12-07T09:58:00Z");
        assert_eq!(stamp(&steps[1].body, &mut starts, later), steps[1].body);
        // A cleared alert ends now; when it fires again, it starts again.
        let rl = |status: &str| {
            steps
                .iter()
                .find(|s| {
                    s.body["status"] == status
                        && s.body["alerts"][0]["labels"]["alertname"] == "LLMProviderRateLimit"
                })
                .unwrap()
                .body
                .clone()
        };
        stamp(&rl("firing"), &mut starts, t0);
        let cleared = stamp(&rl("resolved"), &mut starts, later);
        assert_eq!(starts_at(&cleared), "2026-12-07T09:58:00Z");
        assert_eq!(cleared["alerts"][0]["endsAt"], "2026-12-07T10:05:00Z");
        let back = stamp(&rl("firing"), &mut starts, later);
        assert_eq!(starts_at(&back), "2026-12-07T10:03:00Z");
    }

    #[test]
    fn script_covers_kinds_severities_repeats_and_a_refire_after_the_clear() {
        let s = script();
        assert!(s.len() >= 10);
        assert!(s.iter().any(|x| x.endpoint == Endpoint::Generic));
        let resolved = s
            .iter()
            .position(|x| x.body["status"] == "resolved")
            .unwrap();
        let name = &s[resolved].body["alerts"][0]["labels"]["alertname"];
        assert!(s[resolved + 1..]
            .iter()
            .any(|x| &x.body["alerts"][0]["labels"]["alertname"] == name));
    }
}
