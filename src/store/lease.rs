//! Leader election through the database (docs/replicas.md): one `lease` row `(holder, term,
//! expires_at)`. A standby takes the lease when it is free or expired (by the database's clock,
//! so replicas' clocks do not matter) and becomes leader under a new term; the leader renews it
//! about every second. The term fences every write of the store ([`super::pg::PgStore`]).
//!
//! [`Leadership`] is the leader's own view: a local deadline on the monotonic clock, set from
//! the instant a renewal was *sent* plus the validity minus a margin, which is always before
//! the database lets anyone else take over. Side effects outside the database (chat posts,
//! action launches) check it, since the database cannot fence them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::ports::StoreError;

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Storage(format!("PostgreSQL: {e}"))
}

/// One replica's handle on the lease row (its own connection). Blocking: use it from a thread
/// of its own (or a blocking one).
pub struct Lease {
    /// Always `Some` until dropped.
    client: Option<Client>,
    url: String,
    holder: String,
    validity: Duration,
}

impl Drop for Lease {
    /// A client's drop blocks on its own runtime, which panics on an async thread (where a
    /// leader's renewal task may be aborted): close it on a thread of its own.
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = std::thread::Builder::new()
                .name("incidentd-pg-close".into())
                .spawn(move || drop(c));
        }
    }
}

/// Who holds the lease now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub term: i64,
    pub expired: bool,
}

impl Lease {
    /// Connects (and migrates: the lease row is part of the schema). `holder` names this
    /// replica (unique per process), `validity` is how long a lease lasts without renewal.
    pub fn connect(url: &str, holder: &str, validity: Duration) -> Result<Lease, StoreError> {
        let mut client = super::pg::connect(url)?;
        super::pg::schema::migrate(&mut client)?;
        Ok(Lease {
            client: Some(client),
            url: url.to_owned(),
            holder: holder.to_owned(),
            validity,
        })
    }

    pub fn validity(&self) -> Duration {
        self.validity
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(super::pg::connect(&self.url)?);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    fn millis(&self) -> f64 {
        self.validity.as_secs_f64() * 1000.0
    }

    /// Takes the lease if it is free or expired: the new term. `None`: someone else holds it.
    /// Locks the row `FOR UPDATE`, so it waits for the old leader's write transactions in
    /// flight (they hold `FOR KEY SHARE`); every later one sees the new term and is refused.
    pub fn try_acquire(&mut self) -> Result<Option<i64>, StoreError> {
        let ms = self.millis();
        let holder = self.holder.clone();
        let c = self.client()?;
        let mut tx = c.transaction().map_err(pg)?;
        // Bounded: the old leader's transactions in flight end within its session's idle
        // timeout (see `pg::connect`); never wait longer than that and a bit.
        tx.batch_execute("SET LOCAL lock_timeout = '5s'")
            .map_err(pg)?;
        let row = tx
            .query_one(
                "SELECT holder, expires_at < clock_timestamp() FROM lease WHERE id = 1 FOR UPDATE",
                &[],
            )
            .map_err(pg)?;
        let (current, expired): (String, bool) = (row.get(0), row.get(1));
        if !current.is_empty() && !expired {
            return Ok(None);
        }
        let term: i64 = tx
            .query_one(
                "UPDATE lease SET holder = $1, term = term + 1, \
                 expires_at = clock_timestamp() + $2 * interval '1 millisecond' \
                 WHERE id = 1 RETURNING term",
                &[&holder, &ms],
            )
            .map_err(pg)?
            .get(0);
        tx.commit().map_err(pg)?;
        Ok(Some(term))
    }

    /// Extends the lease of `term`: false when it is no longer ours (deposed).
    pub fn renew(&mut self, term: i64) -> Result<bool, StoreError> {
        let ms = self.millis();
        let holder = self.holder.clone();
        let n = self
            .client()?
            .execute(
                "UPDATE lease SET expires_at = clock_timestamp() + $3 * interval '1 millisecond' \
                 WHERE id = 1 AND holder = $1 AND term = $2",
                &[&holder, &term, &ms],
            )
            .map_err(pg)?;
        Ok(n == 1)
    }

    /// Gives the lease up (a clean shutdown): a standby takes over at its next try.
    pub fn release(&mut self, term: i64) -> Result<(), StoreError> {
        let holder = self.holder.clone();
        self.client()?
            .execute(
                "UPDATE lease SET holder = '', expires_at = '-infinity' \
                 WHERE id = 1 AND holder = $1 AND term = $2",
                &[&holder, &term],
            )
            .map_err(pg)?;
        Ok(())
    }

    /// The lease as it is now.
    pub fn current(&mut self) -> Result<Holder, StoreError> {
        let row = self
            .client()?
            .query_one(
                "SELECT holder, term, expires_at < clock_timestamp() FROM lease WHERE id = 1",
                &[],
            )
            .map_err(pg)?;
        Ok(Holder {
            holder: row.get(0),
            term: row.get(1),
            expired: row.get(2),
        })
    }
}

/// The leader's local view of its lease: valid until a deadline on the monotonic clock.
#[derive(Debug)]
pub struct Leadership {
    deadline: Mutex<Instant>,
    margin: Duration,
}

impl Leadership {
    /// Leadership just taken by an acquisition sent at `sent`.
    pub fn new(sent: Instant, validity: Duration) -> Leadership {
        let margin = validity / 5;
        Leadership {
            deadline: Mutex::new(sent + validity.saturating_sub(margin)),
            margin,
        }
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&self, sent: Instant, validity: Duration) {
        let mut d = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        *d = (*d).max(sent + validity.saturating_sub(self.margin));
    }

    /// Deposed: no longer valid, whatever the deadline said.
    pub fn lost(&self) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Whether this process may still act as leader (post to chat, launch an action).
    pub fn is_valid(&self) -> bool {
        Instant::now() < *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_lapses_before_the_database_would_let_another_take_over() {
        let sent = Instant::now();
        let l = Leadership::new(sent, Duration::from_secs(5));
        assert!(l.is_valid());
        let d = *l.deadline.lock().unwrap();
        assert_eq!(d, sent + Duration::from_secs(4));
        // A renewal sent earlier than the current deadline's never shortens it.
        l.renewed(sent - Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(*l.deadline.lock().unwrap(), d);
        l.renewed(sent + Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(*l.deadline.lock().unwrap(), sent + Duration::from_secs(5));
        l.lost();
        assert!(!l.is_valid());
    }
}
