//! How the team is doing against the targets that matter: MTTA, MTTR (median and p90, by
//! severity and kind), manual intervention rate, auto-remediation success, RCA completion and
//! recurrence, over a window. Pure: computed from incidents, tested on hand-computed fixtures.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::incident::{ActionStatus, Incident, Status};

/// The field's targets.
pub const TARGET_MTTR_SECONDS: f64 = 8.0 * 60.0;
pub const TARGET_MANUAL_RATE: f64 = 0.20;
pub const TARGET_RCA_RATE: f64 = 0.95;
pub const TARGET_RECURRENCE_RATE: f64 = 0.05;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
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
        Percentiles {
            count: v.len(),
            median_seconds: at(0.5),
            p90_seconds: at(0.9),
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
    pub mtta: Percentiles,
    pub mttr: Percentiles,
    pub mttr_by_severity: BTreeMap<String, Percentiles>,
    pub mttr_by_kind: BTreeMap<String, Percentiles>,
    /// Incidents that needed a human decision / all incidents.
    pub manual_intervention_rate: Option<f64>,
    /// Automatic actions that succeeded / automatic actions that finished.
    pub auto_remediation_success_rate: Option<f64>,
    /// Resolved incidents with a confirmed root cause / resolved incidents.
    pub rca_completion_rate: Option<f64>,
    /// Incidents that recurred (same fingerprint resolved within the recurrence window) / all.
    pub recurrence_rate: Option<f64>,
    pub targets: Targets,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Targets {
    pub mttr_seconds: f64,
    pub manual_intervention_rate: f64,
    pub rca_completion_rate: f64,
    pub recurrence_rate: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            mttr_seconds: TARGET_MTTR_SECONDS,
            manual_intervention_rate: TARGET_MANUAL_RATE,
            rca_completion_rate: TARGET_RCA_RATE,
            recurrence_rate: TARGET_RECURRENCE_RATE,
        }
    }
}

fn ratio(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// A human took a decision: acknowledged, approved or rejected, resolved, or re-triaged.
pub fn needed_a_human(inc: &Incident) -> bool {
    let human = |a: &super::policy::Actor| !a.is_system();
    inc.acknowledged_by.as_ref().is_some_and(human)
        || inc.resolved_by.as_ref().is_some_and(human)
        || inc
            .actions
            .iter()
            .any(|a| a.approvals.iter().any(human) || a.decided_by.as_ref().is_some_and(human))
        || inc
            .root_cause
            .as_ref()
            .is_some_and(|r| r.confirmed_by.is_some() && inc.status.is_active())
}

/// Stats over incidents opened in the `days` before `now`.
pub fn compute(incidents: &[Incident], now: DateTime<Utc>, days: u32) -> Stats {
    let since = now - Duration::days(days as i64);
    let list: Vec<&Incident> = incidents.iter().filter(|i| i.opened_at >= since).collect();
    let mut s = Stats {
        window_days: days,
        total: list.len(),
        ..Default::default()
    };
    let secs = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds() as f64 / 1000.0;
    let mut tta = Vec::new();
    let mut ttr = Vec::new();
    let mut ttr_sev: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut ttr_kind: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let (mut manual, mut auto_ok, mut auto_done, mut rca, mut recurred) = (0, 0, 0, 0, 0);
    for i in &list {
        *s.by_severity.entry(i.severity.to_string()).or_default() += 1;
        *s.by_kind.entry(i.kind.clone()).or_default() += 1;
        if i.status.is_active() {
            s.open += 1;
        }
        if let Some(a) = i.acknowledged_at {
            tta.push(secs(i.opened_at, a));
        }
        if matches!(i.status, Status::Resolved | Status::Closed) {
            s.resolved += 1;
            if let Some(r) = i.resolved_at {
                let t = secs(i.opened_at, r);
                ttr.push(t);
                ttr_sev.entry(i.severity.to_string()).or_default().push(t);
                ttr_kind.entry(i.kind.clone()).or_default().push(t);
            }
            if i.root_cause
                .as_ref()
                .is_some_and(|r| r.confirmed_by.is_some())
            {
                rca += 1;
            }
        }
        if needed_a_human(i) {
            manual += 1;
        }
        for a in &i.actions {
            let by_system = a.decided_by.as_ref().is_some_and(|x| x.is_system());
            if by_system && matches!(a.status, ActionStatus::Succeeded | ActionStatus::Failed) {
                auto_done += 1;
                if a.status == ActionStatus::Succeeded {
                    auto_ok += 1;
                }
            }
        }
        if i.recurrence.is_some() {
            recurred += 1;
        }
    }
    s.mtta = Percentiles::of(tta);
    s.mttr = Percentiles::of(ttr);
    s.mttr_by_severity = ttr_sev
        .into_iter()
        .map(|(k, v)| (k, Percentiles::of(v)))
        .collect();
    s.mttr_by_kind = ttr_kind
        .into_iter()
        .map(|(k, v)| (k, Percentiles::of(v)))
        .collect();
    s.manual_intervention_rate = ratio(manual, s.total);
    s.auto_remediation_success_rate = ratio(auto_ok, auto_done);
    s.rca_completion_rate = ratio(rca, s.resolved);
    s.recurrence_rate = ratio(recurred, s.total);
    s
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
        "{} MTTR median {} (p90 {}) — target < {}",
        mark(s.mttr.median_seconds.map(|m| m < t.mttr_seconds)),
        mins(s.mttr.median_seconds),
        mins(s.mttr.p90_seconds),
        mins(Some(t.mttr_seconds))
    );
    let _ = writeln!(
        out,
        "· MTTA median {} (p90 {})",
        mins(s.mtta.median_seconds),
        mins(s.mtta.p90_seconds)
    );
    let _ = writeln!(
        out,
        "{} Manual intervention {} — target < {}",
        mark(
            s.manual_intervention_rate
                .map(|r| r < t.manual_intervention_rate)
        ),
        pct(s.manual_intervention_rate),
        pct(Some(t.manual_intervention_rate))
    );
    let _ = writeln!(
        out,
        "· Auto-remediation success {}",
        pct(s.auto_remediation_success_rate)
    );
    let _ = writeln!(
        out,
        "{} RCA completion {} — target ≥ {}",
        mark(s.rca_completion_rate.map(|r| r >= t.rca_completion_rate)),
        pct(s.rca_completion_rate),
        pct(Some(t.rca_completion_rate))
    );
    let _ = writeln!(
        out,
        "{} Recurrence {} — target < {}",
        mark(s.recurrence_rate.map(|r| r < t.recurrence_rate)),
        pct(s.recurrence_rate),
        pct(Some(t.recurrence_rate))
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
    use crate::domain::incident::{ActionState, IncidentId, Recurrence, RootCauseInfo};
    use crate::domain::policy::Actor;
    use crate::domain::severity::Severity;

    fn at(now: DateTime<Utc>, mins_ago: i64) -> DateTime<Utc> {
        now - Duration::minutes(mins_ago)
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
        let text = render_text(&s);
        assert!(
            text.contains("✅ MTTR median 3.0 min (p90 10.0 min) — target < 8.0 min"),
            "{text}"
        );
        assert!(
            text.contains("⚠️ Manual intervention 33% — target < 20%"),
            "{text}"
        );
        assert!(
            text.contains("⚠️ RCA completion 50% — target ≥ 95%"),
            "{text}"
        );
    }
}
