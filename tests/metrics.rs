//! The outcome numbers against their definitions (docs/metrics.md): random incident histories
//! (alerts, clears, approvals, rejections, expiries, commands, executions, verifications,
//! rollbacks, interruptions, recurrences) are run through the real core, and the stats that
//! every surface reports are compared with a plain reference implementation written here from
//! the definitions, reading only the timelines (and what the test itself sent).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

use incidentd::config::Config;
use incidentd::domain::alert::{Alert, AlertSource, AlertStatus, Platform};
use incidentd::domain::classify::RootCause;
use incidentd::domain::command::Command;
use incidentd::domain::incident::{
    EventKind, Incident, IncidentId, PastIncident, Status, TimelineEvent,
};
use incidentd::domain::policy::Actor;
use incidentd::domain::severity::Severity;
use incidentd::domain::stats::{compute, Percentiles, Stats};
use incidentd::engine::{handle, Ctx, Effect, Input, View};
use incidentd::ports::{Execution, TimerKind};

const CFG: &str = r#"
[engine]
recurrence_days = 30

[[playbooks]]
id = "verified"
title = "Fix that verifies and rolls back"
kinds = ["tool_api_failure"]
[[playbooks.actions]]
id = "fix"
title = "Fix"
auto = true
run = { type = "command", argv = ["/bin/true"] }
verify = { type = "command", argv = ["/bin/true"], expect_exit = 0, within_seconds = 60, interval_seconds = 10 }
rollback = "undo"
[[playbooks.actions]]
id = "undo"
title = "Undo"
run = { type = "command", argv = ["/bin/true"] }
[[playbooks.actions]]
id = "manual"
title = "Manual step"
run = { type = "command", argv = ["/bin/true"] }

[[playbooks]]
id = "plain"
title = "Fix without verification"
kinds = ["orchestration_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart"
auto = true
run = { type = "command", argv = ["/bin/true"] }

[[playbooks]]
id = "clears"
title = "Fix verified by the alert clearing"
kinds = ["model_output_failure"]
[[playbooks.actions]]
id = "switch"
title = "Switch model"
auto = true
run = { type = "command", argv = ["/bin/true"] }
verify = { type = "alert_resolves", within_seconds = 120 }

[escalation.pager]
id = "pager"
title = "Page"
run = { type = "http", url = "http://127.0.0.1:1/page" }

[policy.P0]
approvers = ["console:alice", "console:bob"]
min_approvals = 2
allow_proposer = false
[policy.P1]
approvers = ["console:alice", "console:bob"]
[policy.P2]
approvers = ["console:alice", "console:bob"]
[policy.P3]
approvers = ["console:alice", "console:bob"]
"#;

const KINDS: [&str; 4] = [
    "tool_api_failure",
    "orchestration_failure",
    "model_output_failure",
    "resource_exhaustion",
];
const SEVERITIES: [&str; 4] = ["P0", "P1", "P2", "P3"];
const PEOPLE: [&str; 3] = ["alice", "bob", "mallory"];
const ACTIONS: [&str; 6] = ["fix", "undo", "manual", "restart", "switch", "nope"];

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, 8, 0, 0).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    /// An alert of fingerprint `fp` (its kind and severity are the fingerprint's), started
    /// `started_ago` seconds before it is sent.
    Alert {
        fp: usize,
        firing: bool,
        started_ago: u32,
    },
    Wait(u32),
    /// Days pass (windows, the recurrence window).
    Days(u8),
    /// A person's command on the n-th incident (modulo the number of incidents).
    Command {
        who: usize,
        n: usize,
        what: Cmd,
    },
    /// The executor runs the oldest queued execution.
    Run {
        success: bool,
        interrupted: bool,
    },
    /// A running verification of the n-th incident finishes.
    Verify {
        n: usize,
        ok: bool,
    },
    /// Every timer due by now fires.
    Timers,
}

#[derive(Debug, Clone)]
enum Cmd {
    Ack,
    Resolve,
    Reopen,
    Escalate,
    Approve(usize),
    Reject(usize),
    Severity(usize),
    RootCause(usize),
    Assign,
    Note,
}

