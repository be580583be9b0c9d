//! Alerts read from chat messages: what monitoring systems post into an alert channel (Slack
//! attachments, Discord embeds, console text), or what a person types there, turned into an
//! [`Alert`] by a pure function, [`parse_chat_message`].
//!
//! Recognized shapes:
//! - Alertmanager's default Slack message (attachment title `[FIRING:2] HighErrorRate (api)`)
//!   and the common custom Slack text (`*Alert:* … - `critical``, `*Description:* …`,
//!   `*Details:*` with `• *name:* `value`` lines);
//! - Alertmanager's default Discord message and Grafana's default Slack/Discord message, whose
//!   bodies list each alert as `Labels:` / `Annotations:` blocks of ` - name = value` lines plus
//!   `Source:` / `Silence:` / `Dashboard:` / `Panel:` / `Runbook:` URLs;
//! - free text, whose first line becomes the title.
//!
//! Identity: when labels were read, the fingerprint is [`fingerprint_labels`] over them, the
//! same as a webhook alert without its own fingerprint field gets, so a chat-posted copy and a
//! webhook-posted alert meet in one incident. Otherwise it is [`fingerprint_text`] over the title
//! without its `[FIRING:n]` / `[RESOLVED]` prefix, so repeats and the resolve of a title-only
//! message match whatever their alert count.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};

use super::{annotation_links, describe, one_line, title_from_labels, Links};
use crate::domain::alert::{
    fingerprint_labels, fingerprint_text, Alert, AlertSource, AlertStatus, ChatOrigin,
    HumanMessages, Platform,
};
use crate::domain::policy::Actor;

/// A chat message as the platform adapters hand it over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub platform: Platform,
    pub channel: String,
    /// Slack `ts`, Discord message id, console message id.
    pub message_id: String,
    #[serde(default)]
    pub text: String,
    #[serde(
        default,
        deserialize_with = "super::capped::<_, _, { super::MAX_CHAT_PARTS }>"
    )]
    pub attachments: Vec<ChatAttachment>,
    #[serde(
        default,
        deserialize_with = "super::capped::<_, _, { super::MAX_CHAT_PARTS }>"
    )]
    pub embeds: Vec<ChatEmbed>,
    /// Posted by a bot, an app or a webhook; false for a person.
    #[serde(default)]
    pub from_bot: bool,
    /// The bot's own user id on the platform, to recognize a mention of it: `<@U…>` in Slack,
    /// `<@…>` / `<@!…>` in Discord, `@incidentd` in the console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_user: Option<String>,
    /// Who wrote it, when the adapter knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Actor>,
}

/// An empty console message, for callers that fill in only some fields
/// (`ChatMessage { text, ..Default::default() }`).
impl Default for ChatMessage {
    fn default() -> Self {
        ChatMessage {
            platform: Platform::Console,
            channel: String::new(),
            message_id: String::new(),
            text: String::new(),
            attachments: Vec::new(),
            embeds: Vec::new(),
            from_bot: false,
            bot_user: None,
            author: None,
        }
    }
}

/// A Slack (legacy) attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatAttachment {
    pub title: Option<String>,
    pub title_link: Option<String>,
    pub text: Option<String>,
    pub fallback: Option<String>,
    pub pretext: Option<String>,
    pub color: Option<String>,
    #[serde(deserialize_with = "super::capped::<_, _, { super::MAX_CHAT_FIELDS }>")]
    pub fields: Vec<ChatField>,
}

/// A Discord embed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatEmbed {
    pub title: Option<String>,
    pub url: Option<String>,
    pub description: Option<String>,
    pub color: Option<u32>,
    #[serde(deserialize_with = "super::capped::<_, _, { super::MAX_CHAT_FIELDS }>")]
    pub fields: Vec<ChatField>,
}

/// A field of an attachment or embed (Slack calls its name `title`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatField {
    #[serde(alias = "title")]
    pub name: String,
    pub value: String,
}

/// The status prefix of a title: `[FIRING:2]`, `[FIRING:1, RESOLVED:1]`, `[RESOLVED]`, and
/// legacy Grafana's `[Alerting]`, `[OK]`, `[No Data]`, `[Pending]`, possibly after emoji
/// (`:fire:` or Unicode) and markup.
static STATUS_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?::[a-z0-9_+\-]+:|[^\w\[])*\[\s*(firing|resolved|alerting|ok|no data|pending)\b[^\]]*\]",
    )
    .expect("valid regex")
});

/// A ` - name = value` line of a `Labels:` / `Annotations:` block.
static BLOCK_ITEM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*[-•*]\s+([^\s=]+)\s*=\s*(.*?)\s*$").expect("valid regex"));

/// A Slack detail line: `• *alertname:* `HighErrorRate``.
static DETAIL_ITEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:[-•·]\s*|\*\s+)\*([^*:]+):\*\s*(.*?)\s*$").expect("valid regex")
});

/// A `Key: value` line, the key possibly in Slack or Markdown bold (`*Key:*`, `**Key:**`,
/// `**Key**:`). Only the keys in [`KEYS`] mean anything; other lines are text.
static KEYED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*[*_]{0,2}([A-Za-z][A-Za-z ]{0,30}?)[*_]{0,2}\s*:[*_]{0,2}(?:\s+(.*?))?\s*$")
        .expect("valid regex")
});

/// Section headers that carry no data: `**Firing**`, `Alerts Resolved:`.
static MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*[*_]{0,2}\s*(?:alerts\s+)?(firing|resolved)\s*[*_]{0,2}\s*:?\s*$")
        .expect("valid regex")
});

/// A severity word in the title's trailing parentheses (`HighErrorRate (api critical)`).
fn paren_severity(title: &str) -> Option<String> {
    const WORDS: &[&str] = &[
        "critical", "crit", "warning", "warn", "info", "fatal", "page", "p0", "p1", "p2", "p3",
    ];
    let inner = title.trim_end().strip_suffix(')')?.rsplit_once('(')?.1;
    inner
        .split_whitespace()
        .find(|w| WORDS.contains(&w.to_ascii_lowercase().as_str()))
        .map(str::to_string)
}

