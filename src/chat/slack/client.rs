//! The Slack Web API as the bot uses it, through slack-morphism's hyper client: the outbox's
//! [`ChatPort`] (cards, card edits, thread notes), ephemeral answers, `auth.test` and
//! `apps.connections.open`. Platform errors become [`ChatError`]s so the outbox knows whether
//! to wait (429), back off (5xx, network) or give up (`invalid_blocks`, `channel_not_found`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use tokio::sync::OnceCell;
use tracing::{debug, error, info, warn};

use super::render::{
    card_block_id, card_blocks, escape_within, fallback_text, report_messages, report_part_of,
    MAX_TEXT,
};
use crate::config::{Secret, SlackConfig};
use crate::domain::alert::Platform;
use crate::domain::card::{truncate_chars, IncidentCard};
use crate::domain::report::Report;
use crate::ports::{ChatError, ChatPort, Delivered, Delivery, OutboundMessage, ThreadRef};

/// Every Slack Web API method this client calls, with the bot-token scopes it needs (from the
/// Web API spec, `shared/specs/slack/web-api-openapi-v2.json`; the spec's `chat:write:bot` is
/// the bot token's `chat:write`; `conversations.*` need the history scope of each channel type
/// read: public and private channels). Kept next to the calls: a new call goes here with its
/// scopes. `tests/slack_scopes.rs` checks this against the spec and the app manifest, and the
/// fake Slack refuses a method whose scope the manifest does not grant.
pub const WEB_API_SCOPES: &[(&str, &[&str])] = &[
    ("auth.test", &[]),
    // Socket Mode, with the app-level token (its `connections:write` is no bot scope).
    ("apps.connections.open", &[]),
    ("chat.postMessage", &["chat:write"]),
    ("chat.update", &["chat:write"]),
    ("chat.postEphemeral", &["chat:write"]),
    (
        "conversations.history",
        &["channels:history", "groups:history"],
    ),
    (
        "conversations.replies",
        &["channels:history", "groups:history"],
    ),
    ("usergroups.list", &["usergroups:read"]),
];

/// Bot scopes that no method needs but a feature does: the slash command, and the message
/// events of the alert channels (`message.channels`, `message.groups`).
pub const FEATURE_SCOPES: &[&str] = &["commands", "channels:history", "groups:history"];

pub(crate) type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;

/// Who the bot is, from `auth.test`: its own messages are ignored.
#[derive(Debug, Clone)]
pub(crate) struct BotIdentity {
    pub user_id: String,
    pub bot_id: Option<String>,
}

/// Remembered deliveries: enough to answer a re-sent outbox entry from memory.
const REMEMBERED: usize = 4096;
/// Calls made outside the outbox (which has its own per-call timeout) give up after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, ChatError>>,
) -> Result<T, ChatError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(ChatError::Transient("Slack did not answer in time".into())))
}

/// Most pages of up to 999 messages read when looking for an earlier post of an outbox entry
/// (100 000 messages since its first attempt, in one thread or one channel).
const LOOKUP_PAGES: usize = 100;

/// How long the user-group membership list is trusted before it is fetched again.
const GROUPS_TTL: Duration = Duration::from_secs(300);
/// A click must be acked within 3 s: the membership lookup may not eat that budget.
const GROUPS_TIMEOUT: Duration = Duration::from_millis(1500);

/// user id → the user groups they are in, as of `fetched`.
struct Groups {
    fetched: tokio::time::Instant,
    members: HashMap<String, Vec<String>>,
}

/// The Web API client with the bot's tokens.
pub(crate) struct SlackApi {
    client: SlackClient<Connector>,
    bot: SlackApiToken,
    app: Option<SlackApiToken>,
    identity: OnceCell<BotIdentity>,
    /// (channel, thread root ts) → the card message's ts. A card threaded under an alert is a
    /// reply, so its ts differs from the thread root the store keeps; after a restart it is
    /// found again by its header `block_id` (conversations.replies).
    cards: Mutex<HashMap<(String, String), String>>,
    /// Outbox keys delivered by this process, with their result: a redelivered entry (the
    /// store failed after Slack accepted it) is not posted twice.
    delivered: Mutex<(HashMap<String, Delivered>, VecDeque<String>)>,
    /// Whether approvers are named by user group (`slack-group:S…`): only then is
    /// usergroups.list called.
    user_groups: bool,
    groups: tokio::sync::Mutex<Option<Groups>>,
    /// For `response_url` answers, which are plain webhooks, and raw Web API reads.
    http: reqwest::Client,
    /// The Web API base (`https://slack.com/api`), for raw reads.
    api_url: String,
    /// Origins a `response_url` may point at: Slack's hooks host, and the API's own host
    /// (staging and test servers).
    hook_origins: Vec<String>,
}

