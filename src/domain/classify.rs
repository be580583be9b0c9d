//! Triage: which severity, incident kind and playbook an alert gets. Configured rules are tried
//! in order and the first match wins; whatever the matching rule leaves unset falls back to the
//! defaults (the `severity` label, an explicit `kind` label, keyword matching over the kinds).

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::alert::Alert;
use super::severity::Severity;

/// Root-cause categories used by reports and stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootCause {
    Configuration,
    ResourceLimits,
    ExternalDependency,
    ModelDefect,
    Unknown,
}

impl RootCause {
    /// Every category, in the order they are offered.
    pub const ALL: [RootCause; 5] = [
        RootCause::Configuration,
        RootCause::ResourceLimits,
        RootCause::ExternalDependency,
        RootCause::ModelDefect,
        RootCause::Unknown,
    ];

    pub fn parse(s: &str) -> Option<RootCause> {
        Some(
            match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                "configuration" | "config" => RootCause::Configuration,
                "resource_limits" | "resources" => RootCause::ResourceLimits,
                "external_dependency" | "external" | "dependency" => RootCause::ExternalDependency,
                "model_defect" | "model" => RootCause::ModelDefect,
                "unknown" => RootCause::Unknown,
                _ => return None,
            },
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            RootCause::Configuration => "Configuration",
            RootCause::ResourceLimits => "Resource limits",
            RootCause::ExternalDependency => "External dependency",
            RootCause::ModelDefect => "Model defect",
            RootCause::Unknown => "Unknown",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RootCause::Configuration => "configuration",
            RootCause::ResourceLimits => "resource_limits",
            RootCause::ExternalDependency => "external_dependency",
            RootCause::ModelDefect => "model_defect",
            RootCause::Unknown => "unknown",
        }
    }
}

/// A kind of incident: the built-in four or one configured by the team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentKind {
    /// Stable identifier (`tool_api_failure`), used in rules, playbooks and labels.
    pub id: String,
    /// Human name (`Tool/API failure`).
    pub name: String,
    /// Lower-case words or phrases; an alert whose text contains one is of this kind.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The root-cause category suggested for incidents of this kind.
    #[serde(default = "unknown_cause")]
    pub root_cause: RootCause,
}

fn unknown_cause() -> RootCause {
    RootCause::Unknown
}

/// The kind used when nothing matches.
pub const UNCLASSIFIED: &str = "unclassified";

/// The four kinds every deployment starts with.
pub fn default_kinds() -> Vec<IncidentKind> {
    let kind = |id: &str, name: &str, words: &[&str], cause| IncidentKind {
        id: id.into(),
        name: name.into(),
        keywords: words.iter().map(|w| w.to_string()).collect(),
        root_cause: cause,
    };
    vec![
        kind(
            "configuration_boundary",
            "Configuration boundary",
            &[
                "permission",
                "forbidden",
                "access denied",
                "env var",
                "environment variable",
                "missing config",
                "misconfig",
                "invalid config",
                "quota",
                "limit exceeded",
            ],
            RootCause::Configuration,
        ),
        kind(
            "model_output_failure",
            "Model output failure",
            &[
                "bad format",
                "malformed output",
                "parse error",
                "schema validation",
                "safety filter",
                "content filter",
                "inference error",
                "hallucination",
                "model output",
            ],
            RootCause::ModelDefect,
        ),
        kind(
            "orchestration_failure",
            "Orchestration failure",
            &[
                "deadlock",
                "infinite loop",
                "retry loop",
                "stuck",
                "resource exhaustion",
                "out of memory",
                "oom",
                "cpu throttl",
                "queue backlog",
                "disk full",
            ],
            RootCause::ResourceLimits,
        ),
        kind(
            "tool_api_failure",
            "Tool/API failure",
            &[
                "unavailable",
                "rate limit",
                "ratelimit",
                "429",
                "503",
                "502",
                "timeout",
                "timed out",
                "connection refused",
                "unauthorized",
                "authentication",
                "error rate",
                "5xx",
            ],
            RootCause::ExternalDependency,
        ),
    ]
}

/// A label matcher: exact (case-insensitive) value or a regex that must match the whole value.
#[derive(Debug, Clone)]
pub enum Matcher {
    Equals(String),
    Regex(Regex),
}

impl Matcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Equals(v) => v.eq_ignore_ascii_case(value),
            Matcher::Regex(r) => r.is_match(value),
        }
    }
}

