//! A real Prometheus for tests: the `prometheus` binary (Debian's package) started on loopback
//! with a temporary config and storage, scraping every second a tiny target the test serves and
//! whose metric values the test scripts.
//!
//! Without the binary the tests that need it skip with a note, except in CI (`CI` set), where
//! they fail: a CI run must never pass by skipping.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;

/// The scrape target: `GET /metrics` answers the scripted series in the text format.
pub struct Target {
    pub addr: std::net::SocketAddr,
    series: Arc<Mutex<BTreeMap<String, f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Target {
    pub async fn start() -> Target {
        let series: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
        let s = series.clone();
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let s = s.clone();
                async move {
                    let mut body = String::new();
                    for (name, v) in s.lock().unwrap().iter() {
                        body.push_str(&format!("{name} {v}\n"));
                    }
                    ([("content-type", "text/plain; version=0.0.4")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Target { addr, series, task }
    }

    /// Sets one series, written as in the exposition format: `errors_ratio{service="api"}`.
    pub fn set(&self, series: &str, value: f64) {
        self.series
            .lock()
            .unwrap()
            .insert(series.to_string(), value);
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running Prometheus; killed when dropped.
pub struct PromServer {
    pub url: String,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// The binary, or `None` (with a note) when it is missing outside CI; in CI a missing binary
/// fails the test.
pub fn binary() -> Option<String> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p.to_string_lossy().into_owned()),
        None if std::env::var_os("CI").is_some() => {
            panic!(
                "prometheus is not installed (apt-get install prometheus); CI must run these tests"
            )
        }
        None => {
            eprintln!("note: prometheus is not installed; skipping this test (apt-get install prometheus)");
            None
        }
    }
}

impl PromServer {
    /// Starts Prometheus scraping `target` every second and waits (bounded) until it is ready.
    pub async fn start(target: &Target) -> Option<PromServer> {
        let bin = binary()?;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: scripted\n    static_configs:\n      - targets: ['{}']\n",
                target.addr
            ),
        )
        .unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting prometheus");
        let server = PromServer {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
            http: reqwest::Client::new(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server.http.get(server.url("/-/ready")).send().await {
                if r.status() == 200 {
                    return Some(server);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The values of an instant query now (one per series).
    pub async fn values(&self, query: &str) -> Vec<f64> {
        let v: serde_json::Value = self
            .http
            .get(self.url("/api/v1/query"))
            .query(&[("query", query)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "success", "{query}: {v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// Waits (bounded) until `query` answers exactly `want`: the scripted values were scraped.
    pub async fn wait_values(&self, query: &str, want: &[f64]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.values(query).await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{query} answers {got:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// What became of one request to a [`HeldPrometheus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Read, not answered, the connection still open.
    Held,
    /// Answered with the released body.
    Answered,
    /// The client closed the connection before an answer (it gave up: its timeout, a cancel).
    GaveUp,
}

/// One request a [`HeldPrometheus`] read.
#[derive(Debug, Clone)]
pub struct HeldRequest {
    /// The request line's path (`/api/v1/query_range`).
    pub path: String,
    pub fate: Fate,
}

#[derive(Default)]
struct HeldState {
    log: Mutex<Vec<HeldRequest>>,
    changed: tokio::sync::Notify,
}

impl HeldState {
    fn set(&self, i: usize, fate: Fate) {
        self.log.lock().unwrap()[i].fate = fate;
        self.changed.notify_waiters();
    }
}

/// A stand-in Prometheus that accepts every connection, reads the request and holds it
/// unanswered (a Prometheus that hangs) until the test releases an answer; it records what
/// became of each request, so a test can tell whether something happened while a request was
/// still held, answered, or given up by the client.
pub struct HeldPrometheus {
    pub url: String,
    state: Arc<HeldState>,
    release: tokio::sync::watch::Sender<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl HeldPrometheus {
    pub async fn start() -> HeldPrometheus {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state: Arc<HeldState> = Arc::default();
        let (release, released) = tokio::sync::watch::channel(None::<String>);
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let st = st.clone();
                let mut released = released.clone();
                tokio::spawn(async move {
                    // The request: its head, then as many body bytes as it announces.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let i = {
                        let mut log = st.log.lock().unwrap();
                        log.push(HeldRequest {
                            path,
                            fate: Fate::Held,
                        });
                        log.len() - 1
                    };
                    st.changed.notify_waiters();
                    // Held until released, unless the client hangs up first.
                    let body = loop {
                        tokio::select! {
                            r = released.wait_for(|b| b.is_some()) => {
                                match r {
                                    Ok(b) => break b.clone().unwrap_or_default(),
                                    Err(_) => return,
                                }
                            }
                            r = conn.read(&mut chunk) => {
                                if matches!(r, Ok(0) | Err(_)) {
                                    st.set(i, Fate::GaveUp);
                                    return;
                                }
                            }
                        }
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(answer.as_bytes()).await.is_ok() && conn.flush().await.is_ok()
                    {
                        st.set(i, Fate::Answered);
                    } else {
                        st.set(i, Fate::GaveUp);
                    }
                });
            }
        });
        HeldPrometheus {
            url,
            state,
            release,
            task,
        }
    }

    /// Every request read so far, in arrival order, with what became of it.
    pub fn requests(&self) -> Vec<HeldRequest> {
        self.state.log.lock().unwrap().clone()
    }

    /// From now on every request, held or new, is answered with `body` (JSON).
    pub fn release(&self, body: &str) {
        let _ = self.release.send(Some(body.to_string()));
    }

    /// Waits (bounded) until the requests satisfy `pred`.
    pub async fn wait(&self, what: &str, pred: impl Fn(&[HeldRequest]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let changed = self.state.changed.notified();
            if pred(&self.requests()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("{what}: not reached: {:?}", self.requests());
            }
        }
    }
}

impl Drop for HeldPrometheus {
    fn drop(&mut self) {
        self.task.abort();
    }
}
