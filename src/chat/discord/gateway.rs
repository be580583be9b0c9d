//! Inbound over the gateway: serenity's client (it heartbeats, reconnects and resumes) with an
//! event handler that turns MESSAGE_CREATE and INTERACTION_CREATE into neutral [`ChatEvent`]s
//! and shows the [`ChatReply`]. `/incident` is registered per configured guild on READY. After
//! every READY (a new session: Discord replays nothing from before it), each alert channel's
//! history after its bookmark is read back (`chat::backfill`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serenity::all::{
    CommandDataOption, CommandDataOptionValue, CommandInteraction, CommandOptionType,
    ComponentInteraction, Context, CreateAllowedMentions, CreateCommand, CreateCommandOption,
    CreateInteractionResponse, CreateInteractionResponseFollowup, CreateInteractionResponseMessage,
    EditInteractionResponse, EventHandler, GatewayError, GatewayIntents, GetMessages, GuildId,
    Http, Interaction, Member, Message, MessageId, Ready, ResumedEvent, User,
};
use serenity::gateway::{ConnectionStage, ShardStageUpdateEvent};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::chat::backfill::Bookmarks;
use crate::chat::health::Connection;
use crate::chat::service::{ChatEvent, ChatReply, ChatService};
use crate::domain::alert::Platform;
use crate::domain::card::truncate_chars;
use crate::domain::classify::RootCause;
use crate::domain::policy::Actor;
use crate::ingest::{ChatEmbed, ChatField};

use super::render::CONTENT_MAX;

/// What the bot needs: guild messages and their content (MESSAGE CONTENT is privileged).
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILD_MESSAGES | GatewayIntents::MESSAGE_CONTENT
}

/// `/incident` subcommands: name, description, options (name, description, required), in the
/// order their values are joined into the text command language of `domain::command`.
pub const SUBCOMMANDS: &[(&str, &str, &[CommandOpt])] = &[
    ("help", "What /incident can do", &[]),
    (
        "new",
        "Open an incident, you as its reporter",
        &[("title", "What is wrong, e.g. checkout is slow", true)],
    ),
    (
        "list",
        "Incidents, newest first",
        &[
            ("scope", "open, resolved or all (default open)", false),
            ("severity", "p0, p1, p2 or p3", false),
        ],
    ),
    ("status", "One incident with its actions", &[ID]),
    ("ack", "Acknowledge an incident", &[ID]),
    (
        "resolve",
        "Resolve an incident",
        &[ID, ("note", "What fixed it", false)],
    ),
    (
        "approve",
        "Approve a recommended action",
        &[ID, ("action", "Action id, e.g. restart", true)],
    ),
    (
        "reject",
        "Reject a recommended action",
        &[
            ID,
            ("action", "Action id, e.g. restart", true),
            ("reason", "Why not", false),
        ],
    ),
    (
        "note",
        "Add a note to the timeline",
        &[ID, ("text", "The note", true)],
    ),
    ("escalate", "Escalate to the on-call", &[ID]),
    ("reopen", "Reopen a resolved incident", &[ID]),
    (
        "assign",
        "Assign an owner",
        &[ID, ("owner", "Who owns it, e.g. @alice", true)],
    ),
    (
        "severity",
        "Re-triage to another severity (recorded)",
        &[ID, ("severity", "p0, p1, p2 or p3", true)],
    ),
    (
        "rootcause",
        "Confirm the root cause",
        &[
            ID,
            ("category", "The root-cause category", true),
            ("text", "What it was", false),
        ],
    ),
    (
        "followup",
        "Add a follow-up (improvement) to the report",
        &[
            ID,
            ("text", "The item", true),
            ("owner", "Who owns it, e.g. @bob", false),
            // Read first (a `type:` prefix of the text); Discord lists required options first.
            (
                "type",
                "technical, process or organizational (default technical)",
                false,
            ),
        ],
    ),
    (
        "followup-done",
        "Mark a follow-up done",
        &[ID, ("number", "The follow-up's number, e.g. 1", true)],
    ),
    (
        "followup-verify",
        "Mark a done follow-up's effect verified",
        &[ID, ("number", "The follow-up's number, e.g. 1", true)],
    ),
    (
        "followup-drop",
        "Drop a follow-up, saying why",
        &[
            ID,
            ("number", "The follow-up's number, e.g. 1", true),
            ("reason", "Why it is dropped", true),
        ],
    ),
    (
        "followup-list",
        "An incident's follow-ups with their state and due dates",
        &[ID],
    ),
    (
        "followups",
        "Follow-ups still to do, across incidents",
        &[("which", "mine or overdue (default: all still to do)", false)],
    ),
    ("timeline", "What happened, in order", &[ID]),
    ("report", "The post-incident report", &[ID]),
    (
        "stats",
        "MTTA, MTTR, manual intervention, RCA completion, recurrence",
        &[("window", "Days, e.g. 7d or 30d (default 7d)", false)],
    ),
];

