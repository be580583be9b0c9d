//! Remediation executors: turn an approved playbook action into a [`Plan`] for one incident, and
//! run that plan with a timeout, bounded retries and secret redaction.
//!
//! Two steps, on purpose:
//! - [`plan`] is pure: it templates the action from the incident (see [`template`]) and either
//!   returns the exact argv or request that will run — so the preview shown to approvers and
//!   written to the timeline is what really runs — or a refusal that says why.
//! - [`execute`] does the I/O: [`command`] runs an argv directly (never through a shell; the
//!   `kubectl` executor is a command plan too) and [`http`] sends one request. Only failures where
//!   the action provably did not start (a command that could not be spawned, a refused
//!   connection, HTTP 429/503) are retried, with exponential backoff; a timeout is reported as a
//!   failure and never retried (the action may have done its work); output is captured, cut to its last 16 KiB and
//!   stripped of every known secret before anyone sees it.
//!
//! Exactly-once bookkeeping (recording `Started` before running, never re-running after a crash)
//! is the caller's job; this module only promises that dropping [`execute`]'s future kills the
//! child process it started.

pub mod command;
pub mod http;
pub mod preview;
pub mod prometheus;
pub mod template;

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::incident::Incident;
use crate::domain::playbook::{ActionSpec, ExecutorSpec, KubectlVerb};
use template::{
    compile_allowed, expand, expand_arg, expand_argv, expand_json, expand_url, TemplateContext,
    TemplateError,
};

/// What will run, after templating: shown in previews and in the timeline before anything runs.
///
/// It holds header values as configured, tokens included: persist [`Plan::preview`], not the
/// plan itself, wherever secrets must not go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Plan {
    Command {
        argv: Vec<String>,
        timeout_seconds: u64,
    },
    Http {
        method: String,
        url: String,
        headers: BTreeMap<String, String>,
        body: Option<serde_json::Value>,
        expect_status: u16,
        timeout_seconds: u64,
    },
}

/// Shown instead of a secret.
const MASK: &str = "***";

/// Longest JSON body shown in a preview; the card has little room.
const PREVIEW_BODY_CHARS: usize = 200;

impl Plan {
    /// One line, e.g. `kubectl -n prod rollout restart deployment/api` or
    /// `POST http://x/y [Authorization: ***] {"to":"backup"}`. Values of headers, query
    /// parameters and JSON keys whose name looks secret (authorization, token, key, secret,
    /// cookie, password…) and URL passwords are shown as `***`.
    pub fn preview(&self) -> String {
        match self {
            Plan::Command { argv, .. } => argv
                .iter()
                .map(|a| preview_arg(a))
                .collect::<Vec<_>>()
                .join(" "),
            Plan::Http {
                method,
                url,
                headers,
                body,
                ..
            } => {
                let mut s = format!("{method} {}", mask_url(url));
                for (name, value) in headers {
                    let value = if looks_secret(name) { MASK } else { value };
                    s.push_str(&format!(" [{name}: {}]", one_line(value)));
                }
                if let Some(body) = body {
                    let shown = mask_json(body).to_string();
                    s.push(' ');
                    match shown.char_indices().nth(PREVIEW_BODY_CHARS) {
                        Some((cut, _)) => {
                            s.push_str(&shown[..cut]);
                            s.push('…');
                        }
                        None => s.push_str(&shown),
                    }
                }
                s
            }
        }
    }

    /// Values that are secret by their name: secret-looking header values (and the credential
    /// after an auth scheme, e.g. the token of `Bearer TOKEN`), a URL password and secret-looking
    /// query values. [`execute`] masks these in its output on top of the caller's `secrets`, so
    /// an endpoint that echoes its `Authorization` header cannot leak the token.
    pub fn implied_secrets(&self) -> Vec<String> {
        // Shorter values would mask ordinary words all over the output and protect little.
        const MIN_LEN: usize = 4;
        let Plan::Http { url, headers, .. } = self else {
            return Vec::new();
        };
        let mut found: Vec<&str> = Vec::new();
        for (name, value) in headers {
            if looks_secret(name) {
                found.push(value);
                if let Some((_scheme, credential)) = value.trim().split_once(' ') {
                    found.push(credential.trim());
                }
            }
        }
        let parts = UrlParts::split(url);
        found.extend(parts.password());
        found.extend(parts.secret_query_values());
        found
            .into_iter()
            .filter(|s| s.len() >= MIN_LEN)
            .map(str::to_string)
            .collect()
    }

