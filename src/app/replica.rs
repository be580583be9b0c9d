//! One of N replicas on PostgreSQL (docs/replicas.md): a standby until it takes the lease, then
//! the leader, running the whole app on the store opened under its term; back to standby when
//! it loses the lease (a renewal finds another term, the local deadline passes without one, or
//! a commit is refused by fencing). Take-over is the same start-up as a restart: executions
//! `Started` under an older term are marked `Interrupted` (with a thread note), never re-run.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{run_node, Deps};
use crate::config::Config;
use crate::domain::incident::Incident;
use crate::domain::playbook::{ActionSpec, VerifySpec};
use crate::ports::{ChatError, ChatPort, Delivered, ExecOutcome, Executor, OutboundMessage};
use crate::store::lease::{Leadership, Lease};
use crate::store::pg::PgStore;

/// How often the leader renews its lease and a standby tries to take it.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// Runs a blocking lease call off the async threads, giving the lease back.
async fn on_lease<T: Send + 'static>(
    lease: Lease,
    f: impl FnOnce(&mut Lease) -> T + Send + 'static,
) -> anyhow::Result<(Lease, T)> {
    Ok(tokio::task::spawn_blocking(move || {
        let mut lease = lease;
        let r = f(&mut lease);
        (lease, r)
    })
    .await?)
}

/// This replica's name in the lease row: unique per process.
fn holder_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "incidentd".into());
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

pub(super) async fn run(
    cfg: Arc<Config>,
    listener: TcpListener,
    deps: Deps,
    url: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let validity = cfg.store.lease;
    let holder = holder_name();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let listener = listener.into_std()?;
    let addr = listener.local_addr()?;
    let (u, h) = (url.clone(), holder.clone());
    let mut lease = tokio::task::spawn_blocking(move || Lease::connect(&u, &h, validity))
        .await?
        .context("connecting to PostgreSQL for the lease")?;
    info!(%addr, holder = %holder, "incidentd listening as a standby replica.");
    loop {
        // Standby: alive, not ready, refusing input, until the lease is ours.
        let standby_listener = TcpListener::from_std(listener.try_clone()?)?;
        let (acquired_tx, mut acquired) = watch::channel(false);
        let mut standby_stop = stop.clone();
        let server_cfg = cfg.server.clone();
        let standby = tokio::spawn(async move {
            let until = async move {
                tokio::select! {
                    _ = standby_stop.wait_for(|s| *s) => {}
                    _ = acquired.wait_for(|a| *a) => {}
                }
            };
            crate::http::serve(
                standby_listener,
                crate::http::standby_router(),
                &server_cfg,
                until,
            )
            .await
        });
        let mut term = None;
        while !*stop.borrow() {
            let sent = Instant::now();
            let (l, r) = on_lease(lease, |l| l.try_acquire()).await?;
            lease = l;
            match r {
                Ok(Some(t)) => {
                    term = Some((t, sent));
                    break;
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "Cannot reach the lease; still a standby."),
            }
            let mut s = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(RENEW_EVERY) => {}
                _ = s.wait_for(|s| *s) => {}
            }
        }
        let _ = acquired_tx.send(true);
        if let Err(e) = standby.await? {
            warn!(error = %e, "The standby server stopped with an error.");
        }
        let Some((term, sent)) = term else {
            info!("Stopped (standby).");
            return Ok(());
        };
        // Leader under `term`.
        info!(term, holder = %holder, "This replica leads now; starting the engine from the store.");
        let leadership = Arc::new(Leadership::new(sent, validity));
        let u = url.clone();
        let store = match tokio::task::spawn_blocking(move || PgStore::open(&u, Some(term))).await?
        {
            Ok(s) => Arc::new(s),
            Err(e) => {
                error!(error = %e, "Cannot open the store as leader; giving the lease up.");
                let (l, _) = on_lease(lease, move |l| l.release(term)).await?;
                lease = l;
                tokio::time::sleep(RENEW_EVERY).await;
                continue;
            }
        };
        let (lost_tx, lost) = watch::channel(false);
        let renewer = tokio::spawn(renew(
            url.clone(),
            holder.clone(),
            validity,
            term,
            leadership.clone(),
            store.deposed(),
            lost_tx,
            stop.clone(),
        ));
        let mut phase_stop = stop.clone();
        let mut phase_lost = lost.clone();
        let phase_end = async move {
            tokio::select! {
                _ = phase_stop.wait_for(|s| *s) => {}
                _ = phase_lost.wait_for(|l| *l) => {}
            }
        };
        let mut node_deps = deps.clone();
        node_deps.store = Some(store.clone() as Arc<dyn crate::ports::Store>);
        let node_listener = TcpListener::from_std(listener.try_clone()?)?;
        let result = run_node(
            cfg.clone(),
            node_listener,
            node_deps,
            Some(leadership.clone()),
            phase_end,
        )
        .await;
        leadership.lost();
        renewer.abort();
        let _ = renewer.await;
        drop(store);
        if *stop.borrow() {
            // A clean stop hands over at once instead of after the lease's validity.
            let (_, r) = on_lease(lease, move |l| l.release(term)).await?;
            if let Err(e) = r {
                warn!(error = %e, "Cannot give the lease up; a standby takes over when it expires.");
            }
            return result;
        }
        match result {
            Ok(()) => warn!(
                term,
                "This replica lost the lease; its engine stopped, back to standby."
            ),
            Err(e) => {
                error!(term, error = %format!("{e:#}"), "The engine stopped with an error after the lease was lost; back to standby.")
            }
        }
    }
}

