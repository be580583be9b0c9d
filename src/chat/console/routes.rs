//! The console's HTTP side: login and sessions, the pages, the state-changing posts (buttons,
//! channel messages, thread replies, `/incident` commands — all through [`ChatService`]), and
//! the server-sent event stream that keeps open pages live.
//!
//! Every page needs a session (else a redirect to the login page); every POST needs a session
//! (else 401) and the session's CSRF token in the `csrf` form field or the `x-csrf-token`
//! header (else 403), checked before anything is handed to the engine.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::Utc;
use futures_util::Stream;
use maud::Markup;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};
use tracing::{error, info, warn};

use super::auth::{self, Auth, Session};
use super::pages::{self, ListFilter, Times, Viewer};
use super::{markdown, stats, ConsolePort, FeedEvent, ALERT_CHANNEL, CONSOLE_BOT, SINK};
use crate::chat::service::{ChatEvent, ChatService};
use crate::domain::alert::Platform;
use crate::domain::card::IncidentCard;
use crate::domain::incident::{IncidentId, Status};
use crate::domain::policy::Actor;
use crate::domain::severity::Severity;
use crate::ports::{IncidentFilter, Store, StoreError};

/// Incidents shown on the alert channel page.
const CHANNEL_INCIDENTS: usize = 50;
/// Incidents the list and the stats read at most.
const SCAN_LIMIT: usize = 100_000;

#[derive(Clone)]
pub(super) struct ConsoleState(Arc<Inner>);

struct Inner {
    service: ChatService,
    port: Arc<ConsolePort>,
    auth: Arc<Auth>,
    closing: watch::Receiver<bool>,
}

impl ConsoleState {
    pub(super) fn new(
        service: ChatService,
        port: Arc<ConsolePort>,
        auth: Arc<Auth>,
        closing: watch::Receiver<bool>,
    ) -> Self {
        ConsoleState(Arc::new(Inner {
            service,
            port,
            auth,
            closing,
        }))
    }
}

pub(super) fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/alerts") }))
        .route(
            "/console",
            get(|| async { Redirect::to("/console/alerts") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/alerts") }),
        )
        .route("/console/login", get(login_get).post(login_post))
        .route("/console/logout", post(logout))
        .route("/console/alerts", get(alerts))
        .route("/console/events", get(events))
        .route("/console/button", post(button))
        .route("/console/post", post(post_message))
        .route("/console/incidents", get(incidents))
        .route("/console/incidents/{id}", get(incident))
        .route("/console/stats", get(stats_page))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

pub const CSS: &str = include_str!("assets/console.css");
pub const JS: &str = include_str!("assets/console.js");

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        // Pages carry the session's CSRF token: never keep them in a shared cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

fn session_from(parts: &Parts, state: &ConsoleState) -> Option<(String, Session)> {
    let cookie = parts.headers.get(header::COOKIE)?.to_str().ok()?;
    let id = auth::session_cookie(cookie)?;
    let s = state.0.auth.session(id, Instant::now())?;
    Some((id.to_string(), s))
}

/// A page viewer: without a session, the browser is sent to the login page.
struct PageUser(Session);

impl FromRequestParts<ConsoleState> for PageUser {
    type Rejection = Response;
    async fn from_request_parts(p: &mut Parts, s: &ConsoleState) -> Result<Self, Response> {
        session_from(p, s)
            .map(|(_, s)| PageUser(s))
            .ok_or_else(|| Redirect::to("/console/login").into_response())
    }
}

/// A caller of a state-changing endpoint or the event stream: without a session, 401.
struct ApiUser(String, Session);

impl FromRequestParts<ConsoleState> for ApiUser {
    type Rejection = Response;
    async fn from_request_parts(p: &mut Parts, s: &ConsoleState) -> Result<Self, Response> {
        session_from(p, s)
            .map(|(id, s)| ApiUser(id, s))
            .ok_or_else(|| {
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error": "log in first: no valid console session"})),
                )
                    .into_response()
            })
    }
}

/// The 403 for a request whose CSRF token (header or form field) is not its session's.
fn csrf_refusal(s: &Session, headers: &HeaderMap, field: Option<&str>) -> Option<Response> {
    let header = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if s.csrf_ok(header.or(field)) {
        None
    } else {
        warn!(user = %s.user, "Console request without a valid CSRF token refused.");
        Some(
            (
                StatusCode::FORBIDDEN,
                Json(json!({"error": "missing or wrong CSRF token: reload the page"})),
            )
                .into_response(),
        )
    }
}

fn viewer(s: &Session) -> Viewer<'_> {
    Viewer {
        user: &s.user,
        csrf: &s.csrf,
    }
}

