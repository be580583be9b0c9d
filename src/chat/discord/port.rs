//! Outbound: the outbox's deliveries as Discord REST calls.
//!
//! Requests are built with serenity's `Route`/`Request` (its paths, headers and `proxy`
//! rewrite of `https://discord.com` to `api_url`) and sent with our own reqwest client, because
//! serenity's error type drops the 429 body and headers: the outbox needs `retry_after`, and
//! serenity's own ratelimiter cannot run with a proxy anyway (DESIGN.md §4).
//!
//! Where the card lives:
//! - alert read from a Discord message: the thread is started from that alert message (thread
//!   id = alert message id) and the card is the bot's first message inside the thread;
//! - any other alert (webhooks), or an alert message that is gone or out of reach: the card is
//!   a root message in `incident_channel` and the thread is started from it (thread id = card
//!   message id).
//!
//! Either way `ThreadRef { channel: thread id, message_id: card message id }`: notes go to the
//! thread channel; the card is edited in the thread, or in the incident channel when it is the
//! thread's starter (`channel == message_id`). Retries are idempotent: message creation carries
//! the outbox key as `nonce` with `enforce_nonce`, and "thread already exists" (160004) counts
//! as success with the known thread id. A report in several messages gives each part its own
//! nonce (from the outbox key and the part number).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{json, Value};
use serenity::http::{LightMethod, Request, Route};
use serenity::model::id::{ChannelId, MessageId};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::render;
use crate::config::Secret;
use crate::domain::alert::Platform;
use crate::domain::card::{truncate_chars, IncidentCard};
use crate::domain::report::Report;
use crate::ports::{ChatError, ChatPort, Delivered, Delivery, OutboundMessage, ThreadRef};

/// Discord's "A thread has already been created for this message".
const THREAD_EXISTS: i64 = 160004;
/// Discord's nonce limit.
const NONCE_MAX: usize = 25;

/// The Discord sink ("discord").
pub struct DiscordPort {
    http: reqwest::Client,
    api_url: String,
    /// `Bot …`; never logged.
    auth: Secret,
    incident_channel: Option<String>,
    /// Outbox key → how many parts of its report are posted, while a report is delivered.
    report_parts: Mutex<HashMap<String, usize>>,
}

/// A failed call, before it becomes a [`ChatError`].
#[derive(Debug)]
struct ApiError {
    status: Option<StatusCode>,
    code: i64,
    message: String,
    retry_after: Option<Duration>,
}

impl From<ApiError> for ChatError {
    fn from(e: ApiError) -> ChatError {
        match e.status {
            Some(StatusCode::TOO_MANY_REQUESTS) => ChatError::RateLimited {
                retry_after: e.retry_after.unwrap_or(Duration::from_secs(1)),
            },
            Some(s) if s.is_server_error() => {
                ChatError::Transient(format!("HTTP {s}: {}", e.message))
            }
            // A timeout is worth another try; so is a bad token (every message would fail the
            // same way: keep them until the token is fixed). Other 4xx would fail again.
            Some(StatusCode::REQUEST_TIMEOUT | StatusCode::UNAUTHORIZED) => {
                ChatError::Transient(format!("HTTP {}: {}", e.status.unwrap(), e.message))
            }
            Some(s) => ChatError::Permanent(format!("HTTP {s} code {}: {}", e.code, e.message)),
            None => ChatError::Transient(e.message),
        }
    }
}

/// The outbox key as a Discord nonce (≤ 25 chars): as is when it fits, else a hash of it.
pub fn nonce(key: &str) -> String {
    if key.len() <= NONCE_MAX {
        return key.to_string();
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..NONCE_MAX].to_string()
}

fn snowflake(s: &str) -> Result<u64, ChatError> {
    s.parse::<u64>()
        .ok()
        .filter(|n| *n != 0)
        .ok_or_else(|| ChatError::Permanent(format!("{s:?} is not a Discord id")))
}

fn seconds(v: &Value) -> Option<Duration> {
    let f = v
        .as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))?;
    (f.is_finite() && f >= 0.0).then(|| Duration::from_secs_f64(f))
}

impl DiscordPort {
    pub fn new(api_url: &str, token: &Secret, incident_channel: Option<String>) -> Self {
        let t = token.expose().trim();
        let auth = if t.starts_with("Bot ") {
            t.to_string()
        } else {
            format!("Bot {t}")
        };
        DiscordPort {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("reqwest client"),
            api_url: api_url.trim_end_matches('/').to_string(),
            auth: Secret::new(auth),
            incident_channel,
            report_parts: Mutex::default(),
        }
    }

