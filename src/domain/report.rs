//! The post-incident report: facts and durations, root cause (suggested, then confirmed),
//! actions taken with who approved them and how they ended, follow-ups, and the timeline.
//! [`build_report`] turns an incident into a [`Report`] (plain data); the chat surfaces render
//! that natively (Block Kit, embeds, console HTML) and [`Report::to_markdown`] is the export
//! (`/incident report`, the API, the CLI).

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::classify::{starts_word, Classifier, RootCause};
use super::incident::{
    ActionStatus, EventKind, Incident, IncidentId, Recurrence, Status, TimelineEvent,
};
use super::severity::Severity;

/// Suggests a root cause from the alert's words and the incident kind: rate limits and
/// unavailable dependencies → external dependency; OOM/CPU/disk → resource limits;
/// config/env/permission → configuration; model/format/safety → model defect.
/// Computed for the alert that opens an incident, with the kind it was triaged as.
/// The words are read as keyword matching reads them ([`match_text`]): ids, hashes, URLs and
/// numbers such as an Alertmanager `fingerprint` or a `generatorURL` take no part, and a word
/// must start where a listed word starts (`oom` is not in `room`).
pub fn suggest_root_cause_for_alert(
    alert: &crate::domain::alert::Alert,
    kind: &str,
    classifier: &Classifier,
) -> RootCause {
    let text = crate::domain::classify::alert_match_text(alert);
    suggest_from_words(&text, kind, classifier)
}

#[cfg(test)]
fn suggest_from<'a>(
    title: &str,
    fields: impl Iterator<Item = (&'a String, &'a String)>,
    description: Option<&str>,
    kind: &str,
    classifier: &Classifier,
) -> RootCause {
    let text = crate::domain::classify::match_text(title, description, fields);
    suggest_from_words(&text, kind, classifier)
}

/// The words that suggest each cause, in the order they are tried: the first cause with a word
/// in the text wins.
const CAUSE_WORDS: [(RootCause, &[&str]); 4] = [
    (
        RootCause::ExternalDependency,
        &[
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
            "timed out",
            "overload",
        ],
    ),
    (
        RootCause::ResourceLimits,
        &[
            "oom",
            "out of memory",
            "memory",
            "cpu",
            "disk full",
            "throttl",
            "exhaust",
        ],
    ),
    (
        RootCause::Configuration,
        &[
            "config",
            "misconfig",
            "env var",
            "environment variable",
            "permission",
            "forbidden",
            "denied",
            "secret",
        ],
    ),
    (
        RootCause::ModelDefect,
        &[
            "model",
            "format",
            "schema",
            "safety",
            "hallucinat",
            "inference",
        ],
    ),
];

/// Every cause word in one automaton, each pattern knowing its cause's place in
/// [`CAUSE_WORDS`]. One pass over the text instead of one substring search per word: the
/// per-word searches were the largest cost of triage at intake (measured with perf, batched
/// storm: `TwoWaySearcher::next` 8 % of all CPU).
static CAUSES: std::sync::LazyLock<(aho_corasick::AhoCorasick, Vec<usize>)> =
    std::sync::LazyLock::new(|| {
        let mut patterns = Vec::new();
        let mut rank = Vec::new();
        for (i, (_, words)) in CAUSE_WORDS.iter().enumerate() {
            for w in words.iter() {
                patterns.push(*w);
                rank.push(i);
            }
        }
        let ac = aho_corasick::AhoCorasick::new(&patterns).expect("the cause words build");
        (ac, rank)
    });

/// The suggestion from an alert's [`match_text`].
pub fn suggest_from_words(text: &str, kind: &str, classifier: &Classifier) -> RootCause {
    let (ac, rank) = &*CAUSES;
    let best = ac
        .find_overlapping_iter(text)
        .filter(|m| starts_word(text, m.start()))
        .map(|m| rank[m.pattern().as_usize()])
        .min();
    match best {
        Some(i) => CAUSE_WORDS[i].0,
        None => classifier
            .kind(kind)
            .map_or(RootCause::Unknown, |k| k.root_cause),
    }
}

/// A duration between two instants in whole seconds (never negative), `None` while the later
/// one has not happened.
fn seconds_between(from: DateTime<Utc>, to: Option<DateTime<Utc>>) -> Option<i64> {
    to.map(|t| (t - from).num_seconds().max(0))
}

/// A duration as the report shows it: `42 s`, `6 min 40 s`, `2 h 5 min`, `—` when unknown.
pub fn human_duration(seconds: Option<i64>) -> String {
    match seconds {
        Some(s) if s < 60 => format!("{s} s"),
        Some(s) if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        Some(s) => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        None => "—".into(),
    }
}

/// An instant as the report shows it (UTC, to the second), `—` when unknown.
pub fn timestamp(t: Option<DateTime<Utc>>) -> String {
    t.map_or("—".into(), |t| {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    })
}

/// The labels that say what was affected, in the order the report lists them.
const SCOPE_LABELS: [&str; 6] = [
    "service",
    "namespace",
    "deployment",
    "instance",
    "job",
    "cluster",
];

