//! A fake Discord on loopback that behaves like the platform where the bot can tell: REST
//! routes under `/api/v10` (bot-token checks, the documented embed/component/thread-name
//! limits answered with 400 code 50035, scripted 429s with a JSON `retry_after`, nonce dedupe,
//! "thread already exists" 160004) and a gateway WebSocket (HELLO, IDENTIFY → READY with
//! `application.id` and `resume_gateway_url`, heartbeat ACK, RESUME → replay + RESUMED, plain
//! JSON text frames). Tests post as users or webhooks, click buttons as members with roles, run
//! `/incident`, drop the connection, and read every request the bot made.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub const TOKEN: &str = "MTA5ODc2NTQzMjEwOTg3NjU0.GfakeX.fake-discord-token-for-tests-only";
pub const APP_ID: u64 = 900_000_000_000_000_001;
pub const BOT_ID: u64 = 900_000_000_000_000_002;
pub const GUILD: u64 = 800_000_000_000_000_001;
pub const ALERTS: u64 = 800_000_000_000_000_010;
pub const INCIDENTS: u64 = 800_000_000_000_000_011;
pub const WEBHOOK: u64 = 800_000_000_000_000_099;

/// One REST request the bot made, with what the fake answered.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub status: u16,
    pub at: Instant,
}

/// A message as the fake stores it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: u64,
    pub channel: u64,
    pub author: Value,
    pub content: String,
    pub embeds: Value,
    pub components: Value,
    pub webhook_id: Option<u64>,
    pub edits: u32,
}

enum Conn {
    Send(Value),
    Drop,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Req>,
    messages: HashMap<u64, Msg>,
    /// thread id → parent channel.
    threads: HashMap<u64, u64>,
    /// Text channels of the guild.
    channels: Vec<u64>,
    nonces: HashMap<(u64, String), u64>,
    next_id: u64,
    commands: HashMap<u64, Value>,
    /// The next this many bot REST calls get 429 with this `retry_after` (seconds).
    rate_limit: Option<(u32, f64)>,
    /// The next this many bot REST calls get this 5xx.
    outage: Option<(u32, u16)>,
    /// The next this many created messages are stored, but their answer is a 500.
    lose_answers: u32,
    session_id: String,
    /// Every dispatch of the session: (seq, frame).
    log: Vec<(u64, Value)>,
    seq: u64,
    conn: Option<mpsc::UnboundedSender<Conn>>,
    identifies: u32,
    resumes: u32,
    heartbeats: u32,
    /// When each dispatch was written to the socket (seq → instant).
    dispatched_at: HashMap<u64, Instant>,
    /// The seq of the MESSAGE_CREATE that carried each message id.
    message_seq: HashMap<u64, u64>,
    interactions: u64,
    /// Every IDENTIFY is answered with this close code (4014: the Message Content intent is
    /// not enabled for the app in the Developer Portal; 4004: the token is wrong).
    identify_close: Option<u16>,
    /// Sockets the fake closed with a close code.
    closes: u32,
    /// Incoming webhooks: id → (token, channel).
    hooks: HashMap<u64, (String, u64)>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
    ws_url: String,
}

/// The fake; dropping it stops nothing (its tasks end with the test runtime).
#[derive(Clone)]
pub struct FakeDiscord {
    pub base: String,
    pub ws_url: String,
    shared: Arc<Shared>,
}

fn discord_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({ "code": code, "message": message }).to_string(),
    )
        .into_response()
}

fn invalid_form(path: &str, what: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/json")],
        json!({
            "code": 50035,
            "message": "Invalid Form Body",
            "errors": { path: { "_errors": [{ "code": "BASE_TYPE_MAX_LENGTH", "message": what }] } }
        })
        .to_string(),
    )
        .into_response()
}