/// `scheme://host[:port]/` of a URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}/"))
}

fn token(secret: &Secret) -> SlackApiToken {
    SlackApiToken::new(SlackApiTokenValue(secret.expose().to_string()))
}

/// An https-or-http connector: slack-morphism's default is https-only, but staging and tests
/// point `api_url` at plain http. Falls back to no trusted roots (http only) when the system
/// has no CA certificates, so a bare container still starts and says why https fails.
fn connector() -> HttpsConnector<HttpConnector> {
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            error!(error = %e, "No system CA certificates: https to Slack will fail.");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
        }
    };
    builder.https_or_http().enable_http1().build()
}

impl SlackApi {
    pub fn new(cfg: &SlackConfig) -> Self {
        let conn = SlackClientHyperConnector::with_connector(connector())
            .with_slack_api_url(cfg.api_url.trim_end_matches('/'));
        SlackApi {
            client: SlackClient::new(conn),
            bot: token(&cfg.bot_token),
            app: cfg.app_token.as_ref().map(token),
            identity: OnceCell::new(),
            cards: Mutex::default(),
            delivered: Mutex::default(),
            user_groups: false,
            groups: tokio::sync::Mutex::new(None),
            http: reqwest::Client::builder()
                .timeout(CALL_TIMEOUT)
                .build()
                .unwrap_or_default(),
            api_url: cfg.api_url.trim_end_matches('/').to_string(),
            hook_origins: ["https://hooks.slack.com/".to_string()]
                .into_iter()
                .chain(origin(&cfg.api_url))
                .collect(),
        }
    }

