//! The outcome numbers kept up to date as decisions are committed ([`Book`]), so that `/metrics`,
//! the stats API, `/incident stats` and the console read them without loading any incident.
//! Built once at start-up by a background scan of the store; readers wait for that scan.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::domain::incident::{Incident, IncidentId};
use crate::domain::stats::{Book, Facts, Stats};
use crate::domain::tally::Tally;
use crate::ports::{Store, StoreError};

pub struct StatsBook {
    book: Mutex<Book>,
    ready: watch::Sender<bool>,
}

impl StatsBook {
    /// An empty book, not ready until [`StatsBook::build`] has run.
    pub fn new() -> Arc<StatsBook> {
        Arc::new(StatsBook {
            book: Mutex::new(Book::new()),
            ready: watch::channel(false).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest versions of committed incidents.
    pub fn record<'a>(&self, incidents: impl IntoIterator<Item = &'a Incident>) {
        let facts: Vec<_> = incidents
            .into_iter()
            .map(|i| (i.id, Facts::of(i)))
            .collect();
        let mut book = self.lock();
        for (id, f) in &facts {
            book.put(*id, f);
        }
    }

    /// Facts already taken from committed incidents.
    pub fn record_facts(&self, facts: &[(IncidentId, Facts)]) {
        if facts.is_empty() {
            return;
        }
        let mut book = self.lock();
        for (id, f) in facts {
            book.put(*id, f);
        }
    }

    /// Reads every stored incident (folding the timelines of incidents stored before tallies),
    /// keeping what the engine recorded meanwhile, then marks the book ready.
    pub fn build(&self, store: &dyn Store) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut n = 0usize;
        let mut folded = 0usize;
        let mut pending = Vec::with_capacity(1024);
        let mut result = Ok(());
        let mut visit = |mut inc: Incident| {
            if inc.tally.is_none() {
                match store.timeline(inc.id) {
                    Ok(t) => {
                        inc.tally = Some(Tally::of(&t));
                        folded += 1;
                    }
                    Err(e) => {
                        result = Err(e);
                        return false;
                    }
                }
            }
            pending.push((inc.id, Facts::of(&inc)));
            n += 1;
            if pending.len() == pending.capacity() {
                let mut book = self.lock();
                for (id, f) in pending.drain(..) {
                    book.put_if_absent(id, &f);
                }
            }
            true
        };
        store.for_each_incident(&mut visit)?;
        result?;
        let mut book = self.lock();
        for (id, f) in pending.drain(..) {
            book.put_if_absent(id, &f);
        }
        drop(book);
        info!(
            incidents = n,
            folded_timelines = folded,
            ms = started.elapsed().as_millis() as u64,
            "Outcome numbers ready."
        );
        self.ready.send_replace(true);
        Ok(())
    }

    /// Builds in the background; on failure the book stays not ready and readers get an error.
    pub fn build_in_background(self: &Arc<Self>, store: Arc<dyn Store>) {
        let book = self.clone();
        let spawned = std::thread::Builder::new()
            .name("incidentd-stats".into())
            .spawn(move || {
                if let Err(e) = book.build(&*store) {
                    warn!(error = %e, "Cannot read the stored incidents for the outcome numbers.");
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "Cannot start the thread that reads the outcome numbers.");
        }
    }

    /// The numbers over incidents opened in the `days` before `now`, once the book is built.
    pub async fn stats(&self, now: DateTime<Utc>, days: u32) -> Result<Stats, StoreError> {
        self.wait().await?;
        Ok(self.lock().stats(now, days))
    }

    /// Incidents not resolved yet (whatever their age).
    pub async fn active(&self) -> Result<usize, StoreError> {
        self.wait().await?;
        Ok(self.lock().active())
    }

    async fn wait(&self) -> Result<(), StoreError> {
        let mut rx = self.ready.subscribe();
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            rx.wait_for(|ready| *ready),
        )
        .await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StoreError::Storage(
                "the outcome numbers are not ready (the start-up scan of the store has not finished)".into(),
            )),
        }
    }
}