fn ok(v: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

/// The documented message limits (shared/specs/README.md): `Err` names the offending path.
pub fn check_message(body: &Value) -> Result<(), (String, String)> {
    let over = |path: &str, n: usize, max: usize| -> Result<(), (String, String)> {
        if n > max {
            Err((
                path.to_string(),
                format!("Must be {max} or fewer in length (got {n})."),
            ))
        } else {
            Ok(())
        }
    };
    over("content", chars(&body["content"]), 2000)?;
    if let Some(n) = body["nonce"].as_str() {
        over("nonce", n.chars().count(), 25)?;
    }
    let embeds = body["embeds"].as_array().cloned().unwrap_or_default();
    over("embeds", embeds.len(), 10)?;
    let mut total = 0;
    for (i, e) in embeds.iter().enumerate() {
        over(&format!("embeds.{i}.title"), chars(&e["title"]), 256)?;
        over(
            &format!("embeds.{i}.description"),
            chars(&e["description"]),
            4096,
        )?;
        over(
            &format!("embeds.{i}.footer.text"),
            chars(&e["footer"]["text"]),
            2048,
        )?;
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        over(&format!("embeds.{i}.fields"), fields.len(), 25)?;
        total += chars(&e["title"]) + chars(&e["description"]) + chars(&e["footer"]["text"]);
        for (j, f) in fields.iter().enumerate() {
            over(
                &format!("embeds.{i}.fields.{j}.name"),
                chars(&f["name"]),
                256,
            )?;
            over(
                &format!("embeds.{i}.fields.{j}.value"),
                chars(&f["value"]),
                1024,
            )?;
            if chars(&f["name"]) == 0 || chars(&f["value"]) == 0 {
                return Err((
                    format!("embeds.{i}.fields.{j}"),
                    "This field is required".into(),
                ));
            }
            total += chars(&f["name"]) + chars(&f["value"]);
        }
    }
    over("embeds", total, 6000)?;
    let rows = body["components"].as_array().cloned().unwrap_or_default();
    over("components", rows.len(), 5)?;
    for (i, r) in rows.iter().enumerate() {
        let buttons = r["components"].as_array().cloned().unwrap_or_default();
        over(&format!("components.{i}.components"), buttons.len(), 5)?;
        for (j, b) in buttons.iter().enumerate() {
            over(
                &format!("components.{i}.components.{j}.label"),
                chars(&b["label"]),
                80,
            )?;
            over(
                &format!("components.{i}.components.{j}.custom_id"),
                chars(&b["custom_id"]),
                100,
            )?;
        }
    }
    Ok(())
}

fn user(id: u64, name: &str, bot: bool) -> Value {
    json!({
        "id": id.to_string(), "username": name, "discriminator": "0", "global_name": name,
        "avatar": null, "bot": bot
    })
}

fn member(uid: u64, name: &str, roles: &[u64]) -> Value {
    json!({
        "user": user(uid, name, false),
        "nick": null, "avatar": null, "roles": roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "joined_at": "2026-01-01T00:00:00.000000+00:00", "premium_since": null,
        "deaf": false, "mute": false, "flags": 0, "pending": false,
        "permissions": "2248473465835073", "communication_disabled_until": null
    })
}

impl Msg {
    fn json(&self, guild: bool) -> Value {
        let mut m = json!({
            "id": self.id.to_string(),
            "channel_id": self.channel.to_string(),
            "author": self.author,
            "content": self.content,
            "timestamp": "2026-11-29T12:00:00.000000+00:00",
            "edited_timestamp": null,
            "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
            "attachments": [], "embeds": self.embeds, "components": self.components,
            "pinned": false, "type": 0, "flags": 0,
            "webhook_id": self.webhook_id.map(|w| w.to_string()),
        });
        if guild {
            m["guild_id"] = json!(GUILD.to_string());
        }
        m
    }
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", http.local_addr().unwrap());
        let ws_url = format!("ws://{}", ws.local_addr().unwrap());
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                next_id: 1_000_000_000_000_000_000,
                channels: vec![ALERTS, INCIDENTS],
                session_id: "fake-session-1".into(),
                ..Inner::default()
            }),
            changed: Notify::new(),
            ws_url: ws_url.clone(),
        });
        let app = Router::new()
            .route("/api/v10/{*path}", any(rest))
            // Webhook URLs as Discord hands them out have no API version.
            .route(
                "/api/webhooks/{*path}",
                any(
                    |st: State<Arc<Shared>>,
                     Path(path): Path<String>,
                     method: Method,
                     uri: Uri,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        rest(
                            st,
                            Path(format!("webhooks/{path}")),
                            method,
                            uri,
                            headers,
                            body,
                        )
                        .await
                    },
                ),
            )
            .with_state(shared.clone());
        tokio::spawn(async move {
            axum::serve(http, app).await.unwrap();
        });
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = ws.accept().await else {
                    return;
                };
                tokio::spawn(gateway_conn(s.clone(), stream));
            }
        });
        FakeDiscord {
            base,
            ws_url,
            shared,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    fn new_id(inner: &mut Inner) -> u64 {
        inner.next_id += 1;
        inner.next_id
    }

    /// Writes a dispatch into the session log and onto the socket if one is open; a closed
    /// socket leaves it for RESUME to replay.
    fn dispatch(&self, t: &str, d: Value) -> u64 {
        dispatch_locked(&mut self.lock(), t, d)
    }

    /// Alertmanager's `discord_configs`: a webhook message with one embed.
    pub fn post_webhook_alert(&self, channel: u64, title: &str, description: &str) -> u64 {
        let embeds = json!([{
            "type": "rich", "title": title, "description": description, "color": 10038562,
            "url": "http://alertmanager:9093/#/alerts?receiver=discord"
        }]);
        self.post(
            channel,
            user(WEBHOOK, "Alertmanager", true),
            "",
            embeds,
            Some(WEBHOOK),
            None,
        )
    }

    /// An incoming webhook posting into `channel` (Server Settings → Integrations → Webhooks);
    /// returns its URL as Discord shows it (`…/api/webhooks/{id}/{token}`).
    pub fn webhook_url(&self, channel: u64) -> String {
        let mut inner = self.lock();
        let id = Self::new_id(&mut inner);
        let token = format!("hook-token-{id}");
        inner.hooks.insert(id, (token.clone(), channel));
        format!("{}/api/webhooks/{id}/{token}", self.base)
    }

    /// A person writes in a channel (or thread).
    pub fn post_as_user(&self, channel: u64, uid: u64, name: &str, text: &str) -> u64 {
        self.post(
            channel,
            user(uid, name, false),
            text,
            json!([]),
            None,
            Some(member(uid, name, &[])),
        )
    }

    fn post(
        &self,
        channel: u64,
        author: Value,
        content: &str,
        embeds: Value,
        webhook_id: Option<u64>,
        member: Option<Value>,
    ) -> u64 {
        let msg = {
            let mut inner = self.lock();
            let id = Self::new_id(&mut inner);
            let m = Msg {
                id,
                channel,
                author,
                content: content.into(),
                embeds,
                components: json!([]),
                webhook_id,
                edits: 0,
            };
            inner.messages.insert(id, m.clone());
            m
        };
        let mut d = msg.json(true);
        if let Some(mut m) = member {
            m.as_object_mut().unwrap().remove("user");
            d["member"] = m;
        }
        let seq = self.dispatch("MESSAGE_CREATE", d);
        self.lock().message_seq.insert(msg.id, seq);
        msg.id
    }

    fn interaction_payload(
        &self,
        kind: u8,
        channel: u64,
        uid: u64,
        roles: &[u64],
        data: Value,
        message: Option<Value>,
    ) -> (String, Value) {
        let (id, token) = {
            let mut inner = self.lock();
            inner.interactions += 1;
            let id = Self::new_id(&mut inner);
            (id, format!("itoken-{}", inner.interactions))
        };
        let mut d = json!({
            "id": id.to_string(), "application_id": APP_ID.to_string(), "type": kind,
            "data": data, "guild_id": GUILD.to_string(), "channel_id": channel.to_string(),
            "channel": { "id": channel.to_string(), "type": 0 },
            "member": member(uid, &format!("user{uid}"), roles),
            "token": token, "version": 1, "app_permissions": "2248473465835073",
            "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": { "0": GUILD.to_string() }, "context": 0,
            "attachment_size_limit": 8388608
        });
        if let Some(m) = message {
            d["message"] = m;
        }
        (token, d)
    }

    fn interaction(
        &self,
        kind: u8,
        channel: u64,
        uid: u64,
        roles: &[u64],
        data: Value,
        message: Option<Value>,
    ) -> String {
        let (token, d) = self.interaction_payload(kind, channel, uid, roles, data, message);
        self.dispatch("INTERACTION_CREATE", d);
        token
    }

    /// A button click as the HTTP interactions endpoint receives it: (token, body).
    pub fn click_payload(
        &self,
        message_id: u64,
        custom_id: &str,
        uid: u64,
        roles: &[u64],
    ) -> (String, Value) {
        let m = self.message(message_id).expect("clicked message exists");
        let data = json!({ "custom_id": custom_id, "component_type": 2 });
        self.interaction_payload(3, m.channel, uid, roles, data, Some(m.json(true)))
    }

    /// A member clicks a button (by custom_id) on a message; returns the interaction token.
    pub fn click(&self, message_id: u64, custom_id: &str, uid: u64, roles: &[u64]) -> String {
        let m = self.message(message_id).expect("clicked message exists");
        let data = json!({ "custom_id": custom_id, "component_type": 2 });
        self.interaction(3, m.channel, uid, roles, data, Some(m.json(true)))
    }

    /// `/incident <sub> name:value…` in a channel; returns the interaction token.
    pub fn command(
        &self,
        channel: u64,
        uid: u64,
        roles: &[u64],
        sub: &str,
        options: &[(&str, &str)],
    ) -> String {
        let opts: Vec<Value> = options
            .iter()
            .map(|(n, v)| json!({ "name": n, "type": 3, "value": v }))
            .collect();
        let cmd_id = self
            .lock()
            .commands
            .get(&GUILD)
            .and_then(|c| c[0]["id"].as_str().map(str::to_string))
            .unwrap_or_else(|| "1".into());
        let data = json!({
            "id": cmd_id, "name": "incident", "type": 1, "guild_id": GUILD.to_string(),
            "options": [{ "name": sub, "type": 1, "options": opts }]
        });
        self.interaction(2, channel, uid, roles, data, None)
    }

    /// Closes the bot's gateway socket without a close frame, as a network drop would.
    pub fn drop_gateway(&self) {
        if let Some(c) = self.lock().conn.take() {
            let _ = c.send(Conn::Drop);
        }
    }

    /// Answers every IDENTIFY from now on with the close `code` (4014: the app lacks the
    /// Message Content intent in the Developer Portal).
    pub fn close_identify_with(&self, code: u16) {
        self.lock().identify_close = Some(code);
    }

    /// Sends op 9 (Invalid Session) with `d: false` on the open socket and forgets the session,
    /// so the bot must identify again (serenity restarts its shard for that). Messages posted
    /// before the new READY reach the bot only through the channel's history.
    pub fn invalidate_session(&self) {
        let mut inner = self.lock();
        inner.session_id = "fake-session-invalidated".into();
        // Until the bot identifies again there is no session: what is posted meanwhile is
        // dispatched to nobody and never replayed (only the channel's history has it).
        if let Some(c) = inner.conn.take() {
            let _ = c.send(Conn::Send(
                json!({ "op": 9, "d": false, "s": null, "t": null }),
            ));
        }
    }

    /// Gateway sockets the fake closed with a close code (4004, 4014).
    pub fn gateway_closes(&self) -> u32 {
        self.lock().closes
    }

    /// Someone deletes a message (no gateway event: the bot does not need one).
    pub fn delete_message(&self, id: u64) {
        self.lock().messages.remove(&id);
    }

    pub fn requests(&self) -> Vec<Req> {
        self.lock().requests.clone()
    }

    pub fn message(&self, id: u64) -> Option<Msg> {
        self.lock().messages.get(&id).cloned()
    }

    /// Messages in a channel (or thread), oldest first.
    pub fn messages_in(&self, channel: u64) -> Vec<Msg> {
        let mut v: Vec<Msg> = self
            .lock()
            .messages
            .values()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect();
        v.sort_by_key(|m| m.id);
        v
    }

    /// thread id → parent channel.
    pub fn threads(&self) -> HashMap<u64, u64> {
        self.lock().threads.clone()
    }

    pub fn commands(&self, guild: u64) -> Option<Value> {
        self.lock().commands.get(&guild).cloned()
    }

    pub fn identifies(&self) -> u32 {
        self.lock().identifies
    }

    pub fn heartbeats(&self) -> u32 {
        self.lock().heartbeats
    }

    pub fn resumes(&self) -> u32 {
        self.lock().resumes
    }

    pub fn connected(&self) -> bool {
        self.lock().conn.is_some()
    }

    /// When the MESSAGE_CREATE for a message went out on the socket.
    pub fn dispatched_at(&self, message_id: u64) -> Option<Instant> {
        let inner = self.lock();
        inner
            .message_seq
            .get(&message_id)
            .and_then(|s| inner.dispatched_at.get(s))
            .copied()
    }

    /// The next `n` bot REST calls are answered 429 with `retry_after` seconds.
    pub fn rate_limit_next(&self, n: u32, retry_after: f64) {
        self.lock().rate_limit = Some((n, retry_after));
    }

    /// The next `n` bot REST calls fail with HTTP `status` (a 5xx: Discord having a bad day).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.lock().outage = Some((n, status));
    }

    /// The next `n` messages the bot creates are stored (and dispatched) but answered with a
    /// 500, as when Discord's answer is lost after the write.
    pub fn lose_answers(&self, n: u32) {
        self.lock().lose_answers = n;
    }

    /// Waits (bounded) until `pred` holds over the fake's state, re-checking on every change.
    pub async fn wait<T>(&self, what: &str, pred: impl Fn(&FakeDiscord) -> Option<T>) -> T {
        self.wait_within(what, Duration::from_secs(20), pred).await
    }

    /// As [`FakeDiscord::wait`], for at most `within`.
    pub async fn wait_within<T>(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&FakeDiscord) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.shared.changed.notified();
            if let Some(v) = pred(self) {
                return v;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for: {what}; requests: {:#?}",
                    self.requests()
                        .iter()
                        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Interaction-related requests (callbacks, webhook edits, follow-ups) for one token.
    pub fn interaction_requests(&self, token: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(&format!("/{token}")))
            .collect()
    }
}

