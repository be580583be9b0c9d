//! How the team is doing against the targets that matter: MTTR, MTTA, manual intervention,
//! auto-remediation success, RCA completion and recurrence over a window. docs/metrics.md
//! defines each number; this is the one implementation every surface uses (the API, `/metrics`,
//! `/incident stats`, the console).
//!
//! Each incident contributes one small row of [`Facts`], derived from the incident and its
//! timeline's [`Tally`](super::tally::Tally). A [`Book`] keeps one row per incident, so the
//! numbers are read without loading any incident: the engine updates it as decisions are
//! committed and builds it once at start-up.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::classify::RootCause;
use super::followup::FollowUpState;
use super::incident::{ActionStatus, Incident, IncidentId, Status};
use super::severity::Severity;

/// The field's targets.
pub const TARGET_MTTR_SECONDS: f64 = 8.0 * 60.0;
/// MTTR target for incidents handled without a human.
pub const TARGET_MTTR_AUTOMATED_SECONDS: f64 = 3.0 * 60.0;
pub const TARGET_MANUAL_RATE: f64 = 0.20;
pub const TARGET_RCA_RATE: f64 = 0.95;
pub const TARGET_RECURRENCE_RATE: f64 = 0.05;

/// A distribution of durations: mean, and nearest-rank median and p90.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub mean_seconds: Option<f64>,
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
}

impl Percentiles {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            // Nearest rank.
            let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            Some(v[rank - 1])
        };
        let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        Percentiles {
            count: v.len(),
            mean_seconds: mean,
            median_seconds: at(0.5),
            p90_seconds: at(0.9),
        }
    }
}

/// A ratio with its parts, so that every rate can be checked by hand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Ratio {
    pub numerator: usize,
    pub denominator: usize,
    /// `None` when the denominator is 0.
    pub rate: Option<f64>,
}

impl Ratio {
    fn of(n: usize, d: usize) -> Ratio {
        Ratio {
            numerator: n,
            denominator: d,
            rate: (d > 0).then(|| n as f64 / d as f64),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub window_days: u32,
    pub total: usize,
    pub open: usize,
    pub resolved: usize,
    pub by_severity: BTreeMap<String, usize>,
    pub by_kind: BTreeMap<String, usize>,
    /// From opening to the first acknowledgement.
    pub mtta: Percentiles,
    pub mtta_by_severity: BTreeMap<String, Percentiles>,
    /// From opening to resolution.
    pub mttr: Percentiles,
    /// From the alert's start (the source's `startsAt`) to resolution.
    pub mttr_from_start: Percentiles,
    pub mttr_by_severity: BTreeMap<String, Percentiles>,
    pub mttr_by_kind: BTreeMap<String, Percentiles>,
    /// Resolved incidents that no human intervened in, from opening to resolution.
    pub mttr_automated: Percentiles,
    pub manual_intervention: Ratio,
    pub auto_remediation: Ratio,
    pub rca_completion: Ratio,
    pub recurrence: Ratio,
    /// Follow-ups (not dropped) of the window's incidents that were done and verified on time.
    pub followup_completion: Ratio,
    /// Follow-ups of the window's incidents past their current due date (done by, or verified
    /// by) at the time of asking.
    pub followups_overdue: usize,
    /// The four rates alone (as before; the same values as the ratios above).
    pub manual_intervention_rate: Option<f64>,
    pub auto_remediation_success_rate: Option<f64>,
    pub rca_completion_rate: Option<f64>,
    pub recurrence_rate: Option<f64>,
    pub targets: Targets,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Targets {
    pub mttr_seconds: f64,
    pub mttr_automated_seconds: f64,
    pub manual_intervention_rate: f64,
    pub rca_completion_rate: f64,
    pub recurrence_rate: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            mttr_seconds: TARGET_MTTR_SECONDS,
            mttr_automated_seconds: TARGET_MTTR_AUTOMATED_SECONDS,
            manual_intervention_rate: TARGET_MANUAL_RATE,
            rca_completion_rate: TARGET_RCA_RATE,
            recurrence_rate: TARGET_RECURRENCE_RATE,
        }
    }
}

/// What one incident contributes to the numbers (docs/metrics.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub opened_at: DateTime<Utc>,
    /// The alert's start, never after the opening.
    pub started_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Set while the incident is resolved or closed.
    pub resolved_at: Option<DateTime<Utc>>,
    pub active: bool,
    pub severity: Severity,
    pub kind: String,
    pub manual: bool,
    pub rca: bool,
    pub recurred: bool,
    /// Automatic actions with an outcome, and those that succeeded.
    pub auto_done: u32,
    pub auto_ok: u32,
    /// Follow-ups not dropped, and those of them done and verified on time.
    pub followups: u32,
    pub followups_on_time: u32,
    /// The current due dates (done by, verified by) of the follow-ups still open or done.
    pub followup_deadlines: Vec<DateTime<Utc>>,
}

