//! Runs approved actions exactly once. For each queued execution: template it (a refusal is a
//! failed execution with the reason), record `Started` durably through the engine, and only then
//! launch it; report the outcome back as an input. A second dispatch of the same key is refused
//! by the engine (the record is no longer `Queued`), so double clicks and replays run once.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::runner::{Engine, EngineSubmitError};
use super::Input;
use crate::config::Config;
use crate::domain::incident::Status;
use crate::domain::playbook::VerifySpec;
use crate::ports::blocking;
use crate::ports::{ExecOutcome, Executor, IncidentFilter, Store};

/// One execution, start to finish.
async fn run_one(
    engine: Engine,
    store: Arc<dyn Store>,
    cfg: Arc<Config>,
    executor: Arc<dyn Executor>,
    key: String,
) {
    let s = store.clone();
    let k = key.clone();
    let Ok(Some(x)) = blocking(move || s.execution(&k)).await else {
        warn!(execution = %key, "Queued execution not found.");
        return;
    };
    let s = store.clone();
    let Ok(Some(inc)) = blocking(move || s.get_incident(x.incident)).await else {
        warn!(execution = %key, "The execution's incident is missing.");
        return;
    };
    if let Some(n) = super::export_number(&x.action) {
        return export(engine, cfg, executor, key, inc, n).await;
    }
    let spec = super::action_spec(&inc, &x.action, &cfg).cloned();
    let finish = |success: bool, summary: String| Input::ExecutionFinished {
        incident: x.incident,
        action: x.action.clone(),
        key: key.clone(),
        success,
        summary,
    };
    let Some(spec) = spec else {
        let _ = engine
            .submit_one(finish(
                false,
                "the action is no longer in the playbook".into(),
            ))
            .await;
        return;
    };
    let preview = match executor.plan(&inc, &spec) {
        Ok(p) => p,
        Err(refusal) => {
            let _ = engine
                .submit_one(finish(false, format!("refused: {refusal}")))
                .await;
            return;
        }
    };
    let started = engine
        .submit_one(Input::ExecutionStarted {
            incident: x.incident,
            action: x.action.clone(),
            key: key.clone(),
            preview,
        })
        .await;
    match started {
        Ok(_) => {}
        Err(EngineSubmitError::User(e)) => {
            info!(execution = %key, reason = %e, "Not launching.");
            return;
        }
        Err(e) => {
            warn!(execution = %key, error = %e, "Cannot record the start; not launching.");
            return;
        }
    }
    info!(execution = %key, "Launching.");
    let out = executor.run(&inc, &spec).await;
    let success = out.success;
    if let Err(e) = engine.submit_one(finish(out.success, out.summary)).await {
        warn!(execution = %key, error = %e, "Cannot record the outcome; it stays Started and will be marked interrupted on restart.");
        return;
    }
    if success {
        verify(&engine, &store, &*executor, x.incident, &spec).await;
    }
}

/// A follow-up's export: the same steps as an action (`Started` durable before the request,
/// never re-run after a crash), with the follow-up's values, reporting the link it got back.
async fn export(
    engine: Engine,
    cfg: Arc<Config>,
    executor: Arc<dyn Executor>,
    key: String,
    inc: crate::domain::incident::Incident,
    n: usize,
) {
    let finish = |success: bool, summary: String, link: Option<String>| Input::FollowUpExported {
        incident: inc.id,
        n: n as u32,
        key: key.clone(),
        success,
        summary,
        link,
    };
    let (Some(spec), Some(f)) = (cfg.followups.export.clone(), inc.followups.get(n - 1)) else {
        let _ = engine
            .submit_one(finish(false, "no export is configured".into(), None))
            .await;
        return;
    };
    let preview = match executor.plan_followup(&inc, n, f, &spec) {
        Ok(p) => p,
        Err(refusal) => {
            let _ = engine
                .submit_one(finish(false, format!("refused: {refusal}"), None))
                .await;
            return;
        }
    };
    let started = engine
        .submit_one(Input::ExecutionStarted {
            incident: inc.id,
            action: super::export_action(n),
            key: key.clone(),
            preview,
        })
        .await;
    if let Err(e) = started {
        info!(execution = %key, reason = %e, "Not launching the export.");
        return;
    }
    info!(execution = %key, "Exporting the follow-up.");
    let (out, link) = executor.run_followup(&inc, n, f, &spec).await;
    if let Err(e) = engine
        .submit_one(finish(out.success, out.summary, link))
        .await
    {
        warn!(execution = %key, error = %e, "Cannot record the export's outcome; it stays Started and will be marked interrupted on restart.");
    }
}

