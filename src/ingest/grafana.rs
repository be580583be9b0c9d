//! Grafana webhook bodies → alerts, in both shapes Grafana has sent:
//!
//! - unified alerting (Grafana ≥ 8): an Alertmanager-like body with `alerts[]`, each carrying
//!   Grafana's extra URLs (`dashboardURL`, `panelURL`, `silenceURL`);
//! - legacy dashboard alerting (before 8): one rule's state change (`ruleName`, `state`,
//!   `evalMatches`, `tags`), read as one alert.
//!
//! The shape is told by the presence of `alerts`. Unknown fields are accepted in both.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    annotation_links, cut_text, describe, from_json, item_path, real_time, title_from_labels,
    BoundedList, DecodeError, Links, StringMap, MAX_DESCRIPTION_BYTES, MAX_VALUE_BYTES, ROOT_PATH,
};
use crate::domain::alert::{fingerprint_labels, Alert, AlertSource, AlertStatus};

/// Both shapes in one struct, so one parse serves either and type errors keep their path.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    /// Unified alerting.
    alerts: Option<BoundedList<UnifiedAlert>>,
    // Legacy alerting from here on. `state` and `title` also exist in unified bodies, where they
    // are ignored.
    state: Option<String>,
    title: Option<String>,
    /// A number from Grafana; a string is taken too.
    rule_id: Option<serde_json::Value>,
    rule_name: Option<String>,
    rule_url: Option<String>,
    message: Option<String>,
    eval_matches: Option<BoundedList<EvalMatch>>,
    #[serde(default)]
    tags: StringMap,
    image_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnifiedAlert {
    status: AlertStatus,
    labels: StringMap,
    #[serde(default)]
    annotations: StringMap,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    #[serde(rename = "generatorURL")]
    generator_url: Option<String>,
    fingerprint: Option<String>,
    #[serde(rename = "silenceURL")]
    silence_url: Option<String>,
    #[serde(rename = "dashboardURL")]
    dashboard_url: Option<String>,
    #[serde(rename = "panelURL")]
    panel_url: Option<String>,
    value_string: Option<String>,
}

#[derive(Deserialize)]
struct EvalMatch {
    metric: Option<String>,
    value: Option<f64>,
}

/// Annotation that keeps Grafana's `valueString` / legacy `evalMatches` (the measured values),
/// for the incident card; annotations never take part in the fingerprint.
const VALUES_ANNOTATION: &str = "value_string";

pub(super) fn decode(body: &[u8]) -> Result<Vec<Alert>, DecodeError> {
    let body: Body = from_json(body)?;
    if let Some(alerts) = body.alerts {
        return decode_unified(alerts.0);
    }
    let is_legacy = body.state.is_some() || body.rule_name.is_some() || body.rule_id.is_some();
    if !is_legacy {
        return Err(DecodeError::invalid(
            ROOT_PATH,
            "not a Grafana alert: expected `alerts` (unified alerting) or `ruleName` and `state` \
             (legacy alerting)",
        ));
    }
    body.into_legacy_alert().map(|alert| vec![alert])
}

fn decode_unified(alerts: Vec<UnifiedAlert>) -> Result<Vec<Alert>, DecodeError> {
    if alerts.is_empty() {
        return Err(DecodeError::invalid("alerts", "must not be empty"));
    }
    alerts
        .into_iter()
        .enumerate()
        .map(|(i, alert)| alert.into_alert(i))
        .collect()
}

impl UnifiedAlert {
    fn into_alert(self, index: usize) -> Result<Alert, DecodeError> {
        let labels = self.labels.0;
        let mut annotations = self.annotations.0;
        if labels.is_empty() {
            return Err(DecodeError::invalid(
                item_path("alerts", Some(index), "labels"),
                "must not be empty",
            ));
        }
        if let Some(values) = self.value_string.filter(|v| !v.trim().is_empty()) {
            annotations.insert(
                VALUES_ANNOTATION.to_owned(),
                cut_text(values, MAX_VALUE_BYTES),
            );
        }
        // Always our own label hash, never the sender's: the same alert posted into a chat
        // channel (labels parsed from the message) must land on the same incident. The
        // sender's fingerprint is kept for cross-reference.
        let fingerprint = fingerprint_labels(&labels);
        if let Some(f) = self.fingerprint.filter(|f| !f.trim().is_empty()) {
            annotations.insert(
                "grafana_fingerprint".to_owned(),
                cut_text(f, MAX_VALUE_BYTES),
            );
        }
        let mut links = Links::default();
        if let Some(url) = self.generator_url {
            links.push("Source", url);
        }
        annotation_links(&annotations, &mut links);
        for (title, url) in [
            ("Dashboard", self.dashboard_url),
            ("Panel", self.panel_url),
            ("Silence", self.silence_url),
        ] {
            if let Some(url) = url {
                links.push(title, url);
            }
        }
        let links = links.finish(&mut annotations);
        Ok(Alert {
            source: AlertSource::Grafana,
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
            group_labels: Default::default(),
        })
    }
}