/// One classification rule. All matchers must hold (an empty rule matches everything).
#[derive(Debug, Clone, Default)]
pub struct Rule {
    pub name: String,
    pub labels: BTreeMap<String, Matcher>,
    /// Matched against the alert's title, description, labels and annotations.
    pub text: Option<Regex>,
    pub severity: Option<Severity>,
    pub kind: Option<String>,
    pub playbook: Option<String>,
}

impl Rule {
    pub fn matches(&self, alert: &Alert, text: &str) -> bool {
        self.labels
            .iter()
            .all(|(k, m)| alert.label(k).is_some_and(|v| m.matches(v)))
            && self.text.as_ref().is_none_or(|r| r.is_match(text))
    }
}

/// What triage decided, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triage {
    pub severity: Severity,
    pub kind: String,
    pub playbook: Option<String>,
    /// The rule that matched, if any (shown on the card and in `simulate`).
    pub rule: Option<String>,
}

/// Rules and kinds, compiled once from config.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub rules: Vec<Rule>,
    pub kinds: Vec<IncidentKind>,
    pub default_severity: Severity,
    /// kind id → playbook id, for kinds no rule gave a playbook.
    pub playbook_for_kind: BTreeMap<String, String>,
    /// Every kind's keywords in one automaton, built on first use (`kinds` does not change
    /// after the config is loaded): one pass over the text instead of one per keyword.
    pub keyword_index: std::sync::OnceLock<KeywordIndex>,
}

/// All keywords of all kinds, searched at once.
#[derive(Debug, Clone)]
pub struct KeywordIndex {
    automaton: Option<aho_corasick::AhoCorasick>,
    /// Pattern number → index of its kind in `kinds`.
    kind_of: Vec<usize>,
}

impl KeywordIndex {
    fn build(kinds: &[IncidentKind]) -> KeywordIndex {
        let mut patterns = Vec::new();
        let mut kind_of = Vec::new();
        for (i, k) in kinds.iter().enumerate() {
            for w in k.keywords.iter().filter(|w| !w.is_empty()) {
                patterns.push(w.to_lowercase());
                kind_of.push(i);
            }
        }
        let automaton = if patterns.is_empty() {
            None
        } else {
            // Plain literal patterns: building cannot fail short of absurd sizes; without an
            // automaton no keyword matches, which is what an empty keyword list means too.
            aho_corasick::AhoCorasick::new(&patterns).ok()
        };
        KeywordIndex { automaton, kind_of }
    }

    /// The first kind (in config order) with a keyword in `lower` that starts a word.
    fn first_kind(&self, lower: &str) -> Option<usize> {
        let ac = self.automaton.as_ref()?;
        let mut best: Option<usize> = None;
        for m in ac.find_overlapping_iter(lower) {
            let kind = self.kind_of[m.pattern().as_usize()];
            if best.is_some_and(|b| b <= kind) {
                continue;
            }
            if starts_word(lower, m.start()) {
                best = Some(kind);
                if kind == 0 {
                    break;
                }
            }
        }
        best
    }
}

impl Classifier {
    pub fn kind(&self, id: &str) -> Option<&IncidentKind> {
        self.kinds.iter().find(|k| k.id == id)
    }

    pub fn kind_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.kind(id).map_or(id, |k| k.name.as_str())
    }

    pub fn classify(&self, alert: &Alert) -> Triage {
        let text = alert.search_text();
        let rule = self.rules.iter().find(|r| r.matches(alert, &text));
        let severity = rule
            .and_then(|r| r.severity)
            .or_else(|| alert.label("severity").and_then(Severity::from_label))
            .or_else(|| alert.label("priority").and_then(Severity::from_label))
            .unwrap_or(self.default_severity);
        let kind = rule
            .and_then(|r| r.kind.clone())
            .or_else(|| self.kind_from_labels(alert))
            .or_else(|| self.kind_from_keywords(&text))
            .unwrap_or_else(|| UNCLASSIFIED.to_string());
        let playbook = rule
            .and_then(|r| r.playbook.clone())
            .or_else(|| self.playbook_for_kind.get(&kind).cloned());
        Triage {
            severity,
            kind,
            playbook,
            rule: rule.map(|r| r.name.clone()),
        }
    }

    fn kind_from_labels(&self, alert: &Alert) -> Option<String> {
        ["incident_kind", "kind"]
            .iter()
            .filter_map(|l| alert.label(l))
            .find_map(|v| self.kind(v).map(|k| k.id.clone()))
    }

    /// The first kind (in config order) with a keyword in the text.
    fn kind_from_keywords(&self, text: &str) -> Option<String> {
        let lower = words(text);
        let index = self
            .keyword_index
            .get_or_init(|| KeywordIndex::build(&self.kinds));
        index.first_kind(&lower).map(|i| self.kinds[i].id.clone())
    }
}

