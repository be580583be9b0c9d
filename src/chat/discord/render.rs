//! The incident card as Discord sees it: one embed (severity colour, status, targets, kind,
//! alert count, links, recommended actions) and button rows. Everything is cut to Discord's
//! documented limits here, so the API never answers 50035 (invalid form body) because of us.

use serde_json::{json, Value};
use tracing::warn;

use crate::domain::alert::AlertStatus;
use crate::domain::card::{truncate_chars, ButtonStyle, IncidentCard};
use crate::domain::incident::{ActionStatus, Status};
use crate::domain::severity::{human_seconds, Severity};

/// Discord's limits (shared/specs/README.md).
pub const CONTENT_MAX: usize = 2000;
pub const EMBED_TITLE_MAX: usize = 256;
pub const EMBED_DESCRIPTION_MAX: usize = 4096;
pub const EMBED_FIELDS_MAX: usize = 25;
pub const FIELD_NAME_MAX: usize = 256;
pub const FIELD_VALUE_MAX: usize = 1024;
pub const FOOTER_MAX: usize = 2048;
pub const EMBED_TOTAL_MAX: usize = 6000;
pub const ROWS_MAX: usize = 5;
pub const BUTTONS_PER_ROW: usize = 5;
pub const CUSTOM_ID_MAX: usize = 100;
pub const LABEL_MAX: usize = 80;
pub const THREAD_NAME_MAX: usize = 100;

/// Embed colour: red shades by severity while active, green once resolved.
pub fn colour(card: &IncidentCard) -> u32 {
    if !card.status.is_active() {
        return 0x2E_CC_71;
    }
    match card.severity {
        Severity::P0 => 0x99_2D_22,
        Severity::P1 => 0xE7_4C_3C,
        Severity::P2 => 0xE6_7E_22,
        Severity::P3 => 0xF1_C4_0F,
    }
}

fn status_line(card: &IncidentCard) -> String {
    let alert = match card.alert_status {
        AlertStatus::Firing => "alert firing",
        AlertStatus::Resolved => "alert cleared",
    };
    let icon = match card.status {
        Status::Resolved | Status::Closed => "✅",
        Status::Escalated => "📣",
        Status::Acknowledged => "👀",
        _ => "🔥",
    };
    format!("{icon} {} · {alert}", card.status.label())
}

fn action_line(a: &crate::domain::card::CardAction) -> String {
    let state = match a.status {
        ActionStatus::Proposed => format!("awaiting approval ({}/{})", a.approvals, a.needed),
        ActionStatus::Approved => "approved".into(),
        ActionStatus::Rejected => "rejected".into(),
        ActionStatus::Running => "running".into(),
        ActionStatus::Succeeded => "succeeded".into(),
        ActionStatus::Failed => "failed".into(),
    };
    let auto = if a.auto { " · automatic" } else { "" };
    format!(
        "• **{}** (`{}`) — {state}{auto}\n  `{}`",
        a.title, a.id, a.summary
    )
}

/// Joins lines within `max` characters; when they do not all fit, says how many were left out.
fn join_bounded(lines: &[String], max: usize) -> String {
    const RESERVE: usize = 20; // room for "\n…and N more"
    let room = max.saturating_sub(RESERVE);
    let mut out = String::new();
    let mut shown = 0;
    for l in lines {
        let l = truncate_chars(l, room);
        let len = out.chars().count() + usize::from(!out.is_empty()) + l.chars().count();
        if len > room {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&l);
        shown += 1;
    }
    if shown < lines.len() {
        out.push_str(&format!("\n…and {} more", lines.len() - shown));
    }
    truncate_chars(&out, max)
}

fn field(name: &str, value: String, inline: bool) -> Value {
    let value = if value.trim().is_empty() {
        "—".to_string()
    } else {
        value
    };
    json!({
        "name": truncate_chars(name, FIELD_NAME_MAX),
        "value": truncate_chars(&value, FIELD_VALUE_MAX),
        "inline": inline,
    })
}