/// Runs an HTTP or command verification if the engine put the incident in `Verifying` for
/// this action, and reports the result. Verification only reads, so it is safe to repeat
/// after a restart.
async fn verify(
    engine: &Engine,
    store: &Arc<dyn Store>,
    executor: &dyn Executor,
    incident: crate::domain::incident::IncidentId,
    spec: &crate::domain::playbook::ActionSpec,
) {
    let Some(v) = spec.verify.as_ref() else {
        return;
    };
    if matches!(v, VerifySpec::AlertResolves { .. }) {
        return; // the engine waits for the alert itself
    }
    let s = store.clone();
    let Ok(Some(inc)) = blocking(move || s.get_incident(incident)).await else {
        return;
    };
    if inc.status != Status::Verifying || inc.verifying.as_deref() != Some(spec.id.as_str()) {
        return;
    }
    // Each check is recorded as it happens (its value in the thread and the timeline), before
    // the outcome: the checks go through a channel the submitting loop below drains.
    let (tx, mut rx) = mpsc::unbounded_channel::<ExecOutcome>();
    let checked = move |c: ExecOutcome| {
        let _ = tx.send(c);
    };
    let submit_check = |c: ExecOutcome| Input::VerificationCheck {
        incident,
        action: spec.id.clone(),
        ok: c.success,
        summary: c.summary,
    };
    let out = {
        let run = executor.verify_observed(&inc, spec, v, &checked);
        tokio::pin!(run);
        loop {
            tokio::select! {
                out = &mut run => break out,
                Some(c) = rx.recv() => {
                    if let Err(e) = engine.submit_one(submit_check(c)).await {
                        warn!(%incident, error = %e, "Cannot record a verification check.");
                    }
                }
            }
        }
    };
    drop(checked);
    while let Some(c) = rx.recv().await {
        if let Err(e) = engine.submit_one(submit_check(c)).await {
            warn!(%incident, error = %e, "Cannot record a verification check.");
        }
    }
    let input = Input::VerificationFinished {
        incident,
        action: spec.id.clone(),
        ok: out.success,
        summary: out.summary,
    };
    if let Err(e) = engine.submit_one(input).await {
        warn!(%incident, error = %e, "Cannot record the verification.");
    }
}

/// After a restart: verifications that were running are run again.
async fn resume_verifications(
    engine: Engine,
    store: Arc<dyn Store>,
    cfg: Arc<Config>,
    executor: Arc<dyn Executor>,
) {
    let s = store.clone();
    let filter = IncidentFilter {
        status: Some(Status::Verifying),
        ..Default::default()
    };
    let Ok(list) = blocking(move || s.list_incidents(&filter)).await else {
        return;
    };
    for inc in list {
        let Some(spec) = inc
            .verifying
            .as_deref()
            .and_then(|a| super::action_spec(&inc, a, &cfg))
            .cloned()
        else {
            continue;
        };
        verify(&engine, &store, &*executor, inc.id, &spec).await;
    }
}