    pub fn timeout(&self) -> Duration {
        match self {
            Plan::Command {
                timeout_seconds, ..
            }
            | Plan::Http {
                timeout_seconds, ..
            } => Duration::from_secs(*timeout_seconds),
        }
    }
}

/// Templating + validation: turns an ActionSpec into a Plan for this incident, or a clear refusal.
///
/// kubectl expands to a command plan (`kubectl_bin` is the program, `"kubectl"` in production):
/// `[bin, "-n", NS, "rollout", "restart"|"undo", "deployment/NAME"]` or
/// `[bin, "-n", NS, "scale", "deployment/NAME", "--replicas=N"]`, where N defaults to 1 as in
/// [`ExecutorSpec::summary`], so what runs is what approvers were shown.
pub fn plan(
    action: &ActionSpec,
    incident: &Incident,
    kubectl_bin: &str,
) -> Result<Plan, TemplateError> {
    plan_for(action, incident, None, kubectl_bin)
}

/// [`plan`] with a follow-up's values (`{followup.text}` …) for its export.
pub fn plan_for(
    action: &ActionSpec,
    incident: &Incident,
    followup: Option<(usize, &crate::domain::followup::FollowUp)>,
    kubectl_bin: &str,
) -> Result<Plan, TemplateError> {
    let allowed = compile_allowed(action.allowed_pattern.as_deref())?;
    let ctx = TemplateContext { incident, followup };
    let timeout_seconds = action.timeout_seconds;
    Ok(match &action.run {
        ExecutorSpec::Command { argv } => Plan::Command {
            argv: expand_argv(argv, &ctx, &allowed)?,
            timeout_seconds,
        },
        ExecutorSpec::Http {
            method,
            url,
            headers,
            body,
            expect_status,
        } => Plan::Http {
            method: method.to_ascii_uppercase(),
            url: expand_url(url, &ctx, &allowed)?,
            headers: headers
                .iter()
                .map(|(name, value)| Ok((name.clone(), expand(value, &ctx, &allowed)?)))
                .collect::<Result<_, TemplateError>>()?,
            body: body
                .as_ref()
                .map(|b| expand_json(b, &ctx, &allowed))
                .transpose()?,
            expect_status: *expect_status,
            timeout_seconds,
        },
        ExecutorSpec::Kubectl {
            verb,
            deployment,
            namespace,
            replicas,
        } => {
            // As argv elements, so the namespace gets the option-injection check too
            // (`-n --kubeconfig=…` must not happen).
            let ns = expand_arg(namespace, &ctx, &allowed)?;
            let target = expand_arg(&format!("deployment/{deployment}"), &ctx, &allowed)?;
            let mut argv = vec![kubectl_bin.to_string(), "-n".into(), ns];
            match verb {
                KubectlVerb::RolloutRestart => {
                    argv.extend(["rollout".into(), "restart".into(), target])
                }
                KubectlVerb::RolloutUndo => argv.extend(["rollout".into(), "undo".into(), target]),
                KubectlVerb::Scale => argv.extend([
                    "scale".into(),
                    target,
                    format!("--replicas={}", replicas.unwrap_or(1)),
                ]),
            }
            Plan::Command {
                argv,
                timeout_seconds,
            }
        }
    })
}

/// The link a tracker's "create issue" answer names: `html_url`, `web_url`, `url`, `link` or
/// `self` (the first that is an http(s) URL), at the top level or under `data`. `None` when
/// the body is not JSON or names none.
pub fn link_in_response(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let keys = ["html_url", "web_url", "url", "link", "self"];
    let found = [&v, &v["data"]].into_iter().find_map(|o| {
        keys.iter().find_map(|k| {
            o[*k]
                .as_str()
                .filter(|u| {
                    (u.starts_with("https://") || u.starts_with("http://"))
                        && u.len() <= 500
                        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
                })
                .map(String::from)
        })
    });
    found
}

