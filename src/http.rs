//! The axum router: webhooks in, the read API out, health checks. Every webhook is answered only
//! after its alerts are durable (the engine's group commit has fsynced them).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::{error, info, info_span, warn, Instrument};

use crate::chat::health::Connection;
use crate::config::{Config, Secret};
use crate::domain::alert::Alert;
use crate::domain::incident::{IncidentId, Status};
use crate::domain::severity::Severity;
use crate::engine::runner::Engine;
use crate::engine::{Input, Outcome};
use crate::ingest::{self, DecodeError};
use crate::ports::{IncidentFilter, Store};

mod actions;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub cfg: Arc<Config>,
    /// The chat platforms' long-lived connections (readiness, `incidentd_chat_connected`).
    pub chat: Vec<Arc<Connection>>,
}

/// What a standby replica serves (docs/replicas.md): alive (`/healthz` 200) but not ready
/// (`/readyz` 503), and 503 with `Retry-After: 1` on every other path, so a load balancer that
/// routes on readiness sends webhooks to the leader and senders retry what reaches a standby.
pub fn standby_router() -> Router {
    let refuse = || async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "standby: another replica leads; retry\n",
        )
    };
    Router::new()
        .route("/healthz", get(|| async { "ok (standby)" }))
        .route("/readyz", get(refuse))
        .fallback(refuse)
}

pub fn router(state: AppState) -> Router {
    let limit = state.cfg.server.max_body_bytes;
    Router::new()
        .route("/api/v1/alerts/alertmanager", post(alertmanager))
        .route("/api/v1/alerts/grafana", post(grafana))
        .route("/api/v1/alerts", post(generic))
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(get_incident))
        .route("/api/v1/incidents/{id}/report.md", get(get_report))
        .route("/api/v1/stats", get(get_stats))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(actions::routes())
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A JSON error body: `{"error": "..."}` with the status.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    let reference = format!("{:08x}", rand::random::<u32>());
    error!(error = %e, reference = %reference, "Internal error.");
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error (ref {reference})"),
    )
}

/// A store that fails or stalls is 503 with what happened (the sender retries later); anything
/// else is an internal error.
fn engine_error(e: &crate::engine::runner::EngineError) -> ApiError {
    if e.is_unavailable() {
        warn!(error = %e, "Webhook not acknowledged: the store cannot make it durable.");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not stored, retry later: {e}"),
        )
    } else {
        internal(e)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(internal)
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_auth(headers: &HeaderMap, token: Option<&Secret>) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.trim().as_bytes(), token.expose().as_bytes()) => Ok(()),
        _ => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        )),
    }
}

fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "expected Content-Type: application/json, got {:?}",
                if ct.is_empty() { "nothing" } else { ct }
            ),
        ))
    }
}

fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        let status = r.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body too large".to_string()
        } else {
            r.body_text()
        };
        ApiError(status, msg)
    })
}

fn decode_error(e: DecodeError) -> ApiError {
    let status = match e {
        DecodeError::Json(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError(status, e.to_string())
}

async fn ingest_alerts(
    state: AppState,
    source: &'static str,
    headers: HeaderMap,
    token: Option<Secret>,
    bytes: Result<Bytes, BytesRejection>,
    decode: fn(&[u8]) -> Result<Vec<Alert>, DecodeError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_auth(&headers, token.as_ref())?;
    check_json(&headers)?;
    let bytes = body(bytes)?;
    let alerts = decode(&bytes).map_err(|e| {
        warn!(source, error = %e, "Rejected webhook payload.");
        decode_error(e)
    })?;
    let n = alerts.len();
    let results = state
        .engine
        .submit(alerts.into_iter().map(Input::Alert).collect())
        .instrument(info_span!("ingest", source, alerts = n))
        .await
        .map_err(|e| engine_error(&e))?;
    let outcomes: Vec<serde_json::Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(o) => {
                if let Some(id) = o.incident.filter(|_| o.created) {
                    info!(source, incident = %id, "Incident opened.");
                }
                outcome_json(&o)
            }
            Err(e) => json!({ "error": e.0 }),
        })
        .collect();
    Ok(Json(json!({ "accepted": n, "results": outcomes })))
}

/// An incident as the API shows it: its id, and every incident id in it, as `INC-n` (the
/// stored records hold the number).
fn incident_json(inc: &crate::domain::incident::Incident) -> serde_json::Value {
    let mut v = serde_json::to_value(inc).unwrap_or_default();
    v["id"] = json!(inc.id.to_string());
    incident_ids(&mut v);
    v
}

/// Rewrites the numbers under `incident`, `last` (a recurrence's previous incident) and
/// `storm_thread` (the incident whose card summarizes its storm) as `INC-n`, at any depth.
fn incident_ids(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match (k.as_str(), x.as_u64()) {
                    ("incident" | "last" | "storm_thread", Some(n)) => {
                        *x = json!(IncidentId(n).to_string())
                    }
                    _ => incident_ids(x),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(incident_ids),
        _ => {}
    }
}