/// The leader's renewals: every [`RENEW_EVERY`]; `lost` turns true when a renewal finds another
/// term, when the local deadline passes without a renewal (a hung database, a paused process),
/// or when the store refused a commit (fenced).
#[allow(clippy::too_many_arguments)]
async fn renew(
    url: String,
    holder: String,
    validity: Duration,
    term: i64,
    leadership: Arc<Leadership>,
    mut fenced: watch::Receiver<bool>,
    lost: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let lose = |why: &str| {
        leadership.lost();
        warn!(term, "{why}");
        let _ = lost.send(true);
    };
    let (u, h) = (url.clone(), holder.clone());
    let mut lease =
        match tokio::task::spawn_blocking(move || Lease::connect(&u, &h, validity)).await {
            Ok(Ok(l)) => Some(l),
            _ => None,
        };
    loop {
        let watchdog = async {
            while leadership.is_valid() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            _ = fenced.wait_for(|f| *f) => return lose("A commit was refused: another replica leads (fenced)."),
            _ = watchdog => return lose("The lease was not renewed in time; stepping down."),
            _ = stop.wait_for(|s| *s) => return,
        }
        let sent = Instant::now();
        let attempt = async {
            let l = match lease.take() {
                Some(l) => l,
                None => {
                    let (u, h) = (url.clone(), holder.clone());
                    match tokio::task::spawn_blocking(move || Lease::connect(&u, &h, validity))
                        .await
                    {
                        Ok(Ok(l)) => l,
                        Ok(Err(e)) => return (None, Err(e.to_string())),
                        Err(e) => return (None, Err(e.to_string())),
                    }
                }
            };
            match on_lease(l, move |l| l.renew(term)).await {
                Ok((l, Ok(r))) => (Some(l), Ok(r)),
                Ok((l, Err(e))) => (Some(l), Err(e.to_string())),
                Err(e) => (None, Err(e.to_string())),
            }
        };
        let watchdog = async {
            while leadership.is_valid() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            (l, r) = attempt => {
                lease = l;
                match r {
                    Ok(true) => leadership.renewed(sent, validity),
                    Ok(false) => return lose("Another replica holds the lease now; stepping down."),
                    Err(e) => warn!(term, error = %e, "Cannot renew the lease; retrying until it lapses."),
                }
            }
            _ = watchdog => return lose("The lease was not renewed in time; stepping down."),
        }
    }
}

/// A chat port that delivers only while this replica's lease is valid: a leader paused or cut
/// off past its deadline sends nothing (the message stays queued for the new leader).
pub(super) struct FencedPort {
    inner: Arc<dyn ChatPort>,
    leadership: Arc<Leadership>,
}

impl FencedPort {
    pub(super) fn new(inner: Arc<dyn ChatPort>, leadership: Arc<Leadership>) -> FencedPort {
        FencedPort { inner, leadership }
    }
}

#[async_trait::async_trait]
impl ChatPort for FencedPort {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn deliver(&self, msg: OutboundMessage<'_>) -> Result<Delivered, ChatError> {
        if !self.leadership.is_valid() {
            return Err(ChatError::Transient(
                "not sent: this replica's lease lapsed".into(),
            ));
        }
        self.inner.deliver(msg).await
    }
}

