//! TOML → validated [`Config`]. Unknown keys and bad values are errors that name their key path;
//! semantic problems are all collected so `check-config` can print every one at once. Secrets
//! are read from environment variables named in the file, never from the file itself.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::domain::alert::HumanMessages;
use crate::domain::classify::{default_kinds, Classifier, IncidentKind, Matcher, Rule};
use crate::domain::playbook::{
    ActionSpec, ExecutorSpec, KubectlVerb, Playbook, VerifySpec, DEFAULT_ALLOWED_PATTERN,
};
use crate::domain::policy::ApprovalPolicy;
use crate::domain::severity::{ApprovalNeed, Severity, Targets, ALL};

/// The annotated example config, also the built-in default when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../config/incidentd.toml");

/// A secret value (token). Never printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One problem in the config, with the key path it is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// A connection that has not sent a request's complete headers this long after it opened
    /// (or after its previous response) is closed (slowloris).
    pub header_read_timeout: std::time::Duration,
    /// An idle keep-alive connection is closed after this long.
    pub idle_timeout: std::time::Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// sled (the default: one process, one disk) or PostgreSQL (replicas, docs/replicas.md).
    pub backend: StoreBackend,
    pub path: PathBuf,
    /// Bound of sled's page cache, MiB.
    pub cache_mb: u64,
    /// The longest a request waits for its write to be durable before it fails with 503.
    pub write_timeout: std::time::Duration,
    /// How long a leader's lease is valid without a renewal (PostgreSQL replicas).
    pub lease: std::time::Duration,
}

/// Where the store lives.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// The embedded sled store at `[store] path`.
    Sled,
    /// PostgreSQL at the URL read from the variable `[store] url_env` names.
    Postgres { url: Secret },
}

/// Optional bearer tokens, one per webhook endpoint.
#[derive(Debug, Clone, Default)]
pub struct WebhookAuth {
    pub alertmanager: Option<Secret>,
    pub grafana: Option<Secret>,
    pub generic: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Repeats within this window after a card edit only mark the card dirty; one edit follows.
    #[serde(default = "default_coalesce")]
    pub card_coalesce_seconds: u64,
    /// Longer alert descriptions are cut on the card (the full text stays in the store).
    #[serde(default = "default_max_description")]
    pub max_description_chars: usize,
    /// Severity for alerts that no rule and no `severity` label classify.
    #[serde(default = "default_severity")]
    pub default_severity: Severity,
    /// A new incident whose fingerprint was resolved within this many days is a recurrence.
    #[serde(default = "default_recurrence_days")]
    pub recurrence_days: u32,
    /// Once the source reports the alert resolved, the incident resolves after it stayed clear
    /// this long (unless someone acknowledged it). 0: never; a person resolves it.
    #[serde(default = "default_resolve_after_clear")]
    pub resolve_after_clear_seconds: u64,
    /// A re-fire within this long after incidentd resolved an incident itself (on its clear or
    /// by a verified action) reopens that incident instead of opening a new one. 0: never.
    #[serde(default = "default_flap_window")]
    pub flap_window_seconds: u64,
    /// How many times an automatic action runs on its own for one incident at most: its first
    /// run, then once per reopen by a re-fire within the flap window after it had fixed the
    /// incident. 1: never again on its own.
    #[serde(default = "default_max_auto_runs")]
    pub max_auto_runs: u32,
    /// Alerts whose source does not group them (everything but Alertmanager's `groupLabels`)
    /// are grouped by these labels: one incident per group. Only alerts with the first label
    /// are grouped; the others are used where present.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// The storm guard: when more than this many incidents from one source open within
    /// `storm_window_seconds`, new incidents' automatic actions wait for approval. 0: off.
    #[serde(default = "default_storm_new_incidents")]
    pub storm_new_incidents: u32,
    #[serde(default = "default_storm_window")]
    pub storm_window_seconds: u64,
}

fn default_storm_new_incidents() -> u32 {
    20
}

fn default_storm_window() -> u64 {
    60
}

fn default_group_by() -> Vec<String> {
    ["alertname", "service", "namespace", "cluster"]
        .map(String::from)
        .to_vec()
}

fn default_resolve_after_clear() -> u64 {
    300
}

fn default_flap_window() -> u64 {
    600
}

fn default_max_auto_runs() -> u32 {
    2
}

fn default_recurrence_days() -> u32 {
    30
}

fn default_coalesce() -> u64 {
    5
}
fn default_max_description() -> usize {
    1500
}
fn default_severity() -> Severity {
    Severity::P2
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            card_coalesce_seconds: default_coalesce(),
            max_description_chars: default_max_description(),
            default_severity: default_severity(),
            recurrence_days: default_recurrence_days(),
            resolve_after_clear_seconds: default_resolve_after_clear(),
            flap_window_seconds: default_flap_window(),
            max_auto_runs: default_max_auto_runs(),
            group_by: default_group_by(),
            storm_new_incidents: default_storm_new_incidents(),
            storm_window_seconds: default_storm_window(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub webhooks: WebhookAuth,
    pub engine: EngineConfig,
    pub targets: [Targets; 4],
    pub classifier: Classifier,
    pub playbooks: Vec<Playbook>,
    pub policy: [ApprovalPolicy; 4],
    /// Present when `[slack]` is in the file: Slack is enabled.
    pub slack: Option<SlackConfig>,
    /// Present when `[discord]` is in the file: Discord is enabled.
    pub discord: Option<DiscordConfig>,
    pub console: ConsoleConfig,
    pub escalation: EscalationConfig,
    pub chat: ChatConfig,
    pub api: ApiConfig,
    /// `[followups]`: due dates and reminders of post-incident follow-ups.
    pub followups: crate::domain::followup::FollowUpConfig,
    /// Present when `[prometheus]` is in the file: evidence queries and Prometheus
    /// verifications are possible.
    pub prometheus: Option<PrometheusConfig>,
}

/// `[prometheus]`: where evidence and verification queries go.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// Base URL (`http://prometheus:9090`, or with a path prefix).
    pub url: String,
    /// Bearer token from the environment variable `token_env`, if set.
    pub token: Option<Secret>,
    /// Longest wait for one query's answer.
    pub timeout: std::time::Duration,
}

/// `[api]`: who may act on incidents through the REST API.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// `[[api.tokens]]`: each bearer token names its holder, who is the actor of what the
    /// token does (the policy applies to the holder as to a chat user).
    pub tokens: Vec<ApiToken>,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    /// `alice` (the console user alice), `console:alice`, `slack:U123` or `discord:1234`.
    pub holder: String,
    pub token: Secret,
}

/// `[chat]`: how the alert channels of every surface (Slack, Discord, console) read messages.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// What a person's message may do (bots, apps and webhooks are always read as alerts):
    /// `alerts_and_mentions` (default), `all` or `ignore`.
    #[serde(default)]
    pub human_messages: HumanMessages,
}

/// `[escalation]`: what happens when targets are missed or approvals go unanswered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// Who is mentioned in the thread on escalation (policy-style entries: `slack:U1`,
    /// `slack-group:S1`, `discord:42`, `discord-role:7`, `console:alice`).
    #[serde(default)]
    pub oncall: Vec<String>,
    /// Raise the severity one step (never above P0) on escalation.
    #[serde(default)]
    pub raise_severity: bool,
    /// Escalate when an incident is not acknowledged within its severity's detection target.
    #[serde(default = "yes")]
    pub on_missed_ack: bool,
    /// Escalate when an incident is not resolved within its severity's repair target.
    #[serde(default = "yes")]
    pub on_missed_repair: bool,
    /// Escalate when recommended actions wait for approval longer than the policy's expiry.
    #[serde(default = "yes")]
    pub on_approval_expiry: bool,
    /// Notify an external pager on escalation (an `http` action, e.g. PagerDuty Events v2).
    #[serde(default)]
    pub pager: Option<ActionSpec>,
}

fn yes() -> bool {
    true
}

impl Default for EscalationConfig {
    fn default() -> Self {
        EscalationConfig {
            oncall: vec![],
            raise_severity: false,
            on_missed_ack: true,
            on_missed_repair: true,
            on_approval_expiry: true,
            pager: None,
        }
    }
}

