//! A chat port that records every delivery and can be scripted to fail: the stand-in for a
//! platform in engine tests and benchmarks.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::incident::IncidentId;
use crate::ports::{ChatError, ChatPort, Delivered, Delivery, OutboundMessage, ThreadRef};

/// One recorded delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub key: String,
    pub incident: IncidentId,
    pub thread: Option<ThreadRef>,
    pub body: Delivery,
}

#[derive(Default)]
struct Inner {
    delivered: Vec<Recorded>,
    script: VecDeque<ChatError>,
    attempts: u64,
    posted: u64,
}

/// Records deliveries; `fail_next` queues errors returned before the next successes.
pub struct RecordingPort {
    name: String,
    inner: Mutex<Inner>,
    notify: tokio::sync::Notify,
}

impl RecordingPort {
    pub fn new(name: &str) -> Self {
        RecordingPort {
            name: name.to_string(),
            inner: Mutex::default(),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// The next deliveries fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = ChatError>) {
        self.inner.lock().unwrap().script.extend(errors);
    }

    pub fn delivered(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().delivered.clone()
    }

    /// Every call, failed or not.
    pub fn attempts(&self) -> u64 {
        self.inner.lock().unwrap().attempts
    }

    /// Waits until `pred` holds over the deliveries (tests; no sleeping).
    pub async fn wait_for(&self, pred: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        loop {
            let notified = self.notify.notified();
            {
                let inner = self.inner.lock().unwrap();
                if pred(&inner.delivered) {
                    return inner.delivered.clone();
                }
            }
            notified.await;
        }
    }
}

#[async_trait]
impl ChatPort for RecordingPort {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        let mut inner = self.inner.lock().unwrap();
        inner.attempts += 1;
        if let Some(e) = inner.script.pop_front() {
            return Err(e);
        }
        let thread = match msg.body {
            Delivery::PostCard { .. } => {
                inner.posted += 1;
                Some(ThreadRef {
                    channel: "C-INCIDENTS".into(),
                    message_id: format!("m{}", inner.posted),
                })
            }
            _ => None,
        };
        inner.delivered.push(Recorded {
            key: msg.key,
            incident: msg.incident,
            thread: msg.thread,
            body: msg.body.clone(),
        });
        drop(inner);
        self.notify.notify_waiters();
        Ok(Delivered { thread })
    }
}
