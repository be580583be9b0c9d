//! The embedded local web console: the chat surface when no Slack or Discord token is set, and
//! the incident dashboard for every deployment.
//!
//! [`ConsolePort`] is the outbox sink: it keeps what it was sent (cards, edits, thread notes,
//! post-incident reports) in
//! a bounded in-memory feed per incident and broadcasts each message to the open pages, which
//! receive it over server-sent events. [`ConsoleSurface`] wires the port and the pages (`routes`)
//! into the app: clicks and messages go through the same [`ChatService`] as Slack and Discord,
//! with the logged-in console user as the actor, so the policy decides exactly as it does there.
//!
//! Layout: `auth` (users, sessions, CSRF), `pages` (maud templates), `markdown` (the bot's
//! Markdown as safe HTML), `routes` (axum handlers and the SSE stream), `stats` (the stats
//! page's model and its SVG charts); assets live in `assets/` and are compiled into the binary,
//! so the console works offline.

pub mod auth;
mod markdown;
mod pages;
mod routes;
pub mod stats;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tracing::info;

use crate::chat::service::ChatService;
use crate::config::{Config, ConsoleUser, Secret};
use crate::domain::alert::Platform;
use crate::domain::card::IncidentCard;
use crate::domain::incident::IncidentId;
use crate::domain::report::Report;
use crate::ports::{ChatError, ChatPort, Delivered, Delivery, OutboundMessage, ThreadRef};

use super::Surface;

/// The console's alert channel: messages posted there are read as alerts (a person's when they
/// read as one or mention [`CONSOLE_BOT`]).
pub const ALERT_CHANNEL: &str = "console-alerts";
/// The bot's name in the console: `@incidentd checkout is down` asks it for an incident.
pub const CONSOLE_BOT: &str = "incidentd";
/// The sink name in outbox keys.
pub const SINK: &str = "console";

/// Thread replies kept per incident (older ones are on the incident page's timeline).
const THREAD_LEN: usize = 200;
/// Incidents whose threads are kept in memory.
const THREADS: usize = 1000;
/// Channel messages kept.
const CHANNEL_LEN: usize = 200;
/// Delivered outbox keys remembered for idempotency.
const KEYS: usize = 20_000;
/// Events buffered per open page before it is told to reload.
const BROADCAST: usize = 1024;

/// One reply in an incident's thread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadItem {
    pub at: DateTime<Utc>,
    /// `None`: the bot.
    pub author: Option<String>,
    /// Plain text (for a report: its heading).
    pub text: String,
    /// The post-incident report, shown natively instead of `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Box<Report>>,
}

/// A message posted into the console's alert channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelMessage {
    pub at: DateTime<Utc>,
    pub author: String,
    pub text: String,
}

/// What open pages are told.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedEvent {
    /// A card was posted (`new`) or edited.
    Card { card: Box<IncidentCard>, new: bool },
    /// A reply in an incident's thread (bot note or a user's reply).
    Reply {
        incident: IncidentId,
        item: ThreadItem,
    },
    /// A message in the alert channel.
    Message(ChannelMessage),
}

#[derive(Default)]
struct Feed {
    threads: HashMap<IncidentId, VecDeque<ThreadItem>>,
    /// The chart of each thread's latest card (for the incident page), evicted with it.
    charts: HashMap<IncidentId, crate::domain::chart::Chart>,
    /// Thread creation order, for eviction.
    order: VecDeque<IncidentId>,
    channel: VecDeque<ChannelMessage>,
    keys: HashSet<String>,
    key_order: VecDeque<String>,
}

impl Feed {
    fn thread(&mut self, id: IncidentId) -> &mut VecDeque<ThreadItem> {
        if !self.threads.contains_key(&id) {
            if self.order.len() >= THREADS {
                if let Some(old) = self.order.pop_front() {
                    self.threads.remove(&old);
                    self.charts.remove(&old);
                }
            }
            self.order.push_back(id);
        }
        self.threads.entry(id).or_default()
    }

    fn push_reply(&mut self, id: IncidentId, item: ThreadItem) {
        let t = self.thread(id);
        if t.len() >= THREAD_LEN {
            t.pop_front();
        }
        t.push_back(item);
    }

    /// Remembers (or forgets) the card's chart, for a thread still kept (so the charts are
    /// bounded with the threads).
    fn keep_chart(&mut self, card: &IncidentCard) {
        match &card.chart {
            Some(c) if self.threads.contains_key(&card.incident) => {
                self.charts.insert(card.incident, c.clone());
            }
            _ => {
                self.charts.remove(&card.incident);
            }
        }
    }

