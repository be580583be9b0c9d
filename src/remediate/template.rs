//! Templating of remediation actions: `{labels.service}` and friends, expanded from the incident.
//!
//! Alert labels arrive from outside (webhooks, chat messages), so every substituted value is
//! untrusted. Three rules keep a crafted label from turning into a different command:
//!
//! - **No shell, element-wise.** A command is an argv; each template element becomes exactly one
//!   argv element. A value is never split on white space and never parsed by a shell, so quoting
//!   and `$(...)` mean nothing.
//! - **Allow-list.** Each substituted value must match the action's allowed pattern in full
//!   (default [`DEFAULT_ALLOWED_PATTERN`]: ASCII letters, digits and `._:/=-`, 1–128 characters),
//!   else the whole action is refused with a message that says which value and why.
//! - **No option injection.** In an argv, a value that would put a `-` at the start of an
//!   argument is refused, so a label cannot become `--kubeconfig=…` or `-rf`.
//! - **URLs keep their shape.** In a URL ([`expand_url`]) a value in the path is
//!   percent-encoded as one path segment (`../../etc` → `..%2F..%2Fetc`) and a value that is
//!   `.` or `..` is refused; a value in the query or fragment is percent-encoded as one
//!   component (`&`, `=`, `#` cannot add parameters); a value in the scheme or host may not
//!   contain `/ ? # @ \ %`. So a label cannot change which endpoint is called.
//!
//! Everything here is pure; refusals are [`TemplateError`]s meant to be shown to the user as is.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use regex::Regex;

use crate::domain::incident::Incident;
use crate::domain::playbook::DEFAULT_ALLOWED_PATTERN;

/// Values a template may use: `{labels.NAME}`, `{annotations.NAME}`, `{incident.id}` (INC-n),
/// `{incident.severity}`, `{incident.kind}`, `{incident.fingerprint}`;
/// for a follow-up's export also `{followup.number}`, `{followup.text}`, `{followup.owner}`,
/// `{followup.kind}`, `{followup.due}`.
#[derive(Debug, Clone, Copy)]
pub struct TemplateContext<'a> {
    pub incident: &'a Incident,
    /// The follow-up being exported, with its number (from 1).
    pub followup: Option<(usize, &'a crate::domain::followup::FollowUp)>,
}

/// Why an action cannot be templated. The text is written for the person who clicked "approve".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {0} (use labels.NAME, annotations.NAME, incident.id, incident.severity, incident.kind, incident.fingerprint)")]
    UnknownPlaceholder(String),
    #[error("the incident has no {0}")]
    Missing(String),
    #[error(
        "{placeholder} = {value:?} does not match the allowed pattern {pattern}; refusing to run"
    )]
    NotAllowed {
        placeholder: String,
        value: String,
        pattern: String,
    },
    #[error("unclosed placeholder in {0:?}")]
    Unclosed(String),
    /// A value would start an argv element with `-` and so could be read as an option.
    #[error("{placeholder} = {value:?} would start an argument with '-' and could be read as an option; refusing to run")]
    OptionLike { placeholder: String, value: String },
    /// A URL path value that is `.` or `..`, which would climb the path instead of naming a
    /// segment.
    #[error("{placeholder} = {value:?} would be a `{value}` segment of the URL path and could change which endpoint is called; refusing to run")]
    DotSegment { placeholder: String, value: String },
    /// A value before the URL's path (scheme, host, port) with a character that would change
    /// where the URL points.
    #[error("{placeholder} = {value:?} would change the URL's host or scheme (it contains one of / ? # @ \\ %); refusing to run")]
    UrlAuthority { placeholder: String, value: String },
    /// The action's `allowed_pattern` is not a valid regular expression.
    #[error("the allowed pattern {pattern:?} is not a valid regular expression: {reason}")]
    BadPattern { pattern: String, reason: String },
}

/// Longest value quoted back in an error: enough to recognise it, short enough for a chat line.
const MAX_QUOTED_VALUE: usize = 64;

/// Compiles an action's allowed pattern (or the default), anchored at both ends so that it must
/// match the whole value: `[a-z]+` alone would otherwise accept `api; reboot` by matching `api`.
pub fn compile_allowed(pattern: Option<&str>) -> Result<Regex, TemplateError> {
    let pattern = pattern.unwrap_or(DEFAULT_ALLOWED_PATTERN);
    Regex::new(&format!(r"\A(?:{pattern})\z")).map_err(|e| TemplateError::BadPattern {
        pattern: pattern.to_string(),
        reason: e.to_string(),
    })
}

