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
                "budget exceeded",
                "bad config",
                "config reload",
                "configuration reload",
                "failed reload",
                "reload fail",
                "certificate",
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
                "schema violation",
                "guardrail",
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
                "out of space",
                "out of files",
                "filling up",
                "memory pressure",
                "disk pressure",
                "memory high",
                "high memory",
                "cpu high",
                "high cpu",
                "saturation",
                "overcommit",
                "maxed out",
                "too many connections",
                "crash loop",
                "crashloop",
                "dead lock",
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
                "overloaded",
                "529",
                "too many requests",
                "tool call",
                "probe fail",
                "probe http fail",
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
                // Written the way the text is read, so `rate-limit` or `VectorDB` match too.
                patterns.push(split_identifiers(w, Split::Apart));
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
        self.classify_with_words(alert, None)
    }

    /// As [`Classifier::classify`], with the alert's [`match_text`] when the caller has it
    /// already (it is the costly part of triage, and the root-cause suggestion reads it too).
    pub fn classify_with_words(&self, alert: &Alert, words: Option<&str>) -> Triage {
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
            .or_else(|| self.kind_from_keywords(alert, words))
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

    /// The first kind (in config order) with a keyword in the alert's words ([`match_text`]).
    fn kind_from_keywords(&self, alert: &Alert, words: Option<&str>) -> Option<String> {
        let owned;
        let lower = match words {
            Some(w) => w,
            None => {
                owned = alert_match_text(alert);
                &owned
            }
        };
        let index = self
            .keyword_index
            .get_or_init(|| KeywordIndex::build(&self.kinds));
        index.first_kind(lower).map(|i| self.kinds[i].id.clone())
    }
}

/// How [`split_identifiers`] treats an acronym after a word and digits after letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Every word apart: `OpenAIRateLimited` → `open ai rate limited`, `MySQLDown` →
    /// `my sql down`; digits stay with the letters before them (`node42`, `errors5xx`).
    Apart,
    /// An acronym stays joined to the word before it and digits start a new word:
    /// `openai rate limited`, `mysql down`, `errors 5xx`, `node 42`.
    Joined,
}

fn is_upper(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_uppercase()
    } else {
        c.is_uppercase()
    }
}

fn is_lower(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_lowercase()
    } else {
        c.is_lowercase()
    }
}

/// Lower-cased text with identifier styles split into words: `_` and `-` become spaces, a word
/// starts at an upper-case letter after a lower-case one or a digit (`HighErrorRate`,
/// `node42Down`), and an acronym ends before its last capital when a lower-case letter follows
/// (`GPUOutOfMemory` → `gpu out of memory`, `OOMKilled` → `oom killed`). `style` decides the
/// two ambiguous cases.
fn split_identifiers(text: &str, style: Split) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        if c == '_' || c == '-' {
            out.push(' ');
            prev = None;
            continue;
        }
        let next = chars.peek().copied();
        let after_lower = prev.is_some_and(is_lower);
        let after_digit = prev.is_some_and(|p| p.is_ascii_digit());
        let after_upper = prev.is_some_and(is_upper);
        let breaks = if is_upper(c) {
            let starts_acronym = next.is_some_and(is_upper);
            let ends_acronym = after_upper && next.is_some_and(is_lower);
            match style {
                Split::Apart => after_lower || after_digit || ends_acronym,
                Split::Joined => (after_lower && !starts_acronym) || after_digit || ends_acronym,
            }
        } else if c.is_ascii_digit() {
            style == Split::Joined && prev.is_some_and(char::is_alphabetic)
        } else {
            false
        };
        if breaks {
            out.push(' ');
        }
        if c.is_ascii() {
            // Most alert text is ASCII: skip the Unicode case tables (a hot spot at intake).
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
        prev = Some(c);
    }
    out
}

