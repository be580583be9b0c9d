//! Load test of the real webhook path: Alertmanager v4 webhooks over HTTP, each answered only
//! once its alerts are durable (one group commit: a sled transaction and a sled `flush`),
//! measured end to end from the client.
//!
//! By default every HTTP scenario starts a fresh incidentd in-process (`incidentd::app::run` on
//! 127.0.0.1:0, built-in config, a temp sled store, a `RecordingPort` as the only chat sink, so
//! the outbox delivers while the load runs; `--chat stalled` swaps in a sink that never answers,
//! to measure the write path alone). With `--url http://127.0.0.1:PORT` it targets an
//! already-running incidentd instead (only 127.0.0.1/localhost are accepted). Scenarios
//! (`--scenario a,b,…`, all by default):
//!
//! - `single`: one alert per request, 64 concurrent senders, 20 000 alerts;
//! - `batched`: 100 alerts per request, 8 senders, 200 000 alerts;
//! - `dedup`: 100 000 alerts over exactly 100 fingerprints, 100 per request, 8 senders; then
//!   `GET /api/v1/incidents?status=all&limit=1000` must show exactly 100 incidents of this run;
//! - `sled-baseline`: raw sled in a temp dir with the batched shape and the same durability:
//!   per "request" 100 inserts of 1 KiB (`--sled-value-bytes`) and one `flush`, from 8 threads;
//! - `pg-baseline`: raw PostgreSQL with the batched shape and the same durability as the
//!   PostgreSQL store: per "request" one transaction inserting 100 rows of 1 KiB
//!   (`--sled-value-bytes`) with one multi-row `INSERT … SELECT FROM UNNEST`, committed with
//!   `synchronous_commit = on`, from 8 connections.
//!
//! `--store postgres` runs the app on the PostgreSQL store instead of sled: a throw-away
//! cluster (Debian's `initdb`/`pg_ctl`, `fsync = on`) on loopback, a fresh database per
//! scenario, stopped at the end. With `--takeover` each HTTP scenario is followed by two timed
//! restarts on its database: as it was left (the storm's journal unfolded, what a new leader
//! replays after taking over from a leader killed in a storm) and once everything is folded.
//!
//! For each it prints alerts, requests, errors, seconds, alerts/s, requests/s and per-request
//! latency percentiles, then the ratio of incidentd's batched throughput to the sled baseline
//! and a check against the targets (≥ 10 000 alerts/s durable, p99 ≤ 50 ms per request).
//! Every request must get 200 and one result per alert; any error makes the exit code 1. Each
//! scenario stops taking new requests after `--max-seconds` (default 120).
//!
//! Senders use a minimal keep-alive HTTP/1.1 client (one connection each, requests pre-built
//! before the clock starts), so that the load takes as little as possible of the CPU the server
//! under test shares with it.
//!
//! Run: `cargo run --release --example load -- [--scenario batched] [--url http://127.0.0.1:8080]`
//! (`--help` lists the sizes that can be changed).

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::{Parser, ValueEnum};
use incidentd::app::{run, Deps};
use incidentd::chat::recording::RecordingPort;
use incidentd::config::Config;
use incidentd::engine::outbox::OutboxConfig;
use incidentd::ports::{ChatError, ChatPort, Delivered, OutboundMessage, SystemClock};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The bot's allocator (see Cargo.toml): glibc malloc's arena locks cost the writer thread
/// and sled's I/O threads about a quarter of their time under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Per-request client timeout (a hung request is an error, not a hang).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop of the in-process app may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The targets reported against.
const TARGET_ALERTS_PER_SEC: f64 = 10_000.0;
const TARGET_P99: Duration = Duration::from_millis(50);

/// The chat sink of the in-process app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Chat {
    /// `RecordingPort`: every queued message is delivered (and its outbox entry deleted and
    /// fsynced) while the load runs, as with a fast chat platform.
    Recording,
    /// A port that never answers: nothing is delivered, so no outbox work competes with
    /// ingest (isolates the write path).
    Stalled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Single,
    Batched,
    Dedup,
    SledBaseline,
    PgBaseline,
}

/// The store the in-process app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Sled,
    Postgres,
}