    async fn call(
        &self,
        route: Route<'_>,
        method: LightMethod,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let path = route.path().to_string();
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        let req = Request::new(route, method)
            .body(body)
            .build(&self.http, self.auth.expose(), Some(&self.api_url))
            .map_err(|e| ApiError {
                status: None,
                code: 0,
                message: format!("building the request: {e}"),
                retry_after: None,
            })?;
        let resp = req.send().await.map_err(|e| ApiError {
            status: None,
            code: 0,
            message: format!("network: {e}"),
            retry_after: None,
        })?;
        let status = resp.status();
        let header_retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(Duration::from_secs_f64);
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        debug!(%status, route = %path.trim_start_matches("https://discord.com"), "Discord call failed.");
        Err(ApiError {
            status: Some(status),
            code: json["code"].as_i64().unwrap_or(0),
            message: json["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| truncate_chars(&text, 200)),
            // The JSON body is more precise (float seconds) than the header.
            retry_after: seconds(&json["retry_after"]).or(header_retry),
        })
    }

    async fn create_message(
        &self,
        channel: u64,
        mut body: Value,
        key: &str,
    ) -> Result<String, ChatError> {
        no_pings_unless_said(&mut body);
        body["nonce"] = json!(nonce(key));
        body["enforce_nonce"] = json!(true);
        let m = self
            .call(
                Route::ChannelMessages {
                    channel_id: ChannelId::new(channel),
                },
                LightMethod::Post,
                Some(&body),
            )
            .await?;
        id_of(&m)
    }

    /// Starts a thread from a message; an existing thread (a retry) is the same thread.
    async fn start_thread(
        &self,
        channel: u64,
        message: u64,
        card: &IncidentCard,
    ) -> Result<String, ChatError> {
        let body = json!({
            "name": render::thread_name(card),
            "auto_archive_duration": 10080,
        });
        match self
            .call(
                Route::ChannelMessageThreads {
                    channel_id: ChannelId::new(channel),
                    message_id: MessageId::new(message),
                },
                LightMethod::Post,
                Some(&body),
            )
            .await
        {
            Ok(t) => id_of(&t),
            Err(e) if e.code == THREAD_EXISTS => Ok(message.to_string()),
            Err(e) => Err(e.into()),
        }
    }

    async fn post_card(&self, card: &IncidentCard, key: &str) -> Result<ThreadRef, ChatError> {
        let message = render::card_message(card);
        let origin = card
            .origin
            .as_ref()
            .filter(|o| o.platform == Platform::Discord);
        if let Some(origin) = origin {
            let (ch, msg) = (snowflake(&origin.channel)?, snowflake(&origin.message_id)?);
            match self.start_thread(ch, msg, card).await {
                Ok(thread) => {
                    let card_id = self
                        .create_message(snowflake(&thread)?, message, key)
                        .await?;
                    return Ok(ThreadRef {
                        channel: thread,
                        message_id: card_id,
                    });
                }
                // The alert message is gone or out of reach (deleted, no access): the
                // incident still gets its thread, in the incident channel.
                Err(ChatError::Permanent(e)) if self.incident_channel.is_some() => {
                    warn!(incident = %card.incident, error = %e, "Cannot start the thread under the alert message; using the incident channel.");
                }
                Err(e) => return Err(e),
            }
        }
        let ch = self.incident_channel.as_deref().ok_or_else(|| {
            ChatError::Permanent(
                "discord.incident_channel is not set: nowhere to open the thread".into(),
            )
        })?;
        let ch = snowflake(ch)?;
        let card_id = self.create_message(ch, message, key).await?;
        let thread = self.start_thread(ch, snowflake(&card_id)?, card).await?;
        Ok(ThreadRef {
            channel: thread,
            message_id: card_id,
        })
    }

    async fn update_card(&self, card: &IncidentCard, t: &ThreadRef) -> Result<(), ChatError> {
        // A starter card lives in the incident channel, a card inside a thread in the thread.
        let channel = if t.channel == t.message_id {
            self.incident_channel
                .clone()
                .ok_or_else(|| ChatError::Permanent("discord.incident_channel is not set".into()))?
        } else {
            t.channel.clone()
        };
        self.call(
            Route::ChannelMessage {
                channel_id: ChannelId::new(snowflake(&channel)?),
                message_id: MessageId::new(snowflake(&t.message_id)?),
            },
            LightMethod::Patch,
            Some(&render::card_message(card)),
        )
        .await?;
        Ok(())
    }
}

impl DiscordPort {
    /// Posts the report's messages in order into the thread. Idempotent per outbox entry: each
    /// part has its own nonce (derived from the outbox key) with `enforce_nonce`, so a part
    /// whose answer was lost is not created twice, and the parts this process already posted
    /// are skipped on a retry (after a 429 halfway through, for example).
    async fn post_report(&self, thread: u64, report: &Report, key: &str) -> Result<(), ChatError> {
        let messages = render::report_messages(report);
        let start = self
            .report_parts
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(0);
        for (i, body) in messages.into_iter().enumerate().skip(start) {
            self.create_message(thread, body, &format!("{key}:report:{i}"))
                .await?;
            self.report_parts
                .lock()
                .unwrap()
                .insert(key.to_string(), i + 1);
        }
        self.report_parts.lock().unwrap().remove(key);
        Ok(())
    }
}

/// Every message the bot creates says whom it may ping; a body that does not say pings no one
/// (without `allowed_mentions`, `@everyone` in the text would ping the server).
fn no_pings_unless_said(body: &mut Value) {
    if body.get("allowed_mentions").is_none() {
        body["allowed_mentions"] = json!({ "parse": [] });
    }
}

fn id_of(v: &Value) -> Result<String, ChatError> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ChatError::Transient("Discord answered without an id".into()))
}

