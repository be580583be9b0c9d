//! Block Kit rendering of the neutral [`IncidentCard`]: header, facts, links, recommended
//! actions and buttons, always within Slack's documented limits (specs/README.md) so a long
//! alert never turns into an `invalid_blocks` rejection that would dead-letter the card.

use serde_json::{json, Value};

use crate::domain::alert::AlertStatus;
use crate::domain::card::{truncate_chars, ButtonStyle, IncidentCard};
use crate::domain::severity::{human_seconds, Severity};

/// Most blocks in one message.
pub const MAX_BLOCKS: usize = 50;
/// Longest section text (and context element text).
pub const MAX_SECTION_TEXT: usize = 3000;
/// Most fields in a section, and the longest field.
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD_TEXT: usize = 2000;
/// Longest header text.
pub const MAX_HEADER_TEXT: usize = 150;
/// Most elements in an actions block.
pub const MAX_ACTIONS: usize = 25;
/// Longest button label and `action_id`.
pub const MAX_BUTTON_TEXT: usize = 75;
pub const MAX_ACTION_ID: usize = 255;
/// Longest `block_id`.
pub const MAX_BLOCK_ID: usize = 255;
/// Longest message `text` we send (Slack truncates at 40 000, but recommends 4 000).
pub const MAX_TEXT: usize = 4000;

/// The `block_id` of a card's header: how the bot finds its own card in a thread again.
pub fn card_block_id(card: &IncidentCard) -> String {
    format!("incidentd:card:{}", card.incident)
}

/// Escapes the three characters Slack's mrkdwn treats as control characters, so alert text
/// cannot inject mentions (`<!channel>`) or links.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn severity_emoji(s: Severity) -> &'static str {
    match s {
        Severity::P0 => "🟥",
        Severity::P1 => "🟧",
        Severity::P2 => "🟨",
        Severity::P3 => "🟦",
    }
}

/// The fallback `text`: what notifications and screen readers show.
pub fn fallback_text(card: &IncidentCard) -> String {
    truncate_chars(
        &format!(
            "{} {} {} — {} ({})",
            severity_emoji(card.severity),
            card.incident,
            card.severity,
            escape(&card.title),
            card.status.label()
        ),
        MAX_TEXT,
    )
}

fn mrkdwn(text: String, max: usize) -> Value {
    json!({ "type": "mrkdwn", "text": truncate_chars(&text, max) })
}

