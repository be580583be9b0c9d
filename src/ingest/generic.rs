//! The generic JSON alert format, for senders that are neither Alertmanager nor Grafana (cron
//! jobs, CI, custom scripts): one object or an array of objects.
//!
//! ```json
//! {"title": "Backup failed", "status": "firing", "severity": "warning",
//!  "labels": {"job": "backup"}, "annotations": {"runbook_url": "https://…"},
//!  "description": "…", "fingerprint": "…", "links": [{"title": "Log", "url": "https://…"}],
//!  "starts_at": "2024-05-01T10:00:00Z"}
//! ```
//!
//! Unlike the other decoders, unknown fields are rejected: these bodies are written by hand,
//! and a typo such as `serverity` must not be dropped silently.
//!
//! Bounds (besides the label and annotation limits of every decoder): the first
//! [`MAX_LINKS`](super::MAX_LINKS) distinct links are kept and the others counted in the
//! [`LINKS_DROPPED_ANNOTATION`](super::LINKS_DROPPED_ANNOTATION) annotation; a description
//! over [`MAX_DESCRIPTION_BYTES`] is cut with the cut marked; a fingerprint over
//! [`MAX_FINGERPRINT_BYTES`] is replaced by its hash.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    annotation_links, cut_text, describe, from_json, item_path, one_line, BoundedList, DecodeError,
    Links, StringMap, MAX_DESCRIPTION_BYTES, MAX_FINGERPRINT_BYTES, MAX_VALUE_BYTES, ROOT_PATH,
};
use crate::domain::alert::{fingerprint_labels, Alert, AlertSource, AlertStatus};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericAlert {
    title: String,
    status: Option<AlertStatus>,
    severity: Option<String>,
    #[serde(default)]
    labels: StringMap,
    #[serde(default)]
    annotations: StringMap,
    description: Option<String>,
    fingerprint: Option<String>,
    #[serde(default)]
    links: Vec<GenericLink>,
    starts_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericLink {
    title: Option<String>,
    url: String,
}

pub(super) fn decode(body: &[u8]) -> Result<Vec<Alert>, DecodeError> {
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_array {
        return Ok(vec![from_json::<GenericAlert>(body)?.into_alert(None)?]);
    }
    let alerts = from_json::<BoundedList<GenericAlert>>(body)?.0;
    if alerts.is_empty() {
        return Err(DecodeError::invalid(ROOT_PATH, "must not be empty"));
    }
    alerts
        .into_iter()
        .enumerate()
        .map(|(i, alert)| alert.into_alert(Some(i)))
        .collect()
}

/// Checks a field that ends up as a label value, as the label maps are checked; the error is
/// the message, for the caller to put its path on.
fn check_value(value: &str) -> Result<&str, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "value is {} bytes long, over the {MAX_VALUE_BYTES}-byte limit",
            value.len()
        ));
    }
    Ok(value)
}

