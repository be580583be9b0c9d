//! The platform-neutral incident card and its buttons. Slack renders it as Block Kit, Discord as
//! an embed with components, the console as HTML; all of them from this one model.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::alert::{AlertStatus, ChatOrigin, Link};
use super::incident::{ActionStatus, AlertGroup, Incident, IncidentId, Status, StormSummary};
use super::severity::{Severity, Targets};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentCard {
    pub incident: IncidentId,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub severity: Severity,
    pub targets: Targets,
    pub kind: String,
    pub kind_name: String,
    pub status: Status,
    pub alert_status: AlertStatus,
    pub alert_count: u64,
    pub opened_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    pub links: Vec<Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
    pub actions: Vec<CardAction>,
    pub buttons: Vec<Button>,
    /// "Recurred: 2nd time in 30 days, last fixed by `restart` (INC-4)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<String>,
    /// Why automatic actions wait: "Storm guard: 37 new incidents from alertmanager within 60 s;
    /// automatic actions wait for approval."
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<String>,
    /// Where the alert was read from, so the card can be threaded under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ChatOrigin>,
    /// The incident's group when it holds more than one alert: "2 firing, 1 resolved: pod=b
    /// (firing), pod=a (resolved)", most recent first, cut with "and N more".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<String>,
    /// The metric behind the incident over the last 30 minutes, added by the shell when the
    /// card is rendered for delivery (never by the engine); `None` without Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<super::chart::Chart>,
    /// On the card whose thread is its source's storm thread: the storm's incidents, summarized
    /// (see [`storm_summary_line`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_summary: Option<String>,
}

/// Most characters of a storm summary on a card (a Discord field holds 1024).
pub const STORM_SUMMARY_CHARS: usize = 1000;

/// The storm summary as a card shows it: how many incidents, the top kinds and the severities,
/// the newest by id and title, "and N more"; after the storm, that it is over.
pub fn storm_summary_line(s: &StormSummary) -> String {
    let head = match s.lifted_at {
        None => format!(
            "⛈️ {} new incidents from {} since {} UTC are summarized in this thread instead of a card each. Each stays usable (`/incident show INC-n`, the console); one that escalates or that someone acts on gets its own card.",
            s.count,
            s.source,
            s.since.format("%H:%M:%S")
        ),
        Some(at) => format!(
            "⛅ Storm over at {} UTC: {} incidents from {} were summarized in this thread.",
            at.format("%H:%M:%S"),
            s.count,
            s.source
        ),
    };
    let mut kinds: Vec<(&String, &u32)> = s.kinds.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let top: Vec<String> = kinds
        .iter()
        .take(3)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let sev: Vec<String> = s
        .severities
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let newest: Vec<String> = s
        .newest
        .iter()
        .map(|n| format!("{} {}", n.incident, truncate_chars(&n.title, 60)))
        .collect();
    let more = (s.count as usize).saturating_sub(s.newest.len());
    let mut line = format!(
        "{head}\nKinds: {}{} · Severities: {}\nNewest: {}",
        top.join(", "),
        if kinds.len() > 3 { ", …" } else { "" },
        sev.join(", "),
        newest.join("; ")
    );
    if more > 0 {
        line.push_str(&format!(" and {more} more"));
    }
    truncate_chars(&line, STORM_SUMMARY_CHARS)
}

/// Alerts of a group named on the card; the rest are counted.
pub const CARD_GROUP_INSTANCES: usize = 5;