/// Time to detect, acknowledge, mitigate and resolve, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    /// From the start monitoring reports to the incident opening (unknown without a start).
    #[serde(default)]
    pub detect: Option<i64>,
    #[serde(default)]
    pub acknowledge: Option<i64>,
    #[serde(default)]
    pub mitigate: Option<i64>,
    #[serde(default)]
    pub resolve: Option<i64>,
}

/// One affected label (`service=payments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeLabel {
    pub key: String,
    pub value: String,
}

/// The root cause as the report states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRootCause {
    pub category: RootCause,
    /// The category's display name (`External dependency`).
    pub label: String,
    #[serde(default)]
    pub text: Option<String>,
    /// Who confirmed (or overrode) it; `None` while it is only a suggestion.
    #[serde(default)]
    pub confirmed_by: Option<String>,
}

/// An action that was decided on (approved, rejected, run), with who decided and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAction {
    pub id: String,
    pub title: String,
    pub status: ActionStatus,
    /// Everyone who approved it, in order.
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// Who took the final decision (the last approver, or whoever rejected it).
    #[serde(default)]
    pub decided_by: Option<String>,
    /// The last run's one-line outcome (`exit 0 in 1.2 s`).
    #[serde(default)]
    pub outcome: Option<String>,
    /// How its verification ended, with the evidence seen at the time (`verified: `…` = 0.01,
    /// < 0.05 for 60 s (5 checks)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
}

impl ReportAction {
    /// Who decided: the approvers, else whoever decided, else `nobody`.
    pub fn deciders(&self) -> String {
        if self.approved_by.is_empty() {
            self.decided_by.clone().unwrap_or_else(|| "nobody".into())
        } else {
            self.approved_by.join(", ")
        }
    }

    /// The status as a word (`Succeeded`).
    pub fn status_label(&self) -> String {
        format!("{:?}", self.status)
    }

    /// `: exit 0 in 1.2 s`, or nothing when it never ran; then `; verified: …` when it was
    /// verified (or not).
    pub fn outcome_suffix(&self) -> String {
        let mut s = self
            .outcome
            .as_deref()
            .map(|o| format!(": {o}"))
            .unwrap_or_default();
        if let Some(v) = &self.verification {
            s.push_str("; ");
            s.push_str(v);
        }
        s
    }

    /// The action as one chat list item; `bold` is the platform's bold marker (`*`, `**`).
    pub fn chat_line(&self, bold: &str) -> String {
        format!(
            "• `{}` {} — {bold}{}{bold}, approved/decided by {}{}",
            self.id,
            self.title,
            self.status_label(),
            self.deciders(),
            self.outcome_suffix()
        )
    }
}

/// Most buttons a report carries (two Discord rows).
pub const REPORT_BUTTONS: usize = 10;

/// An improvement item and where it is in its life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportFollowUp {
    pub text: String,
    #[serde(default)]
    pub owner: Option<String>,
    /// Its number on the incident (from 1; 0 in reports stored before numbers existed).
    #[serde(default)]
    pub n: usize,
    #[serde(default)]
    pub kind: super::followup::FollowUpKind,
    #[serde(default)]
    pub state: super::followup::FollowUpState,
    /// Its next deadline (done by, or verified by), while it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// The dropped one's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where it is tracked (the export's returned link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl ReportFollowUp {
    /// ` — @owner`, or nothing without an owner.
    pub fn owner_suffix(&self) -> String {
        self.owner
            .as_deref()
            .map(|o| format!(" — {o}"))
            .unwrap_or_default()
    }

    /// `#2 ` (nothing for reports stored before numbers existed).
    pub fn number(&self) -> String {
        if self.n == 0 {
            String::new()
        } else {
            format!("#{} ", self.n)
        }
    }

    /// ` (process · done · verify by 2026-12-08 12:00 UTC)`.
    pub fn state_suffix(&self) -> String {
        let mut s = format!(" ({} · {}", self.kind.label(), self.state.label());
        if let Some(d) = self.deadline {
            let what = if self.state == super::followup::FollowUpState::Open {
                "due"
            } else {
                "verify by"
            };
            s.push_str(&format!(" · {what} {}", d.format("%Y-%m-%d %H:%M UTC")));
        }
        if let Some(r) = &self.reason {
            s.push_str(&format!(": {r}"));
        }
        if let Some(l) = &self.link {
            s.push_str(&format!(" · {l}"));
        }
        s.push(')');
        s
    }

    /// The follow-up as one chat list item, its box showing its state.
    pub fn chat_line(&self) -> String {
        format!(
            "• {} {}{}{}{}",
            self.state.mark(),
            self.number(),
            self.text,
            self.owner_suffix(),
            self.state_suffix()
        )
    }
}

/// One timeline line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEntry {
    pub at: DateTime<Utc>,
    /// Who acted, as displayed (`slack:U1`, `incidentd`).
    pub actor: String,
    /// What happened, one line (the timeline event described).
    pub text: String,
}

