//! Ingest: turns inbound payloads (Alertmanager, Grafana and generic JSON webhooks, and chat
//! messages posted in alert channels) into normalized [`Alert`]s, so nothing past this module
//! sees a source-specific shape.
//!
//! The webhook decoders share one error type, [`DecodeError`], whose variants map to HTTP
//! statuses: [`DecodeError::Json`] is a body that is not JSON at all (400), and
//! [`DecodeError::Invalid`] is well-formed JSON with a missing, mistyped or out-of-limit field,
//! named by its JSON path (422). This file also holds what the decoders have in common: the
//! size limits, the limit-checking deserializers, and the title/description/link helpers.

pub mod alertmanager;
pub mod chat_message;
pub mod generic;
pub mod grafana;

pub use chat_message::{
    alert_channel_message, looks_like_alert, parse_chat_alerts, parse_chat_message,
    requested_alert, ChatAttachment, ChatEmbed, ChatField, ChatMessage,
};

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Datelike, Utc};
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::domain::alert::{Alert, Link};

/// Most alerts accepted in one body.
pub const MAX_ALERTS: usize = 10_000;
/// Longest label or annotation name or value, in bytes.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Most labels (or annotations) on one alert.
pub const MAX_LABELS: usize = 256;
/// Longest alert title built here, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// Most links kept on one alert. Further distinct links are dropped and counted in the
/// [`LINKS_DROPPED_ANNOTATION`] annotation: a card shows a handful of buttons, and every kept
/// link is stored with the incident and each of its events.
pub const MAX_LINKS: usize = 20;
/// Longest link URL kept, in bytes; a longer one is dropped and counted like a link over
/// [`MAX_LINKS`] (chat platforms refuse such buttons anyway).
pub const MAX_LINK_URL_BYTES: usize = 2048;
/// The annotation that says how many distinct links of an alert were not kept (over
/// [`MAX_LINKS`] or longer than [`MAX_LINK_URL_BYTES`]); absent when none were dropped.
pub const LINKS_DROPPED_ANNOTATION: &str = "incidentd_links_dropped";

/// Longest description kept, in bytes (a generic alert's `description`, a legacy Grafana
/// `message`); a longer one is cut and the cut marked (see [`cut_text`]). Descriptions built
/// from annotations are already bounded by [`MAX_VALUE_BYTES`] per annotation.
pub const MAX_DESCRIPTION_BYTES: usize = 32 * 1024;
/// Longest fingerprint a generic alert may bring, in bytes; a longer one is replaced by
/// `sha256:` and the first 32 hex digits of its hash, so repeats still match.
pub const MAX_FINGERPRINT_BYTES: usize = 256;

/// The path shown for an error that concerns the whole body.
pub(crate) const ROOT_PATH: &str = "(root)";

/// A payload that cannot be turned into alerts.
///
/// `Display` gives a one-line message fit for an HTTP error body, naming the JSON path of the
/// problem where there is one, e.g.
/// `alerts[2].labels: invalid type: string "x", expected a map of strings at line 1 column 40`.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not well-formed JSON (HTTP 400).
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Well-formed JSON that is not a valid payload: a missing or mistyped field, an empty alert
    /// list, an unsupported version or a value over a limit (HTTP 422).
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl DecodeError {
    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        DecodeError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Decodes a Prometheus Alertmanager webhook body (version "4").
pub fn decode_alertmanager(body: &[u8]) -> Result<Vec<Alert>, DecodeError> {
    alertmanager::decode(body)
}

/// Decodes a Grafana webhook body: unified alerting (Grafana ≥ 8) or legacy alerting.
pub fn decode_grafana(body: &[u8]) -> Result<Vec<Alert>, DecodeError> {
    grafana::decode(body)
}

/// Decodes the generic JSON format: one alert object or an array of them.
pub fn decode_generic(body: &[u8]) -> Result<Vec<Alert>, DecodeError> {
    generic::decode(body)
}

/// Deserializes a whole body, keeping the JSON path of the first type error.
pub(crate) fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    // Fast path: tracking the path costs about as much as decoding, and is only needed to
    // explain an error, so a body that decodes is decoded once, without it.
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| classify(body, e))?;
    de.end().map_err(|e| DecodeError::Json(e.to_string()))?;
    Ok(value)
}

