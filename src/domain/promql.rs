//! PromQL query templates: `rate(http_requests_total{service="{labels.service}",code=~"5.."}[5m])`.
//!
//! Label values come from alerts, that is from outside, so a value must never change what the
//! query asks. The rule: a placeholder may only stand inside a double-quoted string that is the
//! value of a label matcher (`name="…"`, `!=`, `=~`, `!~`), and the value is written as the
//! contents of that string literal with every character that could end or bend it escaped
//! (backslash, double quote, newlines and other control characters). In a regex matcher the
//! value is also regex-escaped, so it matches itself literally. Whatever the value, the query
//! keeps the template's shape: the same selectors, functions and operators, only the text
//! inside the quotes differs.
//!
//! Templates are checked when the config is loaded ([`QueryTemplate`] deserializes only from a
//! valid template), so a misplaced placeholder is a config error naming its key, not a refusal
//! at 3 a.m.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A checked query template.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// A placeholder (`labels.service`) inside a matcher's string literal.
    Slot {
        name: String,
        regex: bool,
    },
}

/// Which namespaces a placeholder may name (the same as every other template).
const NAMESPACES: [&str; 3] = ["labels.", "annotations.", "incident."];

/// How a query string literal is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Literal {
    /// The value of `name="…"` or `name!="…"`.
    Equal,
    /// The value of `name=~"…"` or `name!~"…"`: a regular expression.
    Regex,
    /// Anything else (a `label_replace` argument, a string after `by`…).
    Other,
}