/// Lower-cased text with identifier styles split into words, so `HighErrorRate`,
/// `high_error_rate` and `high-error-rate` all read `high error rate`.
fn words(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut prev_lower = false;
    for c in text.chars() {
        if c == '_' || c == '-' {
            out.push(' ');
            prev_lower = false;
            continue;
        }
        if c.is_ascii() {
            // Most alert text is ASCII: skip the Unicode case tables (a hot spot at intake).
            if c.is_ascii_uppercase() && prev_lower {
                out.push(' ');
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c.to_ascii_lowercase());
            continue;
        }
        if c.is_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_lowercase();
        out.extend(c.to_lowercase());
    }
    out
}

/// Whether position `i` of `hay` is not glued to a letter or digit on its left (so `oom` does
/// not match `room`, but `cpu throttl` matches `cpu throttling`).
fn starts_word(hay: &str, i: usize) -> bool {
    hay[..i]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::{AlertSource, AlertStatus};

    /// The plain definition the keyword index must agree with.
    fn contains_word(hay: &str, needle: &str) -> bool {
        !needle.is_empty() && hay.match_indices(needle).any(|(i, _)| starts_word(hay, i))
    }

    #[test]
    fn the_keyword_index_finds_what_a_scan_per_keyword_finds() {
        let kinds = default_kinds();
        let index = KeywordIndex::build(&kinds);
        let texts = [
            "Payments API 503 errors",
            "pod OOMKilled in namespace prod",
            "meeting room booking failed",
            "Model returned malformed JSON output",
            "agent_deadlock-detected in planner",
            "CPU throttling high on worker",
            "rate limit exceeded for upstream",
            "permission denied reading secret",
            "nothing to see here",
            "",
            "ünïcödé tëxt with timeout",
        ];
        for t in texts {
            let lower = words(t);
            let scan = kinds
                .iter()
                .position(|k| k.keywords.iter().any(|w| contains_word(&lower, w)));
            assert_eq!(index.first_kind(&lower), scan, "{t:?}");
        }
        assert_eq!(KeywordIndex::build(&[]).first_kind("anything"), None);
    }

    fn alert(title: &str, labels: &[(&str, &str)]) -> Alert {
        Alert {
            source: AlertSource::Generic,
            fingerprint: "fp".into(),
            status: AlertStatus::Firing,
            title: title.into(),
            description: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Default::default(),
            starts_at: None,
            ends_at: None,
            links: vec![],
            origin: None,
            group_labels: Default::default(),
        }
    }

    fn classifier(rules: Vec<Rule>) -> Classifier {
        Classifier {
            keyword_index: Default::default(),
            rules,
            kinds: default_kinds(),
            default_severity: Severity::P2,
            playbook_for_kind: [("tool_api_failure".to_string(), "api-fallback".to_string())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn defaults_from_severity_label_and_keywords() {
        let c = classifier(vec![]);
        let t = c.classify(&alert(
            "Payments API rate limit hit",
            &[("severity", "critical")],
        ));
        assert_eq!(t.severity, Severity::P1);
        assert_eq!(t.kind, "tool_api_failure");
        assert_eq!(t.playbook.as_deref(), Some("api-fallback"));
        assert_eq!(t.rule, None);

        let t = c.classify(&alert(
            "Agent deadlock detected",
            &[("severity", "warning")],
        ));
        assert_eq!(
            (t.severity, t.kind.as_str()),
            (Severity::P2, "orchestration_failure")
        );
        assert_eq!(t.playbook, None);

        let t = c.classify(&alert("Model output failed schema validation", &[]));
        assert_eq!(
            (t.severity, t.kind.as_str()),
            (Severity::P2, "model_output_failure")
        );

        let t = c.classify(&alert(
            "Missing env var OPENAI_KEY",
            &[("severity", "info")],
        ));
        assert_eq!(
            (t.severity, t.kind.as_str()),
            (Severity::P3, "configuration_boundary")
        );

        let t = c.classify(&alert(
            "Something odd in the room",
            &[("severity", "fatal")],
        ));
        assert_eq!((t.severity, t.kind.as_str()), (Severity::P0, UNCLASSIFIED));
    }

    #[test]
    fn explicit_kind_label_beats_keywords() {
        let c = classifier(vec![]);
        let t = c.classify(&alert("rate limit", &[("kind", "orchestration_failure")]));
        assert_eq!(t.kind, "orchestration_failure");
        // An unknown kind label is ignored, not trusted.
        let t = c.classify(&alert("rate limit", &[("kind", "made_up")]));
        assert_eq!(t.kind, "tool_api_failure");
    }

    #[test]
    fn first_matching_rule_wins_and_unset_fields_fall_back() {
        let rules = vec![
            Rule {
                name: "payments-p0".into(),
                labels: [
                    ("service".into(), Matcher::Equals("payments".into())),
                    (
                        "alertname".into(),
                        Matcher::Regex(Regex::new("^(?:High.*)$").unwrap()),
                    ),
                ]
                .into_iter()
                .collect(),
                severity: Some(Severity::P0),
                ..Default::default()
            },
            Rule {
                name: "catch-payments".into(),
                labels: [("service".into(), Matcher::Equals("payments".into()))]
                    .into_iter()
                    .collect(),
                severity: Some(Severity::P3),
                kind: Some("model_output_failure".into()),
                playbook: Some("pb".into()),
                ..Default::default()
            },
        ];
        let c = classifier(rules);
        let t = c.classify(&alert(
            "error rate",
            &[("service", "PAYMENTS"), ("alertname", "HighErrorRate")],
        ));
        assert_eq!(t.rule.as_deref(), Some("payments-p0"));
        assert_eq!(t.severity, Severity::P0);
        assert_eq!(t.kind, "tool_api_failure", "kind falls back to keywords");
        let t = c.classify(&alert(
            "x",
            &[("service", "payments"), ("alertname", "LowDisk")],
        ));
        assert_eq!(t.rule.as_deref(), Some("catch-payments"));
        assert_eq!(
            (t.severity, t.kind.as_str(), t.playbook.as_deref()),
            (Severity::P3, "model_output_failure", Some("pb"))
        );
        // Missing label: no rule matches.
        let t = c.classify(&alert("x", &[("alertname", "HighErrorRate")]));
        assert_eq!(t.rule, None);
    }

    #[test]
    fn text_rule() {
        let c = classifier(vec![Rule {
            name: "gpu".into(),
            text: Some(Regex::new("(?i)gpu").unwrap()),
            kind: Some("orchestration_failure".into()),
            ..Default::default()
        }]);
        assert_eq!(
            c.classify(&alert("GPU lost", &[])).kind,
            "orchestration_failure"
        );
        assert_eq!(c.classify(&alert("CPU lost", &[])).rule, None);
    }

    #[test]
    fn every_root_cause_reads_back_from_its_name() {
        for c in RootCause::ALL {
            assert_eq!(RootCause::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn identifier_styles_are_split_into_words() {
        assert_eq!(words("HighErrorRate"), "high error rate");
        assert_eq!(words("agent_deadlock-detected"), "agent deadlock detected");
        assert_eq!(words("OOMKilled"), "oomkilled");
        // Outside ASCII the Unicode case rules apply (the ASCII fast path must agree).
        assert_eq!(words("DiskFüllstandHoch"), "disk füllstand hoch");
        assert_eq!(words("überLastÄrger"), "über last ärger");
        assert_eq!(words("ΣφάλμαΔίσκου"), "σφάλμα δίσκου");
        assert_eq!(words("node42Down"), "node42 down");
        let c = classifier(vec![]);
        assert_eq!(
            c.classify(&alert("HighErrorRate", &[])).kind,
            "tool_api_failure"
        );
        assert_eq!(
            c.classify(&alert("AgentDeadlock", &[])).kind,
            "orchestration_failure"
        );
    }

    #[test]
    fn words_match_on_boundaries() {
        assert!(contains_word("pod oom killed", "oom"));
        assert!(!contains_word("meeting room", "oom"));
        assert!(contains_word("cpu throttling high", "cpu throttl"));
        assert!(!contains_word("anything", ""));
    }
}