    /// Answers through an interaction's `response_url` (works even where the bot cannot post,
    /// e.g. a channel it was removed from). Only Slack's hosts are called: the URL comes from a
    /// payload, and the bot must not be made to POST anywhere else.
    pub async fn respond(&self, response_url: &str, text: &str) -> Result<(), ChatError> {
        if !self
            .hook_origins
            .iter()
            .any(|o| origin(response_url).as_ref() == Some(o))
        {
            return Err(ChatError::Permanent(
                "response_url is not a Slack URL".into(),
            ));
        }
        let body = serde_json::json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": escape_within(text, MAX_TEXT),
        });
        let r = self
            .http
            .post(response_url)
            .json(&body)
            .send()
            .await
            .map_err(|e| ChatError::Transient(e.without_url().to_string()))?;
        match r.status() {
            s if s.is_success() => Ok(()),
            s if s.is_server_error() => Err(ChatError::Transient(format!("HTTP {s}"))),
            s => Err(ChatError::Permanent(format!("HTTP {s}"))),
        }
    }

    /// One page of a channel's top-level history, newest first, as raw message JSON (the
    /// typed models drop attachment fields the alert parser reads): messages after `oldest`
    /// (exclusive), and the cursor of the next page if there is one.
    pub async fn history(
        &self,
        channel: &str,
        oldest: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), ChatError> {
        let mut form: Vec<(&str, String)> = vec![
            ("channel", channel.to_string()),
            ("limit", limit.to_string()),
        ];
        if let Some(o) = oldest {
            form.push(("oldest", o.to_string()));
        }
        if let Some(c) = cursor {
            form.push(("cursor", c.to_string()));
        }
        let v = self.raw("conversations.history", &form).await?;
        let messages = v["messages"].as_array().cloned().unwrap_or_default();
        let next = v["response_metadata"]["next_cursor"]
            .as_str()
            .filter(|c| !c.is_empty() && v["has_more"] == true)
            .map(str::to_string);
        Ok((messages, next))
    }

    /// Look up user-group membership for approvals (needs the `usergroups:read` scope).
    /// One Web API call by form, answered as raw JSON (`ok` checked; 429 and 5xx mapped to what
    /// the outbox does next).
    async fn raw(&self, method: &str, form: &[(&str, String)]) -> Result<Value, ChatError> {
        let r = self
            .http
            .post(format!("{}/{method}", self.api_url))
            .bearer_auth(self.bot.token_value.0.as_str())
            .form(form)
            .send()
            .await
            .map_err(|e| ChatError::Transient(e.without_url().to_string()))?;
        if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let secs = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            return Err(ChatError::RateLimited {
                retry_after: Duration::from_secs(secs),
            });
        }
        if r.status().is_server_error() {
            return Err(ChatError::Transient(format!("HTTP {}", r.status())));
        }
        let v: Value = r
            .json()
            .await
            .map_err(|e| ChatError::Transient(e.without_url().to_string()))?;
        if v["ok"] != true {
            return Err(ChatError::Permanent(
                v["error"].as_str().unwrap_or("not ok").to_string(),
            ));
        }
        Ok(v)
    }

    /// Whether the bot already posted outbox entry `key` (its message `metadata` carries the
    /// key): in the thread under `root`, or among the channel's top-level messages, since
    /// `since` (a minute of clock skew allowed). Asked with `include_all_metadata`, without
    /// which Slack leaves metadata out, page by page (a busy thread holds more than one page)
    /// up to [`LOOKUP_PAGES`] pages; past that the entry counts as not posted (logged).
    pub async fn posted_with_key(
        &self,
        channel: &str,
        root: Option<&str>,
        since: chrono::DateTime<chrono::Utc>,
        key: &str,
    ) -> Result<bool, ChatError> {
        let mut form: Vec<(&str, String)> = vec![
            ("channel", channel.to_string()),
            ("include_all_metadata", "true".into()),
            ("limit", "999".into()),
            ("oldest", format!("{}.000000", since.timestamp() - 60)),
        ];
        let method = match root {
            Some(r) => {
                form.push(("ts", r.to_string()));
                "conversations.replies"
            }
            None => "conversations.history",
        };
        for _ in 0..LOOKUP_PAGES {
            let v = match self.raw(method, &form).await {
                Ok(v) => v,
                Err(ChatError::Permanent(e)) if e == "thread_not_found" => return Ok(false),
                Err(e) => return Err(e),
            };
            let found = v["messages"].as_array().into_iter().flatten().any(|m| {
                m["metadata"]["event_type"] == "incidentd"
                    && m["metadata"]["event_payload"]["key"] == key
            });
            if found {
                return Ok(true);
            }
            match v["response_metadata"]["next_cursor"].as_str() {
                Some(c) if !c.is_empty() && v["has_more"] != false => {
                    form.retain(|(k, _)| *k != "cursor");
                    form.push(("cursor", c.to_string()));
                }
                _ => return Ok(false),
            }
        }
        warn!(
            method,
            pages = LOOKUP_PAGES,
            "Gave up looking for an earlier post of this message after {LOOKUP_PAGES} pages; posting it."
        );
        Ok(false)
    }

    pub fn with_user_groups(mut self, on: bool) -> Self {
        self.user_groups = on;
        self
    }

    /// The user groups `user` is in (for `slack-group:` approvers), from a list refreshed every
    /// few minutes. On failure the last known list (or none) is used: a slow or refused
    /// lookup must not hold up the click's acknowledgement.
    pub async fn groups_of(&self, user: &str) -> Vec<String> {
        if !self.user_groups {
            return vec![];
        }
        let mut cache = self.groups.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|g| g.fetched.elapsed() < GROUPS_TTL);
        if !fresh {
            let req = SlackApiUserGroupsListRequest::new().with_include_users(true);
            let session = self.client.open_session(&self.bot);
            match tokio::time::timeout(GROUPS_TIMEOUT, session.usergroups_list(&req)).await {
                Ok(Ok(r)) => {
                    let mut members: HashMap<String, Vec<String>> = HashMap::new();
                    for g in r.usergroups {
                        for u in g.users.into_iter().flatten() {
                            members
                                .entry(u.to_string())
                                .or_default()
                                .push(g.id.to_string());
                        }
                    }
                    *cache = Some(Groups {
                        fetched: tokio::time::Instant::now(),
                        members,
                    });
                }
                Ok(Err(e)) => {
                    warn!(error = %map_error(e), "Cannot list Slack user groups; slack-group approvers will not match.");
                    // Do not ask again on every click: keep what we had (or nothing) for a while.
                    let members = cache.take().map(|g| g.members).unwrap_or_default();
                    *cache = Some(Groups {
                        fetched: tokio::time::Instant::now(),
                        members,
                    });
                }
                Err(_) => {
                    warn!("Slack user groups did not load in time; using the last known list.")
                }
            }
        }
        cache
            .as_ref()
            .and_then(|g| g.members.get(user).cloned())
            .unwrap_or_default()
    }

    /// The bot's own ids (auth.test, once).
    pub async fn identity(&self) -> Result<BotIdentity, ChatError> {
        self.identity
            .get_or_try_init(|| async {
                let r = timed(async {
                    self.client
                        .open_session(&self.bot)
                        .auth_test()
                        .await
                        .map_err(map_error)
                })
                .await?;
                Ok(BotIdentity {
                    user_id: r.user_id.to_string(),
                    bot_id: r.bot_id.map(|b| b.to_string()),
                })
            })
            .await
            .cloned()
    }

    /// A fresh Socket Mode WebSocket URL (apps.connections.open with the app-level token).
    pub async fn open_socket(&self) -> Result<String, ChatError> {
        let app = self.app.as_ref().ok_or_else(|| {
            ChatError::Permanent("socket mode needs SLACK_APP_TOKEN (xapp-…)".into())
        })?;
        let r = timed(async {
            self.client
                .open_session(app)
                .apps_connections_open(&SlackApiAppsConnectionOpenRequest::new())
                .await
                .map_err(map_error)
        })
        .await?;
        Ok(r.url.0.to_string())
    }

    /// An answer only `user` sees, in the thread when there is one.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        thread_ts: Option<&str>,
        text: &str,
    ) -> Result<(), ChatError> {
        let req = SlackApiChatPostEphemeralRequest::new(
            channel.into(),
            user.into(),
            SlackMessageContent::new().with_text(escape_within(text, MAX_TEXT)),
        )
        .opt_thread_ts(thread_ts.map(|t| t.into()));
        timed(async {
            self.client
                .open_session(&self.bot)
                .chat_post_ephemeral(&req)
                .await
                .map(|_| ())
                .map_err(map_error)
        })
        .await
    }

    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        content: SlackMessageContent,
    ) -> Result<(String, String), ChatError> {
        let req = SlackApiChatPostMessageRequest::new(channel.into(), content)
            .opt_thread_ts(thread_ts.map(|t| t.into()));
        let r = self
            .client
            .open_session(&self.bot)
            .chat_post_message(&req)
            .await
            .map_err(map_error)?;
        Ok((r.channel.to_string(), r.ts.to_string()))
    }

    /// The ts of the card message in a thread: remembered, or looked up by its block id.
    async fn card_ts(&self, thread: &ThreadRef, card: &IncidentCard) -> Result<String, ChatError> {
        let key = (thread.channel.clone(), thread.message_id.clone());
        if let Some(ts) = self.cards.lock().unwrap().get(&key) {
            return Ok(ts.clone());
        }
        match self
            .find_card(&thread.channel, Some(&thread.message_id), card)
            .await?
        {
            Some(ts) => {
                self.cards.lock().unwrap().insert(key, ts.clone());
                Ok(ts)
            }
            None => Err(ChatError::Permanent(format!(
                "the card of {} is no longer in its thread",
                card.incident
            ))),
        }
    }

    /// Looks for the bot's card of this incident by its header `block_id`: in the thread under
    /// `root`, or among the channel's messages since the incident opened.
    async fn find_card(
        &self,
        channel: &str,
        root: Option<&str>,
        card: &IncidentCard,
    ) -> Result<Option<String>, ChatError> {
        let want = card_block_id(card);
        let mut found = None;
        self.scan(channel, root, card.opened_at, |m| {
            let is_card = m.content.blocks.iter().flatten().any(|b| match b {
                SlackBlock::Header(h) => {
                    h.block_id.as_ref().map(|i| i.to_string()).as_deref() == Some(want.as_str())
                }
                _ => false,
            });
            if is_card {
                found = Some(m.origin.ts.to_string());
            }
            is_card
        })
        .await?;
        Ok(found)
    }

    /// Reads the messages of the thread under `root` (the parent first, then its replies,
    /// oldest first), or the channel's top-level messages (newest first), from `since` on (a
    /// minute of clock skew allowed), page by page until `stop` holds for one of them or they
    /// are all read. At most [`LOOKUP_PAGES`] pages: a busy thread or channel (a war room, a
    /// storm of alert posts) holds more than one page, and what the bot looks for may be on
    /// any of them.
    async fn scan(
        &self,
        channel: &str,
        root: Option<&str>,
        since: chrono::DateTime<chrono::Utc>,
        mut stop: impl FnMut(&SlackHistoryMessage) -> bool,
    ) -> Result<(), ChatError> {
        let session = self.client.open_session(&self.bot);
        let oldest: SlackTs = format!("{}.000000", since.timestamp() - 60).into();
        let mut cursor: Option<SlackCursorId> = None;
        for _ in 0..LOOKUP_PAGES {
            let (messages, next) = match root {
                Some(root) => {
                    let mut req =
                        SlackApiConversationsRepliesRequest::new(channel.into(), root.into())
                            .with_oldest(oldest.clone())
                            .with_limit(999);
                    req.cursor = cursor.take();
                    match session.conversations_replies(&req).await {
                        Ok(r) => (r.messages, r.response_metadata.and_then(|m| m.next_cursor)),
                        Err(SlackClientError::ApiError(a)) if a.code == "thread_not_found" => {
                            return Ok(())
                        }
                        Err(e) => return Err(map_error(e)),
                    }
                }
                None => {
                    let mut req = SlackApiConversationsHistoryRequest::new()
                        .with_channel(channel.into())
                        .with_oldest(oldest.clone())
                        .with_limit(999);
                    req.cursor = cursor.take();
                    let r = session
                        .conversations_history(&req)
                        .await
                        .map_err(map_error)?;
                    (r.messages, r.response_metadata.and_then(|m| m.next_cursor))
                }
            };
            if messages.iter().any(&mut stop) {
                return Ok(());
            }
            match next {
                Some(c) if !c.0.is_empty() => cursor = Some(c),
                _ => return Ok(()),
            }
        }
        warn!(
            channel,
            pages = LOOKUP_PAGES,
            "Stopped reading the channel's history after {LOOKUP_PAGES} pages."
        );
        Ok(())
    }
}

