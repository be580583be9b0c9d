//! Wiring: the only place that names concrete adapters. `run(config, listener, deps, shutdown)`
//! starts everything on a listener the caller bound, so tests run the real app on 127.0.0.1:0.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::chat::console::ConsoleSurface;
use crate::chat::discord::DiscordSurface;
use crate::chat::service::ChatService;
use crate::chat::slack::SlackSurface;
use crate::chat::Surface;
use crate::config::{Config, StoreBackend};
use crate::domain::incident::Incident;
use crate::domain::playbook::{ActionSpec, VerifySpec};
use crate::engine::dispatch::run_dispatcher;
use crate::engine::outbox::{run_chart_edits, run_outbox, run_timers, OutboxConfig};
use crate::engine::runner::{Engine, Folding};
use crate::engine::Input;
use crate::http::{router, AppState};
use crate::ports::{ChatPort, Clock, ExecOutcome, Executor, Store, SystemClock};
use crate::remediate::prometheus::Prometheus;
use crate::remediate::{self, RetryPolicy};
use crate::store::pg::PgStore;
use crate::store::SledStore;

mod replica;

/// What the app runs against; tests swap the clock and the chat sinks.
#[derive(Clone)]
pub struct Deps {
    pub clock: Arc<dyn Clock>,
    /// Chat platforms (outbound port + inbound connections).
    pub surfaces: Vec<Arc<dyn Surface>>,
    /// Extra outbound-only sinks (tests, the console feed).
    pub sinks: Vec<Arc<dyn ChatPort>>,
    pub outbox: OutboxConfig,
    pub executor: Arc<dyn Executor>,
    /// The store; `None`: the sled store at `[store] path` (the default). Another
    /// implementation of [`Store`] is plugged in here, without touching [`run`].
    pub store: Option<Arc<dyn Store>>,
}

impl Deps {
    /// The real clock, the real executors, and the chat surfaces the config enables. The web
    /// console is always there: the chat surface when no platform is configured, the dashboard
    /// otherwise. Fails when the console would be exposed without login (see
    /// [`ConsoleSurface::from_config`]).
    pub fn from_config(cfg: &Config) -> anyhow::Result<Deps> {
        let mut surfaces: Vec<Arc<dyn Surface>> = vec![Arc::new(ConsoleSurface::from_config(cfg)?)];
        if let Some(slack) = &cfg.slack {
            let groups = cfg
                .policy
                .iter()
                .any(|p| p.approvers.iter().any(|a| a.starts_with("slack-group:")));
            surfaces.push(Arc::new(SlackSurface::new(slack, groups)));
        }
        if let Some(d) = &cfg.discord {
            surfaces.push(Arc::new(DiscordSurface::new(d)));
        }
        Ok(Deps {
            clock: Arc::new(SystemClock),
            surfaces,
            sinks: vec![],
            outbox: OutboxConfig {
                charts: charts_for(cfg),
                ..OutboxConfig::default()
            },
            executor: Arc::new(PlaybookExecutor::for_config("kubectl", cfg)),
            store: None,
        })
    }
}

/// Runs playbook actions with the `remediate` executors: templated argv (never a shell), HTTP,
/// kubectl, each with its timeout and bounded retries.
pub struct PlaybookExecutor {
    http: reqwest::Client,
    kubectl_bin: String,
    retry: RetryPolicy,
    /// `[prometheus]`, for Prometheus verifications.
    prometheus: Option<Prometheus>,
}

impl PlaybookExecutor {
    /// Without Prometheus: a Prometheus verification fails, saying so.
    pub fn new(kubectl_bin: &str) -> Self {
        PlaybookExecutor {
            http: reqwest::Client::new(),
            kubectl_bin: kubectl_bin.to_string(),
            retry: RetryPolicy::default(),
            prometheus: None,
        }
    }

    /// With the config's `[prometheus]`, if any.
    pub fn for_config(kubectl_bin: &str, cfg: &Config) -> Self {
        let mut x = PlaybookExecutor::new(kubectl_bin);
        x.prometheus = prometheus_client(cfg);
        x
    }
}

/// Charts on cards from the config's `[prometheus]` (none without it).
pub fn charts_for(cfg: &Config) -> Option<Arc<dyn crate::ports::ChartSource>> {
    let prometheus = prometheus_client(cfg)?;
    let playbooks = cfg.playbooks.iter().filter_map(|p| {
        p.chart_query
            .clone()
            .map(|q| (p.id.clone(), q, p.chart_threshold))
    });
    Some(Arc::new(remediate::prometheus::PrometheusCharts::new(
        &prometheus,
        playbooks,
    )))
}