/// The `` - `critical` `` severity suffix of a Slack `*Alert:*` line.
static SEVERITY_SUFFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s+-\s+`([^`]+)`\s*$").expect("valid regex"));

/// Slack markup `<target|label>` / `<target>` (links, mentions); Discord's `<url>` too.
static ANGLE_LINK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<([^<>|\s]+)(?:\|([^<>]*))?>").expect("valid regex"));

/// The first URL in a value: Slack `<url|text>` / `<url>`, Markdown `[text](url)`, or bare.
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<(https?://[^<>|\s]+)(?:\|[^<>]*)?>|\]\((https?://[^)\s]+)\)|(https?://[^\s<>|]+)")
        .expect("valid regex")
});

/// A Slack-bold key inside a line, as in `*Graph:* <…> *Runbook:* <…>`.
static INLINE_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\*([A-Za-z][A-Za-z ]*):\*").expect("valid regex"));

/// What a `Key:` line (or an attachment/embed field of that name) stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Key {
    /// Starts an alert's label block.
    Labels,
    /// Starts the current alert's annotation block.
    Annotations,
    /// Slack's `*Alert:*` line: a headline, maybe with a severity suffix.
    Alert,
    Description,
    Severity,
    /// A URL line, with the link title it gets.
    Link(&'static str),
    /// Known but not kept (`Value: A=97` changes on every evaluation).
    Ignored,
}

const KEYS: &[(&str, Key)] = &[
    ("labels", Key::Labels),
    ("details", Key::Labels),
    ("annotations", Key::Annotations),
    ("alert", Key::Alert),
    ("description", Key::Description),
    ("summary", Key::Description),
    ("severity", Key::Severity),
    ("source", Key::Link("Source")),
    ("graph", Key::Link("Source")),
    ("silence", Key::Link("Silence")),
    ("dashboard", Key::Link("Dashboard")),
    ("panel", Key::Link("Panel")),
    ("runbook", Key::Link("Runbook")),
    ("value", Key::Ignored),
    ("values", Key::Ignored),
];

fn key_of(name: &str) -> Option<Key> {
    let name = name.trim();
    KEYS.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|&(_, key)| key)
}

/// Reads an alert from a chat message; `None` when the message has no text at all.
pub fn parse_chat_message(msg: &ChatMessage) -> Option<Alert> {
    let mut scan = Scan::default();
    scan.message(msg);

    let had_alertname = scan
        .blocks
        .iter()
        .any(|b| b.labels.contains_key("alertname"));
    let common = common_identity(std::mem::take(&mut scan.blocks));
    let mut labels = common.labels;
    // Alerts of different names grouped in one message share no identity worth keying on.
    let labels_identify =
        !labels.is_empty() && (labels.contains_key("alertname") || !had_alertname);
    let mut annotations = common.annotations;
    for (k, v) in std::mem::take(&mut scan.field_annotations) {
        annotations.entry(k).or_insert(v);
    }

    let (status, title) = pick_title(msg, &scan);
    let (title, title_from) = match title {
        Some((text, from)) => (text, Some(from)),
        None if !labels.is_empty() => (title_from_labels(&labels, &annotations), None),
        None => (any_text(msg)?, None),
    };
    let status = match status {
        Some(s) => s,
        None if scan.resolved_marker && !scan.firing_marker => AlertStatus::Resolved,
        None => AlertStatus::Firing,
    };

    let fingerprint = if labels_identify {
        fingerprint_labels(&labels)
    } else {
        fingerprint_text(&title)
    };
    if let Some(severity) = scan.severity.take() {
        labels.entry("severity".to_owned()).or_insert(severity);
    }
    // Alertmanager's default title ends with the common label values in parentheses,
    // `[FIRING:1] HighErrorRate (api critical)`: a severity word there is the severity. Kept out
    // of the fingerprint, like the `*Alert:*` suffix.
    if !labels.contains_key("severity") {
        if let Some(word) = paren_severity(&title) {
            labels.insert("severity".to_owned(), word);
        }
    }

    let description = scan
        .description
        .take()
        .or_else(|| describe(&annotations))
        .or_else(|| {
            let alert_line = scan.alert_line.take();
            alert_line.filter(|_| title_from != Some(TitleFrom::AlertLine))
        })
        .or_else(|| {
            let skip = usize::from(title_from == Some(TitleFrom::FirstLine));
            let rest = scan.plain.get(skip..).unwrap_or_default();
            (!rest.is_empty()).then(|| rest.join("\n"))
        });

    let mut links = std::mem::take(&mut scan.links);
    annotation_links(&annotations, &mut links);
    let message_links = msg
        .attachments
        .iter()
        .filter_map(|a| a.title_link.as_deref())
        .chain(msg.embeds.iter().filter_map(|e| e.url.as_deref()));
    for url in message_links {
        if let Some(url) = extract_url(url) {
            links.push("Alert", url);
        }
    }

    let links = links.finish(&mut annotations);
    Some(Alert {
        source: match msg.platform {
            Platform::Slack => AlertSource::Slack,
            Platform::Discord => AlertSource::Discord,
            Platform::Console => AlertSource::Console,
        },
        fingerprint,
        status,
        title: one_line(&title),
        description,
        labels,
        annotations,
        starts_at: None,
        ends_at: None,
        links,
        origin: Some(ChatOrigin {
            platform: msg.platform,
            channel: msg.channel.clone(),
            message_id: msg.message_id.clone(),
        }),
        group_labels: Default::default(),
    })
}

/// Most alerts one message is split into ([`parse_chat_alerts`]); a message listing more is
/// read as one alert of the group (its common labels), as a message of several alert names is.
pub const MAX_ALERTS_PER_MESSAGE: usize = 100;

/// Reads a chat message as the alerts of one group it lists: a notification listing several
/// alerts of one `alertname` with their labels (Alertmanager's Discord message, a Slack text
/// ranging over `.Alerts`) is one alert per listed alert, each with its own labels (so its own
/// fingerprint: the same as the webhook gives that alert), the status of the section it is
/// listed under (`Alerts Firing:` / `Alerts Resolved:`, `*Firing*` / `*Resolved*`) or else the
/// message's, and the message's title, description and links. Any other message is the one
/// alert [`parse_chat_message`] reads; `[]` when it has no text at all.
///
/// The alerts meet in one incident through `[engine] group_by` (`alertname` plus `namespace`
/// and the like), so the card counts and names them, and a later message that lists some as
/// resolved clears those members only.
pub fn parse_chat_alerts(msg: &ChatMessage) -> Vec<Alert> {
    let Some(alert) = parse_chat_message(msg) else {
        return Vec::new();
    };
    let mut scan = Scan::default();
    scan.message(msg);
    let mut members: BTreeMap<String, Block> = BTreeMap::new();
    for block in scan.blocks.into_iter().filter(|b| !b.labels.is_empty()) {
        members.insert(fingerprint_labels(&block.labels), block);
    }
    let mut names = members.values().map(|b| b.labels.get("alertname"));
    let one_name = match names.next() {
        Some(Some(first)) => names.all(|n| n == Some(first)),
        _ => false,
    };
    if members.len() < 2 || members.len() > MAX_ALERTS_PER_MESSAGE || !one_name {
        return vec![alert];
    }
    members
        .into_iter()
        .map(|(fingerprint, block)| {
            let mut a = alert.clone();
            a.fingerprint = fingerprint;
            a.status = block.status.unwrap_or(alert.status);
            let mut labels = block.labels;
            // What the message says of all of them (a severity in the title) fills gaps only.
            for (k, v) in &alert.labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            a.labels = labels;
            a.annotations.extend(block.annotations);
            a
        })
        .collect()
}

/// Reads a top-level alert-channel message as the alerts it opens or updates, if any (several
/// when it lists several alerts of one group, see [`parse_chat_alerts`]). Posts of bots, apps
/// and webhooks are read as [`parse_chat_alerts`] reads them. A person's message is read as
/// `humans` says; a mention of the bot is taken out of the text, so the rest is the title, and
/// the person becomes the alert's `reported_by`.
pub fn alert_channel_message(msg: &ChatMessage, humans: HumanMessages) -> Vec<Alert> {
    if msg.from_bot {
        return parse_chat_alerts(msg);
    }
    let alerts = match (humans, without_mention(msg)) {
        (HumanMessages::Ignore, _) => return Vec::new(),
        (_, Some(text)) => parse_chat_alerts(&ChatMessage {
            text,
            ..msg.clone()
        }),
        (HumanMessages::All, None) => parse_chat_alerts(msg),
        (HumanMessages::AlertsAndMentions, None) if looks_like_alert(msg) => parse_chat_alerts(msg),
        (HumanMessages::AlertsAndMentions, None) => Vec::new(),
    };
    alerts
        .into_iter()
        .map(|a| reported_by(a, msg.author.as_ref()))
        .collect()
}

/// The alert a person asks for with `/incident new <title>`: read like a message with that
/// text, with no message to thread under (its card starts a thread of its own).
pub fn requested_alert(platform: Platform, title: &str, reporter: &Actor) -> Option<Alert> {
    let msg = ChatMessage {
        platform,
        text: title.to_string(),
        ..Default::default()
    };
    let mut alert = parse_chat_message(&msg)?;
    alert.origin = None;
    Some(reported_by(alert, Some(reporter)))
}

/// Records who asked: `reported_by` as a policy-style entry (`slack:U1`, `discord:42`), and, for
/// an alert with nothing else to say, a description naming them on the card.
fn reported_by(mut alert: Alert, by: Option<&Actor>) -> Alert {
    if let Some(a) = by {
        alert
            .annotations
            .entry("reported_by".to_owned())
            .or_insert_with(|| format!("{}:{}", a.platform.as_str(), a.id));
        if alert.description.is_none() {
            alert.description = Some(format!("Reported by {}.", a.display()));
        }
    }
    alert
}

/// The text without its mentions of the bot (and the `:` or `,` after one); `None` when the
/// message does not mention the bot.
fn without_mention(msg: &ChatMessage) -> Option<String> {
    let me = regex::escape(msg.bot_user.as_deref().filter(|id| !id.is_empty())?);
    let pattern = match msg.platform {
        Platform::Slack => format!(r"<@{me}(?:\|[^>]*)?>"),
        Platform::Discord => format!(r"<@!?{me}>"),
        Platform::Console => format!(r"(?i)(?:^|\s)@{me}\b"),
    };
    let re =
        Regex::new(&format!(r"{pattern}[:,]?[ \t]*")).expect("an escaped id makes a valid regex");
    if !re.is_match(&msg.text) {
        return None;
    }
    Some(re.replace_all(&msg.text, " ").trim().to_owned())
}

/// The message's title candidates, in order: attachment/embed titles, the first plain line,
/// Slack's `*Alert:*` headline, attachment fallbacks.
fn title_candidates<'a>(
    msg: &'a ChatMessage,
    scan: &'a Scan,
) -> impl Iterator<Item = (&'a str, TitleFrom)> + 'a {
    let explicit_titles = msg
        .attachments
        .iter()
        .filter_map(|a| a.title.as_deref())
        .chain(msg.embeds.iter().filter_map(|e| e.title.as_deref()));
    let fallbacks = msg
        .attachments
        .iter()
        .filter_map(|a| a.fallback.as_deref())
        // Slack's default fallback is `title | title_link`.
        .map(|f| f.split(" | ").next().unwrap_or(f));
    explicit_titles
        .map(|t| (t, TitleFrom::Explicit))
        .chain(
            scan.plain
                .first()
                .map(|t| (t.as_str(), TitleFrom::FirstLine)),
        )
        .chain(
            scan.alert_line
                .as_deref()
                .map(|t| (t, TitleFrom::AlertLine)),
        )
        .chain(fallbacks.map(|t| (t, TitleFrom::Fallback)))
}

/// Picks the title among the message's [`title_candidates`]. The first candidate with any
/// content gives the status (from its `[FIRING]`/`[RESOLVED]` prefix), the first with text
/// after its prefix the title.
fn pick_title(
    msg: &ChatMessage,
    scan: &Scan,
) -> (Option<AlertStatus>, Option<(String, TitleFrom)>) {
    let mut status = None;
    for (candidate, from) in title_candidates(msg, scan) {
        let (prefix_status, text) = split_title(candidate, from);
        if status.is_none() && (prefix_status.is_some() || !text.is_empty()) {
            status = Some(prefix_status.unwrap_or(AlertStatus::Firing));
        }
        if !text.is_empty() {
            return (status, Some((text, from)));
        }
    }
    (status, None)
}

/// Whether a message is in an alert's shape: a title with a status prefix (`[FIRING:1] …`,
/// `[RESOLVED]`, Grafana's `[Alerting]`), labels listed the way Alertmanager and Grafana list
/// them, or Slack's `*Alert:*` headline. A person's plain words are not.
pub fn looks_like_alert(msg: &ChatMessage) -> bool {
    let mut scan = Scan::default();
    scan.message(msg);
    scan.alert_line.is_some()
        || scan.blocks.iter().any(|b| !b.labels.is_empty())
        || title_candidates(msg, &scan).any(|(t, from)| split_title(t, from).0.is_some())
}

/// Where the title was read from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TitleFrom {
    /// An attachment or embed title.
    Explicit,
    /// The first plain line of the text.
    FirstLine,
    /// Slack's `*Alert:*` headline.
    AlertLine,
    /// An attachment's fallback text.
    Fallback,
}

/// One alert's labels and annotations as listed in a message.
#[derive(Debug, Default)]
struct Block {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// The section it is listed under (`Alerts Firing:` / `*Resolved*`), if any.
    status: Option<AlertStatus>,
}

/// Where the next ` - k = v` line goes.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Mode {
    #[default]
    Text,
    Labels,
    Annotations,
}

/// What a pass over the message's text found.
#[derive(Debug, Default)]
struct Scan {
    blocks: Vec<Block>,
    mode: Mode,
    /// The annotation the last block line set, which following plain lines continue (an
    /// annotation value may span lines).
    last_annotation: Option<String>,
    /// Lines that are not part of any structure, cleaned of markup.
    plain: Vec<String>,
    links: Links,
    alert_line: Option<String>,
    description: Option<String>,
    severity: Option<String>,
    /// Attachment/embed fields with no special meaning.
    field_annotations: BTreeMap<String, String>,
    firing_marker: bool,
    resolved_marker: bool,
    /// The section the scan is in (the last firing/resolved marker).
    section: Option<AlertStatus>,
}

impl Scan {
    /// Starts the next alert's block, in the current section.
    fn new_block(&mut self) {
        self.blocks.push(Block {
            status: self.section,
            ..Block::default()
        });
    }

    /// Scans all of a message's text, in reading order.
    fn message(&mut self, msg: &ChatMessage) {
        self.text(&msg.text);
        for a in &msg.attachments {
            for text in [&a.pretext, &a.text].into_iter().flatten() {
                self.text(text);
            }
            for f in &a.fields {
                self.field(&f.name, &f.value);
            }
        }
        for e in &msg.embeds {
            if let Some(text) = &e.description {
                self.text(text);
            }
            for f in &e.fields {
                self.field(&f.name, &f.value);
            }
        }
    }

    /// Scans one text (message text, attachment text, embed description); blocks do not run
    /// from one text into the next.
    fn text(&mut self, text: &str) {
        for line in text.lines() {
            self.line(line);
        }
        self.end_block();
    }

    fn end_block(&mut self) {
        self.mode = Mode::Text;
        self.last_annotation = None;
    }

    fn line(&mut self, raw: &str) {
        if raw.trim().is_empty() {
            // Ends a multi-line annotation value, though not the block.
            self.last_annotation = None;
            return;
        }
        if let Some(c) = MARKER.captures(raw) {
            if c[1].eq_ignore_ascii_case("resolved") {
                self.resolved_marker = true;
                self.section = Some(AlertStatus::Resolved);
            } else {
                self.firing_marker = true;
                self.section = Some(AlertStatus::Firing);
            }
            self.end_block();
            return;
        }
        if self.mode != Mode::Text {
            if let Some(c) = BLOCK_ITEM.captures(raw) {
                self.item(&c[1], &c[2]);
                return;
            }
        }
        if let Some(c) = DETAIL_ITEM.captures(raw) {
            if self.mode == Mode::Text {
                self.mode = Mode::Labels;
            }
            self.item(c[1].trim(), c[2].trim_matches('`'));
            return;
        }
        if let Some(c) = KEYED.captures(raw) {
            if let Some(key) = key_of(&c[1]) {
                if self.keyed(key, c.get(2).map_or("", |m| m.as_str())) {
                    return;
                }
            }
        }
        if self.mode == Mode::Annotations {
            if let (Some(key), Some(block)) = (&self.last_annotation, self.blocks.last_mut()) {
                if let Some(value) = block.annotations.get_mut(key) {
                    value.push('\n');
                    value.push_str(&clean(raw.trim()));
                    return;
                }
            }
        }
        self.end_block();
        let line = clean(raw.trim());
        if !line.is_empty() {
            self.plain.push(line);
        }
    }

    /// A `name = value` (or Slack `*name:* value`) line of the current block.
    fn item(&mut self, name: &str, value: &str) {
        if self.blocks.is_empty() {
            self.new_block();
        }
        let block = self.blocks.last_mut().expect("a block was just ensured");
        let (name, value) = (clean(name), clean(value));
        if self.mode == Mode::Annotations {
            self.last_annotation = Some(name.clone());
            block.annotations.insert(name, value);
        } else {
            block.labels.insert(name, value);
        }
    }

    /// Handles a known `Key: value` line; false when it turns out to be ordinary text
    /// (a `Source:` line without a URL).
    fn keyed(&mut self, key: Key, value: &str) -> bool {
        match key {
            Key::Labels => {
                self.new_block();
                self.last_annotation = None;
                self.mode = Mode::Labels;
                return true;
            }
            Key::Annotations => {
                if self.blocks.is_empty() {
                    self.new_block();
                }
                self.last_annotation = None;
                self.mode = Mode::Annotations;
                return true;
            }
            _ => {}
        }
        self.end_block();
        if let Key::Link(title) = key {
            return self.push_line_links(title, value);
        }
        let value = clean(value.trim());
        match key {
            Key::Alert => {
                // Each `*Alert:*` heads a new alert of the group, whose details follow.
                if self.blocks.last().is_some_and(|b| !b.labels.is_empty()) {
                    self.new_block();
                }
                let headline = match SEVERITY_SUFFIX.captures(&value) {
                    Some(c) => {
                        if self.severity.is_none() {
                            self.severity = Some(c[1].trim().to_owned());
                        }
                        value[..c.get(0).expect("whole match").start()].trim()
                    }
                    None => value.as_str(),
                };
                if self.alert_line.is_none() && !headline.is_empty() {
                    self.alert_line = Some(headline.to_owned());
                }
            }
            Key::Description => {
                if self.description.is_none() && !value.is_empty() {
                    self.description = Some(value);
                }
            }
            Key::Severity => {
                let value = value.trim_matches('`').trim();
                if self.severity.is_none() && !value.is_empty() {
                    self.severity = Some(value.to_owned());
                }
            }
            Key::Ignored | Key::Labels | Key::Annotations | Key::Link(_) => {}
        }
        true
    }

    /// Adds the URLs of a link line; false when it has none. A Slack key between two URLs
    /// names the second (`*Graph:* <url|:chart:> *Runbook:* <url|:notebook:>`).
    fn push_line_links(&mut self, mut title: &'static str, value: &str) -> bool {
        let mut rest = value;
        let mut found = false;
        while let Some((url, start, end)) = find_url(rest) {
            if found {
                let key = INLINE_KEY
                    .captures_iter(&rest[..start])
                    .last()
                    .and_then(|c| key_of(&c[1]));
                if let Some(Key::Link(t)) = key {
                    title = t;
                }
            }
            self.links.push(title, url);
            found = true;
            rest = &rest[end..];
        }
        found
    }

    /// An attachment/embed field: a known name is read like its `Key:` line (a `Labels` field
    /// holds a whole block), any other becomes an annotation.
    fn field(&mut self, name: &str, value: &str) {
        let name = clean(name.trim());
        let name = name.trim_matches('*').trim();
        match key_of(name) {
            Some(key @ (Key::Labels | Key::Annotations)) => {
                self.keyed(key, "");
                self.text(value);
            }
            Some(key) => {
                if !self.keyed(key, value) {
                    self.annotate(name, value);
                }
            }
            None => self.annotate(name, value),
        }
    }

    fn annotate(&mut self, name: &str, value: &str) {
        let value = clean(value.trim());
        if !name.is_empty() && !value.is_empty() {
            self.field_annotations
                .entry(name.to_owned())
                .or_insert(value);
        }
    }
}