impl SlackApi {
    /// The parts of outbox entry `key`'s report already in the thread under `root`, posted
    /// since `since` (when the report was first attempted).
    async fn find_report_parts(
        &self,
        channel: &str,
        root: &str,
        since: chrono::DateTime<chrono::Utc>,
        key: &str,
    ) -> Result<HashSet<usize>, ChatError> {
        let mut parts = HashSet::new();
        self.scan(channel, Some(root), since, |m| {
            parts.extend(m.content.blocks.iter().flatten().filter_map(|b| {
                let v = serde_json::to_value(b).ok()?;
                report_part_of(v.get("block_id")?.as_str()?, key)
            }));
            false
        })
        .await?;
        Ok(parts)
    }
}

/// Maps slack-morphism's errors onto what the outbox does next.
pub(crate) fn map_error(e: SlackClientError) -> ChatError {
    match e {
        SlackClientError::RateLimitError(r) => ChatError::RateLimited {
            retry_after: r.retry_after.unwrap_or(Duration::from_secs(1)),
        },
        SlackClientError::ApiError(a) => match a.code.as_str() {
            "ratelimited" | "rate_limited" => ChatError::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
                ChatError::Transient(a.code)
            }
            _ => {
                let detail = a.errors.map(|e| e.join("; ")).unwrap_or_default();
                ChatError::Permanent(if detail.is_empty() {
                    a.code
                } else {
                    format!("{}: {detail}", a.code)
                })
            }
        },
        SlackClientError::HttpError(h) if h.status_code.is_server_error() => {
            ChatError::Transient(format!("HTTP {}", h.status_code))
        }
        SlackClientError::HttpError(h) => ChatError::Permanent(format!("HTTP {}", h.status_code)),
        // Network, protocol and decoding trouble: worth another try after a backoff.
        other => ChatError::Transient(other.to_string()),
    }
}

