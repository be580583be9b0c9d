//! Measures the bot's own overhead on the remediation path, against a real sled store and the
//! real dispatcher (the chat side is a recording port, so no platform latency is included):
//!
//! - approval click → process spawn: an approver's `approve` input is submitted; the clock stops
//!   when the executor is asked to launch (two durable commits happen in between: the approval
//!   with its queued execution, and the execution's `Started` record).
//! - alert → auto-run start: a P3 alert whose playbook action is `auto = true` arrives; the clock
//!   stops when the executor is asked to launch.
//!
//! Run: `cargo run --release --example remediation_latency [-- N]` (default N = 300).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use incidentd::app::PlaybookExecutor;
use incidentd::config::Config;
use incidentd::domain::alert::Platform;
use incidentd::domain::command::Command;
use incidentd::domain::incident::Incident;
use incidentd::domain::playbook::{ActionSpec, VerifySpec};
use incidentd::domain::policy::Actor;
use incidentd::engine::dispatch::run_dispatcher;
use incidentd::engine::runner::Engine;
use incidentd::engine::Input;
use incidentd::ingest::decode_generic;
use incidentd::ports::{ExecOutcome, Executor, Store, SystemClock};
use incidentd::store::SledStore;
use tokio::sync::{mpsc, watch};

const CFG: &str = r#"
[[playbooks]]
id = "orch"
title = "Orchestration"
kinds = ["orchestration_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart"
auto = true
run = { type = "command", argv = ["/bin/true", "{labels.deployment}"] }
[policy.P1]
approvers = ["console:*"]
"#;

/// Notes the instant a launch is requested, then really runs it.
struct Timed {
    inner: PlaybookExecutor,
    launched: mpsc::UnboundedSender<(String, Instant)>,
}

#[async_trait]
impl Executor for Timed {
    fn plan(&self, incident: &Incident, action: &ActionSpec) -> Result<String, String> {
        self.inner.plan(incident, action)
    }
    async fn run(&self, incident: &Incident, action: &ActionSpec) -> ExecOutcome {
        let _ = self.launched.send((incident.title.clone(), Instant::now()));
        self.inner.run(incident, action).await
    }
    async fn verify(&self, i: &Incident, a: &ActionSpec, v: &VerifySpec) -> ExecOutcome {
        self.inner.verify(i, a, v).await
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<32} n={:<5} p50={:>8.2?} p90={:>8.2?} p99={:>8.2?} max={:>8.2?}",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.9),
        pct(&v, 0.99),
        v[v.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let cfg = Arc::new(Config::from_toml(CFG, &|_| None).unwrap());
    let (engine, notes, _writer) = Engine::start(
        store.clone(),
        cfg.clone(),
        Arc::new(SystemClock),
        vec!["recording".into()],
    )
    .unwrap();
    let (tx, mut launched) = mpsc::unbounded_channel();
    let exec = Arc::new(Timed {
        inner: PlaybookExecutor::new("kubectl"),
        launched: tx,
    });
    let (_stop, stop_rx) = watch::channel(false);
    tokio::spawn(run_dispatcher(
        engine.clone(),
        store.clone(),
        cfg,
        exec,
        vec![],
        notes.executions,
        stop_rx,
    ));
    let alert = |i: usize, sev: &str| {
        let body = format!(
            r#"{{"title": "agent deadlock {i}", "severity": "{sev}", "labels": {{"deployment": "d{i}"}}}}"#
        );
        decode_generic(body.as_bytes()).unwrap().remove(0)
    };

    // Alert → auto-run start (P3, auto action).
    let mut auto = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        engine
            .submit_one(Input::Alert(alert(i, "info")))
            .await
            .unwrap();
        let (_, t1) = launched.recv().await.unwrap();
        auto.push(t1 - t0);
    }
    // Approval click → process spawn (P1: the auto action waits for a human).
    let mut click = Vec::with_capacity(n);
    for i in n..2 * n {
        let out = engine
            .submit_one(Input::Alert(alert(i, "critical")))
            .await
            .unwrap();
        let id = out.incident.unwrap();
        let t0 = Instant::now();
        engine
            .submit_one(Input::Command {
                actor: Actor::new(Platform::Console, "alice"),
                command: Command::Approve(id, "restart".into()),
            })
            .await
            .unwrap();
        let (_, t1) = launched.recv().await.unwrap();
        click.push(t1 - t0);
    }
    println!("remediation overhead (real sled with fsync, real dispatcher, /bin/true):");
    report("alert → auto-run start (P3)", auto);
    report("approval click → spawn (P1)", click);
}