/// Joins lines until the next one would not fit in `max` characters, then says how many were
/// left out: cutting a link or a code span in half would render as garbage.
fn join_within(lines: &[String], max: usize) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let more = format!("\n…and {} more", lines.len() - i);
        let needed = out.chars().count() + line.chars().count() + 1;
        if needed + more.chars().count() > max && i + 1 < lines.len() || needed > max {
            if out.is_empty() {
                return truncate_chars(line, max);
            }
            out.push_str(&more);
            return out;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

/// The card as Block Kit blocks (JSON, the shape chat.postMessage takes).
pub fn card_blocks(card: &IncidentCard) -> Vec<Value> {
    let mut blocks = Vec::new();
    blocks.push(json!({
        "type": "header",
        "block_id": truncate_chars(&card_block_id(card), MAX_BLOCK_ID),
        "text": {
            "type": "plain_text",
            "emoji": true,
            "text": truncate_chars(
                &format!("{} {} {} — {}", severity_emoji(card.severity), card.incident, card.severity, card.title),
                MAX_HEADER_TEXT,
            ),
        }
    }));
    if let Some(d) = card.description.as_deref().filter(|d| !d.trim().is_empty()) {
        blocks.push(json!({ "type": "section", "text": mrkdwn(escape(d), MAX_SECTION_TEXT) }));
    }
    let t = card.targets;
    let mut status = card.status.label().to_string();
    if let Some(by) = &card.acknowledged_by {
        status.push_str(&format!(" · acknowledged by {}", escape(by)));
    }
    let fields = vec![
        mrkdwn(
            format!(
                "*Severity*\n{} — detect < {}, repair < {}, {}",
                card.severity,
                human_seconds(t.detect_seconds),
                human_seconds(t.repair_seconds),
                t.approval.label()
            ),
            MAX_FIELD_TEXT,
        ),
        mrkdwn(
            format!("*Kind*\n{}", escape(&card.kind_name)),
            MAX_FIELD_TEXT,
        ),
        mrkdwn(format!("*Status*\n{status}"), MAX_FIELD_TEXT),
        mrkdwn(
            format!(
                "*Alert*\n{} · seen {}×",
                match card.alert_status {
                    AlertStatus::Firing => "firing",
                    AlertStatus::Resolved => "cleared",
                },
                card.alert_count
            ),
            MAX_FIELD_TEXT,
        ),
    ];
    debug_assert!(fields.len() <= MAX_FIELDS);
    blocks.push(json!({ "type": "section", "fields": fields }));
    let links: Vec<String> = card
        .links
        .iter()
        .filter(|l| !l.url.contains(['<', '>', '|', ' ']))
        .map(|l| format!("• <{}|{}>", l.url, escape(&truncate_chars(&l.title, 100))))
        .collect();
    if !links.is_empty() {
        let mut lines = vec!["*Links*".to_string()];
        lines.extend(links);
        blocks.push(json!({ "type": "section", "text": mrkdwn(join_within(&lines, MAX_SECTION_TEXT), MAX_SECTION_TEXT) }));
    }
    if !card.actions.is_empty() {
        let mut lines = vec![match &card.playbook {
            Some(p) => format!("*Recommended actions* (playbook `{}`)", escape(p)),
            None => "*Recommended actions*".to_string(),
        }];
        for a in &card.actions {
            lines.push(format!(
                "• *{}* — `{}` — {:?}{}{}",
                escape(&truncate_chars(&a.title, 200)),
                escape(&truncate_chars(&a.summary, 500)).replace('`', "'"),
                a.status,
                if a.needed > 0 {
                    format!(" ({}/{} approvals)", a.approvals, a.needed)
                } else {
                    String::new()
                },
                if a.auto { " · auto" } else { "" }
            ));
        }
        blocks.push(json!({ "type": "section", "text": mrkdwn(join_within(&lines, MAX_SECTION_TEXT), MAX_SECTION_TEXT) }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [mrkdwn(
            format!(
                "opened {} · last seen {} · incidentd",
                card.opened_at.format("%Y-%m-%d %H:%M UTC"),
                card.last_seen_at.format("%Y-%m-%d %H:%M UTC")
            ),
            MAX_SECTION_TEXT,
        )]
    }));
    // Finished incidents have no buttons: the actions block disappears with them.
    let buttons: Vec<Value> = card
        .buttons
        .iter()
        .filter_map(|b| {
            let action_id = b.action.encode();
            if action_id.chars().count() > MAX_ACTION_ID {
                tracing::warn!(incident = %card.incident, "A button's action id is too long for Slack; left out.");
                return None;
            }
            let mut v = json!({
                "type": "button",
                "action_id": action_id,
                "text": { "type": "plain_text", "emoji": true, "text": truncate_chars(&b.label, MAX_BUTTON_TEXT) },
            });
            match b.style {
                ButtonStyle::Primary => v["style"] = json!("primary"),
                ButtonStyle::Danger => v["style"] = json!("danger"),
                ButtonStyle::Default => {}
            }
            Some(v)
        })
        .collect();
    let button_blocks: Vec<Value> = buttons
        .chunks(MAX_ACTIONS)
        .enumerate()
        .map(|(i, chunk)| {
            json!({
                "type": "actions",
                "block_id": format!("incidentd:actions:{}:{i}", card.incident),
                "elements": chunk,
            })
        })
        .collect();
    // The facts take at most seven blocks; buttons get the rest of the 50 (a card never has
    // anywhere near 25 × 43 buttons, but a misconfigured playbook must not break the card).
    let room = MAX_BLOCKS.saturating_sub(blocks.len());
    blocks.extend(button_blocks.into_iter().take(room));
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Link;
    use crate::domain::card::{build_card, Button, ButtonAction, CardAction};
    use crate::domain::incident::{ActionStatus, IncidentId};

    fn card() -> IncidentCard {
        let inc = crate::domain::incident::tests_support::incident();
        build_card(
            &inc,
            "Tool/API failure",
            Severity::P1.default_targets(),
            1,
            1500,
        )
    }

    /// Every limit from specs/README.md that a block can break.
    pub(crate) fn check_limits(blocks: &[Value]) {
        assert!(blocks.len() <= MAX_BLOCKS, "{} blocks", blocks.len());
        let chars = |v: &Value| v.as_str().unwrap_or("").chars().count();
        for b in blocks {
            if let Some(id) = b.get("block_id") {
                assert!(chars(id) <= MAX_BLOCK_ID);
            }
            match b["type"].as_str().unwrap() {
                "header" => assert!(chars(&b["text"]["text"]) <= MAX_HEADER_TEXT),
                "section" => {
                    if let Some(t) = b.get("text") {
                        assert!(chars(&t["text"]) <= MAX_SECTION_TEXT);
                    }
                    if let Some(f) = b.get("fields") {
                        let f = f.as_array().unwrap();
                        assert!(f.len() <= MAX_FIELDS);
                        assert!(f.iter().all(|x| chars(&x["text"]) <= MAX_FIELD_TEXT));
                    }
                }
                "context" => assert!(b["elements"].as_array().unwrap().len() <= 10),
                "actions" => {
                    let e = b["elements"].as_array().unwrap();
                    assert!(!e.is_empty() && e.len() <= MAX_ACTIONS);
                    for x in e {
                        assert!(chars(&x["text"]["text"]) <= MAX_BUTTON_TEXT);
                        assert!(chars(&x["action_id"]) <= MAX_ACTION_ID);
                    }
                }
                other => panic!("unexpected block {other}"),
            }
        }
    }

    #[test]
    fn card_renders_facts_links_actions_and_buttons() {
        let mut c = card();
        c.links.push(Link {
            title: "Runbook".into(),
            url: "https://runbooks.example/api".into(),
        });
        c.actions.push(CardAction {
            id: "restart".into(),
            title: "Restart".into(),
            summary: "kubectl rollout restart deploy/api".into(),
            status: ActionStatus::Proposed,
            approvals: 0,
            needed: 1,
            auto: false,
        });
        c.buttons.insert(
            1,
            Button {
                label: "Approve: Restart".into(),
                action: ButtonAction::Approve(c.incident, "restart".into()),
                style: ButtonStyle::Primary,
            },
        );
        let blocks = card_blocks(&c);
        check_limits(&blocks);
        let all = serde_json::to_string(&blocks).unwrap();
        assert!(all.contains("INC-7 P2"), "{all}");
        assert!(all.contains("<https://runbooks.example/api|Runbook>"));
        assert!(all.contains("kubectl rollout restart deploy/api"));
        assert!(all.contains("\"action_id\":\"approve:INC-7:restart\""));
        assert!(all.contains("\"style\":\"primary\""));
        assert_eq!(blocks[0]["block_id"], "incidentd:card:INC-7");
        // Slack accepts it as its own types.
        let typed: Vec<slack_morphism::prelude::SlackBlock> =
            serde_json::from_value(Value::Array(blocks)).unwrap();
        assert!(!typed.is_empty());
    }

    #[test]
    fn huge_cards_stay_within_block_kit_limits() {
        let mut c = card();
        c.title = "T".repeat(1000);
        c.description = Some("<!channel> ".repeat(2000));
        c.kind_name = "k".repeat(5000);
        c.acknowledged_by = Some("a".repeat(3000));
        for i in 0..200 {
            c.links.push(Link {
                title: format!("link {i} {}", "x".repeat(300)),
                url: format!("https://example.com/{}", "y".repeat(200)),
            });
            c.actions.push(CardAction {
                id: format!("a{i}"),
                title: "t".repeat(300),
                summary: "s".repeat(3000),
                status: ActionStatus::Proposed,
                approvals: 0,
                needed: 2,
                auto: false,
            });
        }
        c.buttons = (0..2000)
            .map(|i| Button {
                label: "L".repeat(300),
                action: ButtonAction::Approve(IncidentId(1), format!("action-{i}")),
                style: ButtonStyle::Default,
            })
            .collect();
        let blocks = card_blocks(&c);
        check_limits(&blocks);
        assert_eq!(blocks.len(), MAX_BLOCKS);
        let all = serde_json::to_string(&blocks).unwrap();
        assert!(!all.contains("<!channel>"), "mentions are escaped");
        assert!(all.contains("more"), "cut lists say so");
        assert!(fallback_text(&c).chars().count() <= MAX_TEXT);
    }

    #[test]
    fn finished_incidents_lose_their_buttons() {
        let mut c = card();
        assert!(card_blocks(&c).iter().any(|b| b["type"] == "actions"));
        c.buttons.clear();
        let blocks = card_blocks(&c);
        check_limits(&blocks);
        assert!(!blocks.iter().any(|b| b["type"] == "actions"));
    }
}
