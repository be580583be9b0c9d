//! Benchmarks of the ingest path without HTTP.
//!
//! - `decode`: `incidentd::ingest::decode_alertmanager` on an Alertmanager v4 body of 100 alerts.
//! - `engine`: `Engine::submit` against a real sled store in a temp dir (the built-in config,
//!   one chat sink, no outbox worker draining it). Every iteration waits until its alerts are
//!   durable (one group commit = one sled transaction + one fsync), so these are durable
//!   throughputs: batches of 1 and 100 alerts, with new fingerprints (each alert opens an
//!   incident) and repeats (each alert updates one of 100 open incidents), plus 64 concurrent
//!   single-alert submissions to show what group commit buys.
//! - `sled`: the raw sled floor under the same durability: a ~1 KiB insert + `db.flush()`, and
//!   100 such inserts + one flush.
//!
//! Run: `cargo bench --bench ingest` (under a minute on 2 cores, plus the build). Criterion
//! prints elements/s; an element is one alert (or one sled insert).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput,
};
use incidentd::config::Config;
use incidentd::domain::alert::Alert;
use incidentd::engine::runner::Engine;
use incidentd::engine::Input;
use incidentd::ingest::decode_alertmanager;
use incidentd::ports::SystemClock;
use incidentd::store::SledStore;
use serde_json::json;

/// Same allocator as the `incidentd` binary, so the numbers are the ones it gets.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::runtime::Runtime;

/// Alerts in one "batched" body, as Alertmanager groups them.
const BATCH: usize = 100;
/// Size of a raw sled value: roughly one stored incident record.
const VALUE_BYTES: usize = 1024;

/// One Alertmanager v4 alert; `id` makes its labels (and so its fingerprint) unique.
fn am_alert(id: u64) -> serde_json::Value {
    json!({
        "status": "firing",
        "labels": {
            "alertname": "HighLatency",
            "service": format!("svc-{}", id % 50),
            "instance": format!("10.0.{}.{}:9100", (id / 250) % 250, id % 250),
            "job": "node",
            "severity": "warning",
            "bench_id": id.to_string(),
        },
        "annotations": {
            "summary": "p99 latency above 500 ms",
            "description": "The service answers slowly for more than 5 minutes.",
            "runbook_url": "https://runbooks.example.com/HighLatency",
        },
        "startsAt": "2026-11-29T12:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=latency",
        "fingerprint": format!("{id:016x}"),
    })
}

/// An Alertmanager v4 webhook body with alerts `first..first + n`.
fn am_body(first: u64, n: usize) -> Vec<u8> {
    let alerts: Vec<_> = (first..first + n as u64).map(am_alert).collect();
    serde_json::to_vec(&json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighLatency\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "incidentd",
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency", "severity": "warning"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }))
    .expect("serializable")
}

/// Decoded alerts with ids `first..first + n`.
fn alerts(first: u64, n: usize) -> Vec<Alert> {
    decode_alertmanager(&am_body(first, n)).expect("valid body")
}

fn inputs(alerts: &[Alert]) -> Vec<Input> {
    alerts.iter().cloned().map(Input::Alert).collect()
}

fn bench_decode(c: &mut Criterion) {
    let body = am_body(0, BATCH);
    let mut g = c.benchmark_group("decode");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("alertmanager_100", |b| {
        b.iter(|| decode_alertmanager(black_box(&body)).expect("valid body"))
    });
    g.finish();
}

/// A running engine over a fresh store in `dir`.
fn start_engine(dir: &Path) -> (Engine, std::thread::JoinHandle<()>) {
    let store = Arc::new(SledStore::open(&dir.join("store")).expect("open the store"));
    let cfg = Arc::new(Config::builtin());
    // The notification receivers are dropped: nothing drains the outbox or fires timers, so
    // this measures the writer alone.
    let (engine, _notifications, writer) =
        Engine::start(store, cfg, Arc::new(SystemClock), vec!["bench".to_string()])
            .expect("start the engine");
    (engine, writer)
}

/// Submits and waits until durable; panics unless every input got a result.
async fn submit(engine: &Engine, inputs: Vec<Input>) {
    let n = inputs.len();
    let results = engine.submit(inputs).await.expect("engine commit");
    assert_eq!(results.len(), n, "one result per input");
    assert!(results.iter().all(Result::is_ok), "every alert accepted");
}

fn bench_engine(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (engine, writer) = start_engine(dir.path());

    // 100 open incidents for the repeat cases; ids below REPEAT_BASE are never reused.
    const REPEAT_BASE: u64 = 1 << 40;
    let open = alerts(REPEAT_BASE, BATCH);
    rt.block_on(submit(&engine, inputs(&open)));

    // A template re-labelled per iteration so that every "new" alert opens an incident.
    let template = alerts(0, 1).remove(0);
    let mut next_id = 0u64;
    let mut fresh = |n: usize| -> Vec<Input> {
        (0..n)
            .map(|_| {
                next_id += 1;
                let mut a = template.clone();
                a.fingerprint = format!("new-{next_id:016x}");
                Input::Alert(a)
            })
            .collect()
    };

    let mut g = c.benchmark_group("engine");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    for n in [1, BATCH] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("new_x{n}"), |b| {
            b.iter_batched(
                || fresh(n),
                |inputs| rt.block_on(submit(&engine, inputs)),
                BatchSize::PerIteration,
            )
        });
        let mut k = 0usize;
        g.bench_function(format!("repeat_x{n}"), |b| {
            b.iter_batched(
                || {
                    let batch: Vec<Input> = (0..n)
                        .map(|i| Input::Alert(open[(k + i) % BATCH].clone()))
                        .collect();
                    k += n;
                    batch
                },
                |inputs| rt.block_on(submit(&engine, inputs)),
                BatchSize::PerIteration,
            )
        });
    }

    // 64 callers with one new alert each, in flight together: the writer folds them into a
    // few group commits, which is how the HTTP server drives it.
    const CALLERS: usize = 64;
    g.throughput(Throughput::Elements(CALLERS as u64));
    g.bench_function(format!("new_x1_concurrent{CALLERS}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batches: Vec<Vec<Input>> = (0..CALLERS).map(|_| fresh(1)).collect();
                let start = Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = batches
                        .into_iter()
                        .map(|inputs| {
                            let engine = engine.clone();
                            tokio::spawn(async move { submit(&engine, inputs).await })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("submit task");
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();

    // The last engine handle goes: the writer drains and stops.
    drop(engine);
    writer.join().expect("writer thread");
}

fn bench_sled(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    // The same mode as the store, so the comparison is like for like.
    let db = sled::Config::new()
        .path(dir.path().join("raw.sled"))
        .mode(sled::Mode::HighThroughput)
        .open()
        .expect("open sled");
    let value = vec![0x5a_u8; VALUE_BYTES];
    let mut key = 0u64;

    let mut g = c.benchmark_group("sled");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for n in [1, BATCH] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("insert_1KiB_x{n}_flush"), |b| {
            b.iter(|| {
                for _ in 0..n {
                    key += 1;
                    db.insert(key.to_be_bytes(), value.as_slice())
                        .expect("insert");
                }
                db.flush().expect("flush")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decode, bench_engine, bench_sled);
criterion_main!(benches);
