//! The metric behind an incident, on its card: a series over the last 30 minutes drawn as a
//! Unicode sparkline (Slack, Discord) or an SVG chart (console), with the current value and
//! the alert's threshold.
//!
//! Which query: the playbook's `chart_query`, else the alert's own expression, read from its
//! generator URL (Prometheus and Alertmanager put it in the `g0.expr` parameter). An alert
//! expression usually ends in its condition (`… > 0.05`); the chart shows the left side and
//! takes the number as the threshold, because the whole expression only has points while the
//! alert fires.
//!
//! Pure: fetching the series is the shell's job (when a card is rendered for delivery).

use serde::{Deserialize, Serialize};

/// How far back a card's chart looks.
pub const CHART_WINDOW_SECONDS: i64 = 30 * 60;
/// One point per this many seconds.
pub const CHART_STEP_SECONDS: u64 = 60;
/// Characters of a card's sparkline (one per step).
pub const SPARK_WIDTH: usize = 30;

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A series to draw, as fetched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    /// The query as it ran.
    pub query: String,
    /// (unix seconds, value), in time order.
    pub points: Vec<(f64, f64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The query gave this many series; the chart shows the one with the highest current value.
    #[serde(default)]
    pub series: usize,
}

impl Chart {
    /// The last value.
    pub fn current(&self) -> Option<f64> {
        self.points.last().map(|p| p.1)
    }

    /// The values scaled into `width` characters, one per equal slice of time from the first to
    /// the last point (the slice's last value; a slice without a point is a space). The scale
    /// spans the values and the threshold, so a line close to the top is close to it.
    pub fn sparkline(&self, width: usize) -> String {
        let finite: Vec<(f64, f64)> = self
            .points
            .iter()
            .copied()
            .filter(|p| p.1.is_finite())
            .collect();
        if finite.is_empty() || width == 0 {
            return String::new();
        }
        let (t0, t1) = (finite[0].0, finite[finite.len() - 1].0);
        let mut slots: Vec<Option<f64>> = vec![None; width];
        for &(t, v) in &finite {
            let i = if t1 > t0 {
                (((t - t0) / (t1 - t0)) * (width - 1) as f64).round() as usize
            } else {
                width - 1
            };
            slots[i.min(width - 1)] = Some(v);
        }
        let (lo, hi) = finite
            .iter()
            .map(|p| p.1)
            .chain(self.threshold.filter(|t| t.is_finite()))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        // Leading empty slots (a single point) are dropped; gaps inside stay visible.
        let first = slots.iter().position(Option::is_some).unwrap_or(0);
        slots[first..]
            .iter()
            .map(|s| match s {
                None => ' ',
                Some(_) if hi <= lo => BARS[3],
                Some(v) => BARS[(((v - lo) / (hi - lo)) * 7.0).round().clamp(0.0, 7.0) as usize],
            })
            .collect()
    }

    /// One line for a chat card: `▁▂▃▅▇█ now 0.42 · threshold 0.05 · 30 min`.
    pub fn line(&self, show: impl Fn(f64) -> String) -> String {
        let mut s = self.sparkline(SPARK_WIDTH);
        if let Some(v) = self.current() {
            s.push_str(&format!(" now {}", show(v)));
        }
        if let Some(t) = self.threshold {
            s.push_str(&format!(" · threshold {}", show(t)));
        }
        s.push_str(&format!(" · {} min", CHART_WINDOW_SECONDS / 60));
        if self.series > 1 {
            s.push_str(&format!(" · highest of {} series", self.series));
        }
        s
    }
}