#[derive(Debug, Parser)]
#[command(about = "Durable ingest load test for incidentd (loopback only)")]
struct Args {
    /// Target an already-running incidentd (http://127.0.0.1:PORT or http://localhost:PORT)
    /// instead of starting one in-process.
    #[arg(long)]
    url: Option<String>,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "single,batched,dedup,sled-baseline"
    )]
    scenario: Vec<Scenario>,
    /// `single`: alerts (one per request).
    #[arg(long, default_value_t = 20_000)]
    single_alerts: usize,
    /// `single`: concurrent senders.
    #[arg(long, default_value_t = 64)]
    single_senders: usize,
    /// `batched` and `sled-baseline`: alerts.
    #[arg(long, default_value_t = 200_000)]
    batched_alerts: usize,
    /// `batched`, `dedup` and `sled-baseline`: concurrent senders (threads for sled).
    #[arg(long, default_value_t = 8)]
    batched_senders: usize,
    /// `batched`, `dedup` and `sled-baseline`: alerts per request.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// `dedup`: alerts.
    #[arg(long, default_value_t = 100_000)]
    dedup_alerts: usize,
    /// `dedup`: distinct fingerprints (at most 1000, the listing limit).
    #[arg(long, default_value_t = 100)]
    dedup_fingerprints: usize,
    /// `batched`: spread the alerts over this many groups (Alertmanager groups of one service
    /// each), so that exactly this many incidents open; by default every alert is a group of
    /// its own and opens an incident (the writer's worst case).
    #[arg(long)]
    groups: Option<usize>,
    /// `sled-baseline`: bytes per inserted value.
    #[arg(long, default_value_t = 1024)]
    sled_value_bytes: usize,
    /// The in-process app's chat sink (ignored with `--url`).
    #[arg(long, value_enum, default_value = "recording")]
    chat: Chat,
    /// Leave transparent huge pages as the system has them, instead of turning them off as the
    /// `incidentd` binary does (to measure what that costs).
    #[arg(long)]
    keep_huge_pages: bool,
    /// The in-process app's store (ignored with `--url`).
    #[arg(long, value_enum, default_value = "sled")]
    store: StoreKind,
    /// Hard cap per scenario: no new request starts after this many seconds.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    /// With `--store postgres`: after each HTTP scenario, time a restart on the same database
    /// as it was left (the storm's journal unfolded, as a new leader finds it after a take-over),
    /// then again once everything is folded.
    #[arg(long)]
    takeover: bool,
}

/// The shape of one HTTP scenario.
#[derive(Debug, Clone)]
struct Shape {
    name: &'static str,
    alerts: usize,
    per_request: usize,
    senders: usize,
    /// `Some(k)`: alert `i` repeats fingerprint `i % k`; `None`: every alert is new.
    fingerprints: Option<usize>,
    /// `Some(g)`: alert `i` belongs to group `i % g`; `None`: each alert (fingerprint) is a
    /// group of its own.
    groups: Option<usize>,
}

impl Shape {
    fn requests(&self) -> usize {
        self.alerts.div_ceil(self.per_request)
    }
}

/// What one scenario measured.
#[derive(Debug, Default)]
struct Report {
    name: String,
    /// Alerts acknowledged with a result (no error).
    alerts: usize,
    /// Requests answered 200 with one valid result per alert.
    requests: usize,
    errors: usize,
    elapsed: Duration,
    /// One per completed request, sorted.
    latencies: Vec<Duration>,
    /// Stopped by `--max-seconds` before all requests were sent.
    capped: bool,
    notes: Vec<String>,
}

impl Report {
    fn alerts_per_sec(&self) -> f64 {
        self.alerts as f64 / self.elapsed.as_secs_f64()
    }

    fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.notes.iter().filter(|n| n.starts_with("error")).count() < 5 {
            self.notes.push(format!("error: {message}"));
        }
    }
}

/// One Alertmanager v4 alert. Labels make the fingerprint: `id` (and this run's tag) decides it.
/// Its group (`alertname` and `service`, incidentd's default `group_by`; the webhooks carry no
/// `groupLabels`, as with Alertmanager's `group_by: ['...']`) is `group`.
fn am_alert(id: usize, group: usize, tag: &str, scenario: &str) -> serde_json::Value {
    json!({
        "status": "firing",
        "labels": {
            "alertname": "HighLatency",
            "service": format!("svc-{}-{}", letters(tag_number(tag)), letters(group as u64)),
            "instance": format!("10.{}.{}.{}:9100", (id >> 16) & 255, (id >> 8) & 255, id & 255),
            "job": "node",
            "severity": "warning",
            "load_id": id.to_string(),
            "load_run": tag,
            "load_scenario": scenario,
        },
        "annotations": {
            "summary": "p99 latency above 500 ms",
            "description": "The service answers slowly for more than 5 minutes.",
            "runbook_url": "https://runbooks.example.com/HighLatency",
        },
        "startsAt": "2026-11-29T12:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=latency",
        "fingerprint": format!("{id:016x}"),
    })
}

/// `n` in letters (`a`, `b`, …, `ba`): service names without numbers, which classification
/// would read as words (a service `svc-502` would look like an HTTP 502).
fn letters(mut n: u64) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}

