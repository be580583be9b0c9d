//! The embedded local console: the chat surface used when no Slack or Discord token is set.
//! It keeps a bounded in-memory feed of what it was sent (for the web console) and writes a
//! one-line summary of each message to the log, so `incidentd run` shows incidents at once.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;
use tracing::info;

use crate::domain::incident::IncidentId;
use crate::ports::{ChatBody, ChatError, ChatPort, Delivered, OutboundMessage, ThreadRef};

const FEED_LEN: usize = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct FeedItem {
    pub key: String,
    pub incident: IncidentId,
    pub body: ChatBody,
}

/// The console sink.
#[derive(Default)]
pub struct ConsolePort {
    feed: Mutex<VecDeque<FeedItem>>,
}

impl ConsolePort {
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest messages, oldest first.
    pub fn feed(&self) -> Vec<FeedItem> {
        self.feed.lock().unwrap().iter().cloned().collect()
    }
}

#[async_trait]
impl ChatPort for ConsolePort {
    fn name(&self) -> &str {
        "console"
    }

    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        let mut feed = self.feed.lock().unwrap();
        // Idempotent: a redelivered entry (same key) is not shown twice.
        if feed.iter().any(|f| f.key == msg.key) {
            return Ok(Delivered::default());
        }
        let thread = match msg.body {
            ChatBody::PostCard { card } => {
                info!(
                    incident = %card.incident,
                    severity = %card.severity,
                    kind = %card.kind,
                    "🚨 {} — {}",
                    card.incident,
                    card.title
                );
                Some(ThreadRef {
                    channel: "console".into(),
                    message_id: card.incident.to_string(),
                })
            }
            ChatBody::UpdateCard { card } => {
                info!(incident = %card.incident, status = card.status.as_str(), count = card.alert_count, "Card updated.");
                None
            }
            ChatBody::Note { text, .. } => {
                info!(incident = %msg.incident, "{text}");
                None
            }
        };
        if feed.len() >= FEED_LEN {
            feed.pop_front();
        }
        feed.push_back(FeedItem {
            key: msg.key,
            incident: msg.incident,
            body: msg.body.clone(),
        });
        Ok(Delivered { thread })
    }
}