/// The card's embed.
pub fn embed(card: &IncidentCard) -> Value {
    let title = truncate_chars(
        &format!("{} · {} — {}", card.incident, card.severity, card.title),
        EMBED_TITLE_MAX,
    );
    let mut fields = vec![
        field("Status", status_line(card), true),
        field("Kind", card.kind_name.clone(), true),
        field(
            "Alerts",
            format!(
                "{}× · last <t:{}:R>",
                card.alert_count,
                card.last_seen_at.timestamp()
            ),
            true,
        ),
        field(
            "Targets",
            format!(
                "detect < {} · repair < {}\n{}",
                human_seconds(card.targets.detect_seconds),
                human_seconds(card.targets.repair_seconds),
                card.targets.approval.label()
            ),
            false,
        ),
    ];
    if let Some(a) = &card.acknowledged_by {
        fields.push(field("Acknowledged by", a.clone(), true));
    }
    if let Some(r) = &card.recurrence {
        fields.push(field(
            "Recurrence",
            truncate_chars(r, FIELD_VALUE_MAX),
            false,
        ));
    }
    if !card.links.is_empty() {
        let lines: Vec<String> = card
            .links
            .iter()
            .map(|l| format!("[{}]({})", l.title.replace(['[', ']'], ""), l.url))
            .collect();
        fields.push(field("Links", join_bounded(&lines, FIELD_VALUE_MAX), false));
    }
    if !card.actions.is_empty() {
        let lines: Vec<String> = card.actions.iter().map(action_line).collect();
        fields.push(field(
            "Recommended actions",
            join_bounded(&lines, FIELD_VALUE_MAX),
            false,
        ));
    }
    fields.truncate(EMBED_FIELDS_MAX);
    let footer = truncate_chars(
        &match &card.playbook {
            Some(p) => format!("incidentd · playbook {p}"),
            None => "incidentd".to_string(),
        },
        FOOTER_MAX,
    );
    // The description gets whatever the total-text budget leaves.
    let used: usize = title.chars().count()
        + footer.chars().count()
        + fields
            .iter()
            .map(|f| {
                f["name"].as_str().unwrap_or("").chars().count()
                    + f["value"].as_str().unwrap_or("").chars().count()
            })
            .sum::<usize>();
    let budget = EMBED_TOTAL_MAX
        .saturating_sub(used)
        .min(EMBED_DESCRIPTION_MAX);
    let mut e = json!({
        "title": title,
        "color": colour(card),
        "fields": fields,
        "footer": { "text": footer },
        "timestamp": card.opened_at.to_rfc3339(),
    });
    if let Some(d) = card.description.as_deref().filter(|d| !d.trim().is_empty()) {
        if budget > 0 {
            e["description"] = json!(truncate_chars(d, budget));
        }
    }
    e
}

/// Button rows: ≤ 5 rows of ≤ 5 buttons. A button whose id would not fit Discord's 100
/// characters is left out (with a warning) rather than failing the whole message.
pub fn components(card: &IncidentCard) -> Value {
    let mut buttons = Vec::new();
    for b in &card.buttons {
        let id = b.action.encode();
        if id.chars().count() > CUSTOM_ID_MAX {
            warn!(incident = %card.incident, custom_id = %id, "Button id too long for Discord; button left out.");
            continue;
        }
        let style = match b.style {
            ButtonStyle::Primary => 1,
            ButtonStyle::Default => 2,
            ButtonStyle::Danger => 4,
        };
        buttons.push(json!({
            "type": 2,
            "style": style,
            "label": truncate_chars(&b.label, LABEL_MAX),
            "custom_id": id,
        }));
    }
    if buttons.len() > ROWS_MAX * BUTTONS_PER_ROW {
        warn!(incident = %card.incident, buttons = buttons.len(), "More buttons than Discord shows; the rest are left out.");
        buttons.truncate(ROWS_MAX * BUTTONS_PER_ROW);
    }
    Value::Array(
        buttons
            .chunks(BUTTONS_PER_ROW)
            .map(|row| json!({ "type": 1, "components": row }))
            .collect(),
    )
}