impl QueryTemplate {
    /// Checks where each placeholder stands; the error says what to write instead.
    pub fn parse(source: &str) -> Result<QueryTemplate, String> {
        if source.trim().is_empty() {
            return Err("the query is empty".into());
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut depth: i32 = 0;
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    let kind = if depth > 0 {
                        matcher_before(&text)
                    } else {
                        Literal::Other
                    };
                    text.push('"');
                    // Inside the string: escapes are copied as they are, placeholders split.
                    let mut closed = false;
                    while let Some((j, c)) = chars.next() {
                        match c {
                            '\\' => {
                                text.push('\\');
                                if let Some((_, e)) = chars.next() {
                                    text.push(e);
                                }
                            }
                            '"' => {
                                text.push('"');
                                closed = true;
                                break;
                            }
                            '{' => match placeholder_at(&source[j..]) {
                                Some(name) => {
                                    if kind == Literal::Other {
                                        return Err(format!(
                                            "{{{name}}} may only be the value of a label matcher, e.g. service=\"{{{name}}}\""
                                        ));
                                    }
                                    parts.push(Part::Text(std::mem::take(&mut text)));
                                    parts.push(Part::Slot {
                                        name: name.to_string(),
                                        regex: kind == Literal::Regex,
                                    });
                                    for _ in 0..name.chars().count() + 1 {
                                        chars.next();
                                    }
                                }
                                None => text.push('{'),
                            },
                            '\n' => return Err("a string in the query is not closed".into()),
                            c => text.push(c),
                        }
                    }
                    if !closed {
                        return Err("a string in the query is not closed".into());
                    }
                }
                '\'' | '`' => {
                    // Single-quoted and raw strings take no placeholder (a raw string has no
                    // escapes at all, so a value could not be made safe in it).
                    text.push(c);
                    let mut closed = false;
                    while let Some((j, d)) = chars.next() {
                        if d == '\\' && c == '\'' {
                            text.push(d);
                            if let Some((_, e)) = chars.next() {
                                text.push(e);
                            }
                            continue;
                        }
                        if d == '{' {
                            if let Some(name) = placeholder_at(&source[j..]) {
                                return Err(format!(
                                    "{{{name}}} must be in a double-quoted matcher value, e.g. service=\"{{{name}}}\""
                                ));
                            }
                        }
                        text.push(d);
                        if d == c {
                            closed = true;
                            break;
                        }
                    }
                    if !closed {
                        return Err("a string in the query is not closed".into());
                    }
                }
                '#' => {
                    // A comment runs to the end of the line; a placeholder there would be lost.
                    for (_, d) in chars.by_ref() {
                        if d == '\n' {
                            text.push('\n');
                            break;
                        }
                    }
                }
                '{' => {
                    if let Some(name) = placeholder_at(&source[i..]) {
                        return Err(format!(
                            "{{{name}}} outside quotes could change the query; write it as a quoted label matcher value, e.g. service=\"{{{name}}}\""
                        ));
                    }
                    depth += 1;
                    text.push('{');
                }
                '}' => {
                    depth -= 1;
                    text.push('}');
                }
                c => text.push(c),
            }
        }
        if depth != 0 {
            return Err("the query's braces are not balanced".into());
        }
        parts.push(Part::Text(text));
        parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
        Ok(QueryTemplate {
            source: source.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The placeholders it uses (`labels.service`…), in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Slot { name, .. } => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The query with each placeholder's value (from `value`, given the name without braces)
    /// quoted into its string literal.
    pub fn render<'v, E>(
        &self,
        mut value: impl FnMut(&str) -> Result<Cow<'v, str>, E>,
    ) -> Result<String, E> {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Slot { name, regex } => {
                    let v = value(name)?;
                    if *regex {
                        out.push_str(&escape_string(&regex::escape(&v)));
                    } else {
                        out.push_str(&escape_string(&v));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// `{labels.x}` at the start of `s`: the name, if `s` starts with a placeholder.
fn placeholder_at(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('{')?;
    let end = rest.find('}')?;
    let name = &rest[..end];
    let ns = NAMESPACES.iter().find(|n| name.starts_with(*n))?;
    let key = &name[ns.len()..];
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    ok.then_some(name)
}

/// What operator (if any) precedes a string literal inside braces.
fn matcher_before(text: &str) -> Literal {
    let t = text.trim_end();
    if t.ends_with("=~") || t.ends_with("!~") {
        Literal::Regex
    } else if t.ends_with('=') {
        // `=`, `!=`; `==` is a comparison between expressions, not a matcher.
        if t.ends_with("==") {
            Literal::Other
        } else {
            Literal::Equal
        }
    } else {
        Literal::Other
    }
}

/// The contents of a double-quoted PromQL string literal that reads back as `value`: backslash
/// and double quote escaped, newline, carriage return and tab as `\n \r \t`, every other
/// control character as `\uXXXX`. Nothing in the result can end the literal.
pub fn escape_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for QueryTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for QueryTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for QueryTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        QueryTemplate::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a double-quoted literal's contents back the way PromQL does (Go escapes).
    fn unquote(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                assert_ne!(c, '"', "an unescaped quote in {s:?}");
                assert_ne!(c, '\n', "a raw newline in {s:?}");
                out.push(c);
                continue;
            }
            match it.next().unwrap() {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = it.by_ref().take(4).collect();
                    let unit = u16::from_str_radix(&hex, 16).unwrap();
                    out.push(char::from_u32(unit as u32).unwrap());
                }
                c @ ('\\' | '"') => out.push(c),
                other => panic!("escape \\{other} in {s:?}"),
            }
        }
        out
    }

    fn render_with(t: &QueryTemplate, v: &str) -> String {
        t.render(|_| Ok::<_, ()>(Cow::Owned(v.to_string())))
            .unwrap()
    }

    #[test]
    fn string_literal_escaping_table() {
        for (value, escaped) in [
            ("api", "api"),
            ("", ""),
            (r#"a"b"#, r#"a\"b"#),
            (r"a\b", r"a\\b"),
            (r#"\""#, r#"\\\""#),
            ("line\nnext", r"line\nnext"),
            ("cr\rtab\t", r"cr\rtab\t"),
            ("bell\u{7}del\u{7f}", r"bell\u0007del\u007f"),
            ("nel\u{85}", r"nel\u0085"),
            ("ünïcødé ✓", "ünïcødé ✓"),
            (r#"api"} or vector(1) #"#, r#"api\"} or vector(1) #"#),
            ("{labels.x}", "{labels.x}"),
        ] {
            assert_eq!(escape_string(value), escaped, "{value:?}");
            assert_eq!(unquote(escaped), value, "{escaped:?}");
        }
    }

    #[test]
    fn placeholders_render_inside_their_literals() {
        let t = QueryTemplate::parse(
            r#"sum(rate(http_requests_total{service="{labels.service}",code=~"5..",pod=~"{labels.service}-.*"}[5m]))"#,
        )
        .unwrap();
        assert_eq!(
            t.placeholders().collect::<Vec<_>>(),
            ["labels.service", "labels.service"]
        );
        assert_eq!(
            render_with(&t, "api"),
            r#"sum(rate(http_requests_total{service="api",code=~"5..",pod=~"api-.*"}[5m]))"#
        );
        // In a regex matcher the value matches itself only.
        assert_eq!(
            render_with(&t, "a.b"),
            r#"sum(rate(http_requests_total{service="a.b",code=~"5..",pod=~"a\\.b-.*"}[5m]))"#
        );
        // No placeholder: the text as is, comments dropped.
        let plain = QueryTemplate::parse("up{job=\"x\"} # why\n== 0").unwrap();
        assert_eq!(render_with(&plain, "-"), "up{job=\"x\"} \n== 0");
        // Braces inside strings are text, not selectors or placeholders.
        let t = QueryTemplate::parse(r#"x{a=~"b{2}",c!="{labels.c}"}"#).unwrap();
        assert_eq!(render_with(&t, "}"), r#"x{a=~"b{2}",c!="}"}"#);
    }

    #[test]
    fn misplaced_placeholders_are_refused_with_advice() {
        for (query, says) in [
            ("up{job={labels.job}}", "outside quotes"),
            ("rate(x[5m]) > {labels.threshold}", "outside quotes"),
            ("{labels.metric}", "outside quotes"),
            (
                r#"label_replace(up, "a", "{labels.x}", "b", ".*")"#,
                "only be the value of a label matcher",
            ),
            ("up{job='{labels.job}'}", "double-quoted"),
            ("up{job=`{labels.job}`}", "double-quoted"),
            ("up{job=\"x}", "not closed"),
            ("up{job=\"x\"", "not balanced"),
            ("", "empty"),
        ] {
            let err = QueryTemplate::parse(query).unwrap_err();
            assert!(err.contains(says), "{query:?}: {err}");
        }
        // Unknown names in strings are text (`{2}` in a regex, `{x}` in a value).
        assert!(QueryTemplate::parse(r#"up{job="{x}"}"#).is_ok());
    }

    #[test]
    fn serde_reads_and_checks_the_source_text() {
        #[derive(Debug, Deserialize, Serialize)]
        struct W {
            q: QueryTemplate,
        }
        let w: W = toml::from_str(r#"q = 'up{job="{labels.job}"}'"#).unwrap();
        assert_eq!(w.q.source(), r#"up{job="{labels.job}"}"#);
        assert_eq!(
            toml::to_string(&w).unwrap().trim(),
            r#"q = 'up{job="{labels.job}"}'"#
        );
        let err = toml::from_str::<W>("q = 'up{job={labels.job}}'").unwrap_err();
        assert!(err.to_string().contains("outside quotes"), "{err}");
    }

    /// What a query means apart from the contents of its string literals: the text outside
    /// them. A value may change what is between quotes, never this.
    fn skeleton(query: &str) -> String {
        let mut out = String::new();
        let mut it = query.chars();
        while let Some(c) = it.next() {
            if c == '"' {
                out.push_str("\"S\"");
                loop {
                    match it.next() {
                        Some('\\') => {
                            it.next();
                        }
                        Some('"') | None => break,
                        Some(_) => {}
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn no_value_changes_the_query_shape(value in "\\PC*|[\"\\\\\n\r{}#`'=~!]*") {
            let t = QueryTemplate::parse(
                r#"sum(rate(errors_total{service="{labels.service}",pod=~"{labels.service}-.*"}[5m])) / sum(rate(requests_total{service="{labels.service}"}[5m]))"#,
            ).unwrap();
            let benign = render_with(&t, "x");
            let rendered = render_with(&t, &value);
            proptest::prop_assert_eq!(skeleton(&rendered), skeleton(&benign));
            proptest::prop_assert!(!rendered.contains('\n'));
        }
    }
}
