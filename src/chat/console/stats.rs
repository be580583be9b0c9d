//! Dashboard figures computed from the incidents themselves (counts, open vs resolved, median
//! time to acknowledge and to resolve, share resolved within the repair target) and a small
//! server-rendered SVG bar chart, so the stats page needs no chart library and works offline.

use std::collections::BTreeMap;

use maud::{html, Markup};

use crate::config::Config;
use crate::domain::incident::{Incident, ALL_STATUSES};
use crate::domain::severity::ALL;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub total: usize,
    pub open: usize,
    pub resolved: usize,
    /// (label, count) in a fixed order.
    pub by_status: Vec<(String, usize)>,
    pub by_severity: Vec<(String, usize)>,
    /// Kind names, most frequent first.
    pub by_kind: Vec<(String, usize)>,
    /// Median seconds from opening to acknowledgement, over acknowledged incidents.
    pub mtta_seconds: Option<i64>,
    /// Median seconds from opening to resolution, over resolved incidents.
    pub mttr_seconds: Option<i64>,
    /// Resolved incidents that met their severity's repair target: (met, resolved).
    pub within_repair_target: (usize, usize),
    /// Incidents that saw their alert more than once (repeats while open).
    pub repeated: usize,
    /// Incidents whose alert (fingerprint) had an earlier incident: it came back after resolution.
    pub recurrences: usize,
    /// Incidents a human acted on (acknowledged, approved or rejected an action, or resolved).
    pub human_intervention: usize,
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

pub fn compute(incidents: &[Incident], cfg: &Config) -> Stats {
    let mut s = Stats {
        total: incidents.len(),
        ..Default::default()
    };
    let mut tta = Vec::new();
    let mut ttr = Vec::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for i in incidents {
        // The same definitions as the API's stats and /metrics (domain::stats).
        if i.recurrence.is_some() {
            s.recurrences += 1;
        }
        if crate::domain::stats::Facts::of(i).manual {
            s.human_intervention += 1;
        }
        if i.status.is_active() {
            s.open += 1;
        } else {
            s.resolved += 1;
        }
        if i.alert_count > 1 {
            s.repeated += 1;
        }
        *kinds
            .entry(cfg.classifier.kind_name(&i.kind).to_string())
            .or_default() += 1;
        if let Some(a) = i.acknowledged_at {
            tta.push((a - i.opened_at).num_seconds().max(0));
        }
        if let (Some(r), false) = (i.resolved_at, i.status.is_active()) {
            let secs = (r - i.opened_at).num_seconds().max(0);
            ttr.push(secs);
            s.within_repair_target.1 += 1;
            if secs as u64 <= cfg.targets(i.severity).repair_seconds {
                s.within_repair_target.0 += 1;
            }
        }
    }
    s.by_status = ALL_STATUSES
        .iter()
        .map(|st| {
            (
                st.label().to_string(),
                incidents.iter().filter(|i| i.status == *st).count(),
            )
        })
        .collect();
    s.by_severity = ALL
        .iter()
        .map(|sev| {
            (
                sev.to_string(),
                incidents.iter().filter(|i| i.severity == *sev).count(),
            )
        })
        .collect();
    let mut by_kind: Vec<(String, usize)> = kinds.into_iter().collect();
    by_kind.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    s.by_kind = by_kind;
    s.mtta_seconds = median(tta);
    s.mttr_seconds = median(ttr);
    s
}

/// `1 h 5 min`, `42 s`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// A horizontal bar chart: one labelled bar per row, the count at its end. The numbers are
/// also in the SVG's text (and a table beside it), so it reads without seeing the bars.
pub fn bar_chart(title: &str, rows: &[(String, usize)]) -> Markup {
    const W: usize = 420;
    const LABEL: usize = 150;
    const ROW: usize = 24;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let h = ROW * rows.len().max(1) + 8;
    let bar_room = W - LABEL - 40;
    html! {
        svg class="chart" role="img" viewBox=(format!("0 0 {W} {h}")) width=(W) height=(h)
            aria-label=(format!("{title}: {}", rows.iter().map(|(l, n)| format!("{l} {n}")).collect::<Vec<_>>().join(", "))) {
            title { (title) }
            @for (i, (label, n)) in rows.iter().enumerate() {
                @let y = 4 + i * ROW;
                @let w = if *n == 0 { 0 } else { (n * bar_room / max).max(2) };
                text x=(LABEL - 6) y=(y + 16) text-anchor="end" { (label) }
                rect x=(LABEL) y=(y + 3) width=(w) height=(ROW - 8) rx="2" {}
                text x=(LABEL + w + 6) y=(y + 16) class="n" { (n) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::Status;
    use chrono::Duration;

    #[test]
    fn counts_and_medians() {
        let cfg = Config::builtin();
        let base = crate::domain::incident::tests_support::incident();
        let mut a = base.clone();
        a.acknowledged_at = Some(a.opened_at + Duration::seconds(30));
        a.status = Status::Resolved;
        a.resolved_at = Some(a.opened_at + Duration::seconds(600));
        let mut b = base.clone();
        b.acknowledged_at = Some(b.opened_at + Duration::seconds(90));
        b.status = Status::Resolved;
        b.resolved_at = Some(b.opened_at + Duration::seconds(7200));
        b.alert_count = 3;
        b.acknowledged_by = Some(crate::domain::policy::Actor::new(
            crate::domain::alert::Platform::Console,
            "alice",
        ));
        b.fingerprint = "other".into();
        b.tally = Some(crate::domain::tally::Tally::of(&[
            crate::domain::incident::TimelineEvent {
                at: b.opened_at,
                actor: b.acknowledged_by.clone().unwrap(),
                kind: crate::domain::incident::EventKind::StatusChanged {
                    from: Status::Open,
                    to: Status::Acknowledged,
                    note: None,
                },
            },
        ]));
        // c came back after a was resolved: a recurrence, as the engine records it.
        let mut c = base.clone();
        c.recurrence = Some(crate::domain::incident::Recurrence {
            previous: 1,
            window_days: 30,
            last: a.id,
            last_resolved_at: a.resolved_at,
            last_fixed_by: None,
        });
        let s = compute(&[a, b, c], &cfg);
        assert_eq!((s.total, s.open, s.resolved, s.repeated), (3, 1, 2, 1));
        // c is one recurrence. Only b had a human act on it.
        assert_eq!((s.recurrences, s.human_intervention), (1, 1));
        assert_eq!(s.mtta_seconds, Some(60));
        assert_eq!(s.mttr_seconds, Some(3900));
        let resolved = s.by_status.iter().find(|r| r.0 == "Resolved").unwrap();
        assert_eq!(resolved.1, 2);
        assert_eq!(s.by_severity.iter().map(|r| r.1).sum::<usize>(), 3);
        assert_eq!(s.within_repair_target.1, 2);
        assert_eq!(compute(&[], &cfg).mtta_seconds, None);
    }

    #[test]
    fn chart_escapes_labels_and_scales_bars() {
        let svg = bar_chart(
            "By kind",
            &[("<b>x</b>".into(), 4), ("y".into(), 2), ("z".into(), 0)],
        )
        .into_string();
        assert!(svg.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains(r#"width="230""#), "{svg}");
        assert!(svg.contains(r#"width="115""#), "{svg}");
        assert_eq!(human_duration(3900), "1 h 5 min");
        assert_eq!(human_duration(75), "1 min 15 s");
    }
}