/// This run's tag as a number (its digits).
fn tag_number(tag: &str) -> u64 {
    tag.bytes().filter(u8::is_ascii_digit).fold(0u64, |n, d| {
        n.wrapping_mul(10).wrapping_add((d - b'0') as u64)
    })
}

/// The request bodies of a scenario, built before the clock starts.
fn bodies(shape: &Shape, tag: &str) -> Vec<(usize, String)> {
    (0..shape.requests())
        .map(|r| {
            let range = r * shape.per_request..((r + 1) * shape.per_request).min(shape.alerts);
            let n = range.len();
            let alerts: Vec<_> = range
                .map(|i| {
                    let id = shape.fingerprints.map_or(i, |k| i % k);
                    let group = shape.groups.map_or(id, |g| i % g);
                    am_alert(id, group, tag, shape.name)
                })
                .collect();
            let body = json!({
                "version": "4",
                "groupKey": "{}:{alertname=\"HighLatency\"}",
                "truncatedAlerts": 0,
                "status": "firing",
                "receiver": "incidentd",
                "groupLabels": {},
                "commonLabels": {"alertname": "HighLatency", "severity": "warning"},
                "commonAnnotations": {},
                "externalURL": "http://alertmanager:9093",
                "alerts": alerts,
            });
            (n, body.to_string())
        })
        .collect()
}

/// The webhook answer: one result per alert.
#[derive(Deserialize)]
struct WebhookReply {
    accepted: usize,
    results: Vec<AlertResult>,
}

#[derive(Deserialize)]
struct AlertResult {
    incident: Option<String>,
    #[serde(default)]
    created: bool,
    error: Option<String>,
}

