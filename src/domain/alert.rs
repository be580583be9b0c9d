//! The normalized alert: what every source (webhook or chat message) is turned into at the edge,
//! so the engine never sees a source-specific payload.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where an alert came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSource {
    Alertmanager,
    Grafana,
    Generic,
    Slack,
    Discord,
    Console,
}

impl AlertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSource::Alertmanager => "alertmanager",
            AlertSource::Grafana => "grafana",
            AlertSource::Generic => "generic",
            AlertSource::Slack => "slack",
            AlertSource::Discord => "discord",
            AlertSource::Console => "console",
        }
    }
}

/// Firing or resolved, as the monitoring system reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// Read from a string only. (serde's derived enum reads a number or a list as a JSON *syntax*
/// error, "expected value", so a wrong-typed `status` would be reported as invalid JSON rather
/// than as a wrong field.)
impl<'de> Deserialize<'de> for AlertStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AlertStatus;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"firing\" or \"resolved\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AlertStatus, E> {
                match v {
                    "firing" => Ok(AlertStatus::Firing),
                    "resolved" => Ok(AlertStatus::Resolved),
                    other => Err(E::unknown_variant(other, &["firing", "resolved"])),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// A link shown on the incident card (runbook, dashboard, generator URL, silence…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub title: String,
    pub url: String,
}

/// Chat platforms a message or a user can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Slack,
    Discord,
    Console,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Slack => "slack",
            Platform::Discord => "discord",
            Platform::Console => "console",
        }
    }
}

/// What a person's message in an alert channel may do (bots, apps and webhooks are always read
/// as alerts). Teams talk in their alert channels, so by default only a message that reads as
/// an alert, or that asks the bot by mentioning it, opens an incident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HumanMessages {
    /// A message in an alert's shape (`[FIRING:1] …` title, Alertmanager/Grafana labels and
    /// annotations, Slack's `*Alert:*` line) or one mentioning the bot; other chatter is ignored.
    #[default]
    AlertsAndMentions,
    /// Every message is read as an alert, its first line the title.
    All,
    /// People's messages never open incidents; `/incident new` still does.
    Ignore,
}

/// The chat message an alert was read from, so the incident thread can be started under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatOrigin {
    pub platform: Platform,
    pub channel: String,
    /// Slack `ts`, Discord message id, console message id.
    pub message_id: String,
}

/// A normalized alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub source: AlertSource,
    /// Stable identity of "the same alert": repeats carry the same fingerprint.
    pub fingerprint: String,
    pub status: AlertStatus,
    /// One line, e.g. the alertname plus the distinguishing labels.
    pub title: String,
    /// Longer human text (summary/description), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ChatOrigin>,
    /// The labels the source grouped this alert by (Alertmanager's `groupLabels`), if it did.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_labels: BTreeMap<String, String>,
}

/// Labels that change between repeats of the same alert and so must not take part in its identity.
const VOLATILE_LABELS: &[&str] = &["value", "__value__", "timestamp", "startsat", "endsat"];

/// A stable fingerprint from a label set: sha256 over the sorted, length-prefixed pairs, volatile
/// labels left out, first 16 hex digits. Stable across versions and processes (no `Hash`).
pub fn fingerprint_labels(labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        if VOLATILE_LABELS.contains(&k.to_ascii_lowercase().as_str()) {
            continue;
        }
        // Length-prefixed, so no crafted value can make two label sets collide.
        for part in [k, v] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    hex16(&h.finalize())
}

/// A stable fingerprint from free text (used when a chat message carries no labels): the text
/// is lower-cased and runs of white space folded, so re-posts of the same alert match.
pub fn fingerprint_text(text: &str) -> String {
    let norm = text
        .split_whitespace()
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    let mut h = Sha256::new();
    h.update(b"text:");
    h.update(norm.as_bytes());
    hex16(&h.finalize())
}