/// The name of the incident's thread.
pub fn thread_name(card: &IncidentCard) -> String {
    truncate_chars(
        &format!("{} · {} — {}", card.incident, card.severity, card.title),
        THREAD_NAME_MAX,
    )
}

/// A new card message (or the edit of one: the same fields replace the old ones).
pub fn card_message(card: &IncidentCard) -> Value {
    json!({
        "embeds": [embed(card)],
        "components": components(card),
        "allowed_mentions": { "parse": [] },
    })
}

/// A timeline note in the thread.
pub fn note_message(text: &str, mentions: &[String]) -> Value {
    // Only the Discord entries of the policy-style mention list (`discord:USER`,
    // `discord-role:ROLE`); `allowed_mentions` pings exactly those and nothing the text contains.
    let users: Vec<&str> = mentions
        .iter()
        .filter_map(|m| m.strip_prefix("discord:"))
        .filter(|id| id.chars().all(|c| c.is_ascii_digit()))
        .collect();
    let roles: Vec<&str> = mentions
        .iter()
        .filter_map(|m| m.strip_prefix("discord-role:"))
        .filter(|id| id.chars().all(|c| c.is_ascii_digit()))
        .collect();
    let mut prefix = String::new();
    for u in &users {
        prefix.push_str(&format!("<@{u}> "));
    }
    for r in &roles {
        prefix.push_str(&format!("<@&{r}> "));
    }
    json!({
        "content": truncate_chars(&format!("{prefix}{text}"), CONTENT_MAX),
        "allowed_mentions": { "parse": [], "users": users, "roles": roles },
    })
}