    /// False when `key` was delivered before (a redelivery after a lost acknowledgement).
    fn remember(&mut self, key: &str) -> bool {
        if self.keys.contains(key) {
            return false;
        }
        if self.key_order.len() >= KEYS {
            if let Some(old) = self.key_order.pop_front() {
                self.keys.remove(&old);
            }
        }
        self.keys.insert(key.to_string());
        self.key_order.push_back(key.to_string());
        true
    }
}

/// The console sink: the in-memory feed and its broadcast to open pages.
pub struct ConsolePort {
    feed: Mutex<Feed>,
    tx: broadcast::Sender<Arc<FeedEvent>>,
}

impl Default for ConsolePort {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsolePort {
    pub fn new() -> Self {
        ConsolePort {
            feed: Mutex::new(Feed::default()),
            tx: broadcast::channel(BROADCAST).0,
        }
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedEvent>> {
        self.tx.subscribe()
    }

    /// The thread replies kept for an incident, oldest first.
    pub fn thread(&self, id: IncidentId) -> Vec<ThreadItem> {
        let feed = self.feed.lock().unwrap();
        feed.threads
            .get(&id)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The chart on the latest card delivered for an incident, if it had one.
    pub fn chart(&self, id: IncidentId) -> Option<crate::domain::chart::Chart> {
        self.feed.lock().unwrap().charts.get(&id).cloned()
    }

    /// The latest alert-channel messages, oldest first.
    pub fn channel(&self) -> Vec<ChannelMessage> {
        self.feed.lock().unwrap().channel.iter().cloned().collect()
    }

    /// Records a console user's reply in a thread (the engine already has it on the timeline).
    pub fn user_reply(&self, id: IncidentId, author: &str, text: &str) {
        let item = ThreadItem {
            at: Utc::now(),
            author: Some(author.to_string()),
            text: text.to_string(),
            report: None,
        };
        self.feed.lock().unwrap().push_reply(id, item.clone());
        let _ = self
            .tx
            .send(Arc::new(FeedEvent::Reply { incident: id, item }));
    }

    /// Records a message a console user posted into the alert channel.
    pub fn user_message(&self, author: &str, text: &str) {
        let msg = ChannelMessage {
            at: Utc::now(),
            author: author.to_string(),
            text: text.to_string(),
        };
        {
            let mut feed = self.feed.lock().unwrap();
            if feed.channel.len() >= CHANNEL_LEN {
                feed.channel.pop_front();
            }
            feed.channel.push_back(msg.clone());
        }
        let _ = self.tx.send(Arc::new(FeedEvent::Message(msg)));
    }
}

#[async_trait]
impl ChatPort for ConsolePort {
    fn name(&self) -> &str {
        SINK
    }

    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        let thread = ThreadRef {
            channel: ALERT_CHANNEL.into(),
            message_id: msg.incident.to_string(),
        };
        let event = {
            let mut feed = self.feed.lock().unwrap();
            // Idempotent: a redelivered entry (same key) is not shown twice.
            if !feed.remember(&msg.key) {
                let posted = matches!(msg.body, Delivery::PostCard { .. });
                return Ok(Delivered {
                    thread: posted.then_some(thread),
                });
            }
            match msg.body {
                Delivery::PostCard { card } => {
                    info!(
                        incident = %card.incident,
                        severity = %card.severity,
                        kind = %card.kind,
                        "🚨 {} — {}",
                        card.incident,
                        card.title
                    );
                    feed.thread(card.incident);
                    feed.keep_chart(card);
                    FeedEvent::Card {
                        card: Box::new(card.clone()),
                        new: true,
                    }
                }
                Delivery::UpdateCard { card } => {
                    info!(incident = %card.incident, status = card.status.as_str(), count = card.alert_count, "Card updated.");
                    feed.keep_chart(card);
                    FeedEvent::Card {
                        card: Box::new(card.clone()),
                        new: false,
                    }
                }
                Delivery::Note { text, .. } => {
                    info!(incident = %msg.incident, "{text}");
                    let item = ThreadItem {
                        at: Utc::now(),
                        author: None,
                        text: text.clone(),
                        report: None,
                    };
                    feed.push_reply(msg.incident, item.clone());
                    FeedEvent::Reply {
                        incident: msg.incident,
                        item,
                    }
                }
                Delivery::Report { report } => {
                    info!(incident = %msg.incident, "📋 {}", report.heading());
                    let item = ThreadItem {
                        at: Utc::now(),
                        author: None,
                        text: report.heading(),
                        report: Some(Box::new(report.clone())),
                    };
                    feed.push_reply(msg.incident, item.clone());
                    FeedEvent::Reply {
                        incident: msg.incident,
                        item,
                    }
                }
            }
        };
        let posted = matches!(event, FeedEvent::Card { new: true, .. });
        // No open page is not an error: the feed keeps the message for the next one.
        let _ = self.tx.send(Arc::new(event));
        Ok(Delivered {
            thread: posted.then_some(thread),
        })
    }
}

/// The console as the app wires it: the port, the login users and the pages.
pub struct ConsoleSurface {
    port: Arc<ConsolePort>,
    auth: Arc<auth::Auth>,
    closing: watch::Sender<bool>,
    /// The first-run admin token, announced with its login link once the server listens.
    first_run: std::sync::Mutex<Option<String>>,
}

impl ConsoleSurface {
    /// A console with these users (none: nobody can log in).
    pub fn new(users: Vec<ConsoleUser>) -> anyhow::Result<Self> {
        if let Some(u) = users.iter().find(|u| u.name == "system") {
            anyhow::bail!(
                "console user {:?} is reserved for incidentd itself; pick another name",
                u.name
            );
        }
        Ok(ConsoleSurface {
            port: Arc::new(ConsolePort::new()),
            auth: Arc::new(auth::Auth::new(users)),
            closing: watch::channel(false).0,
            first_run: std::sync::Mutex::new(None),
        })
    }

