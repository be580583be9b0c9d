//! Prometheus as evidence: the HTTP API client (`/api/v1/query`, `/api/v1/query_range`), the
//! templating of playbook queries (values quoted by [`crate::domain::promql`]) and the
//! verification loop of `verify = { type = "prometheus", … }`.
//!
//! Every request has a timeout (`[prometheus] timeout_seconds`) around the whole exchange, so a
//! Prometheus that accepts the connection and never answers fails the check, it does not hang
//! it. The bearer token is sent as a header and never appears in errors or logs.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::chart::{
    expr_from_url, split_threshold, Chart, CHART_STEP_SECONDS, CHART_WINDOW_SECONDS,
};
use crate::domain::incident::{Incident, IncidentId};
use crate::domain::playbook::{Threshold, VerifySpec};
use crate::domain::promql::QueryTemplate;
use crate::ports::{ChartAtHand, ChartSource, ExecOutcome};

use super::template::{lookup, TemplateContext, TemplateError};

/// A configured Prometheus.
#[derive(Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a query has no answer. The text is shown in the thread as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("Prometheus did not answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("Prometheus is unreachable: {0}")]
    Unreachable(String),
    /// Prometheus refused the query itself (HTTP 400/422): asking again will not help.
    #[error("Prometheus refused the query: {0}")]
    Refused(String),
    #[error("Prometheus answered HTTP {0}: {1}")]
    Status(u16, String),
    #[error("unreadable answer from Prometheus: {0}")]
    Unreadable(String),
}

impl QueryError {
    /// The same query will fail the same way (no point checking again).
    pub fn is_permanent(&self) -> bool {
        matches!(self, QueryError::Refused(_))
    }
}

/// One series of an instant query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One series of a range query's answer: (unix seconds, value) points in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct MatrixItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// Most bytes of an error body quoted back.
const ERROR_BODY_CHARS: usize = 300;
/// Most bytes of an answer read (a range query over 30 minutes is far smaller).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

fn parse_value(s: &str) -> Result<f64, QueryError> {
    // Prometheus writes NaN, +Inf and -Inf as such; Rust reads all three.
    s.parse::<f64>()
        .map_err(|_| QueryError::Unreadable(format!("{s:?} is not a number")))
}

