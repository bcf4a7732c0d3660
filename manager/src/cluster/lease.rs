//! The `jobs` lease: a row with an owner, a fence and an expiry judged by the database's
//! clock. The holder renews it every third of [`JOBS_LEASE`]; it counts itself the holder
//! until one lease period after its last successful renewal was sent, less a second, so it
//! stops before any other replica can take the lease over. Jobs under it write only
//! conditionally (a rotation finishes once; a policy rotation starts once), so a holder that
//! lost the lease mid-job changes nothing twice.
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Cluster, JOBS_LEASE};
use crate::store::PgStore;

/// The lease's name.
pub(super) const JOBS: &str = "jobs";

/// Margin under the lease's time to live within which the holder stops counting on it.
const MARGIN: Duration = Duration::from_secs(1);

/// Runs until `stop`.
pub(super) async fn run(cluster: Cluster, pg: PgStore, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(JOBS_LEASE / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fence: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let sent = Instant::now();
        let renewed = tokio::time::timeout(JOBS_LEASE / 3, pg.renew_lease(JOBS, JOBS_LEASE)).await;
        let mut until = cluster.0.jobs_until.lock().unwrap_or_else(|p| p.into_inner());
        match renewed {
            Ok(Ok(Some(f))) => {
                *until = Some(sent + JOBS_LEASE - MARGIN);
                if fence != Some(f) {
                    tracing::info!(replica = %cluster.replica_id(), fence = f, "took the jobs lease: this replica finishes rotations, runs rotation policies and reaps dead replicas");
                    fence = Some(f);
                }
            }
            Ok(Ok(None)) => {
                *until = None;
                if fence.take().is_some() {
                    tracing::warn!(replica = %cluster.replica_id(), "lost the jobs lease to another replica");
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot renew the jobs lease");
            }
            Err(_) => tracing::debug!("renewing the jobs lease timed out"),
        }
        if until.is_some_and(|t| Instant::now() >= t) {
            *until = None;
            if fence.take().is_some() {
                tracing::warn!(replica = %cluster.replica_id(), "jobs lease lapsed (the database did not answer)");
            }
        }
    }
}