impl Facts {
    pub fn of(inc: &Incident) -> Facts {
        let (manual, (auto_done, auto_ok)) = match &inc.tally {
            Some(t) => (t.human, t.auto_counts()),
            // Stored before tallies and not folded yet: what the incident's fields say.
            None => (legacy_needed_a_human(inc), legacy_auto_counts(inc)),
        };
        let ended = matches!(inc.status, Status::Resolved | Status::Closed);
        Facts {
            opened_at: inc.opened_at,
            started_at: inc
                .started_at
                .map_or(inc.opened_at, |s| s.min(inc.opened_at)),
            acknowledged_at: inc.acknowledged_at,
            resolved_at: inc.resolved_at.filter(|_| ended),
            active: inc.status.is_active(),
            severity: inc.severity,
            kind: inc.kind.clone(),
            manual,
            rca: inc
                .root_cause
                .as_ref()
                .is_some_and(|r| r.confirmed_by.is_some() && r.category != RootCause::Unknown),
            recurred: inc.recurrence.is_some(),
            auto_done,
            auto_ok,
            followups: inc
                .followups
                .iter()
                .filter(|f| f.state != FollowUpState::Dropped)
                .count() as u32,
            followups_on_time: inc
                .followups
                .iter()
                .filter(|f| f.completed_on_time())
                .count() as u32,
            followup_deadlines: inc.followups.iter().filter_map(|f| f.deadline()).collect(),
        }
    }
}

fn legacy_needed_a_human(inc: &Incident) -> bool {
    let human = |a: &super::policy::Actor| !a.is_system();
    inc.acknowledged_by.as_ref().is_some_and(human)
        || inc.resolved_by.as_ref().is_some_and(human)
        || inc
            .actions
            .iter()
            .any(|a| a.approvals.iter().any(human) || a.decided_by.as_ref().is_some_and(human))
}

fn legacy_auto_counts(inc: &Incident) -> (u32, u32) {
    let auto = inc
        .actions
        .iter()
        .filter(|a| a.decided_by.as_ref().is_some_and(|x| x.is_system()));
    let done = auto
        .clone()
        .filter(|a| matches!(a.status, ActionStatus::Succeeded | ActionStatus::Failed))
        .count();
    let ok = auto.filter(|a| a.status == ActionStatus::Succeeded).count();
    (done as u32, ok as u32)
}

const NONE: i64 = i64::MIN;
const ACTIVE: u8 = 1;
const MANUAL: u8 = 2;
const RCA: u8 = 4;
const RECURRED: u8 = 8;

/// One incident's facts in 48 bytes (milliseconds since the epoch; `NONE` for absent).
#[derive(Debug, Clone, Copy)]
struct Row {
    opened: i64,
    started: i64,
    acked: i64,
    resolved: i64,
    auto_done: u32,
    auto_ok: u32,
    kind: u32,
    severity: u8,
    flags: u8,
    present: bool,
}

const EMPTY: Row = Row {
    opened: 0,
    started: 0,
    acked: NONE,
    resolved: NONE,
    auto_done: 0,
    auto_ok: 0,
    kind: 0,
    severity: 0,
    flags: 0,
    present: false,
};

/// An incident's follow-ups as the numbers need them.
#[derive(Debug, Clone, Default)]
struct FollowUpRow {
    total: u32,
    on_time: u32,
    /// Current due dates of those still open or done (ms).
    deadlines: Vec<i64>,
}

/// Rows per chunk of the book.
const CHUNK: usize = 4096;