impl Prometheus {
    /// `base` is the server's URL (`http://prometheus:9090`, or with a path prefix).
    pub fn new(
        base: &str,
        token: Option<String>,
        timeout: Duration,
        http: reqwest::Client,
    ) -> Prometheus {
        Prometheus {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            timeout,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// An instant query (`/api/v1/query`) evaluated now. A scalar answer is one sample
    /// without labels.
    pub async fn instant(&self, query: &str) -> Result<Vec<Sample>, QueryError> {
        let data = self.call("query", &[("query", query.to_string())]).await?;
        match data.result_type.as_str() {
            "vector" => {
                let items: Vec<VectorItem> = serde_json::from_value(data.result)
                    .map_err(|e| QueryError::Unreadable(e.to_string()))?;
                items
                    .into_iter()
                    .map(|i| {
                        Ok(Sample {
                            labels: i.metric,
                            value: parse_value(&i.value.1)?,
                        })
                    })
                    .collect()
            }
            "scalar" => {
                let (_, v): (f64, String) = serde_json::from_value(data.result)
                    .map_err(|e| QueryError::Unreadable(e.to_string()))?;
                Ok(vec![Sample {
                    labels: BTreeMap::new(),
                    value: parse_value(&v)?,
                }])
            }
            other => Err(QueryError::Refused(format!(
                "the query gives a {other}, not a number per series (use an instant vector or scalar)"
            ))),
        }
    }

    /// A range query (`/api/v1/query_range`) from `start` to `end`, one point per `step`.
    pub async fn range(
        &self,
        query: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step: Duration,
    ) -> Result<Vec<Series>, QueryError> {
        let params = [
            ("query", query.to_string()),
            // Milliseconds: a whole-second `end` can fall before the newest sample, which
            // would then be missing from the last step.
            ("start", unix_seconds(start)),
            ("end", unix_seconds(end)),
            ("step", format!("{}s", step.as_secs().max(1))),
        ];
        let data = self.call("query_range", &params).await?;
        if data.result_type != "matrix" {
            return Err(QueryError::Unreadable(format!(
                "a range query answered a {}",
                data.result_type
            )));
        }
        let items: Vec<MatrixItem> = serde_json::from_value(data.result)
            .map_err(|e| QueryError::Unreadable(e.to_string()))?;
        items
            .into_iter()
            .map(|i| {
                Ok(Series {
                    labels: i.metric,
                    points: i
                        .values
                        .into_iter()
                        .map(|(t, v)| Ok((t, parse_value(&v)?)))
                        .collect::<Result<_, QueryError>>()?,
                })
            })
            .collect()
    }

    async fn call(&self, endpoint: &str, params: &[(&str, String)]) -> Result<Data, QueryError> {
        let url = format!("{}/api/v1/{endpoint}", self.base);
        let mut req = self.http.post(&url).form(params);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let exchange = async {
            let resp = req.send().await.map_err(|e| {
                // Without the URL: it may carry credentials, and the config names it anyway.
                QueryError::Unreachable(e.without_url().to_string())
            })?;
            let status = resp.status().as_u16();
            let body = read_bounded(resp).await?;
            Ok::<_, QueryError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| QueryError::Timeout(self.timeout))??;
        let envelope: Result<Envelope, _> = serde_json::from_slice(&body);
        match envelope {
            Ok(e) if e.status == "success" && (200..300).contains(&status) => e
                .data
                .ok_or_else(|| QueryError::Unreadable("no data in a successful answer".into())),
            Ok(e) => {
                let msg = match (e.error_type, e.error) {
                    (Some(t), Some(m)) => format!("{t}: {m}"),
                    (None, Some(m)) => m,
                    _ => format!("status {}", e.status),
                };
                if matches!(status, 400 | 422) {
                    Err(QueryError::Refused(cut(&msg)))
                } else {
                    Err(QueryError::Status(status, cut(&msg)))
                }
            }
            Err(_) if !(200..300).contains(&status) => Err(QueryError::Status(
                status,
                cut(&String::from_utf8_lossy(&body)),
            )),
            Err(e) => Err(QueryError::Unreadable(e.to_string())),
        }
    }
}

fn unix_seconds(t: DateTime<Utc>) -> String {
    format!("{:.3}", t.timestamp_millis() as f64 / 1000.0)
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, QueryError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| QueryError::Unreachable(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(QueryError::Unreadable(format!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn cut(s: &str) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    match one_line.char_indices().nth(ERROR_BODY_CHARS) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// The query for this incident: each placeholder's value quoted into its string literal (see
/// [`crate::domain::promql`]). Only a missing label or an unknown placeholder refuses it: the
/// quoting, not an allow-list, keeps a value from changing the query.
pub fn render(query: &QueryTemplate, incident: &Incident) -> Result<String, TemplateError> {
    let ctx = TemplateContext {
        incident,
        followup: None,
    };
    query.render(|name| lookup(name, &ctx).map(|v| Cow::Owned(v.into_owned())))
}

pub use crate::domain::chart::show_value;

/// What one check saw: whether every series meets the threshold, and how to say it.
pub fn judge(answer: &Result<Vec<Sample>, QueryError>, threshold: Threshold) -> (bool, String) {
    match answer {
        Err(e) => (false, e.to_string()),
        Ok(samples) if samples.is_empty() => (false, "no data".into()),
        Ok(samples) => {
            let ok = samples.iter().all(|s| threshold.holds(s.value));
            const SHOWN: usize = 3;
            let mut values: Vec<String> = samples
                .iter()
                .take(SHOWN)
                .map(|s| show_value(s.value))
                .collect();
            if samples.len() > SHOWN {
                values.push(format!("… ({} series)", samples.len()));
            }
            (ok, values.join(", "))
        }
    }
}

/// How long the condition has held, check by check: it must hold at every check for
/// `for_seconds` (a check where it does not hold starts the count again).
#[derive(Debug, Clone)]
pub struct Hold {
    need: Duration,
    since: Option<tokio::time::Instant>,
}

impl Hold {
    pub fn new(need: Duration) -> Hold {
        Hold { need, since: None }
    }

    /// Records a check at `now`; the time the condition has held so far (`None`: it does not).
    pub fn check(&mut self, now: tokio::time::Instant, holds: bool) -> Option<Duration> {
        if !holds {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        Some(now - since)
    }

    /// Held long enough.
    pub fn done(&self, held: Option<Duration>) -> bool {
        held.is_some_and(|h| h >= self.need)
    }
}

/// Runs a Prometheus verification: checks every `interval_seconds` until the condition has held
/// for `for_seconds` (success) or `within_seconds` have passed (failure); a query Prometheus
/// refuses fails at once. Each check is reported to `checked` as it happens.
pub async fn verify(
    prometheus: Option<&Prometheus>,
    spec: &VerifySpec,
    incident: &Incident,
    checked: &(dyn Fn(ExecOutcome) + Send + Sync),
) -> ExecOutcome {
    let fail = |summary: String| ExecOutcome {
        success: false,
        summary,
    };
    let VerifySpec::Prometheus {
        query,
        for_seconds,
        within_seconds,
        interval_seconds,
        ..
    } = spec
    else {
        return fail("not a Prometheus verification".into());
    };
    let Some(threshold) = spec.threshold() else {
        return fail("the verification has no threshold".into());
    };
    let Some(prometheus) = prometheus else {
        return fail("no [prometheus] is configured".into());
    };
    let query = match render(query, incident) {
        Ok(q) => q,
        Err(e) => return fail(format!("refused: {e}")),
    };
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(*within_seconds);
    let interval = Duration::from_secs((*interval_seconds).max(1));
    let mut hold = Hold::new(Duration::from_secs(*for_seconds));
    let mut seen = 0u32;
    loop {
        let now = tokio::time::Instant::now();
        let answer = prometheus.instant(&query).await;
        let (ok, shown) = judge(&answer, threshold);
        let held = hold.check(now, ok);
        seen += 1;
        let status = match held {
            Some(h) if *for_seconds > 0 => {
                format!("{threshold} ✓, held {} s of {for_seconds} s", h.as_secs())
            }
            Some(_) => format!("{threshold} ✓"),
            None => format!("{threshold} ✗"),
        };
        let line = format!("`{query}` = {shown} ({status})");
        checked(ExecOutcome {
            success: ok,
            summary: line,
        });
        if hold.done(held) {
            return ExecOutcome {
                success: true,
                summary: format!(
                    "`{query}` = {shown}, {threshold}{} ({seen} checks)",
                    if *for_seconds > 0 {
                        format!(" for {for_seconds} s")
                    } else {
                        String::new()
                    }
                ),
            };
        }
        if let Err(e) = &answer {
            if e.is_permanent() {
                return fail(format!("`{query}`: {e}"));
            }
        }
        let next = tokio::time::Instant::now().max(now + interval);
        if next > deadline {
            return fail(format!(
                "`{query}` did not stay {threshold}{} within {within_seconds} s; last: {shown} ({seen} checks)",
                if *for_seconds > 0 {
                    format!(" for {for_seconds} s")
                } else {
                    String::new()
                }
            ));
        }
        tokio::time::sleep_until(next).await;
    }
}

/// Charts for cards, from Prometheus: the playbook's `chart_query` (values quoted like any
/// playbook query) or else the alert's own expression, over the last 30 minutes. A card never
/// waits for its chart: [`ChartSource::at_hand`] answers from a cache, and a query not in it
/// (or older than [`CHART_CACHE`]) is fetched off the delivery path, one fetch per query at a
/// time; the cards that went out without it are named when it comes, for an edit. Failures are
/// logged at debug level only and cached like answers, so a dead Prometheus costs one request
/// per query per [`CHART_CACHE`] (while cards are rendered), not one per card edit.
pub struct PrometheusCharts {
    prometheus: Prometheus,
    playbooks: HashMap<String, (QueryTemplate, Option<f64>)>,
    cache: Mutex<ChartCache>,
}

#[derive(Default)]
struct ChartCache {
    /// Per query: when it was fetched and what came (`None`: no chart — a failure, no data).
    fetched: HashMap<String, (tokio::time::Instant, Option<Chart>)>,
    /// Queries being fetched, with the incidents whose card went out without their chart
    /// meanwhile.
    fetching: HashMap<String, Vec<IncidentId>>,
}

/// How long a fetched chart (or a failure) is fresh: a card rendered later shows it still (a
/// chart, not a failure), and has it fetched again off the delivery path.
pub const CHART_CACHE: Duration = Duration::from_secs(5);
/// Queries remembered at most (the cache starts afresh beyond).
const CHART_CACHE_ENTRIES: usize = 1024;

/// Forgets a query's fetch under way if the fetch is dropped before it finished.
struct Fetching<'a> {
    cache: &'a Mutex<ChartCache>,
    query: String,
    done: bool,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut c) = self.cache.lock() {
                c.fetching.remove(&self.query);
            }
        }
    }
}

impl PrometheusCharts {
    /// `prometheus` as configured (its timeout bounds a fetch, which no delivery waits for);
    /// `playbooks`: (playbook id, chart query, threshold).
    pub fn new(
        prometheus: &Prometheus,
        playbooks: impl IntoIterator<Item = (String, QueryTemplate, Option<f64>)>,
    ) -> PrometheusCharts {
        PrometheusCharts {
            prometheus: prometheus.clone(),
            playbooks: playbooks
                .into_iter()
                .map(|(id, q, t)| (id, (q, t)))
                .collect(),
            cache: Mutex::default(),
        }
    }

    /// The query charted for this incident and its threshold, if there is one.
    pub fn query_for(&self, inc: &Incident) -> Option<(String, Option<f64>)> {
        let playbook = inc.playbook.as_deref().and_then(|p| self.playbooks.get(p));
        chart_query(playbook.map(|(q, t)| (q, *t)), inc)
    }
}

/// The query a card charts and its threshold: the playbook's `chart_query` (templated and
/// quoted; a missing label means no chart), else the alert's expression from a generator URL
/// among its links, split at its trailing condition.
pub fn chart_query(
    playbook: Option<(&QueryTemplate, Option<f64>)>,
    inc: &Incident,
) -> Option<(String, Option<f64>)> {
    if let Some((q, t)) = playbook {
        return render(q, inc).ok().map(|q| (q, t));
    }
    let expr = inc.links.iter().find_map(|l| expr_from_url(&l.url))?;
    Some(split_threshold(&expr))
}

#[async_trait::async_trait]
impl ChartSource for PrometheusCharts {
    fn at_hand(&self, inc: &Incident) -> ChartAtHand {
        let Some((query, _)) = self.query_for(inc) else {
            return ChartAtHand::default();
        };
        let now = tokio::time::Instant::now();
        let mut cache = self.cache.lock().unwrap();
        let known = cache.fetched.get(&query).cloned();
        let fresh = known
            .as_ref()
            .is_some_and(|(at, _)| now.duration_since(*at) < CHART_CACHE);
        let chart = known.and_then(|(_, c)| c);
        if fresh {
            return ChartAtHand {
                chart,
                fetch: false,
            };
        }
        let under_way = cache.fetching.contains_key(&query);
        let waiting = cache.fetching.entry(query).or_default();
        // Shown without its chart: edited when the chart comes. (A stale chart is shown as it
        // is; the card's next edit shows the fresher one.)
        if chart.is_none() && !waiting.contains(&inc.id) {
            waiting.push(inc.id);
        }
        ChartAtHand {
            chart,
            fetch: !under_way,
        }
    }

    async fn fetch(&self, inc: &Incident) -> Vec<IncidentId> {
        let Some((query, threshold)) = self.query_for(inc) else {
            return vec![];
        };
        let mut guard = Fetching {
            cache: &self.cache,
            query: query.clone(),
            done: false,
        };
        let end = Utc::now();
        let start = end - chrono::Duration::seconds(CHART_WINDOW_SECONDS);
        let step = Duration::from_secs(CHART_STEP_SECONDS);
        let chart = match self.prometheus.range(&query, start, end, step).await {
            Ok(series) => {
                let n = series.len();
                series
                    .into_iter()
                    .filter(|s| !s.points.is_empty())
                    .max_by(|a, b| {
                        let last = |s: &Series| s.points.last().map_or(f64::MIN, |p| p.1);
                        last(a).total_cmp(&last(b))
                    })
                    .map(|s| Chart {
                        query: query.clone(),
                        points: s.points,
                        threshold,
                        series: n,
                    })
            }
            Err(e) => {
                tracing::debug!(incident = %inc.id, error = %e, "No chart for the card.");
                None
            }
        };
        let mut cache = self.cache.lock().unwrap();
        guard.done = true;
        let waiting = cache.fetching.remove(&query).unwrap_or_default();
        if cache.fetched.len() >= CHART_CACHE_ENTRIES {
            cache.fetched.clear();
        }
        let came = chart.is_some();
        cache
            .fetched
            .insert(query, (tokio::time::Instant::now(), chart));
        if came {
            waiting
        } else {
            vec![]
        }
    }
}

/// Root-cause evidence from Prometheus: each spec's query (templated and quoted) as an instant
/// query; conclusive when every series meets its threshold.
pub struct PrometheusEvidence {
    pub prometheus: Prometheus,
}

#[async_trait::async_trait]
impl crate::ports::EvidenceSource for PrometheusEvidence {
    async fn gather(
        &self,
        inc: &Incident,
        specs: &[crate::domain::playbook::EvidenceSpec],
    ) -> Vec<crate::ports::EvidenceFound> {
        let mut found = Vec::new();
        for spec in specs {
            let (query, summary, conclusive) = match render(&spec.query, inc) {
                Err(e) => (
                    spec.query.source().to_string(),
                    format!("not run: {e}"),
                    false,
                ),
                Ok(q) => {
                    let answer = self.prometheus.instant(&q).await;
                    let (holds, shown) = match spec.threshold() {
                        Some(t) => judge(&answer, t),
                        // Without a threshold it is shown, never conclusive.
                        None => (false, judge(&answer, Threshold::Above(f64::NEG_INFINITY)).1),
                    };
                    (q, shown, holds && spec.threshold().is_some())
                }
            };
            found.push(crate::ports::EvidenceFound {
                name: spec.name.clone(),
                query,
                summary,
                at: Utc::now(),
                conclusive,
            });
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::tests_support::incident;

    #[test]
    fn values_read_as_people_write_them() {
        for (v, s) in [
            (0.0, "0"),
            (37.0, "37"),
            (1.5, "1.5"),
            (0.012345, "0.0123"),
            (-2.25, "-2.25"),
            (123456.7, "123457"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(show_value(v), s, "{v}");
        }
        assert!(parse_value("+Inf").unwrap().is_infinite());
        assert!(parse_value("NaN").unwrap().is_nan());
        assert!(parse_value("x").is_err());
    }

    #[test]
    fn every_series_must_meet_the_threshold_and_no_data_does_not() {
        let s = |v: f64| Sample {
            labels: BTreeMap::new(),
            value: v,
        };
        let below = Threshold::Below(1.0);
        assert_eq!(judge(&Ok(vec![s(0.5)]), below), (true, "0.5".into()));
        assert_eq!(
            judge(&Ok(vec![s(0.5), s(1.0)]), below),
            (false, "0.5, 1".into())
        );
        assert_eq!(judge(&Ok(vec![]), below), (false, "no data".into()));
        assert!(!judge(&Ok(vec![s(f64::NAN)]), below).0);
        assert!(judge(&Ok(vec![s(2.0)]), Threshold::Above(1.0)).0);
        let many: Vec<Sample> = (0..5).map(|i| s(i as f64 / 10.0)).collect();
        assert_eq!(judge(&Ok(many), below).1, "0, 0.1, 0.2, … (5 series)");
        let (ok, shown) = judge(&Err(QueryError::Timeout(Duration::from_secs(2))), below);
        assert!(!ok);
        assert_eq!(shown, "Prometheus did not answer within 2 s");
    }

    #[test]
    fn the_condition_must_hold_at_every_check_for_the_whole_time() {
        let mut hold = Hold::new(Duration::from_secs(10));
        let t0 = tokio::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(hold.check(at(0), true), Some(Duration::ZERO));
        assert!(!hold.done(Some(Duration::ZERO)));
        assert_eq!(hold.check(at(5), true), Some(Duration::from_secs(5)));
        // A bad check in between starts the count again.
        assert_eq!(hold.check(at(8), false), None);
        assert!(!hold.done(None));
        assert_eq!(hold.check(at(9), true), Some(Duration::ZERO));
        let held = hold.check(at(19), true);
        assert_eq!(held, Some(Duration::from_secs(10)));
        assert!(hold.done(held));
        // Zero: the first good check is enough.
        let mut now = Hold::new(Duration::ZERO);
        let held = now.check(at(0), true);
        assert!(now.done(held));
    }

    #[test]
    fn the_chart_query_is_the_playbooks_else_the_alerts_expression() {
        let mut inc = incident();
        inc.labels.insert("service".into(), "a\"pi".into());
        inc.links.push(crate::domain::alert::Link {
            title: "Source".into(),
            url: "http://p:9090/graph?g0.expr=rate%28x%5B5m%5D%29+%3E+3&g0.tab=1".into(),
        });
        assert_eq!(
            chart_query(None, &inc),
            Some(("rate(x[5m])".into(), Some(3.0)))
        );
        let q = QueryTemplate::parse(r#"latency{service="{labels.service}"}"#).unwrap();
        assert_eq!(
            chart_query(Some((&q, Some(2.0))), &inc),
            Some((r#"latency{service="a\"pi"}"#.into(), Some(2.0)))
        );
        let missing = QueryTemplate::parse(r#"x{a="{labels.nope}"}"#).unwrap();
        assert_eq!(chart_query(Some((&missing, None)), &inc), None);
        inc.links.clear();
        assert_eq!(chart_query(None, &inc), None);
    }

    /// A Prometheus stand-in that counts requests and holds each until `answer` is sent.
    async fn held_prometheus(
        answer: tokio::sync::watch::Receiver<Option<String>>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = count.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut answer = answer.clone();
                let n = n.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 8192];
                    let _ = conn.read(&mut buf).await;
                    n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Ok(body) = answer.wait_for(|a| a.is_some()).await.map(|a| a.clone()) else {
                        return;
                    };
                    let body = body.unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(format!("{head}{body}").as_bytes()).await;
                });
            }
        });
        (url, count)
    }

    fn with_expr(id: u64, expr: &str) -> Incident {
        let mut inc = incident();
        inc.id = IncidentId(id);
        inc.links.push(crate::domain::alert::Link {
            title: "Source".into(),
            url: format!(
                "http://p:9090/graph?g0.expr={}",
                form_urlencoded::byte_serialize(expr.as_bytes()).collect::<String>()
            ),
        });
        inc
    }

    #[tokio::test]
    async fn a_card_never_waits_one_fetch_per_query_names_every_card_that_went_without() {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let (url, requests) = held_prometheus(rx).await;
        let prometheus =
            Prometheus::new(&url, None, Duration::from_secs(30), reqwest::Client::new());
        let charts = std::sync::Arc::new(PrometheusCharts::new(&prometheus, []));
        let (a, b) = (with_expr(1, "errors > 1"), with_expr(2, "errors > 1"));
        // Nothing at hand: the first card asks for a fetch, the second (same query) does not.
        assert_eq!(
            charts.at_hand(&a),
            ChartAtHand {
                chart: None,
                fetch: true
            }
        );
        assert_eq!(
            charts.at_hand(&b),
            ChartAtHand {
                chart: None,
                fetch: false
            }
        );
        // No query: nothing to show, nothing to fetch.
        assert_eq!(charts.at_hand(&incident()), ChartAtHand::default());
        let c = charts.clone();
        let (a2, b2) = (a.clone(), b.clone());
        let fetch = tokio::spawn(async move { c.fetch(&a2).await });
        // While the query is held, cards still go out at once, and nothing asks again.
        assert_eq!(
            charts.at_hand(&b2),
            ChartAtHand {
                chart: None,
                fetch: false
            }
        );
        tx.send(Some(
            serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": [
                {"metric": {}, "values": [[1.0, "2"], [61.0, "3"]]}
            ]}})
            .to_string(),
        ))
        .unwrap();
        let mut named = fetch.await.unwrap();
        named.sort();
        assert_eq!(named, [a.id, b.id]);
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Now at hand, fresh: shown, not fetched again.
        let shown = charts.at_hand(&a);
        assert!(!shown.fetch);
        let chart = shown.chart.expect("the chart is at hand");
        assert_eq!(
            (chart.query.as_str(), chart.threshold, chart.current()),
            ("errors", Some(1.0), Some(3.0))
        );
    }