/// A fingerprint over [`MAX_FINGERPRINT_BYTES`] as `sha256:` and 32 hex digits of its hash:
/// short enough to key the store, and the same for every repeat.
fn hashed_fingerprint(f: &str) -> String {
    let digest = Sha256::digest(f.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl GenericAlert {
    fn into_alert(self, index: Option<usize>) -> Result<Alert, DecodeError> {
        let title = check_value(&self.title)
            .map_err(|m| DecodeError::invalid(item_path("", index, "title"), m))?;
        let mut labels = self.labels.0;
        let mut annotations = self.annotations.0;

        if let Some(severity) = self.severity.as_deref() {
            let severity = check_value(severity)
                .map_err(|m| DecodeError::invalid(item_path("", index, "severity"), m))?;
            match labels.get("severity") {
                Some(existing) if existing != severity => {
                    return Err(DecodeError::invalid(
                        item_path("", index, "severity"),
                        format!("{severity:?} conflicts with labels.severity {existing:?}"),
                    ));
                }
                Some(_) => {}
                None => {
                    labels.insert("severity".to_owned(), severity.to_owned());
                }
            }
        }
        // Stored as well as fingerprinted, so the labels always reproduce the fingerprint.
        if !labels.contains_key("alertname") {
            labels.insert("alertname".to_owned(), title.to_owned());
        }

        let mut links = Links::default();
        for (i, link) in self.links.into_iter().enumerate() {
            let url = check_value(&link.url).map_err(|m| {
                DecodeError::invalid(item_path("", index, &format!("links[{i}].url")), m)
            })?;
            let title = link
                .title
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .unwrap_or(url);
            links.push(title, url);
        }
        annotation_links(&annotations, &mut links);

        let description = self
            .description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty())
            .map(|d| cut_text(d, MAX_DESCRIPTION_BYTES))
            .or_else(|| describe(&annotations));
        let fingerprint = match self.fingerprint {
            Some(f) if f.len() > MAX_FINGERPRINT_BYTES => hashed_fingerprint(&f),
            Some(f) if !f.trim().is_empty() => f,
            _ => fingerprint_labels(&labels),
        };

        let links = links.finish(&mut annotations);
        Ok(Alert {
            source: AlertSource::Generic,
            fingerprint,
            status: self.status.unwrap_or(AlertStatus::Firing),
            title: one_line(title),
            description,
            labels,
            annotations,
            starts_at: self.starts_at,
            ends_at: None,
            links,
            origin: None,
            group_labels: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::alert::Link;

    fn invalid(err: DecodeError) -> (String, String) {
        match err {
            DecodeError::Invalid { path, message } => (path, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn one(body: &str) -> Alert {
        let mut alerts = decode(body.as_bytes()).unwrap();
        assert_eq!(alerts.len(), 1);
        alerts.remove(0)
    }

    /// 50 000 links (1.4 MB, every URL twice): decoded in linear time, kept to the first
    /// `MAX_LINKS` distinct ones, the rest counted; the alert itself is kept whole.
    #[test]
    fn links_are_deduplicated_and_capped() {
        use super::super::{LINKS_DROPPED_ANNOTATION, MAX_LINKS, MAX_LINK_URL_BYTES};
        let links: Vec<String> = (0..50_000)
            .map(|i| format!(r#"{{"url": "https://example.com/{}"}}"#, i % 25_000))
            .collect();
        let body = format!(
            r#"{{"title": "Many links", "links": [{{"title": "Long", "url": "https://example.com/{}"}}, {}]}}"#,
            "x".repeat(MAX_LINK_URL_BYTES),
            links.join(",")
        );
        assert!(body.len() > 1_400_000);
        let a = one(&body);
        assert_eq!(a.title, "Many links");
        assert_eq!(a.links.len(), MAX_LINKS);
        let urls: Vec<String> = a.links.iter().map(|l| l.url.clone()).collect();
        let expected: Vec<String> = (0..MAX_LINKS)
            .map(|i| format!("https://example.com/{i}"))
            .collect();
        assert_eq!(urls, expected);
        // 25 000 distinct URLs and the over-long one, of which MAX_LINKS were kept.
        assert_eq!(
            a.annotations
                .get(LINKS_DROPPED_ANNOTATION)
                .map(String::as_str),
            Some((25_000 + 1 - MAX_LINKS).to_string().as_str())
        );
        // What gets stored with the incident stays small.
        let stored = serde_json::to_vec(&a).unwrap().len();
        assert!(stored < 4096, "{stored} bytes");

        // A few links: nothing dropped, nothing noted.
        let a = one(r#"{"title": "t", "links": [{"url": "https://a"}, {"url": " https://a "}]}"#);
        assert_eq!(a.links.len(), 1);
        assert!(!a.annotations.contains_key(LINKS_DROPPED_ANNOTATION));
    }

    #[test]
    fn long_descriptions_are_cut_and_long_fingerprints_hashed() {
        use super::super::{MAX_DESCRIPTION_BYTES, MAX_FINGERPRINT_BYTES};
        let long = "é".repeat(MAX_DESCRIPTION_BYTES);
        let a = one(&format!(r#"{{"title": "t", "description": "{long}"}}"#));
        let d = a.description.unwrap();
        assert!(d.len() < MAX_DESCRIPTION_BYTES + 64, "{} bytes", d.len());
        assert!(d.starts_with(&long[..1000]));
        assert!(
            d.ends_with(&format!("(cut: {} bytes)", long.len())),
            "{}",
            &d[d.len() - 40..]
        );

        let fp = |f: &str| one(&format!(r#"{{"title": "t", "fingerprint": "{f}"}}"#)).fingerprint;
        let long = "f".repeat(10 * MAX_FINGERPRINT_BYTES);
        let hashed = fp(&long);
        assert!(hashed.starts_with("sha256:") && hashed.len() <= MAX_FINGERPRINT_BYTES);
        assert_eq!(fp(&long), hashed, "repeats keep their identity");
        assert_ne!(fp(&format!("{long}g")), hashed);
        let at_limit = "f".repeat(MAX_FINGERPRINT_BYTES);
        assert_eq!(fp(&at_limit), at_limit);
    }

    #[test]
    fn decodes_a_full_object() {
        let a = one(r#"{
              "title": "Nightly backup failed",
              "status": "firing",
              "severity": "warning",
              "labels": {"job": "backup", "host": "db-1"},
              "annotations": {"runbook_url": "https://runbooks.example.com/backup", "summary": "see logs"},
              "description": "pg_dump exited with status 1",
              "links": [{"title": "Job log", "url": "https://ci.example.com/jobs/42"}, {"url": "https://status.example.com"}],
              "starts_at": "2024-05-01T02:00:00+02:00"
            }"#);
        assert_eq!(a.source, AlertSource::Generic);
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.title, "Nightly backup failed");
        assert_eq!(
            a.description.as_deref(),
            Some("pg_dump exited with status 1")
        );
        let expected: BTreeMap<String, String> = [
            ("alertname", "Nightly backup failed"),
            ("host", "db-1"),
            ("job", "backup"),
            ("severity", "warning"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(a.labels, expected);
        assert_eq!(a.fingerprint, fingerprint_labels(&expected));
        assert_eq!(a.starts_at, Some("2024-05-01T00:00:00Z".parse().unwrap()));
        assert_eq!(
            a.links,
            [
                Link {
                    title: "Job log".into(),
                    url: "https://ci.example.com/jobs/42".into()
                },
                Link {
                    title: "https://status.example.com".into(),
                    url: "https://status.example.com".into()
                },
                Link {
                    title: "Runbook".into(),
                    url: "https://runbooks.example.com/backup".into()
                },
            ]
        );
    }

    #[test]
    fn minimal_object_defaults_to_firing() {
        let a = one(r#"{"title": "  Payments API returning 503s  "}"#);
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.title, "Payments API returning 503s");
        assert_eq!(a.label("alertname"), Some("Payments API returning 503s"));
        assert_eq!(a.labels.len(), 1);
        assert_eq!(a.description, None);
        assert_eq!(a.starts_at, None);
        assert!(a.links.is_empty());
    }

    #[test]
    fn array_of_alerts_and_fingerprint_relations() {
        let alerts = decode(
            br#" [
              {"title": "Disk full", "labels": {"host": "a"}},
              {"title": "Disk full", "labels": {"host": "a"}, "status": "resolved", "description": "freed"},
              {"title": "Disk full", "labels": {"host": "b"}},
              {"title": "Anything", "labels": {"alertname": "Disk full", "host": "a"}},
              {"title": "Custom", "fingerprint": "my-own-id"}
            ]"#,
        )
        .unwrap();
        assert_eq!(alerts.len(), 5);
        assert_eq!(alerts[1].status, AlertStatus::Resolved);
        assert_eq!(alerts[0].fingerprint, alerts[1].fingerprint);
        assert_ne!(alerts[0].fingerprint, alerts[2].fingerprint);
        // An explicit alertname label is the identity, whatever the title says.
        assert_eq!(alerts[3].fingerprint, alerts[0].fingerprint);
        assert_eq!(alerts[3].title, "Anything");
        assert_eq!(alerts[4].fingerprint, "my-own-id");
    }

    #[test]
    fn severity_field_and_label_must_agree() {
        let a =
            one(r#"{"title": "X", "severity": "critical", "labels": {"severity": "critical"}}"#);
        assert_eq!(a.label("severity"), Some("critical"));
        let (path, message) = invalid(
            decode(br#"{"title": "X", "severity": "critical", "labels": {"severity": "info"}}"#)
                .unwrap_err(),
        );
        assert_eq!(path, "severity");
        assert_eq!(
            message,
            r#""critical" conflicts with labels.severity "info""#
        );
    }

    #[test]
    fn missing_or_empty_title_is_invalid() {
        let (path, message) = invalid(decode(br#"{"status": "firing"}"#).unwrap_err());
        assert_eq!(path, "(root)");
        assert!(message.starts_with("missing field `title`"), "{message}");

        let err = decode(br#"[{"title": "ok"}, {"title": "  "}]"#).unwrap_err();
        assert_eq!(err.to_string(), "[1].title: must not be empty");

        let (path, message) = invalid(decode(br#"[{"title": "ok"}, {"labels": {}}]"#).unwrap_err());
        assert_eq!(path, "[1]");
        assert!(message.starts_with("missing field `title`"), "{message}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let (path, message) =
            invalid(decode(br#"{"title": "X", "serverity": "critical"}"#).unwrap_err());
        assert_eq!(path, "serverity");
        assert!(
            message.starts_with("unknown field `serverity`, expected one of"),
            "{message}"
        );

        let (path, message) = invalid(
            decode(br#"[{"title": "X", "links": [{"url": "http://a", "name": "A"}]}]"#)
                .unwrap_err(),
        );
        assert_eq!(path, "[0].links[0].name");
        assert!(message.starts_with("unknown field `name`"), "{message}");
    }

    #[test]
    fn wrong_types_and_values_are_named() {
        let (path, _) = invalid(decode(br#"{"title": "X", "status": "pending"}"#).unwrap_err());
        assert_eq!(path, "status");
        let (path, _) =
            invalid(decode(br#"[{"title": "X"}, {"title": "Y", "labels": "a=b"}]"#).unwrap_err());
        assert_eq!(path, "[1].labels");
        let (path, _) = invalid(decode(br#"{"title": "X", "starts_at": "10:02"}"#).unwrap_err());
        assert_eq!(path, "starts_at");
        let (path, _) = invalid(decode(br#"{"title": 5}"#).unwrap_err());
        assert_eq!(path, "title");
        let err = decode(br#"{"title": "X", "links": [{"title": "A", "url": " "}]}"#).unwrap_err();
        assert_eq!(err.to_string(), "links[0].url: must not be empty");
        let (path, message) = invalid(decode(b"\"just a string\"").unwrap_err());
        assert_eq!(path, "(root)");
        assert!(message.starts_with("invalid type: string"), "{message}");
    }

    #[test]
    fn empty_array_and_malformed_json() {
        let err = decode(b" [ ] ").unwrap_err();
        assert_eq!(err.to_string(), "(root): must not be empty");
        for body in [
            &b"{\"title\": \"X\""[..],
            b"[{\"title\": \"X\"},]",
            b"",
            b"title=X",
        ] {
            let err = decode(body).unwrap_err();
            assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        let (path, message) =
            invalid(decode(format!(r#"{{"title": "{long}"}}"#).as_bytes()).unwrap_err());
        assert_eq!(path, "title");
        assert!(message.contains("over the 16384-byte limit"), "{message}");
        let body = format!(r#"[{{"title": "X"}}, {{"title": "Y", "labels": {{"k": "{long}"}}}}]"#);
        let (path, _) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "[1].labels.k");
        let many = vec![r#"{"title":"X"}"#; super::super::MAX_ALERTS + 1].join(",");
        let (path, message) = invalid(decode(format!("[{many}]").as_bytes()).unwrap_err());
        assert_eq!(path, "(root)");
        assert!(message.starts_with("more than 10000 items"), "{message}");
    }
}