fn metadata(msg: &OutboundMessage<'_>, kind: &str) -> SlackMessageMetadata {
    SlackMessageMetadata::new("incidentd".into()).with_event_payload(HashMap::from([
        ("key".to_string(), msg.key.clone()),
        ("incident".to_string(), msg.incident.to_string()),
        ("kind".to_string(), kind.to_string()),
    ]))
}

fn card_content(
    card: &IncidentCard,
    meta: SlackMessageMetadata,
) -> Result<SlackMessageContent, ChatError> {
    let blocks: Vec<SlackBlock> = serde_json::from_value(Value::Array(card_blocks(card)))
        .map_err(|e| ChatError::Permanent(format!("card does not render as Block Kit: {e}")))?;
    Ok(SlackMessageContent::new()
        .with_text(fallback_text(card))
        .with_blocks(blocks)
        .with_metadata(meta))
}

/// chat.postMessage pacing per channel. Slack allows about one message per second per channel
/// with short bursts; staying under it avoids most 429s (which pause the whole sink).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub burst: f64,
    pub per_second: f64,
}

impl Default for Pace {
    fn default() -> Self {
        // One message less than Slack's burst: Slack counts from when requests arrive, we
        // from when they leave, and network jitter must not tip us over.
        Pace {
            burst: 2.0,
            per_second: 1.0,
        }
    }
}

