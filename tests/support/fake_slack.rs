//! A fake Slack for integration tests, on loopback: the Web API methods the bot calls (with
//! token checks, Block Kit limit checks from specs/README.md and per-channel rate limiting of
//! chat.postMessage), a Socket Mode WebSocket that delivers envelopes and redelivers unacked
//! ones on reconnect, and helpers that act as users and bots: post messages, click buttons, run
//! `/incident`, over the socket or as signed HTTP requests. Every request is recorded.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

pub const BOT_TOKEN: &str = "xoxb-test-bot-token";
pub const APP_TOKEN: &str = "xapp-test-app-token";
pub const SIGNING_SECRET: &str = "test-signing-secret-0123456789";
pub const BOT_USER: &str = "UINCIDENTD";
pub const BOT_ID: &str = "BINCIDENTD";
pub const ALERTS: &str = "CALERTS";
pub const INCIDENTS: &str = "CINCIDENTS";
pub const RANDOM: &str = "CRANDOM";

/// One Web API call as the fake saw it.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub method: String,
    pub body: Value,
    /// HTTP status answered.
    pub status: u16,
    /// Slack's `error` when `ok` was false.
    pub error: Option<String>,
    /// When the request arrived.
    pub at: Instant,
}

/// A message in a channel.
#[derive(Debug, Clone)]
pub struct FakeMessage {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user: Option<String>,
    pub bot_id: Option<String>,
    pub text: String,
    pub blocks: Vec<Value>,
    pub metadata: Value,
    pub edits: u32,
    /// The message as conversations.history returns it, for posts made through the fake's
    /// helpers (attachments, subtype, username); `Null`: built from the fields above.
    pub raw: Value,
}

/// A Socket Mode envelope delivered (maybe several times) and whether it was acked.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub kind: String,
    pub payload: Value,
    pub deliveries: u32,
    pub sent_at: Instant,
    pub ack: Option<Value>,
    pub acked_at: Option<Instant>,
    /// Posted during an outage longer than Slack's redelivery: never delivered.
    pub lost: bool,
}

#[derive(Default)]
struct Inner {
    /// Message events are lost (an outage longer than Slack's redelivery) while set.
    losing_events: bool,
    calls: Vec<ApiCall>,
    messages: Vec<FakeMessage>,
    ephemerals: Vec<Value>,
    envelopes: Vec<Envelope>,
    next_ts: u64,
    next_id: u64,
    /// Per-channel token buckets for chat.postMessage: (tokens, last refill).
    buckets: HashMap<String, (f64, Instant)>,
    /// The next chat.postMessage calls answered 429 whatever the bucket says.
    storm: u32,
    /// The next chat.postMessage calls store the message, then answer 500 (the answer is lost).
    lose_answers: u32,
    /// Only posts whose metadata has this `event_payload.kind` lose their answer.
    lose_kind: Option<String>,
    socket: Option<Conn>,
    connections: u32,
    channels: HashSet<String>,
    /// User groups: id → members.
    usergroups: Vec<(String, Vec<String>)>,
    /// Bodies POSTed to interaction `response_url`s.
    responses: Vec<Value>,
    /// Incoming webhooks: the path after `/services/` → (channel, the webhook's bot id).
    hooks: HashMap<String, (String, String)>,
}

struct Conn {
    tx: mpsc::UnboundedSender<String>,
    kill: Option<oneshot::Sender<()>>,
}

pub struct Shared {
    inner: Mutex<Inner>,
    notify: Notify,
    ws_addr: String,
    /// chat.postMessage burst and refill per second per channel; `None`: unlimited.
    rate: Mutex<Option<(f64, f64)>>,
    /// Where the app's HTTP endpoints are (HTTP Events mode).
    app_base: Mutex<Option<String>>,
}

pub struct FakeSlack {
    pub base: String,
    pub api_url: String,
    pub shared: Arc<Shared>,
    http: reqwest::Client,
}

fn ok(v: Value) -> Response {
    let mut v = v;
    v["ok"] = json!(true);
    Json(v).into_response()
}

fn slack_error(code: &str) -> Response {
    Json(json!({ "ok": false, "error": code })).into_response()
}

impl Shared {
    fn record(&self, method: &str, body: &Value, status: u16, error: Option<&str>, at: Instant) {
        self.inner.lock().unwrap().calls.push(ApiCall {
            method: method.to_string(),
            body: body.clone(),
            status,
            error: error.map(str::to_string),
            at,
        });
        self.notify.notify_waiters();
    }

    /// Message timestamps as Slack makes them: Unix time with microseconds, unique and
    /// increasing per workspace.
    fn next_ts(inner: &mut Inner) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        inner.next_ts = now.max(inner.next_ts + 1);
        format!(
            "{}.{:06}",
            inner.next_ts / 1_000_000,
            inner.next_ts % 1_000_000
        )
    }

    fn next_id(&self, prefix: &str) -> String {
        let mut i = self.inner.lock().unwrap();
        i.next_id += 1;
        format!("{prefix}{}", i.next_id)
    }

    /// Sends (or queues, while disconnected) an envelope; returns its id.
    fn envelope(&self, kind: &str, payload: Value) -> String {
        let id = self.next_id("env-");
        let mut i = self.inner.lock().unwrap();
        let frame = json!({
            "envelope_id": id, "type": kind, "payload": payload,
            "accepts_response_payload": kind != "events_api", "retry_attempt": 0,
        });
        let lost = kind == "events_api" && i.losing_events;
        if let Some(c) = i.socket.as_ref().filter(|_| !lost) {
            let _ = c.tx.send(frame.to_string());
        }
        let deliveries = u32::from(i.socket.is_some() && !lost);
        i.envelopes.push(Envelope {
            id: id.clone(),
            kind: kind.to_string(),
            payload,
            deliveries,
            sent_at: Instant::now(),
            ack: None,
            acked_at: None,
            lost,
        });
        id
    }
}

