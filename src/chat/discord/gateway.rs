//! Inbound over the gateway: serenity's client (it heartbeats, reconnects and resumes) with an
//! event handler that turns MESSAGE_CREATE and INTERACTION_CREATE into neutral [`ChatEvent`]s
//! and shows the [`ChatReply`]. `/incident` is registered per configured guild on READY.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serenity::all::{
    CommandDataOption, CommandDataOptionValue, CommandInteraction, CommandOptionType,
    ComponentInteraction, Context, CreateCommand, CreateCommandOption,
    CreateInteractionResponseFollowup, EditInteractionResponse, EventHandler, GatewayIntents,
    GuildId, Http, Interaction, Member, Message, Ready, ResumedEvent, User,
};
use tracing::{info, info_span, warn, Instrument};

use crate::domain::alert::Platform;
use crate::domain::card::truncate_chars;
use crate::domain::policy::Actor;
use crate::engine::service::{ChatEvent, ChatReply, ChatService};
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
];

/// An option of a subcommand: name, description, required.
pub type CommandOpt = (&'static str, &'static str, bool);

const ID: CommandOpt = ("id", "Incident id, e.g. INC-42", true);

/// Subcommands that only read: answered ephemerally.
fn read_only(sub: &str) -> bool {
    matches!(sub, "help" | "list" | "status")
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
    let mut words = vec![first.name.clone()];
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
            if !text.trim().is_empty() {
                words.push(text.trim().to_string());
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
/// `thread_id`; the chat service ignores channels that are no incident's thread).
pub fn message_event(msg: &Message, alert_channels: &HashSet<String>) -> ChatEvent {
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

/// The serenity event handler.
pub struct Handler {
    pub service: ChatService,
    pub guilds: Vec<GuildId>,
    pub alert_channels: HashSet<String>,
    /// The bot's user id once READY said it (0 before).
    pub me: Arc<AtomicU64>,
}

fn content(text: &str) -> String {
    truncate_chars(text, CONTENT_MAX)
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
        let f = CreateInteractionResponseFollowup::new()
            .content(content(&reply.text))
            .ephemeral(true);
        if let Err(e) = c.create_followup(http, f).await {
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
    let reply = service.handle(event).await.unwrap_or(ChatReply {
        text: "Done.".into(),
        ephemeral: !public,
    });
    let result = if public && reply.ephemeral {
        // Refused or failed: the channel should not see it. Replace the public "thinking…"
        // with a private answer.
        let _ = c.delete_response(http).await;
        let f = CreateInteractionResponseFollowup::new()
            .content(content(&reply.text))
            .ephemeral(true);
        c.create_followup(http, f).await.map(|_| ())
    } else {
        c.edit_response(
            http,
            EditInteractionResponse::new().content(content(&reply.text)),
        )
        .await
        .map(|_| ())
    };
    if let Err(e) = result {
        warn!(error = %e, "Could not answer /incident.");
    }
}

impl Handler {
    async fn component(&self, ctx: &Context, c: ComponentInteraction) {
        // Acknowledge at once (type 6: no visible change), then work.
        if let Err(e) = c.defer(&ctx.http).await {
            warn!(error = %e, "Could not defer a button click.");
            return;
        }
        finish_component(&ctx.http, &self.service, &c).await;
    }

    async fn command(&self, ctx: &Context, c: CommandInteraction) {
        if c.data.name != "incident" {
            return;
        }
        let public = command_is_public(&c);
        let deferred = if public {
            c.defer(&ctx.http).await
        } else {
            c.defer_ephemeral(&ctx.http).await
        };
        if let Err(e) = deferred {
            warn!(error = %e, "Could not defer /incident.");
            return;
        }
        finish_command(&ctx.http, &self.service, &c, public).await;
    }
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        self.me.store(ready.user.id.get(), Ordering::SeqCst);
        info!(guilds = self.guilds.len(), "Discord gateway ready.");
        for g in &self.guilds {
            if let Err(e) = g.set_commands(&ctx.http, vec![incident_command()]).await {
                warn!(guild = %g, error = %e, "Could not register /incident.");
            }
        }
    }

    async fn resume(&self, _ctx: Context, _: ResumedEvent) {
        info!("Discord gateway resumed; missed events are replayed.");
    }

    async fn message(&self, _ctx: Context, msg: Message) {
        if msg.author.id.get() == self.me.load(Ordering::SeqCst) {
            return;
        }
        let span = info_span!("discord_message", channel = %msg.channel_id);
        let event = message_event(&msg, &self.alert_channels);
        if let Some(reply) = self.service.handle(event).instrument(span).await {
            warn!(channel = %msg.channel_id, reply = %reply.text, "A Discord message could not be handled.");
        }
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
        for (sub, _, _) in SUBCOMMANDS {
            let text = command_text(&options(
                sub,
                json!([
                    named("id", "INC-1"),
                    named("action", "a"),
                    named("text", "t")
                ]),
            ));
            assert!(
                crate::domain::command::parse(&text).is_ok(),
                "{sub}: {text:?} does not parse"
            );
        }
    }

    #[test]
    fn the_registered_command_fits_discord() {
        let c = serde_json::to_value(incident_command()).unwrap();
        assert_eq!(c["name"], "incident");
        let subs = c["options"].as_array().unwrap();
        assert!(subs.len() <= 25);
        for s in subs {
            let name = s["name"].as_str().unwrap();
            assert!(name.len() <= 32 && name.chars().all(|c| c.is_ascii_lowercase()));
            assert!(s["description"].as_str().unwrap().chars().count() <= 100);
        }
        assert!(read_only("list") && read_only("status") && !read_only("ack"));
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
        match message_event(&msg("10", true), &alerts) {
            ChatEvent::Message {
                channel,
                message_id,
                thread_id,
                from_bot,
                embeds,
                author,
                ..
            } => {
                assert_eq!(
                    (channel.as_str(), message_id.as_str(), thread_id),
                    ("10", "55", None)
                );
                assert!(from_bot);
                assert_eq!(embeds[0].title.as_deref(), Some("[FIRING:1] X"));
                assert_eq!(embeds[0].color, Some(255));
                assert_eq!(embeds[0].fields[0].value, "b");
                assert_eq!(author.roles, ["99"]);
            }
            other => panic!("{other:?}"),
        }
        match message_event(&msg("20", false), &alerts) {
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
    }
}