fn outcome_json(o: &Outcome) -> serde_json::Value {
    json!({
        "incident": o.incident.map(|i| i.to_string()),
        "created": o.created,
        "note": o.reply,
    })
}

async fn alertmanager(
    State(s): State<AppState>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = s.cfg.webhooks.alertmanager.clone();
    ingest_alerts(
        s,
        "alertmanager",
        headers,
        token,
        b,
        ingest::decode_alertmanager,
    )
    .await
}

async fn grafana(
    State(s): State<AppState>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = s.cfg.webhooks.grafana.clone();
    ingest_alerts(s, "grafana", headers, token, b, ingest::decode_grafana).await
}

async fn generic(
    State(s): State<AppState>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = s.cfg.webhooks.generic.clone();
    ingest_alerts(s, "generic", headers, token, b, ingest::decode_generic).await
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    severity: Option<String>,
    limit: Option<usize>,
}

async fn list_incidents(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let mut filter = IncidentFilter {
        limit: q.limit.unwrap_or(100).min(1000),
        ..Default::default()
    };
    match q.status.as_deref().unwrap_or("open") {
        "open" | "active" => filter.active = Some(true),
        "resolved" | "inactive" => filter.active = Some(false),
        "all" => {}
        other => filter.status = Some(other.parse::<Status>().map_err(|_| {
            bad(format!(
                "status must be open, resolved, all or one of the states (e.g. acknowledged), not {other:?}"
            ))
        })?),
    }
    if let Some(sev) = q.severity {
        filter.severity = Some(sev.parse::<Severity>().map_err(bad)?);
    }
    let store = s.store.clone();
    let list = blocking(move || store.list_incidents(&filter))
        .await?
        .map_err(internal)?;
    let list: Vec<serde_json::Value> = list.iter().map(incident_json).collect();
    Ok(Json(json!({ "incidents": list })))
}

async fn get_incident(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: IncidentId = id
        .parse()
        .map_err(|e: String| ApiError(StatusCode::BAD_REQUEST, e))?;
    let store = s.store.clone();
    let (inc, timeline, executions) = blocking(move || {
        Ok::<_, crate::ports::StoreError>((
            store.get_incident(id)?,
            store.timeline(id)?,
            store.executions(id)?,
        ))
    })
    .await?
    .map_err(internal)?;
    let inc = inc.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("{id} does not exist")))?;
    let timeline: Vec<serde_json::Value> = timeline
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            v["text"] = json!(e.describe());
            v
        })
        .collect();
    let mut executions = serde_json::to_value(executions).map_err(internal)?;
    incident_ids(&mut executions);
    let mut timeline = serde_json::Value::from(timeline);
    incident_ids(&mut timeline);
    let mut card = serde_json::to_value(crate::engine::card(&inc, &s.cfg)).map_err(internal)?;
    incident_ids(&mut card);
    Ok(Json(json!({
        "incident": incident_json(&inc),
        "card": card,
        "timeline": timeline,
        "executions": executions,
    })))
}

async fn get_report(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: IncidentId = id
        .parse()
        .map_err(|e: String| ApiError(StatusCode::BAD_REQUEST, e))?;
    let store = s.store.clone();
    let (inc, timeline) = blocking(move || {
        Ok::<_, crate::ports::StoreError>((store.get_incident(id)?, store.timeline(id)?))
    })
    .await?
    .map_err(internal)?;
    let inc = inc.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("{id} does not exist")))?;
    let md = crate::domain::report::render_markdown(&inc, &timeline, &s.cfg.classifier);
    Ok(([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], md).into_response())
}

#[derive(Debug, Deserialize)]
struct StatsQuery {
    /// `7d`, `30d` or a number of days.
    window: Option<String>,
}

async fn get_stats(
    State(s): State<AppState>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let days = match q.window.as_deref() {
        None => 7,
        Some(w) => w
            .trim_end_matches('d')
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("window must be like 7d or 30d (1 to 365 days), not {w:?}"),
                )
            })?,
    };
    let stats = s.engine.stats(days).await.map_err(internal)?;
    Ok(Json(serde_json::to_value(stats).map_err(internal)?))
}

