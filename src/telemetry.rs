//! Logging setup: `RUST_LOG` filters (default `info`); `INCIDENTD_LOG_FORMAT=json` is not
//! offered yet, plain text goes to stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Prometheus metrics, kept in memory and rendered in the text exposition format. One instance
/// is shared (through `Arc`) by the engine, the outbox workers and the HTTP server; there are no
/// process globals. Labels are low-cardinality by construction (severity, kind, source, sink,
/// outcome).
pub mod metrics {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    use std::sync::Mutex;

    /// Name, type and help of every metric incidentd exposes.
    pub const CATALOG: &[(&str, &str, &str)] = &[
        (
            "incidentd_alerts_received_total",
            "counter",
            "Alerts received, by source and status.",
        ),
        (
            "incidentd_incidents_opened_total",
            "counter",
            "Incidents opened, by severity and kind.",
        ),
        (
            "incidentd_incidents_resolved_total",
            "counter",
            "Incidents resolved, by severity and kind.",
        ),
        (
            "incidentd_time_to_acknowledge_seconds",
            "histogram",
            "From incident opened to acknowledged.",
        ),
        (
            "incidentd_time_to_resolve_seconds",
            "histogram",
            "From incident opened to resolved.",
        ),
        (
            "incidentd_approvals_total",
            "counter",
            "Approval decisions, by outcome (approved, rejected, refused).",
        ),
        (
            "incidentd_executions_total",
            "counter",
            "Finished executions, by executor and outcome.",
        ),
        ("incidentd_escalations_total", "counter", "Escalations."),
        (
            "incidentd_chat_messages_ignored_total",
            "counter",
            "People's alert-channel messages not read as alerts (chat.human_messages), by platform.",
        ),
        (
            "incidentd_chat_deliveries_total",
            "counter",
            "Chat delivery attempts, by sink and result (ok, rate_limited, transient, permanent).",
        ),
        (
            "incidentd_chat_delivery_latency_seconds",
            "histogram",
            "From outbox entry written to delivered, by sink.",
        ),
        (
            "incidentd_commit_seconds",
            "histogram",
            "Duration of one group commit (transaction and fsync).",
        ),
        (
            "incidentd_outbox_depth",
            "gauge",
            "Chat messages waiting in the outbox.",
        ),
        (
            "incidentd_chat_connected",
            "gauge",
            "Whether a chat platform's gateway or socket is connected (1) or not (0), by platform.",
        ),
        (
            "incidentd_incidents_active",
            "gauge",
            "Incidents not yet resolved.",
        ),
        (
            "incidentd_mttr_seconds",
            "gauge",
            "Mean time to resolve (from opening) of incidents opened in the last 30 days.",
        ),
        (
            "incidentd_mttr_median_seconds",
            "gauge",
            "Median time to resolve (from opening), last 30 days.",
        ),
        (
            "incidentd_mttr_p90_seconds",
            "gauge",
            "90th percentile time to resolve (from opening), last 30 days.",
        ),
        (
            "incidentd_mttr_from_alert_start_seconds",
            "gauge",
            "Mean time from the alert's start to resolution, last 30 days.",
        ),
        (
            "incidentd_mttr_automated_seconds",
            "gauge",
            "Mean time to resolve incidents no human intervened in, last 30 days.",
        ),
        (
            "incidentd_mtta_seconds",
            "gauge",
            "Mean time to acknowledge, last 30 days.",
        ),
        (
            "incidentd_mtta_median_seconds",
            "gauge",
            "Median time to acknowledge, last 30 days.",
        ),
        (
            "incidentd_manual_intervention_ratio",
            "gauge",
            "Share of incidents a person intervened in during the response, last 30 days.",
        ),
        (
            "incidentd_auto_remediation_success_ratio",
            "gauge",
            "Share of finished automatic actions that succeeded and verified without a rollback, last 30 days.",
        ),
        (
            "incidentd_rca_completion_ratio",
            "gauge",
            "Share of resolved incidents with a root cause confirmed by a person (not unknown), last 30 days.",
        ),
        (
            "incidentd_recurrence_ratio",
            "gauge",
            "Share of incidents whose fingerprint had an incident resolved within the recurrence window before it opened, last 30 days.",
        ),
    ];

    const BUCKETS: &[f64] = &[
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 180.0, 300.0, 480.0, 900.0,
        1800.0, 3600.0, 14400.0,
    ];

    #[derive(Default)]
    struct Hist {
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    }

    type Key = (&'static str, String);

    #[derive(Default)]
    pub struct Metrics {
        counters: Mutex<BTreeMap<Key, u64>>,
        hists: Mutex<BTreeMap<Key, Hist>>,
    }

    fn labels(l: &[(&str, &str)]) -> String {
        let mut s = String::new();
        for (i, (k, v)) in l.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(s, "{k}=\"{v}\"");
        }
        s
    }