/// The identity of a group of alerts: the labels (and annotations) every listed alert shares.
fn common_identity(blocks: Vec<Block>) -> Block {
    let mut blocks = blocks
        .into_iter()
        .filter(|b| !b.labels.is_empty() || !b.annotations.is_empty());
    let Some(mut common) = blocks.next() else {
        return Block::default();
    };
    for block in blocks {
        common.labels.retain(|k, v| block.labels.get(k) == Some(v));
        common
            .annotations
            .retain(|k, v| block.annotations.get(k) == Some(v));
    }
    common
}

/// Splits a title candidate into its status prefix, if any, and the title proper (first line,
/// markup removed, prefix stripped). The scanned lines (first line, `*Alert:*` headline) are
/// cleaned already: cleaning them again would decode entities twice (a literal `&lt;` turning
/// into `<`) and read a decoded `<tag>` as markup.
fn split_title(raw: &str, from: TitleFrom) -> (Option<AlertStatus>, String) {
    let cleaned = match from {
        TitleFrom::FirstLine | TitleFrom::AlertLine => raw.to_owned(),
        TitleFrom::Explicit | TitleFrom::Fallback => clean(raw),
    };
    let Some(line) = cleaned.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return (None, String::new());
    };
    let (status, rest) = match STATUS_PREFIX.captures(line) {
        Some(c) => {
            let word = &c[1];
            let status = if word.eq_ignore_ascii_case("resolved") || word.eq_ignore_ascii_case("ok")
            {
                AlertStatus::Resolved
            } else {
                AlertStatus::Firing
            };
            (Some(status), &line[c.get(0).expect("whole match").end()..])
        }
        None => (None, line),
    };
    let mut text = rest.trim_matches(|c: char| c.is_whitespace() || c == '*' || c == '~');
    // A Markdown heading (`## Payments down`), not a channel name (`#payments`).
    let unheaded = text.trim_start_matches('#');
    if unheaded.len() != text.len() && unheaded.starts_with(char::is_whitespace) {
        text = unheaded.trim_start();
    }
    (status, text.to_owned())
}