/// The client of the config's `[prometheus]`.
pub fn prometheus_client(cfg: &Config) -> Option<Prometheus> {
    cfg.prometheus.as_ref().map(|p| {
        Prometheus::new(
            &p.url,
            p.token.as_ref().map(|t| t.expose().to_string()),
            p.timeout,
            reqwest::Client::new(),
        )
    })
}

#[async_trait::async_trait]
impl Executor for PlaybookExecutor {
    fn plan(&self, incident: &Incident, action: &ActionSpec) -> Result<String, String> {
        remediate::plan(action, incident, &self.kubectl_bin)
            .map(|p| p.preview())
            .map_err(|e| e.to_string())
    }

    async fn run(&self, incident: &Incident, action: &ActionSpec) -> ExecOutcome {
        let plan = match remediate::plan(action, incident, &self.kubectl_bin) {
            Ok(p) => p,
            Err(e) => {
                return ExecOutcome {
                    success: false,
                    summary: format!("refused: {e}"),
                }
            }
        };
        let out = remediate::execute(&plan, &self.retry, &[], &self.http).await;
        ExecOutcome {
            success: out.success,
            summary: out.summary(),
        }
    }

    fn plan_followup(
        &self,
        incident: &Incident,
        n: usize,
        followup: &crate::domain::followup::FollowUp,
        action: &ActionSpec,
    ) -> Result<String, String> {
        remediate::plan_for(action, incident, Some((n, followup)), &self.kubectl_bin)
            .map(|p| p.preview())
            .map_err(|e| e.to_string())
    }

    async fn run_followup(
        &self,
        incident: &Incident,
        n: usize,
        followup: &crate::domain::followup::FollowUp,
        action: &ActionSpec,
    ) -> (ExecOutcome, Option<String>) {
        let plan =
            match remediate::plan_for(action, incident, Some((n, followup)), &self.kubectl_bin) {
                Ok(p) => p,
                Err(e) => {
                    let summary = format!("refused: {e}");
                    return (
                        ExecOutcome {
                            success: false,
                            summary,
                        },
                        None,
                    );
                }
            };
        let out = remediate::execute(&plan, &self.retry, &[], &self.http).await;
        let link = out
            .success
            .then(|| remediate::link_in_response(&out.stdout))
            .flatten();
        (
            ExecOutcome {
                success: out.success,
                summary: out.summary(),
            },
            link,
        )
    }

    async fn verify(
        &self,
        incident: &Incident,
        action: &ActionSpec,
        spec: &VerifySpec,
    ) -> ExecOutcome {
        self.verify_observed(incident, action, spec, &|_| {}).await
    }