fn cmd_strategy() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        3 => Just(Cmd::Ack),
        3 => Just(Cmd::Resolve),
        1 => Just(Cmd::Reopen),
        1 => Just(Cmd::Escalate),
        3 => (0..ACTIONS.len()).prop_map(Cmd::Approve),
        1 => (0..ACTIONS.len()).prop_map(Cmd::Reject),
        1 => (0..4usize).prop_map(Cmd::Severity),
        3 => (0..RootCause::ALL.len()).prop_map(Cmd::RootCause),
        1 => Just(Cmd::Assign),
        1 => Just(Cmd::Note),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..8usize, prop::bool::weighted(0.75), 0..900u32)
            .prop_map(|(fp, firing, started_ago)| Op::Alert { fp, firing, started_ago }),
        4 => (1..1200u32).prop_map(Op::Wait),
        1 => (1..20u8).prop_map(Op::Days),
        8 => (0..PEOPLE.len(), 0..64usize, cmd_strategy())
            .prop_map(|(who, n, what)| Op::Command { who, n, what }),
        4 => (prop::bool::weighted(0.7), prop::bool::weighted(0.1))
            .prop_map(|(success, interrupted)| Op::Run { success, interrupted }),
        2 => (0..64usize, any::<bool>()).prop_map(|(n, ok)| Op::Verify { n, ok }),
        2 => Just(Op::Timers),
    ]
}

/// The mechanical part of the writer, as small as possible: it applies each decision (ids,
/// the open incident of each group, the resolved history, timelines, timers and executions)
/// and decides nothing.
struct World {
    cfg: Config,
    now: DateTime<Utc>,
    incidents: BTreeMap<u64, Incident>,
    timelines: HashMap<u64, Vec<TimelineEvent>>,
    /// Group key → open incident.
    open: HashMap<String, u64>,
    /// Group key → its resolved incidents.
    history: HashMap<String, Vec<PastIncident>>,
    timers: Vec<(u64, TimerKind, DateTime<Utc>)>,
    queue: Vec<(u64, String, String)>,
    executions: HashMap<String, Execution>,
    /// When incidents opened, by source (the storm guard).
    opened: Vec<(&'static str, DateTime<Utc>)>,
    /// What the test sent: each incident's fingerprint and the alert's start.
    sent: HashMap<u64, (String, DateTime<Utc>)>,
}

/// The core's lookups, over the world's maps.
struct WorldView<'a> {
    open: &'a HashMap<String, u64>,
    executions: &'a HashMap<String, Execution>,
    opened: &'a [(&'static str, DateTime<Utc>)],
}

impl View for WorldView<'_> {
    fn open_incident(&self, key: &str) -> Option<IncidentId> {
        self.open.get(key).map(|id| IncidentId(*id))
    }

    fn execution(&self, key: &str) -> Option<Execution> {
        self.executions.get(key).cloned()
    }

    fn openings(&self, source: &str, since: DateTime<Utc>) -> usize {
        self.opened
            .iter()
            .filter(|(s, at)| *s == source && *at >= since)
            .count()
    }
}

impl World {
    fn new() -> World {
        World {
            cfg: Config::from_toml(CFG, &|_| None).expect("test config"),
            now: t0(),
            incidents: BTreeMap::new(),
            timelines: HashMap::new(),
            open: HashMap::new(),
            history: HashMap::new(),
            timers: Vec::new(),
            queue: Vec::new(),
            executions: Default::default(),
            opened: Vec::new(),
            sent: HashMap::new(),
        }
    }

    fn nth(&self, n: usize) -> Option<u64> {
        if self.incidents.is_empty() {
            return None;
        }
        self.incidents.keys().nth(n % self.incidents.len()).copied()
    }

