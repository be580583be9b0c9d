//! Discord via serenity 0.12: incident threads with an embed card and buttons, alert channels
//! read over the gateway, button clicks and `/incident` as interactions.
//!
//! - `render`: the card as an embed + button rows, within Discord's limits;
//! - `port`: the outbox's deliveries as REST calls (where the card and thread live is
//!   documented there);
//! - `gateway`: serenity's client and the event handler feeding the chat service;
//! - `endpoint`: the optional Ed25519-verified HTTP interactions endpoint.
//!
//! Both the REST client and the gateway are pointed at `discord.api_url` through serenity's
//! `HttpBuilder::proxy`, which works only with serenity's ratelimiter disabled: our outbox does
//! the rate limiting (429 `retry_after`). The gateway URL comes from that server's
//! `GET /api/v10/gateway`.

pub mod endpoint;
pub mod gateway;
pub mod port;
pub mod render;

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serenity::all::GuildId;
use serenity::http::{Http, HttpBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::chat::health::Connection;
use crate::chat::service::ChatService;
use crate::chat::Surface;
use crate::config::DiscordConfig;
use crate::domain::alert::Platform;
use crate::ports::ChatPort;

pub use port::DiscordPort;

/// The Discord surface (sink name "discord").
pub struct DiscordSurface {
    cfg: DiscordConfig,
    port: Arc<DiscordPort>,
    conn: Arc<Connection>,
}

impl DiscordSurface {
    pub fn new(cfg: &DiscordConfig) -> Self {
        DiscordSurface {
            port: Arc::new(DiscordPort::new(
                &cfg.api_url,
                &cfg.token,
                cfg.incident_channel.clone(),
            )),
            cfg: cfg.clone(),
            conn: Arc::new(Connection::new("discord")),
        }
    }

    /// serenity's REST client, pointed at `api_url` (its ratelimiter must be off for that),
    /// with a timeout on every call (interaction answers, command registration).
    fn http(&self) -> Http {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        HttpBuilder::new(self.cfg.token.expose())
            .client(client)
            .proxy(&self.cfg.api_url)
            .ratelimiter_disabled(true)
            .build()
    }
}

impl Surface for DiscordSurface {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    fn port(&self) -> Arc<dyn ChatPort> {
        self.port.clone()
    }

    fn alert_channels(&self) -> Vec<String> {
        self.cfg.alert_channels.clone()
    }

    fn connection(&self) -> Option<Arc<Connection>> {
        Some(self.conn.clone())
    }

    fn routes(&self, service: ChatService) -> Option<axum::Router> {
        let key = self.cfg.public_key.as_deref()?;
        match endpoint::verifier(key) {
            Ok(v) => Some(endpoint::router(v, Arc::new(self.http()), service)),
            Err(e) => {
                error!(error = %e, "The Discord interactions endpoint is off.");
                None
            }
        }
    }

    fn spawn(
        &self,
        service: ChatService,
        shutdown: watch::Receiver<bool>,
    ) -> Option<JoinHandle<()>> {
        let guilds: Vec<GuildId> = self
            .cfg
            .guild_ids
            .iter()
            .filter_map(|g| match g.parse::<u64>() {
                Ok(n) if n != 0 => Some(GuildId::new(n)),
                _ => {
                    warn!(guild = %g, "discord.guild_ids entry is not a Discord id; skipped.");
                    None
                }
            })
            .collect();
        let slot = gateway::ServiceSlot::new(service);
        let handler = gateway::Handler {
            service: slot.clone(),
            guilds,
            alert_channels: self
                .cfg
                .alert_channels
                .iter()
                .cloned()
                .collect::<HashSet<_>>(),
            me: Arc::new(AtomicU64::new(0)),
            conn: self.conn.clone(),
            bookmarks: Arc::new(crate::chat::backfill::Bookmarks::new("discord")),
        };
        let conn = self.conn.clone();
        let http = self.http();
        Some(tokio::spawn(async move {
            run_gateway(http, handler, &conn, shutdown).await;
            // Whatever serenity's own tasks still hold, the engine handle goes now.
            slot.close();
        }))
    }
}

/// How long serenity may take to close its shards on shutdown. Its shard manager waits up to
/// 5 s per shard for a runner that may be gone (after a fatal close code) or busy restarting
/// (after op 9), so the wait is bounded here.
const SHARDS_SHUTDOWN_MAX: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs serenity's client until the gateway fails for good or `shutdown` turns true; then the
/// shards are shut down explicitly (bounded), which also ends serenity's shard queuer.
async fn run_gateway(
    http: Http,
    handler: gateway::Handler,
    conn: &Connection,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client = match serenity::client::ClientBuilder::new_with_http(http, gateway::intents())
        .event_handler(handler)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "Cannot start the Discord client.");
            return;
        }
    };
    let shards = client.shard_manager.clone();
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::select! {
        r = client.start() => {
            let why = match r {
                Err(e) => gateway::fatal_error(&e),
                Ok(()) => "the gateway client stopped".to_string(),
            };
            error!(error = %why, "The Discord gateway stopped for good; Discord is deaf until this is fixed and incidentd restarted.");
            conn.failed(why);
            // serenity does not stop its shard queuer after a fatal close; do not wait on it.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(SHARDS_SHUTDOWN_MAX, shards.shutdown_all()).await;
            });
        }
        _ = stop => {
            info!("Closing the Discord gateway.");
            conn.disconnected();
            if tokio::time::timeout(SHARDS_SHUTDOWN_MAX, shards.shutdown_all()).await.is_err() {
                warn!("The Discord shards did not close in time; leaving them.");
            }
        }
    }
}