/// The outbox sink `slack`.
pub struct SlackPort {
    api: Arc<SlackApi>,
    incident_channel: Option<String>,
    pace: Option<Pace>,
    /// channel → (tokens, last refill); tokens go negative for posts already waiting.
    buckets: Mutex<HashMap<String, (f64, tokio::time::Instant)>>,
    /// Cards this process tried to post. A card tried before (the answer was lost: timeout,
    /// 5xx after Slack stored it) or whose incident predates this process (a crash between
    /// Slack's answer and the outbox's bookkeeping) may already be in Slack: it is looked up
    /// before being posted again, so the thread is never doubled.
    attempted: Mutex<HashSet<String>>,
    /// Report parts posted so far, per outbox key, while a multi-message report is delivered.
    report_parts: Mutex<HashMap<String, HashSet<usize>>>,
    started: chrono::DateTime<chrono::Utc>,
}

impl SlackPort {
    pub(crate) fn new(
        api: Arc<SlackApi>,
        incident_channel: Option<String>,
        pace: Option<Pace>,
    ) -> Self {
        SlackPort {
            api,
            incident_channel,
            pace,
            buckets: Mutex::default(),
            attempted: Mutex::default(),
            report_parts: Mutex::default(),
            started: chrono::Utc::now(),
        }
    }