/// How the Slack app connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlackMode {
    /// Socket Mode (app-level token, no public URL needed).
    Socket,
    /// Events API over HTTP (`/slack/events`, `/slack/interactions`, `/slack/commands`).
    Http,
}

/// `[slack]`.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub mode: SlackMode,
    /// Web API base, `https://slack.com/api` unless pointed at a staging or test server.
    pub api_url: String,
    /// Channel ids whose messages are read as alerts.
    pub alert_channels: Vec<String>,
    /// Where incidents born from webhooks get their thread.
    pub incident_channel: Option<String>,
    /// `SLACK_BOT_TOKEN` (xoxb-…).
    pub bot_token: Secret,
    /// `SLACK_APP_TOKEN` (xapp-…), needed in socket mode.
    pub app_token: Option<Secret>,
    /// `SLACK_SIGNING_SECRET`, needed in http mode.
    pub signing_secret: Option<Secret>,
}

/// `[discord]`.
#[derive(Debug, Clone)]
pub struct DiscordConfig {
    /// REST base without `/api/v10`, `https://discord.com` unless pointed elsewhere.
    pub api_url: String,
    pub guild_ids: Vec<String>,
    pub alert_channels: Vec<String>,
    pub incident_channel: Option<String>,
    /// `DISCORD_TOKEN`.
    pub token: Secret,
    /// `DISCORD_PUBLIC_KEY` (hex), enables `POST /discord/interactions` when set.
    pub public_key: Option<String>,
}

/// `[console]`: the embedded web console.
#[derive(Debug, Clone, Default)]
pub struct ConsoleConfig {
    /// Console users: name and secret login token (from the environment).
    pub users: Vec<ConsoleUser>,
}

#[derive(Debug, Clone)]
pub struct ConsoleUser {
    pub name: String,
    pub token: Secret,
}

impl Config {
    pub fn targets(&self, s: Severity) -> Targets {
        self.targets[s.index()]
    }
    pub fn policy(&self, s: Severity) -> &ApprovalPolicy {
        &self.policy[s.index()]
    }
    pub fn playbook(&self, id: &str) -> Option<&Playbook> {
        self.playbooks.iter().find(|p| p.id == id)
    }

    /// How long an incident's alert must stay clear before it resolves: `Some(0)` at once
    /// (playbook `auto_resolve`), `None` never. The playbook's setting wins over the severity's,
    /// which wins over the engine's.
    pub fn resolve_after_clear(&self, playbook: Option<&str>, s: Severity) -> Option<u64> {
        let pb = playbook.and_then(|p| self.playbook(p));
        if pb.is_some_and(|p| p.auto_resolve) {
            return Some(0);
        }
        let secs = pb
            .and_then(|p| p.resolve_after_clear_seconds)
            .or(self.targets(s).resolve_after_clear_seconds)
            .unwrap_or(self.engine.resolve_after_clear_seconds);
        (secs > 0).then_some(secs)
    }

    /// The built-in default (the shipped example file), with no environment.
    pub fn builtin() -> Config {
        Config::from_toml(DEFAULT_CONFIG, &|_| None).expect("the shipped config is valid")
    }

    /// Loads a file, then applies `INCIDENTD_LISTEN` / `INCIDENTD_STORE_PATH` from the process
    /// environment. `None` means the built-in default.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                ConfigErrors(vec![ConfigError {
                    path: String::new(),
                    message: format!("cannot read {}: {e}", p.display()),
                }])
            })?,
            None => DEFAULT_CONFIG.to_string(),
        };
        Config::from_toml(&text, &|k| std::env::var(k).ok())
    }

    /// Parses and validates `text`; `env` looks up environment variables (injected for tests).
    /// Every problem is reported: when a section does not parse, the others are still parsed
    /// and validated (the broken one counts as absent for them).
    pub fn from_toml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let de = toml::Deserializer::new(text);
        let first = match serde_path_to_error::deserialize::<_, RawConfig>(de) {
            Ok(raw) => return raw.validate(env),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                ConfigError {
                    path: if path == "." { String::new() } else { path },
                    message: inner.message().to_string()
                        + &inner
                            .span()
                            .map(|s| format!(" (at {})", line_col(text, s.start)))
                            .unwrap_or_default(),
                }
            }
        };
        let mut errs = vec![first.clone()];
        // A syntax error leaves nothing to read further.
        let Ok(table) = text.parse::<toml::Table>() else {
            return Err(ConfigErrors(errs));
        };
        let (raw, failed, more) = RawConfig::by_section(table);
        let section_of =
            |path: &str| -> String { path.split(['.', '[']).next().unwrap_or("").to_string() };
        let first_section = section_of(&first.path);
        errs.extend(
            more.into_iter()
                .filter(|e| section_of(&e.path) != first_section),
        );
        if let Err(ConfigErrors(semantic)) = raw.validate(env) {
            errs.extend(semantic.into_iter().filter(|e| {
                let s = section_of(&e.path);
                s != first_section && !failed.contains(&s)
            }));
        }
        Err(ConfigErrors(errs))
    }
}

impl RawConfig {
    /// Each top-level section parsed on its own: the config with every section that parsed
    /// (the others at their defaults), the sections that did not, and their errors.
    fn by_section(table: toml::Table) -> (RawConfig, Vec<String>, Vec<ConfigError>) {
        fn section<T: serde::de::DeserializeOwned>(
            key: &str,
            value: toml::Value,
            errs: &mut Vec<ConfigError>,
        ) -> Option<T> {
            serde_path_to_error::deserialize(value)
                .map_err(|e| {
                    let path = e.path().to_string();
                    errs.push(ConfigError {
                        path: if path == "." {
                            key.to_string()
                        } else if path.starts_with('[') {
                            format!("{key}{path}")
                        } else {
                            format!("{key}.{path}")
                        },
                        message: e.into_inner().message().to_string(),
                    });
                })
                .ok()
        }
        let mut raw = RawConfig::default();
        let mut errs = Vec::new();
        let mut failed = Vec::new();
        for (key, value) in table {
            let before = errs.len();
            let e = &mut errs;
            match key.as_str() {
                "server" => raw.server = section(&key, value, e).unwrap_or_default(),
                "store" => raw.store = section(&key, value, e).unwrap_or_default(),
                "webhooks" => raw.webhooks = section(&key, value, e).unwrap_or_default(),
                "engine" => raw.engine = section(&key, value, e).unwrap_or_default(),
                "severity" => raw.severity = section(&key, value, e).unwrap_or_default(),
                "kinds" => raw.kinds = section(&key, value, e).unwrap_or_default(),
                "rules" => raw.rules = section(&key, value, e).unwrap_or_default(),
                "playbooks" => raw.playbooks = section(&key, value, e).unwrap_or_default(),
                "policy" => raw.policy = section(&key, value, e).unwrap_or_default(),
                "slack" => raw.slack = section(&key, value, e),
                "discord" => raw.discord = section(&key, value, e),
                "console" => raw.console = section(&key, value, e).unwrap_or_default(),
                "escalation" => raw.escalation = section(&key, value, e).unwrap_or_default(),
                "chat" => raw.chat = section(&key, value, e).unwrap_or_default(),
                "api" => raw.api = section(&key, value, e).unwrap_or_default(),
                "followups" => raw.followups = section(&key, value, e).unwrap_or_default(),
                "prometheus" => raw.prometheus = section(&key, value, e),
                other => e.push(ConfigError {
                    path: other.to_string(),
                    message: format!("unknown section `{other}`"),
                }),
            }
            if errs.len() > before {
                failed.push(key);
            }
        }
        (raw, failed, errs)
    }
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {col}")
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    webhooks: RawWebhooks,
    #[serde(default)]
    engine: EngineConfig,
    #[serde(default)]
    severity: BTreeMap<String, RawTargets>,
    #[serde(default)]
    kinds: Vec<IncidentKind>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    playbooks: Vec<Playbook>,
    #[serde(default)]
    policy: BTreeMap<String, RawPolicy>,
    slack: Option<RawSlack>,
    discord: Option<RawDiscord>,
    #[serde(default)]
    console: RawConsole,
    #[serde(default)]
    escalation: EscalationConfig,
    #[serde(default)]
    chat: ChatConfig,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    followups: crate::domain::followup::FollowUpConfig,
    prometheus: Option<RawPrometheus>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    url: String,
    /// Environment variable holding a bearer token; unset: no `Authorization` header.
    token_env: Option<String>,
    #[serde(default = "default_prometheus_timeout")]
    timeout_seconds: u64,
}

