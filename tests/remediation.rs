//! Approved actions run exactly once: queued with the approval, `Started` durably before launch,
//! outcome recorded; refusals never launch; a crash between start and outcome leaves the
//! execution `Interrupted`, never re-run. Real engine and sled; a scripted executor.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use incidentd::config::Config;
use incidentd::domain::alert::Platform;
use incidentd::domain::command::Command;
use incidentd::domain::incident::{ActionStatus, EventKind, Incident, IncidentId, Status};
use incidentd::domain::playbook::{ActionSpec, VerifySpec};
use incidentd::domain::policy::Actor;
use incidentd::engine::dispatch::run_dispatcher;
use incidentd::engine::runner::Engine;
use incidentd::engine::Input;
use incidentd::ingest::decode_generic;
use incidentd::ports::{ExecOutcome, ExecutionStatus, Executor, Store, SystemClock};
use incidentd::store::SledStore;
use tokio::sync::{watch, Notify};

const CFG: &str = r#"
[[playbooks]]
id = "orch"
title = "Orchestration"
kinds = ["orchestration_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart agent"
run = { type = "command", argv = ["/bin/true", "{labels.deployment}"] }

[policy.P1]
approvers = ["slack:U1", "slack:U2"]
"#;

/// Counts runs; refuses to plan when the deployment label is `evil`; can hang until released.
struct ScriptedExecutor {
    runs: AtomicU32,
    hang: bool,
    release: Notify,
    started: Notify,
}

#[async_trait]
impl Executor for ScriptedExecutor {
    fn plan(&self, incident: &Incident, _action: &ActionSpec) -> Result<String, String> {
        match incident.labels.get("deployment").map(String::as_str) {
            Some("evil") => Err("deployment = \"evil\" does not match the allowed pattern".into()),
            Some(d) => Ok(format!("/bin/true {d}")),
            None => Err("no deployment label".into()),
        }
    }
    async fn run(&self, _incident: &Incident, _action: &ActionSpec) -> ExecOutcome {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        if self.hang {
            self.release.notified().await;
        }
        ExecOutcome {
            success: true,
            summary: "exit 0".into(),
        }
    }
    async fn verify(&self, _: &Incident, _: &ActionSpec, _: &VerifySpec) -> ExecOutcome {
        ExecOutcome {
            success: true,
            summary: "checked".into(),
        }
    }
}

struct Rig {
    store: Arc<dyn Store>,
    engine: Engine,
    exec: Arc<ScriptedExecutor>,
    stop: watch::Sender<bool>,
    dispatcher: tokio::task::JoinHandle<()>,
    writer: std::thread::JoinHandle<()>,
}

fn rig(dir: &std::path::Path, hang: bool) -> Rig {
    let exec = Arc::new(ScriptedExecutor {
        runs: AtomicU32::new(0),
        hang,
        release: Notify::new(),
        started: Notify::new(),
    });
    rig_with(dir, CFG, exec.clone(), exec)
}

fn rig_with(
    dir: &std::path::Path,
    cfg_text: &str,
    executor: Arc<dyn Executor>,
    exec: Arc<ScriptedExecutor>,
) -> Rig {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).unwrap());
    let cfg = Arc::new(Config::from_toml(cfg_text, &|_| None).unwrap());
    let (engine, notes, writer) =
        Engine::start(store.clone(), cfg.clone(), Arc::new(SystemClock), vec![]).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let dispatcher = tokio::spawn(run_dispatcher(
        engine.clone(),
        store.clone(),
        cfg,
        executor,
        vec![],
        notes.executions,
        stop_rx,
    ));
    Rig {
        store,
        engine,
        exec,
        stop,
        dispatcher,
        writer,
    }
}

impl Rig {
    async fn open(&self, deployment: &str) -> IncidentId {
        self.open_with("critical", "deployment", deployment).await
    }

    async fn open_with(&self, severity: &str, label: &str, value: &str) -> IncidentId {
        let body = format!(
            r#"{{"title": "Planner agent deadlock", "severity": "{severity}", "labels": {{"{label}": "{value}"}}}}"#
        );
        let alert = decode_generic(body.as_bytes()).unwrap().remove(0);
        self.engine
            .submit_one(Input::Alert(alert))
            .await
            .unwrap()
            .incident
            .unwrap()
    }

    fn approve(&self, id: IncidentId, who: &str) -> Input {
        Input::Command {
            actor: Actor::new(Platform::Slack, who),
            command: Command::Approve(id, "restart".into()),
        }
    }