/// The text keywords are matched against: the words split apart, and a second time with
/// acronyms joined and digits split off when that reads differently, so `rate limit` matches
/// `OpenAIRateLimited`, `openai` matches it too, and `5xx` matches `HTTPServerErrors5xx`.
fn words(text: &str) -> String {
    let mut apart = split_identifiers(text, Split::Apart);
    let joined = split_identifiers(text, Split::Joined);
    if joined != apart {
        apart.push('\n');
        apart.push_str(&joined);
    }
    apart
}

/// Words that mark a label or annotation name as a reference rather than a description: its
/// value identifies or points somewhere (`fingerprint`, `generatorURL`, `runbook_url`,
/// `dashboardUID`, `panelId`, `__alert_rule_uid__`, `trace_id`, `pagerduty_key`) or is a
/// measured value (Grafana's `value_string`), so its digits and words say nothing about what
/// went wrong.
const REFERENCE_KEY_WORDS: &[&str] = &[
    "fingerprint",
    "url",
    "uri",
    "href",
    "link",
    "links",
    "id",
    "uid",
    "uuid",
    "guid",
    "hash",
    "sha",
    "digest",
    "checksum",
    "key",
    "token",
    "trace",
    "span",
    "dashboard",
    "panel",
    "generator",
    "silence",
    "image",
    "value",
    "values",
    "timestamp",
];

/// Whether a label or annotation name is a reference (see [`REFERENCE_KEY_WORDS`]): one of its
/// words, split as identifiers are, is such a word.
pub fn is_reference_key(key: &str) -> bool {
    split_identifiers(key, Split::Apart)
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| REFERENCE_KEY_WORDS.contains(&w))
}

/// Whether one white-space separated token of free text is a reference rather than a word: a
/// URL, a hex id, hash or UUID (8 or more hex digits, at least one a digit), a date or
/// timestamp, or a number with separators (`0.429`, `1,502`, `10.0.0.7:502`, `12:04:29`).
/// Whole numbers such as `502` are words: they are how status codes are written.
pub fn is_reference_token(token: &str) -> bool {
    let t = token.trim_matches(|c: char| ".,;:!?\"'()[]{}<>".contains(c));
    if t.is_empty() {
        return false;
    }
    let starts_with = |prefix: &str| {
        t.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    if t.contains("://") || starts_with("www.") || starts_with("mailto:") {
        return true;
    }
    let hex_id = |t: &str| {
        let hex = t.chars().filter(char::is_ascii_hexdigit).count();
        hex >= 8
            && t.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            && t.chars().any(|c| c.is_ascii_digit())
    };
    let number = |t: &str| {
        t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | ':' | '_'))
            && t.chars().any(|c| c.is_ascii_digit())
            && t.chars().any(|c| matches!(c, '.' | ',' | ':'))
    };
    let date = |t: &str| {
        let b = t.as_bytes();
        b.len() >= 10
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[7] == b'-'
            && b[8..10].iter().all(u8::is_ascii_digit)
    };
    // `sha256:ab12…`, `fp=ab12…`: the part after the last separator decides too.
    let last = t.rsplit([':', '=']).next().unwrap_or(t);
    hex_id(t) || number(t) || date(t) || hex_id(last) || number(last)
}

/// `text` with every reference token (see [`is_reference_token`]) blanked out, appended to `out`.
fn push_without_references(out: &mut String, text: &str) {
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let token = &rest[..end];
        if is_reference_token(token) {
            out.push(' ');
        } else {
            out.push_str(token);
        }
        rest = &rest[end..];
    }
}

/// What keyword matching and root-cause suggestions read of an alert (or of the incident it
/// opened): the title, the description and the `name=value` of every label and annotation
/// that is not a reference, with reference tokens blanked out, split into lower-case words
/// (see [`words`]). Rules' `text` regexes still see everything ([`Alert::search_text`]).
pub fn match_text<'a>(
    title: &str,
    description: Option<&str>,
    fields: impl Iterator<Item = (&'a String, &'a String)>,
) -> String {
    let mut s = String::with_capacity(256);
    push_without_references(&mut s, title);
    if let Some(d) = description {
        s.push('\n');
        push_without_references(&mut s, d);
    }
    for (k, v) in fields {
        if is_reference_key(k) {
            continue;
        }
        s.push('\n');
        s.push_str(k);
        s.push('=');
        push_without_references(&mut s, v);
    }
    words(&s)
}