/// Prometheus exposition (OpenMetrics text): counters and histograms recorded as things
/// happen, gauges computed now (outbox depth, active incidents, chat connections, the 30-day
/// outcome numbers), the process's numbers and the build.
async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    use crate::telemetry::metrics::{Outcomes, Scrape, CONTENT_TYPE};
    let depth = s.store.outbox_len();
    let st = s.engine.stats(30).await.map_err(internal)?;
    let active = s.engine.active_incidents().await.map_err(internal)?;
    let scrape = Scrape {
        ready: readiness(&s).await.is_ok(),
        outbox_depth: depth as u64,
        incidents_active: active as u64,
        chat_connected: s
            .chat
            .iter()
            .map(|c| (c.platform().to_string(), c.state().connected))
            .collect(),
        outcomes: Outcomes {
            mttr_seconds: st.mttr.mean_seconds,
            mttr_median_seconds: st.mttr.median_seconds,
            mttr_p90_seconds: st.mttr.p90_seconds,
            mttr_from_alert_start_seconds: st.mttr_from_start.mean_seconds,
            mttr_automated_seconds: st.mttr_automated.mean_seconds,
            mtta_seconds: st.mtta.mean_seconds,
            mtta_median_seconds: st.mtta.median_seconds,
            manual_intervention_ratio: st.manual_intervention_rate,
            auto_remediation_success_ratio: st.auto_remediation_success_rate,
            rca_completion_ratio: st.rca_completion_rate,
            recurrence_ratio: st.recurrence_rate,
            followup_completion_ratio: st.followup_completion.rate,
            followups_overdue: Some(st.followups_overdue as f64),
        },
    };
    let text = s.engine.metrics().render(scrape);
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

async fn readyz(State(s): State<AppState>) -> Response {
    match readiness(&s).await {
        Ok(()) => "ready".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// Whether incidentd takes input: the writer runs, writes are made durable, no chat platform
/// refused the bot for good, and the store answers. `/readyz` and `incidentd_ready` say the same.
async fn readiness(s: &AppState) -> Result<(), String> {
    if !s.engine.is_running() {
        return Err("engine stopped".into());
    }
    // While writes fail, each probe tries one sync: the first that succeeds makes it ready again
    // (a freed disk, a remounted volume), without waiting for the next alert — unless a webhook
    // write failed: then only an alert stored again does (see `StoreHealth::check`).
    if s.engine.store_health().is_err() {
        if s.engine.store_health_failing() {
            let probe = s.engine.sync();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), probe).await;
        }
        s.engine.store_health()?;
    }
    // A platform that refused the bot (wrong token, missing intent) will not come back by
    // itself: the bot is deaf there, so it is not ready.
    for c in &s.chat {
        let st = c.state();
        if st.down_for_good {
            let error = st.last_error.unwrap_or_default();
            return Err(format!(
                "{} connection down since {}: {error}",
                c.platform(),
                st.since.to_rfc3339()
            ));
        }
    }
    let store = s.store.clone();
    let read = blocking(move || store.next_incident_id());
    match tokio::time::timeout(std::time::Duration::from_secs(2), read).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(_) => Err("store unavailable".into()),
        Err(_) => Err("store does not answer reads".into()),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// connections finish their requests (the caller bounds how long). Hostile or broken clients
/// cannot exhaust the process:
/// - at most `max_connections` connections are served at once; further clients wait in the
///   kernel's accept queue (they hold no file descriptor of the process) and are served as
///   connections close;
/// - a connection that has not sent a request's complete headers within `header_read_timeout`
///   of opening, or of its previous response, is closed (slowloris; hyper starts that clock
///   whenever it waits for a request head, so it also bounds idle keep-alive connections);
/// - a connection with no bytes in either direction for `idle_timeout` is closed (a stalled
///   body upload, a dead peer; the console's event stream pings every 15 s).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    cfg: &crate::config::ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let limit = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .keep_alive(true);
    let idle = cfg.idle_timeout;
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => p.expect("the connection semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors (EMFILE) or a connection reset before accept:
                    // pause a moment instead of spinning.
                    warn!(error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let io = Activity::new(stream);
        let last = io.clock.clone();
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "Connection closed with an error.");
                        }
                        break;
                    }
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = tokio::time::sleep(last.left(idle)) => {
                        if last.left(idle).is_zero() {
                            tracing::debug!("Closing a connection idle for {idle:?}.");
                            break;
                        }
                    }
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// When a connection last moved a byte.
struct LastActivity {
    start: tokio::time::Instant,
    /// Milliseconds since `start`.
    at: std::sync::atomic::AtomicU64,
}

impl LastActivity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.at.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long until the connection has been idle for `idle`.
    fn left(&self, idle: std::time::Duration) -> std::time::Duration {
        let at =
            std::time::Duration::from_millis(self.at.load(std::sync::atomic::Ordering::Relaxed));
        (at + idle).saturating_sub(self.start.elapsed())
    }
}

/// A TCP stream that notes when it last read or wrote a byte.
struct Activity {
    stream: tokio::net::TcpStream,
    clock: Arc<LastActivity>,
}

impl Activity {
    fn new(stream: tokio::net::TcpStream) -> Activity {
        Activity {
            stream,
            clock: Arc::new(LastActivity {
                start: tokio::time::Instant::now(),
                at: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }
}

impl tokio::io::AsyncRead for Activity {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl tokio::io::AsyncWrite for Activity {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