    /// Waits for the channel's next posting slot (a token bucket; at most about a second
    /// per message queued ahead, well within the outbox's call timeout).
    async fn pace(&self, channel: &str) {
        let Some(p) = self.pace else {
            return;
        };
        let wait = {
            let now = tokio::time::Instant::now();
            let mut b = self.buckets.lock().unwrap();
            let (tokens, last) = b.entry(channel.to_string()).or_insert((p.burst, now));
            *tokens =
                (*tokens + now.duration_since(*last).as_secs_f64() * p.per_second).min(p.burst);
            *last = now;
            *tokens -= 1.0;
            if *tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-*tokens / p.per_second)
            }
        };
        if !wait.is_zero() {
            debug!(channel, ?wait, "Pacing chat.postMessage.");
            tokio::time::sleep(wait).await;
        }
    }

    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        content: SlackMessageContent,
    ) -> Result<(String, String), ChatError> {
        self.pace(channel).await;
        self.api.post(channel, thread_ts, content).await
    }

    fn incident_channel(&self) -> Result<&str, ChatError> {
        self.incident_channel.as_deref().ok_or_else(|| {
            ChatError::Permanent(
                "no [slack] incident_channel is configured for incidents that did not come from a Slack message".into(),
            )
        })
    }

    async fn send(&self, msg: &OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        match msg.body {
            Delivery::PostCard { card } => {
                let (channel, mut root) = match &card.origin {
                    Some(o) if o.platform == Platform::Slack => {
                        (o.channel.clone(), Some(o.message_id.clone()))
                    }
                    _ => (self.incident_channel()?.to_string(), None),
                };
                let content = card_content(card, metadata(msg, "card"))?;
                let retried = !self.attempted.lock().unwrap().insert(msg.key.clone());
                if retried || card.opened_at < self.started {
                    let (ch, rt) = match &root {
                        Some(r) => (channel.as_str(), Some(r.as_str())),
                        None => (self.incident_channel()?, None),
                    };
                    if let Some(ts) = self.api.find_card(ch, rt, card).await? {
                        info!(incident = %card.incident, "The card was already posted; not posting it again.");
                        let root = rt.map(str::to_string).unwrap_or_else(|| ts.clone());
                        self.api
                            .cards
                            .lock()
                            .unwrap()
                            .insert((ch.to_string(), root.clone()), ts);
                        return Ok(Delivered {
                            thread: Some(ThreadRef {
                                channel: ch.to_string(),
                                message_id: root,
                            }),
                        });
                    }
                }
                let posted = match self.post(&channel, root.as_deref(), content.clone()).await {
                    // The alert's channel refuses us (not invited, archived…): rather than lose
                    // the card, start the thread in the incident channel.
                    Err(ChatError::Permanent(e))
                        if root.is_some() && self.incident_channel.is_some() =>
                    {
                        warn!(incident = %card.incident, error = %e, "Cannot thread the card under its alert; posting it in the incident channel.");
                        root = None;
                        self.post(self.incident_channel()?, None, content).await
                    }
                    other => other,
                };
                let (channel, ts) = posted?;
                let root = root.unwrap_or_else(|| ts.clone());
                self.api
                    .cards
                    .lock()
                    .unwrap()
                    .insert((channel.clone(), root.clone()), ts);
                Ok(Delivered {
                    thread: Some(ThreadRef {
                        channel,
                        message_id: root,
                    }),
                })
            }
            Delivery::UpdateCard { card } => {
                let thread = msg.thread.as_ref().ok_or_else(|| {
                    ChatError::Permanent(format!("{} has no card on Slack to edit", card.incident))
                })?;
                let ts = self.api.card_ts(thread, card).await?;
                let req = SlackApiChatUpdateRequest::new(
                    thread.channel.as_str().into(),
                    card_content(card, metadata(msg, "card"))?,
                    ts.into(),
                );
                self.api
                    .client
                    .open_session(&self.api.bot)
                    .chat_update(&req)
                    .await
                    .map_err(map_error)?;
                Ok(Delivered::default())
            }
            Delivery::Note { text, mentions } => {
                let who = slack_mentions(mentions);
                let room = MAX_TEXT.saturating_sub(who.chars().count());
                let text = format!("{who}{}", escape_within(text, room));
                let content = SlackMessageContent::new()
                    .with_text(truncate_chars(&text, MAX_TEXT))
                    .with_metadata(metadata(msg, "note"));
                let (channel, root) = match &msg.thread {
                    Some(t) => (t.channel.as_str(), Some(t.message_id.as_str())),
                    // The card never made it (dead-lettered): say it in the incident channel.
                    None => (self.incident_channel()?, None),
                };
                // A retry, or an entry queued before this process started (a leader killed
                // after Slack stored the note but before the result was recorded): the note
                // may be there already, under its key.
                let retried = !self.attempted.lock().unwrap().insert(msg.key.clone());
                if (retried || msg.created_at < self.started)
                    && self
                        .api
                        .posted_with_key(channel, root, msg.created_at, &msg.key)
                        .await?
                {
                    info!(incident = %msg.incident, "The note was already posted; not posting it again.");
                    return Ok(Delivered::default());
                }
                self.post(channel, root, content).await?;
                Ok(Delivered::default())
            }
            Delivery::Report { report } => {
                self.post_report(msg, report).await?;
                Ok(Delivered::default())
            }
        }
    }

    /// Posts the report's messages in order into the thread. Idempotent per outbox entry: the
    /// parts this process posted are remembered, and a retry (or an entry from before this
    /// process started) first looks in the thread for parts already there (by the `block_id`
    /// each part carries), so an answer lost after Slack stored a part never doubles it.
    async fn post_report(
        &self,
        msg: &OutboundMessage<'_>,
        report: &Report,
    ) -> Result<(), ChatError> {
        let messages = report_messages(report, &msg.key);
        let (channel, root) = match &msg.thread {
            Some(t) => (t.channel.clone(), Some(t.message_id.clone())),
            // The card never made it (dead-lettered): post it in the incident channel.
            None => (self.incident_channel()?.to_string(), None),
        };
        let retried = !self.attempted.lock().unwrap().insert(msg.key.clone());
        let from_before = report.resolved_at.is_none_or(|t| t < self.started);
        let mut posted: HashSet<usize> = self
            .report_parts
            .lock()
            .unwrap()
            .get(&msg.key)
            .cloned()
            .unwrap_or_default();
        if let (true, Some(root)) = (retried || from_before, root.as_deref()) {
            let found = self
                .api
                .find_report_parts(&channel, root, msg.created_at, &msg.key)
                .await?;
            if !found.is_empty() {
                info!(incident = %msg.incident, parts = found.len(), "Report parts already in the thread; not posting them again.");
            }
            posted.extend(found);
        }
        for (i, m) in messages.into_iter().enumerate() {
            if posted.contains(&i) {
                continue;
            }
            let blocks: Vec<SlackBlock> =
                serde_json::from_value(Value::Array(m.blocks)).map_err(|e| {
                    ChatError::Permanent(format!("report does not render as Block Kit: {e}"))
                })?;
            let content = SlackMessageContent::new()
                .with_text(m.text)
                .with_blocks(blocks)
                .with_metadata(metadata(msg, "report"));
            self.post(&channel, root.as_deref(), content).await?;
            self.report_parts
                .lock()
                .unwrap()
                .entry(msg.key.clone())
                .or_default()
                .insert(i);
        }
        // Delivered as a whole: `delivered` answers any redelivery from now on.
        self.report_parts.lock().unwrap().remove(&msg.key);
        Ok(())
    }
}

