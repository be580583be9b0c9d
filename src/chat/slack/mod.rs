//! Slack: incident threads with Block Kit cards, approval buttons and `/incident`, through
//! slack-morphism's Web API client. Inbound events arrive over Socket Mode (the default: no
//! public URL needed) or the HTTP Events API, chosen by `[slack] mode`.
//!
//! - `client`    — the outbox port (chat.postMessage / chat.update), ephemeral answers, error mapping
//! - `render`    — the card as Block Kit, within Slack's limits
//! - `events`    — message events, block_actions and slash commands → neutral chat events
//! - `socket`    — Socket Mode connection: acks after durability, reconnects with backoff
//! - `http`      — `/slack/events`, `/slack/interactions`, `/slack/commands`, signature-checked
//! - `signature` — v0 request signing (HMAC-SHA256, replay window, constant-time compare)

mod client;
mod events;
pub(crate) use events::read_untrusted;
mod http;
pub mod render;
pub mod signature;
mod socket;

use std::sync::Arc;

use tokio::sync::watch;

use crate::chat::health::Connection;
use tokio::task::JoinHandle;
use tracing::error;

pub use client::{Pace, SlackPort, FEATURE_SCOPES, WEB_API_SCOPES};
pub use events::COMMAND;

use crate::chat::service::ChatService;
use crate::config::{SlackConfig, SlackMode};
use crate::domain::alert::Platform;
use crate::ports::ChatPort;

use super::Surface;

/// The Slack chat surface.
pub struct SlackSurface {
    cfg: SlackConfig,
    api: Arc<client::SlackApi>,
    port: Arc<SlackPort>,
    /// The Socket Mode connection's health (Events API mode has no connection of its own).
    conn: Arc<Connection>,
}

impl SlackSurface {
    /// `user_groups`: approvers are named by Slack user group (`slack-group:S…`), so clicks and
    /// commands look up the actor's groups (usergroups.list, cached).
    pub fn new(cfg: &SlackConfig, user_groups: bool) -> Self {
        let api = Arc::new(client::SlackApi::new(cfg).with_user_groups(user_groups));
        let port = Arc::new(SlackPort::new(
            api.clone(),
            cfg.incident_channel.clone(),
            Some(Pace::default()),
        ));
        SlackSurface {
            cfg: cfg.clone(),
            api,
            port,
            conn: Arc::new(Connection::new("slack")),
        }
    }

    /// Paces chat.postMessage per channel (`None`: not at all, for benchmarks against a fake).
    pub fn with_post_pace(mut self, pace: Option<Pace>) -> Self {
        self.port = Arc::new(SlackPort::new(
            self.api.clone(),
            self.cfg.incident_channel.clone(),
            pace,
        ));
        self
    }
}

impl Surface for SlackSurface {
    fn platform(&self) -> Platform {
        Platform::Slack
    }

    fn port(&self) -> Arc<dyn ChatPort> {
        self.port.clone()
    }

    fn alert_channels(&self) -> Vec<String> {
        self.cfg.alert_channels.clone()
    }

    fn routes(&self, service: ChatService) -> Option<axum::Router> {
        if self.cfg.mode != SlackMode::Http {
            return None;
        }
        let Some(secret) = self.cfg.signing_secret.clone() else {
            // Config validation requires it in http mode; without it nothing could be verified.
            error!("Slack http mode without a signing secret: the Slack endpoints are disabled.");
            return None;
        };
        let inbound = Arc::new(events::Inbound::new(
            service,
            self.api.clone(),
            self.cfg.alert_channels.clone(),
        ));
        Some(http::routes(inbound, secret))
    }

    fn spawn(
        &self,
        service: ChatService,
        shutdown: watch::Receiver<bool>,
    ) -> Option<JoinHandle<()>> {
        if self.cfg.mode != SlackMode::Socket {
            return None;
        }
        let inbound = Arc::new(events::Inbound::new(
            service,
            self.api.clone(),
            self.cfg.alert_channels.clone(),
        ));
        Some(tokio::spawn(socket::run(
            inbound,
            self.conn.clone(),
            shutdown,
        )))
    }

    fn connection(&self) -> Option<Arc<Connection>> {
        (self.cfg.mode == SlackMode::Socket).then(|| self.conn.clone())
    }
}
