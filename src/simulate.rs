//! `incidentd simulate`: what incidentd would do with an alert, without touching the store or
//! any chat: the incident, its severity and targets, kind, recommended actions and approvers,
//! and which of the playbook's conditional actions (`when`) apply, with the values that decided.

use std::fmt::Write;

use chrono::Utc;

use crate::config::Config;
use crate::domain::alert::{Alert, Platform};
use crate::domain::condition::Facts;
use crate::domain::incident::IncidentId;
use crate::engine::{card, handle, Ctx, Effect, Input};
use crate::ingest::{self, ChatMessage};

/// The input formats `simulate` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Guess from the content.
    Auto,
    Alertmanager,
    Grafana,
    Generic,
    /// The text of a message posted in an alert channel.
    Message,
}

/// Decodes `bytes` in `format` (guessing when `Auto`).
pub fn decode(bytes: &[u8], format: Format) -> Result<Vec<Alert>, String> {
    let format = match format {
        Format::Auto => guess(bytes),
        f => f,
    };
    let r = match format {
        Format::Alertmanager => ingest::decode_alertmanager(bytes),
        Format::Grafana => ingest::decode_grafana(bytes),
        Format::Generic => ingest::decode_generic(bytes),
        Format::Message | Format::Auto => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let msg = ChatMessage {
                platform: Platform::Console,
                channel: "simulate".into(),
                message_id: "1".into(),
                text,
                ..Default::default()
            };
            return ingest::parse_chat_message(&msg)
                .map(|a| vec![a])
                .ok_or_else(|| "the message does not look like an alert".to_string());
        }
    };
    r.map_err(|e| e.to_string())
}

fn guess(bytes: &[u8]) -> Format {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Format::Message;
    };
    let has = |k: &str| v.get(k).is_some();
    if has("orgId") || has("evalMatches") || has("ruleName") || has("ruleId") {
        Format::Grafana
    } else if has("alerts") && (has("groupKey") || has("version") || has("receiver")) {
        Format::Alertmanager
    } else {
        Format::Generic
    }
}

