//! Connection health of the chat platforms' long-lived connections (Discord's gateway, Slack's
//! socket): connected or not, since when, the last error, and whether the platform refused the
//! bot for good (a wrong token, a privileged intent not enabled) so that no reconnect will help.
//! `/readyz` is not ready while a configured connection is down for good, and `/metrics`
//! exposes `incidentd_chat_connected{platform}`.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// What a connection reports about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnState {
    pub connected: bool,
    /// When `connected` last changed (or when the connection was created).
    pub since: DateTime<Utc>,
    pub last_error: Option<String>,
    /// The platform refused the bot; it stays down until the configuration is fixed.
    pub down_for_good: bool,
}

/// One platform's connection, shared by the surface (which updates it) and the HTTP server.
#[derive(Debug)]
pub struct Connection {
    platform: &'static str,
    state: Mutex<ConnState>,
}

impl Connection {
    /// Not connected yet (not an error: connecting takes a moment).
    pub fn new(platform: &'static str) -> Self {
        Connection {
            platform,
            state: Mutex::new(ConnState {
                connected: false,
                since: Utc::now(),
                last_error: None,
                down_for_good: false,
            }),
        }
    }

    pub fn platform(&self) -> &'static str {
        self.platform
    }

    fn update(&self, f: impl FnOnce(&mut ConnState)) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was = s.connected;
        f(&mut s);
        if s.connected != was {
            s.since = Utc::now();
        }
    }

    pub fn connected(&self) {
        self.update(|s| {
            s.connected = true;
            s.down_for_good = false;
        });
    }

    /// Disconnected; the client reconnects by itself.
    pub fn disconnected(&self) {
        self.update(|s| s.connected = false);
    }

    /// Refused for good: `error` says what to fix.
    pub fn failed(&self, error: String) {
        self.update(|s| {
            s.connected = false;
            s.down_for_good = true;
            s.last_error = Some(error);
        });
    }

    pub fn state(&self) -> ConnState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_down_for_good_until_a_connection_succeeds() {
        let c = Connection::new("discord");
        assert!(!c.state().connected && !c.state().down_for_good);
        c.connected();
        assert!(c.state().connected);
        c.disconnected();
        assert!(!c.state().connected && !c.state().down_for_good);
        c.failed("token".into());
        let s = c.state();
        assert!(!s.connected && s.down_for_good);
        assert_eq!(s.last_error.as_deref(), Some("token"));
        c.connected();
        assert!(!c.state().down_for_good);
    }
}
