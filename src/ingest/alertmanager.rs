//! Prometheus Alertmanager webhook bodies (`webhook_configs`, payload version "4") → alerts.
//!
//! Only the fields the bot uses are declared; the rest (`groupKey`, `commonLabels`, …) is
//! skipped unparsed, which keeps decoding cheap and accepts fields newer Alertmanagers add.
//! The notification's `groupLabels` (what the route's `group_by` grouped by) go on every alert:
//! the alerts of one Alertmanager group become one incident. The label set is used rather than
//! the `groupKey` string because the same group posted into a chat channel can be matched by
//! its labels, never by Alertmanager's route path.

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::{
    annotation_links, cut_text, describe, from_json, item_path, real_time, title_from_labels,
    BoundedList, DecodeError, Links, StringMap, MAX_VALUE_BYTES,
};
use crate::domain::alert::{fingerprint_labels, Alert, AlertSource, AlertStatus};

/// The only webhook payload version there is so far.
const SUPPORTED_VERSION: &str = "4";

#[derive(Deserialize)]
struct Webhook {
    // Checked while parsing: Alertmanager writes `version` first, so a body of another version
    // is reported as such rather than as whatever field it happens to lack.
    #[serde(rename = "version", default)]
    _version: Version,
    /// The group's status: not used (each alert has its own), but checked, so a wrong-typed one
    /// is named rather than ignored.
    #[serde(rename = "status", default)]
    _status: Option<AlertStatus>,
    #[serde(rename = "externalURL", default)]
    external_url: Option<String>,
    #[serde(rename = "groupLabels", default)]
    group_labels: StringMap,
    alerts: BoundedList<WebhookAlert>,
}

