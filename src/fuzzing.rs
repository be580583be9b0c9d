//! Entry points for fuzzing: each takes arbitrary bytes and runs one decoder or parser of
//! untrusted input the way the bot does. None may panic, and each one's work is bounded by
//! its input (lists are capped while parsing, de-duplication is linear). Used by the
//! cargo-fuzz targets in `fuzz/` (nightly, coverage-guided) and by `tests/fuzz_smoke.rs`
//! (stable, a few seconds in `cargo test`, longer with `INCIDENTD_FUZZ_SECONDS`).

use crate::domain::alert::HumanMessages;
use crate::ingest::{self, ChatMessage};

/// One entry point: arbitrary bytes in, nothing out (it must not panic).
pub type Target = fn(&[u8]);

/// Every target, by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`).
pub const TARGETS: [(&str, Target); 9] = [
    ("alertmanager", alertmanager),
    ("grafana", grafana),
    ("generic", generic),
    ("chat_message", chat_message),
    ("slash_command", slash_command),
    ("slack_payload", slack_payload),
    ("discord_interaction", discord_interaction),
    ("discord_message", discord_message),
    ("config", config),
];

/// An Alertmanager webhook body.
pub fn alertmanager(data: &[u8]) {
    let _ = ingest::decode_alertmanager(data);
}

/// A Grafana webhook body (unified or legacy).
pub fn grafana(data: &[u8]) {
    let _ = ingest::decode_grafana(data);
}

/// A generic webhook body.
pub fn generic(data: &[u8]) {
    let _ = ingest::decode_generic(data);
}

/// A chat message in an alert channel: as JSON (text, attachments, embeds, who posted it) or,
/// when it is not, as the text of a person's and of a bot's message.
pub fn chat_message(data: &[u8]) {
    let read = |m: &ChatMessage| {
        let _ = ingest::looks_like_alert(m);
        let _ = ingest::parse_chat_message(m);
        for humans in [
            HumanMessages::All,
            HumanMessages::AlertsAndMentions,
            HumanMessages::Ignore,
        ] {
            let _ = ingest::alert_channel_message(m, humans);
        }
    };
    match serde_json::from_slice::<ChatMessage>(data) {
        Ok(m) => read(&m),
        Err(_) => {
            let text = String::from_utf8_lossy(data).into_owned();
            for from_bot in [false, true] {
                read(&ChatMessage {
                    text: text.clone(),
                    from_bot,
                    ..Default::default()
                });
            }
        }
    }
}

/// The text of an `/incident` command (Slack, Discord, console).
pub fn slash_command(data: &[u8]) {
    let _ = crate::domain::command::parse(&String::from_utf8_lossy(data));
}

/// A Slack message event, and a Slack interaction (`payload=` form body).
pub fn slack_payload(data: &[u8]) {
    crate::chat::slack::read_untrusted(data);
}

/// A Discord interaction (HTTP endpoint or gateway): commands' options to command text.
pub fn discord_interaction(data: &[u8]) {
    use serenity::model::application::Interaction;
    if let Ok(Interaction::Command(c)) = serde_json::from_slice::<Interaction>(data) {
        let _ = crate::chat::discord::gateway::command_text(&c.data.options);
        let _ = crate::chat::discord::gateway::command_is_public(&c);
    }
}

/// A Discord message (gateway `MESSAGE_CREATE`) to the chat event the bot handles.
pub fn discord_message(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<serenity::model::channel::Message>(data) {
        let channels: std::collections::HashSet<String> = [m.channel_id.to_string()].into();
        let _ = crate::chat::discord::gateway::message_event(&m, &channels, 1);
    }
}

/// A config file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::from_toml(text, &|_| None);
    }
}