/// The post-incident report as data: built once from the incident and its timeline, then
/// rendered by each surface within its own limits (Block Kit, embeds, console HTML) and as
/// Markdown for export. Self-contained (names, not ids to look up), because it travels through
/// the outbox and may be delivered after the incident changed again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub incident: IncidentId,
    pub title: String,
    pub severity: Severity,
    /// Kind id (`tool_api_failure`) and its display name.
    pub kind: String,
    pub kind_name: String,
    pub status: Status,
    /// When monitoring says it started.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When the incident opened (detection).
    pub detected_at: DateTime<Utc>,
    #[serde(default)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub acknowledged_by: Option<String>,
    #[serde(default)]
    pub mitigated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub resolved_by: Option<String>,
    #[serde(default)]
    pub durations: Durations,
    pub alert_count: u64,
    #[serde(default)]
    pub scope: Vec<ScopeLabel>,
    #[serde(default)]
    pub recurrence: Option<Recurrence>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub root_cause: Option<ReportRootCause>,
    /// What the playbook's evidence queries found, as read at the time (`429 rate = 37 at
    /// 14:23 UTC, conclusive`): the Root cause section lists it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    #[serde(default)]
    pub actions: Vec<ReportAction>,
    #[serde(default)]
    pub followups: Vec<ReportFollowUp>,
    #[serde(default)]
    pub timeline: Vec<ReportEntry>,
}

/// The report of `inc`. `timeline` may be empty (then the timeline section says so).
pub fn build_report(inc: &Incident, timeline: &[TimelineEvent], classifier: &Classifier) -> Report {
    let actions = inc
        .actions
        .iter()
        .filter(|a| a.status != ActionStatus::Proposed)
        .map(|a| ReportAction {
            id: a.id.clone(),
            title: a.title.clone(),
            status: a.status,
            approved_by: a.approvals.iter().map(|x| x.display()).collect(),
            decided_by: a.decided_by.as_ref().map(|x| x.display()),
            outcome: timeline
                .iter()
                .rev()
                .find_map(|e| match &e.kind {
                    EventKind::ExecutionFinished {
                        action, summary, ..
                    } if *action == a.id => Some(summary.clone()),
                    _ => None,
                })
                .filter(|s| !s.is_empty()),
            verification: timeline.iter().rev().find_map(|e| match &e.kind {
                EventKind::Verified {
                    action,
                    ok,
                    summary,
                } if *action == a.id => Some(format!(
                    "{}: {summary}",
                    if *ok { "verified" } else { "did not verify" }
                )),
                _ => None,
            }),
        })
        .collect();
    Report {
        incident: inc.id,
        title: inc.title.clone(),
        severity: inc.severity,
        kind: inc.kind.clone(),
        kind_name: classifier.kind_name(&inc.kind).to_string(),
        status: inc.status,
        started_at: inc.started_at,
        detected_at: inc.opened_at,
        acknowledged_at: inc.acknowledged_at,
        acknowledged_by: inc.acknowledged_by.as_ref().map(|a| a.display()),
        mitigated_at: inc.mitigated_at,
        resolved_at: inc.resolved_at,
        resolved_by: inc.resolved_by.as_ref().map(|a| a.display()),
        durations: Durations {
            detect: inc
                .started_at
                .and_then(|s| seconds_between(s, Some(inc.opened_at))),
            acknowledge: seconds_between(inc.opened_at, inc.acknowledged_at),
            mitigate: seconds_between(inc.opened_at, inc.mitigated_at),
            resolve: seconds_between(inc.opened_at, inc.resolved_at),
        },
        alert_count: inc.alert_count,
        scope: SCOPE_LABELS
            .iter()
            .filter_map(|k| {
                inc.labels.get(*k).map(|v| ScopeLabel {
                    key: k.to_string(),
                    value: v.clone(),
                })
            })
            .collect(),
        recurrence: inc.recurrence.clone(),
        description: inc.description.clone(),
        root_cause: inc.root_cause.as_ref().map(|rc| ReportRootCause {
            category: rc.category,
            label: rc.category.label().to_string(),
            text: rc.text.clone(),
            confirmed_by: rc.confirmed_by.as_ref().map(|a| a.display()),
        }),
        evidence: timeline
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Evidence {
                    name,
                    summary,
                    conclusive,
                    ..
                } => Some(format!(
                    "{name} = {summary} at {} UTC{}",
                    e.at.format("%H:%M"),
                    if *conclusive { ", conclusive" } else { "" }
                )),
                _ => None,
            })
            .collect(),
        actions,
        followups: inc
            .followups
            .iter()
            .enumerate()
            .map(|(i, f)| ReportFollowUp {
                text: f.text.clone(),
                owner: f.owner.clone(),
                n: i + 1,
                kind: f.kind,
                state: f.state,
                deadline: f.deadline(),
                reason: f.dropped_reason.clone(),
                link: f.link.clone(),
            })
            .collect(),
        timeline: super::incident::shown_timeline(timeline)
            .map(|e| ReportEntry {
                at: e.at,
                actor: e.actor.display(),
                text: e.describe(),
            })
            .collect(),
    }
}

impl Report {
    /// `Post-incident report: INC-7 — title`.
    pub fn heading(&self) -> String {
        format!("Post-incident report: {} — {}", self.incident, self.title)
    }