#[derive(Default)]
struct Version;

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some(SUPPORTED_VERSION) => Ok(Version),
            Some(other) => Err(de::Error::custom(format_args!(
                "unsupported Alertmanager webhook version {other:?}, expected \"{SUPPORTED_VERSION}\""
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert {
    status: AlertStatus,
    labels: StringMap,
    #[serde(default)]
    annotations: StringMap,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    #[serde(rename = "generatorURL")]
    generator_url: Option<String>,
    fingerprint: Option<String>,
}

pub(super) fn decode(body: &[u8]) -> Result<Vec<Alert>, DecodeError> {
    let hook: Webhook = from_json(body)?;
    let alerts = hook.alerts.0;
    if alerts.is_empty() {
        return Err(DecodeError::invalid("alerts", "must not be empty"));
    }
    let external_url = hook.external_url.as_deref();
    let group = &hook.group_labels.0;
    alerts
        .into_iter()
        .enumerate()
        .map(|(i, alert)| alert.into_alert(i, external_url, group))
        .collect()
}

impl WebhookAlert {
    fn into_alert(
        self,
        index: usize,
        external_url: Option<&str>,
        group: &std::collections::BTreeMap<String, String>,
    ) -> Result<Alert, DecodeError> {
        let labels = self.labels.0;
        let mut annotations = self.annotations.0;
        if labels.is_empty() {
            // Every label-less alert would share one fingerprint and so one incident.
            return Err(DecodeError::invalid(
                item_path("alerts", Some(index), "labels"),
                "must not be empty",
            ));
        }
        // Always our own label hash, never the sender's: the same alert posted into a chat
        // channel (labels parsed from the message) must land on the same incident. The
        // sender's fingerprint is kept for cross-reference.
        let fingerprint = fingerprint_labels(&labels);
        if let Some(f) = self.fingerprint.filter(|f| !f.trim().is_empty()) {
            annotations.insert(
                "alertmanager_fingerprint".to_owned(),
                cut_text(f, MAX_VALUE_BYTES),
            );
        }
        let mut links = Links::default();
        if let Some(url) = self.generator_url {
            links.push("Source", url);
        }
        annotation_links(&annotations, &mut links);
        if let Some(url) = external_url {
            links.push("Alertmanager", url);
        }
        let links = links.finish(&mut annotations);
        Ok(Alert {
            source: AlertSource::Alertmanager,
            fingerprint,
            status: self.status,
            title: title_from_labels(&labels, &annotations),
            description: describe(&annotations),
            labels,
            annotations,
            starts_at: real_time(self.starts_at),
            ends_at: real_time(self.ends_at),
            links,
            origin: None,
            group_labels: group.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Link;

    /// A real-shaped Alertmanager 0.27 webhook: two firing alerts and one resolved.
    const BODY: &str = r#"{
      "receiver": "incidentd",
      "status": "firing",
      "alerts": [
        {
          "status": "firing",
          "labels": {
            "alertname": "HighErrorRate",
            "service": "api",
            "instance": "10.0.3.7:8080",
            "job": "api",
            "severity": "critical"
          },
          "annotations": {
            "summary": "Error rate above 5%",
            "description": "api is returning 7.3% 5xx over the last 5 minutes",
            "runbook_url": "https://runbooks.example.com/HighErrorRate",
            "dashboard_url": "https://grafana.example.com/d/api"
          },
          "startsAt": "2024-05-01T10:02:11.123Z",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "http://prometheus:9090/graph?g0.expr=rate%28http_requests_total%7Bcode%3D~%225..%22%7D%5B5m%5D%29&g0.tab=1",
          "fingerprint": "b9c3a5d0c1e2f3a4"
        },
        {
          "status": "firing",
          "labels": {
            "alertname": "HighErrorRate",
            "service": "api",
            "instance": "10.0.3.8:8080",
            "job": "api",
            "severity": "critical"
          },
          "annotations": {"summary": "Error rate above 5%"},
          "startsAt": "2024-05-01T10:02:41Z",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "",
          "fingerprint": ""
        },
        {
          "status": "resolved",
          "labels": {"alertname": "DiskFull", "instance": "db-1", "severity": "warning"},
          "annotations": {"description": "/var is 91% full", "grafana_url": "https://grafana.example.com/d/disk"},
          "startsAt": "2024-05-01T09:00:00+02:00",
          "endsAt": "2024-05-01T09:30:00Z",
          "generatorURL": "http://prometheus:9090/graph?g0.expr=disk",
          "fingerprint": "0f1e2d3c4b5a6978"
        }
      ],
      "groupLabels": {"alertname": "HighErrorRate"},
      "commonLabels": {"alertname": "HighErrorRate", "job": "api", "service": "api", "severity": "critical"},
      "commonAnnotations": {"summary": "Error rate above 5%"},
      "externalURL": "http://alertmanager.example.com:9093",
      "version": "4",
      "groupKey": "{}:{alertname=\"HighErrorRate\"}",
      "truncatedAlerts": 0,
      "someFieldFromTheFuture": {"nested": [1, 2, 3]}
    }"#;

    fn link_pairs(links: &[Link]) -> Vec<(&str, &str)> {
        links
            .iter()
            .map(|l| (l.title.as_str(), l.url.as_str()))
            .collect()
    }

    fn invalid(err: DecodeError) -> (String, String) {
        match err {
            DecodeError::Invalid { path, message } => (path, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn decodes_a_v4_webhook() {
        let alerts = decode(BODY.as_bytes()).unwrap();
        assert_eq!(alerts.len(), 3);

        let a = &alerts[0];
        assert_eq!(a.source, AlertSource::Alertmanager);
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.fingerprint, fingerprint_labels(&a.labels));
        assert_eq!(
            a.annotations["alertmanager_fingerprint"],
            "b9c3a5d0c1e2f3a4"
        );
        assert_eq!(a.title, "HighErrorRate (api, 10.0.3.7:8080)");
        assert_eq!(
            a.description.as_deref(),
            Some("Error rate above 5%\n\napi is returning 7.3% 5xx over the last 5 minutes")
        );
        assert_eq!(a.label("severity"), Some("critical"));
        assert_eq!(a.labels.len(), 5);
        assert_eq!(
            a.annotations["runbook_url"],
            "https://runbooks.example.com/HighErrorRate"
        );
        assert_eq!(
            a.starts_at,
            Some("2024-05-01T10:02:11.123Z".parse().unwrap())
        );
        assert_eq!(a.ends_at, None, "Go's zero time means still firing");
        assert_eq!(
            link_pairs(&a.links),
            [
                ("Source", "http://prometheus:9090/graph?g0.expr=rate%28http_requests_total%7Bcode%3D~%225..%22%7D%5B5m%5D%29&g0.tab=1"),
                ("Runbook", "https://runbooks.example.com/HighErrorRate"),
                ("Dashboard", "https://grafana.example.com/d/api"),
                ("Alertmanager", "http://alertmanager.example.com:9093"),
            ]
        );
        assert_eq!(a.origin, None);
    }

    #[test]
    fn empty_fingerprint_and_urls_fall_back() {
        let alerts = decode(BODY.as_bytes()).unwrap();
        let b = &alerts[1];
        assert_eq!(b.fingerprint, fingerprint_labels(&b.labels));
        assert_ne!(b.fingerprint, alerts[0].fingerprint);
        assert_eq!(b.title, "HighErrorRate (api, 10.0.3.8:8080)");
        assert_eq!(b.description.as_deref(), Some("Error rate above 5%"));
        assert_eq!(
            link_pairs(&b.links),
            [("Alertmanager", "http://alertmanager.example.com:9093")]
        );
    }

    #[test]
    fn resolved_alert_keeps_its_end_time() {
        let alerts = decode(BODY.as_bytes()).unwrap();
        let c = &alerts[2];
        assert_eq!(c.status, AlertStatus::Resolved);
        assert_eq!(c.fingerprint, fingerprint_labels(&c.labels));
        assert_eq!(
            c.annotations["alertmanager_fingerprint"],
            "0f1e2d3c4b5a6978"
        );
        assert_eq!(c.title, "DiskFull (db-1)");
        assert_eq!(c.description.as_deref(), Some("/var is 91% full"));
        assert_eq!(c.starts_at, Some("2024-05-01T07:00:00Z".parse().unwrap()));
        assert_eq!(c.ends_at, Some("2024-05-01T09:30:00Z".parse().unwrap()));
        assert_eq!(
            link_pairs(&c.links),
            [
                ("Source", "http://prometheus:9090/graph?g0.expr=disk"),
                ("Dashboard", "https://grafana.example.com/d/disk"),
                ("Alertmanager", "http://alertmanager.example.com:9093"),
            ]
        );
    }

    #[test]
    fn same_labels_without_fingerprint_give_the_same_fingerprint() {
        let body = |instance: &str, status: &str, starts: &str| {
            format!(
                r#"{{"alerts": [{{"status": "{status}", "startsAt": "{starts}",
                    "labels": {{"alertname": "Down", "instance": "{instance}"}},
                    "annotations": {{"summary": "started {starts}"}}}}]}}"#
            )
        };
        let fp = |b: String| decode(b.as_bytes()).unwrap().remove(0).fingerprint;
        let first = fp(body("a", "firing", "2024-05-01T10:00:00Z"));
        assert_eq!(first, fp(body("a", "resolved", "2024-05-01T11:00:00Z")));
        assert_ne!(first, fp(body("b", "firing", "2024-05-01T10:00:00Z")));
    }

    #[test]
    fn missing_version_is_accepted() {
        let body = r#"{"alerts": [{"status": "firing", "labels": {"alertname": "X"}}]}"#;
        let alerts = decode(body.as_bytes()).unwrap();
        assert_eq!(alerts[0].title, "X");
        assert_eq!(alerts[0].links, []);
        assert_eq!(alerts[0].starts_at, None);
    }

    #[test]
    fn other_versions_are_rejected() {
        let body =
            r#"{"version": "5", "alerts": [{"status": "firing", "labels": {"alertname": "X"}}]}"#;
        let (path, message) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "version");
        assert!(
            message.starts_with(r#"unsupported Alertmanager webhook version "5", expected "4""#),
            "{message}"
        );
    }

    #[test]
    fn malformed_json_is_a_json_error() {
        let err = decode(&BODY.as_bytes()[..BODY.len() / 2]).unwrap_err();
        assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
        let err = decode(b"{\"alerts\": [}").unwrap_err();
        assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
    }

    #[test]
    fn wrong_type_names_the_alert() {
        let body = r#"{"version": "4", "alerts": [
            {"status": "firing", "labels": {"alertname": "A"}},
            {"status": "firing", "labels": "alertname=B"}
        ]}"#;
        let err = decode(body.as_bytes()).unwrap_err();
        let (path, message) = invalid(err);
        assert_eq!(path, "alerts[1].labels");
        assert!(
            message.starts_with(
                r#"invalid type: string "alertname=B", expected a map of strings at line 3"#
            ),
            "{message}"
        );
    }

    #[test]
    fn missing_and_unknown_values_name_the_field() {
        let (path, message) = invalid(decode(br#"{"version": "4"}"#).unwrap_err());
        assert_eq!(path, "(root)");
        assert!(message.starts_with("missing field `alerts`"), "{message}");

        let body = r#"{"alerts": [{"labels": {"alertname": "A"}}]}"#;
        let (path, message) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "alerts[0]");
        assert!(message.starts_with("missing field `status`"), "{message}");

        let body = r#"{"alerts": [{"status": "pending", "labels": {"alertname": "A"}}]}"#;
        let (path, message) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "alerts[0].status");
        assert!(
            message.starts_with("unknown variant `pending`"),
            "{message}"
        );

        let body = r#"{"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": "yesterday"}]}"#;
        let (path, _) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "alerts[0].startsAt");
    }

    #[test]
    fn number_label_value_is_a_type_error() {
        let body =
            r#"{"alerts": [{"status": "firing", "labels": {"alertname": "A", "service": 5}}]}"#;
        let (path, message) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "alerts[0].labels.service");
        assert!(
            message.starts_with("invalid type: integer `5`, expected a string"),
            "{message}"
        );
    }

    #[test]
    fn empty_alert_list_is_invalid() {
        let err = decode(br#"{"version": "4", "status": "firing", "alerts": []}"#).unwrap_err();
        assert_eq!(err.to_string(), "alerts: must not be empty");
    }

    #[test]
    fn alert_without_labels_is_invalid() {
        let body = r#"{"alerts": [{"status": "firing", "labels": {"alertname": "A"}}, {"status": "firing", "labels": {}}]}"#;
        let err = decode(body.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "alerts[1].labels: must not be empty");
    }

    #[test]
    fn a_long_sender_fingerprint_is_cut() {
        let long = "b".repeat(4 * super::super::MAX_VALUE_BYTES);
        let body = BODY.replacen("b9c3a5d0c1e2f3a4", &long, 1);
        let a = decode(body.as_bytes()).unwrap().remove(0);
        let v = &a.annotations["alertmanager_fingerprint"];
        assert!(
            v.len() < super::super::MAX_VALUE_BYTES + 64,
            "{} bytes",
            v.len()
        );
        assert!(v.starts_with("bbbb") && v.ends_with("bytes)"));
    }

    #[test]
    fn limits_are_enforced() {
        let long = "x".repeat(super::super::MAX_VALUE_BYTES + 1);
        let body = format!(
            r#"{{"alerts": [{{"status": "firing", "labels": {{"alertname": "A"}}, "annotations": {{"description": "{long}"}}}}]}}"#
        );
        let (path, message) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "alerts[0].annotations.description");
        assert!(message.contains("over the 16384-byte limit"), "{message}");

        let labels: Vec<String> = (0..=super::super::MAX_LABELS)
            .map(|i| format!(r#""l{i}": "v""#))
            .collect();
        let body = format!(
            r#"{{"alerts": [{{"status": "firing", "labels": {{{}}}}}]}}"#,
            labels.join(",")
        );
        let (path, message) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "alerts[0].labels");
        assert!(message.starts_with("more than 256 entries"), "{message}");

        let one = r#"{"status":"firing","labels":{"alertname":"A"}}"#;
        let many = vec![one; super::super::MAX_ALERTS + 1].join(",");
        let body = format!(r#"{{"alerts": [{many}]}}"#);
        let (path, message) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "alerts");
        assert!(message.starts_with("more than 10000 items"), "{message}");
    }
}