fn hex16(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Alert {
    /// The key of the group of related alerts this one belongs to (one incident per group):
    /// the source's own grouping (Alertmanager's `groupLabels`) when it sent one, else the
    /// `group_by` labels the alert has, provided it has the first of them (`alertname` by
    /// default); an alert without it is a group of its own (its fingerprint).
    pub fn group_key(&self, group_by: &[String]) -> String {
        if !self.group_labels.is_empty() {
            return format!("g:{}", fingerprint_labels(&self.group_labels));
        }
        match group_by.first() {
            Some(first) if self.labels.contains_key(first) => {
                let picked: BTreeMap<String, String> = group_by
                    .iter()
                    .filter_map(|k| self.labels.get(k).map(|v| (k.clone(), v.clone())))
                    .collect();
                format!("g:{}", fingerprint_labels(&picked))
            }
            _ => self.fingerprint.clone(),
        }
    }

    /// What tells this alert apart within its group, for the card: its labels outside the
    /// group (`pod=api-7, instance=10.0.0.7:9100`), or its title when it has none.
    pub fn instance(&self, group_by: &[String]) -> String {
        let skip = |k: &str| {
            group_by.iter().any(|g| g == k)
                || self.group_labels.contains_key(k)
                || k == "severity"
                || VOLATILE_LABELS.contains(&k.to_ascii_lowercase().as_str())
        };
        let parts: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| !skip(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if parts.is_empty() {
            self.title.clone()
        } else {
            parts.join(", ")
        }
    }

    /// A label value, case-sensitive name.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// All the text a keyword rule may look at: title, description, label and annotation values.
    pub fn search_text(&self) -> String {
        let mut s = String::with_capacity(256);
        s.push_str(&self.title);
        if let Some(d) = &self.description {
            s.push('\n');
            s.push_str(d);
        }
        for (k, v) in self.labels.iter().chain(self.annotations.iter()) {
            s.push('\n');
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fingerprint_is_order_independent_and_ignores_volatile_labels() {
        let a = labels(&[("alertname", "HighErrorRate"), ("service", "api")]);
        let b = labels(&[
            ("service", "api"),
            ("alertname", "HighErrorRate"),
            ("value", "3.2"),
        ]);
        assert_eq!(fingerprint_labels(&a), fingerprint_labels(&b));
        assert_eq!(fingerprint_labels(&a).len(), 16);
    }

    #[test]
    fn fingerprint_differs_on_identity_labels() {
        let a = labels(&[("alertname", "HighErrorRate"), ("service", "api")]);
        let b = labels(&[("alertname", "HighErrorRate"), ("service", "web")]);
        assert_ne!(fingerprint_labels(&a), fingerprint_labels(&b));
        // A value that contains the separator of another pair must not collide.
        let c = labels(&[("a", "b\u{1e}c"), ("d", "e")]);
        let d = labels(&[("a", "b"), ("c", "d\u{1f}e")]);
        assert_ne!(fingerprint_labels(&c), fingerprint_labels(&d));
    }

    #[test]
    fn fingerprint_is_a_known_constant() {
        // Guards against accidental changes: a fingerprint change would split every open incident.
        let a = labels(&[("alertname", "X")]);
        assert_eq!(fingerprint_labels(&a), fingerprint_labels(&a.clone()));
        let expected = {
            let mut h = Sha256::new();
            h.update(9u64.to_le_bytes());
            h.update(b"alertname");
            h.update(1u64.to_le_bytes());
            h.update(b"X");
            hex16(&h.finalize())
        };
        assert_eq!(fingerprint_labels(&a), expected);
    }

    fn alert(pairs: &[(&str, &str)]) -> Alert {
        let labels = labels(pairs);
        Alert {
            source: AlertSource::Alertmanager,
            fingerprint: fingerprint_labels(&labels),
            status: AlertStatus::Firing,
            title: "t".into(),
            description: None,
            labels,
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            links: vec![],
            origin: None,
            group_labels: BTreeMap::new(),
        }
    }

    #[test]
    fn alerts_group_by_the_sources_group_labels_else_the_group_by_labels_they_have() {
        let by: Vec<String> = ["alertname", "service", "namespace", "cluster"]
            .map(String::from)
            .to_vec();
        let a = alert(&[
            ("alertname", "PodCrash"),
            ("namespace", "prod"),
            ("pod", "a"),
        ]);
        let b = alert(&[
            ("alertname", "PodCrash"),
            ("namespace", "prod"),
            ("pod", "b"),
        ]);
        let other_ns = alert(&[
            ("alertname", "PodCrash"),
            ("namespace", "dev"),
            ("pod", "a"),
        ]);
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(a.group_key(&by), b.group_key(&by));
        assert_ne!(a.group_key(&by), other_ns.group_key(&by));
        assert_eq!(a.instance(&by), "pod=a");
        // Without the first group_by label, an alert is a group of its own.
        let lone = alert(&[("service", "api"), ("pod", "a")]);
        assert_eq!(lone.group_key(&by), lone.fingerprint);
        // The source's grouping wins: Alertmanager grouped by alertname only.
        let mut c = other_ns.clone();
        let mut d = a.clone();
        for x in [&mut c, &mut d] {
            x.group_labels = labels(&[("alertname", "PodCrash")]);
        }
        assert_eq!(c.group_key(&by), d.group_key(&by));
        assert_eq!(d.instance(&by), "pod=a");
    }

    #[test]
    fn text_fingerprint_folds_case_and_space() {
        assert_eq!(
            fingerprint_text("HighErrorRate  (api prod)"),
            fingerprint_text("higherrorrate (api\tprod) ")
        );
        assert_ne!(fingerprint_text("a b"), fingerprint_text("a c"));
    }
}