    /// The console for `cfg`, with its safety rules: bound to a non-loopback address it needs
    /// configured users (it refuses to start rather than expose approve buttons); on loopback
    /// with none, it creates the local user `admin` with a random token and prints its login
    /// link once, on stderr, when the server listens (so the link has the bound port).
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let listen = cfg.server.listen;
        let mut users = cfg.console.users.clone();
        if users.is_empty() {
            if !listen.ip().is_loopback() {
                anyhow::bail!(
                    "the web console would be reachable on {listen} with approve buttons and no login: \
                     configure at least one [[console.users]] entry (name and token_env), set INCIDENTD_CONSOLE_ADMIN_TOKEN, or listen on 127.0.0.1"
                );
            }
            let token = auth::random_hex();
            users.push(ConsoleUser {
                name: "admin".into(),
                token: Secret::new(token.clone()),
            });
            let surface = Self::new(users)?;
            *surface.first_run.lock().unwrap() = Some(token);
            return Ok(surface);
        }
        Self::new(users)
    }

    /// The first-run message with the login link for the bound address; `None` after the
    /// first call or when users are configured.
    pub fn first_run_message(&self, bound: SocketAddr) -> Option<String> {
        let token = self.first_run.lock().unwrap().take()?;
        Some(format!(
            "incidentd: no console users configured; created the local user \"admin\" for this run.\n\
             incidentd: open {} to log in (this link is printed once).",
            login_link(bound, &token)
        ))
    }

    /// The port, typed (tests read the feed and subscribe to it).
    pub fn console_port(&self) -> Arc<ConsolePort> {
        self.port.clone()
    }
}

/// The console's login page on `listen`, as a browser on this machine reaches it.
pub fn login_url(listen: SocketAddr) -> String {
    let host = if listen.ip().is_unspecified() || listen.ip().is_loopback() {
        "127.0.0.1".to_string()
    } else {
        listen.ip().to_string()
    };
    format!("http://{host}:{}/console/login", listen.port())
}

/// The one-click login URL for a token.
pub fn login_link(listen: SocketAddr, token: &str) -> String {
    format!("{}?token={token}", login_url(listen))
}

impl Surface for ConsoleSurface {
    fn platform(&self) -> Platform {
        Platform::Console
    }

    fn listening(&self, addr: SocketAddr) {
        if let Some(m) = self.first_run_message(addr) {
            eprintln!("{m}");
        }
    }

    fn port(&self) -> Arc<dyn ChatPort> {
        self.port.clone()
    }

    fn alert_channels(&self) -> Vec<String> {
        vec![ALERT_CHANNEL.to_string()]
    }

    fn routes(&self, service: ChatService) -> Option<axum::Router> {
        // A new server starts (a replica that leads again after standing by): its live pages
        // stream until it shuts down in turn.
        self.closing.send_replace(false);
        Some(routes::router(routes::ConsoleState::new(
            service,
            self.port.clone(),
            self.auth.clone(),
            self.closing.subscribe(),
        )))
    }