fn actor(s: &Session) -> Actor {
    Actor::new(Platform::Console, s.user.clone())
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// The answer to a post: JSON for the page's script, a small page otherwise.
fn answer(headers: &HeaderMap, s: &Session, status: StatusCode, text: &str) -> Response {
    if wants_json(headers) {
        // The bot answers in Markdown: the text as is, and as safe HTML to show.
        let html = markdown::render(text).into_string();
        (
            status,
            Json(json!({"text": text, "html": html, "ephemeral": true})),
        )
            .into_response()
    } else {
        (
            status,
            pages::answer_page(&viewer(s), text, "/console/alerts"),
        )
            .into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    let reference = format!("{:08x}", rand::random::<u32>());
    error!(error = %e, reference = %reference, "Console internal error.");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error (ref {reference})"),
    )
        .into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(internal(e)),
        Err(e) => Err(internal(e)),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

fn do_login(st: &ConsoleState, token: &str) -> Response {
    match st.0.auth.login(token, Instant::now()) {
        Some((id, s)) => {
            info!(user = %s.user, "Console login.");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, auth::set_cookie(&id)),
                    (header::LOCATION, "/console/alerts".to_string()),
                ],
            )
                .into_response()
        }
        None => {
            warn!("Console login with an unknown token refused.");
            (
                StatusCode::UNAUTHORIZED,
                pages::login(Some("That token is not valid.")),
            )
                .into_response()
        }
    }
}

async fn login_get(
    State(st): State<ConsoleState>,
    Query(q): Query<LoginQuery>,
    parts: axum::http::HeaderMap,
) -> Response {
    if let Some(t) = q.token {
        return do_login(&st, &t);
    }
    let logged_in = parts
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::session_cookie)
        .and_then(|id| st.0.auth.session(id, Instant::now()))
        .is_some();
    if logged_in {
        return Redirect::to("/console/alerts").into_response();
    }
    pages::login(None).into_response()
}

async fn login_post(State(st): State<ConsoleState>, Form(f): Form<LoginForm>) -> Response {
    do_login(&st, &f.token)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(st): State<ConsoleState>,
    ApiUser(id, s): ApiUser,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&s, &headers, f.csrf.as_deref()) {
        return r;
    }
    st.0.auth.logout(&id);
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, auth::clear_cookie()),
            (header::LOCATION, "/console/login".to_string()),
        ],
    )
        .into_response()
}

async fn alerts(State(st): State<ConsoleState>, PageUser(s): PageUser) -> Response {
    let store = st.0.service.store().clone();
    let filter = IncidentFilter {
        limit: CHANNEL_INCIDENTS,
        ..Default::default()
    };
    let list = match blocking(move || store.list_incidents(&filter)).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let cfg = st.0.service.config();
    let now = Utc::now();
    let threads: Vec<(IncidentCard, Times, Vec<super::ThreadItem>)> = list
        .iter()
        .map(|i| {
            (
                crate::engine::card(i, cfg),
                Times::of(i, now),
                st.0.port.thread(i.id),
            )
        })
        .collect();
    pages::alerts_page(&viewer(&s), &threads, &st.0.port.channel()).into_response()
}

/// When the card's incident was acknowledged and resolved (the card does not say): from the
/// store; without it (an error, or gone), the card shows no countdown outcome.
async fn times(store: &Arc<dyn Store>, card: &IncidentCard) -> Times {
    let now = Utc::now();
    let store = store.clone();
    let id = card.incident;
    match tokio::task::spawn_blocking(move || store.get_incident(id)).await {
        Ok(Ok(Some(inc))) => Times::of(&inc, now),
        _ => Times {
            now,
            acknowledged_at: None,
            resolved_at: None,
        },
    }
}