/// Label under which a legacy alert keeps its rule id, so two rules of the same name on
/// different dashboards stay apart.
const RULE_ID_LABEL: &str = "rule_id";

impl Body {
    fn into_legacy_alert(self) -> Result<Alert, DecodeError> {
        let status = match self.state.as_deref().map(str::trim) {
            Some("ok") => AlertStatus::Resolved,
            Some("alerting" | "no_data" | "paused" | "pending") => AlertStatus::Firing,
            Some(other) => {
                return Err(DecodeError::invalid(
                    "state",
                    format!(
                        "unknown state {other:?}, expected one of `alerting`, `ok`, `no_data`, \
                         `paused`, `pending`"
                    ),
                ))
            }
            None => return Err(DecodeError::invalid("state", "missing field `state`")),
        };

        // Tags first, so the rule's own identity wins over a tag of the same name.
        let mut labels: BTreeMap<String, String> = self.tags.0;
        let name = self
            .rule_name
            .filter(|n| !n.trim().is_empty())
            .or_else(|| self.title.as_deref().map(strip_state_prefix));
        if let Some(name) = name {
            let name = name.trim();
            // A label like any other: held to the same limit as the tags.
            if name.len() > MAX_VALUE_BYTES {
                return Err(DecodeError::invalid(
                    "ruleName",
                    format!(
                        "value is {} bytes long, over the {MAX_VALUE_BYTES}-byte limit",
                        name.len()
                    ),
                ));
            }
            labels.insert("alertname".to_owned(), name.to_owned());
        }
        match self.rule_id {
            Some(serde_json::Value::Number(n)) => {
                labels.insert(RULE_ID_LABEL.to_owned(), n.to_string());
            }
            Some(serde_json::Value::String(s)) if s.len() <= MAX_VALUE_BYTES => {
                labels.insert(RULE_ID_LABEL.to_owned(), s);
            }
            None | Some(serde_json::Value::Null) => {}
            Some(_) => {
                return Err(DecodeError::invalid(
                    "ruleId",
                    "expected a number or a short string",
                ))
            }
        }
        if !labels.contains_key("alertname") && !labels.contains_key(RULE_ID_LABEL) {
            return Err(DecodeError::invalid(
                "ruleName",
                "missing: a legacy Grafana alert needs `ruleName`, `ruleId` or `title`",
            ));
        }

        let mut annotations = BTreeMap::new();
        if let Some(matches) = self.eval_matches {
            let values: Vec<String> = matches
                .0
                .into_iter()
                .filter_map(|m| Some(format!("{}={}", m.metric?, m.value?)))
                .collect();
            if !values.is_empty() {
                annotations.insert(
                    VALUES_ANNOTATION.to_owned(),
                    cut_text(values.join(", "), MAX_VALUE_BYTES),
                );
            }
        }

        let mut links = Links::default();
        if let Some(url) = self.rule_url {
            links.push("Source", url);
        }
        if let Some(url) = self.image_url {
            links.push("Image", url);
        }

        let links = links.finish(&mut annotations);
        Ok(Alert {
            source: AlertSource::Grafana,
            fingerprint: fingerprint_labels(&labels),
            status,
            title: title_from_labels(&labels, &annotations),
            description: self
                .message
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty())
                .map(|m| cut_text(m, MAX_DESCRIPTION_BYTES)),
            labels,
            annotations,
            starts_at: None,
            ends_at: None,
            links,
            origin: None,
            group_labels: Default::default(),
        })
    }
}