fn classify(body: &[u8], err: serde_path_to_error::Error<serde_json::Error>) -> DecodeError {
    use serde_json::error::Category;
    match err.inner().classify() {
        Category::Data => {
            // Deserialization stops at the first wrong field, which may come before a syntax
            // error further on; a broken document must still be reported as broken (400).
            if let Err(syntax) = serde_json::from_slice::<IgnoredAny>(body) {
                return DecodeError::Json(syntax.to_string());
            }
            let path = err.path().to_string();
            DecodeError::Invalid {
                path: if path == "." {
                    ROOT_PATH.to_owned()
                } else {
                    path
                },
                message: err.into_inner().to_string(),
            }
        }
        Category::Syntax | Category::Eof | Category::Io => {
            DecodeError::Json(err.into_inner().to_string())
        }
    }
}

/// The path of `field` in item `index` of the array `list` (`alerts[2].labels`, `[2].title`
/// for a top-level array), or of a top-level `field` when there is no index. Built only when
/// an error is reported, so the success path allocates no paths.
pub(crate) fn item_path(list: &str, index: Option<usize>, field: &str) -> String {
    match index {
        Some(i) => format!("{list}[{i}].{field}"),
        None => field.to_owned(),
    }
}

/// A JSON array of at most [`MAX_ALERTS`] items; longer arrays are rejected while parsing, so an
/// oversized body never gets fully materialized.
#[derive(Debug)]
pub(crate) struct BoundedList<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for BoundedList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = BoundedList<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                loop {
                    if items.len() == MAX_ALERTS {
                        return match seq.next_element::<IgnoredAny>()? {
                            Some(_) => Err(de::Error::custom(format_args!(
                                "more than {MAX_ALERTS} items in one body"
                            ))),
                            None => Ok(BoundedList(items)),
                        };
                    }
                    match seq.next_element()? {
                        Some(item) => items.push(item),
                        None => return Ok(BoundedList(items)),
                    }
                }
            }
        }

        d.deserialize_seq(ListVisitor(PhantomData))
    }
}

/// Deserializes a list keeping at most `N` items: the rest are skipped unparsed (a chat message
/// with a thousand attachments still becomes one alert, read from its first few). For lists a
/// platform bounds itself (Slack attachments, Discord embeds and their fields), so a longer one
/// is hostile or broken and cutting it loses nothing a person would see.
pub(crate) fn capped<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Capped<T, const N: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Capped<T, N> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while items.len() < N {
                match seq.next_element()? {
                    Some(item) => items.push(item),
                    None => return Ok(items),
                }
            }
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(items)
        }
    }

    d.deserialize_any(Capped::<T, N>(PhantomData))
}

/// Most attachments (Slack) or embeds (Discord) of a chat message read; Discord allows 10,
/// Slack advises at most 20.
pub const MAX_CHAT_PARTS: usize = 32;
/// Most fields of one attachment or embed read (Discord allows 25).
pub const MAX_CHAT_FIELDS: usize = 64;

/// A label or annotation map: string keys and values, at most [`MAX_LABELS`] entries, names and
/// values at most [`MAX_VALUE_BYTES`] long. `null` reads as empty (Go encodes a nil map so).
/// Values must be strings, as Alertmanager and Grafana send them: a number is a type error. A
/// key given twice is an error that names it.
#[derive(Debug, Default)]
pub(crate) struct StringMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor;

        impl<'de> Visitor<'de> for MapVisitor {
            type Value = StringMap;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings")
            }

            fn visit_unit<E: de::Error>(self) -> Result<StringMap, E> {
                Ok(StringMap::default())
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.len() == MAX_LABELS && !out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!(
                            "more than {MAX_LABELS} entries"
                        )));
                    }
                    if key.len() > MAX_VALUE_BYTES {
                        return Err(de::Error::custom(format_args!(
                            "key is {} bytes long, over the {MAX_VALUE_BYTES}-byte limit",
                            key.len()
                        )));
                    }
                    let LimitedValue(value) = map.next_value()?;
                    // Given twice, which one holds is a guess (Go and JavaScript keep the last,
                    // other parsers the first): refuse it and name the key.
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
                    }
                    out.insert(key, value);
                }
                Ok(StringMap(out))
            }
        }

        d.deserialize_any(MapVisitor)
    }
}