/// An option of a subcommand: name, description, required.
pub type CommandOpt = (&'static str, &'static str, bool);

const ID: CommandOpt = ("id", "Incident id, e.g. INC-42", true);

/// Subcommands that only read: answered ephemerally.
fn read_only(sub: &str) -> bool {
    matches!(
        sub,
        "help"
            | "list"
            | "status"
            | "timeline"
            | "report"
            | "stats"
            | "followup-list"
            | "followups"
    )
}

/// The `/incident` command as registered.
pub fn incident_command() -> CreateCommand {
    let mut c =
        CreateCommand::new("incident").description("Incidents: list, status, ack, resolve…");
    for (name, description, options) in SUBCOMMANDS {
        let mut sub = CreateCommandOption::new(CommandOptionType::SubCommand, *name, *description);
        for (o, d, required) in *options {
            let mut opt =
                CreateCommandOption::new(CommandOptionType::String, *o, *d).required(*required);
            match *o {
                "scope" => {
                    for s in ["open", "resolved", "all"] {
                        opt = opt.add_string_choice(s, s);
                    }
                }
                "severity" => {
                    for s in ["p0", "p1", "p2", "p3"] {
                        opt = opt.add_string_choice(s, s);
                    }
                }
                "category" => {
                    for c in RootCause::ALL {
                        opt = opt.add_string_choice(c.label(), c.as_str());
                    }
                }
                "type" => {
                    for t in ["technical", "process", "organizational"] {
                        opt = opt.add_string_choice(t, t);
                    }
                }
                "which" => {
                    for t in ["mine", "overdue"] {
                        opt = opt.add_string_choice(t, t);
                    }
                }
                _ => {}
            }
            sub = sub.add_sub_option(opt);
        }
        c = c.add_option(sub);
    }
    c
}