    fn input(&mut self, target: Option<u64>, input: Input) {
        let existing = target.and_then(|id| self.incidents.get(&id).cloned());
        let key = match &input {
            Input::Alert(a) => Some(a.group_key(&self.cfg.engine.group_by)),
            _ => None,
        };
        // A new alert sees its group's history and most recently resolved incident.
        let (history, recent) = match (&key, &existing) {
            (Some(k), None) => {
                let h = self.history.get(k).cloned().unwrap_or_default();
                let recent = h
                    .iter()
                    .max_by_key(|p| p.resolved_at)
                    .and_then(|p| self.incidents.get(&p.id.0).cloned());
                (h, recent)
            }
            _ => (Vec::new(), None),
        };
        let next_id = self.incidents.len() as u64 + 1;
        let view = WorldView {
            open: &self.open,
            executions: &self.executions,
            opened: &self.opened,
        };
        let ctx = Ctx {
            now: self.now,
            next_id: IncidentId(next_id),
            history: &history,
            recent: recent.as_ref(),
            view: &view,
        };
        let Ok(d) = handle(existing, input, &self.cfg, ctx) else {
            return;
        };
        for x in d.executions {
            self.executions.insert(x.key.clone(), x);
        }
        let Some(inc) = d.incident else { return };
        let id = inc.id.0;
        if d.created {
            self.opened.push((inc.source.as_str(), inc.opened_at));
        }
        self.timelines.entry(id).or_default().extend(d.events);
        if let Some((k, p)) = d.past {
            self.history.entry(k).or_default().push(p);
        }
        for (k, v) in d.open {
            match v {
                Some(v) => self.open.insert(k, v.0),
                None => self.open.remove(&k),
            };
        }
        for e in d.effects {
            match e {
                Effect::ArmTimer(t) => {
                    self.timers.retain(|x| !(x.0 == id && x.1 == t.kind));
                    self.timers.push((id, t.kind, t.at));
                }
                Effect::DisarmTimer(k) => self.timers.retain(|x| !(x.0 == id && x.1 == k)),
                Effect::Execute { action, key } => self.queue.push((id, action, key)),
                // Evidence only reads and adds timeline entries; it moves no number here.
                Effect::Chat(_) | Effect::GatherEvidence => {}
            }
        }
        self.incidents.insert(id, inc);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Alert {
                fp,
                firing,
                started_ago,
            } => {
                let fingerprint = format!("fp{fp}");
                let started = self.now - Duration::seconds(started_ago as i64);
                let alert = Alert {
                    source: AlertSource::Generic,
                    fingerprint: fingerprint.clone(),
                    status: if firing {
                        AlertStatus::Firing
                    } else {
                        AlertStatus::Resolved
                    },
                    title: format!("Alert {fp}"),
                    description: None,
                    labels: [
                        ("kind".to_string(), KINDS[fp % 4].to_string()),
                        ("severity".to_string(), SEVERITIES[(fp / 2) % 4].to_string()),
                    ]
                    .into_iter()
                    .collect(),
                    annotations: Default::default(),
                    starts_at: Some(started),
                    ends_at: None,
                    links: vec![],
                    origin: None,
                    group_labels: Default::default(),
                };
                let target = self
                    .open
                    .get(&alert.group_key(&self.cfg.engine.group_by))
                    .copied();
                let before = self.incidents.len();
                self.input(target, Input::Alert(alert));
                if self.incidents.len() > before {
                    let id = self.incidents.len() as u64;
                    self.sent.insert(id, (fingerprint, started));
                }
            }
            Op::Wait(s) => self.now += Duration::seconds(s as i64),
            Op::Days(d) => self.now += Duration::days(d as i64),
            Op::Command { who, n, what } => {
                let Some(id) = self.nth(n) else { return };
                let i = IncidentId(id);
                let command = match what {
                    Cmd::Ack => Command::Ack(i),
                    Cmd::Resolve => Command::Resolve(i, None),
                    Cmd::Reopen => Command::Reopen(i),
                    Cmd::Escalate => Command::Escalate(i),
                    Cmd::Approve(a) => Command::Approve(i, ACTIONS[a].into()),
                    Cmd::Reject(a) => Command::Reject(i, ACTIONS[a].into(), None),
                    Cmd::Severity(s) => Command::Severity(i, incidentd::domain::severity::ALL[s]),
                    Cmd::RootCause(c) => Command::RootCause(i, RootCause::ALL[c], None),
                    Cmd::Assign => Command::Assign(i, "@alice".into()),
                    Cmd::Note => Command::Note(i, "looking".into()),
                };
                let actor = Actor::new(Platform::Console, PEOPLE[who]);
                self.input(Some(id), Input::Command { actor, command });
            }
            Op::Run {
                success,
                interrupted,
            } => {
                if self.queue.is_empty() {
                    return;
                }
                let (id, action, key) = self.queue.remove(0);
                let inc = IncidentId(id);
                self.input(
                    Some(id),
                    Input::ExecutionStarted {
                        incident: inc,
                        action: action.clone(),
                        key: key.clone(),
                        preview: "/bin/true".into(),
                    },
                );
                let input = if interrupted {
                    Input::ExecutionInterrupted {
                        incident: inc,
                        action,
                        key,
                    }
                } else {
                    Input::ExecutionFinished {
                        incident: inc,
                        action,
                        key,
                        success,
                        summary: "done".into(),
                    }
                };
                self.input(Some(id), input);
            }
            Op::Verify { n, ok } => {
                let Some(id) = self.nth(n) else { return };
                let Some(action) = self.incidents[&id].verifying.clone() else {
                    return;
                };
                self.input(
                    Some(id),
                    Input::VerificationFinished {
                        incident: IncidentId(id),
                        action,
                        ok,
                        summary: "checked".into(),
                    },
                );
            }
            Op::Timers => {
                let now = self.now;
                let (due, rest): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|t| t.2 <= now);
                self.timers = rest;
                for (id, kind, at) in due {
                    self.input(
                        Some(id),
                        Input::Timer(incidentd::ports::Timer {
                            incident: IncidentId(id),
                            kind,
                            at,
                        }),
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reference: docs/metrics.md, read literally, over the timelines.

fn human(ev: &TimelineEvent) -> bool {
    !(ev.actor.platform == Platform::Console && ev.actor.id == "system")
}

struct Ref {
    opened: DateTime<Utc>,
    started: DateTime<Utc>,
    acked: Option<DateTime<Utc>>,
    resolved: Option<DateTime<Utc>>,
    active: bool,
    severity: Severity,
    kind: String,
    manual: bool,
    rca: bool,
    recurred: bool,
    auto_done: usize,
    auto_ok: usize,
}

fn has_verification(cfg: &Config, action: &str) -> bool {
    cfg.playbooks
        .iter()
        .flat_map(|p| p.actions.iter())
        .any(|a| a.id == action && a.verify.is_some())
}

fn reference_row(w: &World, id: u64) -> Ref {
    let tl = &w.timelines[&id];
    let (fp, started) = w.sent[&id].clone();
    let (opened, mut severity, kind) = match &tl[0].kind {
        EventKind::Opened { severity, kind, .. } => (tl[0].at, *severity, kind.clone()),
        other => panic!("first event is {other:?}"),
    };
    let mut status = Status::Open;
    let mut acked = None;
    let mut resolved_at = None;
    let mut manual = false;
    let mut last_cause: Option<(RootCause, bool)> = None;
    for ev in tl {
        let active = !matches!(status, Status::Resolved | Status::Closed);
        match &ev.kind {
            EventKind::StatusChanged { to, .. } => {
                if human(ev) {
                    manual = true;
                }
                if *to == Status::Acknowledged && acked.is_none() {
                    acked = Some(ev.at);
                }
                if *to == Status::Resolved {
                    resolved_at = Some(ev.at);
                }
                status = *to;
            }
            EventKind::Acknowledged => {
                if acked.is_none() {
                    acked = Some(ev.at);
                }
                manual |= active;
            }
            EventKind::ActionApproved { .. }
            | EventKind::ActionRejected { .. }
            | EventKind::Assigned { .. } => manual |= human(ev) && active,
            EventKind::SeverityChanged { to, .. } => {
                manual |= human(ev) && active;
                severity = *to;
            }
            EventKind::RootCauseSet { category, .. } => {
                manual |= human(ev) && active;
                last_cause = Some((*category, human(ev)));
            }
            EventKind::ExecutionQueued { .. } => manual |= human(ev),
            _ => {}
        }
    }
    let ended = matches!(status, Status::Resolved | Status::Closed);
    // Automatic actions: queued by incidentd, not a rollback, not the pager; one outcome each.
    let (mut auto_done, mut auto_ok) = (0, 0);
    for (i, ev) in tl.iter().enumerate() {
        let EventKind::ExecutionQueued {
            action,
            rollback_of: None,
            ..
        } = &ev.kind
        else {
            continue;
        };
        if human(ev) || action == "pager" {
            continue;
        }
        // This run's own events: up to the next run of the same action.
        let later = &tl[i + 1..];
        let span = later
            .iter()
            .position(
                |e| matches!(&e.kind, EventKind::ExecutionQueued { action: a, .. } if a == action),
            )
            .unwrap_or(later.len());
        let later = &later[..span];
        let end = later.iter().find_map(|e| match &e.kind {
            EventKind::ExecutionFinished {
                action: a, success, ..
            } if a == action => Some(Some(*success)),
            EventKind::ExecutionInterrupted { action: a, .. } if a == action => Some(None),
            _ => None,
        });
        let outcome = match end {
            None => continue,          // still queued or running
            Some(None) => Some(false), // interrupted
            Some(Some(false)) => Some(false),
            Some(Some(true)) if !has_verification(&w.cfg, action) => Some(true),
            Some(Some(true)) => later.iter().find_map(|e| match &e.kind {
                EventKind::Verified { action: a, ok, .. } if a == action => Some(*ok),
                _ => None,
            }),
        };
        if let Some(ok) = outcome {
            auto_done += 1;
            if ok {
                auto_ok += 1;
            }
        }
    }
    // Recurrence: an earlier incident of the fingerprint resolved within 30 days before this
    // one opened.
    let recurred = w.sent.iter().any(|(other, (f, _))| {
        *other < id
            && *f == fp
            && w.timelines[other].iter().any(|e| {
                matches!(
                    e.kind,
                    EventKind::StatusChanged {
                        to: Status::Resolved,
                        ..
                    }
                ) && e.at <= opened
                    && e.at >= opened - Duration::days(30)
            })
    });
    Ref {
        opened,
        started: started.min(opened),
        acked,
        resolved: resolved_at.filter(|_| ended),
        active: !ended,
        severity,
        kind,
        manual,
        rca: ended && last_cause.is_some_and(|(c, by_human)| by_human && c != RootCause::Unknown),
        recurred,
        auto_done,
        auto_ok,
    }
}

fn dist(v: &[f64]) -> (usize, Option<f64>, Option<f64>, Option<f64>) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = |p: f64| {
        let r = (p * v.len() as f64).ceil() as usize;
        v.get(r.max(1) - 1).copied()
    };
    let mean = if v.is_empty() {
        None
    } else {
        Some(v.iter().sum::<f64>() / v.len() as f64)
    };
    (v.len(), mean, rank(0.5), rank(0.9))
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1.0),
        _ => false,
    }
}

fn check_dist(name: &str, got: &Percentiles, want: &[f64]) -> Result<(), TestCaseError> {
    let (n, mean, median, p90) = dist(want);
    prop_assert_eq!(got.count, n, "{} count", name);
    prop_assert!(
        close(got.mean_seconds, mean),
        "{} mean {:?} vs {:?}",
        name,
        got.mean_seconds,
        mean
    );
    prop_assert!(close(got.median_seconds, median), "{} median", name);
    prop_assert!(close(got.p90_seconds, p90), "{} p90", name);
    Ok(())
}

fn check(w: &World, s: &Stats, days: u32) -> Result<(), TestCaseError> {
    let since = w.now - Duration::days(days as i64);
    let rows: Vec<Ref> = w
        .incidents
        .keys()
        .map(|id| reference_row(w, *id))
        .filter(|r| r.opened >= since)
        .collect();
    let secs = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds() as f64 / 1000.0;
    let resolved: Vec<&Ref> = rows.iter().filter(|r| r.resolved.is_some()).collect();
    prop_assert_eq!(s.total, rows.len());
    prop_assert_eq!(s.open, rows.iter().filter(|r| r.active).count());
    prop_assert_eq!(s.resolved, resolved.len());
    let mut by_sev: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *by_sev.entry(r.severity.to_string()).or_default() += 1;
        *by_kind.entry(r.kind.clone()).or_default() += 1;
    }
    prop_assert_eq!(&s.by_severity, &by_sev);
    prop_assert_eq!(&s.by_kind, &by_kind);
    let ttr: Vec<f64> = resolved
        .iter()
        .map(|r| secs(r.opened, r.resolved.unwrap()))
        .collect();
    check_dist("mttr", &s.mttr, &ttr)?;
    let from_start: Vec<f64> = resolved
        .iter()
        .map(|r| secs(r.started, r.resolved.unwrap()))
        .collect();
    check_dist("mttr_from_start", &s.mttr_from_start, &from_start)?;
    let automated: Vec<f64> = resolved
        .iter()
        .filter(|r| !r.manual)
        .map(|r| secs(r.opened, r.resolved.unwrap()))
        .collect();
    check_dist("mttr_automated", &s.mttr_automated, &automated)?;
    let tta: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.acked.map(|a| secs(r.opened, a)))
        .collect();
    check_dist("mtta", &s.mtta, &tta)?;
    for sev in ["P0", "P1", "P2", "P3"] {
        let v: Vec<f64> = resolved
            .iter()
            .filter(|r| r.severity.to_string() == sev)
            .map(|r| secs(r.opened, r.resolved.unwrap()))
            .collect();
        match s.mttr_by_severity.get(sev) {
            Some(p) => check_dist(sev, p, &v)?,
            None => prop_assert!(v.is_empty()),
        }
    }
    let count = |f: &dyn Fn(&Ref) -> bool| rows.iter().filter(|r| f(r)).count();
    let manual = count(&|r| r.manual);
    prop_assert_eq!(
        (
            s.manual_intervention.numerator,
            s.manual_intervention.denominator
        ),
        (manual, rows.len()),
        "manual intervention"
    );
    let rca = resolved.iter().filter(|r| r.rca).count();
    prop_assert_eq!(
        (s.rca_completion.numerator, s.rca_completion.denominator),
        (rca, resolved.len()),
        "rca"
    );
    prop_assert_eq!(
        (s.recurrence.numerator, s.recurrence.denominator),
        (count(&|r| r.recurred), rows.len()),
        "recurrence"
    );
    let auto_done: usize = rows.iter().map(|r| r.auto_done).sum();
    let auto_ok: usize = rows.iter().map(|r| r.auto_ok).sum();
    prop_assert_eq!(
        (s.auto_remediation.numerator, s.auto_remediation.denominator),
        (auto_ok, auto_done),
        "auto-remediation"
    );
    prop_assert_eq!(s.manual_intervention_rate, s.manual_intervention.rate);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn stats_equal_the_reference_on_random_histories(ops in prop::collection::vec(op_strategy(), 1..160)) {
        let mut w = World::new();
        for op in ops {
            w.apply(op);
        }
        let incidents: Vec<Incident> = w.incidents.values().cloned().collect();
        for days in [1, 7, 30, 365] {
            let s = compute(&incidents, w.now, days);
            check(&w, &s, days)?;
        }
    }
}