/// Block Kit limits from specs/README.md; `Err` is the Slack error code.
pub fn check_blocks(blocks: &[Value]) -> Result<(), String> {
    let len = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
    if blocks.len() > 50 {
        return Err("invalid_blocks".into());
    }
    for b in blocks {
        let bad = match b["type"].as_str() {
            Some("header") => b["text"]["type"] != "plain_text" || len(&b["text"]["text"]) > 150,
            Some("section") => {
                b.get("text")
                    .is_some_and(|t| len(&t["text"]) > 3000 || len(&t["text"]) == 0)
                    || b.get("fields").is_some_and(|f| {
                        let f = f.as_array().cloned().unwrap_or_default();
                        f.len() > 10 || f.iter().any(|x| len(&x["text"]) > 2000)
                    })
                    || (b.get("text").is_none() && b.get("fields").is_none())
            }
            Some("context") => {
                let e = b["elements"].as_array().cloned().unwrap_or_default();
                e.is_empty() || e.len() > 10 || e.iter().any(|x| len(&x["text"]) > 3000)
            }
            Some("actions") => {
                let e = b["elements"].as_array().cloned().unwrap_or_default();
                e.is_empty()
                    || e.len() > 25
                    || e.iter().any(|x| {
                        len(&x["text"]["text"]) > 75
                            || len(&x["action_id"]) > 255
                            || len(&x["value"]) > 2000
                            || len(&x["url"]) > 3000
                    })
            }
            Some("divider") => false,
            _ => true,
        };
        if bad || len(&b["block_id"]) > 255 {
            return Err("invalid_blocks".into());
        }
    }
    Ok(())
}

/// How Slack reads the control characters of mrkdwn (specs: "Escaping text"): `&` starts one
/// of `&amp;` `&lt;` `&gt;`, `<` starts a link or mention (`<http…>`, `<mailto:…>`, `<@U…>`,
/// `<#C…>`, `<!…>`) closed by `>`. Slack accepts anything, but bare ones render as something
/// else than what was meant (a cut entity shows as `&l`, `<category>` as a broken link): `Err`
/// names the first one.
pub fn check_mrkdwn(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(i) = rest.find(['&', '<', '>']) {
        let tail = &rest[i..];
        let step = match tail.as_bytes()[0] {
            b'&' => ["&amp;", "&lt;", "&gt;"]
                .iter()
                .find(|e| tail.starts_with(*e))
                .map(|e| e.len())
                .ok_or_else(|| format!("bare `&` at {:?}", truncate(tail)))?,
            b'<' => {
                let end = tail
                    .find('>')
                    .filter(|e| !tail[1..*e].contains('<'))
                    .ok_or_else(|| format!("unclosed `<` at {:?}", truncate(tail)))?;
                let inner = &tail[1..end];
                let known = ["http://", "https://", "mailto:", "@", "#", "!"]
                    .iter()
                    .any(|p| inner.starts_with(p));
                if !known {
                    return Err(format!("`<{inner}>` is no link or mention"));
                }
                end + 1
            }
            _ => return Err(format!("bare `>` at {:?}", truncate(tail))),
        };
        rest = &tail[step..];
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(20).collect()
}

/// Every mrkdwn text of a message: its blocks' `mrkdwn` texts and fields.
pub fn mrkdwn_texts(blocks: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if m.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                    if let Some(t) = m.get("text").and_then(Value::as_str) {
                        out.push(t.to_string());
                    }
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(blocks, &mut out);
    out
}

/// The bot scopes the app manifest (`deploy/slack-app-manifest.yml`) grants.
pub fn manifest_bot_scopes() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/slack-app-manifest.yml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut in_bot = false;
    let mut scopes = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t == "bot:" {
            in_bot = true;
            continue;
        }
        if !in_bot || t.is_empty() || t.starts_with('#') {
            continue;
        }
        match t.strip_prefix("- ") {
            Some(s) => scopes.push(s.trim().to_string()),
            None => break,
        }
    }
    scopes
}

/// The scopes the Web API spec lists for `method` (any one of them is enough), bot-token
/// spelling (`chat:write:bot` is `chat:write`); `None` when the spec does not list the method,
/// empty when it needs none.
pub fn spec_scopes(method: &str) -> Option<Vec<String>> {
    static SPEC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        // The shared specs sit next to the repository (DESIGN.md: `../shared/specs`).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/specs/slack/web-api-openapi-v2.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).unwrap_or(json!({}))
    });
    let ops = spec["paths"].get(format!("/{method}"))?.as_object()?;
    let mut out = Vec::new();
    for op in ops.values() {
        for sec in op["security"].as_array().into_iter().flatten() {
            for s in sec["slackAuth"].as_array().into_iter().flatten() {
                let s = s.as_str().unwrap_or("");
                let s = match s {
                    "none" | "chat:write:user" => continue,
                    "chat:write:bot" => "chat:write",
                    other => other,
                };
                if !out.iter().any(|x| x == s) {
                    out.push(s.to_string());
                }
            }
        }
    }
    Some(out)
}

/// Like Slack: a bot-token method needs one of its scopes granted (the manifest's).
fn missing_scope(method: &str) -> Option<String> {
    let needed = spec_scopes(method)?;
    if needed.is_empty() {
        return None;
    }
    let granted = manifest_bot_scopes();
    (!needed.iter().any(|n| granted.contains(n))).then(|| "missing_scope".to_string())
}