/// What one sender saw.
#[derive(Default)]
struct SenderStats {
    alerts: usize,
    requests: usize,
    created: usize,
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

/// One sender's keep-alive HTTP/1.1 connection: requests go out as pre-built bytes and answers
/// are read just far enough to check them (status line, `Content-Length`, body), as wrk or oha
/// do. The load runs on the same two cores as the server, so what the client spends is taken
/// from the server: reqwest took about 50 µs of CPU per request (URL parsing, header maps, its
/// middleware layers), a quarter of the whole budget at 10 000 requests/s.
struct Conn {
    addr: String,
    stream: Option<tokio::io::BufStream<tokio::net::TcpStream>>,
}

/// The largest answer head (status line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;

impl Conn {
    fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_string(),
            stream: None,
        }
    }

    /// Sends one request and returns the answer's status and body. After any error the
    /// connection is dropped (the next request opens a new one).
    async fn send(&mut self, request: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let result = self.exchange(request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        if self.stream.is_none() {
            let tcp = tokio::net::TcpStream::connect(&self.addr)
                .await
                .with_context(|| format!("connect {}", self.addr))?;
            tcp.set_nodelay(true)?;
            self.stream = Some(tokio::io::BufStream::new(tcp));
        }
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(request).await?;
        stream.flush().await?;
        let mut line = Vec::new();
        let mut head = 0;
        let mut read_line = async |line: &mut Vec<u8>| -> anyhow::Result<()> {
            line.clear();
            let n = stream.read_until(b'\n', line).await?;
            ensure!(n > 0, "the server closed the connection");
            head += n;
            ensure!(head <= MAX_HEAD, "answer head larger than {MAX_HEAD} bytes");
            Ok(())
        };
        read_line(&mut line).await?;
        let status_line = String::from_utf8_lossy(&line).trim_end().to_string();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let (mut length, mut close) = (None, false);
        loop {
            read_line(&mut line).await?;
            let header = String::from_utf8_lossy(&line);
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                bail!("bad header line {header:?}");
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("content-length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("transfer-encoding {value} is not supported by the load client");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let length = length.context("answer without content-length")?;
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }
}

/// The bytes of one webhook request.
fn request_bytes(host: &str, body: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /api/v1/alerts/alertmanager HTTP/1.1\r\nhost: {host}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// Posts one request and checks the answer; returns (alerts acknowledged, incidents created).
async fn post(conn: &mut Conn, request: &[u8], n: usize) -> anyhow::Result<(usize, usize)> {
    let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, conn.send(request))
        .await
        .map_err(|_| {
            conn.stream = None;
            anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")
        })??;
    ensure!(
        status == 200,
        "HTTP {status}: {}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
    );
    let reply: WebhookReply = serde_json::from_slice(&bytes).context("reply body")?;
    ensure!(
        reply.accepted == n && reply.results.len() == n,
        "sent {n} alerts, got accepted={} and {} results",
        reply.accepted,
        reply.results.len()
    );
    if let Some(e) = reply.results.iter().find_map(|r| r.error.as_ref()) {
        bail!("an alert was refused: {e}");
    }
    ensure!(
        reply.results.iter().all(|r| r.incident.is_some()),
        "a firing alert got no incident"
    );
    Ok((n, reply.results.iter().filter(|r| r.created).count()))
}

/// Sends every body of a scenario from `senders` concurrent tasks.
async fn run_http(shape: &Shape, base: &str, tag: &str, cap: Duration) -> Report {
    // `base` passed `check_url` (or is the in-process app's http://127.0.0.1:PORT).
    let parsed = reqwest::Url::parse(base).expect("checked URL");
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
    let addr = format!("{host}:{}", parsed.port_or_known_default().unwrap_or(80));
    let requests: Vec<(usize, Vec<u8>)> = bodies(shape, tag)
        .into_iter()
        .map(|(n, body)| (n, request_bytes(&addr, &body)))
        .collect();
    let bodies = Arc::new(requests);
    let addr = Arc::new(addr);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + cap;
    let tasks: Vec<JoinHandle<SenderStats>> = (0..shape.senders)
        .map(|_| {
            let (bodies, addr, next) = (bodies.clone(), addr.clone(), next.clone());
            tokio::spawn(async move {
                let mut s = SenderStats::default();
                let mut conn = Conn::new(&addr);
                // The deadline is checked before taking a request, so `next` counts exactly
                // the requests taken (plus one per sender that found none left).
                while Instant::now() < deadline {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    if r >= bodies.len() {
                        break;
                    }
                    let (n, request) = &bodies[r];
                    let t = Instant::now();
                    match post(&mut conn, request, *n).await {
                        Ok((alerts, created)) => {
                            s.latencies.push(t.elapsed());
                            s.alerts += alerts;
                            s.created += created;
                            s.requests += 1;
                        }
                        Err(e) => s.errors.push(format!("request {r}: {e:#}")),
                    }
                }
                s
            })
        })
        .collect();
    let mut report = Report {
        name: shape.name.to_string(),
        ..Report::default()
    };
    let mut created = 0;
    for t in tasks {
        match t.await {
            Ok(s) => {
                report.alerts += s.alerts;
                report.requests += s.requests;
                report.latencies.extend(s.latencies);
                created += s.created;
                for e in s.errors {
                    report.error(e);
                }
            }
            Err(e) => report.error(format!("sender task: {e}")),
        }
    }
    report.elapsed = start.elapsed();
    report.latencies.sort_unstable();
    let sent = next.load(Ordering::Relaxed).min(bodies.len());
    if sent < bodies.len() {
        report.capped = true;
        report.notes.push(format!(
            "capped at {}s: {sent} of {} requests sent",
            cap.as_secs(),
            bodies.len()
        ));
    }
    report.notes.push(format!("{created} incidents created"));
    // Every alert of this run opens an incident unless the scenario repeats fingerprints or
    // spreads its alerts over fewer groups.
    let expected = match (shape.fingerprints, shape.groups) {
        (Some(k), _) => k,
        (None, Some(g)) => g.min(report.alerts),
        (None, None) => report.alerts,
    };
    if created != expected && report.errors == 0 {
        report.error(format!(
            "expected {expected} incidents created, the results say {created}"
        ));
    }
    report
}

/// The incidents of this run's `dedup` scenario must be exactly `expected` and count `alerts`
/// alerts between them; `fresh` also requires that nothing else is stored (a new in-process
/// store). Returns how they were triaged.
async fn verify_dedup(
    base: &str,
    tag: &str,
    expected: usize,
    alerts: usize,
    fresh: bool,
) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct Listing {
        incidents: Vec<serde_json::Value>,
    }
    let url = format!("{base}/api/v1/incidents?status=all&limit=1000");
    let resp = reqwest::Client::new()
        .get(&url)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "GET {url}: HTTP {}",
        resp.status()
    );
    let list: Listing = resp.json().await.context("incident listing")?;
    let ours: Vec<_> = list
        .incidents
        .iter()
        .filter(|i| i["labels"]["load_run"] == tag && i["labels"]["load_scenario"] == "dedup")
        .collect();
    ensure!(
        ours.len() == expected,
        "DEDUP FAILED: {} incidents for {expected} fingerprints",
        ours.len()
    );
    let counted: u64 = ours.iter().filter_map(|i| i["alert_count"].as_u64()).sum();
    ensure!(
        counted == alerts as u64,
        "DEDUP FAILED: the incidents count {counted} alerts, {alerts} were acknowledged"
    );
    if fresh {
        ensure!(
            list.incidents.len() == expected,
            "DEDUP FAILED: the fresh store holds {} incidents, expected {expected}",
            list.incidents.len()
        );
    }
    let mut triage: Vec<String> = ours
        .iter()
        .map(|i| format!("{} {} playbook {}", i["severity"], i["kind"], i["playbook"]))
        .collect();
    triage.sort();
    triage.dedup();
    Ok(triage.join("; "))
}