/// Expands every `{...}` in `template`. Each substituted value must match `allowed` in full
/// (build it with [`compile_allowed`]; an unanchored regex is still only accepted when its match
/// covers the whole value). `{{` and `}}` are literal braces; a lone `}` is literal too.
pub fn expand(
    template: &str,
    ctx: &TemplateContext,
    allowed: &Regex,
) -> Result<String, TemplateError> {
    Ok(render(template, ctx, allowed)?.text)
}

/// Everything but the unreserved characters of RFC 3986 (`A-Z a-z 0-9 - . _ ~`) is
/// percent-encoded in a URL value, so a value cannot end its path segment (`/`), start a
/// query or fragment (`?`, `#`), add a parameter (`&`, `=`) or smuggle an escape (`%`).
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Which part of a URL a placeholder stands in, judged from the text before it (values are
/// encoded, so only the template's own characters give the URL its shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlPart {
    /// Scheme, host or port: before the first `/` that follows `://` (or before any `/`).
    Authority,
    Path,
    /// Query or fragment.
    Component,
}

fn url_part(before: &str) -> UrlPart {
    if before.contains(['?', '#']) {
        return UrlPart::Component;
    }
    let after_scheme = before.find("://").map_or(before, |i| &before[i + 3..]);
    if after_scheme.contains('/') {
        UrlPart::Path
    } else {
        UrlPart::Authority
    }
}

/// [`expand`] for a URL: each value must match `allowed`, and is then written so that it
/// cannot change the URL's shape: percent-encoded as one path segment in the path (a value
/// `.` or `..` is refused), as one component in the query or fragment, and refused in the
/// scheme or host when it holds `/ ? # @ \ %`.
pub fn expand_url(
    template: &str,
    ctx: &TemplateContext,
    allowed: &Regex,
) -> Result<String, TemplateError> {
    let encode = |name: &str, value: Cow<'_, str>, before: &str| {
        let placeholder = || format!("{{{name}}}");
        match url_part(before) {
            UrlPart::Authority if value.contains(['/', '?', '#', '@', '\\', '%']) => {
                Err(TemplateError::UrlAuthority {
                    placeholder: placeholder(),
                    value: quoted(&value),
                })
            }
            UrlPart::Authority => Ok(value.into_owned()),
            UrlPart::Path if value == "." || value == ".." => Err(TemplateError::DotSegment {
                placeholder: placeholder(),
                value: value.into_owned(),
            }),
            UrlPart::Path | UrlPart::Component => {
                Ok(utf8_percent_encode(&value, URL_VALUE).to_string())
            }
        }
    };
    Ok(render_with(template, ctx, allowed, &encode)?.text)
}

/// Element-wise argv expansion: one template element → exactly one argv element (never split,
/// never a shell). A substituted value may not begin an element with `-`.
pub fn expand_argv(
    argv: &[String],
    ctx: &TemplateContext,
    allowed: &Regex,
) -> Result<Vec<String>, TemplateError> {
    argv.iter()
        .map(|element| expand_arg(element, ctx, allowed))
        .collect()
}

/// One argv element: [`expand`] plus the rule that a substituted value may not start the
/// argument with `-` (where a literal `-` in the template, as in `--replicas={…}`, is fine).
pub fn expand_arg(
    element: &str,
    ctx: &TemplateContext,
    allowed: &Regex,
) -> Result<String, TemplateError> {
    let rendered = render(element, ctx, allowed)?;
    match rendered.leading {
        Some((placeholder, value)) if value.starts_with('-') => Err(TemplateError::OptionLike {
            placeholder,
            value: quoted(&value),
        }),
        _ => Ok(rendered.text),
    }
}

/// JSON body templating: expands string leaves only; keys and non-string values unchanged.
pub fn expand_json(
    v: &serde_json::Value,
    ctx: &TemplateContext,
    allowed: &Regex,
) -> Result<serde_json::Value, TemplateError> {
    use serde_json::Value;
    Ok(match v {
        Value::String(s) => Value::String(expand(s, ctx, allowed)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| expand_json(item, ctx, allowed))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, item)| Ok((k.clone(), expand_json(item, ctx, allowed)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
    })
}

/// The result of rendering one template string.
struct Rendered {
    text: String,
    /// The placeholder (and its value) that supplied the first character of `text`, if a
    /// placeholder did: the argv option-injection check needs to know who put a `-` there.
    leading: Option<(String, String)>,
}

/// How a checked value is written into the text: `(placeholder name, value, text so far)`.
type Encode<'e> = dyn Fn(&str, Cow<'_, str>, &str) -> Result<String, TemplateError> + 'e;

