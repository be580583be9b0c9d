//! The stats page's model and its server-rendered SVG charts (no chart library; works offline).
//! The outcome numbers come from the engine's [`Engine::stats`](crate::engine::Engine::stats),
//! the one implementation (docs/metrics.md); the trend buckets the same facts by day and by
//! week ([`Book::trend`](crate::domain::stats::Book::trend)); only the count by status, which is
//! not an outcome number, is counted here.

use maud::{html, Markup};

use crate::domain::incident::{Incident, ALL_STATUSES};
use crate::domain::stats::{Bucket, Stats};

/// The windows the page offers, in days.
pub const WINDOWS: [u32; 3] = [7, 30, 90];

/// The window asked for in `?days=`: one of [`WINDOWS`], else 7 with a note saying so.
pub fn window(asked: Option<&str>) -> (u32, Option<String>) {
    match asked.map(str::trim).filter(|d| !d.is_empty()) {
        None => (WINDOWS[0], None),
        Some(d) => match d.trim_end_matches('d').parse::<u32>() {
            Ok(n) if WINDOWS.contains(&n) => (n, None),
            _ => (
                WINDOWS[0],
                Some(format!(
                    "{d:?} is not one of the windows (7, 30 or 90 days): showing 7 days."
                )),
            ),
        },
    }
}

/// What the stats page shows.
#[derive(Debug, Clone)]
pub struct StatsView {
    pub days: u32,
    /// Why the window is not the one asked for.
    pub note: Option<String>,
    pub stats: Stats,
    /// (severity, acknowledge target, repair target) in seconds.
    pub targets: Vec<(String, u64, u64)>,
    /// Incidents of the window by their status now.
    pub by_status: Vec<(String, usize)>,
    /// By kind name, most frequent first.
    pub by_kind: Vec<(String, usize)>,
    pub per_day: Vec<Bucket>,
    pub per_week: Vec<Bucket>,
}

/// Incidents of the window (opened within it, as the stats count them) by status.
pub fn by_status(
    incidents: &[Incident],
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<(String, usize)> {
    ALL_STATUSES
        .iter()
        .map(|st| {
            let n = incidents
                .iter()
                .filter(|i| i.status == *st && i.opened_at >= since)
                .count();
            (st.label().to_string(), n)
        })
        .collect()
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

/// A column per bucket, oldest on the left: its value on top (when there is room) and in a
/// tooltip, its first day below (every few columns). A bucket without a value (a week with no
/// resolved incident, for MTTR) has no column and reads "—". The aria-label lists every value,
/// so the chart reads without seeing it.
pub fn trend_chart(
    title: &str,
    buckets: &[Bucket],
    value: impl Fn(&Bucket) -> Option<f64>,
    show: impl Fn(f64) -> String,
) -> Markup {
    const PLOT: usize = 120;
    const TOP: usize = 18;
    let n = buckets.len().max(1);
    let col = (600 / n).clamp(6, 64);
    let w = col * n + 16;
    let h = TOP + PLOT + 22;
    let values: Vec<Option<f64>> = buckets.iter().map(&value).collect();
    let max = values.iter().flatten().copied().fold(0.0, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let label_every = n.div_ceil(8);
    let day = |b: &Bucket| b.from.format("%d %b").to_string();
    let said = |v: &Option<f64>| v.map_or("—".to_string(), &show);
    let summary: Vec<String> = buckets
        .iter()
        .zip(&values)
        .map(|(b, v)| format!("{} {}", day(b), said(v)))
        .collect();
    html! {
        svg class="chart trend" role="img" viewBox=(format!("0 0 {w} {h}")) width=(w) height=(h)
            aria-label=(format!("{title}: {}", summary.join(", "))) {
            title { (title) }
            line x1="8" y1=(TOP + PLOT) x2=(w - 8) y2=(TOP + PLOT) class="axis" {}
            @for (i, (b, v)) in buckets.iter().zip(&values).enumerate() {
                @let x = 8 + i * col;
                @let bar = v.map_or(0, |v| ((v / max) * PLOT as f64).round() as usize);
                @let bar = if v.is_some_and(|v| v > 0.0) { bar.max(2) } else { bar };
                rect x=(x + 1) y=(TOP + PLOT - bar) width=(col.saturating_sub(2).max(1)) height=(bar) {
                    title { (day(b)) @if b.from != b.to { "–" (b.to.format("%d %b")) } ": " (said(v)) }
                }
                @if col >= 22 && v.is_some_and(|v| v > 0.0) {
                    text x=(x + col / 2) y=(TOP + PLOT - bar - 4) text-anchor="middle" class="n" { (said(v)) }
                }
                @if i % label_every == 0 {
                    text x=(x + 1) y=(TOP + PLOT + 15) class="d" { (day(b)) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_the_offered_ones() {
        assert_eq!(window(None), (7, None));
        assert_eq!(window(Some("30")), (30, None));
        assert_eq!(window(Some("90d")), (90, None));
        let (d, note) = window(Some("<b>5"));
        assert_eq!(d, 7);
        assert!(note.unwrap().contains("\"<b>5\" is not one of the windows"));
    }

    #[test]
    fn trend_columns_scale_and_quiet_buckets_read_as_a_dash() {
        let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let b = |d: u32, opened: usize, mttr: Option<f64>| Bucket {
            from: day(d),
            to: day(d),
            opened,
            resolved: opened,
            mttr_seconds: mttr,
        };
        let buckets = [b(1, 4, Some(600.0)), b(2, 0, None), b(3, 2, Some(300.0))];
        let svg =
            trend_chart("MTTR", &buckets, |b| b.mttr_seconds, |v| format!("{v}s")).into_string();
        assert!(svg.contains("class=\"chart trend\""), "{svg}");
        assert!(
            svg.contains("aria-label=\"MTTR: 01 Dec 600s, 02 Dec —, 03 Dec 300s\""),
            "{svg}"
        );
        // 600 fills the plot (120), 300 half of it, the quiet day nothing.
        assert!(svg.contains(r#"height="120""#), "{svg}");
        assert!(svg.contains(r#"height="60""#), "{svg}");
        assert!(svg.contains(r#"height="0""#), "{svg}");
        let svg = trend_chart(
            "Incidents",
            &buckets,
            |b| Some(b.opened as f64),
            |v| v.to_string(),
        )
        .into_string();
        assert!(svg.contains("02 Dec: 0"), "{svg}");
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
    }
}