/// One row of facts per incident, indexed by incident number (ids are dense), with the kind
/// names interned: 48 bytes an incident. Rows live in chunks of [`CHUNK`], so that growing the
/// book never copies it and never holds more than one chunk unused (a plain `Vec` would double
/// its capacity: up to twice the rows' size).
#[derive(Debug, Default)]
pub struct Book {
    chunks: Vec<Box<[Row]>>,
    /// Follow-ups, for the incidents that have any (most have none: no room in every row).
    followups: HashMap<u64, FollowUpRow>,
    kinds: Vec<String>,
    kind_ids: HashMap<String, u32>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn opt_ms(t: Option<DateTime<Utc>>) -> i64 {
    t.map_or(NONE, ms)
}

impl Book {
    pub fn new() -> Book {
        Book::default()
    }

    fn rows(&self) -> impl Iterator<Item = &Row> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Incidents recorded.
    pub fn len(&self) -> usize {
        self.rows().filter(|r| r.present).count()
    }

    /// Bytes the rows take (the kind names aside).
    pub fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<Row>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Incidents not resolved yet, whenever they opened.
    pub fn active(&self) -> usize {
        self.rows()
            .filter(|r| r.present && r.flags & ACTIVE != 0)
            .count()
    }

    fn slot(&mut self, id: IncidentId) -> &mut Row {
        let i = id.0 as usize;
        let (chunk, at) = (i / CHUNK, i % CHUNK);
        while self.chunks.len() <= chunk {
            self.chunks.push(vec![EMPTY; CHUNK].into_boxed_slice());
        }
        &mut self.chunks[chunk][at]
    }

    /// Records (or replaces) an incident's facts.
    pub fn put(&mut self, id: IncidentId, f: &Facts) {
        let kind = match self.kind_ids.get(&f.kind) {
            Some(k) => *k,
            None => {
                let k = self.kinds.len() as u32;
                self.kinds.push(f.kind.clone());
                self.kind_ids.insert(f.kind.clone(), k);
                k
            }
        };
        if f.followups > 0 || !f.followup_deadlines.is_empty() {
            self.followups.insert(
                id.0,
                FollowUpRow {
                    total: f.followups,
                    on_time: f.followups_on_time,
                    deadlines: f.followup_deadlines.iter().map(|t| ms(*t)).collect(),
                },
            );
        } else {
            self.followups.remove(&id.0);
        }
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        *self.slot(id) = Row {
            opened: ms(f.opened_at),
            started: ms(f.started_at),
            acked: opt_ms(f.acknowledged_at),
            resolved: opt_ms(f.resolved_at),
            auto_done: f.auto_done,
            auto_ok: f.auto_ok,
            kind,
            severity: f.severity as u8,
            flags: flag(f.active, ACTIVE)
                | flag(f.manual, MANUAL)
                | flag(f.rca, RCA)
                | flag(f.recurred, RECURRED),
            present: true,
        };
    }

    /// Records an incident's facts unless a newer version is recorded already (start-up: the
    /// engine may have recorded a commit while the book was being built).
    pub fn put_if_absent(&mut self, id: IncidentId, f: &Facts) {
        if !self.slot(id).present {
            self.put(id, f);
        }
    }

