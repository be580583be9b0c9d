//! Replicas on PostgreSQL with real processes (docs/replicas.md): three `incidentd run` on one
//! database (a throw-away cluster), a fake Discord, an alert load that records every
//! acknowledged alert, and a remediation in flight. The leader is SIGKILLed several times and
//! SIGSTOPped once (it comes back as a deposed leader) ⇒ a new leader within 10 s each time, no
//! acknowledged alert lost, no incident duplicated, no card posted twice, the action run once
//! (then reported interrupted), and the deposed leader's writes refused.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_discord::{self, FakeDiscord};

struct Replica {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        signal(&self.child, libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bumped whenever any replica writes a log line: waits for a replica's state re-check on it
/// instead of sleeping (a replica logs when it leads, listens, loses the lease or steps down).
fn log_lines() -> &'static tokio::sync::watch::Sender<u64> {
    static LINES: std::sync::OnceLock<tokio::sync::watch::Sender<u64>> = std::sync::OnceLock::new();
    LINES.get_or_init(|| tokio::sync::watch::channel(0).0)
}

/// Re-checks `done` whenever a replica logs, until it holds or `deadline` passes (`false`).
async fn on_log_until<F, Fut>(deadline: Instant, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut lines = log_lines().subscribe();
    loop {
        lines.mark_unchanged();
        if done().await {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, lines.changed()).await.is_err() {
            return done().await;
        }
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid; no memory is shared.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

impl Replica {
    fn start(config: &Path, url: &str) -> Replica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_incidentd"))
            .args(["run", "--config"])
            .arg(config)
            .env("INCIDENTD_LISTEN", "127.0.0.1:0")
            .env("INCIDENTD_DATABASE_URL", url)
            .env("DISCORD_TOKEN", fake_discord::TOKEN)
            .env("RUST_LOG", "info")
            .env_remove("INCIDENTD_CONFIG")
            .env_remove("INCIDENTD_STORE_PATH")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start incidentd");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("incidentd listening") {
                    if let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                    {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr.to_string());
                        }
                    }
                }
                l.lock().unwrap().push(line);
                log_lines().send_modify(|n| *n += 1);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("incidentd did not say where it listens");
        Replica {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    fn said(&self, what: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(what))
    }
}

async fn status(http: &reqwest::Client, url: String) -> Option<u16> {
    http.get(url)
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// The index of the replica that is ready (the leader), waiting at most `within`.
async fn leader(
    http: &reqwest::Client,
    replicas: &[Replica],
    skip: Option<usize>,
    within: Duration,
) -> usize {
    let found = std::cell::Cell::new(None);
    // A new leader logs "incidentd listening." once it serves (ready from then on).
    let led = on_log_until(Instant::now() + within, || async {
        for (i, r) in replicas.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            if status(http, format!("{}/readyz", r.base)).await == Some(200) {
                found.set(Some(i));
                return true;
            }
        }
        false
    })
    .await;
    match found.get() {
        Some(i) if led => i,
        _ => panic!(
            "no replica became leader within {within:?}; logs:\n{}",
            replicas
                .iter()
                .map(|r| r.log.lock().unwrap().join("\n"))
                .collect::<Vec<_>>()
                .join("\n-----\n")
        ),
    }
}