/// The card line for an incident's group, or `None` while it is a single alert.
pub fn group_line(g: &AlertGroup) -> Option<String> {
    if g.members.len() < 2 && g.untracked == 0 {
        return None;
    }
    let firing = g.count(AlertStatus::Firing) as u64 + g.untracked;
    let resolved = g.count(AlertStatus::Resolved);
    let recent = g.recent();
    let named: Vec<String> = recent
        .iter()
        .take(CARD_GROUP_INSTANCES)
        .map(|m| {
            let st = match m.status {
                AlertStatus::Firing => "firing",
                AlertStatus::Resolved => "resolved",
            };
            format!("{} ({st})", truncate_chars(&m.instance, 80))
        })
        .collect();
    let more = (recent.len() - named.len()) as u64 + g.untracked;
    let mut line = format!("{firing} firing, {resolved} resolved: {}", named.join(", "));
    if more > 0 {
        line.push_str(&format!(" and {more} more"));
    }
    Some(line)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardAction {
    pub id: String,
    pub title: String,
    pub summary: String,
    pub status: ActionStatus,
    pub approvals: u32,
    pub needed: u32,
    pub auto: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonStyle {
    Primary,
    Danger,
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub label: String,
    pub action: ButtonAction,
    pub style: ButtonStyle,
}

/// What a button does. Encoded into the platform's `action_id`/`custom_id` (≤ 100 chars).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ButtonAction {
    Ack(IncidentId),
    Approve(IncidentId, String),
    Reject(IncidentId, String),
    Preview(IncidentId, String),
    Escalate(IncidentId),
    Resolve(IncidentId),
    /// "Add follow-up": says how (a subcommand hint; the text cannot come from a button).
    FollowUpAdd(IncidentId),
    /// Follow-up `n` is done.
    FollowUpDone(IncidentId, u32),
    /// Follow-up `n`'s effect is verified.
    FollowUpVerify(IncidentId, u32),
}

impl ButtonAction {
    /// `ack:INC-3`, `approve:INC-3:restart`.
    pub fn encode(&self) -> String {
        match self {
            ButtonAction::Ack(i) => format!("ack:{i}"),
            ButtonAction::Approve(i, a) => format!("approve:{i}:{a}"),
            ButtonAction::Reject(i, a) => format!("reject:{i}:{a}"),
            ButtonAction::Preview(i, a) => format!("preview:{i}:{a}"),
            ButtonAction::Escalate(i) => format!("escalate:{i}"),
            ButtonAction::Resolve(i) => format!("resolve:{i}"),
            ButtonAction::FollowUpAdd(i) => format!("fu-add:{i}"),
            ButtonAction::FollowUpDone(i, n) => format!("fu-done:{i}:{n}"),
            ButtonAction::FollowUpVerify(i, n) => format!("fu-verify:{i}:{n}"),
        }
    }

    pub fn decode(s: &str) -> Result<ButtonAction, String> {
        let mut parts = s.splitn(3, ':');
        let verb = parts.next().unwrap_or_default();
        let id: IncidentId = parts
            .next()
            .ok_or_else(|| format!("button {s:?} has no incident"))?
            .parse()?;
        let action = parts.next().filter(|a| !a.is_empty()).map(str::to_string);
        let need = |a: Option<String>| a.ok_or_else(|| format!("button {s:?} names no action"));
        Ok(match verb {
            "ack" => ButtonAction::Ack(id),
            "escalate" => ButtonAction::Escalate(id),
            "resolve" => ButtonAction::Resolve(id),
            "approve" => ButtonAction::Approve(id, need(action)?),
            "reject" => ButtonAction::Reject(id, need(action)?),
            "preview" => ButtonAction::Preview(id, need(action)?),
            "fu-add" => ButtonAction::FollowUpAdd(id),
            "fu-done" | "fu-verify" => {
                let n = need(action)?
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("button {s:?} names no follow-up"))?;
                if verb == "fu-done" {
                    ButtonAction::FollowUpDone(id, n)
                } else {
                    ButtonAction::FollowUpVerify(id, n)
                }
            }
            other => return Err(format!("unknown button {other:?}")),
        })
    }

    pub fn incident(&self) -> IncidentId {
        match self {
            ButtonAction::Ack(i)
            | ButtonAction::Escalate(i)
            | ButtonAction::Resolve(i)
            | ButtonAction::Approve(i, _)
            | ButtonAction::Reject(i, _)
            | ButtonAction::Preview(i, _)
            | ButtonAction::FollowUpAdd(i)
            | ButtonAction::FollowUpDone(i, _)
            | ButtonAction::FollowUpVerify(i, _) => *i,
        }
    }
}