/// A human-readable account of what would happen, one block per alert.
pub fn render(alerts: &[Alert], cfg: &Config) -> String {
    let mut out = String::new();
    for (i, alert) in alerts.iter().enumerate() {
        let ctx = Ctx {
            history: &[],
            recent: None,
            view: &crate::engine::NoView,
            now: Utc::now(),
            next_id: IncidentId(i as u64 + 1),
        };
        let _ = writeln!(out, "── alert {} of {} ──", i + 1, alerts.len());
        let _ = writeln!(out, "fingerprint: {}", alert.fingerprint);
        let d = match handle(None, Input::Alert(alert.clone()), cfg, ctx) {
            Ok(d) => d,
            Err(e) => {
                let _ = writeln!(out, "error: {e}");
                continue;
            }
        };
        let Some(inc) = d.incident else {
            let _ = writeln!(
                out,
                "no incident: {}",
                d.reply.unwrap_or_else(|| "nothing to do".into())
            );
            continue;
        };
        let c = card(&inc, cfg);
        let t = c.targets;
        let policy = cfg.policy(inc.severity);
        let _ = writeln!(out, "incident:    {} (new) — {}", inc.id, inc.title);
        let _ = writeln!(
            out,
            "severity:    {} — detect < {}, repair < {}, {}",
            inc.severity,
            crate::domain::severity::human_seconds(t.detect_seconds),
            crate::domain::severity::human_seconds(t.repair_seconds),
            t.approval.label()
        );
        let _ = writeln!(out, "kind:        {} ({})", c.kind_name, inc.kind);
        if let Some(r) = &inc.rule {
            let _ = writeln!(out, "rule:        {r}");
        }
        let _ = writeln!(
            out,
            "playbook:    {}",
            inc.playbook.as_deref().unwrap_or("none")
        );
        let approvers = if policy.approvers.is_empty() {
            "nobody is configured".to_string()
        } else {
            policy.approvers.join(", ")
        };
        let _ = writeln!(
            out,
            "approval:    {} of: {}{}; requests expire after {}",
            policy.min_approvals,
            approvers,
            if policy.allow_proposer {
                ""
            } else {
                " (two-person rule: not whoever acknowledged)"
            },
            crate::domain::severity::human_seconds(policy.expiry_seconds)
        );
        let facts = Facts {
            labels: &inc.labels,
            annotations: &inc.annotations,
        };
        if inc.actions.is_empty() {
            let _ = writeln!(out, "actions:     none recommended");
        }
        let queued: Vec<&str> = d
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Execute { action, .. } => Some(action.as_str()),
                _ => None,
            })
            .collect();
        for a in &inc.actions {
            let how = if queued.contains(&a.id.as_str()) {
                "runs automatically"
            } else {
                "waits for approval"
            };
            let _ = writeln!(out, "action:      {} — {} [{how}]", a.id, a.title);
            let Some(spec) = crate::engine::action_spec(&inc, &a.id, cfg) else {
                continue;
            };
            if let Some(c) = &spec.when {
                let (_, values) = c.explain(facts);
                let _ = writeln!(out, "             when: {c} is true ({values})");
            }
            // The exact command or request after templating, or why it would be refused.
            match crate::remediate::plan(spec, &inc, "kubectl") {
                Ok(p) => {
                    let _ = writeln!(out, "             runs: {}", p.preview());
                }
                Err(e) => {
                    let _ = writeln!(out, "             refused: {e}");
                }
            }
            if let Some(v) = &spec.verify {
                let _ = writeln!(
                    out,
                    "             verify: {}",
                    crate::remediate::preview::verification(spec, v, &inc)
                );
                if let crate::domain::playbook::VerifySpec::Prometheus {
                    interval_seconds, ..
                } = v
                {
                    let at = cfg
                        .prometheus
                        .as_ref()
                        .map_or("<no [prometheus]>".to_string(), |p| p.url.clone());
                    let _ = writeln!(
                        out,
                        "             asks: POST {at}/api/v1/query every {interval_seconds} s"
                    );
                }
            }
            if let Some(rb) = &spec.rollback {
                let _ = writeln!(out, "             rollback if not verified: {rb}");
            }
        }
        // The branches not taken, and why: the playbook's actions whose `when` is false.
        let skipped = inc
            .playbook
            .as_deref()
            .and_then(|p| cfg.playbook(p))
            .map(|pb| pb.actions.as_slice())
            .unwrap_or_default();
        for spec in skipped {
            let Some(c) = &spec.when else { continue };
            let (holds, values) = c.explain(facts);
            if !holds && inc.action(&spec.id).is_none() {
                let _ = writeln!(
                    out,
                    "action:      {} — skipped: {c} is false ({values})",
                    spec.id
                );
            }
        }
        // The card's chart and the evidence queries: what the shell will ask Prometheus.
        if let Some(p) = &cfg.prometheus {
            let playbook = inc.playbook.as_deref().and_then(|p| cfg.playbook(p));
            for e in playbook.map(|p| p.evidence.as_slice()).unwrap_or_default() {
                let q = crate::remediate::prometheus::render(&e.query, &inc)
                    .map(|q| format!("`{q}`"))
                    .unwrap_or_else(|err| format!("not run: {err}"));
                let cond = match (e.threshold(), e.root_cause) {
                    (Some(t), Some(rc)) => format!(
                        " {t} ⇒ {}{}",
                        rc.label().to_lowercase(),
                        e.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                    (Some(t), None) => format!(" {t}"),
                    _ => String::new(),
                };
                let _ = writeln!(out, "evidence:    {}: {q}{cond}", e.name);
            }
            let named =
                playbook.and_then(|pb| Some((pb.chart_query.as_ref()?, pb.chart_threshold)));
            if let Some((q, t)) = crate::remediate::prometheus::chart_query(named, &inc) {
                let _ = writeln!(
                    out,
                    "chart:       `{q}` over the last 30 min{} (POST {}/api/v1/query_range)",
                    t.map(|t| format!(", threshold {t}")).unwrap_or_default(),
                    p.url
                );
            }
        }
        for l in &inc.links {
            let _ = writeln!(out, "link:        {}: {}", l.title, l.url);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::{AlertSource, AlertStatus};

    const CFG: &str = r#"
[[rules]]
name = "ml"
match = { team = "ml" }
playbook = "model-output"

[[playbooks]]
id = "model-output"
title = "Model output failures"
[[playbooks.actions]]
id = "human-review"
title = "Route to human review"
when = "annotations.confidence < 0.5 or not exists(annotations.confidence)"
run = { type = "http", url = "http://127.0.0.1:1/review" }
[[playbooks.actions]]
id = "fallback"
title = "Switch to the fallback model"
when = "annotations.confidence >= 0.5"
auto = true
run = { type = "http", url = "http://127.0.0.1:1/model" }
"#;

    fn alert(confidence: &str) -> Alert {
        Alert {
            source: AlertSource::Generic,
            fingerprint: "fp".into(),
            status: AlertStatus::Firing,
            title: "Model output invalid".into(),
            description: None,
            labels: [("team", "ml"), ("severity", "warning")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("confidence".to_string(), confidence.to_string())]
                .into_iter()
                .collect(),
            starts_at: None,
            ends_at: None,
            links: vec![],
            origin: None,
            group_labels: Default::default(),
        }
    }

    #[test]
    fn shows_the_prometheus_queries_it_would_run() {
        let cfg = Config::from_toml(
            r#"
[prometheus]
url = "http://prom.internal:9090"
[[rules]]
name = "ml"
match = { team = "ml" }
playbook = "model-output"
[[playbooks]]
id = "model-output"
title = "Model output failures"
[[playbooks.actions]]
id = "fallback"
title = "Switch to the fallback model"
run = { type = "http", url = "http://127.0.0.1:1/model" }
verify = { type = "prometheus", query = 'sum(rate(invalid_outputs_total{team="{labels.team}"}[5m]))', below = 0.5, for_seconds = 60, within_seconds = 300, interval_seconds = 10 }
"#,
            &|_| None,
        )
        .unwrap();
        let mut a = alert("0.3");
        a.labels.insert("team".into(), "ml".into());
        let out = render(&[a], &cfg);
        assert!(!out.contains("chart:"), "no chart without a query: {out}");
        assert!(
            out.contains("             verify: Prometheus `sum(rate(invalid_outputs_total{team=\"ml\"}[5m]))` < 0.5 for 60 s (within 300 s)\n             asks: POST http://prom.internal:9090/api/v1/query every 10 s\n"),
            "{out}"
        );
    }

    #[test]
    fn shows_the_evidence_queries() {
        let cfg = Config::from_toml(
            r#"
[prometheus]
url = "http://prom:9090"
[[rules]]
name = "ml"
match = { team = "ml" }
playbook = "model-output"
[[playbooks]]
id = "model-output"
title = "Model output failures"
[[playbooks.evidence]]
name = "429 rate"
query = 'sum(rate(upstream{team="{labels.team}",code="429"}[5m]))'
above = 5
root_cause = "external_dependency"
reason = "rate limit"
"#,
            &|_| None,
        )
        .unwrap();
        let out = render(&[alert("0.3")], &cfg);
        assert!(
            out.contains("evidence:    429 rate: `sum(rate(upstream{team=\"ml\",code=\"429\"}[5m]))` > 5 ⇒ external dependency: rate limit\n"),
            "{out}"
        );
    }

    #[test]
    fn shows_the_chart_query_of_the_alert() {
        let cfg =
            Config::from_toml("[prometheus]\nurl = \"http://prom:9090\"\n", &|_| None).unwrap();
        let mut a = alert("0.3");
        a.links.push(crate::domain::alert::Link {
            title: "Source".into(),
            url: "http://p/graph?g0.expr=errors_ratio+%3E+0.05".into(),
        });
        let out = render(&[a.clone()], &cfg);
        assert!(
            out.contains("chart:       `errors_ratio` over the last 30 min, threshold 0.05 (POST http://prom:9090/api/v1/query_range)\n"),
            "{out}"
        );
        // Without [prometheus], nothing would be asked.
        let out = render(&[a], &Config::from_toml("", &|_| None).unwrap());
        assert!(!out.contains("chart:"), "{out}");
    }

    #[test]
    fn shows_which_branch_an_alert_takes_and_why() {
        let cfg = Config::from_toml(CFG, &|_| None).unwrap();
        let out = render(&[alert("0.82")], &cfg);
        assert!(
            out.contains("action:      fallback — Switch to the fallback model [runs automatically]\n             when: annotations.confidence >= 0.5 is true (annotations.confidence = \"0.82\")"),
            "{out}"
        );
        assert!(
            out.contains("action:      human-review — skipped: annotations.confidence < 0.5 or not exists(annotations.confidence) is false (annotations.confidence = \"0.82\")"),
            "{out}"
        );
        let out = render(&[alert("0.3")], &cfg);
        assert!(
            out.contains("action:      human-review — Route to human review [waits for approval]"),
            "{out}"
        );
        assert!(
            out.contains("action:      fallback — skipped: annotations.confidence >= 0.5 is false (annotations.confidence = \"0.3\")"),
            "{out}"
        );
    }
}
