//! The HTTP interactions endpoint (`POST /discord/interactions`), for deployments that let
//! Discord deliver interactions by HTTP instead of the gateway. Every request is checked with
//! the application's Ed25519 public key over `X-Signature-Timestamp + body`; forged signatures
//! and timestamps more than five minutes off get 401. PING is answered with PONG. Clicks and
//! `/incident` are answered at once with a deferral (Discord's 3 s budget) and finished in the
//! background through the same code as the gateway.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use serenity::all::{Http, Interaction};
use serenity::interactions_endpoint::Verifier;
use tracing::warn;

use super::gateway::{command_is_public, finish_command, finish_component};
use crate::chat::service::ChatService;

/// How far `X-Signature-Timestamp` may be from now.
const MAX_SKEW_SECONDS: i64 = 300;

#[derive(Clone)]
struct EndpointState {
    verifier: Verifier,
    http: Arc<Http>,
    service: ChatService,
}

/// Parses the application's public key (64 hex digits).
pub fn verifier(public_key_hex: &str) -> Result<Verifier, String> {
    let hex = public_key_hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("DISCORD_PUBLIC_KEY must be 64 hex digits".into());
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Verifier::try_new(key).map_err(|_| "DISCORD_PUBLIC_KEY is not a valid Ed25519 key".to_string())
}

/// The router with `POST /discord/interactions`.
pub fn router(verifier: Verifier, http: Arc<Http>, service: ChatService) -> Router {
    Router::new()
        .route("/discord/interactions", post(interactions))
        .with_state(EndpointState {
            verifier,
            http,
            service,
        })
}

fn unauthorized(why: &str) -> Response {
    (StatusCode::UNAUTHORIZED, why.to_string()).into_response()
}

async fn interactions(
    State(st): State<EndpointState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (signature, timestamp) = (
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    );
    if st.verifier.verify(signature, timestamp, &body).is_err() {
        return unauthorized("invalid request signature");
    }
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= MAX_SKEW_SECONDS);
    if !fresh {
        return unauthorized("stale request timestamp");
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return (StatusCode::BAD_REQUEST, "invalid JSON").into_response(),
    };
    if value["type"] == 1 {
        return Json(json!({ "type": 1 })).into_response();
    }
    let interaction: Interaction = match serde_json::from_value(value) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "Unreadable Discord interaction.");
            return (StatusCode::BAD_REQUEST, "unreadable interaction").into_response();
        }
    };
    match interaction {
        Interaction::Component(c) => {
            st.http.set_application_id(c.application_id);
            tokio::spawn(async move { finish_component(&st.http, &st.service, &c).await });
            // Deferred update: no visible change; the card edit shows the outcome.
            Json(json!({ "type": 6 })).into_response()
        }
        Interaction::Command(c) if c.data.name == "incident" => {
            st.http.set_application_id(c.application_id);
            let public = command_is_public(&c);
            tokio::spawn(async move { finish_command(&st.http, &st.service, &c, public).await });
            let flags = if public { 0 } else { 64 };
            Json(json!({ "type": 5, "data": { "flags": flags, "allowed_mentions": { "parse": [] } } }))
                .into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "unsupported interaction").into_response(),
    }
}
