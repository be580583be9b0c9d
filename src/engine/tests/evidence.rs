//! Prometheus verifications in the core: the note says which query runs (templated, quoted),
//! each check's value is on the timeline and in the thread while the verification runs, and
//! not after it.

use super::*;
use crate::domain::classify::RootCause;

const PROM: &str = r#"
[prometheus]
url = "http://127.0.0.1:9"

[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart"
rollback = "undo"
run = { type = "command", argv = ["/usr/bin/systemctl", "restart", "{labels.service}"] }
verify = { type = "prometheus", query = 'max(errors_ratio{service="{labels.service}"})', below = 0.01, for_seconds = 60, within_seconds = 300 }
[[playbooks.actions]]
id = "undo"
title = "Undo"
run = { type = "command", argv = ["/bin/true"] }

[policy.P2]
approvers = ["slack:U1"]
"#;

fn prom() -> Config {
    Config::from_toml(PROM, &|_| None).unwrap()
}

fn verifying(service: &str) -> Incident {
    let cfg = prom();
    let mut a = alert("Orders API 503 errors", "warning", AlertStatus::Firing);
    a.labels.insert("service".into(), service.into());
    let mut inc = handle(None, Input::Alert(a), &cfg, ctx(0))
        .unwrap()
        .incident
        .unwrap();
    // As after an approval.
    inc.status = Status::Remediating;
    let d = handle(
        Some(inc.clone()),
        Input::ExecutionFinished {
            incident: inc.id,
            action: "restart".into(),
            key: format!("{}:restart", inc.id),
            success: true,
            summary: "exit 0 in 1 ms".into(),
        },
        &cfg,
        ctx(5),
    )
    .unwrap();
    let note = notes(&d);
    assert_eq!(
        note,
        [format!(
            "✅ `restart` ran: exit 0 in 1 ms. Verifying: Prometheus `max(errors_ratio{{service=\"{}\"}})` < 0.01 for 60 s (within 300 s).",
            incidentd_escape(service)
        )]
    );
    d.incident.unwrap()
}

fn incidentd_escape(s: &str) -> String {
    crate::domain::promql::escape_string(s)
}

fn notes(d: &Decision) -> Vec<String> {
    chats(d)
        .into_iter()
        .filter_map(|b| match b {
            ChatBody::Note { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn check(inc: &Incident, ok: bool, summary: &str, at: i64) -> Decision {
    handle(
        Some(inc.clone()),
        Input::VerificationCheck {
            incident: inc.id,
            action: "restart".into(),
            ok,
            summary: summary.into(),
        },
        &prom(),
        ctx(at),
    )
    .unwrap()
}

#[test]
fn the_note_shows_the_query_with_values_quoted() {
    let inc = verifying("checkout");
    assert_eq!(inc.status, Status::Verifying);
    verifying(r#"x"}) or vector(0) #"#);
}

#[test]
fn each_check_is_recorded_while_the_verification_runs() {
    let inc = verifying("checkout");
    let d = check(&inc, false, "`q` = 0.2 (< 0.01 ✗)", 10);
    assert_eq!(notes(&d), ["🟡 `restart` check: `q` = 0.2 (< 0.01 ✗)"]);
    assert_eq!(
        d.events.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
        [EventKind::VerificationChecked {
            action: "restart".into(),
            ok: false,
            summary: "`q` = 0.2 (< 0.01 ✗)".into(),
        }]
    );
    assert_eq!(
        d.events[0].describe(),
        "Checked `restart` (does not hold): `q` = 0.2 (< 0.01 ✗)"
    );
    let inc = d.incident.unwrap();
    assert_eq!(inc.status, Status::Verifying, "a check decides nothing");
    let d = check(&inc, true, "`q` = 0.001 (< 0.01 ✓, held 0 s of 60 s)", 20);
    assert_eq!(
        notes(&d),
        ["🟢 `restart` check: `q` = 0.001 (< 0.01 ✓, held 0 s of 60 s)"]
    );

    // After the outcome, a late check is not news.
    let done = handle(
        Some(d.incident.unwrap()),
        Input::VerificationFinished {
            incident: inc.id,
            action: "restart".into(),
            ok: false,
            summary: "`q` did not stay < 0.01 for 60 s within 300 s; last: 0.2".into(),
        },
        &prom(),
        ctx(300),
    )
    .unwrap();
    let after = done.incident.unwrap();
    assert_eq!(after.rolling_back.as_deref(), Some("restart"));
    let late = check(&after, true, "`q` = 0", 301);
    assert!(late.events.is_empty());
    assert!(notes(&late).is_empty());
}

#[test]
fn a_prometheus_verification_needs_the_section_and_one_threshold() {
    let errors = |text: &str| -> Vec<String> {
        Config::from_toml(text, &|_| None)
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect()
    };
    let without = PROM.replace("[prometheus]\nurl = \"http://127.0.0.1:9\"\n", "");
    assert_eq!(
        errors(&without),
        ["playbooks[0].actions[0].verify: a prometheus verification needs a [prometheus] section (url)"]
    );
    let both = PROM.replace("below = 0.01,", "below = 0.01, above = 0.5,");
    assert_eq!(
        errors(&both),
        ["playbooks[0].actions[0].verify: give exactly one of below or above"]
    );
    let long = PROM.replace("for_seconds = 60", "for_seconds = 300");
    assert_eq!(
        errors(&long),
        ["playbooks[0].actions[0].verify.for_seconds: 300 s cannot be held within 300 s: make within_seconds longer"]
    );
    let bare = PROM.replace(r#"service="{labels.service}""#, "service={labels.service}");
    let e = errors(&bare);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("playbooks[0].actions[0].verify: {labels.service} outside quotes could change the query") && e[0].contains("(at line 14, column 10)"),
        "{e:?}"
    );
    let bad = PROM.replace("http://127.0.0.1:9", "prometheus:9090") + "\n";
    let e = errors(&bad.replace("[prometheus]\n", "[prometheus]\ntimeout_seconds = 0\n"));
    assert_eq!(
        e,
        [
            "prometheus.url: \"prometheus:9090\" is not an http(s) base URL (no query or fragment)",
            "prometheus.timeout_seconds: 0 is out of range: give 1 to 300"
        ]
    );
    let chart = "[[playbooks]]\nid = \"c\"\ntitle = \"C\"\nchart_query = 'up{job=\"{labels.job}\"}'\nchart_threshold = nan\n";
    assert_eq!(
        errors(chart),
        [
            "playbooks[0].chart_query: a chart needs a [prometheus] section (url)",
            "playbooks[0].chart_threshold: must be a finite number"
        ]
    );
    let tok = PROM.replace(
        "[prometheus]\n",
        "[prometheus]\ntoken_env = \"PROM_TOKEN\"\n",
    );
    assert_eq!(
        errors(&tok),
        ["prometheus.token_env: environment variable PROM_TOKEN is not set"]
    );
    let c = Config::from_toml(&tok, &|k| (k == "PROM_TOKEN").then(|| "s3cret".into())).unwrap();
    let p = c.prometheus.unwrap();
    assert_eq!(p.token.unwrap().expose(), "s3cret");
    assert_eq!(p.timeout, std::time::Duration::from_secs(5));
}

const EVIDENCE: &str = r#"
[prometheus]
url = "http://127.0.0.1:9"

[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
[[playbooks.evidence]]
name = "CPU"
query = 'max(cpu{service="{labels.service}"})'
above = 0.9
root_cause = "resource_limits"
reason = "CPU saturation"
[[playbooks.evidence]]
name = "429 rate"
query = 'sum(rate(upstream{service="{labels.service}",code="429"}[5m]))'
above = 5
root_cause = "external_dependency"
reason = "rate limit"

[policy.P2]
approvers = ["slack:U1"]
"#;

fn found(name: &str, summary: &str, conclusive: bool) -> crate::ports::EvidenceFound {
    crate::ports::EvidenceFound {
        name: name.into(),
        query: format!("q_{name}"),
        summary: summary.into(),
        at: Utc.with_ymd_and_hms(2026, 11, 29, 14, 23, 5).unwrap(),
        conclusive,
    }
}

fn opened(cfg: &Config) -> Decision {
    let mut a = alert("Orders API 503 errors", "warning", AlertStatus::Firing);
    a.labels.insert("service".into(), "api".into());
    handle(None, Input::Alert(a), cfg, ctx(0)).unwrap()
}

#[test]
fn an_incident_asks_for_evidence_only_with_queries_and_a_prometheus() {
    let cfg = Config::from_toml(EVIDENCE, &|_| None).unwrap();
    assert!(opened(&cfg).effects.contains(&Effect::GatherEvidence));
    assert!(!opened(&prom()).effects.contains(&Effect::GatherEvidence));
    let without = EVIDENCE.replace("[prometheus]\nurl = \"http://127.0.0.1:9\"\n", "");
    let e = Config::from_toml(&without, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("playbooks[0].evidence[0]: evidence queries need a [prometheus] section (url)"),
        "{e}"
    );
}

#[test]
fn conclusive_evidence_suggests_the_root_cause_with_its_reason() {
    let cfg = Config::from_toml(EVIDENCE, &|_| None).unwrap();
    let inc = opened(&cfg).incident.unwrap();
    // From the keywords, before any evidence.
    let keywords = inc.root_cause.clone().unwrap();
    assert_eq!(keywords.confirmed_by, None);
    let d = handle(
        Some(inc.clone()),
        Input::Evidence {
            incident: inc.id,
            found: vec![found("CPU", "0.4", false), found("429 rate", "37", true)],
        },
        &cfg,
        ctx(10),
    )
    .unwrap();
    let rc = d.incident.as_ref().unwrap().root_cause.clone().unwrap();
    assert_eq!(rc.category, RootCause::ExternalDependency);
    assert_eq!(
        rc.text.as_deref(),
        Some("429 rate 37 at 14:23 UTC ⇒ external dependency: rate limit")
    );
    assert_eq!(
        notes(&d),
        ["🔎 Evidence:\n• CPU = 0.4 (> 0.9 ✗)\n• 429 rate = 37 (> 5 ✓)\nSuggested root cause: 429 rate 37 at 14:23 UTC ⇒ external dependency: rate limit"]
    );
    let described: Vec<String> = d.events.iter().map(|e| e.describe()).collect();
    assert_eq!(
        described,
        [
            "Evidence: CPU = 0.4 (`q_CPU`)",
            "Evidence: 429 rate = 37, conclusive (`q_429 rate`)"
        ]
    );

    // Nothing conclusive: the keywords' suggestion stays.
    let d = handle(
        Some(inc.clone()),
        Input::Evidence {
            incident: inc.id,
            found: vec![found("429 rate", "no data", false)],
        },
        &cfg,
        ctx(10),
    )
    .unwrap();
    assert_eq!(d.incident.unwrap().root_cause, Some(keywords));

    // A person's confirmed root cause is never replaced.
    let mut confirmed = inc.clone();
    confirmed.root_cause = Some(RootCauseInfo {
        category: RootCause::Configuration,
        text: Some("bad flag".into()),
        confirmed_by: Some(Actor::system()),
    });
    let d = handle(
        Some(confirmed.clone()),
        Input::Evidence {
            incident: inc.id,
            found: vec![found("429 rate", "37", true)],
        },
        &cfg,
        ctx(10),
    )
    .unwrap();
    assert_eq!(
        d.incident.as_ref().unwrap().root_cause,
        confirmed.root_cause
    );
    assert_eq!(notes(&d), ["🔎 Evidence:\n• 429 rate = 37 (> 5 ✓)"]);
}
