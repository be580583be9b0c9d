//! Socket Mode: `apps.connections.open` (app-level token) gives a WebSocket URL; Slack sends
//! envelopes (`events_api`, `interactive`, `slash_commands`, `hello`, `disconnect`) and each
//! must be acknowledged with its `envelope_id` within 3 s.
//!
//! Written on tokio-tungstenite rather than slack-morphism's listener because the invariants
//! need control it does not give: an envelope is acked only after the chat service returned
//! (durable), and not at all when storing failed (so Slack redelivers); reconnects back off
//! exponentially with jitter; the loop stops on the app's shutdown signal rather than on
//! process signals; and the raw payload keeps every attachment field.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, error, info, warn};

use super::events::{CommandPayload, Inbound};
use crate::chat::health::Connection;

/// Reconnect backoff: the first retry after a failure waits about `BASE`, doubling to `MAX`.
const BASE: Duration = Duration::from_millis(500);
const MAX: Duration = Duration::from_secs(60);
/// A ping this often; a socket silent for `DEAD` is presumed dead and replaced.
const PING: Duration = Duration::from_secs(20);
const DEAD: Duration = Duration::from_secs(60);
/// Slack's deadline for an ack; slower handling is logged (Slack will redeliver).
const ACK_DEADLINE: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    envelope_id: Option<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    reason: Option<String>,
}

/// A connection that drops sooner than this after its hello counts as a failed attempt, so a
/// flapping server is not hammered with immediate reconnects.
const STABLE: Duration = Duration::from_secs(10);

/// How a connection ended.
enum Ended {
    Shutdown,
    /// Slack asked for a fresh connection (`disconnect` envelope): reconnect at once.
    Refresh(String),
    /// It worked (hello seen), then dropped after `lasted`.
    Dropped(String, Duration),
}

fn backoff(failures: u32) -> Duration {
    let d = BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX);
    let half = d / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

/// Runs Socket Mode until `shutdown` turns true.
pub(crate) async fn run(
    inbound: Arc<Inbound>,
    conn: Arc<Connection>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let ended = connection(&inbound, &conn, &mut shutdown).await;
        conn.disconnected();
        match ended {
            Ok(Ended::Shutdown) => break,
            Ok(Ended::Refresh(why)) => {
                info!(reason = %why, "Slack asked for a new socket; reconnecting.");
                failures = 0;
            }
            Ok(Ended::Dropped(why, lasted)) if lasted >= STABLE => {
                info!(reason = %why, "Slack socket dropped; reconnecting.");
                failures = 0;
            }
            Ok(Ended::Dropped(why, _)) => {
                failures += 1;
                warn!(reason = %why, attempt = failures, "Slack socket dropped soon after connecting.");
            }
            Err(e) => {
                failures += 1;
                match refusal(&e) {
                    // Retried all the same (a fixed token in a mounted secret is picked up on
                    // restart only, but a revoked-then-restored app comes back by itself).
                    Some(fix) if !conn.state().down_for_good => {
                        error!(error = %e, "{fix}");
                        conn.failed(format!("{e}: {fix}"));
                    }
                    Some(_) => {}
                    None => {
                        warn!(error = %e, attempt = failures, "Slack socket mode connection failed.")
                    }
                }
            }
        }
        if failures > 0 {
            let wait = backoff(failures);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    info!("Slack socket mode stopped.");
}

/// What to do when Slack refuses the tokens: no reconnect fixes that.
fn refusal(error: &str) -> Option<&'static str> {
    const BOT: &str = "Slack refused the bot token: set SLACK_BOT_TOKEN to the app's Bot User OAuth Token (xoxb-…, OAuth & Permissions), then restart incidentd";
    const APP: &str = "Slack refused the app-level token: set SLACK_APP_TOKEN to an app-level token (xapp-…) with the connections:write scope (Basic Information → App-Level Tokens), then restart incidentd";
    if error.contains("apps.connections.open") && error.contains("invalid_auth") {
        return Some(APP);
    }
    [
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "account_inactive",
        "not_allowed_token_type",
    ]
    .iter()
    .any(|c| error.contains(c))
    .then_some(BOT)
}