fn default_prometheus_timeout() -> u64 {
    5
}

/// `[prometheus]`: an http(s) URL, a bounded timeout, the token's variable set.
fn validate_prometheus(
    raw: Option<&RawPrometheus>,
    env: &dyn Fn(&str) -> Option<String>,
    err: &mut dyn FnMut(String, String),
) -> Option<PrometheusConfig> {
    let raw = raw?;
    let url = raw.url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['?', '#']) {
        err(
            "prometheus.url".into(),
            format!("{url:?} is not an http(s) base URL (no query or fragment)"),
        );
    }
    if !(1..=300).contains(&raw.timeout_seconds) {
        err(
            "prometheus.timeout_seconds".into(),
            format!("{} is out of range: give 1 to 300", raw.timeout_seconds),
        );
    }
    let token = match raw.token_env.as_deref() {
        None => None,
        Some(var) => match env(var) {
            Some(v) if !v.trim().is_empty() => Some(Secret(v)),
            _ => {
                err(
                    "prometheus.token_env".into(),
                    format!("environment variable {var} is not set"),
                );
                None
            }
        },
    };
    Some(PrometheusConfig {
        url: url.to_string(),
        token,
        timeout: std::time::Duration::from_secs(raw.timeout_seconds),
    })
}

/// A Prometheus verification: one threshold, a hold shorter than the time allowed, a
/// `[prometheus]` to ask.
fn validate_prometheus_verify(
    v: &VerifySpec,
    at: &str,
    configured: bool,
    err: &mut dyn FnMut(String, String),
) {
    let VerifySpec::Prometheus {
        below,
        above,
        for_seconds,
        within_seconds,
        interval_seconds,
        ..
    } = v
    else {
        return;
    };
    if !configured {
        err(
            format!("{at}.verify"),
            "a prometheus verification needs a [prometheus] section (url)".into(),
        );
    }
    match (below, above) {
        (Some(_), Some(_)) | (None, None) => err(
            format!("{at}.verify"),
            "give exactly one of below or above".into(),
        ),
        (Some(t), None) | (None, Some(t)) if !t.is_finite() => err(
            format!(
                "{at}.verify.{}",
                if below.is_some() { "below" } else { "above" }
            ),
            "must be a finite number".into(),
        ),
        _ => {}
    }
    if *interval_seconds == 0 {
        err(
            format!("{at}.verify.interval_seconds"),
            "must be at least 1".into(),
        );
    }
    if for_seconds >= within_seconds {
        err(
            format!("{at}.verify.for_seconds"),
            format!("{for_seconds} s cannot be held within {within_seconds} s: make within_seconds longer"),
        );
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default)]
    tokens: Vec<RawApiToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiToken {
    /// Who acts with this token.
    holder: String,
    /// Environment variable holding the token.
    token_env: String,
}

/// A policy section: what it leaves out keeps the severity's default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    approvers: Option<Vec<String>>,
    min_approvals: Option<u32>,
    allow_proposer: Option<bool>,
    expiry_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    #[serde(default = "socket")]
    mode: SlackMode,
    #[serde(default = "slack_api")]
    api_url: String,
    #[serde(default)]
    alert_channels: Vec<String>,
    incident_channel: Option<String>,
}

