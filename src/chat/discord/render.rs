//! The incident card as Discord sees it: one embed (severity colour, status, targets, kind,
//! alert count, links, recommended actions) and button rows. Everything is cut to Discord's
//! documented limits here, so the API never answers 50035 (invalid form body) because of us.

use serde_json::{json, Value};
use tracing::warn;

use crate::domain::alert::AlertStatus;
use crate::domain::card::{truncate_chars, ButtonStyle, IncidentCard};
use crate::domain::incident::{ActionStatus, IncidentId, Status};
use crate::domain::report::{cut_visibly, group_lines, Report};
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
        ActionStatus::Interrupted => "interrupted by a restart: outcome unknown".into(),
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

use crate::domain::chart::show_value;

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
    if let Some(g) = &card.alerts {
        fields.push(field("Group", truncate_chars(g, FIELD_VALUE_MAX), false));
    }
    if let Some(st) = &card.storm {
        fields.push(field(
            "Storm guard",
            truncate_chars(st, FIELD_VALUE_MAX),
            false,
        ));
    }
    if let Some(st) = &card.storm_summary {
        fields.push(field("Storm", truncate_chars(st, FIELD_VALUE_MAX), false));
    }
    if let Some(r) = &card.recurrence {
        fields.push(field(
            "Recurrence",
            truncate_chars(r, FIELD_VALUE_MAX),
            false,
        ));
    }
    if let Some(c) = &card.chart {
        // The query comes from the alert: no backticks to break out of its code span.
        let query = truncate_chars(&c.query.replace('`', "'"), 300);
        fields.push(field(
            "Metric",
            format!("`{query}`\n{}", c.line(show_value)),
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
    button_rows(&card.buttons, card.incident)
}

fn button_rows(given: &[crate::domain::card::Button], incident: IncidentId) -> Value {
    let mut buttons = Vec::new();
    for b in given {
        let id = b.action.encode();
        if id.chars().count() > CUSTOM_ID_MAX {
            warn!(incident = %incident, custom_id = %id, "Button id too long for Discord; button left out.");
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
        warn!(incident = %incident, buttons = buttons.len(), "More buttons than Discord shows; the rest are left out.");
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

/// Most messages one report is posted as; a report that needs more ends with a visible note of
/// what was left out (the Markdown export has everything).
pub const REPORT_MAX_MESSAGES: usize = 10;
/// Embed text per report message, under Discord's 6000 total with room for the footer.
const REPORT_EMBED_BUDGET: usize = EMBED_TOTAL_MAX - 200;
/// Room kept on every page for the "left out" note.
const NOTE_RESERVE: usize = 300;
/// The incident description's share of the first embed.
const REPORT_DESCRIPTION_MAX: usize = 1500;
/// Longest single list item (an action, a follow-up, a timeline line).
const REPORT_ITEM_CHARS: usize = 500;
/// Longest fact value (a kind name, the scope labels).
const REPORT_FACT_CHARS: usize = 300;

/// One embed field and what dropping it would leave out.
struct ReportField {
    field: Value,
    chars: usize,
    items: Option<(&'static str, usize)>,
}

fn report_field(name: &str, value: String, inline: bool) -> ReportField {
    let field = field(name, value, inline);
    ReportField {
        chars: embed_text_len(&json!({ "fields": [field.clone()] })),
        field,
        items: None,
    }
}

/// A titled list as fields of at most 1024 characters; later ones say "(continued)".
fn list_fields(name: &str, what: &'static str, lines: &[String], empty: &str) -> Vec<ReportField> {
    if lines.is_empty() {
        return vec![report_field(name, empty.to_string(), false)];
    }
    group_lines(lines, FIELD_VALUE_MAX)
        .into_iter()
        .enumerate()
        .map(|(i, (text, n))| {
            let name = if i == 0 {
                name.to_string()
            } else {
                format!("{name} (continued)")
            };
            let mut f = report_field(&name, text, false);
            f.items = Some((what, n));
            f
        })
        .collect()
}

/// The post-incident report as Discord messages, in posting order, one embed each: the first
/// has the title, the description and the facts as inline fields, then root cause, actions
/// (with approvers and outcome), follow-ups and the timeline as fields; what does not fit one
/// message continues in the next ("part i of n" in the footer). Every message is within
/// Discord's limits (≤ 25 fields, ≤ 6000 characters of embed text); past
/// [`REPORT_MAX_MESSAGES`] the last one says what was left out. Nobody is pinged.
pub fn report_messages(r: &Report) -> Vec<Value> {
    let item = |s: String| cut_visibly(&s, REPORT_ITEM_CHARS);
    let mut fields: Vec<ReportField> = r
        .facts()
        .into_iter()
        .map(|(label, value)| report_field(label, cut_visibly(&value, REPORT_FACT_CHARS), true))
        .collect();
    let rc = match &r.root_cause {
        Some(rc) => format!(
            "**{}**{} ({})",
            rc.label,
            rc.text
                .as_deref()
                .map(|t| format!(" — {t}"))
                .unwrap_or_default(),
            match &rc.confirmed_by {
                Some(a) => format!("confirmed by {a}"),
                None => format!("*{}*", r.confirm_hint()),
            }
        ),
        None => "Not determined.".into(),
    };
    fields.push(report_field(
        "Root cause",
        cut_visibly(&rc, FIELD_VALUE_MAX),
        false,
    ));
    if !r.evidence.is_empty() {
        let lines: Vec<String> = r.evidence.iter().map(|e| item(format!("• {e}"))).collect();
        fields.extend(list_fields("Evidence", "evidence", &lines, ""));
    }
    let actions: Vec<String> = r.actions.iter().map(|a| item(a.chat_line("**"))).collect();
    fields.extend(list_fields("Actions taken", "actions", &actions, "None."));
    let followups: Vec<String> = r.followups.iter().map(|f| item(f.chat_line())).collect();
    fields.extend(list_fields(
        "Improvements",
        "follow-ups",
        &followups,
        &r.followup_hint(),
    ));
    let timeline: Vec<String> = r
        .timeline
        .iter()
        .map(|e| item(format!("`{}` {}", e.at.format("%H:%M:%S"), e.text)))
        .collect();
    fields.extend(list_fields(
        "Timeline",
        "timeline entries",
        &timeline,
        "Not available.",
    ));

    let title = truncate_chars(&r.heading(), EMBED_TITLE_MAX);
    let description = cut_visibly(r.description_text(), REPORT_DESCRIPTION_MAX);
    let continued = truncate_chars(
        &format!("{} — report (continued)", r.incident),
        EMBED_TITLE_MAX,
    );
    // Pages of fields: ≤ 25 (one slot kept for a "left out" note) and within the text budget.
    let mut pages: Vec<Vec<ReportField>> = vec![vec![]];
    let mut used = title.chars().count() + description.chars().count();
    for f in fields {
        let page = pages.last_mut().expect("one page");
        if !page.is_empty()
            && (page.len() >= EMBED_FIELDS_MAX - 1
                || used + f.chars > REPORT_EMBED_BUDGET - NOTE_RESERVE)
        {
            pages.push(vec![]);
            used = continued.chars().count();
        }
        used += f.chars;
        pages.last_mut().expect("one page").push(f);
    }
    let mut left_out: Vec<(&'static str, usize)> = Vec::new();
    if pages.len() > REPORT_MAX_MESSAGES {
        for f in pages.drain(REPORT_MAX_MESSAGES..).flatten() {
            let (what, n) = f.items.unwrap_or(("other fields", 1));
            match left_out.iter_mut().find(|(w, _)| *w == what) {
                Some(x) => x.1 += n,
                None => left_out.push((what, n)),
            }
        }
    }
    let n = pages.len();
    pages
        .into_iter()
        .enumerate()
        .map(|(i, page)| {
            let mut fields: Vec<Value> = page.into_iter().map(|f| f.field).collect();
            if i + 1 == n && !left_out.is_empty() {
                let what: Vec<String> = left_out
                    .iter()
                    .map(|(w, k)| format!("{k} more {w}"))
                    .collect();
                // Every page kept a field slot and NOTE_RESERVE characters for this.
                fields.push(field(
                    "⚠️ Report truncated",
                    format!(
                        "{} did not fit in {REPORT_MAX_MESSAGES} messages. The full report: `/incident report {}`.",
                        what.join(", "),
                        r.incident
                    ),
                    false,
                ));
            }
            let part = if n > 1 {
                format!(" · part {} of {n}", i + 1)
            } else {
                String::new()
            };
            let mut embed = json!({
                "title": if i == 0 { title.clone() } else { continued.clone() },
                "color": if r.status.is_active() { 0xE6_7E_22 } else { 0x2E_CC_71 },
                "fields": fields,
                "footer": { "text": truncate_chars(
                    &format!("incidentd · post-incident report{part} · Markdown: /incident report {}", r.incident),
                    FOOTER_MAX,
                ) },
            });
            if i == 0 {
                embed["description"] = json!(description);
                embed["timestamp"] = json!(r.resolved_at.unwrap_or(r.detected_at).to_rfc3339());
            }
            let mut m = json!({ "embeds": [embed], "allowed_mentions": { "parse": [] } });
            if i + 1 == n {
                // The follow-ups' buttons, under the last part.
                m["components"] = button_rows(&r.buttons(), r.incident);
            }
            m
        })
        .collect()
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
            alerts: Some("2 firing, 1 resolved: pod=b (firing), pod=a (resolved)".into()),
            storm: None,
            storm_summary: None,
            chart: None,
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
                "Group",
                "Links",
                "Recommended actions"
            ]
        );
        assert_eq!(
            e["fields"][4]["value"],
            "2 firing, 1 resolved: pod=b (firing), pod=a (resolved)"
        );
        assert!(e["fields"][5]["value"]
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
    fn the_metric_shows_as_a_sparkline_with_its_current_value_and_threshold() {
        let mut c = card();
        c.chart = Some(crate::domain::chart::Chart {
            query: "errors_ratio{service=\"api\"} `@everyone`".into(),
            points: (0..8)
                .map(|i| (60.0 * i as f64, i as f64 / 100.0))
                .collect(),
            threshold: Some(0.05),
            series: 1,
        });
        let m = card_message(&c);
        assert_eq!(
            m["allowed_mentions"]["parse"],
            json!([]),
            "nobody is pinged"
        );
        let v = m["embeds"][0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "Metric")
            .expect("a Metric field")["value"]
            .as_str()
            .unwrap();
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
            v,
            format!("`errors_ratio{{service=\"api\"}} '@everyone'`\n{spark} now 0.07 · threshold 0.05 · 30 min")
        );
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
mod report_tests {
    use super::*;
    use crate::domain::report::{samples, ReportEntry, CUT_MARK};

    /// Every documented limit a report message can break (shared/specs/README.md).
    fn check(m: &Value) {
        let embeds = m["embeds"].as_array().unwrap();
        assert!(!embeds.is_empty() && embeds.len() <= 10);
        let chars = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
        let mut total = 0;
        for e in embeds {
            assert!(chars(&e["title"]) <= EMBED_TITLE_MAX);
            assert!(chars(&e["description"]) <= EMBED_DESCRIPTION_MAX);
            assert!(chars(&e["footer"]["text"]) <= FOOTER_MAX);
            let fields = e["fields"].as_array().unwrap();
            assert!(fields.len() <= EMBED_FIELDS_MAX, "{} fields", fields.len());
            for f in fields {
                assert!((1..=FIELD_NAME_MAX).contains(&chars(&f["name"])));
                assert!((1..=FIELD_VALUE_MAX).contains(&chars(&f["value"])));
            }
            total += embed_text_len(e);
        }
        assert!(total <= EMBED_TOTAL_MAX, "{total} characters");
        assert_eq!(
            m["allowed_mentions"]["parse"],
            json!([]),
            "nobody is pinged"
        );
    }

    fn field_value<'a>(m: &'a Value, name: &str) -> &'a str {
        m["embeds"][0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no field {name}"))["value"]
            .as_str()
            .unwrap()
    }

    #[test]
    fn the_evidence_is_listed_after_the_root_cause() {
        let mut r = samples::small();
        r.evidence = vec![
            "CPU = 0.4 at 12:03 UTC".into(),
            "429 rate = 37 at 12:03 UTC, conclusive".into(),
        ];
        let messages = report_messages(&r);
        check(&messages[0]);
        assert_eq!(
            field_value(&messages[0], "Evidence"),
            "• CPU = 0.4 at 12:03 UTC\n• 429 rate = 37 at 12:03 UTC, conclusive"
        );
        // None: no section.
        let m = report_messages(&samples::small());
        assert!(m[0]["embeds"][0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["name"] != "Evidence"));
    }

    #[test]
    fn a_small_report_is_one_message_with_every_section() {
        let messages = report_messages(&samples::small());
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        check(m);
        let e = &m["embeds"][0];
        assert_eq!(e["title"], "Post-incident report: INC-7 — Payments API 503");
        assert_eq!(e["description"], "5xx above 5% for 10 minutes");
        assert_eq!(e["color"], 0x2ECC71);
        assert_eq!(field_value(m, "Severity"), "P1");
        assert_eq!(field_value(m, "Time to resolve"), "6 min 40 s");
        assert_eq!(field_value(m, "Scope"), "service=payments");
        assert_eq!(e["fields"][0]["inline"], true);
        assert_eq!(
            field_value(m, "Root cause"),
            "**External dependency** — the card processor answered 503 (confirmed by slack:U2)"
        );
        assert_eq!(
            field_value(m, "Actions taken"),
            "• `restart` Restart the API — **Succeeded**, approved/decided by slack:UAPPROVER: exit 0 in 1.2 s"
        );
        assert_eq!(
            field_value(m, "Improvements"),
            "• ☐ add a circuit breaker — @bob (technical · open)"
        );
        assert!(field_value(m, "Timeline").contains("`12:03:10` `restart` succeeded"));
        assert!(!e["footer"]["text"].as_str().unwrap().contains("part"));
    }

    #[test]
    fn a_huge_report_continues_in_order_within_discord_limits() {
        let messages = report_messages(&samples::huge());
        assert!(messages.len() > 1 && messages.len() <= REPORT_MAX_MESSAGES);
        for (i, m) in messages.iter().enumerate() {
            check(m);
            let footer = m["embeds"][0]["footer"]["text"].as_str().unwrap();
            assert!(
                footer.contains(&format!("part {} of {}", i + 1, messages.len())),
                "{footer}"
            );
        }
        let first = &messages[0];
        for name in ["Severity", "Time to resolve", "Root cause", "Actions taken"] {
            field_value(first, name);
        }
        assert!(first["embeds"][0]["description"]
            .as_str()
            .unwrap()
            .ends_with(CUT_MARK));
        let all = serde_json::to_string(&messages).unwrap();
        assert!(all.contains(CUT_MARK), "long items are cut visibly");
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
    }

    #[test]
    fn a_report_beyond_the_message_cap_says_what_it_left_out() {
        let mut r = samples::huge();
        let t = r.detected_at;
        r.timeline = (0..3000)
            .map(|i| ReportEntry {
                at: t,
                actor: "x".into(),
                text: format!("entry {i} {}", "z".repeat(300)),
            })
            .collect();
        let messages = report_messages(&r);
        assert_eq!(messages.len(), REPORT_MAX_MESSAGES);
        messages.iter().for_each(check);
        let all = serde_json::to_string(&messages).unwrap();
        let shown = (0..3000)
            .filter(|i| all.contains(&format!("entry {i} ")))
            .count();
        let last = serde_json::to_string(messages.last().unwrap()).unwrap();
        assert!(
            last.contains(&format!("{} more timeline entries", 3000 - shown)),
            "the note counts exactly what is missing: {last}"
        );
        assert!(last.contains("/incident report INC-7"));
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