/// Polls `f` until it yields a value, for state with nothing to wait on (the app's HTTP API):
/// short pauses between tries, a hard bound overall.
pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn dispatch_locked(inner: &mut Inner, t: &str, d: Value) -> u64 {
    inner.seq += 1;
    let seq = inner.seq;
    let frame = json!({ "op": 0, "t": t, "s": seq, "d": d });
    inner.log.push((seq, frame.clone()));
    if let Some(c) = &inner.conn {
        if c.send(Conn::Send(frame)).is_ok() {
            inner.dispatched_at.insert(seq, Instant::now());
        }
    }
    seq
}

fn record(shared: &Shared, method: &Method, path: &str, body: &Value, status: u16) {
    shared.inner.lock().unwrap().requests.push(Req {
        method: method.to_string(),
        path: path.to_string(),
        body: body.clone(),
        status,
        at: Instant::now(),
    });
    shared.changed.notify_waiters();
}

async fn rest(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    50109,
                    "The request body contains invalid JSON.",
                )
            }
        }
    };
    let resp = route(
        &shared,
        &method,
        &path,
        uri.query().unwrap_or(""),
        &headers,
        &body,
    );
    record(&shared, &method, uri.path(), &body, resp.status().as_u16());
    resp
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Response {
    let parts: Vec<&str> = path.split('/').collect();
    // Interaction callbacks and webhook follow-ups authenticate by their token in the path.
    let bot_route = !matches!(parts.first(), Some(&"interactions") | Some(&"webhooks"));
    if bot_route {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != format!("Bot {TOKEN}") {
            return discord_error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
        }
        let mut inner = shared.inner.lock().unwrap();
        if let Some((n, status)) = inner.outage {
            inner.outage = if n > 1 { Some((n - 1, status)) } else { None };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return (status, "upstream connect error").into_response();
        }
        if let Some((n, retry)) = inner.rate_limit {
            inner.rate_limit = if n > 1 { Some((n - 1, retry)) } else { None };
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("content-type", "application/json".to_string()),
                    ("retry-after", format!("{}", retry.ceil() as u64)),
                    ("x-ratelimit-limit", "5".into()),
                    ("x-ratelimit-remaining", "0".into()),
                    ("x-ratelimit-reset-after", format!("{retry}")),
                    ("x-ratelimit-bucket", "fake-bucket".into()),
                    ("x-ratelimit-scope", "user".into()),
                ],
                json!({ "message": "You are being rate limited.", "retry_after": retry, "global": false, "code": 0 }).to_string(),
            )
                .into_response();
        }
    }
    let mut inner = shared.inner.lock().unwrap();
    let inner = &mut *inner;
    let m = method.as_str();
    match (m, parts.as_slice()) {
        ("GET", ["gateway"]) => ok(json!({ "url": shared.ws_url })),
        ("GET", ["gateway", "bot"]) => ok(json!({
            "url": shared.ws_url, "shards": 1,
            "session_start_limit": { "total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1 }
        })),
        ("GET", ["users", "@me"]) => ok(user(BOT_ID, "incidentd", true)),
        // Get Channel Messages: `limit` 1-100 (default 50); `after` gives the oldest messages
        // after that id, `before` (or nothing) the newest before it; newest first either way.
        ("GET", ["channels", ch, "messages"]) => {
            let Ok(ch) = ch.parse::<u64>() else {
                return discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
            };
            if !inner.channels.contains(&ch) && !inner.threads.contains_key(&ch) {
                return discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
            }
            let q: HashMap<&str, &str> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let snowflake = |k: &str| q.get(k).map(|v| v.parse::<u64>());
            let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
                None => 50,
                Some(Ok(n)) if (1..=100).contains(&n) => n,
                _ => return invalid_form("limit", "int value should be between 1 and 100".into()),
            };
            let (after, before) = match (snowflake("after"), snowflake("before")) {
                (Some(Err(_)), _) | (_, Some(Err(_))) => {
                    return invalid_form("after", "Value \"x\" is not snowflake.".into())
                }
                (a, b) => (a.map(|r| r.unwrap()), b.map(|r| r.unwrap())),
            };
            let mut ids: Vec<u64> = inner
                .messages
                .values()
                .filter(|m| m.channel == ch)
                .map(|m| m.id)
                .collect();
            ids.sort_unstable();
            let picked: Vec<u64> = match (after, before) {
                (Some(a), _) => ids.into_iter().filter(|i| *i > a).take(limit).collect(),
                (None, b) => {
                    let older: Vec<u64> = ids
                        .into_iter()
                        .filter(|i| b.is_none_or(|b| *i < b))
                        .collect();
                    older[older.len().saturating_sub(limit)..].to_vec()
                }
            };
            ok(Value::Array(
                picked
                    .iter()
                    .rev()
                    .map(|i| inner.messages[i].json(false))
                    .collect(),
            ))
        }
        ("POST", ["channels", ch, "messages"]) => {
            let Ok(ch) = ch.parse::<u64>() else {
                return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
            };
            if !inner.channels.contains(&ch) && !inner.threads.contains_key(&ch) {
                return discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
            }
            if let Err((p, w)) = check_message(body) {
                return invalid_form(&p, w);
            }
            let nonce = body["nonce"].as_str().map(str::to_string);
            if body["enforce_nonce"] == json!(true) {
                if let Some(n) = &nonce {
                    if let Some(id) = inner.nonces.get(&(ch, n.clone())) {
                        return ok(inner.messages[id].json(false));
                    }
                }
            }
            inner.next_id += 1;
            let id = inner.next_id;
            let msg = Msg {
                id,
                channel: ch,
                author: user(BOT_ID, "incidentd", true),
                content: body["content"].as_str().unwrap_or("").into(),
                embeds: body.get("embeds").cloned().unwrap_or(json!([])),
                components: body.get("components").cloned().unwrap_or(json!([])),
                webhook_id: None,
                edits: 0,
            };
            if let Some(n) = nonce {
                inner.nonces.insert((ch, n), id);
            }
            inner.messages.insert(id, msg.clone());
            // Discord echoes the bot's own messages over the gateway: the bot must ignore them.
            dispatch_locked(inner, "MESSAGE_CREATE", msg.json(true));
            if inner.lose_answers > 0 {
                inner.lose_answers -= 1;
                return discord_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    "500: Internal Server Error",
                );
            }
            ok(msg.json(false))
        }
        ("PATCH", ["channels", ch, "messages", id]) => {
            let (Ok(ch), Ok(id)) = (ch.parse::<u64>(), id.parse::<u64>()) else {
                return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
            };
            if let Err((p, w)) = check_message(body) {
                return invalid_form(&p, w);
            }
            match inner.messages.get_mut(&id) {
                Some(msg) if msg.channel == ch => {
                    if msg.author["id"] != json!(BOT_ID.to_string()) {
                        return discord_error(
                            StatusCode::FORBIDDEN,
                            50005,
                            "Cannot edit a message authored by another user",
                        );
                    }
                    if let Some(e) = body.get("embeds") {
                        msg.embeds = e.clone();
                    }
                    if let Some(c) = body.get("components") {
                        msg.components = c.clone();
                    }
                    if let Some(c) = body.get("content").and_then(|c| c.as_str()) {
                        msg.content = c.into();
                    }
                    msg.edits += 1;
                    ok(msg.json(false))
                }
                _ => discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
            }
        }
        ("POST", ["channels", ch, "messages", id, "threads"]) => {
            let (Ok(ch), Ok(id)) = (ch.parse::<u64>(), id.parse::<u64>()) else {
                return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
            };
            let name = body["name"].as_str().unwrap_or("");
            if name.is_empty() || name.chars().count() > 100 {
                return invalid_form("name", "Must be between 1 and 100 in length.".into());
            }
            if inner.messages.get(&id).is_none_or(|m| m.channel != ch) {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            if inner.threads.contains_key(&id) {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    160004,
                    "A thread has already been created for this message",
                );
            }
            // A thread started from a message has that message's id.
            inner.threads.insert(id, ch);
            ok(json!({
                "id": id.to_string(), "type": 11, "guild_id": GUILD.to_string(),
                "parent_id": ch.to_string(), "name": name, "owner_id": BOT_ID.to_string(),
                "message_count": 0, "member_count": 1, "rate_limit_per_user": 0,
                "thread_metadata": { "archived": false, "auto_archive_duration": body["auto_archive_duration"].as_u64().unwrap_or(4320), "archive_timestamp": "2026-11-29T12:00:00.000000+00:00", "locked": false }
            }))
        }
        ("PUT", ["applications", app, "guilds", guild, "commands"]) => {
            if *app != APP_ID.to_string() {
                return discord_error(StatusCode::FORBIDDEN, 50001, "Missing Access");
            }
            let Ok(guild) = guild.parse::<u64>() else {
                return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
            };
            let cmds = body.as_array().cloned().unwrap_or_default();
            let mut out = Vec::new();
            for (i, c) in cmds.iter().enumerate() {
                let name = c["name"].as_str().unwrap_or("");
                let ok_name = !name.is_empty()
                    && name.len() <= 32
                    && name.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_'
                    });
                if !ok_name {
                    return invalid_form(&format!("{i}.name"), "Command name is invalid".into());
                }
                if chars(&c["description"]) == 0 || chars(&c["description"]) > 100 {
                    return invalid_form(
                        &format!("{i}.description"),
                        "Must be between 1 and 100 in length.".into(),
                    );
                }
                let opts = c["options"].as_array().cloned().unwrap_or_default();
                if opts.len() > 25 {
                    return invalid_form(
                        &format!("{i}.options"),
                        "Must be 25 or fewer in length.".into(),
                    );
                }
                for (j, o) in opts.iter().enumerate() {
                    if chars(&o["description"]) == 0
                        || chars(&o["description"]) > 100
                        || chars(&o["name"]) > 32
                    {
                        return invalid_form(&format!("{i}.options.{j}"), "Invalid option".into());
                    }
                    if o["options"].as_array().is_some_and(|s| s.len() > 25) {
                        return invalid_form(
                            &format!("{i}.options.{j}.options"),
                            "Must be 25 or fewer in length.".into(),
                        );
                    }
                }
                inner.next_id += 1;
                let mut c = c.clone();
                c["id"] = json!(inner.next_id.to_string());
                c["application_id"] = json!(APP_ID.to_string());
                c["guild_id"] = json!(guild.to_string());
                c["type"] = json!(1);
                c["version"] = json!(inner.next_id.to_string());
                c["default_member_permissions"] = Value::Null;
                out.push(c);
            }
            inner.commands.insert(guild, Value::Array(out.clone()));
            ok(Value::Array(out))
        }
        ("POST", ["interactions", _id, _token, "callback"]) => {
            // Type 4/5 carry a message; 6 only acknowledges.
            match body["type"].as_u64() {
                Some(1 | 4 | 5 | 6 | 7 | 9) => StatusCode::NO_CONTENT.into_response(),
                _ => discord_error(
                    StatusCode::BAD_REQUEST,
                    50035,
                    "Invalid interaction response type",
                ),
            }
        }
        // Execute Webhook on an incoming webhook: the message appears in the webhook's channel,
        // authored by the webhook (`webhook_id`, a bot author named by `username`), and goes
        // out over the gateway; the answer is 204, or the message with `?wait=true`.
        ("POST", ["webhooks", id, token])
            if id
                .parse::<u64>()
                .is_ok_and(|id| inner.hooks.contains_key(&id)) =>
        {
            let id = id.parse::<u64>().expect("checked");
            let (want, channel) = inner.hooks[&id].clone();
            if *token != want {
                return discord_error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
            }
            if !body.is_object() {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    50109,
                    "The request body contains invalid JSON.",
                );
            }
            if let Err((p, w)) = check_message(body) {
                return invalid_form(&p, w);
            }
            let content = body["content"].as_str().unwrap_or("").to_string();
            let mut embeds = body["embeds"].as_array().cloned().unwrap_or_default();
            if content.is_empty() && embeds.is_empty() {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    50006,
                    "Cannot send an empty message",
                );
            }
            for e in &mut embeds {
                e["type"] = json!("rich");
            }
            let name = body["username"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or("Captain Hook");
            let msg_id = FakeDiscord::new_id(inner);
            let msg = Msg {
                id: msg_id,
                channel,
                author: user(id, name, true),
                content,
                embeds: Value::Array(embeds),
                components: json!([]),
                webhook_id: Some(id),
                edits: 0,
            };
            inner.messages.insert(msg_id, msg.clone());
            let seq = dispatch_locked(inner, "MESSAGE_CREATE", msg.json(true));
            inner.message_seq.insert(msg_id, seq);
            shared.changed.notify_waiters();
            if query.split('&').any(|kv| kv == "wait=true") {
                ok(msg.json(false))
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        ("PATCH", ["webhooks", app, _token, "messages", "@original"])
        | ("POST", ["webhooks", app, _token]) => {
            if *app != APP_ID.to_string() {
                return discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
            }
            if let Err((p, w)) = check_message(body) {
                return invalid_form(&p, w);
            }
            inner.next_id += 1;
            let msg = Msg {
                id: inner.next_id,
                channel: INCIDENTS,
                author: user(BOT_ID, "incidentd", true),
                content: body["content"].as_str().unwrap_or("").into(),
                embeds: json!([]),
                components: json!([]),
                webhook_id: Some(APP_ID),
                edits: 0,
            };
            let mut v = msg.json(false);
            v["flags"] = body.get("flags").cloned().unwrap_or(json!(0));
            ok(v)
        }
        ("DELETE", ["webhooks", _app, _token, "messages", "@original"]) => {
            StatusCode::NO_CONTENT.into_response()
        }
        _ => discord_error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
    }
}