fn render(
    template: &str,
    ctx: &TemplateContext,
    allowed: &Regex,
) -> Result<Rendered, TemplateError> {
    render_with(
        template,
        ctx,
        allowed,
        &|_, value, _| Ok(value.into_owned()),
    )
}

fn render_with(
    template: &str,
    ctx: &TemplateContext,
    allowed: &Regex,
    encode: &Encode,
) -> Result<Rendered, TemplateError> {
    let mut text = String::with_capacity(template.len());
    let mut leading = None;
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if rest[i..].starts_with("{{") {
            text.push('{');
            rest = &rest[i + 2..];
        } else if rest[i..].starts_with("}}") {
            text.push('}');
            rest = &rest[i + 2..];
        } else if rest.as_bytes()[i] == b'}' {
            text.push('}');
            rest = after;
        } else {
            // A placeholder runs to the next `}`; a `{` before it means the first one was never
            // closed (`{labels.a {labels.b}`), which is a typo, not a name.
            let end = match after.find(['{', '}']) {
                Some(end) if after.as_bytes()[end] == b'}' => end,
                _ => return Err(TemplateError::Unclosed(template.to_string())),
            };
            let name = &after[..end];
            let value = lookup(name, ctx)?;
            check_allowed(name, &value, allowed)?;
            // Nothing written yet means this value supplies the first character.
            if text.is_empty() && !value.is_empty() {
                leading = Some((format!("{{{name}}}"), value.to_string()));
            }
            let written = encode(name, value, &text)?;
            text.push_str(&written);
            rest = &after[end + 1..];
        }
    }
    text.push_str(rest);
    Ok(Rendered { text, leading })
}

pub(crate) fn lookup<'a>(
    name: &str,
    ctx: &TemplateContext<'a>,
) -> Result<Cow<'a, str>, TemplateError> {
    let inc = ctx.incident;
    let map_value = |map: &'a std::collections::BTreeMap<String, String>, what: &str, key: &str| {
        map.get(key)
            .map(|v| Cow::Borrowed(v.as_str()))
            .ok_or_else(|| TemplateError::Missing(format!("{what} {key:?}")))
    };
    match name.split_once('.') {
        Some(("labels", key)) if !key.is_empty() => map_value(&inc.labels, "label", key),
        Some(("annotations", key)) if !key.is_empty() => {
            map_value(&inc.annotations, "annotation", key)
        }
        _ => match name {
            "incident.id" => Ok(Cow::Owned(inc.id.to_string())),
            "incident.severity" => Ok(Cow::Borrowed(inc.severity.as_str())),
            "incident.kind" => Ok(Cow::Borrowed(inc.kind.as_str())),
            "incident.fingerprint" => Ok(Cow::Borrowed(inc.fingerprint.as_str())),
            f if f.starts_with("followup.") && ctx.followup.is_some() => {
                let (n, fu) = ctx.followup.expect("checked");
                match f {
                    "followup.number" => Ok(Cow::Owned(n.to_string())),
                    "followup.text" => Ok(Cow::Borrowed(fu.text.as_str())),
                    "followup.owner" => fu
                        .owner
                        .as_deref()
                        .map(Cow::Borrowed)
                        .ok_or_else(|| TemplateError::Missing("follow-up owner".into())),
                    "followup.kind" => Ok(Cow::Borrowed(fu.kind.label())),
                    "followup.due" => fu
                        .due
                        .map(|d| Cow::Owned(d.format("%Y-%m-%d").to_string()))
                        .ok_or_else(|| TemplateError::Missing("follow-up due date".into())),
                    _ => Err(TemplateError::UnknownPlaceholder(format!("{{{name}}}"))),
                }
            }
            _ => Err(TemplateError::UnknownPlaceholder(format!("{{{name}}}"))),
        },
    }
}