/// One feed event as the page's script reads it: server-rendered fragments in JSON.
fn render_event(port: &ConsolePort, ev: &FeedEvent, csrf: &str, t: &Times) -> Event {
    match ev {
        FeedEvent::Card { card, new } => {
            let replies = port.thread(card.incident);
            Event::default().event("card").data(
                json!({
                    "incident": card.incident.to_string(),
                    "new": new,
                    "status": card.status.as_str(),
                    "card": pages::card(card, csrf, t).into_string(),
                    "thread": pages::thread(card, &replies, csrf, t).into_string(),
                })
                .to_string(),
            )
        }
        FeedEvent::Reply { incident, item } => Event::default().event("reply").data(
            json!({
                "incident": incident.to_string(),
                "html": pages::reply(item).into_string(),
            })
            .to_string(),
        ),
        FeedEvent::Message(m) => Event::default()
            .event("chat")
            .data(json!({ "html": pages::channel_message(m).into_string() }).to_string()),
    }
}

struct Live {
    rx: broadcast::Receiver<Arc<FeedEvent>>,
    store: Arc<dyn Store>,
    closing: watch::Receiver<bool>,
    port: Arc<ConsolePort>,
    auth: Arc<Auth>,
    session: String,
    csrf: String,
    started: bool,
}

/// The live feed. It starts with a `ready` event (the subscription exists from then on), and
/// tells the page to reload when it fell too far behind; it ends when the server shuts down or
/// the session ends (logout, expiry).
fn live_stream(live: Live) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(live, |mut l| async move {
        if !l.started {
            l.started = true;
            return Some((Ok(Event::default().event("ready").data("ok")), l));
        }
        if *l.closing.borrow() {
            return None;
        }
        let got = tokio::select! {
            r = l.rx.recv() => r,
            _ = l.closing.wait_for(|c| *c) => return None,
        };
        let ev = match got {
            Ok(_) if l.auth.session(&l.session, Instant::now()).is_none() => return None,
            Ok(ev) => {
                let t = match &*ev {
                    FeedEvent::Card { card, .. } => times(&l.store, card).await,
                    _ => Times {
                        now: Utc::now(),
                        acknowledged_at: None,
                        resolved_at: None,
                    },
                };
                render_event(&l.port, &ev, &l.csrf, &t)
            }
            Err(broadcast::error::RecvError::Lagged(n)) => Event::default()
                .event("reload")
                .data(format!("missed {n} events")),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), l))
    })
}

async fn events(
    State(st): State<ConsoleState>,
    ApiUser(id, s): ApiUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let live = Live {
        rx: st.0.port.subscribe(),
        store: st.0.service.store().clone(),
        closing: st.0.closing.clone(),
        port: st.0.port.clone(),
        auth: st.0.auth.clone(),
        session: id,
        csrf: s.csrf,
        started: false,
    };
    Sse::new(live_stream(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(Deserialize)]
struct ButtonForm {
    action_id: String,
    csrf: Option<String>,
}

async fn button(
    State(st): State<ConsoleState>,
    ApiUser(_, s): ApiUser,
    headers: HeaderMap,
    Form(f): Form<ButtonForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&s, &headers, f.csrf.as_deref()) {
        return r;
    }
    let reply =
        st.0.service
            .handle(ChatEvent::Button {
                actor: actor(&s),
                action_id: f.action_id,
            })
            .await;
    let text = reply.map(|r| r.text).unwrap_or_else(|| "Done.".into());
    answer(&headers, &s, StatusCode::OK, &text)
}

#[derive(Deserialize)]
struct PostForm {
    text: String,
    /// An incident id: a reply in its thread. None: a message in the alert channel.
    thread: Option<String>,
    csrf: Option<String>,
}

/// `/incident list` → `Some("list")`; anything else → `None`.
fn slash_command(text: &str) -> Option<&str> {
    let rest = text.trim().strip_prefix("/incident")?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim())
}