/// Builds the card for an incident. `needed(action)` is the number of approvals the policy asks.
pub fn build_card(
    inc: &Incident,
    kind_name: &str,
    targets: Targets,
    needed: u32,
    max_description: usize,
) -> IncidentCard {
    let actions: Vec<CardAction> = inc
        .actions
        .iter()
        .map(|a| CardAction {
            id: a.id.clone(),
            title: a.title.clone(),
            summary: a.summary.clone(),
            status: a.status,
            approvals: a.approvals.len() as u32,
            needed,
            auto: a.auto,
        })
        .collect();
    let mut buttons = Vec::new();
    if inc.status.is_active() {
        if inc.acknowledged_at.is_none() {
            buttons.push(button(
                "Acknowledge",
                ButtonAction::Ack(inc.id),
                ButtonStyle::Primary,
            ));
        }
        for a in inc
            .actions
            .iter()
            .filter(|a| a.status == ActionStatus::Proposed)
        {
            buttons.push(button(
                &format!("Approve: {}", a.title),
                ButtonAction::Approve(inc.id, a.id.clone()),
                ButtonStyle::Primary,
            ));
            buttons.push(button(
                &format!("Reject: {}", a.title),
                ButtonAction::Reject(inc.id, a.id.clone()),
                ButtonStyle::Danger,
            ));
            buttons.push(button(
                &format!("Preview: {}", a.title),
                ButtonAction::Preview(inc.id, a.id.clone()),
                ButtonStyle::Default,
            ));
        }
        if inc.status != Status::Escalated {
            buttons.push(button(
                "Escalate",
                ButtonAction::Escalate(inc.id),
                ButtonStyle::Default,
            ));
        }
        buttons.push(button(
            "Resolve",
            ButtonAction::Resolve(inc.id),
            ButtonStyle::Default,
        ));
    }
    IncidentCard {
        incident: inc.id,
        title: inc.title.clone(),
        description: inc
            .description
            .as_deref()
            .map(|d| truncate_chars(d, max_description)),
        severity: inc.severity,
        targets,
        kind: inc.kind.clone(),
        kind_name: kind_name.to_string(),
        status: inc.status,
        alert_status: inc.alert_status,
        alert_count: inc.alert_count,
        opened_at: inc.opened_at,
        last_seen_at: inc.last_seen_at,
        acknowledged_by: inc.acknowledged_by.as_ref().map(|a| a.display()),
        links: inc.links.clone(),
        playbook: inc.playbook.clone(),
        actions,
        buttons,
        recurrence: inc.recurrence.as_ref().map(|r| {
            let nth = r.previous + 1;
            let suffix = match (nth % 10, nth % 100) {
                (1, n) if n != 11 => "st",
                (2, n) if n != 12 => "nd",
                (3, n) if n != 13 => "rd",
                _ => "th",
            };
            format!(
                "Recurred: {nth}{suffix} time in {} days, last {}{}",
                r.window_days,
                r.last,
                r.last_fixed_by
                    .as_deref()
                    .map(|f| format!(", fixed by {f}"))
                    .unwrap_or_default()
            )
        }),
        origin: inc.origin.clone(),
        alerts: inc.group.as_ref().and_then(group_line),
        storm_summary: inc.storm_summary.as_ref().map(storm_summary_line),
        storm: inc.storm.map(|n| {
            format!(
                "⛈️ Storm guard: {n} new incidents from {} in a short time; automatic actions wait for approval.",
                inc.source.as_str()
            )
        }),
        chart: None,
    }
}

fn button(label: &str, action: ButtonAction, style: ButtonStyle) -> Button {
    Button {
        label: truncate_chars(label, 75),
        action,
        style,
    }
}

/// Cuts `s` to at most `max` characters (not bytes), ending with `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::ActionState;

    #[test]
    fn buttons_round_trip() {
        for b in [
            ButtonAction::Ack(IncidentId(1)),
            ButtonAction::Approve(IncidentId(22), "restart-api".into()),
            ButtonAction::Reject(IncidentId(3), "a:b".into()),
            ButtonAction::Preview(IncidentId(3), "x".into()),
            ButtonAction::Escalate(IncidentId(4)),
            ButtonAction::Resolve(IncidentId(5)),
        ] {
            assert_eq!(ButtonAction::decode(&b.encode()), Ok(b.clone()));
        }
        assert!(ButtonAction::decode("approve:INC-1").is_err());
        assert!(ButtonAction::decode("nuke:INC-1").is_err());
        assert!(ButtonAction::decode("ack").is_err());
        assert!(ButtonAction::decode("ack:INC-zz").is_err());
    }

    #[test]
    fn card_buttons_follow_state() {
        let mut inc = crate::domain::incident::tests_support::incident();
        inc.actions.push(ActionState {
            id: "restart".into(),
            title: "Restart".into(),
            auto: false,
            summary: "kubectl ...".into(),
            status: ActionStatus::Proposed,
            approvals: vec![],
            decided_by: None,
            decided_at: None,
        });
        let t = Severity::P2.default_targets();
        let labels = |c: &IncidentCard| {
            c.buttons
                .iter()
                .map(|b| b.label.clone())
                .collect::<Vec<_>>()
        };
        let c = build_card(&inc, "Kind", t, 1, 100);
        assert_eq!(
            labels(&c),
            [
                "Acknowledge",
                "Approve: Restart",
                "Reject: Restart",
                "Preview: Restart",
                "Escalate",
                "Resolve"
            ]
        );
        inc.actions[0].status = ActionStatus::Approved;
        inc.status = Status::Escalated;
        inc.acknowledged_at = Some(Utc::now());
        assert_eq!(labels(&build_card(&inc, "Kind", t, 1, 100)), ["Resolve"]);
        inc.status = Status::Resolved;
        assert!(build_card(&inc, "Kind", t, 1, 100).buttons.is_empty());
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("héllo", 5), "héllo");
        assert_eq!(truncate_chars("héllo wörld", 5), "héll…");
        let long = "x".repeat(200);
        let c = truncate_chars(&long, 75);
        assert_eq!(c.chars().count(), 75);
    }
}