/// A chat platform that never answers.
struct StalledPort;

#[async_trait::async_trait]
impl ChatPort for StalledPort {
    fn name(&self) -> &str {
        "load"
    }

    async fn deliver(&self, _msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        std::future::pending().await
    }
}

/// incidentd running in this process on 127.0.0.1:0 with a temp store.
struct LocalApp {
    base: String,
    dir: tempfile::TempDir,
    /// The recording sink, to count deliveries (`None` when stalled).
    port: Option<Arc<RecordingPort>>,
    shutdown: oneshot::Sender<()>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl LocalApp {
    async fn start(chat: Chat, pg: Option<String>) -> anyhow::Result<LocalApp> {
        let dir = tempfile::Builder::new()
            .prefix("incidentd-load")
            .tempdir()?;
        let mut cfg = Config::builtin();
        cfg.store.path = dir.path().join("store");
        // The config's own dependencies, with our sink as the only chat destination (the
        // built-in console surface would double every outbox entry and its fsync).
        let mut deps = Deps::from_config(&cfg).context("incidentd dependencies")?;
        deps.surfaces = Vec::new();
        deps.clock = Arc::new(SystemClock);
        deps.outbox = OutboxConfig::default();
        let port = match chat {
            Chat::Recording => {
                let port = Arc::new(RecordingPort::new("load"));
                deps.sinks = vec![port.clone()];
                Some(port)
            }
            Chat::Stalled => {
                deps.sinks = vec![Arc::new(StalledPort)];
                // A stuck call holds the outbox worker, and so a graceful stop, this long.
                deps.outbox.call_timeout = Duration::from_secs(1);
                None
            }
        };
        if let Some(url) = pg {
            let store = tokio::task::spawn_blocking(move || {
                incidentd::store::pg::PgStore::open(&url, None)
            })
            .await??;
            deps.store = Some(Arc::new(store));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (shutdown, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(cfg, listener, deps, async move {
            let _ = rx.await;
        }));
        // The listener is bound, so this request waits in the accept queue until the store is
        // open, the writer runs and the server accepts: one round trip, no polling.
        let ready = reqwest::Client::new()
            .get(format!("{base}/readyz"))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .context("incidentd did not answer /readyz")?;
        ensure!(
            ready.status().is_success(),
            "incidentd not ready: HTTP {}",
            ready.status()
        );
        Ok(LocalApp {
            base,
            dir,
            port,
            shutdown,
            handle,
        })
    }

    /// Graceful stop; then notes what the run left on disk and in chat.
    async fn stop(self, report: &mut Report) {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(STOP_TIMEOUT, self.handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => report.error(format!("incidentd failed: {e:#}")),
            Ok(Err(e)) => report.error(format!("incidentd task: {e}")),
            Err(_) => report.error(format!("incidentd did not stop in {STOP_TIMEOUT:?}")),
        }
        let bytes = dir_bytes(self.dir.path());
        let chat = match &self.port {
            Some(p) => format!(
                "{} chat deliveries by the outbox during the run",
                p.attempts()
            ),
            None => "chat stalled (no outbox deliveries)".to_string(),
        };
        report.notes.push(format!(
            "store on disk {:.1} MiB ({:.0} B/alert), {chat}",
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / report.alerts.max(1) as f64,
        ));
        if let Some((rss, peak)) = memory_kib() {
            report.notes.push(format!(
                "memory of this process (app + load generator) after the run: RSS {:.0} MiB, peak so far {:.0} MiB",
                rss as f64 / 1024.0,
                peak as f64 / 1024.0
            ));
        }
    }
}

/// `VmRSS` and `VmHWM` (peak) of this process from /proc, in KiB; `None` off Linux.
fn memory_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Runs one HTTP scenario against `url`, or against a fresh in-process app.
async fn http_scenario(
    shape: &Shape,
    url: Option<&str>,
    chat: Chat,
    pg: Option<String>,
    tag: &str,
    cap: Duration,
    takeover: bool,
) -> Report {
    let local = match url {
        Some(_) => None,
        None => match LocalApp::start(chat, pg.clone()).await {
            Ok(app) => Some(app),
            Err(e) => {
                let mut r = Report {
                    name: shape.name.to_string(),
                    ..Report::default()
                };
                r.error(format!("cannot start incidentd: {e:#}"));
                return r;
            }
        },
    };
    let base = url.map_or_else(
        || local.as_ref().expect("local app").base.clone(),
        str::to_string,
    );
    let mut report = run_http(shape, &base, tag, cap).await;
    if let Some(k) = shape.fingerprints {
        match verify_dedup(&base, tag, k, report.alerts, local.is_some()).await {
            Ok(triage) => report.notes.push(format!(
                "verified: exactly {k} incidents listed for {k} fingerprints, their alert counts \
                 add up to {}; triaged as {triage}",
                report.alerts
            )),
            Err(e) => {
                eprintln!("\n!!! {e:#}\n");
                report.error(format!("{e:#}"));
            }
        }
    }
    if let Some(app) = local {
        app.stop(&mut report).await;
    }
    if let (true, Some(db)) = (takeover, pg) {
        if let Err(e) = restarts(&db, chat, &mut report).await {
            report.error(format!("restart on the same database: {e:#}"));
        }
    }
    report
}

/// Times a restart on the database `db` as the scenario left it (its journal unfolded, as a
/// new leader finds it after taking over from one killed in a storm), then folds everything
/// and times a restart again: from the start (store opened, state replayed, engine started)
/// to `/readyz` answering 200.
async fn restarts(db: &str, chat: Chat, report: &mut Report) -> anyhow::Result<()> {
    use incidentd::ports::Store;
    let open = |db: String| {
        tokio::task::spawn_blocking(move || incidentd::store::pg::PgStore::open(&db, None))
    };
    let unfolded = open(db.to_string()).await??.unfolded();
    let timed = |what: &'static str| async move {
        let t = Instant::now();
        let app = LocalApp::start(chat, Some(db.to_string())).await?;
        let took = t.elapsed();
        let mut scratch = Report::default();
        app.stop(&mut scratch).await;
        anyhow::ensure!(scratch.errors == 0, "{what}: {:?}", scratch.notes);
        Ok::<_, anyhow::Error>(took)
    };
    let unfolded_took = timed("restart with the journal").await?;
    let store = open(db.to_string()).await??;
    let t = Instant::now();
    let folded = tokio::task::spawn_blocking(move || {
        let mut n = 0;
        while store.unfolded() > 0 {
            n += store.fold(100_000)?;
        }
        Ok::<_, incidentd::ports::StoreError>(n)
    })
    .await??;
    let fold_took = t.elapsed();
    let folded_took = timed("restart after folding").await?;
    report.notes.push(format!(
        "restart on the same database: ready in {:.2} s with {unfolded} unfolded journal changes, \
         {:.2} s once folded ({folded} changes folded in {:.2} s)",
        unfolded_took.as_secs_f64(),
        folded_took.as_secs_f64(),
        fold_took.as_secs_f64(),
    ));
    Ok(())
}

/// Raw sled with the batched shape: per request, `per_request` inserts of `value_bytes` and
/// one `flush`, from `threads` threads.
fn sled_baseline(
    alerts: usize,
    per_request: usize,
    threads: usize,
    value_bytes: usize,
    cap: Duration,
) -> Report {
    let mut report = Report {
        name: "sled-baseline".to_string(),
        ..Report::default()
    };
    let dir = match tempfile::Builder::new().prefix("incidentd-sled").tempdir() {
        Ok(d) => d,
        Err(e) => {
            report.error(format!("temp dir: {e}"));
            return report;
        }
    };
    // The store's mode, so the comparison is like for like.
    let db = match sled::Config::new()
        .path(dir.path().join("raw.sled"))
        .mode(sled::Mode::HighThroughput)
        .open()
    {
        Ok(db) => db,
        Err(e) => {
            report.error(format!("open sled: {e}"));
            return report;
        }
    };
    let value = vec![0x5a_u8; value_bytes];
    drive_baseline(
        &mut report,
        (alerts, per_request, threads, cap),
        || Ok(()),
        |_, keys| {
            keys.map(|k| db.insert((k as u64).to_be_bytes(), value.as_slice()))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|_| db.flush())
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    drop(db);
    let bytes = dir_bytes(dir.path());
    report.notes.push(format!(
        "{value_bytes} B values, on disk {:.1} MiB",
        bytes as f64 / (1 << 20) as f64
    ));
    report
}

/// Raw PostgreSQL with the batched shape and the PostgreSQL store's durability: per request one
/// transaction inserting `per_request` rows of `value_bytes` (one multi-row statement) and a
/// `COMMIT` with `synchronous_commit = on`, from `threads` connections.
fn pg_baseline(
    url: &str,
    alerts: usize,
    per_request: usize,
    threads: usize,
    value_bytes: usize,
    cap: Duration,
) -> Report {
    let mut report = Report {
        name: "pg-baseline".to_string(),
        ..Report::default()
    };
    let setup = incidentd::store::pg::connect(url).and_then(|mut c| {
        c.batch_execute("CREATE TABLE raw (id int8 PRIMARY KEY, body text NOT NULL)")
            .map_err(|e| incidentd::ports::StoreError::Storage(e.to_string()))
    });
    if let Err(e) = setup {
        report.error(format!("PostgreSQL: {e}"));
        return report;
    }
    let value = "Z".repeat(value_bytes);
    drive_baseline(
        &mut report,
        (alerts, per_request, threads, cap),
        || {
            let mut c = incidentd::store::pg::connect(url).map_err(|e| e.to_string())?;
            let stmt = c
                .prepare("INSERT INTO raw (id, body) SELECT * FROM UNNEST($1::int8[], $2::text[])")
                .map_err(|e| e.to_string())?;
            Ok((c, stmt))
        },
        |(c, stmt), keys| {
            let ids: Vec<i64> = keys.map(|k| k as i64).collect();
            let bodies = vec![value.clone(); ids.len()];
            c.transaction()
                .and_then(|mut tx| {
                    tx.execute(&*stmt, &[&ids, &bodies])?;
                    tx.commit()
                })
                .map_err(|e| e.to_string())
        },
    );
    report.notes.push(format!(
        "{value_bytes} B values, synchronous_commit on, fsync on"
    ));
    report
}

/// Runs a raw baseline: `threads` workers, each with its own state from `open`, take requests
/// of `per_request` keys in turn (`send` writes them durably) until `alerts` keys or `cap`;
/// latencies, counts and errors go into `report`.
fn drive_baseline<C>(
    report: &mut Report,
    (alerts, per_request, threads, cap): (usize, usize, usize, Duration),
    open: impl Fn() -> Result<C, String> + Sync,
    send: impl Fn(&mut C, std::ops::Range<usize>) -> Result<(), String> + Sync,
) {
    let requests = alerts.div_ceil(per_request);
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let deadline = start + cap;
    let per_thread: Vec<SenderStats> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut st = SenderStats::default();
                    let mut state = match open() {
                        Ok(c) => c,
                        Err(e) => {
                            st.errors.push(e);
                            return st;
                        }
                    };
                    while Instant::now() < deadline {
                        let r = next.fetch_add(1, Ordering::Relaxed);
                        if r >= requests {
                            break;
                        }
                        let keys = r * per_request..((r + 1) * per_request).min(alerts);
                        let n = keys.len();
                        let t = Instant::now();
                        match send(&mut state, keys) {
                            Ok(()) => {
                                st.latencies.push(t.elapsed());
                                st.alerts += n;
                                st.requests += 1;
                            }
                            Err(e) => st.errors.push(format!("request {r}: {e}")),
                        }
                    }
                    st
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("baseline worker"))
            .collect()
    });
    report.elapsed = start.elapsed();
    for st in per_thread {
        report.alerts += st.alerts;
        report.requests += st.requests;
        report.latencies.extend(st.latencies);
        for e in st.errors {
            report.error(e);
        }
    }
    report.latencies.sort_unstable();
    if next.load(Ordering::Relaxed) < requests {
        report.capped = true;
        report.notes.push(format!("capped at {}s", cap.as_secs()));
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn print_table(reports: &[Report]) {
    println!("| scenario | alerts | requests | errors | seconds | alerts/s | requests/s | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        println!(
            "| {}{} | {} | {} | {} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} |",
            r.name,
            if r.capped { " (capped)" } else { "" },
            r.alerts,
            r.requests,
            r.errors,
            r.elapsed.as_secs_f64(),
            r.alerts_per_sec(),
            r.requests_per_sec(),
            ms(r.percentile(50.0)),
            ms(r.percentile(90.0)),
            ms(r.percentile(99.0)),
            ms(r.latencies.last().copied().unwrap_or_default()),
        );
    }
    println!();
    for r in reports {
        for n in &r.notes {
            println!("- {}: {n}", r.name);
        }
    }
    let find = |name: &str| reports.iter().find(|r| r.name == name);
    if let (Some(b), Some(s)) = (find("batched"), find("sled-baseline")) {
        println!(
            "\nincidentd batched / raw sled: {:.0} / {:.0} alerts/s = {:.2}",
            b.alerts_per_sec(),
            s.alerts_per_sec(),
            b.alerts_per_sec() / s.alerts_per_sec()
        );
    }
    if let (Some(b), Some(s)) = (find("batched"), find("pg-baseline")) {
        println!(
            "\nincidentd batched / raw PostgreSQL: {:.0} / {:.0} alerts/s = {:.2}",
            b.alerts_per_sec(),
            s.alerts_per_sec(),
            b.alerts_per_sec() / s.alerts_per_sec()
        );
    }
    println!(
        "\nTargets: >= {TARGET_ALERTS_PER_SEC:.0} alerts/s durable, p99 <= {} ms per request",
        TARGET_P99.as_millis()
    );
    for r in reports
        .iter()
        .filter(|r| r.name != "sled-baseline" && r.name != "pg-baseline")
    {
        let rate = r.alerts_per_sec();
        let p99 = r.percentile(99.0);
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "- {}: {rate:.0} alerts/s ({}), p99 {} ms ({})",
            r.name,
            verdict(rate >= TARGET_ALERTS_PER_SEC),
            ms(p99),
            // No answered request is no latency measured, not a latency met.
            verdict(!r.latencies.is_empty() && p99 <= TARGET_P99)
        );
    }
}

