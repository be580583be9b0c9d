//! Console identity: users log in with their secret token and get a server-side session (a
//! random 256-bit id in an HttpOnly, SameSite=Strict cookie) with its own CSRF token. Every
//! comparison with a secret is constant-time, and neither tokens nor session ids are logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::config::ConsoleUser;

/// The session cookie's name.
pub const COOKIE: &str = "incidentd_session";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest expire first when more log in).
const MAX_SESSIONS: usize = 10_000;

/// 256 random bits as 64 hex characters (thread-local ChaCha seeded by the OS).
pub fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Constant-time equality: the time taken does not depend on where the inputs differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// The CSRF token given with a state-changing request matches this session's.
    pub fn csrf_ok(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| same(g.as_bytes(), self.csrf.as_bytes()))
    }
}

/// Users and sessions.
pub struct Auth {
    users: Vec<ConsoleUser>,
    sessions: Mutex<HashMap<String, Session>>,
    ttl: Duration,
}

impl Auth {
    pub fn new(users: Vec<ConsoleUser>) -> Self {
        Auth {
            users,
            sessions: Mutex::new(HashMap::new()),
            ttl: SESSION_TTL,
        }
    }

    /// Who can log in.
    pub fn user_names(&self) -> Vec<&str> {
        self.users.iter().map(|u| u.name.as_str()).collect()
    }

    /// The user whose token this is. Every user's token is compared (constant-time), so the
    /// answer takes as long for the first user as for the last or for none.
    fn user_for(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for u in &self.users {
            if same(token.trim().as_bytes(), u.token.expose().as_bytes()) && found.is_none() {
                found = Some(u.name.as_str());
            }
        }
        found
    }

    /// Logs in: a new session id and the session, or `None` for an unknown token.
    pub fn login(&self, token: &str, now: Instant) -> Option<(String, Session)> {
        let user = self.user_for(token)?.to_string();
        let session = Session {
            user,
            csrf: random_hex(),
            expires: now + self.ttl,
        };
        let id = random_hex();
        let mut map = self.sessions.lock().unwrap();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// The live session with this id.
    pub fn session(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.sessions.lock().unwrap();
        match map.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn logout(&self, id: &str) {
        self.sessions.lock().unwrap().remove(id);
    }
}

/// The session id in a `Cookie` header, if any.
pub fn session_cookie(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn auth() -> Auth {
        Auth::new(vec![
            ConsoleUser {
                name: "alice".into(),
                token: Secret::new("alice-token-0123456789"),
            },
            ConsoleUser {
                name: "bob".into(),
                token: Secret::new("bob-token-0123456789ab"),
            },
        ])
    }

    #[test]
    fn login_needs_an_exact_token() {
        let a = auth();
        let now = Instant::now();
        assert!(a.login("alice-token-012345678", now).is_none());
        assert!(a.login("alice-token-01234567890", now).is_none());
        assert!(a.login("", now).is_none());
        let (id, s) = a.login("bob-token-0123456789ab", now).unwrap();
        assert_eq!(s.user, "bob");
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.session(&id, now).unwrap().user, "bob");
    }

    #[test]
    fn sessions_are_random_expire_and_log_out() {
        let a = auth();
        let now = Instant::now();
        let (id1, s1) = a.login("alice-token-0123456789", now).unwrap();
        let (id2, s2) = a.login("alice-token-0123456789", now).unwrap();
        assert_ne!(id1, id2);
        assert_ne!(s1.csrf, s2.csrf);
        assert!(a
            .session(&id1, now + SESSION_TTL - Duration::from_secs(1))
            .is_some());
        assert!(a.session(&id1, now + SESSION_TTL).is_none());
        // Expired sessions are forgotten, not revived.
        assert!(a.session(&id1, now).is_none());
        a.logout(&id2);
        assert!(a.session(&id2, now).is_none());
        assert!(a.session("not-a-session", now).is_none());
    }

    #[test]
    fn csrf_token_must_match_its_session() {
        let a = auth();
        let now = Instant::now();
        let (_, s1) = a.login("alice-token-0123456789", now).unwrap();
        let (_, s2) = a.login("alice-token-0123456789", now).unwrap();
        assert!(s1.csrf_ok(Some(&s1.csrf)));
        assert!(!s1.csrf_ok(Some(&s2.csrf)));
        assert!(!s1.csrf_ok(None));
        assert!(!s1.csrf_ok(Some("")));
        assert!(!s1.csrf_ok(Some(&s1.csrf[..63])));
    }

    #[test]
    fn cookies() {
        assert_eq!(
            session_cookie("a=1; incidentd_session=abc ; b=2"),
            Some("abc")
        );
        assert_eq!(session_cookie("a=1"), None);
        let c = set_cookie("xyz");
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