/// Total text of an embed as Discord counts it (title, description, field names and values,
/// footer, author name).
pub fn embed_text_len(e: &Value) -> usize {
    let s = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    s(&e["title"])
        + s(&e["description"])
        + s(&e["footer"]["text"])
        + s(&e["author"]["name"])
        + e["fields"].as_array().map_or(0, |f| {
            f.iter().map(|f| s(&f["name"]) + s(&f["value"])).sum()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Link;
    use crate::domain::card::{Button, ButtonAction, CardAction};
    use crate::domain::incident::IncidentId;
    use chrono::Utc;

    fn card() -> IncidentCard {
        IncidentCard {
            incident: IncidentId(7),
            title: "HighErrorRate (api)".into(),
            description: Some("5xx above 5% for 10 minutes".into()),
            severity: Severity::P1,
            targets: Severity::P1.default_targets(),
            kind: "tool_api_failure".into(),
            kind_name: "Tool/API failure".into(),
            recurrence: None,
            status: Status::Open,
            alert_status: AlertStatus::Firing,
            alert_count: 3,
            opened_at: Utc::now(),
            last_seen_at: Utc::now(),
            acknowledged_by: None,
            links: vec![Link {
                title: "Runbook".into(),
                url: "https://runbooks.example/api".into(),
            }],
            playbook: Some("api".into()),
            actions: vec![CardAction {
                id: "restart".into(),
                title: "Restart".into(),
                summary: "kubectl rollout restart deploy/api".into(),
                status: ActionStatus::Proposed,
                approvals: 0,
                needed: 1,
                auto: false,
            }],
            buttons: vec![
                Button {
                    label: "Acknowledge".into(),
                    action: ButtonAction::Ack(IncidentId(7)),
                    style: ButtonStyle::Primary,
                },
                Button {
                    label: "Reject: Restart".into(),
                    action: ButtonAction::Reject(IncidentId(7), "restart".into()),
                    style: ButtonStyle::Danger,
                },
            ],
            origin: None,
        }
    }

    #[test]
    fn card_renders_status_targets_links_actions_and_buttons() {
        let c = card();
        let m = card_message(&c);
        let e = &m["embeds"][0];
        assert_eq!(e["title"], "INC-7 · P1 — HighErrorRate (api)");
        assert_eq!(e["color"], 0xE74C3C);
        let names: Vec<&str> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Status",
                "Kind",
                "Alerts",
                "Targets",
                "Links",
                "Recommended actions"
            ]
        );
        assert!(e["fields"][4]["value"]
            .as_str()
            .unwrap()
            .contains("(https://runbooks.example/api)"));
        let row = &m["components"][0]["components"];
        assert_eq!(row[0]["custom_id"], "ack:INC-7");
        assert_eq!(row[0]["style"], 1);
        assert_eq!(row[1]["custom_id"], "reject:INC-7:restart");
        assert_eq!(row[1]["style"], 4);
    }

    #[test]
    fn resolved_card_is_green_without_buttons() {
        let mut c = card();
        c.status = Status::Resolved;
        c.buttons.clear();
        let m = card_message(&c);
        assert_eq!(m["embeds"][0]["color"], 0x2ECC71);
        assert_eq!(m["components"], json!([]));
    }

    #[test]
    fn huge_cards_stay_within_discord_limits() {
        let mut c = card();
        c.title = "t".repeat(1000);
        c.description = Some("d".repeat(10_000));
        c.links = (0..100)
            .map(|i| Link {
                title: format!("link {i} ").repeat(10),
                url: format!("https://example.com/{i}"),
            })
            .collect();
        c.actions = (0..40)
            .map(|i| CardAction {
                id: format!("a{i}"),
                title: "x".repeat(300),
                summary: "y".repeat(500),
                status: ActionStatus::Proposed,
                approvals: 0,
                needed: 2,
                auto: false,
            })
            .collect();
        c.buttons = (0..40)
            .map(|i| Button {
                label: "z".repeat(200),
                action: ButtonAction::Approve(IncidentId(7), format!("a{i}")),
                style: ButtonStyle::Primary,
            })
            .collect();
        c.buttons.push(Button {
            label: "too long id".into(),
            action: ButtonAction::Approve(IncidentId(7), "q".repeat(120)),
            style: ButtonStyle::Primary,
        });
        let m = card_message(&c);
        let e = &m["embeds"][0];
        assert!(e["title"].as_str().unwrap().chars().count() <= EMBED_TITLE_MAX);
        assert!(e["description"].as_str().unwrap().chars().count() <= EMBED_DESCRIPTION_MAX);
        assert!(
            embed_text_len(e) <= EMBED_TOTAL_MAX,
            "{}",
            embed_text_len(e)
        );
        let fields = e["fields"].as_array().unwrap();
        assert!(fields.len() <= EMBED_FIELDS_MAX);
        for f in fields {
            assert!(f["name"].as_str().unwrap().chars().count() <= FIELD_NAME_MAX);
            assert!(f["value"].as_str().unwrap().chars().count() <= FIELD_VALUE_MAX);
        }
        assert!(fields
            .iter()
            .any(|f| f["value"].as_str().unwrap().contains("more")));
        let rows = m["components"].as_array().unwrap();
        assert_eq!(rows.len(), ROWS_MAX);
        for r in rows {
            let b = r["components"].as_array().unwrap();
            assert!(b.len() <= BUTTONS_PER_ROW);
            for b in b {
                assert!(b["label"].as_str().unwrap().chars().count() <= LABEL_MAX);
                assert!(b["custom_id"].as_str().unwrap().chars().count() <= CUSTOM_ID_MAX);
            }
        }
        assert!(thread_name(&c).chars().count() <= THREAD_NAME_MAX);
        let n = note_message(&"n".repeat(5000), &[]);
        assert_eq!(n["content"].as_str().unwrap().chars().count(), CONTENT_MAX);
    }
}

#[cfg(test)]
mod mention_tests {
    use super::*;

    #[test]
    fn notes_ping_only_the_discord_entries() {
        let m = note_message(
            "INC-1 escalated",
            &[
                "discord:42".to_string(),
                "discord-role:77".to_string(),
                "slack:U1".to_string(),
                "discord:not-a-number".to_string(),
            ],
        );
        assert_eq!(m["content"], "<@42> <@&77> INC-1 escalated");
        assert_eq!(m["allowed_mentions"]["users"], json!(["42"]));
        assert_eq!(m["allowed_mentions"]["roles"], json!(["77"]));
        assert_eq!(m["allowed_mentions"]["parse"], json!([]));
    }
}