/// What happened when a plan ran. `stdout` holds the response body for HTTP plans. Every field
/// is already redacted and cut to size, so it may be shown and stored as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutput {
    pub success: bool,
    pub exit_code: Option<i32>,
    pub http_status: Option<u16>,
    pub stdout: String,
    pub stderr: String,
    /// Wall time of the whole execution, retries and backoff included.
    pub duration_ms: u64,
    /// How many times the plan was tried (1 when it was not retried).
    pub attempts: u32,
    /// Why it failed (`None` on success).
    pub error: Option<String>,
}

impl RunOutput {
    /// One line for the thread and the timeline: `exit 0 in 1.2 s`, `HTTP 200 in 35 ms`,
    /// `timed out after 60 s; killed (65.1 s, 3 attempts)`.
    pub fn summary(&self) -> String {
        let took = human_duration(self.duration_ms);
        let mut s = match (&self.error, self.http_status, self.exit_code) {
            (Some(error), ..) => format!("{error} ({took}"),
            (None, Some(status), _) => format!("HTTP {status} in {took}"),
            (None, None, Some(code)) => format!("exit {code} in {took}"),
            (None, None, None) => format!("done in {took}"),
        };
        if self.error.is_some() {
            if self.attempts > 1 {
                s.push_str(&format!(", {} attempts", self.attempts));
            }
            s.push(')');
        } else if self.attempts > 1 {
            s.push_str(&format!(" ({} attempts)", self.attempts));
        }
        s
    }
}

fn human_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// Retries: bounded attempts with exponential backoff, only for failures where the action
/// provably did not start: spawn errors, connection errors, HTTP 429/503. Never a timeout (the
/// action may have done its work), a non-zero exit, another 5xx or a 4xx.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total tries, the first included; 0 is treated as 1.
    pub attempts: u32,
    /// Wait before the second try; doubled before each further one.
    pub base_backoff: Duration,
}

/// The longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based): base, 2×base, 4×base…, at most
    /// [`MAX_BACKOFF`] (or the base, if that is longer): an incident cannot wait for hours.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base_backoff
            .saturating_mul(factor)
            .min(MAX_BACKOFF.max(self.base_backoff))
    }
}

/// One try of a plan, before retry bookkeeping.
pub(crate) struct Attempt {
    pub(crate) output: RunOutput,
    /// Worth trying again: the failure may not repeat, and the action reached no definite
    /// outcome (a non-zero exit or a 4xx is an answer; a timeout or a refused connection is not).
    pub(crate) transient: bool,
}

impl Attempt {
    /// A try that failed before producing any output.
    pub(crate) fn failed(error: String, transient: bool) -> Attempt {
        Attempt {
            output: RunOutput {
                success: false,
                exit_code: None,
                http_status: None,
                stdout: String::new(),
                stderr: String::new(),
                duration_ms: 0,
                attempts: 1,
                error: Some(error),
            },
            transient,
        }
    }
}

