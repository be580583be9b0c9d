//! Server limits: idle and slow (slowloris) connections are closed after the header read
//! timeout, and more idle connections than `max_connections` never keep `/healthz` from an
//! answer.

mod support;

use std::time::Duration;

use support::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config() -> String {
    format!(
        "{}\n[server]\nmax_connections = 4\nheader_read_timeout_seconds = 1\nidle_timeout_seconds = 2\n",
        support::TEST_CONFIG
    )
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (bounded); returns what it sent.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server kept the connection open");
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn more_idle_connections_than_the_limit_still_get_healthz_answered() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &config(), &|_| None).await;
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    // A fresh client (no pooled connection) asks for /healthz while 12 connections idle.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        client.get(app.url("/healthz")).send(),
    )
    .await
    .expect("/healthz was not answered while idle connections filled the server")
    .unwrap();
    assert_eq!(r.status(), 200);
    // The idle connections were closed by the server, not left open.
    for mut s in idle {
        until_closed(&mut s, Duration::from_secs(20)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &config(), &|_| None).await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header byte every 100 ms, never finishing the headers.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = 0u64;
        loop {
            let line = format!("X-{n}: y\r\n");
            if s.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                // A 408 or similar before the close is fine too.
                Ok(Ok(_)) => {}
                Err(_) => {}
            }
            n += 1;
        }
    })
    .await;
    assert!(closed.is_ok(), "the slow connection was never closed");
    // The server still answers everyone else. (A fresh client: the harness's pooled
    // connection idled past the 1 s header timeout, so the server closed it.)
    let r = reqwest::Client::new()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_connection_is_closed_once_idle() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(dir.path(), &config(), &|_| None).await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut s, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    app.stop().await;
}