/// The first non-blank line anywhere in the message, for messages with nothing better.
fn any_text(msg: &ChatMessage) -> Option<String> {
    let attachment_texts = msg
        .attachments
        .iter()
        .flat_map(|a| [&a.pretext, &a.text, &a.fallback])
        .flatten();
    let embed_texts = msg.embeds.iter().filter_map(|e| e.description.as_ref());
    let field_texts = msg
        .attachments
        .iter()
        .flat_map(|a| &a.fields)
        .chain(msg.embeds.iter().flat_map(|e| &e.fields))
        .flat_map(|f| [&f.name, &f.value]);
    std::iter::once(&msg.text)
        .chain(attachment_texts)
        .chain(embed_texts)
        .chain(field_texts)
        .flat_map(|t| t.lines())
        .map(|l| clean(l.trim()))
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

/// Chat markup to plain text: `<url|label>` → label, `<url>` → url, `<!here>` → `@here`, and
/// Slack's HTML escapes undone (Slack escapes `&`, `<`, `>` in message text, and label values
/// must come out as the webhook sends them).
fn clean(s: &str) -> String {
    let unwrapped = if s.contains('<') {
        ANGLE_LINK.replace_all(s, |c: &Captures| {
            match c.get(2).map(|m| m.as_str()).filter(|l| !l.is_empty()) {
                Some(label) => label.to_owned(),
                None => match c[1].strip_prefix('!') {
                    Some(special) => format!("@{special}"),
                    None => c[1].to_owned(),
                },
            }
        })
    } else {
        s.into()
    };
    unescape(&unwrapped)
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The first URL in a raw (not yet cleaned) value, unescaped, with the span of its markup.
fn find_url(value: &str) -> Option<(String, usize, usize)> {
    let c = URL.captures(value)?;
    let whole = c.get(0)?;
    let url = c.get(1).or_else(|| c.get(2)).or_else(|| c.get(3))?;
    Some((unescape(url.as_str()), whole.start(), whole.end()))
}

fn extract_url(value: &str) -> Option<String> {
    find_url(value).map(|(url, _, _)| url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Link;

    fn slack(text: &str, attachments: Vec<ChatAttachment>) -> ChatMessage {
        ChatMessage {
            platform: Platform::Slack,
            channel: "C024BE91L".into(),
            message_id: "1714557731.000200".into(),
            text: text.into(),
            attachments,
            embeds: vec![],
            ..Default::default()
        }
    }

    fn discord(embeds: Vec<ChatEmbed>) -> ChatMessage {
        ChatMessage {
            platform: Platform::Discord,
            channel: "1100000000000000001".into(),
            message_id: "1235000000000000042".into(),
            text: String::new(),
            attachments: vec![],
            embeds,
            ..Default::default()
        }
    }

    fn attachment(title: &str, text: &str) -> ChatAttachment {
        ChatAttachment {
            title: Some(title.into()),
            title_link: Some(
                "http://alertmanager.example.com:9093/#/alerts?receiver=slack-alerts".into(),
            ),
            text: Some(text.into()),
            fallback: Some(format!(
                "{title} | http://alertmanager.example.com:9093/#/alerts?receiver=slack-alerts"
            )),
            color: Some("danger".into()),
            ..Default::default()
        }
    }

    fn embed(title: &str, description: &str) -> ChatEmbed {
        ChatEmbed {
            title: Some(title.into()),
            url: None,
            description: Some(description.into()),
            color: Some(0x992D22),
            fields: vec![],
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn link_pairs(links: &[Link]) -> Vec<(&str, &str)> {
        links
            .iter()
            .map(|l| (l.title.as_str(), l.url.as_str()))
            .collect()
    }

    fn parse(msg: &ChatMessage) -> Alert {
        parse_chat_message(msg).expect("an alert")
    }

    #[test]
    fn alertmanager_default_slack_title_only() {
        let firing = parse(&slack(
            "",
            vec![attachment(
                "[FIRING:2] HighErrorRate (api prod critical)",
                "",
            )],
        ));
        assert_eq!(firing.source, AlertSource::Slack);
        assert_eq!(firing.status, AlertStatus::Firing);
        assert_eq!(firing.title, "HighErrorRate (api prod critical)");
        assert_eq!(
            firing.fingerprint,
            fingerprint_text("HighErrorRate (api prod critical)")
        );
        // Only the severity read from the parentheses; the identity stays the title text.
        assert_eq!(firing.labels.len(), 1);
        assert_eq!(firing.label("severity"), Some("critical"));
        assert_eq!(firing.description, None);
        assert_eq!(
            link_pairs(&firing.links),
            [(
                "Alert",
                "http://alertmanager.example.com:9093/#/alerts?receiver=slack-alerts"
            )]
        );
        assert_eq!(
            firing.origin,
            Some(ChatOrigin {
                platform: Platform::Slack,
                channel: "C024BE91L".into(),
                message_id: "1714557731.000200".into(),
            })
        );

        let more = parse(&slack(
            "",
            vec![attachment(
                "[FIRING:3] HighErrorRate (api prod critical)",
                "",
            )],
        ));
        let resolved = parse(&slack(
            "",
            vec![attachment(
                "[RESOLVED] HighErrorRate (api prod critical)",
                "",
            )],
        ));
        assert_eq!(more.fingerprint, firing.fingerprint);
        assert_eq!(resolved.fingerprint, firing.fingerprint);
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(resolved.title, "HighErrorRate (api prod critical)");

        let other = parse(&slack(
            "",
            vec![attachment(
                "[FIRING:2] HighErrorRate (web prod critical)",
                "",
            )],
        ));
        assert_ne!(other.fingerprint, firing.fingerprint);
    }

    /// The widely used custom Slack template: `*Alert:*`, `*Description:*`, `*Details:*`.
    const SLACK_CUSTOM_TEXT: &str = "*Alert:* High error rate on api - `critical`\n\
        *Description:* api is returning 7.3% 5xx &gt; 5% threshold\n\
        *Graph:* <http://prometheus:9090/graph?g0.expr=rate%28x%29&amp;g0.tab=1|:chart_with_upwards_trend:> \
        *Runbook:* <https://runbooks.example.com/HighErrorRate|:spiral_note_pad:>\n\
        *Details:*\n  \
        • *alertname:* `HighErrorRate`\n  \
        • *instance:* `<http://10.0.3.7:8080|10.0.3.7:8080>`\n  \
        • *service:* `api`\n  \
        • *severity:* `critical`\n";

    #[test]
    fn alertmanager_custom_slack_text_matches_the_webhook_alert() {
        let alert = parse(&slack(
            "",
            vec![attachment(
                "[FIRING:1] HighErrorRate (api critical)",
                SLACK_CUSTOM_TEXT,
            )],
        ));
        let expected = labels(&[
            ("alertname", "HighErrorRate"),
            ("instance", "10.0.3.7:8080"),
            ("service", "api"),
            ("severity", "critical"),
        ]);
        assert_eq!(alert.labels, expected);
        assert_eq!(alert.title, "HighErrorRate (api critical)");
        assert_eq!(alert.status, AlertStatus::Firing);
        assert_eq!(
            alert.description.as_deref(),
            Some("api is returning 7.3% 5xx > 5% threshold")
        );

        // The same alert as the Alertmanager webhook sends it (to a receiver where it carries no
        // fingerprint of its own) lands on the same fingerprint.
        let webhook = super::super::decode_alertmanager(
            br#"{"version": "4", "alerts": [{"status": "firing",
                "labels": {"alertname": "HighErrorRate", "instance": "10.0.3.7:8080",
                           "service": "api", "severity": "critical"},
                "annotations": {"summary": "High error rate on api"}}]}"#,
        )
        .unwrap();
        assert_eq!(alert.fingerprint, webhook[0].fingerprint);
        assert_eq!(alert.fingerprint, fingerprint_labels(&expected));
    }

    #[test]
    fn slack_graph_and_runbook_on_one_line() {
        let alert = parse(&slack(
            "",
            vec![attachment("[FIRING:1] X", SLACK_CUSTOM_TEXT)],
        ));
        assert_eq!(
            link_pairs(&alert.links),
            [
                (
                    "Source",
                    "http://prometheus:9090/graph?g0.expr=rate%28x%29&g0.tab=1"
                ),
                ("Runbook", "https://runbooks.example.com/HighErrorRate"),
                (
                    "Alert",
                    "http://alertmanager.example.com:9093/#/alerts?receiver=slack-alerts"
                ),
            ]
        );
    }

    #[test]
    fn slack_runbook_line_and_severity_suffix() {
        let text = "*Alert:* Disk almost full - `warning`\n\
                    *Runbook:* <https://runbooks.example.com/disk|:spiral_note_pad:>\n\
                    *Details:*\n\
                    • *alertname:* `DiskFull`\n\
                    • *instance:* `db-1`\n";
        let alert = parse(&slack(text, vec![]));
        // No title line in the message: the `*Alert:*` headline is the title.
        assert_eq!(alert.title, "Disk almost full");
        assert_eq!(alert.description, None);
        assert_eq!(alert.label("severity"), Some("warning"));
        // The severity from the suffix is stored but not part of the identity.
        assert_eq!(
            alert.fingerprint,
            fingerprint_labels(&labels(&[("alertname", "DiskFull"), ("instance", "db-1")]))
        );
        assert_eq!(
            link_pairs(&alert.links),
            [("Runbook", "https://runbooks.example.com/disk")]
        );
    }

    #[test]
    fn slack_group_of_alerts_keeps_common_labels() {
        let text = "*Alert:* Instance down - `critical`\n*Details:*\n\
                    • *alertname:* `InstanceDown`\n• *instance:* `a:9100`\n• *job:* `node`\n\
                    *Alert:* Instance down - `critical`\n*Details:*\n\
                    • *alertname:* `InstanceDown`\n• *instance:* `b:9100`\n• *job:* `node`\n";
        let alert = parse(&slack(
            "",
            vec![attachment("[FIRING:2] InstanceDown (node)", text)],
        ));
        assert_eq!(
            alert.labels,
            labels(&[
                ("alertname", "InstanceDown"),
                ("job", "node"),
                ("severity", "critical")
            ])
        );
        assert_eq!(
            alert.fingerprint,
            fingerprint_labels(&labels(&[("alertname", "InstanceDown"), ("job", "node")]))
        );
    }

    fn am_discord_description(instances: &[&str], resolved: bool) -> String {
        let mut s = String::from(if resolved {
            "\nAlerts Resolved:\n"
        } else {
            "\nAlerts Firing:\n"
        });
        for instance in instances {
            s.push_str(&format!(
                "Labels:\n - alertname = HighErrorRate\n - instance = {instance}\n - service = api\n - severity = critical\n\
                 Annotations:\n - runbook_url = https://runbooks.example.com/HighErrorRate\n - summary = Error rate above 5%\n\
                 Source: http://prometheus:9090/graph?g0.expr=rate%28http_requests_total%5B5m%5D%29&g0.tab=1\n"
            ));
        }
        s.push('\n');
        s
    }

    #[test]
    fn a_message_listing_a_group_is_one_alert_per_listed_alert() {
        // Alertmanager's default Discord message for a group that clears piecemeal: one alert
        // under `Alerts Firing:`, one under `Alerts Resolved:`.
        let description = format!(
            "{}{}",
            am_discord_description(&["10.0.3.7:8080"], false),
            am_discord_description(&["10.0.3.8:8080"], true)
        );
        let msg = discord(vec![embed(
            "[FIRING:1] HighErrorRate (api critical)",
            &description,
        )]);
        let alerts = parse_chat_alerts(&msg);
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        let by_instance = |i: &str| {
            alerts
                .iter()
                .find(|a| a.labels["instance"] == i)
                .expect(i)
                .clone()
        };
        let (firing, resolved) = (by_instance("10.0.3.7:8080"), by_instance("10.0.3.8:8080"));
        assert_eq!(firing.status, AlertStatus::Firing);
        assert_eq!(resolved.status, AlertStatus::Resolved);
        // Each is identified by its own labels, as the webhook identifies it.
        assert_eq!(firing.fingerprint, fingerprint_labels(&firing.labels));
        assert_ne!(firing.fingerprint, resolved.fingerprint);
        assert_eq!(firing.title, "HighErrorRate (api critical)");
        assert_eq!(firing.origin, resolved.origin);
        // The engine's default grouping puts them in one group.
        let by: Vec<String> = ["alertname", "service", "namespace", "cluster"]
            .map(String::from)
            .to_vec();
        assert_eq!(firing.group_key(&by), resolved.group_key(&by));
        assert_eq!(firing.instance(&by), "instance=10.0.3.7:8080");

        // `[RESOLVED]` with both listed as resolved: both resolved.
        let msg = discord(vec![embed(
            "[RESOLVED] HighErrorRate (api critical)",
            &am_discord_description(&["10.0.3.7:8080", "10.0.3.8:8080"], true),
        )]);
        let alerts = parse_chat_alerts(&msg);
        assert_eq!(alerts.len(), 2);
        assert!(alerts.iter().all(|a| a.status == AlertStatus::Resolved));

        // Without sections, the title's status: `[FIRING:2]` lists two firing alerts.
        let mut text = String::from("[FIRING:2] HighErrorRate\n");
        for i in ["a:1", "b:1"] {
            text.push_str(&format!(
                "*Alert:* Error rate above 5% - `critical`\n*Details:*\n • *alertname:* `HighErrorRate`\n • *instance:* `{i}`\n"
            ));
        }
        let alerts = parse_chat_alerts(&ChatMessage {
            platform: Platform::Slack,
            text,
            from_bot: true,
            ..Default::default()
        });
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        assert!(alerts.iter().all(|a| a.status == AlertStatus::Firing));
        assert!(alerts.iter().all(|a| a.labels["severity"] == "critical"));
    }

    #[test]
    fn a_message_of_one_alert_or_of_several_names_stays_one_alert() {
        // One listed alert: what parse_chat_message reads.
        let msg = discord(vec![embed(
            "[FIRING:1] HighErrorRate (api critical)",
            &am_discord_description(&["10.0.3.7:8080"], false),
        )]);
        assert_eq!(parse_chat_alerts(&msg), vec![parse(&msg)]);
        // Two alert names in one message (grouped by something else): one alert, the group's
        // common labels, as before.
        let two = am_discord_description(&["10.0.3.7:8080"], false)
            + &am_discord_description(&["10.0.3.8:8080"], false)
                .replace("alertname = HighErrorRate", "alertname = HighLatency");
        let msg = discord(vec![embed("[FIRING:2] api", &two)]);
        assert_eq!(parse_chat_alerts(&msg), vec![parse(&msg)]);
        // The same alert listed twice is one alert.
        let twice = am_discord_description(&["10.0.3.7:8080", "10.0.3.7:8080"], false);
        let msg = discord(vec![embed("[FIRING:2] HighErrorRate", &twice)]);
        assert_eq!(parse_chat_alerts(&msg).len(), 1);
        // No text at all: nothing.
        assert!(parse_chat_alerts(&discord(vec![])).is_empty());
    }

    #[test]
    fn alertmanager_default_discord_single_alert() {
        let alert = parse(&discord(vec![embed(
            "[FIRING:1] HighErrorRate (10.0.3.7:8080 api critical)",
            &am_discord_description(&["10.0.3.7:8080"], false),
        )]));
        assert_eq!(alert.source, AlertSource::Discord);
        assert_eq!(alert.status, AlertStatus::Firing);
        assert_eq!(alert.title, "HighErrorRate (10.0.3.7:8080 api critical)");
        let expected = labels(&[
            ("alertname", "HighErrorRate"),
            ("instance", "10.0.3.7:8080"),
            ("service", "api"),
            ("severity", "critical"),
        ]);
        assert_eq!(alert.labels, expected);
        assert_eq!(alert.fingerprint, fingerprint_labels(&expected));
        assert_eq!(alert.annotations["summary"], "Error rate above 5%");
        assert_eq!(alert.description.as_deref(), Some("Error rate above 5%"));
        assert_eq!(
            link_pairs(&alert.links),
            [
                ("Source", "http://prometheus:9090/graph?g0.expr=rate%28http_requests_total%5B5m%5D%29&g0.tab=1"),
                ("Runbook", "https://runbooks.example.com/HighErrorRate"),
            ]
        );
        assert_eq!(alert.origin.as_ref().unwrap().platform, Platform::Discord);
    }

    #[test]
    fn alertmanager_default_discord_group_uses_common_identity() {
        let two = parse(&discord(vec![embed(
            "[FIRING:2] HighErrorRate (api critical)",
            &am_discord_description(&["10.0.3.7:8080", "10.0.3.8:8080"], false),
        )]));
        let common = labels(&[
            ("alertname", "HighErrorRate"),
            ("service", "api"),
            ("severity", "critical"),
        ]);
        assert_eq!(two.labels, common);
        assert_eq!(two.fingerprint, fingerprint_labels(&common));
        assert_eq!(two.description.as_deref(), Some("Error rate above 5%"));

        let three = parse(&discord(vec![embed(
            "[FIRING:3] HighErrorRate (api critical)",
            &am_discord_description(&["10.0.3.7:8080", "10.0.3.8:8080", "10.0.3.9:8080"], false),
        )]));
        assert_eq!(three.fingerprint, two.fingerprint);

        let resolved = parse(&discord(vec![embed(
            "[RESOLVED] HighErrorRate (api critical)",
            &am_discord_description(&["10.0.3.7:8080", "10.0.3.8:8080"], true),
        )]));
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(resolved.fingerprint, two.fingerprint);

        // One alert of the group alone is a different identity (its instance is in it).
        let one = parse(&discord(vec![embed(
            "[FIRING:1] HighErrorRate (10.0.3.7:8080 api critical)",
            &am_discord_description(&["10.0.3.7:8080"], false),
        )]));
        assert_ne!(one.fingerprint, two.fingerprint);
    }

    #[test]
    fn group_of_different_alertnames_falls_back_to_the_title() {
        let body = "Alerts Firing:\nLabels:\n - alertname = A\n - team = sre\n\
                    Labels:\n - alertname = B\n - team = sre\n";
        let alert = parse(&discord(vec![embed("[FIRING:2]  (sre)", body)]));
        assert_eq!(alert.labels, labels(&[("team", "sre")]));
        assert_eq!(alert.title, "(sre)");
        assert_eq!(alert.fingerprint, fingerprint_text("(sre)"));
    }

    fn grafana_body(status: &str, value: &str) -> String {
        format!(
            "**{status}**\n\nValue: A={value}\nLabels:\n - alertname = HighCPU\n - grafana_folder = Infra\n - instance = host1\n\
             Annotations:\n - description = CPU on host1 has been above 90%\n for 5 minutes\n - summary = CPU high\n\
             Source: https://grafana.example.com/alerting/grafana/cdk1/view?orgId=1\n\
             Silence: https://grafana.example.com/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DHighCPU\n\
             Dashboard: https://grafana.example.com/d/node?orgId=1\n\
             Panel: https://grafana.example.com/d/node?orgId=1&viewPanel=4\n"
        )
    }

    #[test]
    fn grafana_default_discord_message() {
        let firing = parse(&discord(vec![embed(
            "[FIRING:1] HighCPU Infra (host1)",
            &grafana_body("Firing", "97"),
        )]));
        assert_eq!(firing.status, AlertStatus::Firing);
        assert_eq!(firing.title, "HighCPU Infra (host1)");
        let expected = labels(&[
            ("alertname", "HighCPU"),
            ("grafana_folder", "Infra"),
            ("instance", "host1"),
        ]);
        assert_eq!(firing.labels, expected);
        assert_eq!(firing.fingerprint, fingerprint_labels(&expected));
        // A multi-line annotation value keeps its continuation line.
        assert_eq!(
            firing.annotations["description"],
            "CPU on host1 has been above 90%\nfor 5 minutes"
        );
        assert_eq!(
            firing.description.as_deref(),
            Some("CPU high\n\nCPU on host1 has been above 90%\nfor 5 minutes")
        );
        assert_eq!(
            link_pairs(&firing.links),
            [
                ("Source", "https://grafana.example.com/alerting/grafana/cdk1/view?orgId=1"),
                ("Silence", "https://grafana.example.com/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DHighCPU"),
                ("Dashboard", "https://grafana.example.com/d/node?orgId=1"),
                ("Panel", "https://grafana.example.com/d/node?orgId=1&viewPanel=4"),
            ]
        );

        let resolved = parse(&discord(vec![embed(
            "[RESOLVED] HighCPU Infra (host1)",
            &grafana_body("Resolved", "12"),
        )]));
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(resolved.fingerprint, firing.fingerprint);
    }

    #[test]
    fn text_after_a_blank_line_does_not_continue_an_annotation() {
        let body =
            "Labels:\n - alertname = A\nAnnotations:\n - summary = first\n  second\n\nfree text\n";
        let alert = parse(&discord(vec![embed("[FIRING:1] A", body)]));
        assert_eq!(alert.annotations["summary"], "first\nsecond");
        assert_eq!(alert.labels, labels(&[("alertname", "A")]));
    }

    #[test]
    fn grafana_default_slack_message_matches_the_grafana_webhook() {
        let mut att = attachment(
            "[FIRING:1] HighCPU Infra (host1)",
            &grafana_body("Firing", "97").replace('&', "&amp;"),
        );
        att.title_link = Some("https://grafana.example.com/alerting/list".into());
        let alert = parse(&slack("", vec![att]));
        assert_eq!(alert.source, AlertSource::Slack);
        assert_eq!(
            link_pairs(&alert.links)[1],
            ("Silence", "https://grafana.example.com/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DHighCPU")
        );
        assert_eq!(
            link_pairs(&alert.links).last(),
            Some(&("Alert", "https://grafana.example.com/alerting/list"))
        );
        let webhook = super::super::decode_grafana(
            br#"{"alerts": [{"status": "firing", "labels": {"alertname": "HighCPU", "grafana_folder": "Infra", "instance": "host1"}}]}"#,
        )
        .unwrap();
        assert_eq!(alert.fingerprint, webhook[0].fingerprint);
    }

    #[test]
    fn grafana_mixed_group_title_is_firing() {
        let alert = parse(&discord(vec![embed(
            "[FIRING:1, RESOLVED:1] HighCPU (Infra)",
            "",
        )]));
        assert_eq!(alert.status, AlertStatus::Firing);
        assert_eq!(alert.title, "HighCPU (Infra)");
        let resolved = parse(&discord(vec![embed("[RESOLVED] HighCPU (Infra)", "")]));
        assert_eq!(resolved.fingerprint, alert.fingerprint);
    }

    #[test]
    fn free_text_is_a_firing_alert() {
        let msg = ChatMessage {
            platform: Platform::Console,
            channel: "ops".into(),
            message_id: "m-17".into(),
            text: "Payments API returning 503s since 10:02\nChecked the LB, it is healthy.\n"
                .into(),
            attachments: vec![],
            embeds: vec![],
            ..Default::default()
        };
        let alert = parse(&msg);
        assert_eq!(alert.source, AlertSource::Console);
        assert_eq!(alert.status, AlertStatus::Firing);
        assert_eq!(alert.title, "Payments API returning 503s since 10:02");
        assert_eq!(
            alert.fingerprint,
            fingerprint_text("Payments API returning 503s since 10:02")
        );
        assert_eq!(
            alert.description.as_deref(),
            Some("Checked the LB, it is healthy.")
        );
        assert!(alert.labels.is_empty());
        assert!(alert.links.is_empty());
        assert_eq!(
            alert.origin,
            Some(ChatOrigin {
                platform: Platform::Console,
                channel: "ops".into(),
                message_id: "m-17".into()
            })
        );

        let other = parse(&ChatMessage {
            text: "Checkout latency above 2s".into(),
            ..msg
        });
        assert_ne!(other.fingerprint, alert.fingerprint);
    }

    #[test]
    fn default_message_is_a_console_message() {
        let alert = parse(&ChatMessage {
            text: "Disk full on db-1".into(),
            ..Default::default()
        });
        assert_eq!(alert.source, AlertSource::Console);
        assert_eq!(alert.title, "Disk full on db-1");
        assert_eq!(alert.origin.unwrap().platform, Platform::Console);
    }

    #[test]
    fn literal_text_is_decoded_exactly_once() {
        // Someone's alert said `EvilAlert & <tag>`; Slack encodes `&`, `<`, `>` once.
        let alert = parse(&slack("[FIRING:1] EvilAlert &amp; &lt;tag&gt;", vec![]));
        assert_eq!(alert.title, "EvilAlert & <tag>");
        // It said `EvilAlert &amp; &lt;tag&gt;` literally: Slack encoded the `&`s once more.
        let alert = parse(&slack(
            "[FIRING:1] EvilAlert &amp;amp; &amp;lt;tag&amp;gt;",
            vec![],
        ));
        assert_eq!(alert.title, "EvilAlert &amp; &lt;tag&gt;");
        // Markup is still markup: a link shows its label, a broadcast reads as text.
        let alert = parse(&slack(
            "[FIRING:1] A &lt;b&gt; on <http://x.example|x> <!here>",
            vec![],
        ));
        assert_eq!(alert.title, "A <b> on x @here");
    }

    #[test]
    fn free_text_markup_is_cleaned() {
        let alert = parse(&slack(
            ":rotating_light: *[RESOLVED] Disk &amp; inode usage on <http://db-1.example.com|db-1>*",
            vec![],
        ));
        assert_eq!(alert.status, AlertStatus::Resolved);
        assert_eq!(alert.title, "Disk & inode usage on db-1");
        let firing = parse(&slack("*[FIRING:1] Disk & inode usage on db-1*", vec![]));
        assert_eq!(firing.status, AlertStatus::Firing);
        assert_eq!(firing.fingerprint, alert.fingerprint);

        let heading = parse(&slack("## Payments down\n<!here> please look", vec![]));
        assert_eq!(heading.title, "Payments down");
        assert_eq!(heading.description.as_deref(), Some("@here please look"));
        let channel = parse(&slack("#payments is down", vec![]));
        assert_eq!(channel.title, "#payments is down");
    }

    #[test]
    fn legacy_grafana_titles_resolve_on_ok() {
        let alerting = parse(&slack(
            "",
            vec![attachment("[Alerting] High CPU alert", "CPU is too high")],
        ));
        let ok = parse(&slack("", vec![attachment("[OK] High CPU alert", "")]));
        assert_eq!(alerting.status, AlertStatus::Firing);
        assert_eq!(ok.status, AlertStatus::Resolved);
        assert_eq!(alerting.fingerprint, ok.fingerprint);
        assert_eq!(alerting.description.as_deref(), Some("CPU is too high"));
    }

    #[test]
    fn empty_messages_are_not_alerts() {
        assert_eq!(parse_chat_message(&slack("", vec![])), None);
        assert_eq!(parse_chat_message(&slack(" \n\t ", vec![])), None);
        assert_eq!(
            parse_chat_message(&slack(
                "  ",
                vec![ChatAttachment {
                    title: Some(" ".into()),
                    text: Some("\n".into()),
                    ..Default::default()
                }]
            )),
            None
        );
        assert_eq!(
            parse_chat_message(&discord(vec![ChatEmbed::default()])),
            None
        );
    }

    #[test]
    fn fields_are_read() {
        let att = ChatAttachment {
            title: Some("Backup failed on db-1".into()),
            fields: vec![
                ChatField {
                    name: "Severity".into(),
                    value: "high".into(),
                },
                ChatField {
                    name: "Runbook".into(),
                    value: "<https://runbooks.example.com/backup>".into(),
                },
                ChatField {
                    name: "Host".into(),
                    value: "db-1".into(),
                },
                ChatField {
                    name: "Labels".into(),
                    value: " - alertname = BackupFailed\n - host = db-1".into(),
                },
            ],
            ..Default::default()
        };
        let alert = parse(&slack("", vec![att]));
        assert_eq!(alert.title, "Backup failed on db-1");
        assert_eq!(alert.label("severity"), Some("high"));
        assert_eq!(alert.annotations["Host"], "db-1");
        assert_eq!(
            alert.fingerprint,
            fingerprint_labels(&labels(&[("alertname", "BackupFailed"), ("host", "db-1")]))
        );
        assert_eq!(
            link_pairs(&alert.links),
            [("Runbook", "https://runbooks.example.com/backup")]
        );
    }

    #[test]
    fn fallback_and_labels_stand_in_for_a_missing_title() {
        let att = ChatAttachment {
            fallback: Some("[RESOLVED] Watchdog | http://alertmanager:9093".into()),
            ..Default::default()
        };
        let alert = parse(&slack("", vec![att]));
        assert_eq!(alert.title, "Watchdog");
        assert_eq!(alert.status, AlertStatus::Resolved);

        let alert = parse(&discord(vec![ChatEmbed {
            description: Some(
                "**Resolved**\nLabels:\n - alertname = Watchdog\n - job = am\n".into(),
            ),
            ..Default::default()
        }]));
        assert_eq!(alert.title, "Watchdog (am)");
        assert_eq!(alert.status, AlertStatus::Resolved);

        let alert = parse(&slack("Source: http://prometheus:9090/graph", vec![]));
        assert_eq!(alert.title, "Source: http://prometheus:9090/graph");
    }

    #[test]
    fn source_line_without_url_is_text() {
        let alert = parse(&slack(
            "Queue backlog growing\nSource: the billing team",
            vec![],
        ));
        assert_eq!(
            alert.description.as_deref(),
            Some("Source: the billing team")
        );
        assert!(alert.links.is_empty());
    }

    #[test]
    fn long_titles_are_cut_but_fingerprint_the_whole_line() {
        let long = format!("[FIRING:1] {}", "x".repeat(300));
        let alert = parse(&slack(&long, vec![]));
        assert_eq!(alert.title.chars().count(), super::super::MAX_TITLE_CHARS);
        assert_eq!(alert.fingerprint, fingerprint_text(&"x".repeat(300)));
    }

    #[test]
    fn deserializes_adapter_json() {
        let msg: ChatMessage = serde_json::from_str(
            r#"{"platform": "slack", "channel": "C1", "message_id": "1.2",
                "attachments": [{"title": "[FIRING:1] X", "fields": [{"title": "Severity", "value": "critical", "short": true}]}]}"#,
        )
        .unwrap();
        assert_eq!(msg.text, "");
        assert_eq!(msg.attachments[0].fields[0].name, "Severity");
        assert_eq!(parse(&msg).label("severity"), Some("critical"));
        let back: ChatMessage =
            serde_json::from_str(&serde_json::to_string(&msg).unwrap()).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn severity_from_the_default_title_parentheses_stays_out_of_the_identity() {
        let msg = |title: &str, id: &str| ChatMessage {
            platform: Platform::Slack,
            channel: "C1".into(),
            message_id: id.into(),
            text: String::new(),
            attachments: vec![ChatAttachment {
                title: Some(title.into()),
                ..Default::default()
            }],
            embeds: vec![],
            ..Default::default()
        };
        let a = parse_chat_message(&msg("[FIRING:1] HighErrorRate (api critical)", "1")).unwrap();
        assert_eq!(a.label("severity"), Some("critical"));
        let b = parse_chat_message(&msg("[FIRING:2] HighErrorRate (api critical)", "2")).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        let c = parse_chat_message(&msg("[FIRING:1] DiskFull (db critical)", "3")).unwrap();
        assert_ne!(
            a.fingerprint, c.fingerprint,
            "severity alone is no identity"
        );
        let d = parse_chat_message(&msg("[FIRING:1] HighErrorRate (api prod)", "4")).unwrap();
        assert_eq!(d.label("severity"), None);
    }

    fn said(platform: Platform, text: &str) -> ChatMessage {
        ChatMessage {
            platform,
            channel: "C1".into(),
            message_id: "1.1".into(),
            text: text.into(),
            bot_user: Some(
                match platform {
                    Platform::Slack => "UBOT",
                    Platform::Discord => "900",
                    Platform::Console => "incidentd",
                }
                .into(),
            ),
            author: Some(Actor::new(platform, "U7")),
            ..Default::default()
        }
    }

    const DEFAULT: HumanMessages = HumanMessages::AlertsAndMentions;

    /// The one alert a message of a single alert is read as.
    fn channel_alert(msg: &ChatMessage, humans: HumanMessages) -> Option<Alert> {
        let mut alerts = alert_channel_message(msg, humans);
        assert!(alerts.len() <= 1, "{alerts:?}");
        alerts.pop()
    }

    #[test]
    fn a_persons_chatter_is_not_an_alert() {
        for text in [
            "anyone around? checkout looks slow to me",
            "Severity: looks high to me, description: checkout slow",
            "see https://grafana.example.com/d/abc for the graph",
            "is the [FIRING] thing from earlier still on?",
        ] {
            let msg = said(Platform::Slack, text);
            assert_eq!(channel_alert(&msg, DEFAULT), None, "{text}");
            assert!(channel_alert(&msg, HumanMessages::All).is_some());
        }
    }

    #[test]
    fn a_person_pasting_an_alert_opens_it() {
        let msg = said(Platform::Slack, "[FIRING:1] HighErrorRate (api critical)");
        let alert = channel_alert(&msg, DEFAULT).expect("an alert");
        assert_eq!(alert, reported_by(parse(&msg), msg.author.as_ref()));
        assert_eq!(alert.title, "HighErrorRate (api critical)");
        assert_eq!(alert.annotations["reported_by"], "slack:U7");
        // Alertmanager's Discord body with its labels, pasted by a person.
        let mut pasted = said(Platform::Discord, &am_discord_description(&["a:1"], false));
        pasted.text = format!("look:\n{}", pasted.text);
        let alert = channel_alert(&pasted, DEFAULT).expect("an alert");
        assert_eq!(alert.labels["alertname"], "HighErrorRate");
        // Slack's `*Alert:*` text.
        let msg = said(
            Platform::Slack,
            "*Alert:* Planner agent deadlock - `critical`\n*Description:* stuck",
        );
        assert!(channel_alert(&msg, DEFAULT).is_some());
    }

    #[test]
    fn a_mention_of_the_bot_opens_an_incident_titled_with_the_rest() {
        for (platform, text) in [
            (Platform::Slack, "<@UBOT> checkout is down"),
            (Platform::Slack, "<@UBOT|incidentd>: checkout is down"),
            (Platform::Discord, "<@900> checkout is down"),
            (Platform::Discord, "<@!900>, checkout is down"),
            (Platform::Console, "@incidentd checkout is down"),
        ] {
            let msg = said(platform, text);
            let alert = channel_alert(&msg, DEFAULT).expect(text);
            assert_eq!(alert.title, "checkout is down", "{text}");
            assert_eq!(alert.status, AlertStatus::Firing);
            assert_eq!(alert.fingerprint, fingerprint_text("checkout is down"));
            let by = format!("Reported by {}:U7.", platform.as_str());
            assert_eq!(alert.description, Some(by), "{text}");
            // Threaded under the person's message.
            assert_eq!(alert.origin.unwrap().message_id, "1.1");
        }
        // Someone else mentioned, or the bot's id inside a word: no.
        for (platform, text) in [
            (Platform::Slack, "<@UOTHER> checkout is down"),
            (Platform::Slack, "<@UBOTX> checkout is down"),
            (Platform::Discord, "<@9000> checkout is down"),
            (
                Platform::Console,
                "mail incidentd@example.com checkout is down",
            ),
        ] {
            assert_eq!(
                channel_alert(&said(platform, text), DEFAULT),
                None,
                "{text}"
            );
        }
        // A mention alone says nothing to open.
        assert_eq!(
            channel_alert(&said(Platform::Slack, "<@UBOT>"), DEFAULT),
            None
        );
        // With `ignore`, not even a mention or a pasted alert opens anything.
        for text in ["<@UBOT> checkout is down", "[FIRING:1] HighErrorRate (api)"] {
            let msg = said(Platform::Slack, text);
            assert_eq!(channel_alert(&msg, HumanMessages::Ignore), None);
        }
        // With `all`, the mention is still taken out of the title.
        let msg = said(Platform::Slack, "<@UBOT> checkout is down");
        let alert = channel_alert(&msg, HumanMessages::All).unwrap();
        assert_eq!(alert.title, "checkout is down");
    }

    #[test]
    fn bot_and_webhook_posts_are_read_as_today() {
        for humans in [DEFAULT, HumanMessages::All, HumanMessages::Ignore] {
            let mut msg = said(Platform::Slack, "Disk almost full on db-1");
            msg.from_bot = true;
            let alert = channel_alert(&msg, humans).expect("an alert");
            assert_eq!(alert, parse(&msg));
            assert!(!alert.annotations.contains_key("reported_by"));
        }
    }

    #[test]
    fn requested_alerts_have_no_message_to_thread_under() {
        let mut bob = Actor::new(Platform::Discord, "42");
        bob.name = Some("bob".into());
        let alert = requested_alert(Platform::Discord, "Checkout slow", &bob).unwrap();
        assert_eq!(alert.title, "Checkout slow");
        assert_eq!(alert.source, AlertSource::Discord);
        assert_eq!(alert.origin, None);
        assert_eq!(alert.annotations["reported_by"], "discord:42");
        assert_eq!(alert.description.as_deref(), Some("Reported by bob."));
        assert_eq!(alert.fingerprint, fingerprint_text("checkout  SLOW"));
        assert_eq!(requested_alert(Platform::Slack, "  ", &bob), None);
    }
}
