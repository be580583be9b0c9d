//! The post-incident report: facts and durations, root cause (suggested, then confirmed),
//! actions taken with who approved them and how they ended, follow-ups, and the timeline.
//! Rendered as Markdown here; chat surfaces post it, the API and CLI export it.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::classify::{Classifier, RootCause};
use super::incident::{ActionStatus, EventKind, Incident, TimelineEvent};

/// Suggests a root cause from the alert's words and the incident kind: rate limits and
/// unavailable dependencies → external dependency; OOM/CPU/disk → resource limits;
/// config/env/permission → configuration; model/format/safety → model defect.
pub fn suggest_root_cause(inc: &Incident, classifier: &Classifier) -> RootCause {
    let mut text = inc.title.to_lowercase();
    for v in inc.labels.values().chain(inc.annotations.values()) {
        text.push(' ');
        text.push_str(&v.to_lowercase());
    }
    if let Some(d) = &inc.description {
        text.push(' ');
        text.push_str(&d.to_lowercase());
    }
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if has(&[
        "rate limit",
        "ratelimit",
        "429",
        "quota exceeded",
        "upstream",
        "dependency",
        "unavailable",
        "503",
        "502",
        "timeout",
    ]) {
        RootCause::ExternalDependency
    } else if has(&[
        "oom",
        "out of memory",
        "memory",
        "cpu",
        "disk full",
        "throttl",
        "exhaust",
    ]) {
        RootCause::ResourceLimits
    } else if has(&[
        "config",
        "env var",
        "environment variable",
        "permission",
        "forbidden",
        "denied",
        "secret",
    ]) {
        RootCause::Configuration
    } else if has(&[
        "model",
        "format",
        "schema",
        "safety",
        "hallucinat",
        "inference",
    ]) {
        RootCause::ModelDefect
    } else {
        classifier
            .kind(&inc.kind)
            .map_or(RootCause::Unknown, |k| k.root_cause)
    }
}

fn dur(from: DateTime<Utc>, to: Option<DateTime<Utc>>) -> String {
    match to {
        Some(t) => {
            let s = (t - from).num_seconds().max(0);
            if s < 60 {
                format!("{s} s")
            } else if s < 3600 {
                format!("{} min {} s", s / 60, s % 60)
            } else {
                format!("{} h {} min", s / 3600, (s % 3600) / 60)
            }
        }
        None => "—".into(),
    }
}

fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map_or("—".into(), |t| {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    })
}