fn bearer(h: &HeaderMap) -> Option<String> {
    h.get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

async fn api(
    State(s): State<Arc<Shared>>,
    Path(method): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let at = Instant::now();
    let mut args: Value = if body.is_empty() {
        json!({})
    } else if headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"))
    {
        serde_json::from_slice(&body).unwrap_or(json!({}))
    } else {
        let m: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        json!(m)
    };
    for (k, v) in query {
        args[k] = json!(v);
    }
    let token = bearer(&headers);
    let want = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    if token.as_deref() != Some(want) {
        let code = match token.as_deref() {
            Some(t) if t == BOT_TOKEN || t == APP_TOKEN => "not_allowed_token_type",
            Some(_) => "invalid_auth",
            None => "not_authed",
        };
        s.record(&method, &args, 200, Some(code), at);
        return slack_error(code);
    }
    if let Some(code) = missing_scope(&method) {
        s.record(&method, &args, 200, Some(&code), at);
        return slack_error(&code);
    }
    let r = call(&s, &method, &args);
    match &r {
        Ok(_) => s.record(&method, &args, 200, None, at),
        Err(Reject::Error(code)) => s.record(&method, &args, 200, Some(code), at),
        Err(Reject::RateLimited) => s.record(&method, &args, 429, Some("ratelimited"), at),
        Err(Reject::ServerError) => s.record(&method, &args, 500, Some("internal_error"), at),
    }
    match r {
        Ok(v) => ok(v),
        Err(Reject::Error(code)) => slack_error(&code),
        Err(Reject::ServerError) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Err(Reject::RateLimited) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({ "ok": false, "error": "ratelimited" })),
        )
            .into_response(),
    }
}

enum Reject {
    Error(String),
    RateLimited,
    /// HTTP 500 (after the message was stored).
    ServerError,
}

fn err<T>(code: &str) -> Result<T, Reject> {
    Err(Reject::Error(code.to_string()))
}

/// A Slack `ts` (`1714557731.000200`) as a number pair, in time order.
fn order(ts: &str) -> (u64, u64) {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    (secs.parse().unwrap_or(0), micros.parse().unwrap_or(0))
}