/// An executor that launches actions only while this replica's lease is valid.
pub(super) struct FencedExecutor {
    inner: Arc<dyn Executor>,
    leadership: Arc<Leadership>,
}

impl FencedExecutor {
    pub(super) fn new(inner: Arc<dyn Executor>, leadership: Arc<Leadership>) -> FencedExecutor {
        FencedExecutor { inner, leadership }
    }

    fn refused() -> ExecOutcome {
        ExecOutcome {
            success: false,
            summary: "not run: this replica's lease lapsed (another replica leads)".into(),
        }
    }
}

#[async_trait::async_trait]
impl Executor for FencedExecutor {
    fn plan(&self, incident: &Incident, action: &ActionSpec) -> Result<String, String> {
        self.inner.plan(incident, action)
    }

    async fn run(&self, incident: &Incident, action: &ActionSpec) -> ExecOutcome {
        if !self.leadership.is_valid() {
            return Self::refused();
        }
        self.inner.run(incident, action).await
    }

    async fn verify(
        &self,
        incident: &Incident,
        action: &ActionSpec,
        spec: &VerifySpec,
    ) -> ExecOutcome {
        if !self.leadership.is_valid() {
            return Self::refused();
        }
        self.inner.verify(incident, action, spec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::recording::RecordingPort;
    use crate::domain::incident::IncidentId;
    use crate::ports::Delivery;

    fn msg(body: &Delivery) -> OutboundMessage<'_> {
        OutboundMessage {
            key: "incidentd:test:1".into(),
            incident: IncidentId(1),
            created_at: chrono::Utc::now(),
            thread: None,
            body,
        }
    }

    #[tokio::test]
    async fn a_replica_whose_lease_lapsed_posts_nothing() {
        let port = Arc::new(RecordingPort::new("test"));
        let leadership = Arc::new(Leadership::new(Instant::now(), Duration::from_secs(5)));
        let fenced = FencedPort::new(port.clone(), leadership.clone());
        assert_eq!(fenced.name(), "test");
        let note = Delivery::Note {
            text: "hi".into(),
            mentions: vec![],
        };
        fenced.deliver(msg(&note)).await.unwrap();
        assert_eq!(port.attempts(), 1);
        leadership.lost();
        let e = fenced.deliver(msg(&note)).await.unwrap_err();
        // Transient: the entry stays queued for the new leader, under the same key.
        assert!(matches!(e, ChatError::Transient(_)), "{e:?}");
        assert_eq!(port.attempts(), 1, "nothing reached the platform");
    }

    /// Counts runs.
    struct Counting(std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl Executor for Counting {
        fn plan(&self, _: &Incident, _: &ActionSpec) -> Result<String, String> {
            Ok("plan".into())
        }
        async fn run(&self, _: &Incident, _: &ActionSpec) -> ExecOutcome {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ExecOutcome {
                success: true,
                summary: "ran".into(),
            }
        }
        async fn verify(&self, _: &Incident, _: &ActionSpec, _: &VerifySpec) -> ExecOutcome {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ExecOutcome {
                success: true,
                summary: "verified".into(),
            }
        }
    }

    #[tokio::test]
    async fn a_replica_whose_lease_lapsed_launches_nothing() {
        let inner = Arc::new(Counting(Default::default()));
        let leadership = Arc::new(Leadership::new(Instant::now(), Duration::from_secs(5)));
        let ex = FencedExecutor::new(inner.clone(), leadership.clone());
        let inc: Incident = serde_json::from_value(serde_json::json!({
            "id": 1, "fingerprint": "f", "title": "t", "source": "generic", "severity": "P2",
            "kind": "unclassified", "status": "open", "alert_status": "firing", "labels": {},
            "annotations": {}, "links": [], "opened_at": chrono::Utc::now(),
            "last_seen_at": chrono::Utc::now(), "alert_count": 1, "timeline_len": 0
        }))
        .unwrap();
        let action: ActionSpec = serde_json::from_value(serde_json::json!({
            "id": "a", "title": "A", "run": { "type": "command", "argv": ["/bin/true"] }
        }))
        .unwrap();
        assert!(ex.run(&inc, &action).await.success);
        leadership.lost();
        let out = ex.run(&inc, &action).await;
        assert!(!out.success);
        assert!(out.summary.contains("lease lapsed"), "{}", out.summary);
        assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(ex.plan(&inc, &action).unwrap(), "plan");
    }
}