/// The report as Markdown. `timeline` may be empty (then that section says so).
pub fn render_markdown(
    inc: &Incident,
    timeline: &[TimelineEvent],
    classifier: &Classifier,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Post-incident report: {} — {}\n", inc.id, inc.title);
    let _ = writeln!(s, "## Facts\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| Severity | {} |", inc.severity);
    let _ = writeln!(s, "| Kind | {} |", classifier.kind_name(&inc.kind));
    let _ = writeln!(s, "| Status | {} |", inc.status.label());
    let _ = writeln!(s, "| Started (per monitoring) | {} |", ts(inc.started_at));
    let _ = writeln!(
        s,
        "| Detected (incident opened) | {} |",
        ts(Some(inc.opened_at))
    );
    let _ = writeln!(
        s,
        "| Acknowledged | {}{} |",
        ts(inc.acknowledged_at),
        inc.acknowledged_by
            .as_ref()
            .map(|a| format!(" by {}", a.display()))
            .unwrap_or_default()
    );
    let _ = writeln!(s, "| Mitigated | {} |", ts(inc.mitigated_at));
    let _ = writeln!(
        s,
        "| Resolved | {}{} |",
        ts(inc.resolved_at),
        inc.resolved_by
            .as_ref()
            .map(|a| format!(" by {}", a.display()))
            .unwrap_or_default()
    );
    if let Some(start) = inc.started_at {
        let _ = writeln!(
            s,
            "| Time to detect | {} |",
            dur(start, Some(inc.opened_at))
        );
    }
    let _ = writeln!(
        s,
        "| Time to acknowledge | {} |",
        dur(inc.opened_at, inc.acknowledged_at)
    );
    let _ = writeln!(
        s,
        "| Time to mitigate | {} |",
        dur(inc.opened_at, inc.mitigated_at)
    );
    let _ = writeln!(
        s,
        "| Time to resolve | {} |",
        dur(inc.opened_at, inc.resolved_at)
    );
    let _ = writeln!(s, "| Alerts received | {} |", inc.alert_count);
    let scope: Vec<String> = [
        "service",
        "namespace",
        "deployment",
        "instance",
        "job",
        "cluster",
    ]
    .iter()
    .filter_map(|k| inc.labels.get(*k).map(|v| format!("{k}={v}")))
    .collect();
    if !scope.is_empty() {
        let _ = writeln!(s, "| Scope | {} |", scope.join(", "));
    }
    if let Some(r) = &inc.recurrence {
        let _ = writeln!(
            s,
            "| Recurrence | {} earlier in {} days (last {}) |",
            r.previous, r.window_days, r.last
        );
    }
    let _ = writeln!(s, "\n## Description\n");
    let _ = writeln!(
        s,
        "{}",
        inc.description
            .as_deref()
            .unwrap_or("No description was given by the alert.")
    );
    let _ = writeln!(s, "\n## Root cause\n");
    match &inc.root_cause {
        Some(rc) => {
            let _ = write!(s, "**{}**", rc.category.label());
            if let Some(t) = &rc.text {
                let _ = write!(s, " — {t}");
            }
            match &rc.confirmed_by {
                Some(a) => {
                    let _ = writeln!(s, " (confirmed by {})", a.display());
                }
                None => {
                    let _ = writeln!(
                        s,
                        " (suggested; confirm with `/incident rootcause {} <category> [text]`)",
                        inc.id
                    );
                }
            }
        }
        None => {
            let _ = writeln!(s, "Not determined.");
        }
    }
    let _ = writeln!(s, "\n## Actions taken\n");
    let taken: Vec<_> = inc
        .actions
        .iter()
        .filter(|a| a.status != ActionStatus::Proposed)
        .collect();
    if taken.is_empty() {
        let _ = writeln!(s, "None.");
    }
    for a in taken {
        let approvers: Vec<String> = a.approvals.iter().map(|x| x.display()).collect();
        let who = if a.approvals.is_empty() {
            a.decided_by
                .as_ref()
                .map_or("nobody".into(), |x| x.display())
        } else {
            approvers.join(", ")
        };
        let outcome = timeline
            .iter()
            .rev()
            .find_map(|e| match &e.kind {
                EventKind::ExecutionFinished {
                    action, summary, ..
                } if *action == a.id => Some(summary.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "- `{}` {} — {:?}, decided by {who}{}",
            a.id,
            a.title,
            a.status,
            if outcome.is_empty() {
                String::new()
            } else {
                format!(": {outcome}")
            }
        );
    }
    let _ = writeln!(s, "\n## Follow-ups\n");
    if inc.followups.is_empty() {
        let _ = writeln!(
            s,
            "None yet (`/incident followup {} <item> [@owner]`).",
            inc.id
        );
    }
    for f in &inc.followups {
        let _ = writeln!(
            s,
            "- [ ] {}{}",
            f.text,
            f.owner
                .as_deref()
                .map(|o| format!(" — {o}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(s, "\n## Timeline\n");
    if timeline.is_empty() {
        let _ = writeln!(s, "Not available.");
    }
    for e in timeline {
        let _ = writeln!(s, "- {} — {}", e.at.format("%H:%M:%S"), e.describe());
    }
    s
}

/// Splits a report into chat-sized parts (≤ `max` characters each), at section boundaries where
/// possible, then at lines: chat platforms cap a message (Discord 2000, Slack 4000 characters),
/// and a report cut off at the cap would lose its follow-ups and timeline.
pub fn split_for_chat(report: &str, max: usize) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    let push_line = |cur: &mut String, parts: &mut Vec<String>, line: &str| {
        let line: String = if line.chars().count() > max {
            super::card::truncate_chars(line, max)
        } else {
            line.to_string()
        };
        if cur.chars().count() + line.chars().count() + 1 > max && !cur.is_empty() {
            parts.push(std::mem::take(cur).trim_end().to_string());
        }
        cur.push_str(&line);
        cur.push('\n');
    };
    for (i, section) in report.split("\n## ").enumerate() {
        let section = if i == 0 {
            section.to_string()
        } else {
            format!("## {section}")
        };
        // Start a section on a new part when it would not fit in what is left.
        if !cur.is_empty() && cur.chars().count() + section.chars().count() + 1 > max {
            parts.push(std::mem::take(&mut cur).trim_end().to_string());
        }
        for line in section.lines() {
            push_line(&mut cur, &mut parts, line);
        }
        cur.push('\n');
    }
    if !cur.trim().is_empty() {
        parts.push(cur.trim_end().to_string());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Platform;
    use crate::domain::classify::default_kinds;
    use crate::domain::incident::tests_support::incident;
    use crate::domain::incident::{ActionState, FollowUp, RootCauseInfo};
    use crate::domain::policy::Actor;
    use crate::domain::severity::Severity;

    fn classifier() -> Classifier {
        Classifier {
            rules: vec![],
            kinds: default_kinds(),
            default_severity: Severity::P2,
            playbook_for_kind: Default::default(),
        }
    }

    #[test]
    fn root_cause_suggestions_follow_the_alert_words() {
        let c = classifier();
        let mut inc = incident();
        for (title, cause) in [
            (
                "OpenAI API rate limit exceeded",
                RootCause::ExternalDependency,
            ),
            ("Pod OOMKilled", RootCause::ResourceLimits),
            ("Missing env var OPENAI_KEY", RootCause::Configuration),
            (
                "Model output failed schema validation",
                RootCause::ModelDefect,
            ),
            ("Something", RootCause::Unknown),
        ] {
            inc.title = title.into();
            assert_eq!(suggest_root_cause(&inc, &c), cause, "{title}");
        }
        inc.title = "Something".into();
        inc.kind = "orchestration_failure".into();
        assert_eq!(
            suggest_root_cause(&inc, &c),
            RootCause::ResourceLimits,
            "falls back to the kind"
        );
    }

    #[test]
    fn long_reports_are_split_at_sections_within_the_limit() {
        let mut report = String::from("# Title\n\n## Facts\n\n| a | b |\n");
        report.push_str("\n## Timeline\n\n");
        for i in 0..300 {
            report.push_str(&format!("- 12:00:{i:02} — something happened number {i}\n"));
        }
        report.push_str("\n## Follow-ups\n\n- [ ] fix it\n");
        let parts = split_for_chat(&report, 1900);
        assert!(parts.len() > 2);
        assert!(parts.iter().all(|p| p.chars().count() <= 1900));
        let joined = parts.join("\n");
        assert!(
            joined.contains("number 299") && joined.contains("- [ ] fix it"),
            "nothing lost"
        );
        assert!(parts[0].starts_with("# Title"));
        // A short report stays one message.
        assert_eq!(split_for_chat("# T\n\n## A\nx\n", 1900).len(), 1);
        // A single over-long line is cut, not dropped.
        let parts = split_for_chat(&"y".repeat(5000), 100);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].chars().count(), 100);
    }

    #[test]
    fn report_has_every_section() {
        let c = classifier();
        let mut inc = incident();
        let alice = Actor::new(Platform::Slack, "U1");
        let t = inc.opened_at;
        inc.title = "Payments API 503".into();
        inc.labels.insert("service".into(), "payments".into());
        inc.acknowledged_at = Some(t + chrono::Duration::seconds(42));
        inc.acknowledged_by = Some(alice.clone());
        inc.resolved_at = Some(t + chrono::Duration::seconds(400));
        inc.actions.push(ActionState {
            id: "restart".into(),
            title: "Restart".into(),
            auto: false,
            summary: "x".into(),
            status: ActionStatus::Succeeded,
            approvals: vec![alice.clone()],
            decided_by: Some(alice.clone()),
            decided_at: None,
        });
        inc.root_cause = Some(RootCauseInfo {
            category: RootCause::Configuration,
            text: Some("bad env".into()),
            confirmed_by: Some(alice.clone()),
        });
        inc.followups.push(FollowUp {
            text: "add a config check".into(),
            owner: Some("@bob".into()),
            added_by: alice.clone(),
            at: t,
        });
        let timeline = vec![TimelineEvent {
            at: t,
            actor: Actor::system(),
            kind: EventKind::ExecutionFinished {
                action: "restart".into(),
                execution: "INC-7:restart".into(),
                success: true,
                summary: "exit 0 in 1.2 s".into(),
            },
        }];
        let md = render_markdown(&inc, &timeline, &c);
        for want in [
            "# Post-incident report: INC-7 — Payments API 503",
            "| Time to acknowledge | 42 s |",
            "| Time to resolve | 6 min 40 s |",
            "| Scope | service=payments |",
            "**Configuration** — bad env (confirmed by slack:U1)",
            "- `restart` Restart — Succeeded, decided by slack:U1: exit 0 in 1.2 s",
            "- [ ] add a config check — @bob",
            "`restart` succeeded: exit 0 in 1.2 s",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
        inc.root_cause.as_mut().unwrap().confirmed_by = None;
        assert!(render_markdown(&inc, &[], &c).contains("(suggested; confirm with"));
    }
}