    impl Metrics {
        pub fn new() -> Self {
            Self::default()
        }

        pub fn inc(&self, name: &'static str, l: &[(&str, &str)]) {
            self.add(name, l, 1);
        }

        pub fn add(&self, name: &'static str, l: &[(&str, &str)], n: u64) {
            *self
                .counters
                .lock()
                .unwrap()
                .entry((name, labels(l)))
                .or_default() += n;
        }

        pub fn observe(&self, name: &'static str, l: &[(&str, &str)], value: f64) {
            let mut h = self.hists.lock().unwrap();
            let e = h.entry((name, labels(l))).or_default();
            if e.counts.is_empty() {
                e.counts = vec![0; BUCKETS.len()];
            }
            for (i, b) in BUCKETS.iter().enumerate() {
                if value <= *b {
                    e.counts[i] += 1;
                }
            }
            e.sum += value;
            e.count += 1;
        }

        /// A counter's current value (tests).
        pub fn counter(&self, name: &'static str, l: &[(&str, &str)]) -> u64 {
            self.counters
                .lock()
                .unwrap()
                .get(&(name, labels(l)))
                .copied()
                .unwrap_or(0)
        }

        /// The exposition text, with gauges computed by the caller at scrape time.
        pub fn render(&self, gauges: &[(&'static str, f64)]) -> String {
            let counters = self.counters.lock().unwrap();
            let hists = self.hists.lock().unwrap();
            let mut out = String::new();
            for (name, kind, help) in CATALOG {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                match *kind {
                    "counter" => {
                        for ((n, l), v) in counters.iter().filter(|((n, _), _)| n == name) {
                            let _ = if l.is_empty() {
                                writeln!(out, "{n} {v}")
                            } else {
                                writeln!(out, "{n}{{{l}}} {v}")
                            };
                        }
                    }
                    "histogram" => {
                        for ((n, l), h) in hists.iter().filter(|((n, _), _)| n == name) {
                            let sep = if l.is_empty() { "" } else { "," };
                            for (i, b) in BUCKETS.iter().enumerate() {
                                let _ = writeln!(
                                    out,
                                    "{n}_bucket{{{l}{sep}le=\"{b}\"}} {}",
                                    h.counts[i]
                                );
                            }
                            let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
                            let braces = if l.is_empty() {
                                String::new()
                            } else {
                                format!("{{{l}}}")
                            };
                            let _ = writeln!(out, "{n}_sum{braces} {}", h.sum);
                            let _ = writeln!(out, "{n}_count{braces} {}", h.count);
                        }
                    }
                    _ => {
                        for (g, v) in gauges.iter().filter(|(g, _)| g == name) {
                            let _ = writeln!(out, "{g} {v}");
                        }
                    }
                }
            }
            out
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exposition_format() {
            let m = Metrics::new();
            m.inc(
                "incidentd_alerts_received_total",
                &[("source", "alertmanager"), ("status", "firing")],
            );
            m.add(
                "incidentd_alerts_received_total",
                &[("source", "alertmanager"), ("status", "firing")],
                2,
            );
            m.observe(
                "incidentd_time_to_resolve_seconds",
                &[("severity", "P1")],
                120.0,
            );
            let text = m.render(&[("incidentd_outbox_depth", 3.0)]);
            assert!(text.contains("# TYPE incidentd_alerts_received_total counter"));
            assert!(text.contains(
                "incidentd_alerts_received_total{source=\"alertmanager\",status=\"firing\"} 3"
            ));
            assert!(text
                .contains("incidentd_time_to_resolve_seconds_bucket{severity=\"P1\",le=\"60\"} 0"));
            assert!(text.contains(
                "incidentd_time_to_resolve_seconds_bucket{severity=\"P1\",le=\"180\"} 1"
            ));
            assert!(text.contains(
                "incidentd_time_to_resolve_seconds_bucket{severity=\"P1\",le=\"+Inf\"} 1"
            ));
            assert!(text.contains("incidentd_time_to_resolve_seconds_sum{severity=\"P1\"} 120"));
            assert!(text.contains("incidentd_outbox_depth 3"));
            assert_eq!(
                m.counter(
                    "incidentd_alerts_received_total",
                    &[("source", "alertmanager"), ("status", "firing")]
                ),
                3
            );
            // Label values are escaped.
            m.inc("incidentd_escalations_total", &[("x", "a\"b")]);
            assert!(m.render(&[]).contains("x=\"a\\\"b\""));
        }
    }
}