async fn connection(
    inbound: &Arc<Inbound>,
    conn: &Connection,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Ended, String> {
    let setup = async {
        // Knowing who we are first means the first event can be told apart from our own.
        inbound
            .api
            .identity()
            .await
            .map_err(|e| format!("auth.test: {e}"))?;
        let url = inbound
            .api
            .open_socket()
            .await
            .map_err(|e| format!("apps.connections.open: {e}"))?;
        let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(&url))
            .await
            .map_err(|_| "WebSocket connect timed out".to_string())?
            .map_err(|e| format!("WebSocket connect: {e}"))?;
        Ok::<_, String>(ws)
    };
    // Shutdown must not wait for a slow Slack while nothing has been received yet.
    let ws = tokio::select! {
        r = setup => r?,
        _ = shutdown.changed() => return Ok(Ended::Shutdown),
    };
    debug!("Slack socket connected.");
    let (mut tx, mut rx) = ws.split();
    let mut hello: Option<Instant> = None;
    let mut ping = tokio::time::interval(PING);
    ping.tick().await;
    let mut last_seen = Instant::now();
    let dropped = |hello: Option<Instant>, why: String| match hello {
        Some(at) => Ok(Ended::Dropped(why, at.elapsed())),
        None => Err(why),
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = tx.send(Message::Close(None)).await;
                return Ok(Ended::Shutdown);
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > DEAD {
                    return dropped(hello, "no traffic from Slack".into());
                }
                if let Err(e) = tx.send(Message::Ping(Vec::new().into())).await {
                    return dropped(hello, format!("ping: {e}"));
                }
            }
            frame = rx.next() => {
                let text = match frame {
                    None => return dropped(hello, "socket closed".into()),
                    Some(Err(e)) => return dropped(hello, format!("socket error: {e}")),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) => return dropped(hello, "closed by Slack".into()),
                    Some(Ok(_)) => {
                        last_seen = Instant::now();
                        continue;
                    }
                };
                last_seen = Instant::now();
                let env: Envelope = match serde_json::from_str(text.as_str()) {
                    Ok(e) => e,
                    Err(e) => {
                        warn!(error = %e, "Unreadable socket mode frame; ignored.");
                        continue;
                    }
                };
                match env.kind.as_str() {
                    "hello" => {
                        hello = Some(Instant::now());
                        conn.connected();
                        info!("Slack socket mode connected.");
                        // Slack redelivers unacknowledged events only for a while: what was
                        // posted during a longer outage is read back from the history.
                        let i = inbound.clone();
                        tokio::spawn(async move { i.backfill().await });
                        continue;
                    }
                    "disconnect" => {
                        return Ok(Ended::Refresh(env.reason.unwrap_or_default()));
                    }
                    _ => {}
                }
                let Some(envelope_id) = env.envelope_id.clone() else {
                    continue;
                };
                let started = Instant::now();
                let (ack, after) = handle(inbound, &env, &envelope_id).await;
                if started.elapsed() > ACK_DEADLINE {
                    warn!(kind = %env.kind, elapsed = ?started.elapsed(), "Handling took longer than Slack's 3 s ack deadline; Slack may redeliver.");
                }
                if let Some(ack) = ack {
                    if let Err(e) = tx.send(Message::Text(ack.to_string().into())).await {
                        return dropped(hello, format!("ack: {e}"));
                    }
                }
                inbound.send_ephemerals(after);
            }
        }
    }
}

/// Handles one envelope; returns the ack to send (none: let Slack redeliver) and the private
/// answers to show after it.
async fn handle(
    inbound: &Arc<Inbound>,
    env: &Envelope,
    envelope_id: &str,
) -> (Option<Value>, Vec<super::events::Ephemeral>) {
    let ack = json!({ "envelope_id": envelope_id });
    match env.kind.as_str() {
        "events_api" => match inbound.event_callback(&env.payload).await {
            Ok(()) => (Some(ack), vec![]),
            Err(e) => {
                warn!(error = %e, "Event not stored; not acknowledged, Slack will redeliver.");
                (None, vec![])
            }
        },
        "interactive" => {
            let answers = inbound.interaction(&env.payload).await;
            (Some(ack), answers)
        }
        "slash_commands" => {
            let c: CommandPayload = serde_json::from_value(env.payload.clone()).unwrap_or_default();
            let reply = inbound.command(c).await;
            (
                Some(json!({ "envelope_id": envelope_id, "payload": reply })),
                vec![],
            )
        }
        other => {
            debug!(kind = other, "Unknown socket mode envelope; acknowledged.");
            (Some(ack), vec![])
        }
    }
}