    #[tokio::test]
    async fn a_failed_fetch_names_no_card_and_is_remembered_for_a_while() {
        // Nothing listens there.
        let url = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let prometheus =
            Prometheus::new(&url, None, Duration::from_secs(5), reqwest::Client::new());
        let charts = PrometheusCharts::new(&prometheus, []);
        let a = with_expr(1, "errors > 1");
        assert!(charts.at_hand(&a).fetch);
        assert_eq!(charts.fetch(&a).await, Vec::<IncidentId>::new());
        // The failure is fresh: the next card goes without, and does not ask again.
        assert_eq!(
            charts.at_hand(&a),
            ChartAtHand {
                chart: None,
                fetch: false
            }
        );
    }

    #[test]
    fn rendering_quotes_label_values_and_refuses_missing_ones() {
        let mut inc = incident();
        inc.labels
            .insert("service".into(), r#"api"} or vector(1) #"#.into());
        let q = QueryTemplate::parse(r#"sum(rate(errors_total{service="{labels.service}"}[1m]))"#)
            .unwrap();
        assert_eq!(
            render(&q, &inc).unwrap(),
            r#"sum(rate(errors_total{service="api\"} or vector(1) #"}[1m]))"#
        );
        let q = QueryTemplate::parse(r#"up{job="{labels.nope}"}"#).unwrap();
        assert_eq!(
            render(&q, &inc),
            Err(TemplateError::Missing("label \"nope\"".into()))
        );
    }
}