#[async_trait]
impl ChatPort for DiscordPort {
    fn name(&self) -> &str {
        "discord"
    }

    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        match msg.body {
            Delivery::PostCard { card } => {
                let thread = self.post_card(card, &msg.key).await?;
                Ok(Delivered {
                    thread: Some(thread),
                })
            }
            Delivery::UpdateCard { card } => match &msg.thread {
                Some(t) => {
                    self.update_card(card, t).await?;
                    Ok(Delivered::default())
                }
                // The card was never posted (dead-lettered): nothing to edit.
                None => Err(ChatError::Permanent(format!(
                    "{} has no Discord card to edit",
                    msg.incident
                ))),
            },
            Delivery::Report { report } => match &msg.thread {
                Some(t) => {
                    self.post_report(snowflake(&t.channel)?, report, &msg.key)
                        .await?;
                    Ok(Delivered::default())
                }
                None => Err(ChatError::Permanent(format!(
                    "{} has no Discord thread for its report",
                    msg.incident
                ))),
            },
            Delivery::Note { text, mentions } => match &msg.thread {
                Some(t) => {
                    self.create_message(
                        snowflake(&t.channel)?,
                        render::note_message(text, mentions),
                        &msg.key,
                    )
                    .await?;
                    Ok(Delivered::default())
                }
                None => Err(ChatError::Permanent(format!(
                    "{} has no Discord thread for notes",
                    msg.incident
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_fit_discord() {
        assert_eq!(nonce("incidentd:discord:42"), "incidentd:discord:42");
        let long = nonce("incidentd:discord:123456789012345");
        assert_eq!(long.len(), NONCE_MAX);
        assert_eq!(long, nonce("incidentd:discord:123456789012345"));
        assert_ne!(long, nonce("incidentd:discord:123456789012346"));
    }

    #[test]
    fn errors_map_to_outbox_decisions() {
        let e = |status: u16, retry: Option<f64>| ApiError {
            status: Some(StatusCode::from_u16(status).unwrap()),
            code: 50035,
            message: "x".into(),
            retry_after: retry.map(Duration::from_secs_f64),
        };
        assert_eq!(
            ChatError::from(e(429, Some(0.25))),
            ChatError::RateLimited {
                retry_after: Duration::from_millis(250)
            }
        );
        assert!(matches!(
            ChatError::from(e(502, None)),
            ChatError::Transient(_)
        ));
        assert!(matches!(
            ChatError::from(e(400, None)),
            ChatError::Permanent(_)
        ));
        assert!(matches!(
            ChatError::from(e(404, None)),
            ChatError::Permanent(_)
        ));
        assert_eq!(seconds(&json!(1.5)), Some(Duration::from_millis(1500)));
        assert_eq!(seconds(&json!("2")), Some(Duration::from_secs(2)));
        assert_eq!(seconds(&json!(-1)), None);
    }
}