    /// The numbers over incidents opened in the `days` before `now`.
    pub fn stats(&self, now: DateTime<Utc>, days: u32) -> Stats {
        let since = ms(now - Duration::days(days as i64));
        let mut s = Stats {
            window_days: days,
            ..Default::default()
        };
        let secs = |a: i64, b: i64| (b - a) as f64 / 1000.0;
        let (mut tta, mut ttr, mut ttr_start, mut ttr_auto) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut tta_sev: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut ttr_sev: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut ttr_kind: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let (mut manual, mut auto_ok, mut auto_done, mut rca, mut recurred) = (0, 0, 0, 0, 0);
        let mut by_sev = [0usize; 4];
        let mut by_kind = vec![0usize; self.kinds.len()];
        for r in self.rows().filter(|r| r.present && r.opened >= since) {
            s.total += 1;
            let sev = super::severity::ALL[r.severity as usize].to_string();
            by_sev[r.severity as usize] += 1;
            by_kind[r.kind as usize] += 1;
            if r.flags & ACTIVE != 0 {
                s.open += 1;
            }
            if r.acked != NONE {
                let t = secs(r.opened, r.acked);
                tta.push(t);
                tta_sev.entry(sev.clone()).or_default().push(t);
            }
            if r.resolved != NONE {
                s.resolved += 1;
                let t = secs(r.opened, r.resolved);
                ttr.push(t);
                ttr_start.push(secs(r.started, r.resolved));
                ttr_sev.entry(sev).or_default().push(t);
                ttr_kind
                    .entry(self.kinds[r.kind as usize].clone())
                    .or_default()
                    .push(t);
                if r.flags & MANUAL == 0 {
                    ttr_auto.push(t);
                }
                if r.flags & RCA != 0 {
                    rca += 1;
                }
            }
            if r.flags & MANUAL != 0 {
                manual += 1;
            }
            if r.flags & RECURRED != 0 {
                recurred += 1;
            }
            auto_done += r.auto_done as usize;
            auto_ok += r.auto_ok as usize;
        }
        let (mut fu_total, mut fu_on_time) = (0usize, 0usize);
        let now_ms = ms(now);
        for (id, f) in &self.followups {
            let i = *id as usize;
            let in_window = self
                .chunks
                .get(i / CHUNK)
                .map(|c| c[i % CHUNK])
                .is_some_and(|r| r.present && r.opened >= since);
            if in_window {
                fu_total += f.total as usize;
                fu_on_time += f.on_time as usize;
                s.followups_overdue += f.deadlines.iter().filter(|d| **d <= now_ms).count();
            }
        }
        s.followup_completion = Ratio::of(fu_on_time, fu_total);
        for (i, n) in by_sev.iter().enumerate().filter(|(_, n)| **n > 0) {
            s.by_severity
                .insert(super::severity::ALL[i].to_string(), *n);
        }
        for (i, n) in by_kind.iter().enumerate().filter(|(_, n)| **n > 0) {
            s.by_kind.insert(self.kinds[i].clone(), *n);
        }
        let dist = |m: BTreeMap<String, Vec<f64>>| {
            m.into_iter()
                .map(|(k, v)| (k, Percentiles::of(v)))
                .collect()
        };
        s.mtta = Percentiles::of(tta);
        s.mtta_by_severity = dist(tta_sev);
        s.mttr = Percentiles::of(ttr);
        s.mttr_from_start = Percentiles::of(ttr_start);
        s.mttr_automated = Percentiles::of(ttr_auto);
        s.mttr_by_severity = dist(ttr_sev);
        s.mttr_by_kind = dist(ttr_kind);
        s.manual_intervention = Ratio::of(manual, s.total);
        s.auto_remediation = Ratio::of(auto_ok, auto_done);
        s.rca_completion = Ratio::of(rca, s.resolved);
        s.recurrence = Ratio::of(recurred, s.total);
        s.manual_intervention_rate = s.manual_intervention.rate;
        s.auto_remediation_success_rate = s.auto_remediation.rate;
        s.rca_completion_rate = s.rca_completion.rate;
        s.recurrence_rate = s.recurrence.rate;
        s
    }
}

/// Incidents opened in one stretch of days, for a trend over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// The first and last UTC day of the stretch.
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    pub opened: usize,
    /// Of those, resolved (or closed) by now.
    pub resolved: usize,
    /// Their mean time from opening to resolution.
    pub mttr_seconds: Option<f64>,
}

impl Book {
    /// The window's last `days` UTC days (today included) in stretches of `per` days, oldest
    /// first, every stretch present (a quiet one counts 0); the oldest may be shorter. Each
    /// incident counts in the stretch of the day it opened.
    pub fn trend(&self, now: DateTime<Utc>, days: u32, per: u32) -> Vec<Bucket> {
        let (days, per) = (days.max(1) as i64, per.max(1) as i64);
        let today = now.date_naive();
        let n = (days + per - 1) / per;
        let mut sums = vec![(0usize, 0usize, 0.0f64); n as usize];
        for r in self.rows().filter(|r| r.present) {
            let Some(opened) = DateTime::<Utc>::from_timestamp_millis(r.opened) else {
                continue;
            };
            let ago = (today - opened.date_naive()).num_days();
            if !(0..days).contains(&ago) {
                continue;
            }
            let b = &mut sums[(ago / per) as usize];
            b.0 += 1;
            if r.resolved != NONE {
                b.1 += 1;
                b.2 += (r.resolved - r.opened) as f64 / 1000.0;
            }
        }
        sums.iter()
            .enumerate()
            .rev()
            .map(|(k, &(opened, resolved, total))| {
                let k = k as i64;
                Bucket {
                    from: today - Duration::days(((k + 1) * per - 1).min(days - 1)),
                    to: today - Duration::days(k * per),
                    opened,
                    resolved,
                    mttr_seconds: (resolved > 0).then(|| total / resolved as f64),
                }
            })
            .collect()
    }
}