/// One label/annotation value, checked against [`MAX_VALUE_BYTES`] before it is copied.
struct LimitedValue(String);

impl<'de> Deserialize<'de> for LimitedValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;

        fn check<E: de::Error>(len: usize) -> Result<(), E> {
            if len > MAX_VALUE_BYTES {
                return Err(E::custom(format_args!(
                    "value is {len} bytes long, over the {MAX_VALUE_BYTES}-byte limit"
                )));
            }
            Ok(())
        }

        impl Visitor<'_> for ValueVisitor {
            type Value = LimitedValue;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<LimitedValue, E> {
                check(v.len())?;
                Ok(LimitedValue(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<LimitedValue, E> {
                check(v.len())?;
                Ok(LimitedValue(v))
            }
        }

        d.deserialize_string(ValueVisitor)
    }
}

/// Go's zero `time.Time` (`0001-01-01T00:00:00Z`), which Alertmanager and Grafana send for
/// "not set", becomes `None`.
pub(crate) fn real_time(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.filter(|t| t.year() > 1)
}

/// Labels whose values, after the alertname, tell one instance of an alert from another.
const IDENTIFYING_LABELS: [&str; 5] = ["service", "job", "instance", "namespace", "deployment"];
/// How many identifying values go into a title.
const MAX_TITLE_VALUES: usize = 3;

/// A one-line title for a labelled alert: `alertname (service, instance)` from the first few
/// distinct identifying label values; without an alertname, the summary annotation, then the
/// label pairs. At most [`MAX_TITLE_CHARS`] characters.
pub(crate) fn title_from_labels(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> String {
    if let Some(name) = non_empty(labels, "alertname") {
        let mut values: Vec<&str> = Vec::with_capacity(MAX_TITLE_VALUES);
        for key in IDENTIFYING_LABELS {
            if let Some(v) = non_empty(labels, key) {
                if values.len() < MAX_TITLE_VALUES && !values.contains(&v) {
                    values.push(v);
                }
            }
        }
        let title = if values.is_empty() {
            name.to_owned()
        } else {
            format!("{name} ({})", values.join(", "))
        };
        return one_line(&title);
    }
    if let Some(summary) = non_empty(annotations, "summary") {
        return one_line(summary);
    }
    if !labels.is_empty() {
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return one_line(&pairs.join(", "));
    }
    "Untitled alert".to_owned()
}

/// `text` cut to at most `max_bytes` (on a character boundary) with the cut marked
/// (`… (cut: 70000 bytes)`, the original length); shorter text is returned as is.
pub(crate) fn cut_text(text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let mut cut = max_bytes;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… (cut: {} bytes)", &text[..cut], text.len())
}

/// A map entry, trimmed, unless it is blank.
pub(crate) fn non_empty<'a>(map: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    map.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// The first non-blank line of `text`, trimmed and cut to [`MAX_TITLE_CHARS`] characters
/// (an ellipsis marks the cut).
pub(crate) fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match line.char_indices().nth(MAX_TITLE_CHARS - 1) {
        Some((cut, _)) if line[cut..].chars().nth(1).is_some() => {
            let mut s = String::with_capacity(cut + 3);
            s.push_str(line[..cut].trim_end());
            s.push('…');
            s
        }
        _ => line.to_owned(),
    }
}

/// The human text of an alert from its annotations: `summary` and `description` (both when they
/// differ), else `message` (older kube-prometheus rules use it).
pub(crate) fn describe(annotations: &BTreeMap<String, String>) -> Option<String> {
    let get = |key: &str| non_empty(annotations, key);
    match (get("summary"), get("description")) {
        (Some(s), Some(d)) if s != d => Some(format!("{s}\n\n{d}")),
        (Some(s), _) => Some(s.to_owned()),
        (None, Some(d)) => Some(d.to_owned()),
        (None, None) => get("message").map(str::to_owned),
    }
}

