//! Inbound Slack payloads, shared by Socket Mode and the HTTP Events API: message events,
//! `block_actions` and `/incident` commands become neutral [`ChatEvent`]s for the
//! [`ChatService`]. Payloads are read from the raw JSON with our own small types rather than
//! slack-morphism's models, because those drop attachment fields (`title_link`, `pretext`) that
//! the alert parser reads.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::client::SlackApi;
use super::render::{escape_within, MAX_ANSWER_TEXT, MAX_TEXT};
use crate::chat::backfill::{order, Bookmarks};
use crate::chat::service::{ChatEvent, ChatService};
use crate::domain::alert::Platform;
use crate::domain::policy::Actor;
use crate::ingest::ChatAttachment;
use crate::ports::ChatError;

/// How many event ids are remembered for de-duplicating Slack's redeliveries.
const SEEN: usize = 10_000;

/// The slash command this bot owns.
pub const COMMAND: &str = "/incident";

/// What a `block_actions` interaction says: who clicked which buttons where.
#[derive(Debug, Default)]
pub(crate) struct Clicks {
    pub user: String,
    pub name: Option<String>,
    pub channel: String,
    pub thread_ts: Option<String>,
    pub response_url: Option<String>,
    /// At most 8: a click is one action, and each would be a write.
    pub actions: Vec<String>,
}

impl Clicks {
    /// `None` for any other kind of interaction.
    pub fn read(payload: &Value) -> Option<Clicks> {
        if payload["type"] != "block_actions" {
            return None;
        }
        let text = |v: &Value| v.as_str().map(str::to_string);
        Some(Clicks {
            user: text(&payload["user"]["id"]).unwrap_or_default(),
            name: text(&payload["user"]["username"]).or(text(&payload["user"]["name"])),
            channel: text(&payload["channel"]["id"])
                .or(text(&payload["container"]["channel_id"]))
                .unwrap_or_default(),
            thread_ts: text(&payload["container"]["thread_ts"])
                .or(text(&payload["message"]["thread_ts"])),
            response_url: text(&payload["response_url"]),
            actions: payload["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| text(&a["action_id"]))
                .take(8)
                .collect(),
        })
    }
}

/// Fuzzing: untrusted bytes read as a message event (`event`) and as an interaction's form body
/// (`payload=…`), as the handlers read them, up to the engine.
pub(crate) fn read_untrusted(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<MessageEvent>(data) {
        let _ = (
            m.is_from_bot(),
            is_speech(m.subtype.as_deref()),
            blocks_text(&m.blocks),
        );
    }
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(data).into_owned().collect();
    if let Some(p) = form.get("payload") {
        if let Ok(v) = serde_json::from_str::<Value>(p) {
            let _ = Clicks::read(&v);
        }
    }
}

/// A Slack message event (`message`, with or without a subtype).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct MessageEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub subtype: Option<String>,
    pub channel: String,
    pub user: Option<String>,
    pub bot_id: Option<String>,
    /// Set on posts of apps (and their workflows and incoming webhooks).
    pub app_id: Option<String>,
    pub username: Option<String>,
    pub text: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    #[serde(deserialize_with = "crate::ingest::capped::<_, _, { crate::ingest::MAX_CHAT_PARTS }>")]
    pub attachments: Vec<ChatAttachment>,
    /// Slack allows 50 blocks in a message.
    #[serde(deserialize_with = "crate::ingest::capped::<_, _, 64>")]
    pub blocks: Vec<Value>,
}

impl MessageEvent {
    /// Posted by a bot, an app or an incoming webhook; a person's message carries only `user`.
    fn is_from_bot(&self) -> bool {
        self.subtype.as_deref() == Some("bot_message")
            || self.bot_id.is_some()
            || self.app_id.is_some()
    }
}

/// Subtypes that are someone saying something; the rest (edits, deletions, joins…) are not.
fn is_speech(subtype: Option<&str>) -> bool {
    matches!(
        subtype,
        None | Some("bot_message") | Some("thread_broadcast") | Some("file_share")
    )
}