async fn post_message(
    State(st): State<ConsoleState>,
    ApiUser(_, s): ApiUser,
    headers: HeaderMap,
    Form(f): Form<PostForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&s, &headers, f.csrf.as_deref()) {
        return r;
    }
    let text = f.text.trim().to_string();
    if text.is_empty() {
        return answer(&headers, &s, StatusCode::BAD_REQUEST, "Nothing to send.");
    }
    let svc = &st.0.service;
    if let Some(cmd) = slash_command(&text) {
        let reply = svc
            .handle(ChatEvent::Command {
                actor: actor(&s),
                text: cmd.to_string(),
            })
            .await;
        let text = reply.map(|r| r.text).unwrap_or_else(|| "Done.".into());
        return answer(&headers, &s, StatusCode::OK, &text);
    }
    let message_id = format!("m-{}", &auth::random_hex()[..16]);
    match f.thread.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(thread) => {
            let id: IncidentId = match thread.parse() {
                Ok(i) => i,
                Err(e) => return answer(&headers, &s, StatusCode::BAD_REQUEST, &e),
            };
            let store = svc.store().clone();
            let known = match blocking(move || store.thread_for(SINK, id)).await {
                Ok(t) => t.is_some(),
                Err(r) => return r,
            };
            if !known {
                let msg = format!(
                    "{id} has no thread on the console yet; use `/incident note {id} …` instead."
                );
                return answer(&headers, &s, StatusCode::CONFLICT, &msg);
            }
            let reply = svc
                .handle(ChatEvent::Message {
                    channel: ALERT_CHANNEL.into(),
                    message_id,
                    thread_id: Some(id.to_string()),
                    author: actor(&s),
                    from_bot: false,
                    bot_user: None,
                    text: text.clone(),
                    attachments: vec![],
                    embeds: vec![],
                })
                .await;
            match reply {
                Some(r) => answer(&headers, &s, StatusCode::OK, &r.text),
                None => {
                    st.0.port.user_reply(id, &s.user, &text);
                    answer(
                        &headers,
                        &s,
                        StatusCode::OK,
                        &format!("Replied in {id}'s thread (on its timeline too)."),
                    )
                }
            }
        }
        None => {
            st.0.port.user_message(&s.user, &text);
            let reply = svc
                .handle(ChatEvent::Message {
                    channel: ALERT_CHANNEL.into(),
                    message_id,
                    thread_id: None,
                    author: actor(&s),
                    from_bot: false,
                    bot_user: Some(CONSOLE_BOT.into()),
                    text,
                    attachments: vec![],
                    embeds: vec![],
                })
                .await;
            let text = reply
                .map(|r| r.text)
                .unwrap_or_else(|| format!("Posted to #{ALERT_CHANNEL}."));
            answer(&headers, &s, StatusCode::OK, &text)
        }
    }
}

/// Applies the list filters; a bad value is reported, not fatal.
fn list_filter(f: &ListFilter) -> (IncidentFilter, Option<String>) {
    let mut filter = IncidentFilter {
        limit: SCAN_LIMIT,
        ..Default::default()
    };
    let mut error = None;
    match f.status.as_deref().unwrap_or("all") {
        "all" | "" => {}
        "open" => filter.active = Some(true),
        "resolved" => filter.active = Some(false),
        other => match other.parse::<Status>() {
            Ok(st) => filter.status = Some(st),
            Err(e) => error = Some(e),
        },
    }
    if let Some(sev) = f.severity.as_deref().filter(|s| !s.is_empty()) {
        match sev.parse::<Severity>() {
            Ok(s) => filter.severity = Some(s),
            Err(e) => error = Some(e),
        }
    }
    (filter, error)
}

async fn incidents(
    State(st): State<ConsoleState>,
    PageUser(s): PageUser,
    Query(f): Query<ListFilter>,
) -> Response {
    let (filter, error) = list_filter(&f);
    let store = st.0.service.store().clone();
    let list = match blocking(move || store.list_incidents(&filter)).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let kind = f.kind.clone().filter(|k| !k.is_empty());
    let q =
        f.q.as_deref()
            .map(|q| q.trim().to_lowercase())
            .filter(|q| !q.is_empty());
    let list: Vec<_> = list
        .into_iter()
        .filter(|i| kind.as_ref().is_none_or(|k| &i.kind == k))
        .filter(|i| {
            q.as_ref().is_none_or(|q| {
                i.id.to_string().to_lowercase().contains(q)
                    || i.title.to_lowercase().contains(q)
                    || i.description
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(q))
                    || i.labels
                        .iter()
                        .any(|(k, v)| k.to_lowercase().contains(q) || v.to_lowercase().contains(q))
            })
        })
        .collect();
    let cfg = st.0.service.config();
    let kinds: Vec<(String, String)> = cfg
        .classifier
        .kinds
        .iter()
        .map(|k| (k.id.clone(), k.name.clone()))
        .collect();
    let kind_name = |id: &str| cfg.classifier.kind_name(id).to_string();
    pages::incidents_page(&viewer(&s), &list, &f, &kinds, &kind_name, error.as_deref())
        .into_response()
}