    /// Waits (bounded, no sleeping) until the incident satisfies `pred`.
    async fn wait_until(&self, id: IncidentId, pred: impl Fn(&Incident) -> bool) -> Incident {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let inc = self.store.get_incident(id).unwrap().unwrap();
                if pred(&inc) {
                    return inc;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("condition not reached")
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.dispatcher.await.unwrap();
        drop(self.engine);
        tokio::task::spawn_blocking(move || self.writer.join().unwrap())
            .await
            .unwrap();
    }
}

fn events(store: &Arc<dyn Store>, id: IncidentId) -> Vec<EventKind> {
    store
        .timeline(id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_runs_once_and_records_start_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(dir.path(), false);
    let id = r.open("planner").await;
    let out = r.engine.submit_one(r.approve(id, "U1")).await.unwrap();
    assert!(!out.refused);
    let inc = r
        .wait_until(id, |i| {
            i.action("restart").unwrap().status == ActionStatus::Succeeded
        })
        .await;
    assert_eq!(inc.status, Status::Remediating);
    assert_eq!(r.exec.runs.load(Ordering::SeqCst), 1);
    let x = r
        .store
        .execution(&format!("{id}:restart"))
        .unwrap()
        .unwrap();
    assert_eq!(x.status, ExecutionStatus::Succeeded);
    let ev = events(&r.store, id);
    let pos = |f: &dyn Fn(&EventKind) -> bool| ev.iter().position(f).unwrap();
    let queued = pos(&|e| matches!(e, EventKind::ExecutionQueued { .. }));
    let started = pos(
        &|e| matches!(e, EventKind::ExecutionStarted { preview, .. } if preview == "/bin/true planner"),
    );
    let finished = pos(&|e| matches!(e, EventKind::ExecutionFinished { success: true, .. }));
    assert!(queued < started && started < finished);
    // A late second approval is refused: already decided, nothing runs again.
    let out = r.engine.submit_one(r.approve(id, "U2")).await.unwrap();
    assert!(out.refused);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_approvals_of_the_same_action_run_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(dir.path(), false);
    let id = r.open("planner").await;
    // Both clicks in one submission (one group commit) and a replay right after.
    let results = r
        .engine
        .submit(vec![r.approve(id, "U1"), r.approve(id, "U2")])
        .await
        .unwrap();
    let refused: Vec<bool> = results
        .iter()
        .map(|o| o.as_ref().unwrap().refused)
        .collect();
    assert_eq!(refused, [false, true]);
    let replay = r.engine.submit_one(r.approve(id, "U1")).await.unwrap();
    assert!(replay.refused);
    r.wait_until(id, |i| {
        i.action("restart").unwrap().status == ActionStatus::Succeeded
    })
    .await;
    assert_eq!(r.exec.runs.load(Ordering::SeqCst), 1);
    // Starting the same execution again is refused by the engine.
    let again = r
        .engine
        .submit_one(Input::ExecutionStarted {
            incident: id,
            action: "restart".into(),
            key: format!("{id}:restart"),
            preview: "x".into(),
        })
        .await;
    assert!(again
        .unwrap_err()
        .to_string()
        .contains("not starting it again"));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_template_never_launches_and_escalates() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(dir.path(), false);
    let id = r.open("evil").await;
    r.engine.submit_one(r.approve(id, "U1")).await.unwrap();
    let inc = r
        .wait_until(id, |i| {
            i.action("restart").unwrap().status == ActionStatus::Failed
        })
        .await;
    assert_eq!(inc.status, Status::Escalated);
    assert_eq!(r.exec.runs.load(Ordering::SeqCst), 0, "never launched");
    assert!(events(&r.store, id).iter().any(|e| matches!(
        e,
        EventKind::ExecutionFinished { success: false, summary, .. } if summary.contains("refused") && summary.contains("evil")
    )));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_start_and_outcome_leaves_it_interrupted_and_not_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let r = rig(dir.path(), true);
        id = r.open("planner").await;
        let started = r.exec.started.notified();
        r.engine.submit_one(r.approve(id, "U1")).await.unwrap();
        started.await; // the action is running now
        let x = r
            .store
            .execution(&format!("{id}:restart"))
            .unwrap()
            .unwrap();
        assert_eq!(
            x.status,
            ExecutionStatus::Started,
            "Started is durable before launch"
        );
        // "Crash": stop without letting the run finish.
        r.shutdown().await;
    }
    let store = SledStore::open(dir.path()).unwrap();
    let rec = store.recover(chrono::Utc::now()).unwrap();
    assert_eq!(rec.interrupted.len(), 1);
    assert!(rec.queued.is_empty(), "nothing to dispatch again");
    drop(store);
    let r = rig(dir.path(), false);
    assert_eq!(
        r.store
            .execution(&format!("{id}:restart"))
            .unwrap()
            .unwrap()
            .status,
        ExecutionStatus::Interrupted
    );
    assert_eq!(r.exec.runs.load(Ordering::SeqCst), 0);
    r.shutdown().await;
}

/// Real child processes: the fixture scripts restart, check and undo a fake service whose
/// state lives in a directory passed as a label (templated element-wise, no shell involved in
/// the templating: `/bin/sh` runs our own fixed script with the value as `$1`).
fn real_config() -> String {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    format!(
        r#"
[[playbooks]]
id = "orch"
title = "Orchestration"
kinds = ["orchestration_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart agent"
rollback = "undo"
run = {{ type = "command", argv = ["/bin/sh", "{fx}/restart.sh", "{{labels.state}}"] }}
verify = {{ type = "command", argv = ["/bin/sh", "{fx}/check.sh", "{{labels.state}}"], within_seconds = 2, interval_seconds = 1 }}
[[playbooks.actions]]
id = "undo"
title = "Undo the restart"
run = {{ type = "command", argv = ["/bin/sh", "{fx}/undo.sh", "{{labels.state}}"] }}

[policy.P2]
approvers = ["slack:U1"]
"#
    )
}

fn real_rig(dir: &std::path::Path) -> Rig {
    let unused = Arc::new(ScriptedExecutor {
        runs: AtomicU32::new(0),
        hang: false,
        release: Notify::new(),
        started: Notify::new(),
    });
    let executor = Arc::new(incidentd::app::PlaybookExecutor::new("kubectl"));
    rig_with(dir, &real_config(), executor, unused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_run_verify_resolved_with_real_processes() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let r = real_rig(dir.path());
    let id = r
        .open_with("warning", "state", state.path().to_str().unwrap())
        .await;
    r.engine.submit_one(r.approve(id, "U1")).await.unwrap();
    let inc = r.wait_until(id, |i| !i.status.is_active()).await;
    assert_eq!(inc.status, Status::Resolved);
    assert!(
        state.path().join("restarted").exists(),
        "the script really ran"
    );
    assert!(!state.path().join("undone").exists(), "no rollback");
    let ev = events(&r.store, id);
    assert!(ev
        .iter()
        .any(|e| matches!(e, EventKind::Verified { ok: true, .. })));
    assert!(ev.iter().any(|e| matches!(e, EventKind::ExecutionFinished { success: true, summary, .. } if summary.starts_with("exit 0"))));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_verification_rolls_back_then_escalates_with_real_processes() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("broken"), "still broken").unwrap();
    let r = real_rig(dir.path());
    let id = r
        .open_with("warning", "state", state.path().to_str().unwrap())
        .await;
    r.engine.submit_one(r.approve(id, "U1")).await.unwrap();
    let inc = r
        .wait_until(id, |i| {
            i.action("undo")
                .is_some_and(|a| a.status == ActionStatus::Succeeded)
                && i.status == Status::Escalated
        })
        .await;
    assert!(state.path().join("restarted").exists());
    assert!(
        state.path().join("undone").exists(),
        "the rollback really ran"
    );
    assert_eq!(inc.rolling_back, None);
    let ev = events(&r.store, id);
    let pos = |f: &dyn Fn(&EventKind) -> bool| ev.iter().position(f).unwrap();
    let failed = pos(&|e| matches!(e, EventKind::Verified { ok: false, .. }));
    let rolled = pos(&|e| {
        matches!(
            e,
            EventKind::StatusChanged {
                to: Status::RolledBack,
                ..
            }
        )
    });
    let escalated =
        pos(&|e| matches!(e, EventKind::Escalated { reason } if reason.contains("rolled back")));
    assert!(failed < rolled && rolled < escalated, "{ev:#?}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_that_could_inject_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let r = real_rig(dir.path());
    let id = r.open_with("warning", "state", "$(touch /tmp/pwned)").await;
    r.engine.submit_one(r.approve(id, "U1")).await.unwrap();
    let inc = r
        .wait_until(id, |i| {
            i.action("restart")
                .is_some_and(|a| a.status == ActionStatus::Failed)
        })
        .await;
    assert_eq!(inc.status, Status::Escalated);
    assert!(events(&r.store, id).iter().any(|e| matches!(
        e,
        EventKind::ExecutionFinished { success: false, summary, .. } if summary.contains("refused") && summary.contains("allowed pattern")
    )));
    r.shutdown().await;
}