fn config(dir: &Path, discord: &FakeDiscord, script: &Path) -> PathBuf {
    let text = format!(
        r#"
# Every incident of the load must get a card of its own (the test counts them per incident),
# so the storm guard, which would summarize most of them on one card, is off here.
[engine]
storm_new_incidents = 0

[store]
backend = "postgres"
lease_seconds = 2

[discord]
api_url = "{api}"
guild_ids = ["{guild}"]
incident_channel = "{incidents}"

[[kinds]]
id = "disk_full"
name = "Disk full"
keywords = ["scratchfull"]

[[playbooks]]
id = "disk"
title = "Disk"
kinds = ["disk_full"]
[[playbooks.actions]]
id = "cleanup"
title = "Clean up"
when = 'labels.host == "remedy"'
auto = true
run = {{ type = "command", argv = ["{script}", "{{labels.host}}"] }}
"#,
        api = discord.base,
        guild = fake_discord::GUILD,
        incidents = fake_discord::INCIDENTS,
        script = script.display(),
    );
    let path = dir.join("incidentd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every acknowledged alert: (title, incident id).
/// Every acknowledged alert with the incident it went to, and their count to wait on.
#[derive(Clone)]
struct Acked {
    list: Arc<Mutex<Vec<(String, String)>>>,
    count: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Acked {
    fn push(&self, title: String, incident: String) {
        self.list.lock().unwrap().push((title, incident));
        self.count.send_modify(|n| *n += 1);
    }

    /// Waits until `more` alerts beyond those acknowledged now have been acknowledged.
    async fn more(&self, more: usize, within: Duration, what: &str) {
        let target = *self.count.borrow() + more;
        let mut rx = self.count.subscribe();
        tokio::time::timeout(within, rx.wait_for(|n| *n >= target))
            .await
            .unwrap_or_else(|_| panic!("{what}: alerts are not being acknowledged"))
            .unwrap();
    }
}

/// Senders post distinct alerts to whichever replica takes them; every acknowledged alert is
/// recorded with the incident it went to.
fn load(
    bases: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> (Acked, Vec<tokio::task::JoinHandle<()>>) {
    let acked = Acked {
        list: Arc::new(Mutex::new(Vec::new())),
        count: Arc::new(tokio::sync::watch::Sender::new(0)),
    };
    let mut senders = Vec::new();
    for s in 0..3 {
        let (acked, bases, stop) = (acked.clone(), bases.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut i = 0;
            let mut at = s;
            while !stop.load(Ordering::SeqCst) {
                let title = format!("failover sender {s} alert {i}");
                let body = serde_json::json!({
                    "title": title, "severity": "warning", "labels": { "host": format!("h{s}-{i}") }
                });
                let base = {
                    let b = bases.lock().unwrap();
                    b[at % b.len()].clone()
                };
                let answer = http
                    .post(format!("{base}/api/v1/alerts"))
                    .json(&body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        let id = v["results"][0]["incident"].as_str().unwrap().to_string();
                        acked.push(title, id);
                        i += 1;
                    }
                    // Not the leader, or the leader died: the same alert goes to the next
                    // replica (as Alertmanager retries).
                    _ => {
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    (acked, senders)
}

async fn all_incidents(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let v: Value = http
        .get(format!("{base}/api/v1/incidents?status=all&limit=100000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["incidents"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_dies_or_pauses_and_a_replica_takes_over_losing_and_repeating_nothing() {
    let Some(url) = tokio::task::spawn_blocking(incidentd::store::pgtest::database)
        .await
        .unwrap()
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let script = dir.path().join("cleanup.sh");
    // Records each start; the "remedy" run takes long enough to be in flight at a kill.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"start $1\" >> {runs}\nif [ \"$1\" = remedy ]; then sleep 20; fi\necho \"end $1\" >> {runs}\n",
            runs = runs.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let discord = FakeDiscord::start().await;
    let cfg = config(dir.path(), &discord, &script);
    let http = reqwest::Client::new();

    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&cfg, &url)).collect();
    let bases = Arc::new(Mutex::new(
        replicas.iter().map(|r| r.base.clone()).collect::<Vec<_>>(),
    ));
    let first = leader(&http, &replicas, None, Duration::from_secs(30)).await;
    // Standbys: alive, not ready, refusing input.
    for (i, r) in replicas.iter().enumerate() {
        if i == first {
            continue;
        }
        assert_eq!(
            status(&http, format!("{}/healthz", r.base)).await,
            Some(200)
        );
        assert_eq!(status(&http, format!("{}/readyz", r.base)).await, Some(503));
        let refused = http
            .post(format!("{}/api/v1/alerts", r.base))
            .json(&serde_json::json!({"title": "to a standby"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 503, "a standby refuses webhooks");
    }

    // A remediation in flight: the leader starts the action, then dies.
    let r = http
        .post(format!("{}/api/v1/alerts", replicas[first].base))
        .json(&serde_json::json!({
            "title": "scratchfull on remedy", "severity": "warning", "labels": { "host": "remedy" }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let remedy: Value = r.json().await.unwrap();
    let remedy_id = remedy["results"][0]["incident"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&runs)
        .unwrap_or_default()
        .contains("start remedy")
    {
        if Instant::now() > deadline {
            let d = http
                .get(format!(
                    "{}/api/v1/incidents/{remedy_id}",
                    replicas[first].base
                ))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!(
                "the action did not start: {d}\n{}",
                replicas[first].log.lock().unwrap().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (acked, senders) = load(bases.clone(), stop.clone());
    let mut failovers = Vec::new();
    let mut current = first;
    // SIGKILL the leader three times, at moments the load decides (after a varying number of
    // acknowledged alerts); each killed replica is started again (as a restarted pod).
    for (round, after) in [0usize, 40, 25].into_iter().enumerate() {
        acked
            .more(after, Duration::from_secs(20), &format!("round {round}"))
            .await;
        let killed_at = Instant::now();
        let _ = replicas[current].child.kill();
        let _ = replicas[current].child.wait();
        let next = leader(&http, &replicas, Some(current), Duration::from_secs(10)).await;
        failovers.push(killed_at.elapsed());
        replicas[current] = Replica::start(&cfg, &url);
        bases.lock().unwrap()[current] = replicas[current].base.clone();
        current = next;
    }

    // SIGSTOP the leader: another takes over; the paused one comes back deposed.
    acked
        .more(30, Duration::from_secs(20), "before the pause")
        .await;
    let paused = current;
    let paused_at = Instant::now();
    signal(&replicas[paused].child, libc::SIGSTOP);
    let next = leader(&http, &replicas, Some(paused), Duration::from_secs(10)).await;
    failovers.push(paused_at.elapsed());
    acked
        .more(
            30,
            Duration::from_secs(20),
            "while the old leader is paused",
        )
        .await;
    signal(&replicas[paused].child, libc::SIGCONT);
    // Its first write after waking is refused (fenced, or already back to standby).
    let r = http
        .post(format!("{}/api/v1/alerts", replicas[paused].base))
        .timeout(Duration::from_secs(10))
        .json(&serde_json::json!({"title": "to the deposed leader", "labels": {"host": "deposed"}}))
        .send()
        .await;
    if let Ok(r) = r {
        assert_ne!(r.status(), 200, "the deposed leader acknowledged a write");
    }
    // It logs why it stops, then that it listens as a standby (503 from then on).
    let base = replicas[paused].base.clone();
    assert!(
        on_log_until(Instant::now() + Duration::from_secs(10), || async {
            status(&http, format!("{base}/readyz")).await == Some(503)
        })
        .await,
        "the deposed leader did not step down"
    );
    assert!(
        replicas[paused].said("lost the lease")
            || replicas[paused].said("fenced")
            || replicas[paused].said("stepping down"),
        "the deposed leader says why it stopped:\n{}",
        replicas[paused].log.lock().unwrap().join("\n")
    );
    assert_eq!(
        leader(&http, &replicas, Some(paused), Duration::from_secs(1)).await,
        next,
        "the replica that took over still leads"
    );

    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.unwrap();
    }
    let leader_base = replicas[next].base.clone();
    let acked = acked.list.lock().unwrap().clone();
    assert!(acked.len() >= 100, "the load ran: {}", acked.len());

    // Nothing acknowledged lost, nothing duplicated.
    let incidents = all_incidents(&http, &leader_base).await;
    let mut by_title: HashMap<String, Vec<String>> = HashMap::new();
    for i in &incidents {
        by_title
            .entry(i["title"].as_str().unwrap().to_string())
            .or_default()
            .push(i["id"].as_str().unwrap().to_string());
    }
    for (title, id) in &acked {
        assert_eq!(
            by_title.get(title),
            Some(&vec![id.clone()]),
            "{title}: acknowledged as {id}"
        );
    }
    for (title, ids) in &by_title {
        assert_eq!(ids.len(), 1, "{title} opened {ids:?}");
    }
    assert!(!by_title.contains_key("to the deposed leader"));

    // Every incident's card is posted once (after the outbox drains): counted again at every
    // change of the fake's state.
    let count_cards = |d: &FakeDiscord| {
        let mut cards: HashMap<String, usize> = HashMap::new();
        for m in d.messages_in(fake_discord::INCIDENTS) {
            let text = format!("{} {}", m.content, m.embeds);
            if let Some(id) = incidents
                .iter()
                .map(|i| i["id"].as_str().unwrap())
                .find(|id| {
                    text.contains(&format!("{id} "))
                        || text.contains(&format!("{id}:"))
                        || text.contains(&format!("{id}\""))
                })
            {
                *cards.entry(id.to_string()).or_default() += 1;
            }
        }
        cards
    };
    let cards = discord
        .wait_within("every incident's card", Duration::from_secs(30), |d| {
            Some(count_cards(d)).filter(|c| c.len() >= incidents.len())
        })
        .await;
    assert_eq!(cards.len(), incidents.len(), "every incident has its card");
    for (id, n) in &cards {
        assert_eq!(*n, 1, "{id}'s card was posted {n} times");
    }

    // The action in flight ran once and was never re-run; the new leader reported it
    // interrupted.
    let runs_text = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(
        runs_text.matches("start remedy").count(),
        1,
        "the action ran more than once:\n{runs_text}"
    );
    let detail: Value = http
        .get(format!("{leader_base}/api/v1/incidents/{remedy_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        detail.to_string().contains("interrupted"),
        "{remedy_id} shows the interrupted action: {detail}"
    );

    for (i, t) in failovers.iter().enumerate() {
        assert!(*t < Duration::from_secs(10), "failover {i} took {t:?}");
    }
    eprintln!(
        "failover times: {:?}; {} alerts acknowledged, {} incidents",
        failovers,
        acked.len(),
        incidents.len()
    );
}