async fn incident(
    State(st): State<ConsoleState>,
    PageUser(s): PageUser,
    Path(id): Path<String>,
) -> Response {
    let v = viewer(&s);
    let Ok(id) = id.parse::<IncidentId>() else {
        return (
            StatusCode::NOT_FOUND,
            pages::not_found(&v, &format!("{id:?} is not an incident id.")),
        )
            .into_response();
    };
    let store = st.0.service.store().clone();
    let got = blocking(move || {
        Ok((
            store.get_incident(id)?,
            store.timeline(id)?,
            store.executions(id)?,
        ))
    })
    .await;
    let (inc, timeline, executions) = match got {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(inc) = inc else {
        return (
            StatusCode::NOT_FOUND,
            pages::not_found(&v, &format!("{id} does not exist.")),
        )
            .into_response();
    };
    let cfg = st.0.service.config();
    let mut card = crate::engine::card(&inc, cfg);
    // The chart as the last delivered card had it (fetched by the outbox, not here).
    card.chart = st.0.port.chart(id);
    let report = crate::domain::report::render_markdown(&inc, &timeline, &cfg.classifier);
    pages::incident_page(
        &v,
        &pages::IncidentView {
            card: &card,
            incident: &inc,
            timeline: &timeline,
            executions: &executions,
            replies: &st.0.port.thread(id),
            report: &report,
            now: Utc::now(),
        },
    )
    .into_response()
}

#[derive(Deserialize)]
struct StatsQuery {
    days: Option<String>,
}

async fn stats_page(
    State(st): State<ConsoleState>,
    PageUser(s): PageUser,
    Query(q): Query<StatsQuery>,
) -> Response {
    let (days, note) = stats::window(q.days.as_deref());
    let figures = match st.0.service.engine().stats(days).await {
        Ok(f) => f,
        Err(e) => return internal(e),
    };
    let store = st.0.service.store().clone();
    let filter = IncidentFilter {
        limit: SCAN_LIMIT,
        ..Default::default()
    };
    let list = match blocking(move || store.list_incidents(&filter)).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let now = Utc::now();
    let cfg = st.0.service.config();
    let mut by_kind: Vec<(String, usize)> = figures
        .by_kind
        .iter()
        .map(|(k, n)| (cfg.classifier.kind_name(k).to_string(), *n))
        .collect();
    by_kind.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let view = stats::StatsView {
        days,
        note,
        targets: crate::domain::severity::ALL
            .iter()
            .map(|sev| {
                let t = cfg.targets(*sev);
                (sev.to_string(), t.detect_seconds, t.repair_seconds)
            })
            .collect(),
        by_status: stats::by_status(&list, now - chrono::Duration::days(days.into())),
        by_kind,
        per_day: crate::domain::stats::trend(&list, now, days, 1),
        per_week: crate::domain::stats::trend(&list, now, days, 7),
        stats: figures,
    };
    let page: Markup = pages::stats_page(&viewer(&s), &view);
    page.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_commands_are_recognized() {
        assert_eq!(slash_command("/incident list"), Some("list"));
        assert_eq!(slash_command("  /incident  ack INC-1 "), Some("ack INC-1"));
        assert_eq!(slash_command("/incident"), Some(""));
        assert_eq!(slash_command("/incidents"), None);
        assert_eq!(slash_command("[FIRING:1] x"), None);
    }

    #[test]
    fn list_filters_report_bad_values() {
        let (f, e) = list_filter(&ListFilter {
            status: Some("open".into()),
            severity: Some("P1".into()),
            ..Default::default()
        });
        assert_eq!(f.active, Some(true));
        assert_eq!(f.severity, Some(Severity::P1));
        assert!(e.is_none());
        let (_, e) = list_filter(&ListFilter {
            status: Some("nope".into()),
            ..Default::default()
        });
        assert!(e.is_some());
    }
}