    /// The facts as (label, value) pairs, in the order every surface shows them.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let by =
            |who: &Option<String>| who.as_ref().map(|a| format!(" by {a}")).unwrap_or_default();
        let mut f = vec![
            ("Severity", self.severity.to_string()),
            ("Kind", self.kind_name.clone()),
            ("Status", self.status.label().to_string()),
            ("Started (per monitoring)", timestamp(self.started_at)),
            (
                "Detected (incident opened)",
                timestamp(Some(self.detected_at)),
            ),
            (
                "Acknowledged",
                format!(
                    "{}{}",
                    timestamp(self.acknowledged_at),
                    by(&self.acknowledged_by)
                ),
            ),
            ("Mitigated", timestamp(self.mitigated_at)),
            (
                "Resolved",
                format!("{}{}", timestamp(self.resolved_at), by(&self.resolved_by)),
            ),
        ];
        if self.started_at.is_some() {
            f.push(("Time to detect", human_duration(self.durations.detect)));
        }
        f.push((
            "Time to acknowledge",
            human_duration(self.durations.acknowledge),
        ));
        f.push(("Time to mitigate", human_duration(self.durations.mitigate)));
        f.push(("Time to resolve", human_duration(self.durations.resolve)));
        f.push(("Alerts received", self.alert_count.to_string()));
        // Every section of the playbook's template is there, known or not.
        f.push((
            "Scope",
            if self.scope.is_empty() {
                "not known (the alert carried none of the scope labels)".to_string()
            } else {
                self.scope_text()
            },
        ));
        if let Some(r) = &self.recurrence {
            f.push((
                "Recurrence",
                format!(
                    "{} earlier in {} days (last {})",
                    r.previous, r.window_days, r.last
                ),
            ));
        }
        f
    }

    /// `service=payments, namespace=prod`.
    pub fn scope_text(&self) -> String {
        self.scope
            .iter()
            .map(|s| format!("{}={}", s.key, s.value))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The description, or what to say when the alert had none.
    pub fn description_text(&self) -> &str {
        self.description
            .as_deref()
            .unwrap_or("No description was given by the alert.")
    }

    /// The hint shown while the root cause is only a suggestion.
    pub fn confirm_hint(&self) -> String {
        format!(
            "suggested; confirm with `/incident rootcause {} <category> [text]`",
            self.incident
        )
    }

    /// The report's buttons: "Add follow-up", then "Done #n" for open follow-ups and
    /// "Verified #n" for done ones, at most [`REPORT_BUTTONS`] in all (the rest by command).
    pub fn buttons(&self) -> Vec<super::card::Button> {
        use super::card::{Button, ButtonAction, ButtonStyle};
        use super::followup::FollowUpState;
        let i = self.incident;
        let mut v = vec![Button {
            label: "Add follow-up".into(),
            action: ButtonAction::FollowUpAdd(i),
            style: ButtonStyle::Primary,
        }];
        for f in self.followups.iter().filter(|f| f.n > 0) {
            let n = f.n as u32;
            let (label, action) = match f.state {
                FollowUpState::Open => (format!("Done #{n}"), ButtonAction::FollowUpDone(i, n)),
                FollowUpState::Done => {
                    (format!("Verified #{n}"), ButtonAction::FollowUpVerify(i, n))
                }
                _ => continue,
            };
            v.push(Button {
                label,
                action,
                style: ButtonStyle::Default,
            });
        }
        v.truncate(REPORT_BUTTONS);
        v
    }

    /// The hint shown when there are no follow-ups.
    pub fn followup_hint(&self) -> String {
        format!(
            "None yet (`/incident followup {} <item> [@owner]`).",
            self.incident
        )
    }

    /// The report as Markdown (export: `/incident report`, the API, the CLI).
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {}\n", self.heading());
        let _ = writeln!(s, "## Facts\n");
        let _ = writeln!(s, "| | |\n|---|---|");
        for (label, value) in self.facts() {
            let _ = writeln!(s, "| {label} | {value} |");
        }
        let _ = writeln!(s, "\n## Description\n");
        let _ = writeln!(s, "{}", self.description_text());
        let _ = writeln!(s, "\n## Root cause\n");
        match &self.root_cause {
            Some(rc) => {
                let _ = write!(s, "**{}**", rc.label);
                if let Some(t) = &rc.text {
                    let _ = write!(s, " — {t}");
                }
                match &rc.confirmed_by {
                    Some(a) => {
                        let _ = writeln!(s, " (confirmed by {a})");
                    }
                    None => {
                        let _ = writeln!(s, " ({})", self.confirm_hint());
                    }
                }
            }
            None => {
                let _ = writeln!(s, "Not determined.");
            }
        }
        if !self.evidence.is_empty() {
            let _ = writeln!(s, "\nEvidence:\n");
            for e in &self.evidence {
                let _ = writeln!(s, "- {e}");
            }
        }
        let _ = writeln!(s, "\n## Actions taken\n");
        if self.actions.is_empty() {
            let _ = writeln!(s, "None.");
        }
        for a in &self.actions {
            let _ = writeln!(
                s,
                "- `{}` {} — {}, decided by {}{}",
                a.id,
                a.title,
                a.status_label(),
                a.deciders(),
                a.outcome_suffix()
            );
        }
        let _ = writeln!(s, "\n## Improvements\n");
        if self.followups.is_empty() {
            let _ = writeln!(s, "{}", self.followup_hint());
        }
        for f in &self.followups {
            let tick = match f.state {
                super::followup::FollowUpState::Open => "[ ]",
                _ => "[x]",
            };
            let _ = writeln!(
                s,
                "- {tick} {}{}{}{}",
                f.number(),
                f.text,
                f.owner_suffix(),
                f.state_suffix()
            );
        }
        let _ = writeln!(s, "\n## Timeline\n");
        if self.timeline.is_empty() {
            let _ = writeln!(s, "Not available.");
        }
        for e in &self.timeline {
            let _ = writeln!(s, "- {} — {}", e.at.format("%H:%M:%S"), e.text);
        }
        s
    }
}