/// The links of one alert as they are collected: blank and repeated URLs are skipped (an
/// alert often carries the same URL under two names, e.g. `dashboard_url` and `grafana_url`),
/// the first [`MAX_LINKS`] distinct ones are kept, titles are cut to one line of at most
/// [`MAX_TITLE_CHARS`], and the distinct ones not kept are counted. A set of the URLs seen
/// makes each link one lookup, whatever their number.
#[derive(Debug, Default)]
pub(crate) struct Links {
    kept: Vec<Link>,
    seen: HashSet<String>,
    dropped: usize,
}

impl Links {
    pub(crate) fn push(&mut self, title: &str, url: impl Into<String>) {
        let mut url: String = url.into();
        let trimmed = url.trim();
        if trimmed.len() != url.len() {
            url = trimmed.to_owned();
        }
        if url.is_empty() || self.seen.contains(&url) {
            return;
        }
        if self.kept.len() == MAX_LINKS || url.len() > MAX_LINK_URL_BYTES {
            self.dropped += 1;
            self.seen.insert(url);
            return;
        }
        self.seen.insert(url.clone());
        self.kept.push(Link {
            title: one_line(title),
            url,
        });
    }

    /// The kept links; when some were dropped, their number goes into the
    /// [`LINKS_DROPPED_ANNOTATION`] annotation.
    pub(crate) fn finish(self, annotations: &mut BTreeMap<String, String>) -> Vec<Link> {
        if self.dropped > 0 {
            annotations.insert(
                LINKS_DROPPED_ANNOTATION.to_owned(),
                self.dropped.to_string(),
            );
        }
        self.kept
    }
}

/// Annotations that conventionally hold URLs, with the link title each gets.
const LINK_ANNOTATIONS: [(&str, &str); 3] = [
    ("runbook_url", "Runbook"),
    ("dashboard_url", "Dashboard"),
    ("grafana_url", "Dashboard"),
];