fn call(s: &Shared, method: &str, a: &Value) -> Result<Value, Reject> {
    let str_of = |k: &str| a[k].as_str().map(str::to_string);
    match method {
        "auth.test" => Ok(json!({
            "url": "https://incidentd-test.slack.com/", "team": "Test", "team_id": "T1",
            "user": "incidentd", "user_id": BOT_USER, "bot_id": BOT_ID,
        })),
        "apps.connections.open" => {
            Ok(json!({ "url": format!("ws://{}/link/?ticket={}", s.ws_addr, s.next_id("t")) }))
        }
        "chat.postMessage" | "chat.update" | "chat.postEphemeral" => {
            let channel = str_of("channel").ok_or(Reject::Error("channel_not_found".into()))?;
            let mut i = s.inner.lock().unwrap();
            if !i.channels.contains(&channel) {
                return err("channel_not_found");
            }
            let text = str_of("text").unwrap_or_default();
            let blocks = a["blocks"].as_array().cloned().unwrap_or_default();
            if text.is_empty() && blocks.is_empty() {
                return err("no_text");
            }
            if text.chars().count() > 40_000 {
                return err("msg_too_long");
            }
            check_blocks(&blocks).map_err(Reject::Error)?;
            match method {
                "chat.postEphemeral" => {
                    if str_of("user").is_none() {
                        return err("user_not_in_channel");
                    }
                    i.ephemerals.push(a.clone());
                    Ok(json!({ "message_ts": Shared::next_ts(&mut i) }))
                }
                "chat.update" => {
                    let ts = str_of("ts").unwrap_or_default();
                    let Some(m) = i
                        .messages
                        .iter_mut()
                        .find(|m| m.channel == channel && m.ts == ts)
                    else {
                        return err("message_not_found");
                    };
                    if m.user.as_deref() != Some(BOT_USER) {
                        return err("cant_update_message");
                    }
                    m.text = text;
                    m.blocks = blocks;
                    m.edits += 1;
                    Ok(
                        json!({ "channel": channel, "ts": ts, "text": m.text, "message": {"text": m.text} }),
                    )
                }
                _ => {
                    if let Some((burst, per_sec)) = *s.rate.lock().unwrap() {
                        let now = Instant::now();
                        let b = i.buckets.entry(channel.clone()).or_insert((burst, now));
                        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * per_sec).min(burst);
                        b.1 = now;
                        if b.0 < 1.0 {
                            return Err(Reject::RateLimited);
                        }
                        b.0 -= 1.0;
                    }
                    if i.storm > 0 {
                        i.storm -= 1;
                        return Err(Reject::RateLimited);
                    }
                    let thread_ts = str_of("thread_ts");
                    if let Some(t) = &thread_ts {
                        if !i
                            .messages
                            .iter()
                            .any(|m| m.channel == channel && &m.ts == t)
                        {
                            return err("thread_not_found");
                        }
                    }
                    let ts = Shared::next_ts(&mut i);
                    i.messages.push(FakeMessage {
                        channel: channel.clone(),
                        ts: ts.clone(),
                        thread_ts: thread_ts.clone(),
                        user: Some(BOT_USER.into()),
                        bot_id: Some(BOT_ID.into()),
                        text: text.clone(),
                        blocks: blocks.clone(),
                        metadata: a["metadata"].clone(),
                        edits: 0,
                        raw: Value::Null,
                    });
                    let event = json!({
                        "type": "message", "channel": channel, "user": BOT_USER, "bot_id": BOT_ID,
                        "text": text, "ts": ts, "thread_ts": thread_ts, "blocks": blocks,
                    });
                    let lose = i.lose_answers > 0
                        && i.lose_kind.as_deref().is_none_or(|k| {
                            a["metadata"]["event_payload"]["kind"].as_str() == Some(k)
                        });
                    if lose {
                        i.lose_answers -= 1;
                    }
                    drop(i);
                    // Slack tells the app about its own messages too: the bot must ignore them.
                    s.event(event);
                    if lose {
                        return Err(Reject::ServerError);
                    }
                    Ok(
                        json!({ "channel": channel, "ts": ts, "message": { "text": text, "ts": ts, "user": BOT_USER, "bot_id": BOT_ID } }),
                    )
                }
            }
        }
        // Oldest first: the parent, then its replies; `oldest`/`latest` (exclusive unless
        // `inclusive`) filter the replies (the parent always leads the first page); `limit`
        // (default and at most 1000) a page, `cursor` for the next, as Slack pages them.
        "conversations.replies" => {
            let all_metadata = include_all_metadata(a);
            let channel = str_of("channel").unwrap_or_default();
            let ts = str_of("ts").unwrap_or_default();
            let page = page_of(a, 1000, 1000, "next_reply:")?;
            let i = s.inner.lock().unwrap();
            if !i.channels.contains(&channel) {
                return err("channel_not_found");
            }
            let all: Vec<Value> = i
                .messages
                .iter()
                .filter(|m| m.channel == channel && (m.ts == ts || m.thread_ts.as_deref() == Some(&ts)))
                .filter(|m| m.ts == ts || page.within(&m.ts))
                .map(|m| with_metadata(json!({ "type": "message", "ts": m.ts, "thread_ts": m.thread_ts, "user": m.user, "bot_id": m.bot_id, "text": m.text, "blocks": m.blocks }), m, all_metadata))
                .collect();
            if all.is_empty() {
                return err("thread_not_found");
            }
            Ok(page.answer(&all))
        }
        // Newest first, top-level messages only; `oldest`/`latest` exclusive unless
        // `inclusive`; `limit` (default 100, at most 999) a page, `cursor` for the next.
        "conversations.history" => {
            let all_metadata = include_all_metadata(a);
            let channel = str_of("channel").unwrap_or_default();
            let page = page_of(a, 100, 999, "next_ts:")?;
            let i = s.inner.lock().unwrap();
            if !i.channels.contains(&channel) {
                return err("channel_not_found");
            }
            let all: Vec<Value> = i
                .messages
                .iter()
                .rev()
                .filter(|m| m.channel == channel && m.thread_ts.as_ref().is_none_or(|t| *t == m.ts))
                .filter(|m| page.within(&m.ts))
                .map(|m| {
                    let v = if m.raw.is_null() {
                        json!({ "type": "message", "ts": m.ts, "user": m.user, "bot_id": m.bot_id, "text": m.text, "blocks": m.blocks })
                    } else {
                        m.raw.clone()
                    };
                    with_metadata(v, m, all_metadata)
                })
                .collect();
            Ok(page.answer(&all))
        }
        "usergroups.list" => {
            let i = s.inner.lock().unwrap();
            let groups: Vec<Value> = i
                .usergroups
                .iter()
                .map(|(id, users)| {
                    let mut g = json!({
                        "id": id, "team_id": "T1", "is_usergroup": true, "name": id, "handle": id.to_lowercase(),
                        "is_external": false, "date_create": 1700000000, "date_update": 1700000000,
                        "date_delete": 0, "created_by": "UADMIN", "prefs": { "channels": [], "groups": [] },
                        "user_count": users.len(),
                    });
                    if a["include_users"] == "true" {
                        g["users"] = json!(users);
                    }
                    g
                })
                .collect();
            Ok(json!({ "usergroups": groups }))
        }
        "users.info" => Ok(json!({ "user": { "id": str_of("user"), "name": str_of("user") } })),
        _ => err("unknown_method"),
    }
}

impl Shared {
    /// Delivers an Events API message event to the app (socket or signed HTTP).
    fn event(self: &Shared, event: Value) -> String {
        let event_id = self.next_id("Ev");
        let body = json!({
            "token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
            "event_id": event_id, "event_time": 1700000000, "event": event,
        });
        let app = self.app_base.lock().unwrap().clone();
        match app {
            None => {
                self.envelope("events_api", body);
            }
            Some(base) => {
                // HTTP mode: fire and forget, like Slack (tests look at the effects).
                tokio::spawn(async move {
                    let _ = signed_post(
                        &reqwest::Client::new(),
                        &format!("{base}/slack/events"),
                        "application/json",
                        body.to_string(),
                        None,
                    )
                    .await;
                });
            }
        }
        event_id
    }
}

/// POSTs a body signed like Slack does; `forge` replaces the timestamp and/or secret.
pub async fn signed_post(
    http: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: String,
    forge: Option<(i64, &str)>,
) -> (u16, String) {
    let (ts, secret) = forge.unwrap_or((chrono::Utc::now().timestamp(), SIGNING_SECRET));
    let ts = ts.to_string();
    let sig = incidentd::chat::slack::signature::sign(secret, &ts, body.as_bytes());
    let r = http
        .post(url)
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body)
        .send()
        .await
        .expect("app reachable");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// An incoming webhook (what Alertmanager's `slack_configs` posts to its `api_url`): a JSON