/// Dispatches executions queued before a restart and those queued from now on, until shutdown.
/// On shutdown, running executions are dropped: their children are killed and their records
/// stay `Started`, which the next start turns into `Interrupted` for a human to decide.
pub async fn run_dispatcher(
    engine: Engine,
    store: Arc<dyn Store>,
    cfg: Arc<Config>,
    executor: Arc<dyn Executor>,
    initial: Vec<String>,
    mut queued: mpsc::UnboundedReceiver<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut running = JoinSet::new();
    let spawn = |running: &mut JoinSet<()>, key: String| {
        running.spawn(run_one(
            engine.clone(),
            store.clone(),
            cfg.clone(),
            executor.clone(),
            key,
        ));
    };
    for key in initial {
        spawn(&mut running, key);
    }
    running.spawn(resume_verifications(
        engine.clone(),
        store.clone(),
        cfg.clone(),
        executor.clone(),
    ));
    loop {
        tokio::select! {
            k = queued.recv() => match k {
                Some(k) => spawn(&mut running, k),
                None => break,
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    running.abort_all();
    while running.join_next().await.is_some() {}
}

/// How far back start-up looks for incidents whose evidence was asked for but never gathered.
const EVIDENCE_RECOVERY_MINUTES: i64 = 15;
/// Most incidents (the newest) read back at start-up for that.
const EVIDENCE_RECOVERY_MAX: usize = 1024;

/// Runs the evidence queries the engine asked for, one incident at a time (each query is
/// bounded by the Prometheus timeout), and reports what they found, until shutdown. Queries cut
/// short by a restart are run again after it: start-up first gathers the evidence of the active
/// incidents opened in the last [`EVIDENCE_RECOVERY_MINUTES`] whose playbook has evidence and
/// whose timeline has none yet (gathering always records one event per query, even a failed
/// one, so none means it never finished).
pub async fn run_evidence(
    engine: Engine,
    store: Arc<dyn Store>,
    cfg: Arc<Config>,
    source: Arc<dyn crate::ports::EvidenceSource>,
    mut asked: mpsc::UnboundedReceiver<crate::domain::incident::IncidentId>,
    mut shutdown: watch::Receiver<bool>,
) {
    let since = engine.now() - chrono::Duration::minutes(EVIDENCE_RECOVERY_MINUTES);
    let (s, c) = (store.clone(), cfg.clone());
    let mut unfinished: std::collections::VecDeque<_> =
        blocking(move || evidence_never_gathered(&*s, &c, since))
            .await
            .unwrap_or_else(|e| {
                warn!(error = %e, "Cannot read which incidents still wait for their evidence.");
                Vec::new()
            })
            .into();
    if !unfinished.is_empty() {
        info!(
            incidents = unfinished.len(),
            "Gathering the evidence a restart cut short."
        );
    }
    // An incident opened while that was read may be both read back and asked for: once.
    let recovered: std::collections::HashSet<_> = unfinished.iter().copied().collect();
    loop {
        let id = match unfinished.pop_front() {
            Some(id) => id,
            None => tokio::select! {
                id = asked.recv() => match id {
                    Some(id) if recovered.contains(&id) => continue,
                    Some(id) => id,
                    None => return,
                },
                _ = shutdown.changed() => return,
            },
        };
        let s = store.clone();
        let Ok(Some(inc)) = blocking(move || s.get_incident(id)).await else {
            continue;
        };
        let Some(pb) = inc.playbook.as_deref().and_then(|p| cfg.playbook(p)) else {
            continue;
        };
        let found = tokio::select! {
            f = source.gather(&inc, &pb.evidence) => f,
            _ = shutdown.changed() => return,
        };
        if found.is_empty() {
            continue;
        }
        if let Err(e) = engine
            .submit_one(Input::Evidence {
                incident: id,
                found,
            })
            .await
        {
            warn!(incident = %id, error = %e, "Cannot record the evidence.");
        }
    }
}

/// The active incidents opened since `since` (among the newest [`EVIDENCE_RECOVERY_MAX`]) whose
/// evidence was asked for (their playbook has evidence queries, and they were not summarized in
/// a storm) and never recorded, oldest first.
fn evidence_never_gathered(
    store: &dyn Store,
    cfg: &Config,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<crate::domain::incident::IncidentId>, crate::ports::StoreError> {
    let newest = store.list_incidents(&IncidentFilter {
        limit: EVIDENCE_RECOVERY_MAX,
        ..Default::default()
    })?;
    let mut ids = Vec::new();
    // As the engine asks: not for incidents summarized in a storm.
    let recent = newest
        .iter()
        .filter(|i| i.status.is_active() && i.opened_at >= since && i.storm_thread.is_none());
    for inc in recent.rev() {
        if super::asks_evidence(inc, cfg)
            && !store
                .timeline(inc.id)?
                .iter()
                .any(|e| matches!(e.kind, crate::domain::incident::EventKind::Evidence { .. }))
        {
            ids.push(inc.id);
        }
    }
    Ok(ids)
}
