//! Alert-channel messages missed while a chat connection was down are read back from the
//! channel's history, exactly once.
//!
//! Each surface keeps a bookmark per alert channel: the latest message it has handled, stored
//! (`Store::chat_cursor`) after the message's alert is durable. After a fresh Discord session
//! (a new READY, not a resume) and after Slack's socket reconnects, the surface reads each
//! alert channel's history after its bookmark and hands those messages to the chat service as
//! if they had just arrived. A message is handled once: live and read-back deliveries of the
//! same message claim it first ([`Bookmarks::claim`]), and the bookmark only moves forward.
//!
//! A channel without a bookmark (the first start) is bookmarked at its newest message, which is
//! not read as an alert: incidentd does not turn a channel's whole past into incidents.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::ports::{blocking, Store};

/// How many handled message ids are remembered (per surface) to tell a live delivery from
/// a read-back one of the same message.
const RECENT: usize = 4096;

/// Platform message ids in their order: Discord snowflakes (`1234`), Slack timestamps
/// (`1714557731.000200`).
pub fn order(id: &str) -> (u64, u64) {
    let (secs, frac) = id.split_once('.').unwrap_or((id, "0"));
    (secs.parse().unwrap_or(0), frac.parse().unwrap_or(0))
}

#[derive(Default)]
struct Recent {
    set: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

/// One surface's bookmarks and recently handled messages.
pub struct Bookmarks {
    platform: &'static str,
    recent: Mutex<Recent>,
    /// The bookmark per channel as last read or written; writes are serialized so an older
    /// message never overwrites a newer bookmark.
    marks: tokio::sync::Mutex<HashMap<String, Option<String>>>,
}

impl Bookmarks {
    pub fn new(platform: &'static str) -> Self {
        Bookmarks {
            platform,
            recent: Mutex::default(),
            marks: tokio::sync::Mutex::default(),
        }
    }

    fn key(&self, channel: &str) -> String {
        format!("{}:{channel}", self.platform)
    }

    /// Claims a message for handling: false if it was claimed before (by the live connection
    /// or a read-back).
    pub fn claim(&self, channel: &str, id: &str) -> bool {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let k = (channel.to_string(), id.to_string());
        if !r.set.insert(k.clone()) {
            return false;
        }
        r.order.push_back(k);
        if r.order.len() > RECENT {
            if let Some(old) = r.order.pop_front() {
                r.set.remove(&old);
            }
        }
        true
    }

    /// Gives a claim back: handling failed and the platform will deliver the message again.
    pub fn release(&self, channel: &str, id: &str) {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let k = (channel.to_string(), id.to_string());
        if r.set.remove(&k) {
            r.order.retain(|x| *x != k);
        }
    }

    /// The channel's bookmark.
    pub async fn get(&self, store: &Arc<dyn Store>, channel: &str) -> Option<String> {
        let mut marks = self.marks.lock().await;
        if let Some(m) = marks.get(channel) {
            return m.clone();
        }
        let (s, key) = (store.clone(), self.key(channel));
        match blocking(move || s.chat_cursor(&key)).await {
            Ok(m) => {
                marks.insert(channel.to_string(), m.clone());
                m
            }
            Err(e) => {
                warn!(platform = self.platform, channel, error = %e, "Cannot read the channel's bookmark.");
                None
            }
        }
    }

    /// A message of the channel was handled: the bookmark moves to it if it is later, durably
    /// (a bookmark that stayed behind after a crash would read a message again).
    pub async fn seen(&self, store: &Arc<dyn Store>, channel: &str, id: &str) {
        let mut marks = self.marks.lock().await;
        if !marks.contains_key(channel) {
            let (s, key) = (store.clone(), self.key(channel));
            let m = blocking(move || s.chat_cursor(&key)).await.ok().flatten();
            marks.insert(channel.to_string(), m);
        }
        let current = marks.get(channel).cloned().flatten();
        if current.as_deref().is_some_and(|c| order(c) >= order(id)) {
            return;
        }
        let (s, key, v) = (store.clone(), self.key(channel), id.to_string());
        let written = blocking(move || {
            s.set_chat_cursor(&key, &v)?;
            s.flush()
        })
        .await;
        match written {
            Ok(()) => {
                marks.insert(channel.to_string(), Some(id.to_string()));
            }
            Err(e) => {
                warn!(platform = self.platform, channel, error = %e, "Cannot store the channel's bookmark.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_as_the_platforms_order_them() {
        assert!(order("1714557731.000200") > order("1714557731.000199"));
        assert!(order("1714557732.000001") > order("1714557731.999999"));
        assert!(order("1000000000000000010") > order("999999999999999999"));
    }

    #[test]
    fn a_message_is_claimed_once() {
        let b = Bookmarks::new("discord");
        assert!(b.claim("C1", "5"));
        assert!(!b.claim("C1", "5"));
        assert!(b.claim("C2", "5"));
    }

    #[tokio::test]
    async fn the_bookmark_only_moves_forward_and_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        let b = Bookmarks::new("slack");
        assert_eq!(b.get(&store, "C1").await, None);
        b.seen(&store, "C1", "1714557731.000200").await;
        b.seen(&store, "C1", "1714557731.000100").await;
        assert_eq!(
            b.get(&store, "C1").await.as_deref(),
            Some("1714557731.000200")
        );
        // A new process reads it from the store.
        let again = Bookmarks::new("slack");
        assert_eq!(
            again.get(&store, "C1").await.as_deref(),
            Some("1714557731.000200")
        );
        assert_eq!(again.get(&store, "C2").await, None);
    }
}