/// message (or a form with a JSON `payload`) with `text`, `blocks` and/or `attachments`,
/// answered like Slack: 200 `ok`, or 400 `invalid_payload` / `no_text` / `invalid_blocks`,
/// 404 `no_service` for an unknown URL. The message lands in the webhook's channel as a
/// `bot_message` with the webhook's `bot_id`, and the app gets its `message` event.
async fn incoming_webhook(
    State(s): State<Arc<Shared>>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let at = Instant::now();
    let plain = |status: StatusCode, text: &'static str| {
        (status, [("content-type", "text/html")], text).into_response()
    };
    let found = s.inner.lock().unwrap().hooks.get(&hook).cloned();
    let Some((channel, bot_id)) = found else {
        s.record(
            "incoming-webhook",
            &Value::Null,
            404,
            Some("no_service"),
            at,
        );
        return plain(StatusCode::NOT_FOUND, "no_service");
    };
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let parsed: Option<Value> = if json_body {
        serde_json::from_slice(&body).ok()
    } else {
        form_urlencoded::parse(&body)
            .find(|(k, _)| k == "payload")
            .and_then(|(_, v)| serde_json::from_str(&v).ok())
    };
    let Some(msg) = parsed.filter(Value::is_object) else {
        s.record(
            "incoming-webhook",
            &Value::Null,
            400,
            Some("invalid_payload"),
            at,
        );
        return plain(StatusCode::BAD_REQUEST, "invalid_payload");
    };
    let text = msg["text"].as_str().unwrap_or("").to_string();
    let blocks = msg["blocks"].as_array().cloned().unwrap_or_default();
    let mut attachments = msg["attachments"].as_array().cloned().unwrap_or_default();
    if text.trim().is_empty() && blocks.is_empty() && attachments.is_empty() {
        s.record("incoming-webhook", &msg, 400, Some("no_text"), at);
        return plain(StatusCode::BAD_REQUEST, "no_text");
    }
    if attachments.len() > 100 || check_blocks(&blocks).is_err() {
        s.record("incoming-webhook", &msg, 400, Some("invalid_blocks"), at);
        return plain(StatusCode::BAD_REQUEST, "invalid_blocks");
    }
    // Slack numbers the attachments of a stored message.
    for (i, a) in attachments.iter_mut().enumerate() {
        a["id"] = json!(i + 1);
    }
    let username = msg["username"]
        .as_str()
        .unwrap_or("incoming-webhook")
        .to_string();
    let ts = {
        let mut i = s.inner.lock().unwrap();
        let ts = Shared::next_ts(&mut i);
        let event = json!({
            "type": "message", "subtype": "bot_message", "bot_id": bot_id, "username": username,
            "text": text, "ts": ts, "attachments": attachments, "blocks": blocks,
        });
        i.messages.push(FakeMessage {
            channel: channel.clone(),
            ts: ts.clone(),
            thread_ts: None,
            user: None,
            bot_id: Some(bot_id.clone()),
            text: text.clone(),
            blocks: blocks.clone(),
            metadata: Value::Null,
            edits: 0,
            raw: event,
        });
        ts
    };
    s.record("incoming-webhook", &msg, 200, None, at);
    let mut event = json!({
        "type": "message", "subtype": "bot_message", "channel": channel, "bot_id": bot_id,
        "username": username, "text": text, "ts": ts, "attachments": attachments,
    });
    if !blocks.is_empty() {
        event["blocks"] = json!(blocks);
    }
    s.event(event);
    plain(StatusCode::OK, "ok")
}