/// Adds the runbook/dashboard links found in annotations.
pub(crate) fn annotation_links(annotations: &BTreeMap<String, String>, links: &mut Links) {
    for (key, title) in LINK_ANNOTATIONS {
        if let Some(url) = annotations.get(key) {
            links.push(title, url.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[derive(Debug, Deserialize)]
    struct Doc {
        #[serde(default)]
        labels: StringMap,
        #[serde(default)]
        items: Option<BoundedList<u8>>,
    }

    fn invalid(err: DecodeError) -> (String, String) {
        match err {
            DecodeError::Invalid { path, message } => (path, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_json_errors() {
        for body in [
            &b""[..],
            b"{",
            b"{\"labels\": {\"a\": }",
            b"{} trailing",
            b"nope",
        ] {
            let err = from_json::<Doc>(body).unwrap_err();
            assert!(
                matches!(err, DecodeError::Json(_)),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(body)
            );
            assert!(err.to_string().starts_with("invalid JSON: "), "{err}");
        }
    }

    #[test]
    fn type_error_before_a_syntax_error_is_still_a_json_error() {
        // The wrong type at `labels` is met first, but the document is broken further on.
        let err = from_json::<Doc>(br#"{"labels": "x", "items": [1,"#).unwrap_err();
        assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
    }

    #[test]
    fn type_errors_name_their_path() {
        let err = from_json::<Doc>(br#"{"labels": {"a": "b", "c": {}}}"#).unwrap_err();
        let (path, message) = invalid(err);
        assert_eq!(path, "labels.c");
        assert!(
            message.starts_with("invalid type: map, expected a string"),
            "{message}"
        );
        assert!(message.contains("line 1 column"), "{message}");

        let err = from_json::<Doc>(br#"{"labels": "x"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"labels: invalid type: string "x", expected a map of strings at line 1 column 14"#
        );

        let (path, _) = invalid(from_json::<Doc>(br#"{"items": [1, 2, "x"]}"#).unwrap_err());
        assert_eq!(path, "items[2]");

        let (path, message) = invalid(from_json::<Doc>(b"5").unwrap_err());
        assert_eq!(path, ROOT_PATH);
        assert!(message.contains("expected struct Doc"), "{message}");
    }

    #[test]
    fn string_map_takes_strings_and_null_as_empty() {
        let doc: Doc = from_json(br#"{"labels": {"s": "x", "e": "", "u": "\u00e9"}}"#).unwrap();
        assert_eq!(doc.labels.0, map(&[("s", "x"), ("e", ""), ("u", "é")]));
        let doc: Doc = from_json(br#"{"labels": null}"#).unwrap();
        assert!(doc.labels.0.is_empty());
        for value in ["null", "8080", "true", "[]"] {
            let body = format!(r#"{{"labels": {{"a": "b", "port": {value}}}}}"#);
            let (path, message) = invalid(from_json::<Doc>(body.as_bytes()).unwrap_err());
            assert_eq!(path, "labels.port");
            assert!(message.contains("expected a string"), "{message}");
        }
    }

    #[test]
    fn string_map_rejects_long_values_and_names() {
        let ok = format!(
            r#"{{"labels": {{"a": "{}"}}}}"#,
            "x".repeat(MAX_VALUE_BYTES)
        );
        assert_eq!(
            from_json::<Doc>(ok.as_bytes()).unwrap().labels.0["a"].len(),
            MAX_VALUE_BYTES
        );

        let long = format!(
            r#"{{"labels": {{"a": "{}"}}}}"#,
            "x".repeat(MAX_VALUE_BYTES + 1)
        );
        let (path, message) = invalid(from_json::<Doc>(long.as_bytes()).unwrap_err());
        assert_eq!(path, "labels.a");
        assert!(message.starts_with("value is 16385 bytes long, over the 16384-byte limit"));

        let long_key = format!(
            r#"{{"labels": {{"{}": "a"}}}}"#,
            "k".repeat(MAX_VALUE_BYTES + 1)
        );
        let (path, message) = invalid(from_json::<Doc>(long_key.as_bytes()).unwrap_err());
        assert_eq!(path, "labels");
        assert!(message.starts_with("key is 16385 bytes long, over the 16384-byte limit"));
    }

    fn labels_json(n: usize) -> String {
        let pairs: Vec<String> = (0..n).map(|i| format!(r#""l{i}": "v""#)).collect();
        format!(r#"{{"labels": {{{}}}}}"#, pairs.join(","))
    }

    #[test]
    fn string_map_rejects_too_many_entries() {
        let doc: Doc = from_json(labels_json(MAX_LABELS).as_bytes()).unwrap();
        assert_eq!(doc.labels.0.len(), MAX_LABELS);
        let (path, message) =
            invalid(from_json::<Doc>(labels_json(MAX_LABELS + 1).as_bytes()).unwrap_err());
        assert_eq!(path, "labels");
        assert!(message.starts_with("more than 256 entries"), "{message}");
    }

    #[test]
    fn bounded_list_rejects_more_than_the_limit() {
        let items = |n: usize| format!(r#"{{"items": [{}]}}"#, vec!["1"; n].join(","));
        let doc: Doc = from_json(items(MAX_ALERTS).as_bytes()).unwrap();
        assert_eq!(doc.items.unwrap().0.len(), MAX_ALERTS);
        let (path, message) =
            invalid(from_json::<Doc>(items(MAX_ALERTS + 1).as_bytes()).unwrap_err());
        assert_eq!(path, "items");
        assert!(
            message.starts_with("more than 10000 items in one body"),
            "{message}"
        );
    }

    #[test]
    fn zero_time_is_none() {
        let zero: DateTime<Utc> = "0001-01-01T00:00:00Z".parse().unwrap();
        let real: DateTime<Utc> = "2024-05-01T10:00:00Z".parse().unwrap();
        assert_eq!(real_time(Some(zero)), None);
        assert_eq!(real_time(Some(real)), Some(real));
        assert_eq!(real_time(None), None);
    }

    #[test]
    fn titles_from_labels() {
        let none = BTreeMap::new();
        let labels = map(&[
            ("alertname", "HighErrorRate"),
            ("service", "api"),
            ("job", "api"),
            ("instance", "10.0.0.1:9090"),
            ("namespace", "prod"),
            ("deployment", "api-v2"),
            ("severity", "critical"),
        ]);
        // `job` repeats `service` and is skipped; at most three values.
        assert_eq!(
            title_from_labels(&labels, &none),
            "HighErrorRate (api, 10.0.0.1:9090, prod)"
        );
        assert_eq!(
            title_from_labels(&map(&[("alertname", "Watchdog")]), &none),
            "Watchdog"
        );
        let summary = map(&[("summary", "\n  Disk almost full\nmore text")]);
        assert_eq!(
            title_from_labels(&map(&[("device", "sda")]), &summary),
            "Disk almost full"
        );
        assert_eq!(
            title_from_labels(&map(&[("device", "sda"), ("host", "a")]), &none),
            "device=sda, host=a"
        );
        assert_eq!(title_from_labels(&none, &none), "Untitled alert");
    }

    #[test]
    fn long_titles_are_cut_on_a_char_boundary() {
        let exact = "é".repeat(MAX_TITLE_CHARS);
        assert_eq!(one_line(&exact), exact);
        let long = "é".repeat(MAX_TITLE_CHARS + 1);
        let cut = one_line(&long);
        assert_eq!(cut.chars().count(), MAX_TITLE_CHARS);
        assert!(cut.ends_with("é…"));
        let labels = map(&[("alertname", &"A".repeat(300)), ("service", "api")]);
        assert_eq!(
            title_from_labels(&labels, &BTreeMap::new()).chars().count(),
            MAX_TITLE_CHARS
        );
    }

    #[test]
    fn descriptions_from_annotations() {
        assert_eq!(
            describe(&map(&[("summary", "S"), ("description", "D")])).as_deref(),
            Some("S\n\nD")
        );
        assert_eq!(
            describe(&map(&[("summary", "S"), ("description", "S")])).as_deref(),
            Some("S")
        );
        assert_eq!(
            describe(&map(&[("summary", " "), ("description", "D")])).as_deref(),
            Some("D")
        );
        assert_eq!(describe(&map(&[("message", "M")])).as_deref(), Some("M"));
        assert_eq!(describe(&map(&[("runbook_url", "http://r")])), None);
    }

    #[test]
    fn links_skip_blanks_and_duplicates() {
        let mut links = Links::default();
        links.push("Source", " http://a ");
        links.push("Other", "http://a");
        links.push("Empty", "  ");
        annotation_links(
            &map(&[
                ("runbook_url", "http://runbook"),
                ("dashboard_url", "http://dash"),
                ("grafana_url", "http://dash"),
            ]),
            &mut links,
        );
        let mut annotations = BTreeMap::new();
        let links = links.finish(&mut annotations);
        let got: Vec<(&str, &str)> = links
            .iter()
            .map(|l| (l.title.as_str(), l.url.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Source", "http://a"),
                ("Runbook", "http://runbook"),
                ("Dashboard", "http://dash")
            ]
        );
        assert!(annotations.is_empty(), "nothing dropped: {annotations:?}");
    }

    #[test]
    fn links_are_capped_and_the_dropped_ones_counted() {
        let mut links = Links::default();
        let long = format!("http://x/{}", "y".repeat(MAX_LINK_URL_BYTES));
        links.push("Too long", long.as_str());
        for i in 0..3 * MAX_LINKS {
            links.push(&format!("Link {i}\nsecond line"), format!("http://l/{i}"));
            links.push("Again", format!("http://l/{i}"));
        }
        links.push("Too long again", long);
        links.push(&"t".repeat(5 * MAX_TITLE_CHARS), "http://l/0");
        let mut annotations = BTreeMap::new();
        let links = links.finish(&mut annotations);
        assert_eq!(links.len(), MAX_LINKS);
        assert_eq!(links[0].title, "Link 0");
        assert_eq!(
            links[MAX_LINKS - 1].url,
            format!("http://l/{}", MAX_LINKS - 1)
        );
        assert_eq!(
            annotations[LINKS_DROPPED_ANNOTATION],
            (2 * MAX_LINKS + 1).to_string()
        );
        let mut links = Links::default();
        links.push(&"t".repeat(5 * MAX_TITLE_CHARS), "http://l/0");
        let title = &links.finish(&mut annotations)[0].title;
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS);
    }
}
