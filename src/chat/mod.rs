//! Chat surfaces. The neutral message model lives in `domain::card` and `ports`; the neutral
//! inbound layer in `chat::service`. Each surface here turns them into one platform's
//! messages and events. `recording` is an in-memory port for tests and benchmarks (it can
//! fail and rate-limit on demand). `console` is the embedded web console: a surface of its own
//! and the dashboard for every deployment.

pub mod backfill;
pub mod console;
pub mod discord;
pub mod health;
pub mod recording;
pub mod service;
pub mod slack;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chat::service::ChatService;
use crate::domain::alert::Platform;
use crate::ports::ChatPort;

/// A chat platform as the app wires it: an outbound port for the outbox, and inbound
/// connections (HTTP routes and/or a long-lived socket) that feed the chat service.
pub trait Surface: Send + Sync {
    fn platform(&self) -> Platform;
    /// Where the outbox delivers this platform's messages (its `name()` is the sink name).
    fn port(&self) -> Arc<dyn ChatPort>;
    /// Channel ids whose messages are read as alerts.
    fn alert_channels(&self) -> Vec<String>;
    /// HTTP endpoints this surface serves on the bot's server (Events API, interactions…).
    fn routes(&self, _service: ChatService) -> Option<axum::Router> {
        None
    }
    /// Long-lived inbound connections (socket mode, gateway); stops when `shutdown` turns true.
    fn spawn(
        &self,
        _service: ChatService,
        _shutdown: watch::Receiver<bool>,
    ) -> Option<JoinHandle<()>> {
        None
    }
    /// The server is listening on `addr` (the bound address: with port 0, the real port).
    fn listening(&self, _addr: std::net::SocketAddr) {}
    /// The health of this surface's long-lived connection, if it has one.
    fn connection(&self) -> Option<Arc<health::Connection>> {
        None
    }
    /// The server is shutting down: end long-lived responses (event streams) so it can drain.
    fn shutting_down(&self) {}
}