async fn serve_socket(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
            let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
            {
                let mut i = shared.inner.lock().unwrap();
                i.connections += 1;
                let hello = json!({ "type": "hello", "num_connections": 1,
                    "connection_info": { "app_id": "A1" }, "debug_info": { "host": "fake" } });
                let _ = out_tx.send(hello.to_string());
                // Slack redelivers what was never acknowledged.
                for e in i
                    .envelopes
                    .iter_mut()
                    .filter(|e| e.ack.is_none() && !e.lost)
                {
                    e.deliveries += 1;
                    let frame = json!({ "envelope_id": e.id, "type": e.kind, "payload": e.payload,
                        "accepts_response_payload": e.kind != "events_api", "retry_attempt": e.deliveries - 1,
                        "retry_reason": "timeout" });
                    let _ = out_tx.send(frame.to_string());
                }
                if let Some(mut old) = i.socket.replace(Conn {
                    tx: out_tx,
                    kill: Some(kill_tx),
                }) {
                    if let Some(k) = old.kill.take() {
                        let _ = k.send(());
                    }
                }
            }
            shared.notify.notify_waiters();
            loop {
                tokio::select! {
                    _ = &mut kill_rx => break,
                    out = out_rx.recv() => match out {
                        Some(t) => if tx.send(Message::Text(t.into())).await.is_err() { break },
                        None => break,
                    },
                    frame = rx.next() => match frame {
                        Some(Ok(Message::Text(t))) => {
                            let Ok(ack) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                            let mut i = shared.inner.lock().unwrap();
                            if let Some(e) = i.envelopes.iter_mut().find(|e| Some(e.id.as_str()) == ack["envelope_id"].as_str()) {
                                if e.ack.is_none() {
                                    e.ack = Some(ack.clone());
                                    e.acked_at = Some(Instant::now());
                                }
                            }
                            drop(i);
                            shared.notify.notify_waiters();
                        }
                        Some(Ok(Message::Ping(p))) => { let _ = tx.send(Message::Pong(p)).await; }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
            // Dropping the stream closes the TCP connection without a close frame.
        });
    }
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_addr = ws.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                channels: [ALERTS, INCIDENTS, RANDOM].map(String::from).into(),
                ..Default::default()
            }),
            notify: Notify::new(),
            ws_addr,
            rate: Mutex::new(Some((3.0, 1.0))),
            app_base: Mutex::new(None),
        });
        tokio::spawn(serve_socket(shared.clone(), ws));
        let app = Router::new()
            .route("/api/{method}", post(api).get(api))
            .route("/health", get(|| async { "ok" }))
            .route("/services/{*hook}", post(incoming_webhook))
            .route(
                "/actions/{ts}",
                post(
                    |State(s): State<Arc<Shared>>, Json(v): Json<Value>| async move {
                        s.inner.lock().unwrap().responses.push(v);
                        s.notify.notify_waiters();
                        Json(json!({ "ok": true }))
                    },
                ),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeSlack {
            api_url: format!("{base}/api"),
            base,
            shared,
            http: reqwest::Client::new(),
        }
    }

    /// A user group (`S…`) with its members.
    pub fn add_usergroup(&self, id: &str, users: &[&str]) {
        self.shared.inner.lock().unwrap().usergroups.push((
            id.to_string(),
            users.iter().map(|u| u.to_string()).collect(),
        ));
    }

    /// An incoming webhook posting into `channel` (as a bot of its own); returns its URL.
    pub fn incoming_webhook(&self, channel: &str) -> String {
        let n = self.next_hook();
        let path = format!("T1/BHOOK{n}/secret{n}");
        self.shared
            .inner
            .lock()
            .unwrap()
            .hooks
            .insert(path.clone(), (channel.to_string(), format!("BHOOK{n}")));
        format!("{}/services/{path}", self.base)
    }

    fn next_hook(&self) -> u64 {
        let mut i = self.shared.inner.lock().unwrap();
        i.next_id += 1;
        i.next_id
    }

    /// HTTP Events mode: events go to the app's endpoints, signed.
    pub fn use_http(&self, app_base: &str) {
        *self.shared.app_base.lock().unwrap() = Some(app_base.to_string());
    }

    /// chat.postMessage per channel: `burst` then `per_sec`; `None` turns the limit off.
    pub fn set_rate(&self, rate: Option<(f64, f64)>) {
        *self.shared.rate.lock().unwrap() = rate;
    }

    /// The next `n` chat.postMessage calls are stored but answered 500, as when Slack's answer
    /// is lost on the way back.
    pub fn lose_answers(&self, n: u32) {
        let mut i = self.shared.inner.lock().unwrap();
        i.lose_answers = n;
        i.lose_kind = None;
    }

    /// As `lose_answers`, for the next `n` posts of this kind (`card`, `note`, `report`) only.
    pub fn lose_answers_of(&self, kind: &str, n: u32) {
        let mut i = self.shared.inner.lock().unwrap();
        i.lose_answers = n;
        i.lose_kind = Some(kind.to_string());
    }

    /// The next `n` chat.postMessage calls get 429 + Retry-After.
    pub fn storm(&self, n: u32) {
        self.shared.inner.lock().unwrap().storm = n;
    }

    pub fn calls(&self) -> Vec<ApiCall> {
        self.shared.inner.lock().unwrap().calls.clone()
    }

    pub fn calls_of(&self, method: &str) -> Vec<ApiCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    pub fn messages(&self) -> Vec<FakeMessage> {
        self.shared.inner.lock().unwrap().messages.clone()
    }

    pub fn ephemerals(&self) -> Vec<Value> {
        self.shared.inner.lock().unwrap().ephemerals.clone()
    }

    /// What was posted to interactions' `response_url`s.
    pub fn responses(&self) -> Vec<Value> {
        self.shared.inner.lock().unwrap().responses.clone()
    }

    pub fn envelopes(&self) -> Vec<Envelope> {
        self.shared.inner.lock().unwrap().envelopes.clone()
    }

    pub fn connections(&self) -> u32 {
        self.shared.inner.lock().unwrap().connections
    }

    /// Cards the bot posted (messages with the card header), in order.
    pub fn cards(&self) -> Vec<FakeMessage> {
        self.messages()
            .into_iter()
            .filter(|m| {
                m.user.as_deref() == Some(BOT_USER)
                    && m.blocks.iter().any(|b| b["type"] == "header")
            })
            .collect()
    }

    /// Waits (bounded) until `pred` holds over the fake's state.
    pub async fn wait(&self, what: &str, pred: impl Fn(&FakeSlack) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.shared.notify.notified();
            if pred(self) {
                return;
            }
            // Re-check periodically too: some conditions change without a notification.
            if tokio::time::timeout_at(
                deadline.min(Instant::now() + Duration::from_millis(200)),
                notified,
            )
            .await
            .is_err()
                && Instant::now() >= deadline
            {
                panic!("timed out waiting for {what}");
            }
        }
    }

    /// Waits until the bot's socket is connected (hello sent) `n` times in all.
    pub async fn wait_connected(&self, n: u32) {
        self.wait("socket connection", |f| {
            f.connections() >= n && f.shared.inner.lock().unwrap().socket.is_some()
        })
        .await;
    }

    /// Drops the Socket Mode connection abruptly (no close frame), as a network failure would.
    pub fn drop_socket(&self) {
        let mut i = self.shared.inner.lock().unwrap();
        if let Some(mut c) = i.socket.take() {
            if let Some(k) = c.kill.take() {
                let _ = k.send(());
            }
        }
    }

    /// While `on`, message events are never delivered, not even on reconnect: an outage longer
    /// than Slack's redelivery, where only the channel's history has the messages.
    pub fn lose_events(&self, on: bool) {
        self.shared.inner.lock().unwrap().losing_events = on;
    }

    /// Sends a `disconnect` envelope (Slack does this before rotating a connection).
    pub fn send_disconnect(&self) {
        let i = self.shared.inner.lock().unwrap();
        if let Some(c) = &i.socket {
            let _ = c
                .tx
                .send(json!({ "type": "disconnect", "reason": "refresh_requested" }).to_string());
        }
    }

    /// `n` people's messages in `channel` (replies in the thread `thread_ts` when set), stored
    /// without events (a busy channel or war-room thread as history shows it); returns their ts.
    pub fn add_messages(&self, channel: &str, thread_ts: Option<&str>, n: usize) -> Vec<String> {
        (0..n)
            .map(|k| {
                let ts = self.ts();
                let text = format!("looking at it ({k})");
                self.add_message(FakeMessage {
                    channel: channel.into(),
                    ts: ts.clone(),
                    thread_ts: thread_ts.map(String::from),
                    user: Some("UBOB".into()),
                    bot_id: None,
                    text: text.clone(),
                    blocks: vec![],
                    metadata: Value::Null,
                    edits: 0,
                    raw: json!({ "type": "message", "user": "UBOB", "text": text, "ts": ts, "thread_ts": thread_ts }),
                });
                ts
            })
            .collect()
    }

    fn add_message(&self, m: FakeMessage) {
        self.shared.inner.lock().unwrap().messages.push(m);
    }

    fn ts(&self) -> String {
        let mut i = self.shared.inner.lock().unwrap();
        Shared::next_ts(&mut i)
    }

    /// A bot (Alertmanager's `slack_configs`) posts attachments into a channel; returns its ts.
    pub fn post_bot_message(&self, channel: &str, username: &str, attachments: Value) -> String {
        let ts = self.ts();
        self.add_message(FakeMessage {
            channel: channel.into(),
            ts: ts.clone(),
            thread_ts: None,
            user: None,
            bot_id: Some("BALERTMANAGER".into()),
            text: String::new(),
            blocks: vec![],
            metadata: Value::Null,
            edits: 0,
            raw: json!({
                "type": "message", "subtype": "bot_message", "bot_id": "BALERTMANAGER",
                "username": username, "text": "", "ts": ts, "attachments": attachments,
            }),
        });
        self.shared.event(json!({
            "type": "message", "subtype": "bot_message", "channel": channel, "bot_id": "BALERTMANAGER",
            "username": username, "text": "", "ts": ts, "attachments": attachments,
        }));
        ts
    }

    /// A bot posts Block Kit blocks only (no text, no attachments); returns its ts.
    pub fn post_bot_blocks(&self, channel: &str, username: &str, blocks: Value) -> String {
        let ts = self.ts();
        self.add_message(FakeMessage {
            channel: channel.into(),
            ts: ts.clone(),
            thread_ts: None,
            user: None,
            bot_id: Some("BGRAFANA".into()),
            text: String::new(),
            blocks: blocks.as_array().cloned().unwrap_or_default(),
            metadata: Value::Null,
            edits: 0,
            raw: json!({
                "type": "message", "subtype": "bot_message", "bot_id": "BGRAFANA",
                "username": username, "text": "", "ts": ts, "blocks": blocks,
            }),
        });
        self.shared.event(json!({
            "type": "message", "subtype": "bot_message", "channel": channel, "bot_id": "BGRAFANA",
            "username": username, "text": "", "ts": ts, "blocks": blocks,
        }));
        ts
    }

    /// A person posts a message (in a thread when `thread_ts` is set); returns its ts.
    pub fn post_user_message(
        &self,
        channel: &str,
        user: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> String {
        let ts = self.ts();
        self.add_message(FakeMessage {
            channel: channel.into(),
            ts: ts.clone(),
            thread_ts: thread_ts.map(String::from),
            user: Some(user.into()),
            bot_id: None,
            text: text.into(),
            blocks: vec![],
            metadata: Value::Null,
            edits: 0,
            raw: json!({
                "type": "message", "user": user, "text": text, "ts": ts, "thread_ts": thread_ts,
            }),
        });
        let blocks = json!([{ "type": "rich_text", "elements": [] }]);
        self.shared.event(json!({
            "type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
            "thread_ts": thread_ts, "blocks": blocks, "channel_type": "channel",
        }));
        ts
    }

    /// Delivers a raw event callback body again (a Slack retry of the same `event_id`).
    pub fn redeliver_event(&self, body: Value) {
        self.shared.envelope("events_api", body);
    }

    /// The `block_actions` payload of a click on `action_id` on the message `ts` in `channel`.
    pub fn click_payload(
        &self,
        user: &str,
        channel: &str,
        ts: &str,
        thread_ts: Option<&str>,
        action_id: &str,
    ) -> Value {
        json!({
            "type": "block_actions",
            "user": { "id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": "T1" },
            "api_app_id": "A1", "token": "legacy", "trigger_id": "1.2.3",
            "team": { "id": "T1", "domain": "test" },
            "container": { "type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false, "thread_ts": thread_ts },
            "channel": { "id": channel, "name": "alerts" },
            "message": { "type": "message", "ts": ts, "thread_ts": thread_ts, "user": BOT_USER },
            "response_url": format!("{}/actions/{}", self.base, ts),
            "actions": [{ "type": "button", "action_id": action_id, "block_id": "incidentd:actions", "action_ts": "1700000001.000001",
                          "text": { "type": "plain_text", "text": "button" } }],
        })
    }

    /// Delivers a `block_actions` payload over the socket; returns the envelope id.
    pub fn click_raw(&self, payload: Value) -> String {
        self.shared.envelope("interactive", payload)
    }

    /// A user clicks a button over the socket; returns the envelope id.
    pub fn click(&self, user: &str, card: &FakeMessage, action_id: &str) -> String {
        let p = self.click_payload(
            user,
            &card.channel,
            &card.ts,
            card.thread_ts.as_deref(),
            action_id,
        );
        self.shared.envelope("interactive", p)
    }

    fn command_fields(user: &str, text: &str) -> Vec<(&'static str, String)> {
        vec![
            ("token", "legacy".into()),
            ("team_id", "T1".into()),
            ("team_domain", "test".into()),
            ("channel_id", ALERTS.into()),
            ("channel_name", "alerts".into()),
            ("user_id", user.into()),
            ("user_name", user.to_lowercase()),
            ("command", "/incident".into()),
            ("text", text.into()),
            ("api_app_id", "A1".into()),
            ("response_url", "http://127.0.0.1:9/commands/1".into()),
            ("trigger_id", "1.2.3".into()),
        ]
    }

    /// `/incident <text>` over the socket; returns the ack's response payload.
    pub async fn command(&self, user: &str, text: &str) -> Value {
        let payload: serde_json::Map<String, Value> = Self::command_fields(user, text)
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let id = self
            .shared
            .envelope("slash_commands", Value::Object(payload));
        self.wait("the command's ack", |f| {
            f.envelopes().iter().any(|e| e.id == id && e.ack.is_some())
        })
        .await;
        let e = self.envelopes().into_iter().find(|e| e.id == id).unwrap();
        let payload = e.ack.unwrap()["payload"].clone();
        // Slack shows at most 40 000 characters of a message's text.
        let chars = payload["text"].as_str().map_or(0, |t| t.chars().count());
        assert!(
            chars <= 40_000,
            "the command's answer has {chars} characters"
        );
        payload
    }

    /// `/incident <text>` as a signed HTTP request to the app; returns (status, JSON body).
    pub async fn command_http(&self, app_base: &str, user: &str, text: &str) -> (u16, Value) {
        let body = form(&Self::command_fields(user, text));
        let (s, b) = signed_post(
            &self.http,
            &format!("{app_base}/slack/commands"),
            "application/x-www-form-urlencoded",
            body,
            None,
        )
        .await;
        (s, serde_json::from_str(&b).unwrap_or(Value::Null))
    }
}

/// URL-encodes form fields.
pub fn form(fields: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

/// Alertmanager's default `slack_configs` attachment for one firing alert.
pub fn am_attachments(alertname: &str, service: &str, severity: &str, firing: bool) -> Value {
    let title = if firing {
        format!("[FIRING:1] {alertname} ({service} {severity})")
    } else {
        format!("[RESOLVED] {alertname} ({service} {severity})")
    };
    json!([{
        "id": 1, "color": if firing { "danger" } else { "good" },
        "title": title, "title_link": "http://alertmanager:9093/#/alerts?receiver=slack",
        "fallback": title,
        "text": format!("*Alert:* {alertname} on {service} - `{severity}`\n*Description:* {service} is failing\n*Details:*\n• *alertname:* `{alertname}`\n• *service:* `{service}`\n• *severity:* `{severity}`"),
        "mrkdwn_in": ["fallback", "pretext", "text"],
    }])
}

/// Polls `check` until it returns `Some` (bounded: panics after 30 s). For state the fake does
/// not see, such as the app's read API.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The paging arguments of conversations.history/replies: `oldest`/`latest` (exclusive unless
/// `inclusive`), `limit` (`default` when absent, at most `max`), and the offset a `cursor`
/// made by this fake (`prefix` + offset) stands for.
struct Page {
    oldest: Option<(u64, u64)>,
    latest: Option<(u64, u64)>,
    inclusive: bool,
    limit: usize,
    from: usize,
    prefix: &'static str,
}

impl Page {
    /// Whether a message at `ts` is within `oldest`/`latest`.
    fn within(&self, ts: &str) -> bool {
        let t = order(ts);
        let inc = self.inclusive;
        self.oldest.is_none_or(|o| if inc { t >= o } else { t > o })
            && self.latest.is_none_or(|l| if inc { t <= l } else { t < l })
    }

    /// This page of `all`, with `has_more` and the cursor of the next.
    fn answer(&self, all: &[Value]) -> Value {
        let (from, limit) = (self.from, self.limit);
        let page: Vec<Value> = all.iter().skip(from).take(limit).cloned().collect();
        let more = all.len() > from + limit;
        let next = if more {
            format!("{}{}", self.prefix, from + limit)
        } else {
            String::new()
        };
        json!({ "messages": page, "has_more": more, "response_metadata": { "next_cursor": next } })
    }
}

fn page_of(a: &Value, default: usize, max: usize, prefix: &'static str) -> Result<Page, Reject> {
    let str_of = |k: &str| a[k].as_str().map(str::to_string);
    let ts_of = |k: &str| str_of(k).map(|t| order(&t));
    let limit = match str_of("limit").map(|l| l.parse::<usize>()) {
        None => default,
        Some(Ok(n)) if n >= 1 => n.min(max),
        _ => return err("invalid_limit"),
    };
    let from = match str_of("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match c.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return err("invalid_cursor"),
        },
    };
    Ok(Page {
        oldest: ts_of("oldest"),
        latest: ts_of("latest"),
        inclusive: matches!(str_of("inclusive").as_deref(), Some("true" | "1")),
        limit,
        from,
        prefix,
    })
}

/// `include_all_metadata` as a form field ("true"/"1") or a JSON boolean.
fn include_all_metadata(a: &Value) -> bool {
    matches!(&a["include_all_metadata"], Value::Bool(true))
        || matches!(a["include_all_metadata"].as_str(), Some("true" | "1"))
}

/// Slack returns a message's `metadata` (as posted: `event_type`, `event_payload`) from
/// conversations.history and conversations.replies only when asked with
/// `include_all_metadata`.
fn with_metadata(mut v: Value, m: &FakeMessage, all: bool) -> Value {
    if all && !m.metadata.is_null() {
        v["metadata"] = m.metadata.clone();
    }
    v
}