/// What a cut text ends with, so a reader knows something is missing.
pub const CUT_MARK: &str = "… (truncated)";

/// `s` within `max` characters; when it had to be cut it ends with [`CUT_MARK`], never silently.
pub fn cut_visibly(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(CUT_MARK.chars().count());
    let mut out: String = s.chars().take(keep).collect();
    out.push_str(CUT_MARK);
    super::card::truncate_chars(&out, max)
}

/// Groups lines, in order, into chunks of at most `max` characters (lines joined by `\n`); a
/// line longer than `max` is cut visibly. Each chunk comes with how many lines it holds, so a
/// renderer that has to drop chunks can say how many items it left out.
pub fn group_lines(lines: &[String], max: usize) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut n = 0;
    for line in lines {
        let line = cut_visibly(line, max);
        let len = line.chars().count();
        if n > 0 && cur.chars().count() + 1 + len > max {
            out.push((std::mem::take(&mut cur), n));
            n = 0;
        }
        if n > 0 {
            cur.push('\n');
        }
        cur.push_str(&line);
        n += 1;
    }
    if n > 0 {
        out.push((cur, n));
    }
    out
}

/// The report as Markdown. `timeline` may be empty (then that section says so).
pub fn render_markdown(
    inc: &Incident,
    timeline: &[TimelineEvent],
    classifier: &Classifier,
) -> String {
    build_report(inc, timeline, classifier).to_markdown()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Platform;
    use crate::domain::classify::default_kinds;
    use crate::domain::incident::tests_support::incident;
    use crate::domain::incident::{ActionState, FollowUp, RootCauseInfo};
    use crate::domain::policy::Actor;

    /// The suggestion for what an incident carries of its alert (the same words the alert had).
    fn suggest_root_cause(inc: &Incident, classifier: &Classifier) -> RootCause {
        suggest_from(
            &inc.title,
            inc.labels.iter().chain(inc.annotations.iter()),
            inc.description.as_deref(),
            &inc.kind,
            classifier,
        )
    }
    use crate::domain::severity::Severity;
    use chrono::Utc;

    fn classifier() -> Classifier {
        Classifier {
            rules: vec![],
            kinds: default_kinds(),
            default_severity: Severity::P2,
            playbook_for_kind: Default::default(),
            keyword_index: Default::default(),
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
    fn references_do_not_change_the_suggested_root_cause() {
        let c = classifier();
        let mut inc = incident();
        inc.title = "ModelOutputSchemaViolations".into();
        inc.kind = "model_output_failure".into();
        inc.labels = [
            ("alertname", "ModelOutputSchemaViolations"),
            ("instance", "10.0.0.7:502"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(suggest_root_cause(&inc, &c), RootCause::ModelDefect);
        // Ids, hashes, URLs and numbers that happen to hold a status code or a resource word.
        for (key, value) in [
            ("alertmanager_fingerprint", "4c502e9a1b7d3f08"),
            ("fingerprint", "a429f00dbeef1234"),
            (
                "generatorURL",
                "http://prometheus:9090/graph?g0.expr=http_502_total",
            ),
            ("runbook_url", "https://runbooks.example.com/429-rate-limit"),
            ("dashboardURL", "https://grafana.example.com/d/upstream-503"),
            ("panelURL", "https://grafana.example.com/d/x?viewPanel=429"),
            (
                "silenceURL",
                "https://grafana.example.com/alerting/silence/new?timeout=1",
            ),
            ("value_string", "[ var='A' labels={code=429} value=502 ]"),
            ("trace_id", "upstream-timeout"),
            (
                "summary",
                "Seen at 2024-05-02T10:04:29.502Z in request 9f3e4d2c-5020-4290-a502-429c0ffee502",
            ),
        ] {
            inc.annotations.insert(key.into(), value.into());
            assert_eq!(
                suggest_root_cause(&inc, &c),
                RootCause::ModelDefect,
                "{key} = {value}"
            );
        }
        // A real word still counts.
        inc.annotations
            .insert("summary".into(), "Upstream returned 502".into());
        assert_eq!(suggest_root_cause(&inc, &c), RootCause::ExternalDependency);
    }

    /// A fixed incident with every section filled in.
    fn rich() -> (Incident, Vec<TimelineEvent>) {
        use chrono::TimeZone;
        let mut inc = incident();
        let alice = Actor::new(Platform::Slack, "U1");
        let bob = Actor::new(Platform::Discord, "42");
        let t = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
        inc.opened_at = t;
        inc.started_at = Some(t - chrono::Duration::seconds(90));
        inc.title = "Payments API 503".into();
        inc.description = Some("5xx above 5%".into());
        inc.status = Status::Resolved;
        inc.alert_count = 3;
        inc.labels.insert("service".into(), "payments".into());
        inc.labels.insert("namespace".into(), "prod".into());
        inc.acknowledged_at = Some(t + chrono::Duration::seconds(42));
        inc.acknowledged_by = Some(alice.clone());
        inc.mitigated_at = Some(t + chrono::Duration::seconds(200));
        inc.resolved_at = Some(t + chrono::Duration::seconds(4000));
        inc.resolved_by = Some(Actor::system());
        inc.recurrence = Some(Recurrence {
            previous: 2,
            window_days: 30,
            last: IncidentId(3),
            last_resolved_at: None,
            last_fixed_by: None,
        });
        for (id, status, approvals) in [
            (
                "restart",
                ActionStatus::Succeeded,
                vec![alice.clone(), bob.clone()],
            ),
            ("scale", ActionStatus::Rejected, vec![]),
            ("drain", ActionStatus::Proposed, vec![]),
        ] {
            inc.actions.push(ActionState {
                id: id.into(),
                title: id.to_uppercase(),
                auto: false,
                summary: "x".into(),
                status,
                approvals,
                decided_by: (status != ActionStatus::Proposed).then(|| bob.clone()),
                decided_at: None,
            });
        }
        inc.root_cause = Some(RootCauseInfo {
            category: RootCause::ExternalDependency,
            text: Some("upstream 503s".into()),
            confirmed_by: None,
        });
        inc.followups.push(FollowUp::new(
            "add a circuit breaker".into(),
            Some("@bob".into()),
            Default::default(),
            &alice,
            t,
            &Default::default(),
        ));
        inc.followups.push(FollowUp::new(
            "alert earlier".into(),
            None,
            Default::default(),
            &alice,
            t,
            &Default::default(),
        ));
        let timeline = vec![
            TimelineEvent {
                at: t,
                actor: Actor::system(),
                kind: EventKind::Opened {
                    severity: Severity::P2,
                    kind: "unclassified".into(),
                    rule: None,
                },
            },
            TimelineEvent {
                at: t + chrono::Duration::seconds(190),
                actor: Actor::system(),
                kind: EventKind::ExecutionFinished {
                    action: "restart".into(),
                    execution: "INC-7:restart".into(),
                    success: true,
                    summary: "exit 0 in 1.2 s".into(),
                },
            },
        ];
        (inc, timeline)
    }

    #[test]
    fn scope_is_a_section_even_when_not_known() {
        let (mut inc, timeline) = rich();
        inc.labels.clear();
        let r = build_report(&inc, &timeline, &classifier());
        let facts = r.facts();
        let scope = facts
            .iter()
            .find(|(k, _)| *k == "Scope")
            .expect("a Scope line");
        assert!(scope.1.starts_with("not known"), "{scope:?}");
        assert!(render_markdown(&inc, &timeline, &classifier()).contains("| Scope | not known"));
    }

    #[test]
    fn the_report_carries_every_fact_as_data() {
        let (inc, timeline) = rich();
        let r = build_report(&inc, &timeline, &classifier());
        assert_eq!(r.incident, IncidentId(7));
        assert_eq!(r.durations.detect, Some(90));
        assert_eq!(r.durations.acknowledge, Some(42));
        assert_eq!(r.durations.mitigate, Some(200));
        assert_eq!(r.durations.resolve, Some(4000));
        assert_eq!(r.acknowledged_by.as_deref(), Some("slack:U1"));
        assert_eq!(r.resolved_by.as_deref(), Some("incidentd"));
        assert_eq!(r.scope_text(), "service=payments, namespace=prod");
        let rc = r.root_cause.as_ref().unwrap();
        assert_eq!(rc.label, "External dependency");
        assert_eq!(rc.confirmed_by, None, "only suggested");
        // Proposed actions were never taken.
        assert_eq!(r.actions.len(), 2);
        assert_eq!(r.actions[0].deciders(), "slack:U1, discord:42");
        assert_eq!(r.actions[0].outcome.as_deref(), Some("exit 0 in 1.2 s"));
        assert_eq!(r.actions[1].deciders(), "discord:42");
        assert_eq!(r.actions[1].outcome, None);
        assert_eq!(r.followups[0].owner.as_deref(), Some("@bob"));
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(r.timeline[1].text, "`restart` succeeded: exit 0 in 1.2 s");
        // It survives the outbox (JSON in sled).
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn actions_carry_the_verification_evidence_seen_at_the_time() {
        let (inc, mut timeline) = rich();
        let at = timeline[1].at;
        for (ok, summary) in [
            (
                false,
                "`q` did not stay < 0.05 within 60 s; last: 0.5 (12 checks)",
            ),
            (
                true,
                "`max(errors{service=\"api\"})` = 0.01, < 0.05 for 60 s (7 checks)",
            ),
        ] {
            timeline.push(TimelineEvent {
                at,
                actor: Actor::system(),
                kind: EventKind::Verified {
                    action: "restart".into(),
                    ok,
                    summary: summary.into(),
                },
            });
        }
        let r = build_report(&inc, &timeline, &classifier());
        // The last verification counts.
        assert_eq!(
            r.actions[0].verification.as_deref(),
            Some("verified: `max(errors{service=\"api\"})` = 0.01, < 0.05 for 60 s (7 checks)")
        );
        assert_eq!(r.actions[1].verification, None);
        assert!(r.to_markdown().contains(
            "- `restart` RESTART — Succeeded, decided by slack:U1, discord:42: exit 0 in 1.2 s; verified: `max(errors{service=\"api\"})` = 0.01, < 0.05 for 60 s (7 checks)\n"
        ));
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_root_cause_section_lists_the_evidence_read_at_the_time() {
        let (inc, mut timeline) = rich();
        let at = timeline[1].at;
        for (name, summary, conclusive) in [("CPU", "0.4", false), ("429 rate", "37", true)] {
            timeline.push(TimelineEvent {
                at,
                actor: Actor::system(),
                kind: EventKind::Evidence {
                    name: name.into(),
                    query: "q".into(),
                    summary: summary.into(),
                    conclusive,
                },
            });
        }
        let r = build_report(&inc, &timeline, &classifier());
        assert_eq!(
            r.evidence,
            [
                "CPU = 0.4 at 12:03 UTC",
                "429 rate = 37 at 12:03 UTC, conclusive"
            ]
        );
        let md = r.to_markdown();
        assert!(
            md.contains("\n\nEvidence:\n\n- CPU = 0.4 at 12:03 UTC\n- 429 rate = 37 at 12:03 UTC, conclusive\n\n## Actions taken"),
            "{md}"
        );
    }

    /// The export is rendered from the structured report; its text is pinned here (it is what
    /// `/incident report`, `report.md` and `incidentd report` print).
    #[test]
    fn markdown_is_rendered_from_the_report() {
        let (inc, timeline) = rich();
        let c = classifier();
        let md = render_markdown(&inc, &timeline, &c);
        assert_eq!(md, build_report(&inc, &timeline, &c).to_markdown());
        let want = "# Post-incident report: INC-7 — Payments API 503\n\
\n\
## Facts\n\
\n\
| | |\n\
|---|---|\n\
| Severity | P2 |\n\
| Kind | unclassified |\n\
| Status | Resolved |\n\
| Started (per monitoring) | 2026-11-29 11:58:30 UTC |\n\
| Detected (incident opened) | 2026-11-29 12:00:00 UTC |\n\
| Acknowledged | 2026-11-29 12:00:42 UTC by slack:U1 |\n\
| Mitigated | 2026-11-29 12:03:20 UTC |\n\
| Resolved | 2026-11-29 13:06:40 UTC by incidentd |\n\
| Time to detect | 1 min 30 s |\n\
| Time to acknowledge | 42 s |\n\
| Time to mitigate | 3 min 20 s |\n\
| Time to resolve | 1 h 6 min |\n\
| Alerts received | 3 |\n\
| Scope | service=payments, namespace=prod |\n\
| Recurrence | 2 earlier in 30 days (last INC-3) |\n\
\n\
## Description\n\
\n\
5xx above 5%\n\
\n\
## Root cause\n\
\n\
**External dependency** — upstream 503s (suggested; confirm with `/incident rootcause INC-7 <category> [text]`)\n\
\n\
## Actions taken\n\
\n\
- `restart` RESTART — Succeeded, decided by slack:U1, discord:42: exit 0 in 1.2 s\n\
- `scale` SCALE — Rejected, decided by discord:42\n\
\n\
## Improvements\n\
\n\
- [ ] #1 add a circuit breaker — @bob (technical · open · due 2026-12-06 12:00 UTC)\n\
- [ ] #2 alert earlier (technical · open · due 2026-12-06 12:00 UTC)\n\
\n\
## Timeline\n\
\n\
- 12:00:00 — Opened as P2 (unclassified)\n\
- 12:03:10 — `restart` succeeded: exit 0 in 1.2 s\n\
";
        assert_eq!(md, want);
        let bare = render_markdown(&incident(), &[], &c);
        for want in [
            "No description was given by the alert.",
            "## Root cause\n\nNot determined.",
            "## Actions taken\n\nNone.",
            "None yet (`/incident followup INC-7 <item> [@owner]`).",
            "## Timeline\n\nNot available.",
        ] {
            assert!(bare.contains(want), "missing {want:?} in\n{bare}");
        }
        assert!(
            !bare.contains("Time to detect"),
            "no start time, no detection time"
        );
    }

    #[test]
    fn long_text_is_cut_visibly_and_lines_are_grouped_in_order() {
        assert_eq!(cut_visibly("short", 10), "short");
        let c = cut_visibly(&"x".repeat(100), 40);
        assert_eq!(c.chars().count(), 40);
        assert!(c.ends_with(CUT_MARK));
        let lines: Vec<String> = (0..100).map(|i| format!("line {i:03}")).collect();
        let groups = group_lines(&lines, 50);
        assert!(groups.iter().all(|(g, _)| g.chars().count() <= 50));
        assert_eq!(groups.iter().map(|(_, n)| n).sum::<usize>(), 100);
        let joined: Vec<&str> = groups.iter().flat_map(|(g, _)| g.lines()).collect();
        assert_eq!(joined, lines.iter().map(String::as_str).collect::<Vec<_>>());
        let long = group_lines(&["y".repeat(500), "z".into()], 50);
        assert_eq!(long.len(), 2);
        assert!(long[0].0.ends_with(CUT_MARK));
        assert!(group_lines(&[], 50).is_empty());
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
        inc.followups.push(FollowUp::new(
            "add a config check".into(),
            Some("@bob".into()),
            Default::default(),
            &alice,
            t,
            &Default::default(),
        ));
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
            "- [ ] #1 add a config check — @bob (technical · open · due",
            "`restart` succeeded: exit 0 in 1.2 s",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
        inc.root_cause.as_mut().unwrap().confirmed_by = None;
        assert!(render_markdown(&inc, &[], &c).contains("(suggested; confirm with"));
    }
}

/// Reports for the renderers' tests: a small one that fits any message, and a huge one that
/// fits none (300 timeline events, long texts, 40 follow-ups, hostile markup).
#[cfg(test)]
pub(crate) mod samples {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn small() -> Report {
        let t = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
        Report {
            incident: IncidentId(7),
            title: "Payments API 503".into(),
            severity: Severity::P1,
            kind: "tool_api_failure".into(),
            kind_name: "Tool/API failure".into(),
            status: Status::Resolved,
            started_at: Some(t - chrono::Duration::seconds(30)),
            detected_at: t,
            acknowledged_at: Some(t + chrono::Duration::seconds(42)),
            acknowledged_by: Some("slack:U1".into()),
            mitigated_at: Some(t + chrono::Duration::seconds(200)),
            resolved_at: Some(t + chrono::Duration::seconds(400)),
            resolved_by: Some("incidentd".into()),
            durations: Durations {
                detect: Some(30),
                acknowledge: Some(42),
                mitigate: Some(200),
                resolve: Some(400),
            },
            alert_count: 3,
            scope: vec![ScopeLabel {
                key: "service".into(),
                value: "payments".into(),
            }],
            recurrence: None,
            description: Some("5xx above 5% for 10 minutes".into()),
            root_cause: Some(ReportRootCause {
                category: RootCause::ExternalDependency,
                label: "External dependency".into(),
                text: Some("the card processor answered 503".into()),
                confirmed_by: Some("slack:U2".into()),
            }),
            evidence: vec![],
            actions: vec![ReportAction {
                id: "restart".into(),
                title: "Restart the API".into(),
                status: ActionStatus::Succeeded,
                approved_by: vec!["slack:UAPPROVER".into()],
                decided_by: Some("slack:UAPPROVER".into()),
                outcome: Some("exit 0 in 1.2 s".into()),
                verification: None,
            }],
            followups: vec![ReportFollowUp {
                text: "add a circuit breaker".into(),
                owner: Some("@bob".into()),
                ..Default::default()
            }],
            timeline: vec![
                ReportEntry {
                    at: t,
                    actor: "incidentd".into(),
                    text: "Opened as P1 (tool_api_failure)".into(),
                },
                ReportEntry {
                    at: t + chrono::Duration::seconds(190),
                    actor: "incidentd".into(),
                    text: "`restart` succeeded: exit 0 in 1.2 s".into(),
                },
            ],
        }
    }

    pub(crate) fn huge() -> Report {
        let mut r = small();
        r.title = format!("<!channel> @everyone {}", "T".repeat(600));
        r.description = Some(format!("<script>x</script> {}", "d".repeat(9000)));
        r.kind_name = "k".repeat(3000);
        r.scope = (0..6)
            .map(|i| ScopeLabel {
                key: format!("label{i}"),
                value: "v".repeat(700),
            })
            .collect();
        r.root_cause.as_mut().unwrap().text = Some(format!("<@U1> {}", "r".repeat(5000)));
        r.actions = (0..30)
            .map(|i| ReportAction {
                id: format!("action-{i}"),
                title: "a".repeat(300),
                status: ActionStatus::Failed,
                approved_by: vec![format!("slack:U{i}"), "<!here>".into()],
                decided_by: None,
                outcome: Some("o".repeat(2000)),
                verification: Some("v".repeat(2000)),
            })
            .collect();
        r.followups = (0..40)
            .map(|i| ReportFollowUp {
                text: format!("follow-up {i} {}", "f".repeat(400)),
                owner: Some(format!("@owner{i}")),
                ..Default::default()
            })
            .collect();
        r.timeline = (0..300)
            .map(|i| ReportEntry {
                at: r.detected_at + chrono::Duration::seconds(i),
                actor: "slack:U1".into(),
                text: format!("event number {i} & <b>{}</b>", "e".repeat(i as usize % 200)),
            })
            .collect();
        r
    }
}