/// The Slack entries of a policy-style mention list, as Slack mention syntax: `slack:U1` →
/// `<@U1>`, `slack-group:S1` → `<!subteam^S1>`. Ids with anything but letters and digits are
/// dropped, so a config value cannot smuggle markup.
fn slack_mentions(mentions: &[String]) -> String {
    let ok = |id: &str| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric());
    let mut out = String::new();
    for m in mentions {
        if let Some(u) = m.strip_prefix("slack:").filter(|u| ok(u)) {
            out.push_str(&format!("<@{u}> "));
        } else if let Some(g) = m.strip_prefix("slack-group:").filter(|g| ok(g)) {
            out.push_str(&format!("<!subteam^{g}> "));
        }
    }
    out
}

#[cfg(test)]
mod mention_tests {
    #[test]
    fn only_slack_entries_become_mentions() {
        let m = super::slack_mentions(&[
            "slack:U1".to_string(),
            "slack-group:S9".to_string(),
            "discord:42".to_string(),
            "slack:<!channel>".to_string(),
        ]);
        assert_eq!(m, "<@U1> <!subteam^S9> ");
    }
}

#[async_trait]
impl ChatPort for SlackPort {
    fn name(&self) -> &str {
        "slack"
    }

    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        if let Some(d) = self.api.delivered.lock().unwrap().0.get(&msg.key) {
            debug!(key = %msg.key, "Already delivered by this process; not sent again.");
            return Ok(d.clone());
        }
        let result = self.send(&msg).await;
        match &result {
            Ok(d) => {
                let mut guard = self.api.delivered.lock().unwrap();
                let (map, order) = &mut *guard;
                map.insert(msg.key.clone(), d.clone());
                order.push_back(msg.key.clone());
                if order.len() > REMEMBERED {
                    if let Some(old) = order.pop_front() {
                        map.remove(&old);
                    }
                }
            }
            Err(e) => warn!(incident = %msg.incident, error = %e, "Slack call failed."),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slack_morphism::errors::{SlackClientApiError, SlackClientHttpError, SlackRateLimitError};

    #[test]
    fn platform_errors_map_to_what_the_outbox_does_next() {
        let rl = map_error(SlackClientError::RateLimitError(
            SlackRateLimitError::new().with_retry_after(Duration::from_secs(7)),
        ));
        assert_eq!(
            rl,
            ChatError::RateLimited {
                retry_after: Duration::from_secs(7)
            }
        );
        let api = |code: &str| {
            map_error(SlackClientError::ApiError(SlackClientApiError::new(
                code.into(),
            )))
        };
        assert!(matches!(api("ratelimited"), ChatError::RateLimited { .. }));
        assert!(matches!(api("invalid_blocks"), ChatError::Permanent(m) if m == "invalid_blocks"));
        assert!(matches!(api("channel_not_found"), ChatError::Permanent(_)));
        assert!(matches!(api("internal_error"), ChatError::Transient(_)));
        let http = |status: u16| {
            map_error(SlackClientError::HttpError(SlackClientHttpError::new(
                axum::http::StatusCode::from_u16(status).unwrap(),
            )))
        };
        assert!(matches!(http(503), ChatError::Transient(_)));
        assert!(matches!(http(404), ChatError::Permanent(_)));
    }

    #[tokio::test]
    async fn response_urls_must_be_slacks() {
        let cfg = SlackConfig {
            mode: crate::config::SlackMode::Socket,
            api_url: "http://127.0.0.1:9/api".into(),
            alert_channels: vec![],
            incident_channel: None,
            bot_token: Secret::new("xoxb-x"),
            app_token: None,
            signing_secret: None,
        };
        let api = SlackApi::new(&cfg);
        assert_eq!(
            origin("https://hooks.slack.com/actions/T/1/x").as_deref(),
            Some("https://hooks.slack.com/")
        );
        for bad in [
            "https://evil.example/actions/1",
            "https://hooks.slack.com.evil.example/x",
            "http://hooks.slack.com/x",
            "not a url",
        ] {
            assert!(
                matches!(api.respond(bad, "hi").await, Err(ChatError::Permanent(_))),
                "{bad}"
            );
        }
    }
}
