//! The Events API over HTTP: `POST /slack/events`, `/slack/interactions`, `/slack/commands` on
//! the bot's own server. Every request must carry a valid v0 signature from the last 5 minutes
//! (401 and nothing recorded otherwise); answers go out only after the input is durable.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::events::{CommandPayload, Inbound};
use super::signature;
use crate::config::Secret;

#[derive(Clone)]
struct HttpState {
    inbound: Arc<Inbound>,
    secret: Secret,
}

pub(crate) fn routes(inbound: Arc<Inbound>, secret: Secret) -> Router {
    Router::new()
        .route("/slack/events", post(events))
        .route("/slack/interactions", post(interactions))
        .route("/slack/commands", post(commands))
        .with_state(HttpState { inbound, secret })
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn verify(s: &HttpState, headers: &HeaderMap, body: &[u8]) -> Result<(), StatusCode> {
    signature::verify(
        s.secret.expose(),
        header(headers, "x-slack-request-timestamp"),
        header(headers, "x-slack-signature"),
        body,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e| {
        warn!(error = %e, "Refused a Slack request with a bad signature.");
        StatusCode::UNAUTHORIZED
    })
}

fn form(body: &[u8]) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

async fn events(State(s): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(status) = verify(&s, &headers, &body) {
        return status.into_response();
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return (StatusCode::BAD_REQUEST, "not JSON").into_response(),
    };
    match v["type"].as_str() {
        // Slack checks the endpoint with a challenge that must be echoed.
        Some("url_verification") => Json(json!({ "challenge": v["challenge"] })).into_response(),
        Some("event_callback") => {
            if let Some(n) = header(&headers, "x-slack-retry-num") {
                debug!(
                    retry = n,
                    reason = header(&headers, "x-slack-retry-reason"),
                    "Slack retried an event."
                );
            }
            match s.inbound.event_callback(&v).await {
                Ok(()) => StatusCode::OK.into_response(),
                // Not stored: a 5xx makes Slack retry it.
                Err(e) => {
                    warn!(error = %e, "Event not stored; Slack will retry.");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
        _ => StatusCode::OK.into_response(),
    }
}

async fn interactions(State(s): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(status) = verify(&s, &headers, &body) {
        return status.into_response();
    }
    let Some(payload) = form(&body).remove("payload") else {
        return (StatusCode::BAD_REQUEST, "no payload").into_response();
    };
    let Ok(v) = serde_json::from_str::<Value>(&payload) else {
        return (StatusCode::BAD_REQUEST, "payload is not JSON").into_response();
    };
    let answers = s.inbound.interaction(&v).await;
    s.inbound.send_ephemerals(answers);
    StatusCode::OK.into_response()
}

async fn commands(State(s): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(status) = verify(&s, &headers, &body) {
        return status.into_response();
    }
    let mut f = form(&body);
    let mut take = |k: &str| f.remove(k).unwrap_or_default();
    let c = CommandPayload {
        command: take("command"),
        text: take("text"),
        user_id: take("user_id"),
        user_name: Some(take("user_name")).filter(|n| !n.is_empty()),
        channel_id: take("channel_id"),
    };
    Json(s.inbound.command(c).await).into_response()
}
