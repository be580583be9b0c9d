//! REST actions on incidents, for automation (runbooks, CI, other bots): acknowledge, resolve,
//! reopen, approve or reject an action, add a note, set the root cause. Each request carries a
//! bearer token from `[[api.tokens]]`; the token's holder is the actor, and the action goes
//! through the engine as the same chat command would (`Input::Command`), so the same policy
//! decides: a refusal is a 403 with the policy's words, recorded on the timeline like a refused
//! click.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tracing::{info, info_span, warn, Instrument};

use super::{blocking, body, check_json, internal, same, ApiError, AppState};
use crate::config::Config;
use crate::domain::alert::Platform;
use crate::domain::classify::RootCause;
use crate::domain::command::Command;
use crate::domain::incident::IncidentId;
use crate::domain::policy::Actor;
use crate::engine::runner::EngineSubmitError;
use crate::engine::Input;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/incidents/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/incidents/{id}/resolve", post(resolve))
        .route("/api/v1/incidents/{id}/reopen", post(reopen))
        .route(
            "/api/v1/incidents/{id}/actions/{action}/approve",
            post(approve),
        )
        .route(
            "/api/v1/incidents/{id}/actions/{action}/reject",
            post(reject),
        )
        .route("/api/v1/incidents/{id}/notes", post(note))
        .route("/api/v1/incidents/{id}/root-cause", post(root_cause))
}

/// The holder of the request's bearer token, as the actor.
fn holder(headers: &HeaderMap, cfg: &Config) -> Result<Actor, ApiError> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.to_string());
    if cfg.api.tokens.is_empty() {
        return Err(unauthorized(
            "no API tokens are configured: add [[api.tokens]] (holder, token_env) to the config",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("missing bearer token"))?;
    // Every token is compared (in constant time each), so the time does not tell which matched.
    let mut found = None;
    for t in &cfg.api.tokens {
        if same(given.as_bytes(), t.token.expose().as_bytes()) {
            found = Some(t.holder.as_str());
        }
    }
    let holder = found.ok_or_else(|| unauthorized("wrong bearer token"))?;
    Ok(actor(holder))
}

/// `alice` and `console:alice` are the console user alice; `slack:U1` and `discord:1` the
/// platforms' users. The policy's approver entries name them the same way.
pub fn actor(holder: &str) -> Actor {
    let (platform, id) = match holder.split_once(':') {
        Some(("slack", id)) => (Platform::Slack, id),
        Some(("discord", id)) => (Platform::Discord, id),
        Some(("console", id)) => (Platform::Console, id),
        _ => (Platform::Console, holder),
    };
    let mut a = Actor::new(platform, id);
    a.name = Some(format!("{id} (API)"));
    a
}

fn incident_id(id: &str) -> Result<IncidentId, ApiError> {
    id.parse()
        .map_err(|e: String| ApiError(StatusCode::BAD_REQUEST, e))
}

/// An optional JSON body: empty is the default.
fn optional_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body(b)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    check_json(headers)?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Runs `command` as `actor` and answers with the incident's state after it.
async fn act(
    s: AppState,
    actor: Actor,
    id: IncidentId,
    action: &'static str,
    command: Command,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = s.store.clone();
    if blocking(move || store.get_incident(id))
        .await?
        .map_err(internal)?
        .is_none()
    {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{id} does not exist"),
        ));
    }
    let holder = actor.id.clone();
    let span = info_span!("api_action", incident = %id, action, holder = %holder);
    let result = s
        .engine
        .submit_one(Input::Command { actor, command })
        .instrument(span)
        .await;
    let outcome = match result {
        Ok(o) if o.refused => {
            let why = o.reply.unwrap_or_else(|| "not allowed".into());
            warn!(incident = %id, action, holder = %holder, reason = %why, "API action refused.");
            return Err(ApiError(StatusCode::FORBIDDEN, why));
        }
        Ok(o) => o,
        Err(EngineSubmitError::User(e)) => return Err(ApiError(StatusCode::CONFLICT, e.0)),
        Err(e) => return Err(internal(e)),
    };
    info!(incident = %id, action, holder = %holder, "API action.");
    let store = s.store.clone();
    let inc = blocking(move || store.get_incident(id))
        .await?
        .map_err(internal)?
        .ok_or_else(|| internal(format!("{id} vanished")))?;
    Ok(Json(json!({
        "incident": id.to_string(),
        "action": action,
        "by": holder,
        "status": inc.status,
        "note": outcome.reply,
    })))
}

async fn acknowledge(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = holder(&headers, &s.cfg)?;
    let id = incident_id(&id)?;
    act(s, actor, id, "acknowledge", Command::Ack(id)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    note: Option<String>,
}

async fn resolve(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = holder(&headers, &s.cfg)?;
    let id = incident_id(&id)?;
    let body: ResolveBody = optional_json(&headers, b)?;
    let note = body.note.filter(|n| !n.trim().is_empty());
    act(s, actor, id, "resolve", Command::Resolve(id, note)).await
}

async fn reopen(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = holder(&headers, &s.cfg)?;
    let id = incident_id(&id)?;
    act(s, actor, id, "reopen", Command::Reopen(id)).await
}

async fn approve(
    State(s): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = holder(&headers, &s.cfg)?;
    let id = incident_id(&id)?;
    act(s, actor, id, "approve", Command::Approve(id, action)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: Option<String>,
}

async fn reject(
    State(s): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = holder(&headers, &s.cfg)?;
    let id = incident_id(&id)?;
    let body: RejectBody = optional_json(&headers, b)?;
    let reason = body.reason.filter(|r| !r.trim().is_empty());
    act(s, actor, id, "reject", Command::Reject(id, action, reason)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: String,
}

async fn note(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = holder(&headers, &s.cfg)?;
    let id = incident_id(&id)?;
    let body: NoteBody = optional_json(&headers, b)?;
    if body.text.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "give the note as {\"text\": \"...\"}".into(),
        ));
    }
    act(s, actor, id, "note", Command::Note(id, body.text)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootCauseBody {
    category: String,
    text: Option<String>,
}

async fn root_cause(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = holder(&headers, &s.cfg)?;
    let id = incident_id(&id)?;
    let body: RootCauseBody = optional_json(&headers, b)?;
    let Some(cause) = RootCause::parse(&body.category) else {
        let all: Vec<&str> = RootCause::ALL.iter().map(|c| c.as_str()).collect();
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "category must be one of {}, not {:?}",
                all.join(", "),
                body.category
            ),
        ));
    };
    let text = body.text.filter(|t| !t.trim().is_empty());
    act(
        s,
        actor,
        id,
        "root_cause",
        Command::RootCause(id, cause, text),
    )
    .await
}
