//! An open `text/event-stream` (the console's `/console/events`), read as (event, data) pairs.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

pub struct Events {
    /// The raw stream (tests that watch it end read it directly).
    pub body: futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buf: String,
}

impl Events {
    /// Opens the stream at `url` and waits for its `ready` event: from then on nothing is missed.
    pub async fn open(c: &reqwest::Client, url: &str) -> Events {
        let r = c.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut ev = Events {
            body: r.bytes_stream().boxed(),
            buf: String::new(),
        };
        let (name, _) = ev.next().await;
        assert_eq!(name, "ready");
        ev
    }

    /// The next event with data (keep-alive comments are skipped).
    pub async fn next(&mut self) -> (String, String) {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let mut name = String::from("message");
                    let mut data = Vec::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            name = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                        }
                    }
                    if data.is_empty() {
                        continue; // a keep-alive comment
                    }
                    return (name, data.join("\n"));
                }
                let chunk = self
                    .body
                    .next()
                    .await
                    .expect("the event stream ended")
                    .unwrap();
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("no event in time")
    }

    /// The first event named `name` whose JSON data satisfies `pred`.
    pub async fn wait(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (n, d) = self.next().await;
            if n == name {
                let v: Value = serde_json::from_str(&d).unwrap();
                if pred(&v) {
                    return v;
                }
            }
        }
    }
}
