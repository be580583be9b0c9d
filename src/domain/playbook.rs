//! Playbooks: the recommended actions for a kind of incident, and how each action runs.
//! These are the config shapes; running them is the remediation module's job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::promql::QueryTemplate;

/// A playbook from config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    pub id: String,
    pub title: String,
    /// Incident kinds this playbook is recommended for (rules may also name it directly).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Resolve the incident at once when the monitoring system reports the alert resolved
    /// (even when acknowledged): a quiet period of zero that nobody can hold open.
    #[serde(default)]
    pub auto_resolve: bool,
    /// Overrides the severity's and the engine's `resolve_after_clear_seconds` (0: never).
    #[serde(default)]
    pub resolve_after_clear_seconds: Option<u64>,
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
    /// The metric the card charts over the last 30 minutes (PromQL, templated like a
    /// Prometheus verification); without it, the alert's own expression (`g0.expr` of its
    /// generator URL) is charted. Needs `[prometheus]`.
    #[serde(default)]
    pub chart_query: Option<QueryTemplate>,
    /// The line drawn on that chart (for the alert's expression, its trailing `> N`).
    #[serde(default)]
    pub chart_threshold: Option<f64>,
    /// Root-cause evidence queries, run when an incident of this playbook opens.
    #[serde(default)]
    pub evidence: Vec<EvidenceSpec>,
}

/// A root-cause evidence query (`[[playbooks.evidence]]`): its value goes on the timeline and
/// into the report; when it meets its threshold it is conclusive and suggests `root_cause`,
/// with `reason`, instead of the keywords.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceSpec {
    /// What it measures, as people say it (`429 rate`).
    pub name: String,
    /// PromQL, templated like a verification query.
    pub query: QueryTemplate,
    #[serde(default)]
    pub above: Option<f64>,
    #[serde(default)]
    pub below: Option<f64>,
    /// The category it points to when conclusive.
    #[serde(default)]
    pub root_cause: Option<super::classify::RootCause>,
    /// Why, in a few words (`rate limit`).
    #[serde(default)]
    pub reason: Option<String>,
}

impl EvidenceSpec {
    pub fn threshold(&self) -> Option<Threshold> {
        self.below
            .map(Threshold::Below)
            .or(self.above.map(Threshold::Above))
    }
}

/// One recommended action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// Stable id within the playbook (`restart`), used in buttons and commands.
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// May run without a human where the severity's approval need allows it (P2/P3 by default).
    #[serde(default)]
    pub auto: bool,
    /// Proposed only when this holds for the incident's labels and annotations (when it opens);
    /// otherwise the action is not on the card at all. Parsed when the config is loaded.
    #[serde(default)]
    pub when: Option<Condition>,
    /// Template values (`{labels.x}`) must match this pattern, else the action is refused.
    #[serde(default)]
    pub allowed_pattern: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    pub run: ExecutorSpec,
    /// How to tell that it worked; without it, success of the run is all we know.
    #[serde(default)]
    pub verify: Option<VerifySpec>,
    /// The id of the action (in the same playbook) that undoes this one when verification fails.
    #[serde(default)]
    pub rollback: Option<String>,
}

fn default_timeout() -> u64 {
    60
}

/// A check after an action, retried every `interval_seconds` until it passes or
/// `within_seconds` have passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifySpec {
    /// An HTTP GET that must answer `expect_status` (and contain `body_contains`, if set).
    Http {
        url: String,
        #[serde(default = "default_expect")]
        expect_status: u16,
        #[serde(default)]
        body_contains: Option<String>,
        #[serde(default = "default_within")]
        within_seconds: u64,
        #[serde(default = "default_interval")]
        interval_seconds: u64,
    },
    /// A command (argv, no shell) that must exit with `expect_exit`.
    Command {
        argv: Vec<String>,
        #[serde(default)]
        expect_exit: i32,
        #[serde(default = "default_within")]
        within_seconds: u64,
        #[serde(default = "default_interval")]
        interval_seconds: u64,
    },
    /// The monitoring system reports the alert resolved within the time.
    AlertResolves {
        #[serde(default = "default_within")]
        within_seconds: u64,
    },
    /// A PromQL instant query against `[prometheus]` whose value must stay below (or above) a
    /// threshold for `for_seconds`, checked every `interval_seconds` until `within_seconds`.
    /// Every series the query returns must satisfy the condition; no data does not.
    Prometheus {
        query: QueryTemplate,
        #[serde(default)]
        below: Option<f64>,
        #[serde(default)]
        above: Option<f64>,
        #[serde(default)]
        for_seconds: u64,
        #[serde(default = "default_within")]
        within_seconds: u64,
        #[serde(default = "default_interval")]
        interval_seconds: u64,
    },
}

/// The condition a Prometheus verification checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Below(f64),
    Above(f64),
}

impl Threshold {
    /// Strictly below or above: a value at the threshold does not pass.
    pub fn holds(self, value: f64) -> bool {
        match self {
            Threshold::Below(t) => value < t,
            Threshold::Above(t) => value > t,
        }
    }

    pub fn value(self) -> f64 {
        match self {
            Threshold::Below(t) | Threshold::Above(t) => t,
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Below(t) => write!(f, "< {t}"),
            Threshold::Above(t) => write!(f, "> {t}"),
        }
    }
}

fn default_within() -> u64 {
    120
}
fn default_interval() -> u64 {
    5
}