/// Runs a plan. Cancel-safe: dropping the future kills the child (`kill_on_drop`).
///
/// `secrets` are replaced by `***` in everything returned (outputs and error text); the HTTP
/// client is the caller's so connection pools and proxies are configured once.
pub async fn execute(
    plan: &Plan,
    retry: &RetryPolicy,
    secrets: &[&str],
    http: &reqwest::Client,
) -> RunOutput {
    // tokio's clock, so tests with paused time see backoff in virtual time.
    let started = tokio::time::Instant::now();
    let implied = plan.implied_secrets();
    let secrets: Vec<&str> = secrets
        .iter()
        .copied()
        .chain(implied.iter().map(String::as_str))
        .collect();
    let secrets = secrets.as_slice();
    let max_attempts = retry.attempts.max(1);
    let mut attempt = 1;
    loop {
        let once = match plan {
            Plan::Command {
                argv,
                timeout_seconds,
            } => command::run(argv, Duration::from_secs(*timeout_seconds), secrets).await,
            Plan::Http {
                method,
                url,
                headers,
                body,
                expect_status,
                timeout_seconds,
            } => {
                http::send(
                    http::Request {
                        method,
                        url,
                        headers,
                        body: body.as_ref(),
                        expect_status: *expect_status,
                        timeout: Duration::from_secs(*timeout_seconds),
                    },
                    secrets,
                    http,
                )
                .await
            }
        };
        if once.output.success || !once.transient || attempt >= max_attempts {
            let mut output = once.output;
            output.attempts = attempt;
            output.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            return output;
        }
        let wait = retry.backoff(attempt);
        tracing::warn!(
            attempt,
            max_attempts,
            error = once.output.error.as_deref().unwrap_or(""),
            backoff_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "Remediation attempt failed; retrying."
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Most bytes kept of stdout, stderr or a response body.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// Replaces every occurrence of each secret with `***`. Longer secrets go first, so a secret
/// that contains a shorter one is masked whole; empty strings are ignored.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| Reverse(s.len()));
    let mut out = text.to_string();
    for secret in secrets {
        if out.contains(secret) {
            out = out.replace(secret, MASK);
        }
    }
    out
}

/// The end of a byte stream, bounded in memory, turned into redacted text at the end.
///
/// It keeps `OUTPUT_LIMIT` bytes plus the length of the longest secret: a secret that straddles
/// the cut is then either whole in the kept window (and redacted) or has its fragment in the
/// extra bytes, which are dropped after redaction — so a cut never leaves half a token visible.
pub(crate) struct Tail {
    buf: Vec<u8>,
    limit: usize,
    margin: usize,
    total: u64,
}

impl Tail {
    pub(crate) fn new(secrets: &[&str]) -> Tail {
        Tail::with_limit(OUTPUT_LIMIT, secrets)
    }

    fn with_limit(limit: usize, secrets: &[&str]) -> Tail {
        Tail {
            buf: Vec::new(),
            limit,
            margin: secrets.iter().map(|s| s.len()).max().unwrap_or(0),
            total: 0,
        }
    }

    fn keep(&self) -> usize {
        self.limit + self.margin
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        // Trim only once the buffer is twice the window, so trimming costs O(1) per byte.
        if self.buf.len() > 2 * self.keep() {
            let excess = self.buf.len() - self.keep();
            self.buf.drain(..excess);
        }
    }

    pub(crate) fn finish(mut self, secrets: &[&str]) -> String {
        if self.buf.len() > self.keep() {
            let excess = self.buf.len() - self.keep();
            self.buf.drain(..excess);
        }
        let dropped_before_redaction = self.total > self.buf.len() as u64;
        let text = redact(&String::from_utf8_lossy(&self.buf), secrets);
        if self.total <= self.limit as u64 {
            return text;
        }
        let mut start = if dropped_before_redaction {
            self.margin
        } else {
            0
        };
        start = start
            .max(text.len().saturating_sub(self.limit))
            .min(text.len());
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!(
            "[… output cut: {} bytes in all, only the end is kept …]\n{}",
            self.total,
            &text[start..]
        )
    }
}

/// Header, query and JSON key names whose values must not be shown.
fn looks_secret(name: &str) -> bool {
    const HINTS: [&str; 9] = [
        "auth",
        "token",
        "key",
        "secret",
        "cookie",
        "password",
        "passwd",
        "credential",
        "signature",
    ];
    let name = name.to_ascii_lowercase();
    HINTS.iter().any(|h| name.contains(h))
}

/// An argv element as shown in a preview: quoted (Rust string syntax) when it is empty or holds
/// white space, quotes or control characters, so one element can be told from two.
fn preview_arg(arg: &str) -> String {
    let plain = !arg.is_empty()
        && !arg
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\'');
    if plain {
        arg.to_string()
    } else {
        format!("{arg:?}")
    }
}

fn one_line(s: &str) -> String {
    if s.chars().any(char::is_control) {
        format!("{s:?}")
    } else {
        s.to_string()
    }
}

/// A URL cut into the pieces that may hold secrets, by plain string splitting: the preview must
/// show the URL as configured, not as a parser would normalize it.
struct UrlParts<'a> {
    /// Up to and including `://`, or everything before the query if there is no scheme.
    scheme: &'a str,
    /// `user:password@host:port`, or empty.
    authority: &'a str,
    /// From the path on, up to (not including) `?`.
    path: &'a str,
    query: Option<&'a str>,
    /// `#…`, or empty.
    fragment: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> UrlParts<'a> {
        let (rest, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
        let (base, query) = match rest.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (rest, None),
        };
        let (scheme, authority, path) = match base.find("://") {
            Some(i) => {
                let (scheme, after) = base.split_at(i + 3);
                let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
                (scheme, authority, path)
            }
            None => (base, "", ""),
        };
        UrlParts {
            scheme,
            authority,
            path,
            query,
            fragment,
        }
    }

    /// `(user, password)` of `user:password@host`.
    fn userinfo(&self) -> Option<(&'a str, &'a str)> {
        let (userinfo, _host) = self.authority.rsplit_once('@')?;
        userinfo.split_once(':')
    }

    fn password(&self) -> Option<&'a str> {
        self.userinfo().map(|(_, password)| password)
    }

    fn secret_query_values(&self) -> impl Iterator<Item = &'a str> {
        self.query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .filter(|(k, _)| looks_secret(k))
            .map(|(_, v)| v)
    }
}