/// `/incident <sub> <options>` as the text the command parser reads.
pub fn command_text(options: &[CommandDataOption]) -> String {
    let Some(first) = options.first() else {
        return "help".into();
    };
    let CommandDataOptionValue::SubCommand(given) = &first.value else {
        return "help".into();
    };
    // `followup-done` is the text language's `followup done`.
    let mut words = vec![first.name.replacen("followup-", "followup ", 1)];
    let schema = SUBCOMMANDS
        .iter()
        .find(|(n, _, _)| *n == first.name)
        .map(|(_, _, o)| *o)
        .unwrap_or(&[]);
    for (name, _, _) in schema {
        if let Some(v) = given.iter().find(|o| o.name == *name) {
            let text = match &v.value {
                CommandDataOptionValue::String(s) => s.clone(),
                CommandDataOptionValue::Integer(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            // The text language reads a follow-up's type as its text's `type:` prefix.
            if *name == "type" {
                let at = 2.min(words.len());
                words.insert(at, format!("{text}:"));
                continue;
            }
            // The text language reads a follow-up's owner as a trailing `@name`.
            // A mention (`<@id>`, `<@&role>`) is already one: no stray `@` before it.
            if *name == "owner" && !text.starts_with('@') && !text.starts_with("<@") {
                words.push(format!("@{text}"));
            } else {
                words.push(text.to_string());
            }
        }
    }
    words.join(" ")
}

fn display(user: &User, member: Option<&Member>) -> String {
    member
        .and_then(|m| m.nick.clone())
        .or_else(|| user.global_name.clone())
        .unwrap_or_else(|| user.name.clone())
}

fn actor(user: &User, member: Option<&Member>) -> Actor {
    Actor {
        platform: Platform::Discord,
        id: user.id.to_string(),
        name: Some(display(user, member)),
        roles: member
            .map(|m| m.roles.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default(),
    }
}

/// A gateway message as the neutral event: alert channels as alerts, anything else as a
/// possible incident-thread reply (a thread is a channel: its id is both `channel` and
/// `thread_id`; the chat service ignores channels that are no incident's thread). `me` is the
/// bot's user id (0 before READY), so a mention of it is recognized.
pub fn message_event(msg: &Message, alert_channels: &HashSet<String>, me: u64) -> ChatEvent {
    let channel = msg.channel_id.to_string();
    let thread_id = (!alert_channels.contains(&channel)).then(|| channel.clone());
    let roles = msg
        .member
        .as_ref()
        .map(|m| m.roles.iter().map(|r| r.to_string()).collect())
        .unwrap_or_default();
    ChatEvent::Message {
        channel,
        message_id: msg.id.to_string(),
        thread_id,
        author: Actor {
            platform: Platform::Discord,
            id: msg.author.id.to_string(),
            name: Some(
                msg.member
                    .as_ref()
                    .and_then(|m| m.nick.clone())
                    .or_else(|| msg.author.global_name.clone())
                    .unwrap_or_else(|| msg.author.name.clone()),
            ),
            roles,
        },
        from_bot: msg.author.bot || msg.webhook_id.is_some(),
        bot_user: (me != 0).then(|| me.to_string()),
        text: msg.content.clone(),
        attachments: vec![],
        embeds: msg
            .embeds
            .iter()
            .map(|e| ChatEmbed {
                title: e.title.clone(),
                url: e.url.clone(),
                description: e.description.clone(),
                color: e.colour.map(|c| c.0),
                fields: e
                    .fields
                    .iter()
                    .map(|f| ChatField {
                        name: f.name.clone(),
                        value: f.value.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The chat service as serenity's event handler holds it: taken away when the gateway task
/// ends. serenity's shard queuer and runners are tasks of their own that keep the handler
/// alive after `Client::start` returned (after a fatal close code, they are never told to
/// stop); a service held there directly would keep an engine handle alive, and the engine's
/// writer (which stops when the last handle is dropped) would never let the app stop.
#[derive(Clone, Default)]
pub struct ServiceSlot(Arc<std::sync::RwLock<Option<ChatService>>>);

impl ServiceSlot {
    pub fn new(service: ChatService) -> Self {
        ServiceSlot(Arc::new(std::sync::RwLock::new(Some(service))))
    }

    /// The service, unless the gateway task has ended.
    pub fn get(&self) -> Option<ChatService> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drops the slot's service: events that still arrive are ignored.
    pub fn close(&self) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The serenity event handler.
pub struct Handler {
    pub service: ServiceSlot,
    pub guilds: Vec<GuildId>,
    pub alert_channels: HashSet<String>,
    /// The bot's user id once READY said it (0 before).
    pub me: Arc<AtomicU64>,
    pub conn: Arc<Connection>,
    /// Alert-channel bookmarks: what a fresh session reads back (see `chat::backfill`).
    pub bookmarks: Arc<Bookmarks>,
}

/// Why the gateway gave up, with what to do about it: serenity's own words for the close codes
/// name no fix ("Disallowed gateway intents were provided").
pub fn fatal_error(e: &serenity::Error) -> String {
    match e {
        serenity::Error::Gateway(GatewayError::DisallowedGatewayIntents) => {
            "Discord closed the gateway with 4014 (disallowed intents): enable the Message Content \
             intent for the bot in the Discord Developer Portal → your app → Bot → Privileged \
             Gateway Intents, then restart incidentd"
                .into()
        }
        serenity::Error::Gateway(GatewayError::InvalidAuthentication) => {
            "Discord closed the gateway with 4004 (authentication failed): the bot token is \
             wrong; set DISCORD_TOKEN to the token of the Bot page in the Discord Developer \
             Portal, then restart incidentd"
                .into()
        }
        serenity::Error::Gateway(GatewayError::InvalidGatewayIntents) => {
            "Discord closed the gateway with 4013 (invalid intents)".into()
        }
        other => other.to_string(),
    }
}

/// No mention in the bot's answers pings anyone: they echo what people typed (`@everyone`, a
/// role). Pings the bot means (the on-call) go through thread notes with explicit ids.
fn no_pings() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
}

/// A private follow-up answer.
fn private_followup(text: &str) -> CreateInteractionResponseFollowup {
    CreateInteractionResponseFollowup::new()
        .content(content(text))
        .ephemeral(true)
        .allowed_mentions(no_pings())
}

/// The neutral answers use Slack's `*bold*`, which Discord shows as italics: on Discord a
/// single-asterisk span (outside code, on one line, not touching spaces inside) is `**bold**`.
pub fn discord_markdown(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    let mut in_code = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '`' {
            in_code = !in_code;
        }
        let single = c == '*'
            && !in_code
            && (i == 0 || chars[i - 1] != '*')
            && chars
                .get(i + 1)
                .is_some_and(|n| *n != '*' && !n.is_whitespace());
        if single {
            // The closing `*` on the same line, outside code, not after a space, not doubled.
            let close = (i + 1..chars.len())
                .take_while(|j| chars[*j] != '\n' && chars[*j] != '`')
                .find(|j| {
                    chars[*j] == '*'
                        && !chars[j - 1].is_whitespace()
                        && chars.get(j + 1) != Some(&'*')
                });
            if let Some(j) = close {
                out.push_str("**");
                out.extend(&chars[i + 1..j]);
                out.push_str("**");
                i = j + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn content(text: &str) -> String {
    truncate_chars(text, CONTENT_MAX)
}

/// At most this many messages answer one `/incident` (a report, a timeline).
pub const ANSWER_PARTS_MAX: usize = 5;

/// A long answer as Discord messages of at most 2000 characters, split between lines, at most
/// [`ANSWER_PARTS_MAX`] of them; what does not fit is announced at the end, not dropped
/// silently. (A single line over the limit is cut.)
pub fn content_parts(text: &str) -> Vec<String> {
    const CUT_NOTE: &str =
        "\n… (cut here: the full text is longer than Discord shows in one answer)";
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.peek() {
        let line = truncate_chars(line, CONTENT_MAX);
        let len = current.chars().count();
        let extra = usize::from(!current.is_empty()) + line.chars().count();
        if len + extra <= CONTENT_MAX {
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(&line);
            lines.next();
            continue;
        }
        if parts.len() + 1 == ANSWER_PARTS_MAX {
            break;
        }
        parts.push(std::mem::take(&mut current));
    }
    if lines.peek().is_some() {
        // Make room for the note in the last part.
        let keep = CONTENT_MAX - CUT_NOTE.chars().count();
        let mut last = truncate_chars(&current, keep);
        last.push_str(CUT_NOTE);
        current = last;
    }
    parts.push(current);
    // Discord refuses empty messages: a part of blank lines only (at a split) is not sent.
    if parts.len() > 1 {
        parts.retain(|p| !p.trim().is_empty());
    }
    parts
}

/// After a click was acknowledged (deferred): runs it and tells the clicker what is for them.
/// Public outcomes are already visible (card edit, thread note); refusals, previews and errors
/// go to the clicker alone.
pub async fn finish_component(http: &Http, service: &ChatService, c: &ComponentInteraction) {
    let event = ChatEvent::Button {
        actor: actor(&c.user, c.member.as_ref()),
        action_id: c.data.custom_id.clone(),
    };
    let Some(reply) = service.handle(event).await else {
        return;
    };
    if reply.ephemeral {
        if let Err(e) = c.create_followup(http, private_followup(&reply.text)).await {
            warn!(error = %e, "Could not answer a button click.");
        }
    }
}

/// Whether `/incident` with these options is answered in the channel (a state change) or
/// privately (a read); the defer must say so before the work is done.
pub fn command_is_public(c: &CommandInteraction) -> bool {
    let text = command_text(&c.data.options);
    !read_only(text.split(' ').next().unwrap_or("help"))
}

/// After `/incident` was deferred (publicly when `public`): runs it and shows the answer.
pub async fn finish_command(
    http: &Http,
    service: &ChatService,
    c: &CommandInteraction,
    public: bool,
) {
    let event = ChatEvent::Command {
        actor: actor(&c.user, c.member.as_deref()),
        text: command_text(&c.data.options),
    };
    let mut reply = service.handle(event).await.unwrap_or(ChatReply {
        text: "Done.".into(),
        ephemeral: !public,
    });
    reply.text = discord_markdown(&reply.text);
    let result = if public && reply.ephemeral {
        // Refused or failed: the channel should not see it. Replace the public "thinking…"
        // with a private answer.
        let _ = c.delete_response(http).await;
        c.create_followup(http, private_followup(&reply.text))
            .await
            .map(|_| ())
    } else {
        // Long answers (a report, a timeline) continue in follow-ups, seen by the same people.
        let mut parts = content_parts(&reply.text).into_iter();
        let first = parts.next().unwrap_or_default();
        let mut result = c
            .edit_response(
                http,
                EditInteractionResponse::new()
                    .content(first)
                    .allowed_mentions(no_pings()),
            )
            .await
            .map(|_| ());
        for part in parts {
            if result.is_err() {
                break;
            }
            let f = CreateInteractionResponseFollowup::new()
                .content(part)
                .ephemeral(reply.ephemeral)
                .allowed_mentions(no_pings());
            result = c.create_followup(http, f).await.map(|_| ());
        }
        result
    };
    if let Err(e) = result {
        warn!(error = %e, "Could not answer /incident.");
    }
}

impl Handler {
    async fn component(&self, ctx: &Context, c: ComponentInteraction) {
        let Some(service) = self.service.get() else {
            return;
        };
        // Acknowledge at once (type 6: no visible change), then work.
        if let Err(e) = c.defer(&ctx.http).await {
            warn!(error = %e, "Could not defer a button click.");
            return;
        }
        finish_component(&ctx.http, &service, &c).await;
    }

    async fn command(&self, ctx: &Context, c: CommandInteraction) {
        if c.data.name != "incident" {
            return;
        }
        let Some(service) = self.service.get() else {
            return;
        };
        let public = command_is_public(&c);
        let defer = CreateInteractionResponseMessage::new()
            .ephemeral(!public)
            .allowed_mentions(no_pings());
        let deferred = c
            .create_response(&ctx.http, CreateInteractionResponse::Defer(defer))
            .await;
        if let Err(e) = deferred {
            warn!(error = %e, "Could not defer /incident.");
            return;
        }
        finish_command(&ctx.http, &service, &c, public).await;
    }
}

/// Hands a gateway or read-back message to the chat service; an alert-channel message only
/// once, and its channel's bookmark moves to it once it is handled.
async fn handle_message(
    service: &ChatService,
    bookmarks: &Bookmarks,
    alert_channels: &HashSet<String>,
    me: u64,
    msg: &Message,
) {
    let channel = msg.channel_id.to_string();
    let id = msg.id.to_string();
    let alert_channel = alert_channels.contains(&channel);
    if alert_channel && !bookmarks.claim(&channel, &id) {
        debug!(channel, message = id, "Already handled; not read again.");
        return;
    }
    let span = info_span!("discord_message", channel = %msg.channel_id);
    let event = message_event(msg, alert_channels, me);
    if let Some(reply) = service.handle(event).instrument(span).await {
        warn!(channel = %msg.channel_id, reply = %reply.text, "A Discord message could not be handled.");
    }
    if alert_channel {
        bookmarks.seen(service.store(), &channel, &id).await;
    }
}

/// Discord's page size for channel history.
const HISTORY_PAGE: u8 = 100;

/// After a fresh session: every alert channel's messages after its bookmark, oldest first.
async fn backfill(
    http: Arc<serenity::http::Http>,
    slot: ServiceSlot,
    bookmarks: Arc<Bookmarks>,
    alert_channels: HashSet<String>,
    me: u64,
) {
    for channel in &alert_channels {
        let Some(service) = slot.get() else { return };
        let Ok(id) = channel.parse::<u64>() else {
            continue;
        };
        let channel_id = serenity::all::ChannelId::new(id);
        let mut after = bookmarks.get(service.store(), channel).await;
        let mut read = 0usize;
        loop {
            let mut page = GetMessages::new().limit(if after.is_some() { HISTORY_PAGE } else { 1 });
            if let Some(a) = after.as_deref().and_then(|a| a.parse::<u64>().ok()) {
                page = page.after(MessageId::new(a));
            }
            let mut messages = match channel_id.messages(&http, page).await {
                Ok(m) => m,
                Err(e) => {
                    warn!(channel, error = %e, "Cannot read the alert channel's history; messages posted while disconnected may be missing.");
                    break;
                }
            };
            messages.sort_by_key(|m| m.id);
            if after.is_none() {
                // First start: bookmark the newest message without reading the past.
                if let Some(m) = messages.last() {
                    bookmarks
                        .seen(service.store(), channel, &m.id.to_string())
                        .await;
                }
                break;
            }
            let full = messages.len() >= HISTORY_PAGE as usize;
            for m in &messages {
                after = Some(m.id.to_string());
                if m.author.id.get() == me {
                    continue;
                }
                read += 1;
                handle_message(&service, &bookmarks, &alert_channels, me, m).await;
            }
            if !full {
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

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        self.me.store(ready.user.id.get(), Ordering::SeqCst);
        self.conn.connected();
        info!(guilds = self.guilds.len(), "Discord gateway ready.");
        // A new session (not a resume): nothing replays what was posted while there was none.
        tokio::spawn(backfill(
            ctx.http.clone(),
            self.service.clone(),
            self.bookmarks.clone(),
            self.alert_channels.clone(),
            ready.user.id.get(),
        ));
        for g in &self.guilds {
            if let Err(e) = g.set_commands(&ctx.http, vec![incident_command()]).await {
                warn!(guild = %g, error = %e, "Could not register /incident.");
            }
        }
    }

    async fn shard_stage_update(&self, _ctx: Context, e: ShardStageUpdateEvent) {
        if e.new == ConnectionStage::Connected {
            self.conn.connected();
        } else if e.old == ConnectionStage::Connected {
            self.conn.disconnected();
        }
    }

    async fn resume(&self, _ctx: Context, _: ResumedEvent) {
        self.conn.connected();
        info!("Discord gateway resumed; missed events are replayed.");
    }

    async fn message(&self, _ctx: Context, msg: Message) {
        let me = self.me.load(Ordering::SeqCst);
        if msg.author.id.get() == me {
            return;
        }
        let Some(service) = self.service.get() else {
            return;
        };
        handle_message(&service, &self.bookmarks, &self.alert_channels, me, &msg).await;
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        match interaction {
            Interaction::Component(c) => {
                let span = info_span!("discord_button", custom_id = %c.data.custom_id);
                self.component(&ctx, c).instrument(span).await
            }
            Interaction::Command(c) => {
                let span = info_span!("discord_command");
                self.command(&ctx, c).instrument(span).await
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serenity::all::CommandData;

    fn options(sub: &str, opts: serde_json::Value) -> Vec<CommandDataOption> {
        let data: CommandData = serde_json::from_value(json!({
            "id": "1", "name": "incident", "type": 1,
            "options": [{ "name": sub, "type": 1, "options": opts }]
        }))
        .unwrap();
        data.options
    }

    #[test]
    fn subcommands_become_the_text_command_language() {
        let s = |v: &str| json!({ "name": "x", "type": 3, "value": v });
        let named = |n: &str, v: &str| {
            let mut o = s(v);
            o["name"] = json!(n);
            o
        };
        assert_eq!(command_text(&options("help", json!([]))), "help");
        assert_eq!(command_text(&[]), "help");
        assert_eq!(
            command_text(&options(
                "list",
                json!([named("severity", "p1"), named("scope", "all")])
            )),
            "list all p1"
        );
        assert_eq!(
            command_text(&options(
                "reject",
                json!([
                    named("reason", "too risky"),
                    named("action", "restart"),
                    named("id", "INC-4")
                ])
            )),
            "reject INC-4 restart too risky"
        );
        assert_eq!(
            command_text(&options(
                "note",
                json!([named("id", "INC-4"), named("text", "db failover done")])
            )),
            "note INC-4 db failover done"
        );
        assert_eq!(
            command_text(&options("new", json!([named("title", "Checkout slow")]))),
            "new Checkout slow"
        );
        for (sub, _, _) in SUBCOMMANDS {
            let text = command_text(&options(
                sub,
                json!([
                    named("id", "INC-1"),
                    named("action", "a"),
                    named("text", "t"),
                    named("owner", "alice"),
                    named("severity", "p1"),
                    named("category", "external_dependency"),
                    named("window", "30d"),
                    named("title", "Checkout slow"),
                    named("number", "1"),
                    named("reason", "superseded"),
                    named("type", "process")
                ]),
            ));
            assert!(
                crate::domain::command::parse(&text).is_ok(),
                "{sub}: {text:?} does not parse"
            );
        }
        // Every text subcommand of the help is offered on Discord too.
        for verb in [
            "new",
            "list",
            "status",
            "ack",
            "approve",
            "reject",
            "escalate",
            "note",
            "assign",
            "severity",
            "rootcause",
            "followup",
            "followups",
            "resolve",
            "reopen",
            "timeline",
            "report",
            "stats",
            "help",
        ] {
            assert!(
                crate::domain::command::HELP.contains(&format!("`{verb}")),
                "{verb} is not in the help"
            );
            assert!(
                SUBCOMMANDS.iter().any(|(n, _, _)| *n == verb),
                "{verb} is missing on Discord"
            );
        }
        // A follow-up's owner is read as the trailing `@name`, with or without the `@`.
        use crate::domain::command::{parse, Command};
        for owner in ["bob", "@bob"] {
            let text = command_text(&options(
                "followup",
                json!([
                    named("owner", owner),
                    named("text", "add a rate-limit alert"),
                    named("id", "INC-2")
                ]),
            ));
            assert_eq!(text, "followup INC-2 add a rate-limit alert @bob");
            assert!(matches!(parse(&text), Ok(Command::FollowUp(..))), "{text}");
        }
        let text = command_text(&options(
            "followup",
            json!([
                named("id", "INC-2"),
                named("text", "review the rota"),
                named("type", "process")
            ]),
        ));
        assert_eq!(text, "followup INC-2 process: review the rota");
        assert!(matches!(
            parse(&text),
            Ok(Command::FollowUp(
                _,
                _,
                None,
                crate::domain::followup::FollowUpKind::Process
            ))
        ));
        let text = command_text(&options(
            "followup-drop",
            json!([
                named("reason", "superseded"),
                named("number", "2"),
                named("id", "INC-2")
            ]),
        ));
        assert_eq!(text, "followup drop INC-2 2 superseded");
        assert!(
            matches!(parse(&text), Ok(Command::FollowUpSet(..))),
            "{text}"
        );
        assert!(SUBCOMMANDS.len() <= 25, "Discord allows 25 subcommands");
        assert_eq!(
            command_text(&options(
                "rootcause",
                json!([named("id", "INC-2"), named("category", "configuration")])
            )),
            "rootcause INC-2 configuration"
        );
    }

    #[test]
    fn slack_bold_becomes_discord_bold() {
        assert_eq!(
            discord_markdown("*/incident* commands:\n• `stats [7d|30d]` — x"),
            "**/incident** commands:\n• `stats [7d|30d]` — x"
        );
        assert_eq!(
            discord_markdown("*Incident stats, last 7 days* — 3 incidents"),
            "**Incident stats, last 7 days** — 3 incidents"
        );
        // Already bold, inside code, a lone star, a product: left alone.
        for same in ["**x**", "`a *b* c`", "5 * 3", "a*", "2 * 3 * 4", "* item"] {
            assert_eq!(discord_markdown(same), same);
        }
    }

    #[test]
    fn long_answers_are_split_between_lines_within_discord_limits() {
        assert_eq!(content_parts("short"), ["short"]);
        assert_eq!(content_parts(""), [""]);
        // 3 × 1000-character lines: two messages, no line split.
        let line = |c: char| c.to_string().repeat(999);
        let text = [line('a'), line('b'), line('c')].join("\n");
        let parts = content_parts(&text);
        assert_eq!(
            parts.len(),
            2,
            "{:?}",
            parts.iter().map(|p| p.len()).collect::<Vec<_>>()
        );
        assert_eq!(parts[0], [line('a'), line('b')].join("\n"));
        assert_eq!(parts[1], line('c'));
        assert_eq!(parts.join("\n"), text, "nothing lost, nothing added");
        // Far too long: at most ANSWER_PARTS_MAX messages, the last says it was cut.
        let huge: String = (0..400)
            .map(|i| format!("line {i:03} {}\n", "x".repeat(80)))
            .collect();
        let parts = content_parts(&huge);
        assert_eq!(parts.len(), ANSWER_PARTS_MAX);
        assert!(parts.iter().all(|p| p.chars().count() <= CONTENT_MAX));
        assert!(parts
            .last()
            .unwrap()
            .ends_with("longer than Discord shows in one answer)"));
        assert!(parts[0].starts_with("line 000 "));
        // A split just before trailing blank lines sends no empty message.
        let text = format!("{}\n{}\n\n\n", line('a'), line('b'));
        let parts = content_parts(&text);
        assert_eq!(parts, [format!("{}\n{}\n", line('a'), line('b'))]);
        // One line longer than a message is cut, not sent over the limit.
        let parts = content_parts(&"y".repeat(5000));
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].chars().count(), CONTENT_MAX);
    }

    #[test]
    fn the_registered_command_fits_discord() {
        let c = serde_json::to_value(incident_command()).unwrap();
        assert_eq!(c["name"], "incident");
        let subs = c["options"].as_array().unwrap();
        assert!(subs.len() <= 25);
        for s in subs {
            let name = s["name"].as_str().unwrap();
            // Discord's rule for names: `^[-_'\p{L}\p{N}…]{1,32}$`, lowercase where cased.
            assert!(
                name.len() <= 32 && name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{name}"
            );
            assert!(s["description"].as_str().unwrap().chars().count() <= 100);
        }
        assert!(read_only("list") && read_only("status") && !read_only("ack"));
        assert!(read_only("report") && read_only("timeline") && read_only("stats"));
        assert!(!read_only("followup") && !read_only("rootcause") && !read_only("assign"));
    }

    #[test]
    fn messages_become_alerts_or_thread_replies() {
        let msg = |channel: &str, webhook: bool| -> Message {
            serde_json::from_value(json!({
                "id": "55", "channel_id": channel,
                "author": { "id": "7", "username": "Alertmanager", "discriminator": "0", "avatar": null, "bot": webhook },
                "content": "", "timestamp": "2026-11-29T12:00:00.000000+00:00", "edited_timestamp": null,
                "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
                "attachments": [], "pinned": false, "type": 0,
                "webhook_id": if webhook { json!("7") } else { json!(null) },
                "embeds": [{ "title": "[FIRING:1] X", "description": "d", "color": 255,
                             "fields": [{ "name": "a", "value": "b", "inline": false }] }],
                "member": { "roles": ["99"], "joined_at": "2026-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false, "flags": 0 }
            }))
            .unwrap()
        };
        let alerts: HashSet<String> = ["10".to_string()].into();
        match message_event(&msg("10", true), &alerts, 900) {
            ChatEvent::Message {
                channel,
                message_id,
                thread_id,
                from_bot,
                bot_user,
                embeds,
                author,
                ..
            } => {
                assert_eq!(
                    (channel.as_str(), message_id.as_str(), thread_id),
                    ("10", "55", None)
                );
                assert!(from_bot);
                assert_eq!(bot_user.as_deref(), Some("900"));
                assert_eq!(embeds[0].title.as_deref(), Some("[FIRING:1] X"));
                assert_eq!(embeds[0].color, Some(255));
                assert_eq!(embeds[0].fields[0].value, "b");
                assert_eq!(author.roles, ["99"]);
            }
            other => panic!("{other:?}"),
        }
        match message_event(&msg("20", false), &alerts, 900) {
            ChatEvent::Message {
                channel,
                thread_id,
                from_bot,
                ..
            } => {
                assert_eq!(thread_id.as_deref(), Some("20"));
                assert_eq!(channel, "20");
                assert!(!from_bot);
            }
            other => panic!("{other:?}"),
        }
        // Before READY the bot does not know its id: no mention can be recognized.
        match message_event(&msg("10", false), &alerts, 0) {
            ChatEvent::Message { bot_user, .. } => assert_eq!(bot_user, None),
            other => panic!("{other:?}"),
        }
    }
}