/// A number as people read it: at most 4 decimals, no trailing zeros (`0.0123`, `37`, `1.5`).
pub fn show_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let s = if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The expression in a generator URL's `g0.expr` parameter (Prometheus graph links, as
/// Alertmanager and Prometheus send them).
pub fn expr_from_url(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "g0.expr")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// An alert expression's trailing condition: `rate(x[5m]) > 0.05` → (`rate(x[5m])`, 0.05).
/// Only a comparison at the top level (outside parentheses, braces, brackets and strings)
/// whose right side is a plain number counts; otherwise the expression is kept whole.
pub fn split_threshold(expr: &str) -> (String, Option<f64>) {
    let whole = (expr.trim().to_string(), None);
    let bytes = expr.as_bytes();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut last_op: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => quote = Some(c),
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'>' | b'<' | b'=' | b'!' if depth == 0 => {
                let two = bytes.get(i + 1) == Some(&b'=');
                let op_len = if two { 2 } else { 1 };
                // `=` alone or `!` alone is not a comparison.
                if (c == b'=' || c == b'!') && !two {
                    i += 1;
                    continue;
                }
                last_op = Some((i, op_len));
                i += op_len;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let Some((at, len)) = last_op else {
        return whole;
    };
    let rhs = expr[at + len..].trim();
    let rhs = rhs.strip_prefix("bool").map_or(rhs, str::trim);
    match rhs.parse::<f64>() {
        Ok(t) if t.is_finite() && !expr[..at].trim().is_empty() => {
            (expr[..at].trim().to_string(), Some(t))
        }
        _ => whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(values: &[f64], threshold: Option<f64>) -> Chart {
        Chart {
            query: "q".into(),
            points: values
                .iter()
                .enumerate()
                .map(|(i, v)| (1000.0 + 60.0 * i as f64, *v))
                .collect(),
            threshold,
            series: 1,
        }
    }

    #[test]
    fn a_known_series_draws_a_known_sparkline() {
        let c = chart(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], None);
        assert_eq!(c.sparkline(8), "▁▂▃▄▅▆▇█");
        // The threshold widens the scale: values up to half of it stay low.
        let c = chart(&[0.0, 0.5, 1.0], Some(2.0));
        assert_eq!(c.sparkline(3), "▁▃▅");
        // Fewer points than characters: spread out, gaps shown as spaces.
        let c = chart(&[0.0, 7.0], None);
        assert_eq!(c.sparkline(4), "▁  █");
        // A flat line sits in the middle; NaN points are skipped.
        let c = chart(&[3.0, f64::NAN, 3.0], None);
        assert_eq!(c.sparkline(3), "▄ ▄");
        assert_eq!(chart(&[], None).sparkline(5), "");
        let c = chart(&[0.01, 0.02, 0.9], Some(0.05));
        // 30 characters: the middle point lands on slot round(0.5 × 29) = 15.
        let want = format!(
            "▁{}▁{}█ now 0.9 · threshold 0.05 · 30 min",
            " ".repeat(14),
            " ".repeat(13)
        );
        assert_eq!(c.line(|v| format!("{v}")), want);
    }

    #[test]
    fn the_alert_expression_comes_from_the_generator_url() {
        assert_eq!(
            expr_from_url("http://prometheus:9090/graph?g0.expr=rate%28http_requests_total%7Bcode%3D~%225..%22%7D%5B5m%5D%29+%3E+0.05&g0.tab=1").as_deref(),
            Some(r#"rate(http_requests_total{code=~"5.."}[5m]) > 0.05"#)
        );
        assert_eq!(
            expr_from_url("https://grafana.example.com/alerting/x/view?orgId=1"),
            None
        );
        assert_eq!(expr_from_url("http://p/graph?g0.expr="), None);
        assert_eq!(expr_from_url("http://p/graph"), None);
    }

    #[test]
    fn the_trailing_condition_is_the_threshold() {
        for (expr, left, t) in [
            ("errors_ratio > 0.05", "errors_ratio", Some(0.05)),
            (
                r#"sum(rate(x{a=">1"}[5m])) / sum(rate(y[5m])) >= 1e-2"#,
                r#"sum(rate(x{a=">1"}[5m])) / sum(rate(y[5m]))"#,
                Some(0.01),
            ),
            ("up == 0", "up", Some(0.0)),
            ("free_bytes < bool 100", "free_bytes", Some(100.0)),
            ("a > b", "a > b", None),
            ("max(x > 3)", "max(x > 3)", None),
            ("x", "x", None),
            ("> 3", "> 3", None),
        ] {
            assert_eq!(split_threshold(expr), (left.to_string(), t), "{expr}");
        }
    }
}