    async fn verify_observed(
        &self,
        incident: &Incident,
        action: &ActionSpec,
        spec: &VerifySpec,
        checked: &(dyn Fn(ExecOutcome) + Send + Sync),
    ) -> ExecOutcome {
        if let VerifySpec::Prometheus { .. } = spec {
            let prometheus = self.prometheus.as_ref();
            return remediate::prometheus::verify(prometheus, spec, incident, checked).await;
        }
        let fail = |summary: String| ExecOutcome {
            success: false,
            summary,
        };
        // The check runs with the action's own templating rules.
        let Some((check, interval)) = remediate::preview::check(action, spec) else {
            return fail("waits for the alert, not for a check".into());
        };
        let shown = remediate::preview::verification(action, spec, incident);
        let plan = match remediate::plan(&check, incident, &self.kubectl_bin) {
            Ok(p) => p,
            Err(e) => return fail(format!("refused: {e}")),
        };
        let once = RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(spec.within_seconds());
        let interval = Duration::from_secs(interval.max(1));
        loop {
            let out = remediate::execute(&plan, &once, &[], &self.http).await;
            let passed = match spec {
                VerifySpec::Http { body_contains, .. } => {
                    out.success
                        && body_contains
                            .as_deref()
                            .is_none_or(|b| out.stdout.contains(b))
                }
                VerifySpec::Command { expect_exit, .. } => out.exit_code == Some(*expect_exit),
                VerifySpec::AlertResolves { .. } | VerifySpec::Prometheus { .. } => false,
            };
            if passed {
                return ExecOutcome {
                    success: true,
                    summary: format!("{shown} ({})", out.summary()),
                };
            }
            if tokio::time::Instant::now() + interval > deadline {
                return fail(format!(
                    "{shown} did not hold within {} s; last: {}",
                    spec.within_seconds(),
                    out.summary()
                ));
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// How long shutdown waits for the workers (outbox, timers, dispatcher, chat connections).
const STOP_WORKERS_MAX: Duration = Duration::from_secs(5);
/// How long shutdown waits for the writer to drain once the workers are gone.
const STOP_WRITER_MAX: Duration = Duration::from_secs(3);
/// How long shutdown waits for requests in progress (a request waiting on a stalled store
/// fails on its own after `[store] write_timeout_seconds`; this bounds everything else).
const STOP_HTTP_MAX: Duration = Duration::from_secs(5);
/// How long shutdown waits for the store's last flush (a stalled disk must not keep the
/// process alive: what was acknowledged is durable already).
const STOP_FLUSH_MAX: Duration = Duration::from_secs(3);

/// Runs until `shutdown` resolves, then stops accepting, finishes what was accepted, and
/// flushes the store. With `[store] backend = "postgres"` (and no store injected), runs as one
/// of N replicas: a standby until it takes the lease, then the leader (docs/replicas.md).
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    deps: Deps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let (None, StoreBackend::Postgres { url }) = (&deps.store, &cfg.store.backend) {
        let url = url.expose().to_owned();
        return replica::run(Arc::new(cfg), listener, deps, url, shutdown).await;
    }
    run_node(Arc::new(cfg), listener, deps, None, shutdown).await
}

/// The leader's view of its lease, when running as a replica: chat delivery and action launches
/// check it (the database fences commits; these are not commits).
type Leading = Option<Arc<crate::store::lease::Leadership>>;

/// The app on one store: intake, writer, workers, surfaces, until `shutdown`.
async fn run_node(
    cfg: Arc<Config>,
    listener: TcpListener,
    deps: Deps,
    leading: Leading,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = match deps.store.clone() {
        Some(store) => store,
        None => match &cfg.store.backend {
            StoreBackend::Sled => {
                let (path, cache_mb) = (cfg.store.path.clone(), cfg.store.cache_mb);
                Arc::new(
                    tokio::task::spawn_blocking(move || {
                        SledStore::open_with_cache(&path, cache_mb)
                    })
                    .await?
                    .context("opening the store")?,
                )
            }
            StoreBackend::Postgres { url } => {
                let url = url.expose().to_owned();
                Arc::new(
                    tokio::task::spawn_blocking(move || PgStore::open(&url, None))
                        .await?
                        .context("opening the PostgreSQL store")?,
                )
            }
        },
    };
    let now = deps.clock.now();
    let s = store.clone();
    let recovery = tokio::task::spawn_blocking(move || s.recover(now))
        .await?
        .context("recovering the store")?;
    let queued: Vec<String> = recovery.queued.iter().map(|x| x.key.clone()).collect();

    let mut ports: Vec<Arc<dyn ChatPort>> = deps.surfaces.iter().map(|s| s.port()).collect();
    ports.extend(deps.sinks.iter().cloned());
    let mut executor = deps.executor.clone();
    if let Some(l) = &leading {
        ports = ports
            .into_iter()
            .map(|p| Arc::new(replica::FencedPort::new(p, l.clone())) as Arc<dyn ChatPort>)
            .collect();
        executor = Arc::new(replica::FencedExecutor::new(executor, l.clone()));
    }
    let sink_names = ports.iter().map(|p| p.name().to_string()).collect();
    let metrics = deps.outbox.metrics.clone();
    // Start-up reads the store: on a blocking thread, like every store call.
    let (engine, notes, writer) = {
        let (store, cfg, clock) = (store.clone(), cfg.clone(), deps.clock.clone());
        tokio::task::spawn_blocking(move || {
            Engine::start_with(store, cfg, clock, sink_names, metrics, Folding::default())
        })
        .await??
    };
    // The timers are the ones the engine read (once) to re-arm them.
    info!(
        incidents = recovery.incidents,
        outbox = recovery.outbox_pending,
        timers = notes.armed.len(),
        interrupted = recovery.interrupted.len(),
        "Store opened."
    );
    for x in &recovery.interrupted {
        warn!(incident = %x.incident, action = %x.action, "An execution was running when the process stopped; it is marked interrupted and will not be re-run automatically.");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    let mut outbox = deps.outbox.clone();
    // Cards that went out without their chart are edited when it comes.
    if outbox.charts.is_some() {
        let (ready_tx, ready_rx) = tokio::sync::mpsc::unbounded_channel();
        outbox.chart_ready = Some(ready_tx);
        workers.push(tokio::spawn(run_chart_edits(
            engine.clone(),
            ready_rx,
            stop_rx.clone(),
        )));
    }
    for port in ports {
        workers.push(tokio::spawn(run_outbox(
            store.clone(),
            cfg.clone(),
            port,
            notes.outbox.clone(),
            stop_rx.clone(),
            outbox.clone(),
        )));
    }
    drop(outbox);
    workers.push(tokio::spawn(run_timers(
        engine.clone(),
        deps.clock.clone(),
        notes.armed,
        notes.timers,
        stop_rx.clone(),
    )));
    workers.push(tokio::spawn(run_dispatcher(
        engine.clone(),
        store.clone(),
        cfg.clone(),
        executor.clone(),
        queued,
        notes.executions,
        stop_rx.clone(),
    )));
    // Root-cause evidence, when a Prometheus is configured (the engine only asks then).
    if let Some(prometheus) = prometheus_client(&cfg) {
        workers.push(tokio::spawn(crate::engine::dispatch::run_evidence(
            engine.clone(),
            store.clone(),
            cfg.clone(),
            Arc::new(remediate::prometheus::PrometheusEvidence { prometheus }),
            notes.evidence,
            stop_rx.clone(),
        )));
    }
    // Tell each interrupted execution's thread that a human must decide.
    for x in recovery.interrupted {
        let input = Input::ExecutionInterrupted {
            incident: x.incident,
            action: x.action,
            key: x.key,
        };
        if let Err(e) = engine.submit_one(input).await {
            warn!(error = %e, "Cannot record an interrupted execution.");
        }
    }

    let mut app = router(AppState {
        engine: engine.clone(),
        store: store.clone(),
        cfg: cfg.clone(),
        chat: deps
            .surfaces
            .iter()
            .filter_map(|s| s.connection())
            .collect(),
    });
    for surface in &deps.surfaces {
        let service = ChatService::new(
            engine.clone(),
            store.clone(),
            cfg.clone(),
            executor.clone(),
            surface.platform(),
            surface.port().name(),
            surface.alert_channels(),
        );
        if let Some(r) = surface.routes(service.clone()) {
            app = app.merge(r);
        }
        if let Some(task) = surface.spawn(service, stop_rx.clone()) {
            workers.push(task);
        }
    }
    drop(engine);
    let addr = listener.local_addr()?;
    info!(%addr, "incidentd listening.");
    for s in &deps.surfaces {
        s.listening(addr);
    }
    let surfaces = deps.surfaces.clone();
    let (stopping_tx, mut stopping) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        for s in &surfaces {
            s.shutting_down();
        }
        let _ = stopping_tx.send(true);
    };
    let serve = crate::http::serve(listener, app, &cfg.server, shutdown);
    // Graceful, but bounded: connections still busy after STOP_HTTP_MAX are dropped.
    let grace = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(STOP_HTTP_MAX).await;
    };
    tokio::select! {
        r = serve => r.context("HTTP server")?,
        _ = grace => warn!("Requests still running after {STOP_HTTP_MAX:?}; closing them."),
    }
    info!("Shutting down: finishing accepted work.");
    let _ = stop_tx.send(true);
    // Bounded: a worker stuck on a platform must not keep the process alive. Aborting drops
    // what it holds (engine handles among them).
    let deadline = tokio::time::Instant::now() + STOP_WORKERS_MAX;
    for w in workers {
        let abort = w.abort_handle();
        if tokio::time::timeout_at(deadline, w).await.is_err() {
            warn!("A worker did not stop in time; aborting it.");
            abort.abort();
        }
    }
    // Every engine handle is gone now, so the writer drains its queue and stops.
    // Joined from a plain thread, not `spawn_blocking`: a runtime waits for its blocking tasks
    // when it is dropped, so a writer that never stops would still hang the process.
    let (joined_tx, joined) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = joined_tx.send(writer.join());
    });
    match tokio::time::timeout(STOP_WRITER_MAX, joined).await {
        Ok(Ok(Ok(()))) => {}
        Ok(_) => anyhow::bail!("the writer thread panicked"),
        Err(_) => warn!("The writer did not stop in time (an engine handle is still held); flushing the store without it."),
    }
    let flush = tokio::task::spawn_blocking(move || store.flush());
    match tokio::time::timeout(STOP_FLUSH_MAX, flush).await {
        Ok(r) => r??,
        Err(_) => warn!("The store's last flush did not finish in {STOP_FLUSH_MAX:?}; stopping without it (what was acknowledged is durable)."),
    }
    info!("Stopped.");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