async fn gateway_conn(shared: Arc<Shared>, stream: tokio::net::TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let hello = json!({ "op": 10, "d": { "heartbeat_interval": 250 }, "s": null, "t": null });
    if tx
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let (ctx, mut crx) = mpsc::unbounded_channel::<Conn>();
    loop {
        tokio::select! {
            cmd = crx.recv() => match cmd {
                Some(Conn::Send(v)) => {
                    if tx.send(WsMessage::Text(v.to_string().into())).await.is_err() {
                        break;
                    }
                }
                // A network drop: no close frame.
                Some(Conn::Drop) | None => break,
            },
            frame = rx.next() => {
                let Some(Ok(frame)) = frame else { break };
                let text = match frame {
                    WsMessage::Text(t) => t.as_str().to_owned(),
                    WsMessage::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                    WsMessage::Close(_) => break,
                    _ => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    let _ = tx.send(WsMessage::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                        code: 4002u16.into(), reason: "Error while decoding payload.".into(),
                    }))).await;
                    break;
                };
                let mut out: Vec<Value> = Vec::new();
                let mut close: Option<(u16, &str)> = None;
                {
                    let mut inner = shared.inner.lock().unwrap();
                    match v["op"].as_u64() {
                        Some(1) => {
                            inner.heartbeats += 1;
                            out.push(json!({ "op": 11, "d": null, "s": null, "t": null }));
                        }
                        Some(2) => {
                            let token = v["d"]["token"].as_str().unwrap_or("");
                            let intents = v["d"]["intents"].as_u64().unwrap_or(0);
                            if let Some(code) = inner.identify_close {
                                close = Some((code, if code == 4004 { "Authentication failed." } else { "Disallowed intent(s)." }));
                            } else if token.trim_start_matches("Bot ") != TOKEN {
                                close = Some((4004, "Authentication failed."));
                            } else if intents & (1 << 9) == 0 || intents & (1 << 15) == 0 {
                                close = Some((4014, "Disallowed intent(s)."));
                            } else {
                                inner.identifies += 1;
                                inner.session_id = format!("fake-session-{}", inner.identifies);
                                inner.log.clear();
                                inner.seq += 1;
                                let seq = inner.seq;
                                let ready = json!({ "op": 0, "t": "READY", "s": seq, "d": {
                                    "v": 10, "user": user(BOT_ID, "incidentd", true),
                                    "guilds": [{ "id": GUILD.to_string(), "unavailable": true }],
                                    "session_id": inner.session_id, "resume_gateway_url": shared.ws_url,
                                    "shard": [0, 1], "application": { "id": APP_ID.to_string(), "flags": 0 }
                                }});
                                inner.log.push((seq, ready.clone()));
                                out.push(ready);
                                inner.conn = Some(ctx.clone());
                            }
                        }
                        Some(6) => {
                            let token = v["d"]["token"].as_str().unwrap_or("");
                            let sid = v["d"]["session_id"].as_str().unwrap_or("");
                            let seq = v["d"]["seq"].as_u64().unwrap_or(0);
                            if token.trim_start_matches("Bot ") != TOKEN {
                                close = Some((4004, "Authentication failed."));
                            } else if sid != inner.session_id {
                                out.push(json!({ "op": 9, "d": false, "s": null, "t": null }));
                            } else {
                                inner.resumes += 1;
                                let missed: Vec<Value> = inner.log.iter().filter(|(s, _)| *s > seq).map(|(_, f)| f.clone()).collect();
                                out.extend(missed);
                                inner.seq += 1;
                                let s = inner.seq;
                                out.push(json!({ "op": 0, "t": "RESUMED", "s": s, "d": {} }));
                                inner.conn = Some(ctx.clone());
                            }
                        }
                        _ => {}
                    }
                    let now = Instant::now();
                    for f in &out {
                        if let Some(s) = f["s"].as_u64() {
                            inner.dispatched_at.insert(s, now);
                        }
                    }
                }
                shared.changed.notify_waiters();
                for f in out {
                    if tx.send(WsMessage::Text(f.to_string().into())).await.is_err() {
                        return;
                    }
                }
                if let Some((code, reason)) = close {
                    shared.inner.lock().unwrap().closes += 1;
                    shared.changed.notify_waiters();
                    let _ = tx.send(WsMessage::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                        code: code.into(), reason: reason.into(),
                    }))).await;
                    break;
                }
            }
        }
    }
    let mut inner = shared.inner.lock().unwrap();
    if inner.conn.as_ref().is_some_and(|c| c.same_channel(&ctx)) {
        inner.conn = None;
    }
    drop(inner);
    shared.changed.notify_waiters();
}