fn socket() -> SlackMode {
    SlackMode::Socket
}
fn slack_api() -> String {
    "https://slack.com/api".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscord {
    #[serde(default = "discord_api")]
    api_url: String,
    #[serde(default)]
    guild_ids: Vec<String>,
    #[serde(default)]
    alert_channels: Vec<String>,
    incident_channel: Option<String>,
}

fn discord_api() -> String {
    "https://discord.com".into()
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    #[serde(default)]
    users: Vec<RawConsoleUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsoleUser {
    name: String,
    /// Environment variable holding this user's login token.
    token_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    #[serde(default = "default_header_read_timeout")]
    header_read_timeout_seconds: u64,
    #[serde(default = "default_idle_timeout")]
    idle_timeout_seconds: u64,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
}

fn default_header_read_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_max_connections() -> usize {
    512
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> usize {
    4 * 1024 * 1024
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            header_read_timeout_seconds: default_header_read_timeout(),
            idle_timeout_seconds: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default = "default_backend")]
    backend: String,
    #[serde(default = "default_url_env")]
    url_env: String,
    #[serde(default = "default_lease")]
    lease_seconds: u64,
    #[serde(default = "default_store")]
    path: PathBuf,
    #[serde(default = "default_cache_mb")]
    cache_mb: u64,
    #[serde(default = "default_write_timeout")]
    write_timeout_seconds: u64,
}

fn default_write_timeout() -> u64 {
    10
}

fn default_backend() -> String {
    "sled".into()
}

fn default_url_env() -> String {
    "INCIDENTD_DATABASE_URL".into()
}

fn default_lease() -> u64 {
    5
}

fn default_cache_mb() -> u64 {
    crate::store::DEFAULT_CACHE_MB
}

fn default_store() -> PathBuf {
    "data/incidentd.sled".into()
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            backend: default_backend(),
            url_env: default_url_env(),
            lease_seconds: default_lease(),
            path: default_store(),
            cache_mb: default_cache_mb(),
            write_timeout_seconds: default_write_timeout(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    #[serde(default)]
    alertmanager: RawEndpoint,
    #[serde(default)]
    grafana: RawEndpoint,
    #[serde(default)]
    generic: RawEndpoint,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    /// Name of the environment variable holding the bearer token; unset means no auth.
    token_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    detect_seconds: Option<u64>,
    repair_seconds: Option<u64>,
    approval: Option<ApprovalNeed>,
    resolve_after_clear_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    /// label → exact value (case-insensitive)
    #[serde(default, rename = "match")]
    match_labels: BTreeMap<String, String>,
    /// label → regex over the whole value
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    /// regex over title, description, labels and annotations
    text_re: Option<String>,
    severity: Option<Severity>,
    kind: Option<String>,
    playbook: Option<String>,
}

impl RawConfig {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let mut errs = Vec::new();
        let mut err = |path: String, message: String| errs.push(ConfigError { path, message });

        let listen_text = env("INCIDENTD_LISTEN").unwrap_or(self.server.listen);
        let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|e| {
            err(
                "server.listen".into(),
                format!("{listen_text:?} is not an address:port ({e})"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        if self.server.max_body_bytes < 1024 {
            err(
                "server.max_body_bytes".into(),
                "must be at least 1024".into(),
            );
        }
        for (key, v, max) in [
            (
                "server.header_read_timeout_seconds",
                self.server.header_read_timeout_seconds,
                3600,
            ),
            (
                "server.idle_timeout_seconds",
                self.server.idle_timeout_seconds,
                86_400,
            ),
            (
                "store.write_timeout_seconds",
                self.store.write_timeout_seconds,
                3600,
            ),
        ] {
            if !(1..=max).contains(&v) {
                err(key.into(), format!("{v} is out of range: give 1 to {max}"));
            }
        }
        if !(1..=1_000_000).contains(&self.server.max_connections) {
            err(
                "server.max_connections".into(),
                format!(
                    "{} is out of range: give 1 to 1000000",
                    self.server.max_connections
                ),
            );
        }
        let store_path = env("INCIDENTD_STORE_PATH")
            .map(PathBuf::from)
            .unwrap_or(self.store.path);
        let backend = match self.store.backend.as_str() {
            "sled" => StoreBackend::Sled,
            "postgres" => match env(&self.store.url_env) {
                Some(url) if !url.is_empty() => StoreBackend::Postgres {
                    url: Secret::new(url),
                },
                _ => {
                    err(
                        "store.url_env".into(),
                        format!(
                            "environment variable {} is not set (the PostgreSQL connection URL)",
                            self.store.url_env
                        ),
                    );
                    StoreBackend::Sled
                }
            },
            other => {
                err(
                    "store.backend".into(),
                    format!("{other:?} is not a store backend: give \"sled\" or \"postgres\""),
                );
                StoreBackend::Sled
            }
        };
        if !(2..=300).contains(&self.store.lease_seconds) {
            err(
                "store.lease_seconds".into(),
                format!(
                    "{} is out of range: give 2 to 300",
                    self.store.lease_seconds
                ),
            );
        }
        if !(8..=65536).contains(&self.store.cache_mb) {
            err(
                "store.cache_mb".into(),
                format!(
                    "{} is out of range: give 8 to 65536 (MiB)",
                    self.store.cache_mb
                ),
            );
        }

        let mut secret = |name: &str, ep: &RawEndpoint| -> Option<Secret> {
            let var = ep.token_env.as_deref()?;
            match env(var) {
                Some(v) if !v.is_empty() => Some(Secret(v)),
                _ => {
                    err(
                        format!("webhooks.{name}.token_env"),
                        format!("environment variable {var} is not set (the endpoint would be open; unset token_env to allow that)"),
                    );
                    None
                }
            }
        };
        let webhooks = WebhookAuth {
            alertmanager: secret("alertmanager", &self.webhooks.alertmanager),
            grafana: secret("grafana", &self.webhooks.grafana),
            generic: secret("generic", &self.webhooks.generic),
        };
        let prometheus = validate_prometheus(self.prometheus.as_ref(), env, &mut err);

        if self.engine.max_description_chars < 80 {
            err(
                "engine.max_description_chars".into(),
                "must be at least 80".into(),
            );
        }

        let mut targets = ALL.map(|s| s.default_targets());
        for (key, t) in &self.severity {
            match key.parse::<Severity>() {
                Ok(s) => {
                    let cur = &mut targets[s.index()];
                    if let Some(d) = t.detect_seconds {
                        cur.detect_seconds = d;
                    }
                    if let Some(r) = t.repair_seconds {
                        cur.repair_seconds = r;
                    }
                    if let Some(a) = t.approval {
                        cur.approval = a;
                    }
                    if let Some(r) = t.resolve_after_clear_seconds {
                        cur.resolve_after_clear_seconds = Some(r);
                    }
                    if cur.detect_seconds == 0 || cur.repair_seconds == 0 {
                        err(
                            format!("severity.{key}"),
                            "targets must be greater than 0".into(),
                        );
                    }
                }
                Err(e) => err(format!("severity.{key}"), e),
            }
        }
        if targets[Severity::P0.index()].approval != ApprovalNeed::Required {
            err(
                "severity.P0.approval".into(),
                "P0 remediation always needs a human: approval must be \"required\"".into(),
            );
        }

        // Kinds: the defaults, overridden or extended by configured ones.
        let mut kinds = default_kinds();
        for (i, k) in self.kinds.into_iter().enumerate() {
            if !valid_id(&k.id) {
                err(format!("kinds[{i}].id"), id_rule(&k.id));
            }
            match kinds.iter_mut().find(|d| d.id == k.id) {
                Some(d) => *d = k,
                None => kinds.push(k),
            }
        }
        let kind_known = |id: &str| kinds.iter().any(|k| k.id == id);

        // Playbooks.
        let mut seen = HashSet::new();
        for (i, pb) in self.playbooks.iter().enumerate() {
            let at = format!("playbooks[{i}]");
            if !valid_id(&pb.id) {
                err(format!("{at}.id"), id_rule(&pb.id));
            }
            if pb.auto_resolve && pb.resolve_after_clear_seconds.is_some() {
                err(
                    format!("{at}.resolve_after_clear_seconds"),
                    "set either this or auto_resolve (which resolves at once on the clear)".into(),
                );
            }
            if pb.chart_query.is_some() && self.prometheus.is_none() {
                err(
                    format!("{at}.chart_query"),
                    "a chart needs a [prometheus] section (url)".into(),
                );
            }
            for (j, e) in pb.evidence.iter().enumerate() {
                let at = format!("{at}.evidence[{j}]");
                if self.prometheus.is_none() {
                    err(
                        at.clone(),
                        "evidence queries need a [prometheus] section (url)".into(),
                    );
                }
                if e.name.trim().is_empty() {
                    err(format!("{at}.name"), "must not be empty".into());
                }
                if e.above.is_some() && e.below.is_some() {
                    err(at.clone(), "give at most one of below or above".into());
                }
                if e.root_cause.is_some() && e.threshold().is_none() {
                    err(
                        format!("{at}.root_cause"),
                        "needs a threshold (below or above) that makes the evidence conclusive"
                            .into(),
                    );
                }
                if e.threshold().is_some_and(|t| !t.value().is_finite()) {
                    err(at.clone(), "the threshold must be a finite number".into());
                }
            }
            if pb.chart_threshold.is_some_and(|t| !t.is_finite()) {
                err(
                    format!("{at}.chart_threshold"),
                    "must be a finite number".into(),
                );
            }
            if !seen.insert(pb.id.clone()) {
                err(
                    format!("{at}.id"),
                    format!("duplicate playbook id {:?}", pb.id),
                );
            }
            for (j, k) in pb.kinds.iter().enumerate() {
                if !kind_known(k) {
                    err(
                        format!("{at}.kinds[{j}]"),
                        format!("unknown incident kind {k:?}"),
                    );
                }
            }
            let mut action_ids = HashSet::new();
            for (j, a) in pb.actions.iter().enumerate() {
                let at = format!("{at}.actions[{j}]");
                if !valid_id(&a.id) {
                    err(format!("{at}.id"), id_rule(&a.id));
                }
                if !action_ids.insert(a.id.as_str()) {
                    err(
                        format!("{at}.id"),
                        format!("duplicate action id {:?}", a.id),
                    );
                }
                if a.title.trim().is_empty() {
                    err(format!("{at}.title"), "must not be empty".into());
                }
                if a.timeout_seconds == 0 || a.timeout_seconds > 3600 {
                    err(
                        format!("{at}.timeout_seconds"),
                        "must be between 1 and 3600".into(),
                    );
                }
                let pattern = a
                    .allowed_pattern
                    .as_deref()
                    .unwrap_or(DEFAULT_ALLOWED_PATTERN);
                if let Err(e) = Regex::new(pattern) {
                    err(
                        format!("{at}.allowed_pattern"),
                        format!("invalid regex: {e}"),
                    );
                }
                if a.when.is_some()
                    && pb
                        .actions
                        .iter()
                        .any(|x| x.rollback.as_ref() == Some(&a.id))
                {
                    err(
                        format!("{at}.when"),
                        format!(
                            "{:?} is a rollback, offered when the action it undoes fails; `when` does not apply",
                            a.id
                        ),
                    );
                }
                if let Some(rb) = &a.rollback {
                    if rb == &a.id {
                        err(
                            format!("{at}.rollback"),
                            "an action cannot roll itself back".into(),
                        );
                    } else if !pb.actions.iter().any(|x| &x.id == rb) {
                        err(
                            format!("{at}.rollback"),
                            format!("no action {rb:?} in playbook {:?}", pb.id),
                        );
                    }
                }
                if let Some(v) = &a.verify {
                    let within = v.within_seconds();
                    if within == 0 || within > 3600 {
                        err(
                            format!("{at}.verify.within_seconds"),
                            "must be between 1 and 3600".into(),
                        );
                    }
                    validate_prometheus_verify(v, &at, self.prometheus.is_some(), &mut err);
                    match v {
                        VerifySpec::Http { url, .. }
                            if !(url.starts_with("http://") || url.starts_with("https://")) =>
                        {
                            err(
                                format!("{at}.verify.url"),
                                format!("{url:?} is not an http(s) URL"),
                            );
                        }
                        VerifySpec::Command { argv, .. }
                            if argv
                                .first()
                                .is_none_or(|p| p.trim().is_empty() || p.contains('{')) =>
                        {
                            err(
                                format!("{at}.verify.argv"),
                                "needs a fixed program first".into(),
                            );
                        }
                        VerifySpec::Http {
                            interval_seconds: 0,
                            ..
                        }
                        | VerifySpec::Command {
                            interval_seconds: 0,
                            ..
                        } => {
                            err(
                                format!("{at}.verify.interval_seconds"),
                                "must be at least 1".into(),
                            );
                        }
                        _ => {}
                    }
                }
                match &a.run {
                    ExecutorSpec::Command { argv } => {
                        if argv.first().is_none_or(|p| p.trim().is_empty()) {
                            err(
                                format!("{at}.run.argv"),
                                "needs at least the program".into(),
                            );
                        } else if argv[0].contains('{') {
                            err(
                                format!("{at}.run.argv[0]"),
                                "the program itself cannot be a template".into(),
                            );
                        }
                    }
                    ExecutorSpec::Http {
                        url, expect_status, ..
                    } => {
                        if !(url.starts_with("http://") || url.starts_with("https://")) {
                            err(
                                format!("{at}.run.url"),
                                format!("{url:?} is not an http(s) URL"),
                            );
                        }
                        if !(100..600).contains(expect_status) {
                            err(
                                format!("{at}.run.expect_status"),
                                "must be an HTTP status".into(),
                            );
                        }
                    }
                    ExecutorSpec::Kubectl {
                        deployment,
                        namespace,
                        verb,
                        replicas,
                    } => {
                        if *verb == KubectlVerb::Scale && replicas.is_none() {
                            err(format!("{at}.run.replicas"), "scale needs replicas".into());
                        }
                        for (k, v) in [("deployment", deployment), ("namespace", namespace)] {
                            if v.trim().is_empty() {
                                err(format!("{at}.run.{k}"), "must not be empty".into());
                            }
                        }
                    }
                }
            }
        }
        let playbook_known = |id: &str| self.playbooks.iter().any(|p| p.id == id);

        // Rules.
        let mut rules = Vec::new();
        for (i, r) in self.rules.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            let mut labels = BTreeMap::new();
            for (k, v) in r.match_labels {
                labels.insert(k, Matcher::Equals(v));
            }
            for (k, v) in r.match_re {
                match Regex::new(&format!("^(?:{v})$")) {
                    Ok(re) => {
                        labels.insert(k, Matcher::Regex(re));
                    }
                    Err(e) => err(format!("{at}.match_re.{k}"), format!("invalid regex: {e}")),
                }
            }
            let text = r.text_re.and_then(|t| match Regex::new(&t) {
                Ok(re) => Some(re),
                Err(e) => {
                    err(format!("{at}.text_re"), format!("invalid regex: {e}"));
                    None
                }
            });
            if let Some(k) = &r.kind {
                if !kind_known(k) {
                    err(format!("{at}.kind"), format!("unknown incident kind {k:?}"));
                }
            }
            if let Some(p) = &r.playbook {
                if !playbook_known(p) {
                    err(format!("{at}.playbook"), format!("unknown playbook {p:?}"));
                }
            }
            if r.severity.is_none() && r.kind.is_none() && r.playbook.is_none() {
                err(at.clone(), "sets none of severity, kind, playbook".into());
            }
            rules.push(Rule {
                name: r.name.unwrap_or_else(|| format!("rule {}", i + 1)),
                labels,
                text,
                severity: r.severity,
                kind: r.kind,
                playbook: r.playbook,
            });
        }

        // Policy.
        let mut policy = ALL.map(ApprovalPolicy::default_for);
        for (key, raw) in self.policy {
            let at = format!("policy.{key}");
            match key.parse::<Severity>() {
                Ok(sev) => {
                    let mut p = ApprovalPolicy::default_for(sev);
                    if let Some(v) = raw.approvers {
                        p.approvers = v;
                    }
                    if let Some(v) = raw.min_approvals {
                        p.min_approvals = v;
                    }
                    if let Some(v) = raw.allow_proposer {
                        p.allow_proposer = v;
                    }
                    if let Some(v) = raw.expiry_seconds {
                        p.expiry_seconds = v;
                    }
                    if p.min_approvals == 0 {
                        err(format!("{at}.min_approvals"), "must be at least 1".into());
                    }
                    if p.expiry_seconds == 0 {
                        err(
                            format!("{at}.expiry_seconds"),
                            "must be greater than 0".into(),
                        );
                    }
                    for (j, a) in p.approvers.iter().enumerate() {
                        if let Err(m) = check_approver(a) {
                            err(format!("{at}.approvers[{j}]"), m);
                        }
                    }
                    policy[sev.index()] = p;
                }
                Err(e) => err(at, e),
            }
        }

        // Chat platforms: enabled by their section; their secrets come from fixed variables.
        let mut need = |var: &str, path: &str, why: &str| -> Option<Secret> {
            match env(var) {
                Some(v) if !v.trim().is_empty() => Some(Secret(v)),
                _ => {
                    err(
                        path.into(),
                        format!("{why}: set the environment variable {var}"),
                    );
                    None
                }
            }
        };
        let optional = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        let slack = self.slack.and_then(|r| {
            let bot_token = need(
                "SLACK_BOT_TOKEN",
                "slack",
                "Slack needs a bot token (xoxb-…)",
            );
            let app_token = match r.mode {
                SlackMode::Socket => need(
                    "SLACK_APP_TOKEN",
                    "slack.mode",
                    "socket mode needs an app-level token (xapp-…)",
                ),
                SlackMode::Http => optional("SLACK_APP_TOKEN").map(Secret),
            };
            let signing_secret = match r.mode {
                SlackMode::Http => need(
                    "SLACK_SIGNING_SECRET",
                    "slack.mode",
                    "http mode needs the signing secret",
                ),
                SlackMode::Socket => optional("SLACK_SIGNING_SECRET").map(Secret),
            };
            Some(SlackConfig {
                mode: r.mode,
                api_url: r.api_url.trim_end_matches('/').to_string(),
                alert_channels: r.alert_channels,
                incident_channel: r.incident_channel,
                bot_token: bot_token?,
                app_token,
                signing_secret,
            })
        });
        let discord = self.discord.and_then(|r| {
            let token = need("DISCORD_TOKEN", "discord", "Discord needs a bot token");
            Some(DiscordConfig {
                api_url: r.api_url.trim_end_matches('/').to_string(),
                guild_ids: r.guild_ids,
                alert_channels: r.alert_channels,
                incident_channel: r.incident_channel,
                token: token?,
                public_key: optional("DISCORD_PUBLIC_KEY"),
            })
        });
        let mut console = ConsoleConfig::default();
        for (i, u) in self.console.users.into_iter().enumerate() {
            if !valid_id(&u.name) {
                err(format!("console.users[{i}].name"), id_rule(&u.name));
            }
            match env(&u.token_env) {
                Some(t) if t.len() >= 16 => console.users.push(ConsoleUser {
                    name: u.name,
                    token: Secret(t),
                }),
                Some(_) => err(
                    format!("console.users[{i}].token_env"),
                    format!(
                        "the token in {} must be at least 16 characters",
                        u.token_env
                    ),
                ),
                None => err(
                    format!("console.users[{i}].token_env"),
                    format!("environment variable {} is not set", u.token_env),
                ),
            }
        }

        let f = &self.followups;
        if let Some(x) = &f.export {
            if !matches!(x.run, crate::domain::playbook::ExecutorSpec::Http { .. }) {
                err(
                    "followups.export.run".into(),
                    "the export is an `http` action (a tracker's create-issue endpoint)".into(),
                );
            }
            if x.when.is_some() || x.verify.is_some() || x.rollback.is_some() || x.auto {
                err(
                    "followups.export".into(),
                    "`when`, `verify`, `rollback` and `auto` do not apply to the export (it runs once per follow-up)".into(),
                );
            }
        }
        for (key, v, min) in [
            ("define_within_seconds", f.define_within_seconds, 1),
            ("done_within_seconds", f.done_within_seconds, 1),
            ("verify_within_seconds", f.verify_within_seconds, 1),
            // Reminders more often than hourly would be noise, not reminders.
            ("remind_every_seconds", f.remind_every_seconds, 3600),
        ] {
            if v < min {
                err(
                    format!("followups.{key}"),
                    format!("must be at least {min}"),
                );
            }
        }

        for (j, a) in self.escalation.oncall.iter().enumerate() {
            if let Err(m) = check_approver(a) {
                err(format!("escalation.oncall[{j}]"), m);
            }
        }
        if let Some(p) = &self.escalation.pager {
            if !matches!(p.run, ExecutorSpec::Http { .. }) {
                err(
                    "escalation.pager.run".into(),
                    "the pager must be an http action".into(),
                );
            }
            if p.when.is_some() {
                err(
                    "escalation.pager.when".into(),
                    "the pager runs on every escalation; `when` does not apply".into(),
                );
            }
            if p.id != "pager" {
                err("escalation.pager.id".into(), "must be \"pager\"".into());
            }
        }

        // Containers: a console admin from the environment, so a deployment on 0.0.0.0 can
        // log in without a config file of its own.
        if let Some(t) = env("INCIDENTD_CONSOLE_ADMIN_TOKEN").filter(|t| !t.is_empty()) {
            if t.len() < 16 {
                err(
                    "INCIDENTD_CONSOLE_ADMIN_TOKEN".into(),
                    "must be at least 16 characters".into(),
                );
            } else if console.users.iter().any(|u| u.name == "admin") {
                err(
                    "INCIDENTD_CONSOLE_ADMIN_TOKEN".into(),
                    "a console user named admin is already configured".into(),
                );
            } else {
                console.users.push(ConsoleUser {
                    name: "admin".into(),
                    token: Secret(t),
                });
            }
        }

        // `run` refuses to expose the console's approve buttons without a login.
        if console.users.is_empty() && !listen.ip().is_loopback() {
            err(
                "console.users".into(),
                format!(
                    "the web console would be reachable on {listen} with approve buttons and no login (run refuses to start): \
                     configure at least one [[console.users]] entry (name and token_env), set INCIDENTD_CONSOLE_ADMIN_TOKEN, or listen on 127.0.0.1"
                ),
            );
        }

        let mut api = ApiConfig::default();
        for (i, t) in self.api.tokens.iter().enumerate() {
            let at = format!("api.tokens[{i}]");
            if let Err(e) = check_holder(&t.holder) {
                err(format!("{at}.holder"), e);
            }
            if api.tokens.iter().any(|x| x.holder == t.holder) {
                err(
                    format!("{at}.holder"),
                    format!("{:?} already has a token", t.holder),
                );
            }
            match env(&t.token_env) {
                Some(v) if v.len() >= 16 => {
                    if api.tokens.iter().any(|x| x.token.0 == v) {
                        err(
                            format!("{at}.token_env"),
                            "the same token is given to two holders".into(),
                        );
                    }
                    api.tokens.push(ApiToken {
                        holder: t.holder.clone(),
                        token: Secret(v),
                    });
                }
                Some(_) => err(
                    format!("{at}.token_env"),
                    format!("{} must hold at least 16 characters", t.token_env),
                ),
                None => err(
                    format!("{at}.token_env"),
                    format!("environment variable {} is not set", t.token_env),
                ),
            }
        }

        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let playbook_for_kind = {
            let mut m = BTreeMap::new();
            for pb in &self.playbooks {
                for k in &pb.kinds {
                    m.entry(k.clone()).or_insert_with(|| pb.id.clone());
                }
            }
            m
        };
        Ok(Config {
            server: ServerConfig {
                listen,
                max_body_bytes: self.server.max_body_bytes,
                header_read_timeout: std::time::Duration::from_secs(
                    self.server.header_read_timeout_seconds,
                ),
                idle_timeout: std::time::Duration::from_secs(self.server.idle_timeout_seconds),
                max_connections: self.server.max_connections,
            },
            store: StoreConfig {
                backend,
                lease: std::time::Duration::from_secs(self.store.lease_seconds),
                path: store_path,
                cache_mb: self.store.cache_mb,
                write_timeout: std::time::Duration::from_secs(self.store.write_timeout_seconds),
            },
            webhooks,
            classifier: Classifier {
                rules,
                kinds,
                default_severity: self.engine.default_severity,
                playbook_for_kind,
                keyword_index: Default::default(),
            },
            engine: self.engine,
            targets,
            playbooks: self.playbooks,
            policy,
            slack,
            discord,
            console,
            escalation: self.escalation,
            chat: self.chat,
            api,
            followups: self.followups,
            prometheus,
        })
    }
}

/// Ids appear in button ids (≤ 100 chars on Discord) and commands: keep them short and plain.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 40
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn id_rule(id: &str) -> String {
    format!("{id:?} is not a valid id (1–40 characters: letters, digits, - and _)")
}

/// An API token's holder: a console user name, or `platform:id`.
fn check_holder(holder: &str) -> Result<(), String> {
    let (platform, id) = holder.split_once(':').unwrap_or(("console", holder));
    let ok_id = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !matches!(platform, "console" | "slack" | "discord") || !ok_id || id == "system" {
        return Err(format!(
            "{holder:?}: give a console user name (letters, digits, - _ . @) or slack:ID / discord:ID"
        ));
    }
    Ok(())
}

fn check_approver(entry: &str) -> Result<(), String> {
    if entry == "*" {
        return Ok(());
    }
    const KINDS: &[&str] = &["slack", "slack-group", "discord", "discord-role", "console"];
    match entry.split_once(':') {
        Some((k, v)) if KINDS.contains(&k) && !v.is_empty() => Ok(()),
        _ => Err(format!(
            "{entry:?} is not an approver: use slack:USER, slack-group:GROUP, discord:USER, discord-role:ROLE, console:NAME, PLATFORM:* or *"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(text: &str) -> Vec<String> {
        Config::from_toml(text, &no_env)
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn empty_config_gets_the_defaults() {
        let c = Config::from_toml("", &no_env).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.targets(Severity::P0).detect_seconds, 30);
        assert_eq!(c.policy(Severity::P0).min_approvals, 2);
        assert_eq!(c.classifier.kinds.len(), 4);
        assert!(c.webhooks.alertmanager.is_none());
    }

    #[test]
    fn the_quiet_period_after_a_clear_comes_from_playbook_then_severity_then_engine() {
        let c = Config::from_toml("", &no_env).unwrap();
        assert_eq!(c.engine.resolve_after_clear_seconds, 300);
        assert_eq!(c.engine.flap_window_seconds, 600);
        assert_eq!(c.resolve_after_clear(None, Severity::P1), Some(300));
        let c = Config::from_toml(
            r#"
[engine]
resolve_after_clear_seconds = 120
[severity.P0]
resolve_after_clear_seconds = 0
[severity.P3]
resolve_after_clear_seconds = 60
[[playbooks]]
id = "now"
title = "Now"
auto_resolve = true
[[playbooks]]
id = "slow"
title = "Slow"
resolve_after_clear_seconds = 900
[[playbooks]]
id = "never"
title = "Never"
resolve_after_clear_seconds = 0
[[playbooks]]
id = "plain"
title = "Plain"
"#,
            &no_env,
        )
        .unwrap();
        assert_eq!(c.resolve_after_clear(None, Severity::P1), Some(120));
        assert_eq!(
            c.resolve_after_clear(Some("plain"), Severity::P1),
            Some(120)
        );
        assert_eq!(c.resolve_after_clear(None, Severity::P0), None);
        assert_eq!(c.resolve_after_clear(None, Severity::P3), Some(60));
        assert_eq!(c.resolve_after_clear(Some("now"), Severity::P0), Some(0));
        assert_eq!(c.resolve_after_clear(Some("slow"), Severity::P0), Some(900));
        assert_eq!(c.resolve_after_clear(Some("never"), Severity::P3), None);
        let e = errors(
            "[[playbooks]]\nid='a'\ntitle='A'\nauto_resolve=true\nresolve_after_clear_seconds=5\n",
        );
        assert!(
            e[0].starts_with("playbooks[0].resolve_after_clear_seconds:"),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let e = errors("[server]\nlisten = \"127.0.0.1:1\"\nlsiten = 3\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("server.lsiten: unknown field `lsiten`"),
            "{e:?}"
        );
        assert!(e[0].contains("line 3"), "{e:?}");
        let e = errors("[[playbooks]]\nid='a'\ntitle='A'\n[[playbooks.actions]]\nid='x'\ntitle='X'\nrun={type='command', argv=['a'], shel=true}\n");
        assert!(e[0].starts_with("playbooks[0].actions[0].run"), "{e:?}");
        let e = errors("[engine]\ncard_coalesce_seconds = \"five\"\n");
        assert!(e[0].starts_with("engine.card_coalesce_seconds:"), "{e:?}");
    }

    #[test]
    fn the_followup_export_is_an_http_action() {
        let e = errors("[followups.export]\nid='x'\ntitle='X'\nrun={type='command', argv=['a']}\n");
        assert!(e[0].starts_with("followups.export.run:"), "{e:?}");
        let e = errors("[followups]\nremind_every_seconds = 60\n");
        assert!(e[0].starts_with("followups.remind_every_seconds:"), "{e:?}");
        let c = Config::from_toml(
            "[followups.export]\nid='x'\ntitle='X'\nrun={type='http', url='http://127.0.0.1:1/issues'}\n",
            &no_env,
        )
        .unwrap();
        assert!(c.followups.export.is_some());
    }

    #[test]
    fn malformed_conditions_name_their_key_path() {
        let pb = |when: &str| {
            format!(
                "[[playbooks]]\nid='a'\ntitle='A'\n[[playbooks.actions]]\nid='x'\ntitle='X'\nrun={{type='command', argv=['a']}}\n\
                 [[playbooks]]\nid='b'\ntitle='B'\n[[playbooks.actions]]\nid='y'\ntitle='Y'\nwhen={when}\nrun={{type='command', argv=['a']}}\n"
            )
        };
        let e = errors(&pb("'annotations.confidence <'"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "playbooks[1].actions[0].when: expected a value after '<' at column 25 (at line 14, column 6)"
            ),
            "{e:?}"
        );
        let e = errors(&pb("'confidence < 0.5'"));
        assert!(
            e[0].starts_with("playbooks[1].actions[0].when: unknown name `confidence`"),
            "{e:?}"
        );
        let e = errors(&pb("0.5"));
        assert!(e[0].starts_with("playbooks[1].actions[0].when:"), "{e:?}");
        // A good one parses, and keeps its text.
        let c = Config::from_toml(&pb("'annotations.confidence < 0.5'"), &no_env).unwrap();
        assert_eq!(
            c.playbooks[1].actions[0].when.as_ref().unwrap().source(),
            "annotations.confidence < 0.5"
        );
    }

    #[test]
    fn when_does_not_apply_to_rollbacks_or_the_pager() {
        let e = errors(
            "[[playbooks]]\nid='a'\ntitle='A'\n\
             [[playbooks.actions]]\nid='x'\ntitle='X'\nrollback='undo'\nrun={type='command', argv=['a']}\n\
             [[playbooks.actions]]\nid='undo'\ntitle='U'\nwhen='exists(labels.a)'\nrun={type='command', argv=['a']}\n\
             [escalation.pager]\nid='pager'\ntitle='P'\nwhen='exists(labels.a)'\nrun={type='http', url='http://127.0.0.1:1/'}\n",
        );
        assert!(
            e.iter()
                .any(|e| e.starts_with("playbooks[0].actions[1].when: \"undo\" is a rollback")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|e| e.starts_with("escalation.pager.when:")),
            "{e:?}"
        );
    }

    #[test]
    fn human_messages_default_to_alerts_and_mentions() {
        let c = Config::from_toml("", &no_env).unwrap();
        assert_eq!(c.chat.human_messages, HumanMessages::AlertsAndMentions);
        let c = Config::from_toml("[chat]\nhuman_messages = \"all\"\n", &no_env).unwrap();
        assert_eq!(c.chat.human_messages, HumanMessages::All);
        let c = Config::from_toml("[chat]\nhuman_messages = \"ignore\"\n", &no_env).unwrap();
        assert_eq!(c.chat.human_messages, HumanMessages::Ignore);
        let e = errors("[chat]\nhuman_messages = \"some\"\n");
        assert!(e[0].starts_with("chat.human_messages: "), "{e:?}");
        assert!(e[0].contains("alerts_and_mentions"), "{e:?}");
        let e = errors("[chat]\nhumans = \"all\"\n");
        assert!(e[0].starts_with("chat.humans: unknown field"), "{e:?}");
    }

    #[test]
    fn store_cache_is_bounded_and_configurable() {
        let c = Config::from_toml("", &no_env).unwrap();
        assert_eq!(c.store.cache_mb, crate::store::DEFAULT_CACHE_MB);
        let c = Config::from_toml("[store]\ncache_mb = 512\n", &no_env).unwrap();
        assert_eq!(c.store.cache_mb, 512);
        for bad in ["0", "7", "65537"] {
            let e = errors(&format!("[store]\ncache_mb = {bad}\n"));
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(e[0].starts_with("store.cache_mb: "), "{e:?}");
            assert!(e[0].contains("8 to 65536"), "{e:?}");
        }
        let e = errors("[store]\ncache_mb = -1\n");
        assert!(e[0].starts_with("store.cache_mb"), "{e:?}");
    }

    #[test]
    fn the_store_backend_is_sled_unless_postgres_is_asked_for_with_its_url() {
        let c = Config::from_toml("", &no_env).unwrap();
        assert!(matches!(c.store.backend, StoreBackend::Sled));
        assert_eq!(c.store.lease, std::time::Duration::from_secs(5));
        let pg = "[store]\nbackend = \"postgres\"\nlease_seconds = 3\n";
        let env = |k: &str| (k == "INCIDENTD_DATABASE_URL").then(|| "postgres://h/db".to_string());
        let c = Config::from_toml(pg, &env).unwrap();
        match &c.store.backend {
            StoreBackend::Postgres { url } => assert_eq!(url.expose(), "postgres://h/db"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.store.lease, std::time::Duration::from_secs(3));
        // The URL is a secret: never in the config's debug output.
        assert!(!format!("{:?}", c.store).contains("postgres://h/db"));
        let e = errors(pg);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("store.url_env: "), "{e:?}");
        assert!(e[0].contains("INCIDENTD_DATABASE_URL"), "{e:?}");
        let e = errors("[store]\nbackend = \"mysql\"\n");
        assert!(e[0].starts_with("store.backend: "), "{e:?}");
        let e = errors("[store]\nlease_seconds = 1\n");
        assert!(e[0].starts_with("store.lease_seconds: "), "{e:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported() {
        let e = errors(
            r#"
            [server]
            listen = "nowhere"
            [severity.P7]
            detect_seconds = 1
            [severity.P0]
            approval = "optional"
            [[rules]]
            match_re = { alertname = "(" }
            kind = "nope"
            playbook = "missing"
            [[rules]]
            match = { a = "b" }
            [[playbooks]]
            id = "bad id!"
            title = "x"
            kinds = ["nope"]
            [[playbooks.actions]]
            id = "a"
            title = "A"
            allowed_pattern = "["
            run = { type = "command", argv = ["{labels.x}"] }
            [[playbooks.actions]]
            id = "a"
            title = ""
            run = { type = "http", url = "ftp://x" }
            [[playbooks.actions]]
            id = "s"
            title = "Scale"
            rollback = "nope"
            verify = { type = "command", argv = ["{labels.x}"] }
            run = { type = "kubectl", verb = "scale", deployment = "d", namespace = "n" }
            [policy.P1]
            approvers = ["bob"]
            min_approvals = 0
            [webhooks.generic]
            token_env = "NOPE_TOKEN"
            "#,
        );
        let want = [
            "server.listen:",
            "severity.P7:",
            "severity.P0.approval:",
            "rules[0].match_re.alertname: invalid regex",
            "rules[0].kind: unknown incident kind",
            "rules[0].playbook: unknown playbook",
            "rules[1]: sets none",
            "playbooks[0].id:",
            "playbooks[0].kinds[0]:",
            "playbooks[0].actions[0].allowed_pattern:",
            "playbooks[0].actions[0].run.argv[0]:",
            "playbooks[0].actions[1].id: duplicate",
            "playbooks[0].actions[1].title:",
            "playbooks[0].actions[1].run.url:",
            "playbooks[0].actions[2].run.replicas: scale needs replicas",
            "playbooks[0].actions[2].rollback: no action \"nope\"",
            "playbooks[0].actions[2].verify.argv:",
            "policy.P1.min_approvals:",
            "policy.P1.approvers[0]:",
            "webhooks.generic.token_env: environment variable NOPE_TOKEN is not set",
        ];
        for w in want {
            assert!(
                e.iter().any(|l| l.starts_with(w)),
                "missing {w:?} in {e:#?}"
            );
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
    }

    #[test]
    fn every_section_is_checked_even_after_a_parse_error() {
        // A bad type in [engine], an out-of-range cache, an unknown key in [chat], and a
        // semantic problem in [policy]: all four in one run.
        let e = errors(
            "[engine]\ncard_coalesce_seconds = \"five\"\n[store]\ncache_mb = 1\n[chat]\nhumans = 1\n[policy.P1]\nmin_approvals = 0\n[nonsense]\n",
        );
        for w in [
            "engine.card_coalesce_seconds:",
            "store.cache_mb: 1 is out of range",
            "chat.humans: unknown field",
            "policy.P1.min_approvals:",
            "nonsense: unknown section",
        ] {
            assert!(
                e.iter().any(|l| l.starts_with(w)),
                "missing {w:?} in {e:#?}"
            );
        }
        assert_eq!(e.len(), 5, "{e:#?}");
        // The first keeps its line.
        assert!(e[0].contains("line 2"), "{e:?}");
        // A syntax error stops there.
        assert_eq!(errors("[engine\n[store]\ncache_mb = 1\n").len(), 1);
    }

    #[test]
    fn what_run_refuses_is_a_config_error() {
        let e = errors("[server]\nlisten = \"0.0.0.0:8080\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("console.users: the web console would be reachable on 0.0.0.0:8080"),
            "{e:?}"
        );
        let env = |k: &str| {
            (k == "INCIDENTD_CONSOLE_ADMIN_TOKEN").then(|| "0123456789abcdef0123".to_string())
        };
        assert!(Config::from_toml("[server]\nlisten = \"0.0.0.0:8080\"\n", &env).is_ok());
    }

    #[test]
    fn api_tokens_name_their_holder_and_come_from_the_environment() {
        let env = |k: &str| match k {
            "OPS_TOKEN" => Some("0123456789abcdef-ops".to_string()),
            "CI_TOKEN" => Some("0123456789abcdef-ci".to_string()),
            "SHORT" => Some("short".to_string()),
            _ => None,
        };
        let c = Config::from_toml(
            "[[api.tokens]]\nholder = \"alice\"\ntoken_env = \"OPS_TOKEN\"\n[[api.tokens]]\nholder = \"slack:U42\"\ntoken_env = \"CI_TOKEN\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.api.tokens.len(), 2);
        assert_eq!(c.api.tokens[1].holder, "slack:U42");
        assert_eq!(format!("{:?}", c.api.tokens[0].token), "Secret(***)");
        let e = Config::from_toml(
            "[[api.tokens]]\nholder = \"bad holder\"\ntoken_env = \"MISSING\"\n[[api.tokens]]\nholder = \"bob\"\ntoken_env = \"SHORT\"\n[[api.tokens]]\nholder = \"system\"\ntoken_env = \"OPS_TOKEN\"\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        for w in [
            "api.tokens[0].holder:",
            "api.tokens[0].token_env: environment variable MISSING is not set",
            "api.tokens[1].token_env: SHORT must hold at least 16 characters",
            "api.tokens[2].holder:",
        ] {
            assert!(e.contains(w), "missing {w:?} in {e}");
        }
    }

    #[test]
    fn a_console_admin_can_come_from_the_environment() {
        let env = |k: &str| {
            (k == "INCIDENTD_CONSOLE_ADMIN_TOKEN").then(|| "0123456789abcdef0123".to_string())
        };
        let c = Config::from_toml("", &env).unwrap();
        assert_eq!(c.console.users.len(), 1);
        assert_eq!(c.console.users[0].name, "admin");
        let short = |k: &str| (k == "INCIDENTD_CONSOLE_ADMIN_TOKEN").then(|| "short".to_string());
        let e = Config::from_toml("", &short).unwrap_err().to_string();
        assert!(e.contains("at least 16"), "{e}");
    }

    #[test]
    fn partial_policy_sections_keep_the_severity_defaults() {
        let c = Config::from_toml("[policy.P0]\napprovers = [\"slack:U1\"]\n", &no_env).unwrap();
        let p0 = c.policy(Severity::P0);
        assert_eq!(p0.approvers, ["slack:U1"]);
        assert_eq!(
            (p0.min_approvals, p0.expiry_seconds, p0.allow_proposer),
            (2, 120, false)
        );
    }

    #[test]
    fn env_overrides_and_secrets() {
        let env = |k: &str| match k {
            "INCIDENTD_LISTEN" => Some("0.0.0.0:9999".to_string()),
            "INCIDENTD_STORE_PATH" => Some("/tmp/x".to_string()),
            "AM_TOKEN" => Some("s3cret".to_string()),
            // Listening on every address needs a console login.
            "INCIDENTD_CONSOLE_ADMIN_TOKEN" => Some("0123456789abcdef".to_string()),
            _ => None,
        };
        let c =
            Config::from_toml("[webhooks.alertmanager]\ntoken_env = \"AM_TOKEN\"\n", &env).unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.store.path, PathBuf::from("/tmp/x"));
        let s = c.webhooks.alertmanager.unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn chat_sections_enable_platforms_and_need_their_secrets() {
        let c = Config::from_toml("", &no_env).unwrap();
        assert!(c.slack.is_none() && c.discord.is_none());
        let text = "[slack]\nalert_channels = [\"C1\"]\n[discord]\nguild_ids = [\"1\"]\n[[console.users]]\nname = \"alice\"\ntoken_env = \"ALICE_TOKEN\"\n";
        let e = errors(text);
        assert!(
            e.iter()
                .any(|l| l.starts_with("slack: Slack needs a bot token")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("slack.mode: socket mode needs an app-level token")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("discord: Discord needs a bot token")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("console.users[0].token_env")),
            "{e:?}"
        );
        let env = |k: &str| match k {
            "SLACK_BOT_TOKEN" => Some("xoxb-1".to_string()),
            "SLACK_APP_TOKEN" => Some("xapp-1".to_string()),
            "DISCORD_TOKEN" => Some("d".to_string()),
            "ALICE_TOKEN" => Some("0123456789abcdef".to_string()),
            _ => None,
        };
        let c = Config::from_toml(text, &env).unwrap();
        let slack = c.slack.unwrap();
        assert_eq!(slack.mode, SlackMode::Socket);
        assert_eq!(slack.api_url, "https://slack.com/api");
        assert_eq!(slack.alert_channels, ["C1"]);
        assert_eq!(c.discord.unwrap().api_url, "https://discord.com");
        assert_eq!(c.console.users[0].name, "alice");
        // http mode needs the signing secret instead of the app token.
        let e = Config::from_toml("[slack]\nmode = \"http\"\n", &|k| {
            (k == "SLACK_BOT_TOKEN").then(|| "x".into())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("SLACK_SIGNING_SECRET"), "{e}");
    }

    #[test]
    fn configured_kinds_extend_and_override() {
        let c = Config::from_toml(
            r#"
            [[kinds]]
            id = "data_pipeline"
            name = "Data pipeline failure"
            keywords = ["etl"]
            [[kinds]]
            id = "tool_api_failure"
            name = "External API failure"
            "#,
            &no_env,
        )
        .unwrap();
        assert_eq!(c.classifier.kinds.len(), 5);
        assert_eq!(
            c.classifier.kind_name("tool_api_failure"),
            "External API failure"
        );
        assert_eq!(
            c.classifier.kind_name("data_pipeline"),
            "Data pipeline failure"
        );
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&p).unwrap();
                let env = |k: &str| {
                    k.ends_with("_TOKEN")
                        .then(|| "t0123456789abcdef".to_string())
                };
                Config::from_toml(&text, &env).unwrap_or_else(|e| panic!("{}:\n{e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 1);
        let c = Config::builtin();
        assert!(!c.playbooks.is_empty());
    }

    /// A storm of unique alerts through the shipped config must not launch one remediation per
    /// alert against example endpoints that do not exist: its example actions wait for an
    /// approval until someone points them at real endpoints and opts in.
    #[test]
    fn the_shipped_config_runs_nothing_on_its_own() {
        let c = Config::builtin();
        let auto: Vec<&str> = c
            .playbooks
            .iter()
            .flat_map(|p| p.actions.iter())
            .filter(|a| a.auto)
            .map(|a| a.id.as_str())
            .collect();
        assert!(
            auto.is_empty(),
            "automatic actions in the shipped config: {auto:?}"
        );
    }
}
