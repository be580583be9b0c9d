//! Logs and metrics. Logs: `RUST_LOG` filters (default `info`), to stderr, as text or as one
//! JSON object a line (`--log-format json`, for log collectors: the event's fields, such as
//! `incident` and `source`, are JSON fields). Metrics: [`metrics::Metrics`], exposed on
//! `/metrics` through the official Prometheus client (`prometheus-client`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields` (the message and every
    /// field of the event, e.g. `incident`, `source`) and the current `span` with its fields.
    Json,
}

/// Sets the process's log subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Prometheus metrics through `prometheus-client`: one typed family per metric, recorded with
/// one method each ([`Metrics::alert_received`] …), lock-free per increment; the gauges that are
/// computed at scrape time ([`Scrape`]), the process's own numbers (`process_*`, Linux) and
/// `incidentd_build_info`. One instance is shared (through `Arc`) by the engine, the outbox
/// workers and the HTTP server; there are no process globals. Labels are low-cardinality by
/// construction (severity, kind, source, sink, outcome, platform).
pub mod metrics {
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};

    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{
        DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    };
    use prometheus_client::metrics::counter::{ConstCounter, Counter};
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::info::Info;
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::Registry;

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
        ("incidentd_escalations_total", "counter", "Escalations, automatic and by hand."),
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
            "incidentd_ready",
            "gauge",
            "Whether incidentd takes input (1) or not (0), as /readyz: the writer runs, the store answers, no chat platform refused the bot.",
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
            "incidentd_build_info",
            "info",
            "The running build: version and source revision (value 1).",
        ),
        (
            "incidentd_recurrence_ratio",
            "gauge",
            "Share of incidents whose fingerprint had an incident resolved within the recurrence window before it opened, last 30 days.",
        ),
        (
            "incidentd_followup_completion_ratio",
            "gauge",
            "Share of follow-ups (not dropped) of the last 30 days' incidents done and verified by their due dates.",
        ),
        (
            "incidentd_followups_overdue",
            "gauge",
            "Follow-ups of the last 30 days' incidents past their current due date (done by, or verified by).",
        ),
    ];

    /// The content type of [`Metrics::render`]'s text (OpenMetrics 1.0, which Prometheus
    /// negotiates and scrapes as is).
    pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    const BUCKETS: [f64; 18] = [
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 180.0, 300.0, 480.0, 900.0,
        1800.0, 3600.0, 14400.0,
    ];

    fn histogram() -> Histogram {
        Histogram::new(BUCKETS)
    }

    /// A label value, escaped for the text format (`prometheus-client` writes values as given).
    #[derive(Clone, Debug, Hash, PartialEq, Eq)]
    pub struct Value(String);

    impl From<&str> for Value {
        fn from(s: &str) -> Self {
            Value(s.to_string())
        }
    }

    impl EncodeLabelValue for Value {
        fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
            for c in self.0.chars() {
                match c {
                    '\\' => encoder.write_str("\\\\")?,
                    '"' => encoder.write_str("\\\"")?,
                    '\n' => encoder.write_str("\\n")?,
                    c => encoder.write_char(c)?,
                }
            }
            Ok(())
        }
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct SourceStatus {
        source: Value,
        status: Value,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct SeverityKind {
        severity: Value,
        kind: Value,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct SeverityOnly {
        severity: Value,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct OutcomeOnly {
        outcome: Value,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct ExecutorOutcome {
        executor: Value,
        outcome: Value,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct PlatformOnly {
        platform: Value,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct SinkResult {
        sink: Value,
        result: Value,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct SinkOnly {
        sink: Value,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Build {
        version: Value,
        revision: Value,
    }

    /// How an approval click ended (`incidentd_approvals_total{outcome}`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Approval {
        Approved,
        Rejected,
        /// The policy refused the person.
        Refused,
    }

    impl Approval {
        pub fn as_str(self) -> &'static str {
            match self {
                Approval::Approved => "approved",
                Approval::Rejected => "rejected",
                Approval::Refused => "refused",
            }
        }
    }

    /// How one chat delivery attempt ended (`incidentd_chat_deliveries_total{result}`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum DeliveryResult {
        Ok,
        RateLimited,
        Transient,
        Permanent,
    }

    impl DeliveryResult {
        pub fn as_str(self) -> &'static str {
            match self {
                DeliveryResult::Ok => "ok",
                DeliveryResult::RateLimited => "rate_limited",
                DeliveryResult::Transient => "transient",
                DeliveryResult::Permanent => "permanent",
            }
        }
    }

    /// The outcome numbers over the last 30 days (docs/metrics.md), each a gauge, left out
    /// while it has no value (no incident to compute it from).
    #[derive(Clone, Debug, Default)]
    pub struct Outcomes {
        pub mttr_seconds: Option<f64>,
        pub mttr_median_seconds: Option<f64>,
        pub mttr_p90_seconds: Option<f64>,
        pub mttr_from_alert_start_seconds: Option<f64>,
        pub mttr_automated_seconds: Option<f64>,
        pub mtta_seconds: Option<f64>,
        pub mtta_median_seconds: Option<f64>,
        pub manual_intervention_ratio: Option<f64>,
        pub auto_remediation_success_ratio: Option<f64>,
        pub rca_completion_ratio: Option<f64>,
        pub recurrence_ratio: Option<f64>,
        pub followup_completion_ratio: Option<f64>,
        pub followups_overdue: Option<f64>,
    }

    impl Outcomes {
        fn named(&self) -> [(&'static str, Option<f64>); 13] {
            [
                ("incidentd_mttr_seconds", self.mttr_seconds),
                ("incidentd_mttr_median_seconds", self.mttr_median_seconds),
                ("incidentd_mttr_p90_seconds", self.mttr_p90_seconds),
                (
                    "incidentd_mttr_from_alert_start_seconds",
                    self.mttr_from_alert_start_seconds,
                ),
                (
                    "incidentd_mttr_automated_seconds",
                    self.mttr_automated_seconds,
                ),
                ("incidentd_mtta_seconds", self.mtta_seconds),
                ("incidentd_mtta_median_seconds", self.mtta_median_seconds),
                (
                    "incidentd_manual_intervention_ratio",
                    self.manual_intervention_ratio,
                ),
                (
                    "incidentd_auto_remediation_success_ratio",
                    self.auto_remediation_success_ratio,
                ),
                ("incidentd_rca_completion_ratio", self.rca_completion_ratio),
                ("incidentd_recurrence_ratio", self.recurrence_ratio),
                (
                    "incidentd_followup_completion_ratio",
                    self.followup_completion_ratio,
                ),
                ("incidentd_followups_overdue", self.followups_overdue),
            ]
        }
    }

    /// The gauges computed when `/metrics` is scraped.
    #[derive(Clone, Debug, Default)]
    pub struct Scrape {
        /// What `/readyz` says: the writer runs, the store answers, no chat platform refused.
        pub ready: bool,
        pub outbox_depth: u64,
        pub incidents_active: u64,
        /// Each chat platform's long-lived connection: (platform, connected).
        pub chat_connected: Vec<(String, bool)>,
        pub outcomes: Outcomes,
    }

    /// The catalogued help, as a collector writes it.
    fn full_help(name: &str) -> &'static str {
        CATALOG
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or("", |(_, _, h)| *h)
    }

    /// The catalogued help for [`Registry::register`], which ends every help with a period.
    fn help(name: &str) -> &'static str {
        let h = full_help(name);
        h.strip_suffix('.').unwrap_or(h)
    }

    /// Encodes the scrape-time gauges.
    #[derive(Debug)]
    struct ScrapeCollector(Arc<Mutex<Scrape>>);

    impl Collector for ScrapeCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let s = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut gauge = |name: &str, v: i64| -> std::fmt::Result {
                let m =
                    encoder.encode_descriptor(name, full_help(name), None, MetricType::Gauge)?;
                ConstGauge::new(v).encode(m)
            };
            gauge("incidentd_ready", i64::from(s.ready))?;
            gauge("incidentd_outbox_depth", s.outbox_depth as i64)?;
            gauge("incidentd_incidents_active", s.incidents_active as i64)?;
            if !s.chat_connected.is_empty() {
                let name = "incidentd_chat_connected";
                let mut m =
                    encoder.encode_descriptor(name, full_help(name), None, MetricType::Gauge)?;
                for (platform, up) in &s.chat_connected {
                    let labels = PlatformOnly {
                        platform: platform.as_str().into(),
                    };
                    ConstGauge::new(i64::from(*up)).encode(m.encode_family(&labels)?)?;
                }
            }
            for (name, v) in s.outcomes.named() {
                if let Some(v) = v {
                    let m = encoder.encode_descriptor(
                        name,
                        full_help(name),
                        None,
                        MetricType::Gauge,
                    )?;
                    ConstGauge::new(v).encode(m)?;
                }
            }
            Ok(())
        }
    }

    /// The process's own numbers under their standard names (what other Prometheus clients
    /// export): CPU time, memory, file descriptors, start time. Read from `/proc` at scrape
    /// time; nothing on systems without it.
    #[derive(Debug)]
    struct ProcessCollector;

    #[derive(Debug, Default, PartialEq)]
    pub struct ProcessStats {
        pub cpu_seconds: f64,
        pub resident_memory_bytes: u64,
        pub virtual_memory_bytes: u64,
        pub start_time_seconds: f64,
        pub open_fds: u64,
        pub max_fds: u64,
    }

    /// This process's numbers, from `/proc` (Linux).
    pub fn process_stats() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        // SAFETY: sysconf and getrlimit only read process-wide settings.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })?;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur
        } else {
            0
        };
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        // Fields 14, 15 (utime, stime), 22 (starttime), 23 (vsize), 24 (rss) of proc(5),
        // counted here from field 3.
        Some(ProcessStats {
            cpu_seconds: (num(11)? + num(12)?) as f64 / ticks,
            start_time_seconds: boot as f64 + num(19)? as f64 / ticks,
            virtual_memory_bytes: num(20)?,
            resident_memory_bytes: num(21)? * page,
            open_fds,
            max_fds,
        })
    }

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let Some(p) = process_stats() else {
                return Ok(());
            };
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(p.cpu_seconds).encode(m)?;
            let gauges: [(&str, &str, f64); 5] = [
                (
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    p.resident_memory_bytes as f64,
                ),
                (
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    p.virtual_memory_bytes as f64,
                ),
                (
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds",
                    p.start_time_seconds,
                ),
                (
                    "process_open_fds",
                    "Number of open file descriptors",
                    p.open_fds as f64,
                ),
                (
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    p.max_fds as f64,
                ),
            ];
            for (name, help, v) in gauges {
                let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v).encode(m)?;
            }
            Ok(())
        }
    }

    /// Every metric family incidentd records, typed. Recording is lock-free per series once
    /// it exists (an atomic add); see the methods for what each family counts.
    pub struct Metrics {
        registry: Registry,
        scrape: Arc<Mutex<Scrape>>,
        alerts_received: Family<SourceStatus, Counter>,
        incidents_opened: Family<SeverityKind, Counter>,
        incidents_resolved: Family<SeverityKind, Counter>,
        time_to_acknowledge: Family<SeverityOnly, Histogram>,
        time_to_resolve: Family<SeverityOnly, Histogram>,
        approvals: Family<OutcomeOnly, Counter>,
        executions: Family<ExecutorOutcome, Counter>,
        escalations: Counter,
        chat_messages_ignored: Family<PlatformOnly, Counter>,
        chat_deliveries: Family<SinkResult, Counter>,
        chat_delivery_latency: Family<SinkOnly, Histogram>,
        commit_seconds: Histogram,
    }

    impl Default for Metrics {
        fn default() -> Self {
            Self::new()
        }
    }

    impl std::fmt::Debug for Metrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Metrics").finish_non_exhaustive()
        }
    }

    impl Metrics {
        pub fn new() -> Self {
            let mut m = Metrics {
                registry: Registry::default(),
                scrape: Arc::default(),
                alerts_received: Family::default(),
                incidents_opened: Family::default(),
                incidents_resolved: Family::default(),
                time_to_acknowledge: Family::new_with_constructor(histogram),
                time_to_resolve: Family::new_with_constructor(histogram),
                approvals: Family::default(),
                executions: Family::default(),
                escalations: Counter::default(),
                chat_messages_ignored: Family::default(),
                chat_deliveries: Family::default(),
                chat_delivery_latency: Family::new_with_constructor(histogram),
                commit_seconds: histogram(),
            };
            // Counters are registered without `_total`: the encoder adds it to the samples.
            let r = &mut m.registry;
            let counter = |n: &'static str| n.strip_suffix("_total").unwrap_or(n);
            macro_rules! register {
                ($($name:literal => $field:expr),* $(,)?) => {
                    $( r.register(counter($name), help($name), $field.clone()); )*
                };
            }
            register! {
                "incidentd_alerts_received_total" => m.alerts_received,
                "incidentd_incidents_opened_total" => m.incidents_opened,
                "incidentd_incidents_resolved_total" => m.incidents_resolved,
                "incidentd_time_to_acknowledge_seconds" => m.time_to_acknowledge,
                "incidentd_time_to_resolve_seconds" => m.time_to_resolve,
                "incidentd_approvals_total" => m.approvals,
                "incidentd_executions_total" => m.executions,
                "incidentd_escalations_total" => m.escalations,
                "incidentd_chat_messages_ignored_total" => m.chat_messages_ignored,
                "incidentd_chat_deliveries_total" => m.chat_deliveries,
                "incidentd_chat_delivery_latency_seconds" => m.chat_delivery_latency,
                "incidentd_commit_seconds" => m.commit_seconds,
            }
            r.register(
                "incidentd_build",
                help("incidentd_build_info"),
                Info::new(Build {
                    version: env!("CARGO_PKG_VERSION").into(),
                    revision: option_env!("INCIDENTD_REVISION")
                        .unwrap_or("unknown")
                        .into(),
                }),
            );
            r.register_collector(Box::new(ScrapeCollector(m.scrape.clone())));
            r.register_collector(Box::new(ProcessCollector));
            m
        }

        /// `incidentd_alerts_received_total{source, status}`: one alert taken in.
        pub fn alert_received(&self, source: &str, status: &str) {
            let l = SourceStatus {
                source: source.into(),
                status: status.into(),
            };
            self.alerts_received.get_or_create(&l).inc();
        }

        /// `incidentd_incidents_opened_total{severity, kind}`.
        pub fn incident_opened(&self, severity: &str, kind: &str) {
            let l = SeverityKind {
                severity: severity.into(),
                kind: kind.into(),
            };
            self.incidents_opened.get_or_create(&l).inc();
        }

        /// `incidentd_incidents_resolved_total{severity, kind}`.
        pub fn incident_resolved(&self, severity: &str, kind: &str) {
            let l = SeverityKind {
                severity: severity.into(),
                kind: kind.into(),
            };
            self.incidents_resolved.get_or_create(&l).inc();
        }

        /// `incidentd_time_to_acknowledge_seconds{severity}`: opened → acknowledged.
        pub fn time_to_acknowledge(&self, severity: &str, seconds: f64) {
            let l = SeverityOnly {
                severity: severity.into(),
            };
            self.time_to_acknowledge.get_or_create(&l).observe(seconds);
        }

        /// `incidentd_time_to_resolve_seconds{severity}`: opened → resolved.
        pub fn time_to_resolve(&self, severity: &str, seconds: f64) {
            let l = SeverityOnly {
                severity: severity.into(),
            };
            self.time_to_resolve.get_or_create(&l).observe(seconds);
        }

        /// `incidentd_approvals_total{outcome}`.
        pub fn approval(&self, outcome: Approval) {
            let l = OutcomeOnly {
                outcome: outcome.as_str().into(),
            };
            self.approvals.get_or_create(&l).inc();
        }

        /// `incidentd_executions_total{executor, outcome}`: a finished execution (outcome
        /// `succeeded` or `failed`).
        pub fn execution_finished(&self, executor: &str, success: bool) {
            let l = ExecutorOutcome {
                executor: executor.into(),
                outcome: if success { "succeeded" } else { "failed" }.into(),
            };
            self.executions.get_or_create(&l).inc();
        }

        /// `incidentd_escalations_total`.
        pub fn escalated(&self) {
            self.escalations.inc();
        }

        /// `incidentd_chat_messages_ignored_total{platform}`.
        pub fn chat_message_ignored(&self, platform: &str) {
            let l = PlatformOnly {
                platform: platform.into(),
            };
            self.chat_messages_ignored.get_or_create(&l).inc();
        }

        /// `incidentd_chat_deliveries_total{sink, result}`: one delivery attempt.
        pub fn chat_delivery(&self, sink: &str, result: DeliveryResult) {
            let l = SinkResult {
                sink: sink.into(),
                result: result.as_str().into(),
            };
            self.chat_deliveries.get_or_create(&l).inc();
        }

        /// `incidentd_chat_delivery_latency_seconds{sink}`: outbox entry written → delivered.
        pub fn chat_delivery_latency(&self, sink: &str, seconds: f64) {
            let l = SinkOnly { sink: sink.into() };
            self.chat_delivery_latency
                .get_or_create(&l)
                .observe(seconds);
        }

        /// `incidentd_commit_seconds`: one group commit (transaction and fsync).
        pub fn commit(&self, seconds: f64) {
            self.commit_seconds.observe(seconds);
        }

        /// The exposition text (OpenMetrics, [`CONTENT_TYPE`]) with the gauges of this scrape.
        pub fn render(&self, scrape: Scrape) -> String {
            let mut text = String::new();
            // The lock keeps two scrapes from mixing their gauges.
            let mut s = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
            *s = scrape;
            drop(s);
            if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
                tracing::error!(error = %e, "Cannot encode the metrics.");
            }
            text
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exposition_format() {
            let m = Metrics::new();
            for _ in 0..3 {
                m.alert_received("alertmanager", "firing");
            }
            m.time_to_resolve("P1", 120.0);
            let text = m.render(Scrape {
                outbox_depth: 3,
                chat_connected: vec![("slack".into(), true)],
                ..Scrape::default()
            });
            assert!(text.contains("# TYPE incidentd_alerts_received counter"));
            assert!(text.contains(
                "incidentd_alerts_received_total{source=\"alertmanager\",status=\"firing\"} 3\n"
            ));
            assert!(text.contains(
                "incidentd_time_to_resolve_seconds_bucket{le=\"60.0\",severity=\"P1\"} 0\n"
            ));
            assert!(text.contains(
                "incidentd_time_to_resolve_seconds_bucket{le=\"180.0\",severity=\"P1\"} 1\n"
            ));
            assert!(text.contains(
                "incidentd_time_to_resolve_seconds_bucket{le=\"+Inf\",severity=\"P1\"} 1\n"
            ));
            assert!(text.contains("incidentd_time_to_resolve_seconds_sum{severity=\"P1\"} 120"));
            assert!(text.contains("incidentd_outbox_depth 3\n"));
            assert!(text.contains("incidentd_chat_connected{platform=\"slack\"} 1\n"));
            assert!(text
                .contains("# HELP incidentd_outbox_depth Chat messages waiting in the outbox.\n"));
            assert!(text.ends_with("# EOF\n"));
            // An outcome without a value is left out.
            assert!(!text.contains("incidentd_mttr_seconds"));
            // Label values are escaped.
            m.chat_message_ignored("a\"b\\c\nd");
            assert!(m
                .render(Scrape::default())
                .contains("platform=\"a\\\"b\\\\c\\nd\""));
        }

        /// Every name in the catalog is exposed once something was recorded, and nothing
        /// named `incidentd_*` is exposed that the catalog does not hold.
        #[test]
        fn every_catalogued_metric_is_exposed() {
            let m = Metrics::new();
            m.alert_received("generic", "firing");
            m.incident_opened("P1", "k");
            m.incident_resolved("P1", "k");
            m.time_to_acknowledge("P1", 1.0);
            m.time_to_resolve("P1", 1.0);
            m.approval(Approval::Refused);
            m.execution_finished("http", true);
            m.escalated();
            m.chat_message_ignored("slack");
            m.chat_delivery("console", DeliveryResult::Ok);
            m.chat_delivery_latency("console", 0.1);
            m.commit(0.01);
            let all = Outcomes {
                mttr_seconds: Some(1.0),
                mttr_median_seconds: Some(1.0),
                mttr_p90_seconds: Some(1.0),
                mttr_from_alert_start_seconds: Some(1.0),
                mttr_automated_seconds: Some(1.0),
                mtta_seconds: Some(1.0),
                mtta_median_seconds: Some(1.0),
                manual_intervention_ratio: Some(1.0),
                auto_remediation_success_ratio: Some(1.0),
                rca_completion_ratio: Some(1.0),
                recurrence_ratio: Some(1.0),
                followup_completion_ratio: Some(0.5),
                followups_overdue: Some(2.0),
            };
            let text = m.render(Scrape {
                chat_connected: vec![("discord".into(), false)],
                outcomes: all,
                ..Scrape::default()
            });
            let exposed: std::collections::BTreeSet<&str> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next())
                .collect();
            for (name, kind, _) in CATALOG {
                let sample = match *kind {
                    "histogram" => format!("{name}_count"),
                    _ => name.to_string(),
                };
                assert!(
                    exposed.contains(sample.as_str()),
                    "{name} not exposed:\n{text}"
                );
            }
            for name in exposed.iter().filter(|n| n.starts_with("incidentd_")) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    CATALOG.iter().any(|(n, _, _)| *n == base),
                    "{name} is exposed but not catalogued"
                );
            }
            for p in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_start_time_seconds",
            ] {
                assert!(exposed.contains(p), "{p} not exposed:\n{text}");
            }
            assert!(text.contains("incidentd_build_info{version=\""));
        }

        #[test]
        fn process_stats_are_plausible() {
            let p = process_stats().expect("/proc on Linux");
            assert!(p.resident_memory_bytes > 1 << 20);
            assert!(p.open_fds >= 3 && p.open_fds <= p.max_fds);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(
                p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 30.0
            );
        }
    }
}