/// `[Alerting] Panel Title alert` → `Panel Title alert`.
fn strip_state_prefix(title: &str) -> String {
    let title = title.trim();
    match title
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
    {
        Some((_, rest)) => rest.trim().to_owned(),
        None => title.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Link;

    /// Grafana 10 unified alerting webhook: one firing alert, one resolved.
    const UNIFIED: &str = r#"{
      "receiver": "incidentd",
      "status": "firing",
      "orgId": 1,
      "alerts": [
        {
          "status": "firing",
          "labels": {"alertname": "HighCPU", "grafana_folder": "Infra", "instance": "host1:9100", "team": "sre"},
          "annotations": {
            "summary": "CPU above 90% on host1",
            "runbook_url": "https://runbooks.example.com/cpu"
          },
          "startsAt": "2024-05-01T10:02:00+02:00",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "https://grafana.example.com/alerting/grafana/cdk1a2b3/view?orgId=1",
          "fingerprint": "6f8a1c2d3e4b5a69",
          "silenceURL": "https://grafana.example.com/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DHighCPU&matcher=instance%3Dhost1%3A9100",
          "dashboardURL": "https://grafana.example.com/d/node?orgId=1",
          "panelURL": "https://grafana.example.com/d/node?orgId=1&viewPanel=4",
          "values": {"A": 97.2, "C": 1},
          "valueString": "[ var='A' labels={instance=host1:9100} value=97.2 ], [ var='C' labels={instance=host1:9100} value=1 ]",
          "imageURL": ""
        },
        {
          "status": "resolved",
          "labels": {"alertname": "HighCPU", "grafana_folder": "Infra", "instance": "host2:9100", "team": "sre"},
          "annotations": {"summary": "CPU above 90% on host2"},
          "startsAt": "2024-05-01T09:00:00Z",
          "endsAt": "2024-05-01T09:45:00Z",
          "generatorURL": "https://grafana.example.com/alerting/grafana/cdk1a2b3/view?orgId=1",
          "fingerprint": "",
          "silenceURL": "",
          "dashboardURL": "",
          "panelURL": "",
          "values": null,
          "valueString": ""
        }
      ],
      "groupLabels": {"alertname": "HighCPU"},
      "commonLabels": {"alertname": "HighCPU", "grafana_folder": "Infra", "team": "sre"},
      "commonAnnotations": {},
      "externalURL": "https://grafana.example.com/",
      "version": "1",
      "groupKey": "{}/{__grafana_autogenerated__=\"true\"}:{alertname=\"HighCPU\"}",
      "truncatedAlerts": 0,
      "title": "[FIRING:1, RESOLVED:1] HighCPU (Infra sre)",
      "state": "alerting",
      "message": "**Firing**\n\nValue: A=97.2, C=1\nLabels:\n - alertname = HighCPU\n"
    }"#;

    /// Grafana 7 legacy alerting webhook.
    const LEGACY: &str = r#"{
      "dashboardId": 1,
      "evalMatches": [
        {"value": 97.5, "metric": "cpu{host=\"host1\"}", "tags": {"host": "host1"}},
        {"value": null, "metric": "cpu{host=\"host2\"}", "tags": null}
      ],
      "imageUrl": "https://grafana.example.com/render/d-solo/abc/panel.png",
      "message": "CPU is too high",
      "orgId": 1,
      "panelId": 2,
      "ruleId": 7,
      "ruleName": "High CPU alert",
      "ruleUrl": "http://grafana.example.com/d/hZ7BuVbWz/hosts?tab=alert&editPanel=2&orgId=1",
      "state": "alerting",
      "tags": {"service": "api", "severity": "critical"},
      "title": "[Alerting] High CPU alert"
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
    fn decodes_unified_alerting() {
        let alerts = decode(UNIFIED.as_bytes()).unwrap();
        assert_eq!(alerts.len(), 2);
        let a = &alerts[0];
        assert_eq!(a.source, AlertSource::Grafana);
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.fingerprint, fingerprint_labels(&a.labels));
        assert_eq!(a.annotations["grafana_fingerprint"], "6f8a1c2d3e4b5a69");
        assert_eq!(a.title, "HighCPU (host1:9100)");
        assert_eq!(a.description.as_deref(), Some("CPU above 90% on host1"));
        assert_eq!(a.label("team"), Some("sre"));
        assert_eq!(a.labels.len(), 4);
        assert!(a.annotations[VALUES_ANNOTATION].starts_with("[ var='A'"));
        assert_eq!(a.starts_at, Some("2024-05-01T08:02:00Z".parse().unwrap()));
        assert_eq!(a.ends_at, None);
        assert_eq!(
            link_pairs(&a.links),
            [
                ("Source", "https://grafana.example.com/alerting/grafana/cdk1a2b3/view?orgId=1"),
                ("Runbook", "https://runbooks.example.com/cpu"),
                ("Dashboard", "https://grafana.example.com/d/node?orgId=1"),
                ("Panel", "https://grafana.example.com/d/node?orgId=1&viewPanel=4"),
                ("Silence", "https://grafana.example.com/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DHighCPU&matcher=instance%3Dhost1%3A9100"),
            ]
        );
    }

    #[test]
    fn unified_resolved_alert_without_fingerprint() {
        let alerts = decode(UNIFIED.as_bytes()).unwrap();
        let b = &alerts[1];
        assert_eq!(b.status, AlertStatus::Resolved);
        assert_eq!(b.fingerprint, fingerprint_labels(&b.labels));
        assert_ne!(b.fingerprint, alerts[0].fingerprint);
        assert_eq!(b.title, "HighCPU (host2:9100)");
        assert!(!b.annotations.contains_key(VALUES_ANNOTATION));
        assert_eq!(b.ends_at, Some("2024-05-01T09:45:00Z".parse().unwrap()));
        assert_eq!(
            link_pairs(&b.links),
            [(
                "Source",
                "https://grafana.example.com/alerting/grafana/cdk1a2b3/view?orgId=1"
            )]
        );
    }

    #[test]
    fn decodes_legacy_alerting() {
        let alerts = decode(LEGACY.as_bytes()).unwrap();
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.source, AlertSource::Grafana);
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.title, "High CPU alert (api)");
        assert_eq!(a.description.as_deref(), Some("CPU is too high"));
        assert_eq!(a.label("alertname"), Some("High CPU alert"));
        assert_eq!(a.label("rule_id"), Some("7"));
        assert_eq!(a.label("severity"), Some("critical"));
        assert_eq!(a.label("service"), Some("api"));
        assert_eq!(a.fingerprint, fingerprint_labels(&a.labels));
        assert_eq!(
            a.annotations[VALUES_ANNOTATION],
            r#"cpu{host="host1"}=97.5"#
        );
        assert_eq!(
            link_pairs(&a.links),
            [
                (
                    "Source",
                    "http://grafana.example.com/d/hZ7BuVbWz/hosts?tab=alert&editPanel=2&orgId=1"
                ),
                (
                    "Image",
                    "https://grafana.example.com/render/d-solo/abc/panel.png"
                ),
            ]
        );
    }

    #[test]
    fn legacy_ok_resolves_the_same_fingerprint() {
        let firing = decode(LEGACY.as_bytes()).unwrap().remove(0);
        let ok_body = LEGACY
            .replace(r#""state": "alerting""#, r#""state": "ok""#)
            .replace("[Alerting]", "[OK]")
            .replace("97.5", "12.0");
        let ok = decode(ok_body.as_bytes()).unwrap().remove(0);
        assert_eq!(ok.status, AlertStatus::Resolved);
        assert_eq!(ok.fingerprint, firing.fingerprint);

        for state in ["no_data", "paused", "pending"] {
            let body = LEGACY.replace("\"alerting\"", &format!("\"{state}\""));
            assert_eq!(
                decode(body.as_bytes()).unwrap()[0].status,
                AlertStatus::Firing
            );
        }

        let other_tags = LEGACY.replace(r#""service": "api""#, r#""service": "web""#);
        let other = decode(other_tags.as_bytes()).unwrap().remove(0);
        assert_ne!(other.fingerprint, firing.fingerprint);
        let other_rule = LEGACY.replace(r#""ruleId": 7"#, r#""ruleId": 8"#);
        let other = decode(other_rule.as_bytes()).unwrap().remove(0);
        assert_ne!(other.fingerprint, firing.fingerprint);
    }

    #[test]
    fn legacy_without_rule_name_uses_the_title() {
        let body = r#"{"title": "[Alerting] Disk full", "state": "alerting", "ruleId": "12"}"#;
        let a = decode(body.as_bytes()).unwrap().remove(0);
        assert_eq!(a.title, "Disk full");
        assert_eq!(a.label("alertname"), Some("Disk full"));
        assert_eq!(a.label("rule_id"), Some("12"));
        assert_eq!(a.description, None);
        assert!(a.links.is_empty());
    }

    #[test]
    fn legacy_errors() {
        let body = LEGACY.replace(r#""state": "alerting""#, r#""state": "exploded""#);
        let (path, message) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "state");
        assert!(
            message.starts_with(r#"unknown state "exploded""#),
            "{message}"
        );

        let (path, _) = invalid(decode(br#"{"ruleName": "X"}"#).unwrap_err());
        assert_eq!(path, "state");

        let (path, _) = invalid(decode(br#"{"state": "alerting"}"#).unwrap_err());
        assert_eq!(path, "ruleName");

        let body = LEGACY.replace(r#""ruleId": 7"#, r#""ruleId": {"id": 7}"#);
        let (path, _) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "ruleId");

        let body = LEGACY.replace(r#""severity": "critical""#, r#""severity": ["critical"]"#);
        let (path, _) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "tags.severity");

        let body = LEGACY.replace(r#""value": 97.5"#, r#""value": "high""#);
        let (path, _) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "evalMatches[0].value");
    }

    #[test]
    fn long_values_and_fingerprints_are_cut_and_long_rule_names_refused() {
        use super::super::{MAX_DESCRIPTION_BYTES, MAX_VALUE_BYTES};
        let long = "v".repeat(4 * MAX_VALUE_BYTES);
        let body = UNIFIED.replacen("6f8a1c2d3e4b5a69", &long, 1).replacen(
            "[ var='A' labels={instance=host1:9100} value=97.2 ]",
            &long,
            1,
        );
        let a = decode(body.as_bytes()).unwrap().remove(0);
        for key in ["grafana_fingerprint", VALUES_ANNOTATION] {
            let v = &a.annotations[key];
            assert!(v.len() < MAX_VALUE_BYTES + 64, "{key}: {} bytes", v.len());
            assert!(v.starts_with("vvvv") && v.ends_with("bytes)"), "{key}");
        }

        let body = LEGACY.replacen(
            r#""message""#,
            &format!(
                r#""message": "{}", "_""#,
                "m".repeat(2 * MAX_DESCRIPTION_BYTES)
            ),
            1,
        );
        let a = decode(body.as_bytes()).unwrap().remove(0);
        let d = a.description.unwrap();
        assert!(d.len() < MAX_DESCRIPTION_BYTES + 64, "{} bytes", d.len());

        let body = LEGACY.replacen(
            r#""ruleName""#,
            &format!(r#""ruleName": "{}", "_""#, "r".repeat(MAX_VALUE_BYTES + 1)),
            1,
        );
        let (path, message) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "ruleName");
        assert!(message.contains("over the"), "{message}");
    }

    #[test]
    fn neither_shape_is_invalid() {
        let (path, message) = invalid(decode(br#"{"receiver": "x", "orgId": 1}"#).unwrap_err());
        assert_eq!(path, "(root)");
        assert!(message.starts_with("not a Grafana alert"), "{message}");
    }

    #[test]
    fn unified_errors_name_their_path() {
        let err = decode(br#"{"alerts": []}"#).unwrap_err();
        assert_eq!(err.to_string(), "alerts: must not be empty");

        let body = UNIFIED.replacen(
            r#""labels": {"alertname": "HighCPU", "grafana_folder": "Infra", "instance": "host2:9100", "team": "sre"}"#,
            r#""labels": ["HighCPU"]"#,
            1,
        );
        let (path, message) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "alerts[1].labels");
        assert!(message.starts_with("invalid type: sequence, expected a map of strings"));

        let body = UNIFIED.replacen(r#""status": "resolved""#, r#""status": "normal""#, 1);
        let (path, _) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "alerts[1].status");

        let long = "x".repeat(super::super::MAX_VALUE_BYTES + 1);
        let body = UNIFIED.replacen("CPU above 90% on host2", &long, 1);
        let (path, _) = invalid(decode(body.as_bytes()).unwrap_err());
        assert_eq!(path, "alerts[1].annotations.summary");

        let err = decode(&UNIFIED.as_bytes()[..200]).unwrap_err();
        assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
    }
}