/// [`Book::trend`] from the incidents themselves.
pub fn trend(incidents: &[Incident], now: DateTime<Utc>, days: u32, per: u32) -> Vec<Bucket> {
    let mut book = Book::new();
    for i in incidents {
        book.put(i.id, &Facts::of(i));
    }
    book.trend(now, days, per)
}

/// The numbers over incidents opened in the `days` before `now`, from the incidents
/// themselves (tests, and tools without an engine).
pub fn compute(incidents: &[Incident], now: DateTime<Utc>, days: u32) -> Stats {
    let mut book = Book::new();
    for i in incidents {
        book.put(i.id, &Facts::of(i));
    }
    book.stats(now, days)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{:.0}%", v * 100.0))
}

fn mins(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| {
        if v < 60.0 {
            format!("{v:.0} s")
        } else {
            format!("{:.1} min", v / 60.0)
        }
    })
}

fn mark(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "✅",
        Some(false) => "⚠️",
        None => "·",
    }
}

/// A few lines for chat.
fn parts(r: &Ratio) -> String {
    format!("{} ({}/{})", pct(r.rate), r.numerator, r.denominator)
}

/// A few lines for chat.
pub fn render_text(s: &Stats) -> String {
    let t = &s.targets;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "*Incident stats, last {} days* — {} incidents ({} open, {} resolved)",
        s.window_days, s.total, s.open, s.resolved
    );
    let _ = writeln!(
        out,
        "{} MTTR {} (median {}, p90 {}; from the alert's start {}) — target < {}",
        mark(s.mttr.mean_seconds.map(|m| m < t.mttr_seconds)),
        mins(s.mttr.mean_seconds),
        mins(s.mttr.median_seconds),
        mins(s.mttr.p90_seconds),
        mins(s.mttr_from_start.mean_seconds),
        mins(Some(t.mttr_seconds))
    );
    let _ = writeln!(
        out,
        "{} MTTR without a human {} ({} incidents) — target < {}",
        mark(
            s.mttr_automated
                .mean_seconds
                .map(|m| m < t.mttr_automated_seconds)
        ),
        mins(s.mttr_automated.mean_seconds),
        s.mttr_automated.count,
        mins(Some(t.mttr_automated_seconds))
    );
    let _ = writeln!(
        out,
        "· MTTA {} (median {}, p90 {})",
        mins(s.mtta.mean_seconds),
        mins(s.mtta.median_seconds),
        mins(s.mtta.p90_seconds)
    );
    let _ = writeln!(
        out,
        "{} Manual intervention {} — target < {}",
        mark(
            s.manual_intervention
                .rate
                .map(|r| r < t.manual_intervention_rate)
        ),
        parts(&s.manual_intervention),
        pct(Some(t.manual_intervention_rate))
    );
    let _ = writeln!(
        out,
        "· Auto-remediation success {}",
        parts(&s.auto_remediation)
    );
    let _ = writeln!(
        out,
        "{} RCA completion {} — target ≥ {}",
        mark(s.rca_completion.rate.map(|r| r >= t.rca_completion_rate)),
        parts(&s.rca_completion),
        pct(Some(t.rca_completion_rate))
    );
    let _ = writeln!(
        out,
        "{} Recurrence {} — target < {}",
        mark(s.recurrence.rate.map(|r| r < t.recurrence_rate)),
        parts(&s.recurrence),
        pct(Some(t.recurrence_rate))
    );
    let _ = writeln!(
        out,
        "{} Follow-ups done and verified on time {}; overdue now: {}",
        mark(s.followup_completion.rate.map(|_| s.followups_overdue == 0)),
        parts(&s.followup_completion),
        s.followups_overdue
    );
    if !s.by_severity.is_empty() {
        let by: Vec<String> = s
            .by_severity
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(out, "· By severity: {}", by.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Platform;
    use crate::domain::classify::RootCause;
    use crate::domain::incident::tests_support::incident;
    use crate::domain::incident::{
        ActionState, EventKind, IncidentId, Recurrence, RootCauseInfo, TimelineEvent,
    };
    use crate::domain::policy::Actor;
    use crate::domain::severity::Severity;
    use crate::domain::tally::Tally;

    fn at(now: DateTime<Utc>, mins_ago: i64) -> DateTime<Utc> {
        now - Duration::minutes(mins_ago)
    }

    /// Follow-up completion and overdue against a hand-counted ground truth.
    #[test]
    fn followup_numbers_match_a_hand_count() {
        use crate::domain::followup::{FollowUp, FollowUpChange, FollowUpConfig, FollowUpKind};
        let cfg = FollowUpConfig::default();
        let now = Utc::now();
        let day = Duration::days(1);
        let who = Actor::new(Platform::Slack, "U1");
        // A follow-up added `added` days ago, then moved along at the given days ago.
        let f = |added: i64, done: Option<i64>, verified: Option<i64>, dropped: bool| {
            let mut f = FollowUp::new(
                "x".into(),
                None,
                FollowUpKind::Technical,
                &who,
                now - day * added as i32,
                &cfg,
            );
            if let Some(d) = done {
                f.apply(&FollowUpChange::Done, &who, now - day * d as i32, &cfg)
                    .unwrap();
            }
            if let Some(v) = verified {
                f.apply(&FollowUpChange::Verified, &who, now - day * v as i32, &cfg)
                    .unwrap();
            }
            if dropped {
                f.apply(
                    &FollowUpChange::Dropped { reason: "r".into() },
                    &who,
                    now,
                    &cfg,
                )
                .unwrap();
            }
            f
        };
        let mut a = incident();
        a.id = IncidentId(1);
        a.opened_at = now - day * 20;
        a.followups = vec![
            f(20, Some(15), Some(10), false), // on time: done day 5 of 7, verified 5 days later
            f(20, Some(10), Some(5), false),  // done late (day 10): not on time
            f(20, None, None, true),          // dropped: counts nowhere
            f(10, None, None, false),         // open, due 3 days ago: overdue
            f(2, None, None, false),          // open, due in 5 days
        ];
        let mut b = incident();
        b.id = IncidentId(2);
        b.opened_at = now - day * 25;
        b.followups = vec![
            f(25, Some(20), None, false), // done, verify due 13 days ago: overdue
            f(25, Some(3), None, false),  // done late, verify due in 4 days: not overdue
        ];
        let mut c = incident();
        c.id = IncidentId(3);
        c.opened_at = now - day * 40; // outside a 30-day window
        c.followups = vec![f(40, None, None, false)];
        let all = [a, b, c];
        let s = compute(&all, now, 30);
        // By hand: not dropped = 4 (a) + 2 (b) = 6; on time = 1; overdue = 1 (a) + 1 (b).
        assert_eq!(s.followup_completion, Ratio::of(1, 6));
        assert_eq!(s.followups_overdue, 2);
        // A 45-day window takes c in: one more follow-up, open and overdue.
        let s = compute(&all, now, 45);
        assert_eq!(s.followup_completion, Ratio::of(1, 7));
        assert_eq!(s.followups_overdue, 3);
        // Asked 35 days ago (c alone in the window): c's follow-up, due 33 days ago, was not
        // overdue yet; asked 30 days ago it was.
        assert_eq!(compute(&all, now - day * 35, 60).followups_overdue, 0);
        assert_eq!(compute(&all, now - day * 30, 60).followups_overdue, 1);
    }

    #[test]
    fn empty_window() {
        let s = compute(&[], Utc::now(), 7);
        assert_eq!(s.total, 0);
        assert_eq!(s.mttr.median_seconds, None);
        assert_eq!(s.manual_intervention_rate, None);
        assert!(render_text(&s).contains("0 incidents"));
    }

    #[test]
    fn hand_computed_fixture() {
        let now = Utc::now();
        let human = Actor::new(Platform::Slack, "U1");
        let mk = |id: u64, sev: Severity, kind: &str, opened_mins_ago: i64| {
            let mut i = incident();
            i.id = IncidentId(id);
            i.severity = sev;
            i.kind = kind.into();
            i.opened_at = at(now, opened_mins_ago);
            i
        };
        // 1: P1, acked after 2 min by a human, resolved after 10 min, RCA confirmed.
        let mut a = mk(1, Severity::P1, "tool_api_failure", 60);
        a.started_at = Some(at(now, 65));
        a.acknowledged_at = Some(at(now, 58));
        a.acknowledged_by = Some(human.clone());
        a.status = Status::Resolved;
        a.resolved_at = Some(at(now, 50));
        a.resolved_by = Some(human.clone());
        a.root_cause = Some(RootCauseInfo {
            category: RootCause::Configuration,
            text: None,
            confirmed_by: Some(human.clone()),
        });
        let ev = |actor: &Actor, kind: EventKind| TimelineEvent {
            at: now,
            actor: actor.clone(),
            kind,
        };
        let sys = Actor::system();
        a.tally = Some(Tally::of(&[ev(
            &human,
            EventKind::StatusChanged {
                from: Status::Open,
                to: Status::Acknowledged,
                note: None,
            },
        )]));
        let auto_run = |ok: bool| {
            Tally::of(&[
                ev(
                    &sys,
                    EventKind::ExecutionQueued {
                        action: "x".into(),
                        execution: "k".into(),
                        rollback_of: None,
                    },
                ),
                ev(
                    &sys,
                    EventKind::ExecutionFinished {
                        action: "x".into(),
                        execution: "k".into(),
                        success: ok,
                        summary: String::new(),
                    },
                ),
            ])
        };
        // 2: P3, fully automatic: auto action succeeded, resolved by the system after 3 min, recurred.
        let mut b = mk(2, Severity::P3, "tool_api_failure", 30);
        b.status = Status::Resolved;
        b.resolved_at = Some(at(now, 27));
        b.resolved_by = Some(Actor::system());
        b.actions.push(ActionState {
            id: "x".into(),
            title: "X".into(),
            auto: true,
            summary: String::new(),
            status: ActionStatus::Succeeded,
            approvals: vec![],
            decided_by: Some(Actor::system()),
            decided_at: None,
        });
        b.tally = Some(auto_run(true));
        b.recurrence = Some(Recurrence {
            previous: 1,
            window_days: 30,
            last: IncidentId(1),
            last_resolved_at: None,
            last_fixed_by: None,
        });
        // 3: P3, still open, auto action failed.
        let mut c = mk(3, Severity::P3, "orchestration_failure", 10);
        c.actions.push(ActionState {
            status: ActionStatus::Failed,
            ..b.actions[0].clone()
        });
        c.tally = Some(auto_run(false));
        // 4: outside the window.
        let mut d = mk(4, Severity::P0, "x", 60 * 24 * 8);
        d.status = Status::Resolved;
        d.resolved_at = Some(at(now, 60 * 24 * 8 - 5));

        let s = compute(&[a, b, c, d], now, 7);
        assert_eq!((s.total, s.open, s.resolved), (3, 1, 2));
        assert_eq!(s.by_severity["P3"], 2);
        assert_eq!(s.by_kind["tool_api_failure"], 2);
        assert_eq!(s.mtta.count, 1);
        assert_eq!(s.mtta.median_seconds, Some(120.0));
        // TTRs: 600 s and 180 s; nearest-rank median = 180, p90 = 600.
        assert_eq!(s.mttr.median_seconds, Some(180.0));
        assert_eq!(s.mttr.p90_seconds, Some(600.0));
        assert_eq!(s.mttr_by_severity["P1"].median_seconds, Some(600.0));
        assert_eq!(s.manual_intervention_rate, Some(1.0 / 3.0));
        assert_eq!(s.auto_remediation_success_rate, Some(0.5));
        assert_eq!(s.rca_completion_rate, Some(0.5));
        assert_eq!(s.recurrence_rate, Some(1.0 / 3.0));
        // The playbook's MTTR is a mean: (600 + 180) / 2; from the alert's start a began
        // 5 min before it opened: (900 + 180) / 2.
        assert_eq!(s.mttr.mean_seconds, Some(390.0));
        assert_eq!(s.mttr_from_start.mean_seconds, Some(540.0));
        // Only b had no human: 180 s.
        assert_eq!(s.mttr_automated.mean_seconds, Some(180.0));
        assert_eq!(s.mtta_by_severity["P1"].mean_seconds, Some(120.0));
        assert_eq!(
            (s.auto_remediation.numerator, s.auto_remediation.denominator),
            (1, 2)
        );
        let text = render_text(&s);
        assert!(
            text.contains("✅ MTTR 6.5 min (median 3.0 min, p90 10.0 min; from the alert's start 9.0 min) — target < 8.0 min"),
            "{text}"
        );
        assert!(
            text.contains("⚠️ Manual intervention 33% (1/3) — target < 20%"),
            "{text}"
        );
        assert!(
            text.contains("⚠️ RCA completion 50% (1/2) — target ≥ 95%"),
            "{text}"
        );
    }

    #[test]
    fn trend_by_day_and_by_week() {
        let now = "2026-12-07T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let mk = |id: u64, opened_mins_ago: i64, ttr_mins: Option<i64>| {
            let mut i = incident();
            i.id = IncidentId(id);
            i.opened_at = at(now, opened_mins_ago);
            if let Some(m) = ttr_mins {
                i.status = Status::Resolved;
                i.resolved_at = Some(i.opened_at + Duration::minutes(m));
            }
            i
        };
        let day = 24 * 60;
        let list = [
            mk(1, 30, Some(10)),      // today
            mk(2, 60, None),          // today, open
            mk(3, day, Some(4)),      // yesterday
            mk(4, 8 * day, Some(20)), // 8 days ago: second week
            mk(5, 40 * day, Some(1)), // outside 30 days
        ];
        let d = trend(&list, now, 7, 1);
        assert_eq!(d.len(), 7);
        let last = d.last().unwrap();
        assert_eq!(last.from, now.date_naive());
        assert_eq!(last.to, now.date_naive());
        assert_eq!((last.opened, last.resolved), (2, 1));
        assert_eq!(last.mttr_seconds, Some(600.0));
        assert_eq!((d[5].opened, d[5].mttr_seconds), (1, Some(240.0)));
        assert_eq!(d[0].from, now.date_naive() - Duration::days(6));
        assert!(d[..5]
            .iter()
            .all(|b| b.opened == 0 && b.mttr_seconds.is_none()));

        let w = trend(&list, now, 30, 7);
        // 30 days in weeks: four full weeks and two older days.
        assert_eq!(w.len(), 5);
        assert_eq!(w[0].from, now.date_naive() - Duration::days(29));
        assert_eq!(w[0].to, now.date_naive() - Duration::days(28));
        let this_week = &w[4];
        assert_eq!((this_week.opened, this_week.resolved), (3, 2));
        assert_eq!(this_week.mttr_seconds, Some(420.0));
        assert_eq!((w[3].opened, w[3].mttr_seconds), (1, Some(1200.0)));
        assert_eq!(w.iter().map(|b| b.opened).sum::<usize>(), 4);
    }

    #[test]
    fn the_book_takes_48_bytes_an_incident_and_at_most_one_chunk_more() {
        assert_eq!(std::mem::size_of::<Row>(), 48);
        let mut i = incident();
        let mut book = Book::new();
        for id in 1..=10_000u64 {
            i.id = IncidentId(id);
            book.put(i.id, &Facts::of(&i));
        }
        assert_eq!(book.len(), 10_000);
        assert!(book.bytes() <= (10_001 + CHUNK) * 48, "{}", book.bytes());
        // Recording an incident again replaces its row.
        i.status = Status::Resolved;
        i.resolved_at = Some(i.opened_at);
        book.put(IncidentId(7), &Facts::of(&i));
        assert_eq!(book.len(), 10_000);
        assert_eq!(book.active(), 9_999);
    }

    #[test]
    fn an_unknown_root_cause_is_not_a_completed_rca() {
        let now = Utc::now();
        let mut i = incident();
        i.opened_at = now - Duration::minutes(10);
        i.status = Status::Resolved;
        i.resolved_at = Some(now);
        i.root_cause = Some(RootCauseInfo {
            category: RootCause::Unknown,
            text: Some("no idea".into()),
            confirmed_by: Some(Actor::new(Platform::Slack, "U1")),
        });
        let s = compute(std::slice::from_ref(&i), now, 7);
        assert_eq!(
            (s.rca_completion.numerator, s.rca_completion.denominator),
            (0, 1)
        );
        i.root_cause.as_mut().unwrap().category = RootCause::ModelDefect;
        let s = compute(&[i], now, 7);
        assert_eq!(s.rca_completion.rate, Some(1.0));
    }
}
