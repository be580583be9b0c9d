//! Block Kit rendering of the neutral [`IncidentCard`]: header, facts, links, recommended
//! actions and buttons, always within Slack's documented limits (specs/README.md) so a long
//! alert never turns into an `invalid_blocks` rejection that would dead-letter the card.

use serde_json::{json, Value};

use crate::domain::alert::AlertStatus;
use crate::domain::card::{truncate_chars, ButtonStyle, IncidentCard};
use crate::domain::report::{group_lines, human_duration, Report, CUT_MARK};
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
/// Longest private answer to `/incident` (a report, a timeline): Slack's own limit, past its
/// 4 000 recommendation, because a report cut at 4 000 would lose most of it; Slack folds long
/// messages behind "Show more".
pub const MAX_ANSWER_TEXT: usize = 40_000;

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
        blocks.push(json!({ "type": "section", "text": mrkdwn(escape_within(d, MAX_SECTION_TEXT), MAX_SECTION_TEXT) }));
    }
    let t = card.targets;
    let mut status = card.status.label().to_string();
    if let Some(by) = &card.acknowledged_by {
        status.push_str(&format!(" · acknowledged by {}", escape(by)));
    }
    let fields = vec![
        mrkdwn(
            format!(
                "*Severity*\n{} — detect &lt; {}, repair &lt; {}, {}",
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
    if let Some(g) = &card.alerts {
        blocks.push(json!({ "type": "section", "text": mrkdwn(format!("*Group*\n{}", escape(g)), MAX_SECTION_TEXT) }));
    }
    if let Some(st) = &card.storm {
        blocks.push(json!({ "type": "section", "text": mrkdwn(escape_within(st, MAX_SECTION_TEXT), MAX_SECTION_TEXT) }));
    }
    if let Some(st) = &card.storm_summary {
        blocks.push(json!({ "type": "section", "text": mrkdwn(format!("*Storm*\n{}", escape_within(st, MAX_SECTION_TEXT - 20)), MAX_SECTION_TEXT) }));
    }
    // As on Discord and in the console: a recurrence is what an on-call person wants to see first.
    if let Some(r) = &card.recurrence {
        blocks.push(json!({ "type": "section", "text": mrkdwn(format!("*Recurrence*\n{}", escape_within(r, MAX_SECTION_TEXT - 20)), MAX_SECTION_TEXT) }));
    }
    if let Some(c) = &card.chart {
        // The query comes from the alert: escaped, and no backticks to break out of the code.
        let query = escape(&truncate_chars(&c.query, 300)).replace('`', "'");
        let line = format!(
            "*Metric* `{query}`\n{}",
            c.line(crate::domain::chart::show_value)
        );
        blocks.push(json!({ "type": "section", "text": mrkdwn(line, MAX_SECTION_TEXT) }));
    }
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
            let state = match a.status {
                crate::domain::incident::ActionStatus::Interrupted => {
                    "Interrupted by a restart: outcome unknown".into()
                }
                other => format!("{other:?}"),
            };
            lines.push(format!(
                "• *{}* — `{}` — {state}{}{}",
                escape(&truncate_chars(&a.title, 200)),
                escape(&truncate_chars(&a.summary, 500)).replace('`', "'"),
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

/// A report message: its blocks and the fallback `text`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportMessage {
    pub text: String,
    pub blocks: Vec<Value>,
}

/// Most messages one report is posted as; a report that needs more ends with a visible note of
/// what was left out (the Markdown export has everything).
pub const REPORT_MAX_MESSAGES: usize = 10;
/// Block text per report message: Block Kit caps blocks, not messages, but a wall of 50 full
/// sections is unreadable and large payloads are slow to render; the rest continues in order.
pub const REPORT_MESSAGE_CHARS: usize = 12_000;
/// Longest single list item (an action, a follow-up, a timeline line).
const REPORT_ITEM_CHARS: usize = 1000;
/// Longest fact value (a kind name, the scope labels).
const REPORT_FACT_CHARS: usize = 500;
/// Content blocks per message: room is kept for the "left out" note and the closing context.
const REPORT_CONTENT_BLOCKS: usize = MAX_BLOCKS - 3;

/// The `block_id` of a report message's closing context: how a retried delivery finds the parts
/// already in the thread.
pub fn report_block_id(key: &str, part: usize) -> String {
    truncate_chars(&format!("incidentd:report:{key}:{part}"), MAX_BLOCK_ID)
}

/// Which part of the report of outbox entry `key` a `block_id` marks, if any.
pub fn report_part_of(block_id: &str, key: &str) -> Option<usize> {
    block_id
        .strip_prefix(&format!("incidentd:report:{key}:"))?
        .parse()
        .ok()
}

/// Text shown as Slack mrkdwn, escaped and cut to `max` characters (escaped), visibly: the one
/// escaping-and-cutting path of every card, note, report and answer. The raw text is cut
/// before it is escaped, so an entity (`&lt;`) is never cut in half.
pub fn escape_within(s: &str, max: usize) -> String {
    let escaped_len = |c: char| match c {
        '&' => 5,
        '<' | '>' => 4,
        _ => 1,
    };
    let total: usize = s.chars().map(escaped_len).sum();
    if total <= max {
        return escape(s);
    }
    let budget = max.saturating_sub(CUT_MARK.chars().count());
    let mut used = 0;
    let mut cut = String::new();
    for c in s.chars() {
        used += escaped_len(c);
        if used > budget {
            break;
        }
        cut.push(c);
    }
    let mut out = escape(&cut);
    out.push_str(CUT_MARK);
    out
}

/// One content block and what dropping it would leave out.
struct Piece {
    block: Value,
    chars: usize,
    /// (section, items) for list sections.
    items: Option<(&'static str, usize)>,
}

fn text_piece(text: String) -> Piece {
    let text = truncate_chars(&text, MAX_SECTION_TEXT);
    Piece {
        chars: text.chars().count(),
        block: json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } }),
        items: None,
    }
}

/// A titled list as sections of at most 3000 characters; later ones say "(continued)".
fn list_pieces(title: &str, what: &'static str, lines: &[String], empty: &str) -> Vec<Piece> {
    if lines.is_empty() {
        return vec![text_piece(format!("*{title}*\n{empty}"))];
    }
    let head = format!("*{title}* (continued)\n");
    let room = MAX_SECTION_TEXT - head.chars().count();
    group_lines(lines, room)
        .into_iter()
        .enumerate()
        .map(|(i, (text, n))| {
            let head = if i == 0 {
                format!("*{title}*\n")
            } else {
                head.clone()
            };
            let mut p = text_piece(format!("{head}{text}"));
            p.items = Some((what, n));
            p
        })
        .collect()
}

/// The post-incident report as Block Kit messages, in posting order: a header, the facts as
/// fields, description, root cause, actions (with approvers and outcome), follow-ups and the
/// timeline. Every block is within Slack's limits; what does not fit one message continues in
/// the next (each part says "part i of n"); past [`REPORT_MAX_MESSAGES`] the last message says
/// what was left out. `key` (the outbox key) marks every part for idempotent retries.
pub fn report_messages(r: &Report, key: &str) -> Vec<ReportMessage> {
    let mut pieces = Vec::new();
    let header = truncate_chars(
        &format!(
            "{} {} · Post-incident report — {}",
            severity_emoji(r.severity),
            r.incident,
            r.title
        ),
        MAX_HEADER_TEXT,
    );
    pieces.push(Piece {
        chars: header.chars().count(),
        block: json!({ "type": "header", "text": { "type": "plain_text", "emoji": true, "text": header } }),
        items: None,
    });
    let facts: Vec<Value> = r
        .facts()
        .into_iter()
        .map(|(label, value)| {
            // Facts are short; a pathological label value must not crowd out the rest.
            let label = format!("*{label}*\n");
            mrkdwn(
                format!("{label}{}", escape_within(&value, REPORT_FACT_CHARS)),
                MAX_FIELD_TEXT,
            )
        })
        .collect();
    for chunk in facts.chunks(MAX_FIELDS) {
        let chars = chunk
            .iter()
            .map(|f| f["text"].as_str().unwrap_or("").chars().count())
            .sum();
        pieces.push(Piece {
            block: json!({ "type": "section", "fields": chunk }),
            chars,
            items: None,
        });
    }
    let head = "*Description*\n";
    pieces.push(text_piece(format!(
        "{head}{}",
        escape_within(r.description_text(), MAX_SECTION_TEXT - head.len())
    )));
    let rc = match &r.root_cause {
        Some(rc) => format!(
            "*{}*{} ({})",
            escape(&rc.label),
            rc.text
                .as_deref()
                .map(|t| format!(" — {}", escape_within(t, 2000)))
                .unwrap_or_default(),
            match &rc.confirmed_by {
                Some(a) => format!("confirmed by {}", escape(a)),
                None => format!("_{}_", escape(&r.confirm_hint())),
            }
        ),
        None => "Not determined.".into(),
    };
    pieces.push(text_piece(format!("*Root cause*\n{rc}")));
    let item = |s: String| escape_within(&s, REPORT_ITEM_CHARS);
    if !r.evidence.is_empty() {
        let lines: Vec<String> = r.evidence.iter().map(|e| item(format!("• {e}"))).collect();
        pieces.extend(list_pieces("Evidence", "evidence", &lines, ""));
    }
    let actions: Vec<String> = r.actions.iter().map(|a| item(a.chat_line("*"))).collect();
    pieces.extend(list_pieces("Actions taken", "actions", &actions, "None."));
    let followups: Vec<String> = r.followups.iter().map(|f| item(f.chat_line())).collect();
    pieces.extend(list_pieces(
        "Improvements",
        "follow-ups",
        &followups,
        &escape(&r.followup_hint()),
    ));
    let timeline: Vec<String> = r
        .timeline
        .iter()
        .map(|e| item(format!("`{}` {}", e.at.format("%H:%M:%S"), e.text)))
        .collect();
    pieces.extend(list_pieces(
        "Timeline",
        "timeline entries",
        &timeline,
        "Not available.",
    ));

    // Pages, in order, within the block count and the per-message text budget.
    let mut pages: Vec<Vec<Piece>> = vec![vec![]];
    let mut chars = 0;
    for p in pieces {
        let page = pages.last_mut().expect("one page");
        if !page.is_empty()
            && (page.len() >= REPORT_CONTENT_BLOCKS || chars + p.chars > REPORT_MESSAGE_CHARS)
        {
            pages.push(vec![]);
            chars = 0;
        }
        chars += p.chars;
        pages.last_mut().expect("one page").push(p);
    }
    let mut left_out: Vec<(&'static str, usize)> = Vec::new();
    if pages.len() > REPORT_MAX_MESSAGES {
        for p in pages.drain(REPORT_MAX_MESSAGES..).flatten() {
            match p.items {
                Some((what, n)) => match left_out.iter_mut().find(|(w, _)| *w == what) {
                    Some(x) => x.1 += n,
                    None => left_out.push((what, n)),
                },
                None => left_out.push(("other sections", 1)),
            }
        }
    }
    let n = pages.len();
    pages
        .into_iter()
        .enumerate()
        .map(|(i, page)| {
            let mut blocks: Vec<Value> = page.into_iter().map(|p| p.block).collect();
            if i + 1 == n && !left_out.is_empty() {
                let what: Vec<String> = left_out
                    .iter()
                    .map(|(w, k)| format!("{k} more {w}"))
                    .collect();
                blocks.push(json!({ "type": "section", "text": mrkdwn(format!(
                    ":warning: *Report truncated:* {} did not fit in {REPORT_MAX_MESSAGES} messages. The full report: `/incident report {}`.",
                    what.join(", "), r.incident
                ), MAX_SECTION_TEXT) }));
            }
            let part = if n > 1 {
                format!("part {} of {n} · ", i + 1)
            } else {
                String::new()
            };
            if i + 1 == n {
                // The follow-ups' buttons, under the last part.
                let buttons: Vec<Value> = r
                    .buttons()
                    .iter()
                    .take(MAX_ACTIONS)
                    .map(|b| {
                        let mut e = json!({
                            "type": "button",
                            "text": { "type": "plain_text", "text": truncate_chars(&b.label, MAX_BUTTON_TEXT) },
                            "action_id": b.action.encode(),
                            "value": b.action.encode(),
                        });
                        if b.style == ButtonStyle::Primary {
                            e["style"] = json!("primary");
                        }
                        e
                    })
                    .collect();
                blocks.push(json!({
                    "type": "actions",
                    "block_id": truncate_chars(&format!("incidentd:report-actions:{}", r.incident), MAX_BLOCK_ID),
                    "elements": buttons,
                }));
            }
            blocks.push(json!({
                "type": "context",
                "block_id": report_block_id(key, i),
                "elements": [mrkdwn(format!(
                    "Post-incident report {} · {part}Markdown: `/incident report {}` · incidentd",
                    r.incident, r.incident
                ), MAX_SECTION_TEXT)],
            }));
            let suffix = if n > 1 {
                format!(" (part {} of {n})", i + 1)
            } else {
                String::new()
            };
            ReportMessage {
                text: truncate_chars(
                    &format!(
                        "📋 {} {} — {}: {}, resolved in {}{suffix}",
                        r.incident,
                        r.severity,
                        escape(&r.title),
                        r.status.label(),
                        human_duration(r.durations.resolve)
                    ),
                    MAX_TEXT,
                ),
                blocks,
            }
        })
        .collect()
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
    fn a_recurrence_and_an_interrupted_action_show_on_the_card() {
        let mut c = card();
        assert!(!serde_json::to_string(&card_blocks(&c))
            .unwrap()
            .contains("Recurrence"));
        c.recurrence = Some("2nd time in 30 days: INC-3 <resolved> by `restart`".into());
        c.actions.push(CardAction {
            id: "restart".into(),
            title: "Restart".into(),
            summary: "kubectl rollout restart deploy/api".into(),
            status: ActionStatus::Interrupted,
            approvals: 1,
            needed: 1,
            auto: false,
        });
        let blocks = card_blocks(&c);
        check_limits(&blocks);
        let all = serde_json::to_string(&blocks).unwrap();
        assert!(
            all.contains("*Recurrence*\\n2nd time in 30 days: INC-3 &lt;resolved&gt;"),
            "{all}"
        );
        assert!(
            all.contains("Interrupted by a restart: outcome unknown"),
            "{all}"
        );
        assert!(!all.contains("Failed"), "{all}");
    }

    #[test]
    fn the_metric_shows_as_a_sparkline_with_its_current_value_and_threshold() {
        let mut c = card();
        c.chart = Some(crate::domain::chart::Chart {
            query: "errors{a=\"<!channel>\"} `x`".into(),
            points: (0..8).map(|i| (60.0 * i as f64, i as f64)).collect(),
            threshold: Some(3.0),
            series: 3,
        });
        let blocks = card_blocks(&c);
        check_limits(&blocks);
        let metric = mrkdwn_of(&blocks)
            .into_iter()
            .find(|t| t.starts_with("*Metric*"))
            .expect("a metric section");
        let spark = format!(
            "▁{}▂{}▃{}▄{}▅{}▆{}▇{}█",
            " ".repeat(3),
            " ".repeat(3),
            " ".repeat(3),
            " ".repeat(4),
            " ".repeat(3),
            " ".repeat(3),
            " ".repeat(3)
        );
        assert_eq!(
            metric,
            format!("*Metric* `errors{{a=\"&lt;!channel&gt;\"}} 'x'`\n{spark} now 7 · threshold 3 · 30 min · highest of 3 series")
        );
        assert_mrkdwn_well_formed(&metric);
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

    fn all_text(messages: &[ReportMessage]) -> String {
        messages
            .iter()
            .map(|m| serde_json::to_string(&m.blocks).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_evidence_is_listed_after_the_root_cause() {
        let mut r = crate::domain::report::samples::small();
        r.evidence = vec![
            "CPU = 0.4 at 12:03 UTC".into(),
            "<!channel> = 37 at 12:03 UTC, conclusive".into(),
        ];
        let messages = report_messages(&r, "k");
        check_limits(&messages[0].blocks);
        let all = all_text(&messages);
        assert!(
            all.contains("*Evidence*\\n• CPU = 0.4 at 12:03 UTC\\n• &lt;!channel&gt; = 37 at 12:03 UTC, conclusive"),
            "{all}"
        );
        let rc = all.find("*Root cause*").unwrap();
        assert!(rc < all.find("*Evidence*").unwrap());
        assert!(!all_text(&report_messages(
            &crate::domain::report::samples::small(),
            "k"
        ))
        .contains("*Evidence*"));
    }

    #[test]
    fn a_small_report_is_one_message_with_every_section() {
        let r = crate::domain::report::samples::small();
        let messages = report_messages(&r, "incidentd:slack:9");
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        check_limits(&m.blocks);
        assert_eq!(m.blocks[0]["type"], "header");
        assert_eq!(
            m.blocks[0]["text"]["text"],
            "🟧 INC-7 · Post-incident report — Payments API 503"
        );
        assert_eq!(m.blocks[1]["type"], "section");
        assert!(m.blocks[1]["fields"].as_array().unwrap().len() <= MAX_FIELDS);
        let all = all_text(&messages);
        for want in [
            "*Severity*\\nP1",
            "*Time to resolve*\\n6 min 40 s",
            "*Acknowledged*\\n2026-11-29 12:00:42 UTC by slack:U1",
            "*Scope*\\nservice=payments",
            "*Root cause*\\n*External dependency* — the card processor answered 503 (confirmed by slack:U2)",
            "• `restart` Restart the API — *Succeeded*, approved/decided by slack:UAPPROVER: exit 0 in 1.2 s",
            "• ☐ add a circuit breaker — @bob",
            "`12:03:10` `restart` succeeded",
        ] {
            assert!(all.contains(want), "missing {want} in {all}");
        }
        let last = m.blocks.last().unwrap();
        assert_eq!(last["type"], "context");
        assert_eq!(last["block_id"], "incidentd:report:incidentd:slack:9:0");
        assert_eq!(
            report_part_of("incidentd:report:incidentd:slack:9:0", "incidentd:slack:9"),
            Some(0)
        );
        assert_eq!(
            report_part_of("incidentd:card:INC-7", "incidentd:slack:9"),
            None
        );
        assert!(m.text.contains("INC-7") && m.text.contains("resolved in 6 min 40 s"));
        // Slack accepts the blocks as its own types.
        let typed: Vec<slack_morphism::prelude::SlackBlock> =
            serde_json::from_value(Value::Array(m.blocks.clone())).unwrap();
        assert_eq!(typed.len(), m.blocks.len());
    }

    /// Slack's control characters in the bot's mrkdwn: `&` only as an entity, `<` only as a
    /// link or mention (the integration tests use the fake's `check_mrkdwn`, the same rule).
    fn assert_mrkdwn_well_formed(text: &str) {
        let mut rest = text;
        while let Some(i) = rest.find(['&', '<', '>']) {
            let tail = &rest[i..];
            let step = match tail.as_bytes()[0] {
                b'&' => ["&amp;", "&lt;", "&gt;"]
                    .iter()
                    .find(|e| tail.starts_with(*e))
                    .unwrap_or_else(|| panic!("bare & in {text:?}"))
                    .len(),
                b'<' => {
                    let end = tail.find('>').expect("closed <");
                    let inner = &tail[1..end];
                    assert!(
                        ["http", "mailto:", "@", "#", "!"]
                            .iter()
                            .any(|p| inner.starts_with(p)),
                        "<{inner}> in {text:?}"
                    );
                    end + 1
                }
                _ => panic!("bare > in {text:?}"),
            };
            rest = &tail[step..];
        }
    }

    fn mrkdwn_of(blocks: &[Value]) -> Vec<String> {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if m.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                        out.push(m["text"].as_str().unwrap().to_string());
                    }
                    m.values().for_each(|x| walk(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        blocks.iter().for_each(|b| walk(b, &mut out));
        out
    }

    #[test]
    fn escaping_and_cutting_keep_mrkdwn_well_formed() {
        let mut c = card();
        c.description = Some("<<a".repeat(4000));
        let blocks = card_blocks(&c);
        check_limits(&blocks);
        let texts = mrkdwn_of(&blocks);
        assert!(
            texts.iter().any(|t| t.contains("detect &lt; ")),
            "{texts:?}"
        );
        let description = texts.iter().find(|t| t.starts_with("&lt;&lt;a")).unwrap();
        assert!(description.chars().count() <= MAX_SECTION_TEXT);
        texts.iter().for_each(|t| assert_mrkdwn_well_formed(t));
        // The report's hints name placeholders in angle brackets.
        let mut r = crate::domain::report::samples::small();
        r.followups.clear();
        if let Some(rc) = r.root_cause.as_mut() {
            rc.confirmed_by = None;
        }
        r.description = Some("&".repeat(5000));
        let texts: Vec<String> = report_messages(&r, "k")
            .iter()
            .flat_map(|m| mrkdwn_of(&m.blocks))
            .collect();
        let all = texts.join("\n");
        assert!(all.contains("&lt;category&gt;"), "{all}");
        assert!(all.contains("&lt;item&gt;"), "{all}");
        texts.iter().for_each(|t| assert_mrkdwn_well_formed(t));
    }

    #[test]
    fn a_huge_report_continues_in_order_within_block_kit_limits() {
        let r = crate::domain::report::samples::huge();
        let messages = report_messages(&r, "k");
        assert!(messages.len() > 1 && messages.len() <= REPORT_MAX_MESSAGES);
        for (i, m) in messages.iter().enumerate() {
            check_limits(&m.blocks);
            assert!(!m.text.is_empty() && m.text.chars().count() <= MAX_TEXT);
            let context = m.blocks.last().unwrap();
            assert_eq!(context["block_id"], report_block_id("k", i));
            assert!(serde_json::to_string(context).unwrap().contains(&format!(
                "part {} of {}",
                i + 1,
                messages.len()
            )));
        }
        let first = serde_json::to_string(&messages[0].blocks).unwrap();
        // The important parts come first: facts, root cause, actions.
        for want in [
            "*Severity*",
            "*Time to resolve*",
            "*Root cause*",
            "*Actions taken*",
            "action-0",
        ] {
            assert!(first.contains(want), "{want} not in the first message");
        }
        let all = all_text(&messages);
        // mrkdwn is escaped; the header is plain_text, which Slack never parses for mentions.
        assert_eq!(messages[0].blocks[0]["text"]["type"], "plain_text");
        let mrkdwn_text = all.replacen(
            messages[0].blocks[0]["text"]["text"].as_str().unwrap(),
            "",
            1,
        );
        assert!(
            !mrkdwn_text.contains("<!channel>")
                && !mrkdwn_text.contains("<!here>")
                && !mrkdwn_text.contains("<@U1>")
        );
        assert!(mrkdwn_text.contains("&lt;!here&gt;"), "{mrkdwn_text}");
        assert!(mrkdwn_text.contains("&lt;@U1&gt;"), "{mrkdwn_text}");
        assert!(all.contains("&lt;script&gt;"));
        assert!(all.contains(CUT_MARK), "long texts are cut visibly");
        // Nothing in between is lost: every action and follow-up is there, in order.
        let pos = |s: &str| all.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(pos("action-29") > pos("action-0"));
        // What did not fit is named and counted, never silently dropped.
        let followups = (0..40)
            .filter(|i| all.contains(&format!("follow-up {i} ")))
            .count();
        let events = (0..300)
            .filter(|i| all.contains(&format!("event number {i} ")))
            .count();
        if followups < 40 {
            assert!(all.contains(&format!("{} more follow-ups", 40 - followups)));
        }
        if events < 300 {
            assert!(
                all.contains(&format!("{} more timeline entries", 300 - events)),
                "{all}"
            );
        }
        assert!(followups > 0 && pos("follow-up 0 ") > pos("action-29"));
        let typed: Vec<slack_morphism::prelude::SlackBlock> =
            serde_json::from_value(Value::Array(messages[1].blocks.clone())).unwrap();
        assert!(!typed.is_empty());
    }

    #[test]
    fn a_report_beyond_the_message_cap_says_what_it_left_out() {
        let mut r = crate::domain::report::samples::huge();
        let t = r.detected_at;
        r.timeline = (0..5000)
            .map(|i| crate::domain::report::ReportEntry {
                at: t,
                actor: "x".into(),
                text: format!("entry {i} {}", "z".repeat(500)),
            })
            .collect();
        let messages = report_messages(&r, "k");
        assert_eq!(messages.len(), REPORT_MAX_MESSAGES);
        messages.iter().for_each(|m| check_limits(&m.blocks));
        let all = all_text(&messages);
        let shown = (0..5000)
            .filter(|i| all.contains(&format!("entry {i} ")))
            .count();
        let last = serde_json::to_string(&messages.last().unwrap().blocks).unwrap();
        assert!(last.contains("Report truncated"), "{last}");
        assert!(
            last.contains(&format!("{} more timeline entries", 5000 - shown)),
            "the note counts exactly what is missing: {last}"
        );
        assert!(last.contains("/incident report INC-7"));
    }
}