/// Text of the blocks a monitoring bot may post instead of (or besides) attachments. A human's
/// `rich_text` blocks repeat their `text`, so they are left out.
fn blocks_text(blocks: &[Value]) -> String {
    let mut out: Vec<String> = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("header") | Some("section") => {
                if let Some(t) = b["text"]["text"].as_str() {
                    out.push(t.to_string());
                }
                for f in b["fields"].as_array().into_iter().flatten() {
                    if let Some(t) = f["text"].as_str() {
                        out.push(t.to_string());
                    }
                }
            }
            Some("context") => {
                for e in b["elements"].as_array().into_iter().flatten() {
                    if let Some(t) = e["text"].as_str() {
                        out.push(t.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    out.join("\n")
}

/// A slash command, from a Socket Mode payload (JSON) or an HTTP form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CommandPayload {
    pub command: String,
    pub text: String,
    pub user_id: String,
    pub user_name: Option<String>,
    pub channel_id: String,
}

/// An answer to show one user privately, sent after the interaction was acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub thread_ts: Option<String>,
    /// The interaction's webhook for answers, used when chat.postEphemeral is refused.
    pub response_url: Option<String>,
    pub text: String,
}

/// Event ids recently handled (or being handled), oldest first.
#[derive(Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

/// The inbound side of the Slack surface.
pub(crate) struct Inbound {
    pub service: ChatService,
    pub api: Arc<SlackApi>,
    seen: Mutex<Seen>,
    /// Alert-channel bookmarks: what a reconnect reads back (see `chat::backfill`).
    bookmarks: Bookmarks,
    alert_channels: Vec<String>,
    /// One read-back at a time: reconnects in a row do not read the same history twice at once.
    backfilling: tokio::sync::Mutex<()>,
}

/// conversations.history page size while reading back.
const HISTORY_PAGE: u32 = 200;

impl Inbound {
    pub fn new(service: ChatService, api: Arc<SlackApi>, alert_channels: Vec<String>) -> Self {
        Inbound {
            service,
            api,
            seen: Mutex::default(),
            bookmarks: Bookmarks::new("slack"),
            alert_channels,
            backfilling: tokio::sync::Mutex::new(()),
        }
    }

    /// After the socket (re)connected: each alert channel's messages after its bookmark, oldest
    /// first, as if they had just arrived (each once). Messages Slack still redelivers are
    /// claimed by whichever path comes first.
    pub async fn backfill(&self) {
        let _one = self.backfilling.lock().await;
        let store = self.service.store().clone();
        for channel in &self.alert_channels {
            let Some(mark) = self.bookmarks.get(&store, channel).await else {
                // First start: bookmark the newest message without reading the past.
                match self.api.history(channel, None, 1, None).await {
                    Ok((m, _)) => {
                        if let Some(ts) = m.first().and_then(|m| m["ts"].as_str()) {
                            self.bookmarks.seen(&store, channel, ts).await;
                        }
                    }
                    Err(e) => {
                        warn!(channel, error = %e, "Cannot read the alert channel's history.")
                    }
                }
                continue;
            };
            let mut missed: Vec<Value> = vec![];
            let mut cursor: Option<String> = None;
            loop {
                match self
                    .api
                    .history(channel, Some(&mark), HISTORY_PAGE, cursor.as_deref())
                    .await
                {
                    Ok((page, next)) => {
                        missed.extend(page);
                        match next {
                            Some(c) => cursor = Some(c),
                            None => break,
                        }
                    }
                    Err(e) => {
                        warn!(channel, error = %e, "Cannot read the alert channel's history; messages posted while disconnected may be missing.");
                        break;
                    }
                }
            }
            missed.sort_by_key(|m| order(m["ts"].as_str().unwrap_or("")));
            let mut read = 0usize;
            for mut m in missed {
                if m["ts"].as_str().is_none_or(|ts| order(ts) <= order(&mark)) {
                    continue;
                }
                m["channel"] = json!(channel);
                m["type"] = json!("message");
                read += 1;
                if let Err(e) = self.event(&m).await {
                    warn!(channel, error = %e, "A read-back message could not be stored; stopping here for this channel.");
                    break;
                }
            }
            if read > 0 {
                info!(
                    channel,
                    messages = read,
                    "Read back alert-channel messages posted while disconnected."
                );
            }
        }
    }

    /// Claims an event id; false when it was handled already (a Slack retry).
    fn claim(&self, id: &str) -> bool {
        let mut s = self.seen.lock().unwrap();
        if !s.set.insert(id.to_string()) {
            return false;
        }
        s.order.push_back(id.to_string());
        if s.order.len() > SEEN {
            if let Some(old) = s.order.pop_front() {
                s.set.remove(&old);
            }
        }
        true
    }

    fn release(&self, id: &str) {
        let mut s = self.seen.lock().unwrap();
        s.set.remove(id);
        s.order.retain(|x| x != id);
    }

    /// An Events API `event_callback`. `Ok` means durable (or nothing to keep): acknowledge it.
    /// `Err` means Slack should deliver it again.
    pub async fn event_callback(&self, body: &Value) -> Result<(), String> {
        let id = body["event_id"].as_str().map(str::to_string);
        if let Some(id) = &id {
            if !self.claim(id) {
                debug!(event_id = %id, "Duplicate event; already handled.");
                return Ok(());
            }
        }
        let r = self.event(&body["event"]).await;
        if let (Err(_), Some(id)) = (&r, &id) {
            self.release(id);
        }
        r
    }

    async fn event(&self, ev: &Value) -> Result<(), String> {
        if ev["type"] != "message" {
            return Ok(());
        }
        let m: MessageEvent = match serde_json::from_value(ev.clone()) {
            Ok(m) => m,
            Err(e) => {
                // It will not parse better next time: acknowledge and drop it.
                warn!(error = %e, "Unreadable Slack message event; ignored.");
                return Ok(());
            }
        };
        if !is_speech(m.subtype.as_deref()) || m.channel.is_empty() {
            return Ok(());
        }
        let me = self.api.identity().await.map_err(|e| e.to_string())?;
        if m.user.as_deref() == Some(me.user_id.as_str())
            || (m.bot_id.is_some() && m.bot_id == me.bot_id)
        {
            return Ok(());
        }
        // Bots, apps and incoming webhooks; a person's message carries only `user`.
        let from_bot = m.is_from_bot();
        let mut author = Actor::new(
            Platform::Slack,
            m.user.clone().or(m.bot_id.clone()).unwrap_or_default(),
        );
        author.name = m.username.clone();
        let extra = blocks_text(&m.blocks);
        let text = match (m.text.trim().is_empty(), extra.is_empty()) {
            (true, _) => extra,
            (false, true) => m.text,
            (false, false) => format!("{}\n{extra}", m.text),
        };
        // A top-level alert-channel message is handled once, whether it comes live, as Slack's
        // redelivery, or read back from history.
        let alert = self.service.is_alert_channel(&m.channel)
            && m.thread_ts.as_ref().is_none_or(|t| *t == m.ts);
        if alert && !self.bookmarks.claim(&m.channel, &m.ts) {
            debug!(channel = %m.channel, ts = %m.ts, "Already handled; not read again.");
            return Ok(());
        }
        let (channel, ts) = (m.channel.clone(), m.ts.clone());
        let event = ChatEvent::Message {
            channel: m.channel,
            message_id: m.ts,
            thread_id: m.thread_ts,
            author,
            from_bot,
            bot_user: Some(me.user_id.clone()),
            text,
            attachments: m.attachments,
            embeds: vec![],
        };
        match self.service.handle(event).await {
            None => {
                if alert {
                    self.bookmarks
                        .seen(self.service.store(), &channel, &ts)
                        .await;
                }
                Ok(())
            }
            // A message gets an answer only when it could not be stored.
            Some(reply) => {
                if alert {
                    self.bookmarks.release(&channel, &ts);
                }
                Err(reply.text)
            }
        }
    }

    /// A `block_actions` interaction: each click goes to the engine with the clicker's id, and
    /// the answers come back to be shown privately once Slack has its acknowledgement.
    pub async fn interaction(&self, payload: &Value) -> Vec<Ephemeral> {
        let Some(c) = Clicks::read(payload) else {
            return vec![];
        };
        let mut actor = Actor::new(Platform::Slack, c.user.clone());
        actor.roles = self.api.groups_of(&c.user).await;
        actor.name = c.name;
        let mut answers = Vec::new();
        for action_id in c.actions {
            info!(user = %c.user, action = %action_id, "Slack button clicked.");
            let event = ChatEvent::Button {
                actor: actor.clone(),
                action_id,
            };
            if let Some(reply) = self.service.handle(event).await {
                answers.push(Ephemeral {
                    channel: c.channel.clone(),
                    user: c.user.clone(),
                    thread_ts: c.thread_ts.clone(),
                    response_url: c.response_url.clone(),
                    text: reply.text,
                });
            }
        }
        answers
    }

    /// A slash command; the answer is the command's response body.
    pub async fn command(&self, c: CommandPayload) -> Value {
        if c.command != COMMAND {
            return json!({
                "response_type": "ephemeral",
                "text": format!("incidentd only answers {COMMAND}, not {}", c.command),
            });
        }
        let mut actor = Actor::new(Platform::Slack, c.user_id.clone());
        actor.roles = self.api.groups_of(&c.user_id).await;
        actor.name = c.user_name;
        let reply = self
            .service
            .handle(ChatEvent::Command {
                actor,
                text: c.text,
            })
            .await;
        match reply {
            Some(r) => json!({
                "response_type": if r.ephemeral { "ephemeral" } else { "in_channel" },
                "text": escape_within(
                    &r.text,
                    if r.ephemeral { MAX_ANSWER_TEXT } else { MAX_TEXT }
                ),
            }),
            None => json!({ "response_type": "ephemeral", "text": "Done." }),
        }
    }

    /// Shows the answers privately; failures are logged, the click itself is already recorded.
    pub fn send_ephemerals(self: &Arc<Self>, answers: Vec<Ephemeral>) {
        if answers.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            for a in answers {
                let r = me
                    .api
                    .post_ephemeral(&a.channel, &a.user, a.thread_ts.as_deref(), &a.text)
                    .await;
                let r = match (r, &a.response_url) {
                    (Err(ChatError::Permanent(e)), Some(url)) => {
                        debug!(error = %e, "chat.postEphemeral refused; answering through response_url.");
                        me.api.respond(url, &a.text).await
                    }
                    (r, _) => r,
                };
                if let Err(e) = r {
                    warn!(error = %e, "Cannot show an ephemeral answer.");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_events_keep_attachment_details() {
        let ev: MessageEvent = serde_json::from_value(json!({
            "type": "message", "subtype": "bot_message", "channel": "C1", "bot_id": "BAM",
            "username": "Alertmanager", "text": "", "ts": "1.1",
            "attachments": [{"id": 1, "title": "[FIRING:1] X", "title_link": "http://am/x",
                "pretext": "p", "text": "t", "color": "danger",
                "fields": [{"title": "severity", "value": "critical", "short": true}]}]
        }))
        .unwrap();
        let a = &ev.attachments[0];
        assert_eq!(a.title_link.as_deref(), Some("http://am/x"));
        assert_eq!(a.pretext.as_deref(), Some("p"));
        assert_eq!(a.fields[0].name, "severity");
        assert!(is_speech(ev.subtype.as_deref()));
        assert!(!is_speech(Some("message_changed")));
    }

    #[test]
    fn bots_apps_and_webhooks_are_told_from_people() {
        let ev = |v: Value| serde_json::from_value::<MessageEvent>(v).unwrap();
        let person = ev(
            json!({"type": "message", "channel": "C1", "user": "U1", "text": "hi", "ts": "1.1"}),
        );
        assert!(!person.is_from_bot());
        let webhook = ev(
            json!({"type": "message", "subtype": "bot_message", "channel": "C1",
            "bot_id": "B1", "text": "[FIRING:1] X", "ts": "1.2"}),
        );
        assert!(webhook.is_from_bot());
        let app = ev(
            json!({"type": "message", "channel": "C1", "user": "U2", "app_id": "A1",
            "text": "deploy done", "ts": "1.3"}),
        );
        assert!(app.is_from_bot());
    }

    #[test]
    fn block_text_skips_rich_text() {
        let blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": "[FIRING:1] Disk"}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": "body"},
                   "fields": [{"type": "mrkdwn", "text": "*severity:* `critical`"}]}),
            json!({"type": "rich_text", "elements": []}),
        ];
        assert_eq!(
            blocks_text(&blocks),
            "[FIRING:1] Disk\nbody\n*severity:* `critical`"
        );
    }
}
