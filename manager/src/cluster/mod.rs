//! The replica set: several managers on one PostgreSQL store, none special on the data path.
//!
//! - `feed`: every change live sessions must see is a numbered row of the store's change log;
//!   each replica `LISTEN`s for the numbers, reads the rows in order from the last one it
//!   applied (after any reconnect, and every second in any case) and applies each once
//!   (`apply`).
//! - `lease`: jobs that must run on one replica at a time (finishing rotations, automatic
//!   rotations, reaping the rows of dead replicas) run on the holder of the `jobs` lease.
//! - `presence`: each replica records itself and its live sessions (batched, every
//!   [`PRESENCE_EVERY`]), the cluster-wide view of `delegate list` and `replica list`; a
//!   replica silent past [`Cluster::replica_lease`] is dead and its rows are reaped.
//! - `view`: the cluster-wide lists the API reads.
//! - Fail closed: a replica whose feed has not reached the database for
//!   `fail_closed_secs` can no longer learn of revocations, so it says `goodbye` to its
//!   sessions, refuses handshakes (unsigned, retryable) and fails `/readyz`, until its feed is
//!   back and caught up.
//!
//! With the SQLite store there is one manager: [`Cluster::single`] always accepts and holds
//! every job, and nothing runs in the background.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uuid::Uuid;

use crate::store::PgStore;

mod apply;
mod feed;
mod lease;
mod presence;
mod view;

/// How often a replica records its presence and sessions.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(2);

/// The jobs lease's time to live; it is renewed every third of it.
pub const JOBS_LEASE: Duration = Duration::from_secs(6);

/// Change log rows older than this are deleted (a replica cut off for longer has failed
/// closed long ago and re-reads the state instead).
pub const CHANGE_LOG_KEEP_SECS: u64 = 3_600;

/// How recently the feed must have read the change log for the handshake to answer from its
/// token cache: twice the feed's catch-up period. A replica whose feed is behind reads the
/// store on every handshake instead, so a token revoked on another replica is refused at
/// once even before this replica fails closed.
pub const FEED_CURRENT: Duration = Duration::from_secs(2);

/// The replica set as this process sees it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// `None` with the SQLite store.
    pg: Option<PgStore>,
    replica_id: Uuid,
    started_at: u64,
    fail_closed: Duration,
    /// Whether handshakes are accepted (false while failing closed, and until the feed first
    /// caught up).
    accepting: AtomicBool,
    /// When the feed last reached the database.
    last_ok: Mutex<Instant>,
    /// Until when this replica holds the jobs lease.
    jobs_until: Mutex<Option<Instant>>,
    stop: watch::Sender<bool>,
}

impl Cluster {
    /// One manager on its own store (SQLite): always accepting, every job its own.
    pub fn single() -> Self {
        Self::build(None, Duration::from_secs(10), true)
    }

    /// A replica on the PostgreSQL store `pg`; it accepts sessions once its feed has caught up
    /// (see [`Cluster::spawn`]).
    pub fn replica(pg: PgStore, fail_closed: Duration) -> Self {
        Self::build(Some(pg), fail_closed, false)
    }

    fn build(pg: Option<PgStore>, fail_closed: Duration, accepting: bool) -> Self {
        let replica_id = pg.as_ref().map_or_else(Uuid::new_v4, PgStore::replica_id);
        Self(Arc::new(Inner {
            pg,
            replica_id,
            started_at: crate::clock::now_unix(),
            fail_closed,
            accepting: AtomicBool::new(accepting),
            last_ok: Mutex::new(Instant::now()),
            jobs_until: Mutex::new(None),
            stop: watch::Sender::new(false),
        }))
    }

    /// This replica's id.
    pub fn replica_id(&self) -> Uuid {
        self.0.replica_id
    }

    /// The PostgreSQL store of a replica set.
    pub fn postgres(&self) -> Option<&PgStore> {
        self.0.pg.as_ref()
    }

    /// How long after its last presence report this replica's sessions may still be open: it
    /// fails closed (and closes them) within its fail-closed window of its feed's last read,
    /// which is at most two presence periods and a second after that report. Written in its
    /// row, so the others count its sessions, and reap its rows, by its own window.
    pub fn replica_lease(&self) -> Duration {
        self.0.fail_closed + PRESENCE_EVERY * 2 + Duration::from_secs(1)
    }

    /// How long a rotation runs at least before "every delegate moved" counts: on a replica
    /// set, two presence periods and a second (each replica's sessions on the old token are
    /// then in the cluster view, or tracked by the rotation); on its own store, nothing.
    pub fn settle(&self) -> Duration {
        match self.0.pg {
            Some(_) => PRESENCE_EVERY * 2 + Duration::from_secs(1),
            None => Duration::ZERO,
        }
    }

    /// Whether this manager accepts delegate handshakes (false while it fails closed).
    pub fn accepting(&self) -> bool {
        self.0.accepting.load(Ordering::SeqCst)
    }

    /// Whether the handshake may answer from its token cache: always on its own store; on a
    /// replica set, while the feed has read the change log within [`FEED_CURRENT`] (the cache
    /// is emptied by every change the feed applies).
    pub fn feed_current(&self) -> bool {
        self.0.pg.is_none() || self.silent_for() < FEED_CURRENT
    }

    /// Whether this manager runs the single-runner jobs now (always, on its own store).
    pub fn holds_jobs(&self) -> bool {
        if self.0.pg.is_none() {
            return true;
        }
        let until = *self.0.jobs_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    fn mark_ok(&self) {
        *self.0.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn silent_for(&self) -> Duration {
        self.0.last_ok.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }

    /// Starts the feed, the fail-closed watchdog, the lease and the presence tasks (nothing
    /// on its own store). They stop with [`Cluster::shutdown`].
    pub fn spawn(&self, state: &crate::state::AppState) {
        let Some(pg) = self.0.pg.clone() else { return };
        tokio::spawn(feed::run(self.clone(), pg.clone(), state.clone(), self.0.stop.subscribe()));
        tokio::spawn(feed::watchdog(self.clone(), state.clone(), self.0.stop.subscribe()));
        tokio::spawn(lease::run(self.clone(), pg.clone(), self.0.stop.subscribe()));
        tokio::spawn(presence::run(self.clone(), pg, state.clone(), self.0.stop.subscribe()));
    }

    /// Stops the background tasks and, on a replica set, gives up the jobs lease and takes
    /// this replica's rows out of the cluster view (best effort, bounded).
    pub async fn shutdown(&self) {
        self.0.stop.send_replace(true);
        let Some(pg) = &self.0.pg else { return };
        *self.0.jobs_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let leave = async {
            if let Err(e) = pg.release_lease(lease::JOBS).await {
                tracing::debug!(error = %e, "cannot release the jobs lease; it expires by itself");
            }
            if let Err(e) = pg.leave().await {
                tracing::debug!(error = %e, "cannot leave the cluster view; the rows are reaped");
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), leave).await;
    }
}