/// Only loopback targets: this tool must never load anything else.
fn check_url(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--url {url:?}"))?;
    ensure!(parsed.scheme() == "http", "--url must be http://");
    ensure!(
        matches!(parsed.host_str(), Some("127.0.0.1" | "localhost")),
        "--url must point at 127.0.0.1 or localhost, not {:?}",
        parsed.host_str().unwrap_or("")
    );
    Ok(url.trim_end_matches('/').to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // As the binary does: the in-process app is what is measured.
    if !args.keep_huge_pages {
        incidentd::process::disable_transparent_huge_pages();
    }
    incidentd::process::return_freed_memory_promptly();
    let url = match args.url.as_deref().map(check_url).transpose() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    if args.dedup_fingerprints == 0 || args.dedup_fingerprints > 1000 || args.batch_size == 0 {
        eprintln!("--dedup-fingerprints must be 1..=1000 and --batch-size at least 1");
        return ExitCode::from(2);
    }
    let cap = Duration::from_secs(args.max_seconds);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let tag = format!("{secs}-{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    // A throw-away PostgreSQL with real durability, when the app or a baseline needs it.
    let needs_pg = (args.store == StoreKind::Postgres && url.is_none())
        || args.scenario.contains(&Scenario::PgBaseline);
    let cluster = if needs_pg {
        match incidentd::store::pgtest::Cluster::start(true) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("cannot start PostgreSQL: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let mut databases = 0;
    let mut new_database = || -> Option<String> {
        let c = cluster.as_ref()?;
        databases += 1;
        Some(
            c.create_database(&format!("load{databases}"))
                .expect("create a database"),
        )
    };

    let mut reports = Vec::new();
    for scenario in &args.scenario {
        let shape = match scenario {
            Scenario::Single => Shape {
                name: "single",
                alerts: args.single_alerts,
                per_request: 1,
                senders: args.single_senders,
                fingerprints: None,
                groups: None,
            },
            Scenario::Batched => Shape {
                name: "batched",
                alerts: args.batched_alerts,
                per_request: args.batch_size,
                senders: args.batched_senders,
                fingerprints: None,
                groups: args.groups,
            },
            Scenario::Dedup => Shape {
                name: "dedup",
                alerts: args.dedup_alerts,
                per_request: args.batch_size,
                senders: args.batched_senders,
                fingerprints: Some(args.dedup_fingerprints),
                groups: None,
            },
            Scenario::PgBaseline => {
                eprintln!("running pg-baseline …");
                let db = new_database().expect("a cluster");
                reports.push(pg_baseline(
                    &db,
                    args.batched_alerts,
                    args.batch_size,
                    args.batched_senders,
                    args.sled_value_bytes,
                    cap,
                ));
                continue;
            }
            Scenario::SledBaseline => {
                eprintln!("running sled-baseline …");
                reports.push(sled_baseline(
                    args.batched_alerts,
                    args.batch_size,
                    args.batched_senders,
                    args.sled_value_bytes,
                    cap,
                ));
                continue;
            }
        };
        eprintln!(
            "running {} ({} alerts, {} per request, {} senders) …",
            shape.name, shape.alerts, shape.per_request, shape.senders
        );
        let pg = match (args.store, &url) {
            (StoreKind::Postgres, None) => new_database(),
            _ => None,
        };
        reports.push(rt.block_on(http_scenario(
            &shape,
            url.as_deref(),
            args.chat,
            pg,
            &tag,
            cap,
            args.takeover,
        )));
    }
    match &url {
        Some(u) => println!("target: {u}\n"),
        None => println!(
            "target: in-process incidentd, a fresh temp store ({:?}) per scenario, chat sink {:?}\n",
            args.store, args.chat
        ),
    }
    print_table(&reports);
    drop(rt);
    if let Some(c) = cluster {
        c.stop();
    }
    let errors: usize = reports.iter().map(|r| r.errors).sum();
    if errors > 0 {
        eprintln!("\n{errors} errors");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