    fn shutting_down(&self) {
        // Live pages hold their event stream open; end them so the server can drain.
        let _ = self.closing.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(id: u64) -> IncidentCard {
        let inc = {
            let mut i = crate::domain::incident::tests_support::incident();
            i.id = IncidentId(id);
            i
        };
        crate::domain::card::build_card(
            &inc,
            "Kind",
            crate::domain::severity::Severity::P2.default_targets(),
            1,
            100,
        )
    }

    #[tokio::test]
    async fn port_keeps_threads_broadcasts_and_ignores_redeliveries() {
        let port = ConsolePort::new();
        let mut rx = port.subscribe();
        let body = Delivery::PostCard { card: card(1) };
        let msg = OutboundMessage {
            key: "k1".into(),
            incident: IncidentId(1),
            created_at: chrono::Utc::now(),
            thread: None,
            body: &body,
        };
        let d = port.deliver(msg.clone()).await.unwrap();
        assert_eq!(d.thread.as_ref().unwrap().channel, ALERT_CHANNEL);
        assert_eq!(d.thread.unwrap().message_id, "INC-1");
        assert!(matches!(
            &*rx.recv().await.unwrap(),
            FeedEvent::Card { new: true, .. }
        ));
        // Redelivered: same thread answer, nothing shown twice.
        assert!(port.deliver(msg).await.unwrap().thread.is_some());
        let note = Delivery::Note {
            text: "hi".into(),
            mentions: vec![],
        };
        port.deliver(OutboundMessage {
            key: "k2".into(),
            incident: IncidentId(1),
            created_at: chrono::Utc::now(),
            thread: None,
            body: &note,
        })
        .await
        .unwrap();
        match &*rx.recv().await.unwrap() {
            FeedEvent::Reply { incident, item } => {
                assert_eq!(*incident, IncidentId(1));
                assert_eq!(item.text, "hi");
                assert_eq!(item.author, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        port.user_reply(IncidentId(1), "alice", "looking");
        assert_eq!(port.thread(IncidentId(1)).len(), 2);
        let report = Delivery::Report {
            report: crate::domain::report::samples::small(),
        };
        let msg = OutboundMessage {
            key: "k3".into(),
            incident: IncidentId(1),
            created_at: chrono::Utc::now(),
            thread: None,
            body: &report,
        };
        port.deliver(msg.clone()).await.unwrap();
        port.deliver(msg).await.unwrap();
        assert!(
            matches!(&*rx.recv().await.unwrap(), FeedEvent::Reply { item, .. } if item.text == "looking")
        );
        match &*rx.recv().await.unwrap() {
            FeedEvent::Reply { item, .. } => {
                assert_eq!(item.text, "Post-incident report: INC-7 — Payments API 503");
                assert_eq!(
                    item.report.as_deref(),
                    Some(&crate::domain::report::samples::small())
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            port.thread(IncidentId(1)).len(),
            3,
            "a redelivered report is shown once"
        );
        assert_eq!(
            port.thread(IncidentId(1))[1].author.as_deref(),
            Some("alice")
        );
    }

    #[test]
    fn feed_is_bounded() {
        let mut f = Feed::default();
        for i in 0..(THREADS as u64 + 5) {
            f.thread(IncidentId(i + 1));
        }
        assert_eq!(f.threads.len(), THREADS);
        assert!(!f.threads.contains_key(&IncidentId(1)));
        for i in 0..(THREAD_LEN + 3) {
            f.push_reply(
                IncidentId(9),
                ThreadItem {
                    at: Utc::now(),
                    author: None,
                    text: i.to_string(),
                    report: None,
                },
            );
        }
        assert_eq!(f.threads[&IncidentId(9)].len(), THREAD_LEN);
    }

    #[test]
    fn first_local_run_gets_an_admin() {
        let cfg = Config::builtin();
        assert!(cfg.server.listen.ip().is_loopback() && cfg.console.users.is_empty());
        let s = ConsoleSurface::from_config(&cfg).unwrap();
        assert_eq!(s.auth.user_names(), ["admin"]);
    }

    #[test]
    fn refuses_open_console_on_public_address() {
        let mut cfg = Config::builtin();
        cfg.server.listen = "0.0.0.0:8080".parse().unwrap();
        let err = ConsoleSurface::from_config(&cfg).err().unwrap().to_string();
        assert!(err.contains("[[console.users]]"), "{err}");
        cfg.console.users.push(ConsoleUser {
            name: "alice".into(),
            token: Secret::new("0123456789abcdef0123"),
        });
        assert!(ConsoleSurface::from_config(&cfg).is_ok());
        cfg.console.users[0].name = "system".into();
        assert!(ConsoleSurface::from_config(&cfg).is_err());
    }

    #[test]
    fn the_first_run_link_names_the_bound_port_and_is_given_once() {
        let mut cfg = Config::builtin();
        cfg.server.listen = "127.0.0.1:0".parse().unwrap();
        cfg.console.users.clear();
        let s = ConsoleSurface::from_config(&cfg).unwrap();
        let m = s
            .first_run_message("127.0.0.1:43117".parse().unwrap())
            .expect("a first-run link");
        assert!(
            m.contains("http://127.0.0.1:43117/console/login?token="),
            "{m}"
        );
        assert_eq!(
            s.first_run_message("127.0.0.1:43117".parse().unwrap()),
            None
        );
    }

    #[test]
    fn login_link_points_at_loopback() {
        let l = login_link("127.0.0.1:8080".parse().unwrap(), "abc");
        assert_eq!(l, "http://127.0.0.1:8080/console/login?token=abc");
    }
}