/// The generator reaches what the numbers are about (otherwise the property says little).
#[test]
fn histories_cover_every_outcome() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut auto_ok, mut auto_failed, mut manual, mut rca, mut recurred, mut rollbacks) =
        (0, 0, 0, 0, 0, 0);
    let (mut auto_resolved, mut flap_reopened) = (0, 0);
    for _ in 0..64 {
        let ops = prop::collection::vec(op_strategy(), 100..160)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut w = World::new();
        for op in ops {
            w.apply(op);
        }
        let incidents: Vec<Incident> = w.incidents.values().cloned().collect();
        let s = compute(&incidents, w.now, 365);
        auto_ok += s.auto_remediation.numerator;
        auto_failed += s.auto_remediation.denominator - s.auto_remediation.numerator;
        manual += s.manual_intervention.numerator;
        rca += s.rca_completion.numerator;
        recurred += s.recurrence.numerator;
        rollbacks += w
            .timelines
            .values()
            .flatten()
            .filter(|e| {
                matches!(
                    &e.kind,
                    EventKind::ExecutionQueued {
                        rollback_of: Some(_),
                        ..
                    }
                )
            })
            .count();
        let by_incidentd = |to: Status| {
            w.timelines
                .values()
                .flatten()
                .filter(|e| {
                    !human(e)
                        && matches!(&e.kind, EventKind::StatusChanged { to: t, .. } if *t == to)
                })
                .count()
        };
        auto_resolved += by_incidentd(Status::Resolved);
        flap_reopened += by_incidentd(Status::Open);
    }
    for (what, n) in [
        ("automatic successes", auto_ok),
        ("automatic failures", auto_failed),
        ("manual interventions", manual),
        ("completed RCAs", rca),
        ("recurrences", recurred),
        ("rollbacks", rollbacks),
        ("resolutions by incidentd", auto_resolved),
        ("re-fires that reopened an incident", flap_reopened),
    ] {
        assert!(n > 0, "no {what} in 64 histories");
    }
}