/// [`match_text`] of an alert.
pub fn alert_match_text(alert: &Alert) -> String {
    match_text(
        &alert.title,
        alert.description.as_deref(),
        alert.labels.iter().chain(alert.annotations.iter()),
    )
}

/// Whether `needle` occurs in `hay` at the start of a word (see [`starts_word`]).
pub fn contains_word(hay: &str, needle: &str) -> bool {
    !needle.is_empty() && hay.match_indices(needle).any(|(i, _)| starts_word(hay, i))
}

/// Whether position `i` of `hay` is not glued to a letter or digit on its left (so `oom` does
/// not match `room`, but `cpu throttl` matches `cpu throttling`).
pub fn starts_word(hay: &str, i: usize) -> bool {
    hay[..i]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::{AlertSource, AlertStatus};

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
        // Acronyms end before the capital that starts the next word.
        assert_eq!(words("OOMKilled"), "oom killed");
        assert_eq!(words("GPUOutOfMemory"), "gpu out of memory");
        assert_eq!(words("KubePodCrashLooping"), "kube pod crash looping");
        assert_eq!(
            words("etcdHighNumberOfLeaderChanges"),
            "etcd high number of leader changes"
        );
        // Where the split is ambiguous, both readings are kept: words apart, then acronyms
        // joined to the word before them and digits split from letters.
        assert_eq!(
            words("OpenAIRateLimited"),
            "open ai rate limited\nopenai rate limited"
        );
        assert_eq!(
            words("VectorDBRateLimited"),
            "vector db rate limited\nvectordb rate limited"
        );
        assert_eq!(
            words("HTTPServerErrors5xx"),
            "http server errors5xx\nhttp server errors 5xx"
        );
        assert_eq!(words("node42Down"), "node42 down\nnode 42 down");
        assert_eq!(words("LLMRateLimited"), "llm rate limited");
        // Outside ASCII the Unicode case rules apply (the ASCII fast path must agree).
        assert_eq!(words("DiskFüllstandHoch"), "disk füllstand hoch");
        assert_eq!(words("überLastÄrger"), "über last ärger");
        assert_eq!(words("ΣφάλμαΔίσκου"), "σφάλμα δίσκου");
        assert_eq!(words("ÜBERLastHoch"), "über last hoch");
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

    /// How an Alertmanager alert from a Prometheus rule reaches the classifier: the alertname is
    /// the title and a label, with the usual labels and the annotations every sender adds.
    fn prometheus_alert(name: &str) -> Alert {
        let mut a = alert(
            name,
            &[
                ("alertname", name),
                ("severity", "warning"),
                ("namespace", "prod"),
                ("job", "kube-state-metrics"),
            ],
        );
        a.annotations = [
            ("alertmanager_fingerprint", "5f1e2d3c4b5a6978"),
            (
                "runbook_url",
                "https://runbooks.prometheus-operator.dev/runbooks/x",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        a
    }

    /// Real alert names from common exporters and mixins, and from LLM/agent stacks, with the
    /// kind an on-call engineer would want under the shipped config. Names that fit none of the
    /// kinds stay unclassified rather than getting a playbook that does not apply (a database
    /// being down is not solved by switching the LLM provider).
    const REAL_ALERTS: &[(&str, &str)] = &[
        // node_exporter (node-mixin)
        ("NodeFilesystemSpaceFillingUp", "orchestration_failure"),
        ("NodeFilesystemAlmostOutOfSpace", "orchestration_failure"),
        ("NodeFilesystemAlmostOutOfFiles", "orchestration_failure"),
        ("NodeMemoryHighUtilization", "orchestration_failure"),
        ("NodeCPUHighUsage", "orchestration_failure"),
        ("NodeDiskIOSaturation", "orchestration_failure"),
        ("NodeClockNotSynchronising", UNCLASSIFIED),
        ("NodeNetworkReceiveErrs", UNCLASSIFIED),
        // kube-state-metrics / kubernetes-mixin
        ("KubePodCrashLooping", "orchestration_failure"),
        ("KubeDeploymentRolloutStuck", "orchestration_failure"),
        ("CPUThrottlingHigh", "orchestration_failure"),
        ("KubeCPUOvercommit", "orchestration_failure"),
        ("KubeMemoryOvercommit", "orchestration_failure"),
        ("KubePersistentVolumeFillingUp", "orchestration_failure"),
        ("KubeHpaMaxedOut", "orchestration_failure"),
        ("KubeQuotaExceeded", "configuration_boundary"),
        ("KubeClientCertificateExpiration", "configuration_boundary"),
        ("KubePodNotReady", UNCLASSIFIED),
        ("KubeJobFailed", UNCLASSIFIED),
        ("KubeContainerWaiting", UNCLASSIFIED),
        ("KubeAPIErrorBudgetBurn", UNCLASSIFIED),
        ("etcdHighNumberOfLeaderChanges", UNCLASSIFIED),
        // blackbox_exporter
        ("BlackboxProbeFailed", "tool_api_failure"),
        ("BlackboxProbeHttpFailure", "tool_api_failure"),
        (
            "BlackboxSslCertificateWillExpireSoon",
            "configuration_boundary",
        ),
        // prometheus / alertmanager self-monitoring
        ("PrometheusBadConfig", "configuration_boundary"),
        ("AlertmanagerFailedReload", "configuration_boundary"),
        ("Watchdog", UNCLASSIFIED),
        // postgres_exporter, redis_exporter
        ("PostgresqlTooManyConnections", "orchestration_failure"),
        ("PostgresqlDeadLocks", "orchestration_failure"),
        ("PostgresqlDown", UNCLASSIFIED),
        ("RedisOutOfMemory", "orchestration_failure"),
        ("RedisTooManyConnections", "orchestration_failure"),
        ("RedisDown", UNCLASSIFIED),
        // HTTP services
        ("HTTPServerErrors5xx", "tool_api_failure"),
        ("HighErrorRate", "tool_api_failure"),
        // LLM and agent stacks
        ("OpenAIRateLimited", "tool_api_failure"),
        ("AnthropicOverloaded", "tool_api_failure"),
        ("LLMRateLimited", "tool_api_failure"),
        ("VectorDBRateLimited", "tool_api_failure"),
        ("LLMRequestTimeouts", "tool_api_failure"),
        ("LLMProviderUnavailable", "tool_api_failure"),
        // Latency alone does not say whether the provider or our own load is at fault, and
        // the tool/API playbook switches providers automatically: left to a rule.
        ("EmbeddingLatencyHigh", UNCLASSIFIED),
        ("AgentToolCallFailures", "tool_api_failure"),
        ("LLMTokenBudgetExceeded", "configuration_boundary"),
        ("GPUOutOfMemory", "orchestration_failure"),
        ("InferenceQueueBacklog", "orchestration_failure"),
        ("AgentStuckInLoop", "orchestration_failure"),
        ("ModelOutputSchemaViolations", "model_output_failure"),
        ("HallucinationRateHigh", "model_output_failure"),
        ("LLMContentFilterTriggered", "model_output_failure"),
        ("LLMJSONParseErrors", "model_output_failure"),
        ("GuardrailViolationsHigh", "model_output_failure"),
    ];

    #[test]
    fn real_alert_names_get_the_kind_on_call_expects() {
        let shipped = crate::config::Config::builtin().classifier;
        // The same kinds without the shipped rules: what a chat message or a generic alert
        // that no rule names gets from its words alone.
        let keywords_only = Classifier {
            rules: vec![],
            keyword_index: Default::default(),
            ..shipped.clone()
        };
        let mut wrong = Vec::new();
        for &(name, kind) in REAL_ALERTS {
            for (how, c) in [("shipped", &shipped), ("keywords", &keywords_only)] {
                let got = c.classify(&prometheus_alert(name)).kind;
                if got != kind {
                    wrong.push(format!("{name} ({how}): {got}, expected {kind}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn references_take_no_part_in_keyword_matching() {
        let c = classifier(vec![]);
        // Every value here holds a keyword (429, 502, 503, oom, timeout) inside an id, a hash,
        // a URL, a timestamp or a number; none of it says what went wrong.
        let mut a = alert(
            "NodeClockNotSynchronising",
            &[("instance", "10.0.4.29:502")],
        );
        a.annotations = [
            ("alertmanager_fingerprint", "a502c3d0c1e2f429"),
            ("generatorURL", "http://prometheus:9090/graph?g0.expr=up%7Bcode%3D%22502%22%7D"),
            ("runbook_url", "https://runbooks.example.com/oom/timeout"),
            ("dashboardUID", "oom-503"),
            ("panelId", "429"),
            ("__alert_rule_uid__", "timeout"),
            ("value_string", "[ var='B' labels={code=502} value=503 ]"),
            (
                "description",
                "Offset 0.429 s since 2024-05-02T12:04:29.503Z, trace 3f2a9c1e-0b6d-4c5e-9a7f-502b1c4d8e90, see https://grafana.example.com/d/oom",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(c.classify(&a).kind, UNCLASSIFIED);
        // The words around them still count.
        a.description = Some("upstream timeout, see https://status.example.com".into());
        assert_eq!(c.classify(&a).kind, "tool_api_failure");
    }

    #[test]
    fn keywords_are_read_the_way_the_text_is() {
        let mut kinds = default_kinds();
        kinds.push(IncidentKind {
            id: "vector_db".into(),
            name: "Vector DB".into(),
            keywords: vec!["VectorDB-Down".into()],
            root_cause: RootCause::ExternalDependency,
        });
        kinds.push(IncidentKind {
            id: "openai".into(),
            name: "OpenAI".into(),
            keywords: vec!["openai".into()],
            root_cause: RootCause::ExternalDependency,
        });
        let c = Classifier {
            kinds,
            ..classifier(vec![])
        };
        assert_eq!(c.classify(&alert("VectorDBDown", &[])).kind, "vector_db");
        assert_eq!(c.classify(&alert("vector_db_down", &[])).kind, "vector_db");
        assert_eq!(c.classify(&alert("OpenAIDegraded", &[])).kind, "openai");
    }

    #[test]
    fn reference_keys_and_tokens() {
        for key in [
            "fingerprint",
            "alertmanager_fingerprint",
            "generatorURL",
            "runbook_url",
            "dashboardURL",
            "dashboardUID",
            "panelId",
            "__alert_rule_uid__",
            "__dashboardUid__",
            "silenceURL",
            "imageURL",
            "value_string",
            "trace_id",
            "pagerduty_key",
        ] {
            assert!(is_reference_key(key), "{key}");
        }
        for key in [
            "alertname",
            "summary",
            "description",
            "message",
            "service",
            "pod",
        ] {
            assert!(!is_reference_key(key), "{key}");
        }
        for token in [
            "https://example.com/502",
            "www.example.com",
            "WWW.Example.com/x",
            "mailto:oncall@example.com",
            "b9c3a5d0c1e2f3a4",
            "3f2a9c1e-0b6d-4c5e-9a7f-502b1c4d8e90",
            "sha256:4c502e9a1b7d3f08",
            "(0.429)",
            "1,502",
            "10.0.0.7:502",
            "12:04:29",
            "2024-05-02T10:04:29.502Z,",
        ] {
            assert!(is_reference_token(token), "{token}");
        }
        for token in [
            "502",
            "429:",
            "(503)",
            "HTTP",
            "deadbeef",
            "OOMKilled",
            "5xx",
            "",
        ] {
            assert!(!is_reference_token(token), "{token}");
        }
    }

    #[test]
    fn words_match_on_boundaries() {
        assert!(contains_word("pod oom killed", "oom"));
        assert!(!contains_word("meeting room", "oom"));
        assert!(contains_word("cpu throttling high", "cpu throttl"));
        assert!(!contains_word("anything", ""));
    }
}