fn check_allowed(name: &str, value: &str, allowed: &Regex) -> Result<(), TemplateError> {
    // Demand a match over the whole value, whatever anchors the caller's regex has or lacks.
    let full = allowed
        .find(value)
        .is_some_and(|m| m.start() == 0 && m.end() == value.len());
    if full {
        return Ok(());
    }
    Err(TemplateError::NotAllowed {
        placeholder: format!("{{{name}}}"),
        value: quoted(value),
        pattern: display_pattern(allowed),
    })
}

/// The pattern as the user wrote it: [`compile_allowed`]'s anchoring wrapper is taken off again.
fn display_pattern(allowed: &Regex) -> String {
    let s = allowed.as_str();
    s.strip_prefix(r"\A(?:")
        .and_then(|s| s.strip_suffix(r")\z"))
        .unwrap_or(s)
        .to_string()
}

/// A value as quoted back in an error, cut to [`MAX_QUOTED_VALUE`] characters.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_VALUE) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::tests_support::incident;
    use crate::domain::severity::Severity;
    use serde_json::json;

    fn inc_with(labels: &[(&str, &str)]) -> Incident {
        let mut inc = incident();
        inc.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        inc.annotations.insert("runbook".into(), "rb-42".into());
        inc.severity = Severity::P1;
        inc.kind = "tool_api_failure".into();
        inc.fingerprint = "0123abcd".into();
        inc
    }

    fn default_re() -> Regex {
        compile_allowed(None).unwrap()
    }

    fn exp(template: &str, inc: &Incident) -> Result<String, TemplateError> {
        expand(
            template,
            &TemplateContext {
                incident: inc,
                followup: None,
            },
            &default_re(),
        )
    }

    #[test]
    fn every_placeholder_kind_expands() {
        let inc = inc_with(&[("service", "api"), ("namespace", "prod")]);
        assert_eq!(
            exp("{labels.namespace}/{labels.service}", &inc).unwrap(),
            "prod/api"
        );
        assert_eq!(exp("rb={annotations.runbook}", &inc).unwrap(), "rb=rb-42");
        assert_eq!(exp("{incident.id}", &inc).unwrap(), "INC-7");
        assert_eq!(exp("{incident.severity}", &inc).unwrap(), "P1");
        assert_eq!(exp("{incident.kind}", &inc).unwrap(), "tool_api_failure");
        assert_eq!(exp("{incident.fingerprint}", &inc).unwrap(), "0123abcd");
        assert_eq!(exp("no placeholders", &inc).unwrap(), "no placeholders");
        assert_eq!(exp("", &inc).unwrap(), "");
    }

    #[test]
    fn hostile_values_are_refused_with_the_value_and_pattern() {
        let long = "a".repeat(200);
        for bad in [
            "$(rm -rf /)",
            "; reboot",
            "a b",
            "x\nreboot",
            "api\n",
            long.as_str(),
            "déploiement",
            "",
            "`id`",
            "a|b",
        ] {
            let inc = inc_with(&[("service", bad)]);
            let err = exp("svc={labels.service}", &inc).unwrap_err();
            match &err {
                TemplateError::NotAllowed {
                    placeholder,
                    value,
                    pattern,
                } => {
                    assert_eq!(placeholder, "{labels.service}");
                    assert_eq!(pattern, DEFAULT_ALLOWED_PATTERN);
                    assert!(bad.starts_with(value.trim_end_matches('…')), "{value:?}");
                }
                other => panic!("{bad:?}: expected NotAllowed, got {other:?}"),
            }
            assert!(err.to_string().ends_with("refusing to run"), "{err}");
        }
        // The quoted value is cut, so a huge label cannot flood the chat message.
        let inc = inc_with(&[("service", &long)]);
        let msg = exp("{labels.service}", &inc).unwrap_err().to_string();
        assert!(msg.len() < 250, "{msg}");
        // 128 characters is the default limit, and is allowed.
        let inc = inc_with(&[("service", &"a".repeat(128))]);
        assert_eq!(exp("{labels.service}", &inc).unwrap().len(), 128);
    }

    #[test]
    fn newline_is_shown_escaped_in_the_message() {
        let inc = inc_with(&[("service", "x\nreboot")]);
        let msg = exp("{labels.service}", &inc).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                r#"{{labels.service}} = "x\nreboot" does not match the allowed pattern {DEFAULT_ALLOWED_PATTERN}; refusing to run"#
            )
        );
    }

    #[test]
    fn missing_unknown_and_unclosed_placeholders_are_errors() {
        let inc = inc_with(&[("service", "api")]);
        assert_eq!(
            exp("{labels.deployment}", &inc),
            Err(TemplateError::Missing("label \"deployment\"".into()))
        );
        assert_eq!(
            exp("{labels.deployment}", &inc).unwrap_err().to_string(),
            "the incident has no label \"deployment\""
        );
        assert_eq!(
            exp("{annotations.summary}", &inc),
            Err(TemplateError::Missing("annotation \"summary\"".into()))
        );
        for unknown in [
            "{service}",
            "{}",
            "{labels.}",
            "{incident.title}",
            "{env.HOME}",
        ] {
            assert_eq!(
                exp(unknown, &inc),
                Err(TemplateError::UnknownPlaceholder(unknown.into())),
                "{unknown}"
            );
        }
        for unclosed in [
            "{labels.x",
            "a {labels.service",
            "{labels.a {labels.service}",
        ] {
            assert_eq!(
                exp(unclosed, &inc),
                Err(TemplateError::Unclosed(unclosed.into())),
                "{unclosed}"
            );
        }
    }

    #[test]
    fn doubled_braces_are_literal() {
        let inc = inc_with(&[("service", "api")]);
        assert_eq!(exp("{{literal}}", &inc).unwrap(), "{literal}");
        assert_eq!(exp("{{{labels.service}}}", &inc).unwrap(), "{api}");
        assert_eq!(exp("a}b", &inc).unwrap(), "a}b");
        // A literal `{labels.x}` written as `{{labels.x}}` is not looked up.
        assert_eq!(exp("{{labels.nope}}", &inc).unwrap(), "{labels.nope}");
    }

    #[test]
    fn custom_pattern_may_allow_spaces_and_is_anchored() {
        let inc = inc_with(&[("reason", "disk full on node 3")]);
        let ctx = TemplateContext {
            incident: &inc,
            followup: None,
        };
        let spaces = compile_allowed(Some("[a-z0-9 ]+")).unwrap();
        assert_eq!(
            expand("{labels.reason}", &ctx, &spaces).unwrap(),
            "disk full on node 3"
        );
        // Anchoring: a partial match is not enough.
        let letters = compile_allowed(Some("[a-z]+")).unwrap();
        let err = expand("{labels.reason}", &ctx, &letters).unwrap_err();
        assert!(
            matches!(&err, TemplateError::NotAllowed { pattern, .. } if pattern == "[a-z]+"),
            "{err:?}"
        );
        // Alternation inside the anchors still means "the whole value".
        let alt = compile_allowed(Some("disk|disk full on node 3")).unwrap();
        assert!(expand("{labels.reason}", &ctx, &alt).is_ok());
        // An unanchored regex passed directly is held to a full match too.
        let raw = Regex::new("[a-z]+").unwrap();
        assert!(expand("{labels.reason}", &ctx, &raw).is_err());

        assert!(matches!(
            compile_allowed(Some("([a-z")),
            Err(TemplateError::BadPattern { .. })
        ));
    }

    #[test]
    fn argv_is_expanded_element_wise_never_split() {
        let inc = inc_with(&[("reason", "disk full; reboot"), ("service", "api")]);
        let ctx = TemplateContext {
            incident: &inc,
            followup: None,
        };
        let permissive = compile_allowed(Some("[a-z ;]+")).unwrap();
        let argv: Vec<String> = [
            "notify",
            "--why={labels.reason}",
            "{labels.reason}",
            "{labels.service}",
        ]
        .map(String::from)
        .to_vec();
        let out = expand_argv(&argv, &ctx, &permissive).unwrap();
        assert_eq!(
            out,
            [
                "notify",
                "--why=disk full; reboot",
                "disk full; reboot",
                "api"
            ]
        );
        // Under the default pattern the same argv is refused as a whole.
        assert!(matches!(
            expand_argv(&argv, &ctx, &default_re()),
            Err(TemplateError::NotAllowed { .. })
        ));
    }

    #[test]
    fn argv_refuses_values_that_would_become_options() {
        let inc = inc_with(&[("ns", "--kubeconfig=/tmp/evil"), ("n", "-1")]);
        let ctx = TemplateContext {
            incident: &inc,
            followup: None,
        };
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let err = expand_argv(
            &argv(&["kubectl", "-n", "{labels.ns}"]),
            &ctx,
            &default_re(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            TemplateError::OptionLike {
                placeholder: "{labels.ns}".into(),
                value: "--kubeconfig=/tmp/evil".into()
            }
        );
        // The same value behind a literal prefix is an ordinary argument.
        assert_eq!(
            expand_argv(
                &argv(&["--replicas={labels.n}", "x{labels.ns}"]),
                &ctx,
                &default_re()
            )
            .unwrap(),
            ["--replicas=-1", "x--kubeconfig=/tmp/evil"]
        );
        // `expand` (URLs, headers, bodies) has no argv positions, so no such rule.
        assert_eq!(exp("{labels.n}", &inc).unwrap(), "-1");
    }

    #[test]
    fn url_values_cannot_change_the_url_shape() {
        let inc = inc_with(&[
            ("target", "../../etc"),
            ("dots", ".."),
            ("dot", "."),
            ("q", "a=1/b:c"),
            ("host", "api.internal:8080"),
            ("evil_host", "evil.example/x"),
            ("service", "api"),
        ]);
        let ctx = TemplateContext {
            incident: &inc,
            followup: None,
        };
        let url = |t: &str| expand_url(t, &ctx, &default_re());
        // A path value is one segment: `/` is encoded, so `..` inside it climbs nothing.
        assert_eq!(
            url("http://127.0.0.1:18398/probe/{labels.target}").unwrap(),
            "http://127.0.0.1:18398/probe/..%2F..%2Fetc"
        );
        // Query and fragment values are one component each.
        assert_eq!(
            url("http://h/p?x={labels.q}&svc={labels.service}#{labels.q}").unwrap(),
            "http://h/p?x=a%3D1%2Fb%3Ac&svc=api#a%3D1%2Fb%3Ac"
        );
        // Ordinary values are unchanged.
        assert_eq!(
            url("http://{labels.host}/health/{labels.service}").unwrap(),
            "http://api.internal:8080/health/api"
        );
        // `.` and `..` as a path value are refused, with the placeholder and the value named.
        for (name, value) in [("dots", ".."), ("dot", ".")] {
            let err = url(&format!("http://h/probe/{{labels.{name}}}")).unwrap_err();
            assert_eq!(
                err,
                TemplateError::DotSegment {
                    placeholder: format!("{{labels.{name}}}"),
                    value: value.into()
                }
            );
            let msg = err.to_string();
            assert!(
                msg.contains("URL path") && msg.ends_with("refusing to run"),
                "{msg}"
            );
        }
        // `..` in a query is just text.
        assert_eq!(
            url("http://h/p?t={labels.dots}").unwrap(),
            "http://h/p?t=.."
        );
        // Before the path, a value may not move the request elsewhere.
        for t in ["http://{labels.evil_host}/p", "{labels.target}/p"] {
            assert!(
                matches!(url(t), Err(TemplateError::UrlAuthority { .. })),
                "{t}: {:?}",
                url(t)
            );
        }
        // The allowed pattern still applies first.
        let inc = inc_with(&[("service", "a b")]);
        let ctx = TemplateContext {
            incident: &inc,
            followup: None,
        };
        assert!(matches!(
            expand_url("http://h/{labels.service}", &ctx, &default_re()),
            Err(TemplateError::NotAllowed { .. })
        ));
    }

    #[test]
    fn json_expands_string_leaves_only() {
        let inc = inc_with(&[("service", "api")]);
        let ctx = TemplateContext {
            incident: &inc,
            followup: None,
        };
        let body = json!({
            "{labels.service}": "{labels.service}",
            "count": 3,
            "ratio": 0.5,
            "on": true,
            "none": null,
            "list": ["{incident.id}", 1, false],
            "nested": {"sev": "{incident.severity}"}
        });
        let out = expand_json(&body, &ctx, &default_re()).unwrap();
        assert_eq!(
            out,
            json!({
                "{labels.service}": "api",
                "count": 3,
                "ratio": 0.5,
                "on": true,
                "none": null,
                "list": ["INC-7", 1, false],
                "nested": {"sev": "P1"}
            })
        );
        let bad = json!({"a": ["{labels.missing}"]});
        assert!(matches!(
            expand_json(&bad, &ctx, &default_re()),
            Err(TemplateError::Missing(_))
        ));
    }
}