impl VerifySpec {
    pub fn within_seconds(&self) -> u64 {
        match self {
            VerifySpec::Http { within_seconds, .. }
            | VerifySpec::Command { within_seconds, .. }
            | VerifySpec::AlertResolves { within_seconds }
            | VerifySpec::Prometheus { within_seconds, .. } => *within_seconds,
        }
    }

    /// The threshold of a Prometheus verification (`below` wins if, wrongly, both are set;
    /// the config refuses that).
    pub fn threshold(&self) -> Option<Threshold> {
        match self {
            VerifySpec::Prometheus { below, above, .. } => {
                below.map(Threshold::Below).or(above.map(Threshold::Above))
            }
            _ => None,
        }
    }

    pub fn summary(&self) -> String {
        match self {
            VerifySpec::Http {
                url, expect_status, ..
            } => format!("GET {url} answers {expect_status}"),
            VerifySpec::Command {
                argv, expect_exit, ..
            } => format!("`{}` exits {expect_exit}", argv.join(" ")),
            VerifySpec::AlertResolves { within_seconds } => {
                format!("the alert resolves within {within_seconds} s")
            }
            VerifySpec::Prometheus {
                query,
                for_seconds,
                within_seconds,
                ..
            } => prometheus_summary(
                query.source(),
                self.threshold(),
                *for_seconds,
                *within_seconds,
            ),
        }
    }
}

/// One line for a Prometheus verification: `` `QUERY` < 0.01 for 60 s (within 300 s)``.
pub fn prometheus_summary(
    query: &str,
    threshold: Option<Threshold>,
    for_seconds: u64,
    within_seconds: u64,
) -> String {
    let cond = threshold.map_or_else(|| "(no threshold)".into(), |t| t.to_string());
    let held = if for_seconds > 0 {
        format!(" for {for_seconds} s")
    } else {
        String::new()
    };
    format!("`{query}` {cond}{held} (within {within_seconds} s)")
}

/// The pattern template values must match when an action does not set its own.
pub const DEFAULT_ALLOWED_PATTERN: &str = "^[A-Za-z0-9._:/=-]{1,128}$";

/// How an action runs. Never through a shell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecutorSpec {
    /// A program and its arguments; `{labels.name}` placeholders expand element by element.
    Command { argv: Vec<String> },
    /// An HTTP request.
    Http {
        #[serde(default = "default_method")]
        method: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: Option<serde_json::Value>,
        #[serde(default = "default_expect")]
        expect_status: u16,
    },
    /// `kubectl rollout restart|undo` or `kubectl scale` of a deployment.
    Kubectl {
        verb: KubectlVerb,
        deployment: String,
        namespace: String,
        #[serde(default)]
        replicas: Option<u32>,
    },
}

fn default_method() -> String {
    "POST".into()
}

fn default_expect() -> u16 {
    200
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KubectlVerb {
    RolloutRestart,
    RolloutUndo,
    Scale,
}

impl ExecutorSpec {
    pub fn type_name(&self) -> &'static str {
        match self {
            ExecutorSpec::Command { .. } => "command",
            ExecutorSpec::Http { .. } => "http",
            ExecutorSpec::Kubectl { .. } => "kubectl",
        }
    }

    /// A one-line preview of what would run, before templating.
    pub fn summary(&self) -> String {
        match self {
            ExecutorSpec::Command { argv } => argv.join(" "),
            ExecutorSpec::Http { method, url, .. } => format!("{method} {url}"),
            ExecutorSpec::Kubectl {
                verb,
                deployment,
                namespace,
                replicas,
            } => match verb {
                KubectlVerb::RolloutRestart => {
                    format!("kubectl -n {namespace} rollout restart deployment/{deployment}")
                }
                KubectlVerb::RolloutUndo => {
                    format!("kubectl -n {namespace} rollout undo deployment/{deployment}")
                }
                KubectlVerb::Scale => format!(
                    "kubectl -n {namespace} scale deployment/{deployment} --replicas={}",
                    replicas.unwrap_or(1)
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_executor_and_rejects_unknown_fields() {
        let pb: Playbook = toml::from_str(
            r#"
            id = "api"
            title = "API"
            kinds = ["tool_api_failure"]
            [[actions]]
            id = "restart"
            title = "Restart"
            run = { type = "kubectl", verb = "rollout_restart", deployment = "{labels.deployment}", namespace = "prod" }
            [[actions]]
            id = "fallback"
            title = "Fallback"
            auto = true
            run = { type = "http", url = "http://x/switch", body = { to = "backup" } }
            [[actions]]
            id = "cmd"
            title = "Cmd"
            run = { type = "command", argv = ["echo", "{labels.service}"] }
            "#,
        )
        .unwrap();
        assert_eq!(pb.actions.len(), 3);
        assert_eq!(
            pb.actions[0].run.summary(),
            "kubectl -n prod rollout restart deployment/{labels.deployment}"
        );
        assert_eq!(pb.actions[1].run.summary(), "POST http://x/switch");
        assert_eq!(pb.actions[1].timeout_seconds, 60);
        assert!(pb.actions[1].auto);
        assert_eq!(pb.actions[2].run.type_name(), "command");

        let err = toml::from_str::<ExecutorSpec>(
            r#"type = "command"
argv = ["x"]
shell = true"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("shell"), "{err}");
        let err = toml::from_str::<ExecutorSpec>(r#"type = "bash""#).unwrap_err();
        assert!(err.to_string().contains("bash"), "{err}");
    }
}