/// The URL with the password of `user:password@` and secret-looking query values masked.
fn mask_url(url: &str) -> String {
    let parts = UrlParts::split(url);
    let mut out = String::with_capacity(url.len());
    out.push_str(parts.scheme);
    match (parts.userinfo(), parts.authority.rsplit_once('@')) {
        (Some((user, _password)), Some((_, host))) => {
            out.push_str(&format!("{user}:{MASK}@{host}"));
        }
        _ => out.push_str(parts.authority),
    }
    out.push_str(parts.path);
    if let Some(query) = parts.query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if looks_secret(k) => format!("{k}={MASK}"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out.push_str(parts.fragment);
    one_line(&out)
}

/// The body with the values of secret-looking keys masked, at any depth.
fn mask_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, item)| {
                    let item = if looks_secret(k) {
                        Value::String(MASK.into())
                    } else {
                        mask_json(item)
                    };
                    (k.clone(), item)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_json).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::tests_support::incident;
    use serde_json::json;

    #[test]
    fn the_link_a_tracker_answers_with() {
        assert_eq!(
            link_in_response(
                r#"{"html_url":"https://github.com/a/b/issues/3","url":"https://api.github.com/x"}"#
            )
            .as_deref(),
            Some("https://github.com/a/b/issues/3")
        );
        assert_eq!(
            link_in_response(r#"{"data":{"web_url":"https://gitlab.example/i/4"}}"#).as_deref(),
            Some("https://gitlab.example/i/4")
        );
        for body in [
            "not json",
            r#"{"url":"javascript:alert(1)"}"#,
            r#"{"url":"https://x.example/a b"}"#,
            r#"{"id":7}"#,
        ] {
            assert_eq!(link_in_response(body), None, "{body}");
        }
    }

    #[test]
    fn followup_values_are_templated_only_for_an_export() {
        use crate::domain::followup::{FollowUp, FollowUpKind};
        let inc = incident();
        let by = crate::domain::policy::Actor::system();
        let f = FollowUp::new(
            "add an alert".into(),
            Some("@bob".into()),
            FollowUpKind::Process,
            &by,
            inc.opened_at,
            &Default::default(),
        );
        let mut a = action(ExecutorSpec::Http {
            method: "POST".into(),
            url: "http://127.0.0.1:1/issues".into(),
            headers: Default::default(),
            body: Some(
                json!({ "title": "{followup.number}: {followup.text} ({followup.kind}, {followup.owner})" }),
            ),
            expect_status: 201,
        });
        a.allowed_pattern = Some("(?s).{1,200}".into());
        let Plan::Http { body, .. } = plan_for(&a, &inc, Some((2, &f)), "kubectl").unwrap() else {
            panic!("an http plan")
        };
        assert_eq!(body.unwrap()["title"], "2: add an alert (process, @bob)");
        let e = plan(&a, &inc, "kubectl").unwrap_err();
        assert!(
            e.to_string().contains("unknown placeholder {followup."),
            "{e}"
        );
    }

    fn action(run: ExecutorSpec) -> ActionSpec {
        ActionSpec {
            id: "a".into(),
            title: "A".into(),
            description: None,
            auto: false,
            when: None,
            allowed_pattern: None,
            timeout_seconds: 30,
            run,
            verify: None,
            rollback: None,
        }
    }

    fn inc() -> Incident {
        let mut inc = incident();
        for (k, v) in [
            ("deployment", "api"),
            ("namespace", "prod"),
            ("service", "api"),
        ] {
            inc.labels.insert(k.into(), v.into());
        }
        inc
    }

    fn kubectl(verb: KubectlVerb, replicas: Option<u32>) -> ExecutorSpec {
        ExecutorSpec::Kubectl {
            verb,
            deployment: "{labels.deployment}".into(),
            namespace: "{labels.namespace}".into(),
            replicas,
        }
    }

    fn argv_of(plan: &Plan) -> Vec<&str> {
        match plan {
            Plan::Command { argv, .. } => argv.iter().map(String::as_str).collect(),
            other => panic!("not a command plan: {other:?}"),
        }
    }

    #[test]
    fn kubectl_verbs_become_fixed_argvs() {
        let inc = inc();
        let restart = plan(
            &action(kubectl(KubectlVerb::RolloutRestart, None)),
            &inc,
            "kubectl",
        )
        .unwrap();
        assert_eq!(
            argv_of(&restart),
            [
                "kubectl",
                "-n",
                "prod",
                "rollout",
                "restart",
                "deployment/api"
            ]
        );
        assert_eq!(
            restart.preview(),
            "kubectl -n prod rollout restart deployment/api"
        );
        assert_eq!(restart.timeout(), Duration::from_secs(30));

        let undo = plan(
            &action(kubectl(KubectlVerb::RolloutUndo, None)),
            &inc,
            "/opt/fake-kubectl",
        )
        .unwrap();
        assert_eq!(
            argv_of(&undo),
            [
                "/opt/fake-kubectl",
                "-n",
                "prod",
                "rollout",
                "undo",
                "deployment/api"
            ]
        );

        let scale = plan(
            &action(kubectl(KubectlVerb::Scale, Some(5))),
            &inc,
            "kubectl",
        )
        .unwrap();
        assert_eq!(
            argv_of(&scale),
            [
                "kubectl",
                "-n",
                "prod",
                "scale",
                "deployment/api",
                "--replicas=5"
            ]
        );
        // The same default as the untemplated summary approvers saw.
        let spec = kubectl(KubectlVerb::Scale, None);
        let scale1 = plan(&action(spec.clone()), &inc, "kubectl").unwrap();
        assert_eq!(argv_of(&scale1)[5], "--replicas=1");
        assert_eq!(
            scale1.preview(),
            spec.summary()
                .replace("{labels.namespace}", "prod")
                .replace("{labels.deployment}", "api")
        );
    }

    #[test]
    fn command_and_http_plans_are_templated() {
        let inc = inc();
        let cmd = plan(
            &action(ExecutorSpec::Command {
                argv: vec![
                    "echo".into(),
                    "svc={labels.service}".into(),
                    "{incident.id}".into(),
                ],
            }),
            &inc,
            "kubectl",
        )
        .unwrap();
        assert_eq!(
            cmd,
            Plan::Command {
                argv: vec!["echo".into(), "svc=api".into(), "INC-7".into()],
                timeout_seconds: 30
            }
        );

        let http = plan(
            &action(ExecutorSpec::Http {
                method: "post".into(),
                url: "http://lb.internal/{labels.namespace}/drain?svc={labels.service}".into(),
                headers: [
                    ("Authorization".to_string(), "Bearer tok-123".to_string()),
                    ("X-Incident".to_string(), "{incident.id}".to_string()),
                ]
                .into(),
                body: Some(json!({"service": "{labels.service}", "weight": 0})),
                expect_status: 202,
            }),
            &inc,
            "kubectl",
        )
        .unwrap();
        assert_eq!(
            http,
            Plan::Http {
                method: "POST".into(),
                url: "http://lb.internal/prod/drain?svc=api".into(),
                headers: [
                    ("Authorization".to_string(), "Bearer tok-123".to_string()),
                    ("X-Incident".to_string(), "INC-7".to_string()),
                ]
                .into(),
                body: Some(json!({"service": "api", "weight": 0})),
                expect_status: 202,
                timeout_seconds: 30,
            }
        );
        let preview = http.preview();
        assert_eq!(
            preview,
            r#"POST http://lb.internal/prod/drain?svc=api [Authorization: ***] [X-Incident: INC-7] {"service":"api","weight":0}"#
        );
    }

    #[test]
    fn refusals_propagate_from_templating() {
        let mut inc = inc();
        inc.labels.insert("namespace".into(), "prod; reboot".into());
        let err = plan(
            &action(kubectl(KubectlVerb::RolloutRestart, None)),
            &inc,
            "kubectl",
        )
        .unwrap_err();
        assert!(
            matches!(&err, TemplateError::NotAllowed { placeholder, .. } if placeholder == "{labels.namespace}"),
            "{err:?}"
        );
        inc.labels
            .insert("namespace".into(), "--kubeconfig=/tmp/x".into());
        let err = plan(
            &action(kubectl(KubectlVerb::RolloutUndo, None)),
            &inc,
            "kubectl",
        )
        .unwrap_err();
        assert!(matches!(err, TemplateError::OptionLike { .. }), "{err:?}");

        let mut bad_pattern = action(ExecutorSpec::Command {
            argv: vec!["true".into()],
        });
        bad_pattern.allowed_pattern = Some("(".into());
        assert!(matches!(
            plan(&bad_pattern, &inc, "kubectl"),
            Err(TemplateError::BadPattern { .. })
        ));

        let http = action(ExecutorSpec::Http {
            method: "POST".into(),
            url: "http://x/{labels.nope}".into(),
            headers: BTreeMap::new(),
            body: None,
            expect_status: 200,
        });
        assert_eq!(
            plan(&http, &inc, "kubectl"),
            Err(TemplateError::Missing("label \"nope\"".into()))
        );
    }

    #[test]
    fn custom_pattern_from_the_action_is_used() {
        let mut inc = inc();
        inc.labels.insert("reason".into(), "disk full".into());
        let mut a = action(ExecutorSpec::Command {
            argv: vec!["notify".into(), "{labels.reason}".into()],
        });
        assert!(plan(&a, &inc, "kubectl").is_err());
        a.allowed_pattern = Some("[a-z ]+".into());
        let p = plan(&a, &inc, "kubectl").unwrap();
        assert_eq!(argv_of(&p), ["notify", "disk full"]);
        assert_eq!(p.preview(), r#"notify "disk full""#);
    }

    #[test]
    fn preview_masks_secret_looking_values() {
        let p = Plan::Http {
            method: "PUT".into(),
            url: "https://bot:hunter2@x.example/hook?api_key=k-1&team=ops#frag".into(),
            headers: [
                ("Cookie", "session=abc"),
                ("X-Api-Key", "k-2"),
                ("X-Auth-Token", "t-3"),
                ("Proxy-Authorization", "Basic zzz"),
                ("X-Team", "ops"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            body: Some(json!({"password": "p-4", "nested": {"client_secret": "s-5"}, "n": 1})),
            expect_status: 200,
            timeout_seconds: 5,
        };
        let preview = p.preview();
        for secret in ["hunter2", "k-1", "abc", "k-2", "t-3", "zzz", "p-4", "s-5"] {
            assert!(!preview.contains(secret), "{secret} leaked: {preview}");
        }
        assert!(
            preview.starts_with("PUT https://bot:***@x.example/hook?api_key=***&team=ops#frag"),
            "{preview}"
        );
        assert!(preview.contains("[X-Team: ops]"), "{preview}");
        assert!(!preview.contains('\n'));
    }

    #[test]
    fn secrets_are_implied_by_their_names() {
        let p = Plan::Http {
            method: "POST".into(),
            url: "https://bot:hunter2@x.example/hook?token=qwerty&team=ops&key=ab".into(),
            headers: [
                ("Authorization", "Bearer tok-123"),
                ("X-Api-Key", "k-456"),
                ("X-Team", "ops-team"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            body: None,
            expect_status: 200,
            timeout_seconds: 5,
        };
        let mut implied = p.implied_secrets();
        implied.sort();
        assert_eq!(
            implied,
            ["Bearer tok-123", "hunter2", "k-456", "qwerty", "tok-123"]
        );
        let cmd = Plan::Command {
            argv: vec!["echo".into(), "token".into()],
            timeout_seconds: 1,
        };
        assert!(cmd.implied_secrets().is_empty());
    }

    #[test]
    fn plan_serializes_with_a_type_tag() {
        let p = Plan::Command {
            argv: vec!["true".into()],
            timeout_seconds: 1,
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            json!({"type": "command", "argv": ["true"], "timeout_seconds": 1})
        );
        assert_eq!(serde_json::from_value::<Plan>(v).unwrap(), p);
    }

    #[test]
    fn redact_masks_longest_first_and_ignores_empty() {
        assert_eq!(
            redact("a=tok-123 b=tok c=x", &["tok", "tok-123", ""]),
            "a=*** b=*** c=x"
        );
        assert_eq!(redact("nothing here", &[]), "nothing here");
    }

    #[test]
    fn tail_keeps_the_end_and_marks_the_cut() {
        let mut t = Tail::with_limit(10, &[]);
        for chunk in ["0123456789", "abcdefghij", "KLMNOPQRST", "uvwxyz"] {
            t.push(chunk.as_bytes());
        }
        let out = t.finish(&[]);
        assert_eq!(
            out,
            "[… output cut: 36 bytes in all, only the end is kept …]\nQRSTuvwxyz"
        );

        let mut small = Tail::with_limit(10, &[]);
        small.push(b"short");
        assert_eq!(small.finish(&[]), "short");
    }

    #[test]
    fn tail_never_leaves_half_a_secret_at_the_cut() {
        let secret = "ABCDEFGHIJ";
        // Slide the secret past every cut point: the last `limit` bytes, and the edge of the
        // window kept in memory. No upper-case letter (a piece of the secret) may survive.
        for trailing in 0..45 {
            let mut t = Tail::with_limit(20, &[secret]);
            t.push(b"prefix-prefix-prefix-");
            t.push(secret.as_bytes());
            t.push("x".repeat(trailing).as_bytes());
            let out = t.finish(&[secret]);
            let body = out.split_once("…]\n").map_or(out.as_str(), |(_, b)| b);
            let visible = body.replace(MASK, "");
            assert!(
                !visible.chars().any(|c| c.is_ascii_uppercase()),
                "{trailing} trailing bytes: {out:?}"
            );
            assert!(body.len() <= 20, "{trailing} trailing bytes: {out:?}");
        }
        // A secret wholly inside the kept end is masked, not dropped.
        let mut t = Tail::with_limit(20, &[secret]);
        t.push("y".repeat(100).as_bytes());
        t.push(format!("{secret}-end").as_bytes());
        assert!(t.finish(&[secret]).ends_with("yyy***-end"));
    }

    #[test]
    fn retry_backoff_doubles() {
        let r = RetryPolicy::default();
        assert_eq!(r.attempts, 3);
        assert_eq!(r.backoff(1), Duration::from_secs(1));
        assert_eq!(r.backoff(2), Duration::from_secs(2));
        assert_eq!(r.backoff(3), Duration::from_secs(4));
        assert_eq!(r.backoff(200), MAX_BACKOFF);
        let slow = RetryPolicy {
            attempts: 2,
            base_backoff: Duration::from_secs(600),
        };
        assert_eq!(slow.backoff(1), Duration::from_secs(600));
    }

    #[test]
    fn summary_is_one_line() {
        let mut out = RunOutput {
            success: true,
            exit_code: Some(0),
            http_status: None,
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: 1234,
            attempts: 1,
            error: None,
        };
        assert_eq!(out.summary(), "exit 0 in 1.2 s");
        out.success = false;
        out.error = Some("timed out after 1 s; killed".into());
        out.attempts = 3;
        assert_eq!(
            out.summary(),
            "timed out after 1 s; killed (1.2 s, 3 attempts)"
        );
        out.error = None;
        out.exit_code = None;
        out.http_status = Some(200);
        out.duration_ms = 35;
        out.attempts = 2;
        assert_eq!(out.summary(), "HTTP 200 in 35 ms (2 attempts)");
    }
}
