//! A rotation's driver: waits until every delegate has moved or the grace window ends, then
//! finishes the rotation (records the outcome, revokes the old token, closes its sessions).
use std::sync::Arc;
use std::time::Duration;

use tether_protocol::message::RevokedReason;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use super::Rotations;

/// First pause before retrying a rotation's finish that the store refused; it doubles up to
/// [`FINISH_RETRY_MAX`].
const FINISH_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest pause between retries of a rotation's finish.
const FINISH_RETRY_MAX: Duration = Duration::from_secs(30);
/// In a replica set: how often a driver looks again at the rotation (finished elsewhere, the
/// jobs lease won, delegates moved on other replicas).
const OTHER_HOLDER_CHECK: Duration = Duration::from_secs(1);
use crate::clock::now_unix;
use crate::metrics::OutcomeLabel;
use crate::store::audit::Actor;
use crate::store::rotations::RotationOutcome;
use crate::store::StoreOps;

impl Rotations {
    async fn all_moved(&self, rotation_id: Uuid, old_token: Uuid) -> bool {
        if !self.0.registry.on_token(old_token).is_empty() {
            return false;
        }
        // Sessions on the old token held by other replicas of the set.
        if !matches!(self.0.cluster.live_elsewhere_on(old_token).await, Ok(0)) {
            return false;
        }
        match self.0.store.rotation_delegates(rotation_id).await {
            Ok(ds) => ds.iter().all(super::rules::has_moved),
            Err(_) => false,
        }
    }

    /// Waits for every delegate to move or for the deadline, then finishes the rotation; or
    /// returns, leaving it unfinished, once the service shuts down.
    pub(super) async fn drive(
        self,
        rotation_id: Uuid,
        old_token: Uuid,
        deadline: u64,
        notify: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        let settled = tokio::time::Instant::now() + self.0.cluster.settle();
        let outcome = loop {
            if *stop.borrow_and_update() {
                tracing::info!(%rotation_id, "rotation left running for the next start (shutdown)");
                return;
            }
            if !self.lock().contains_key(&rotation_id) {
                // Finished by another replica (the change feed said so).
                return;
            }
            if !self.0.cluster.holds_jobs() {
                // Another replica finishes rotations; this one watches for the end (the feed
                // forgets the rotation) and takes over if it gets the lease.
                if self.finished_elsewhere(rotation_id).await {
                    self.lock().remove(&rotation_id);
                    return;
                }
                tokio::select! {
                    _ = tokio::time::timeout(OTHER_HOLDER_CHECK, notify.notified()) => {}
                    changed = stop.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                continue;
            }
            // In a replica set, "every delegate moved" is believed only once every replica
            // has had time to push the rotation and to record its sessions in the cluster
            // view: before that, an empty list may only mean "not reported yet".
            if tokio::time::Instant::now() >= settled && self.all_moved(rotation_id, old_token).await {
                break RotationOutcome::Completed;
            }
            let left = deadline.saturating_sub(now_unix());
            if left == 0 {
                break RotationOutcome::GraceExpired;
            }
            // Bounded: each wait ends at the deadline at the latest, or at shutdown; in a replica
            // set, also every few seconds (delegates moving on other replicas notify no one here).
            let wait = match self.0.cluster.postgres() {
                Some(_) => Duration::from_secs(left).min(OTHER_HOLDER_CHECK),
                None => Duration::from_secs(left),
            };
            tokio::select! {
                _ = tokio::time::timeout(wait, notify.notified()) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        };
        // The old token must not outlive the rotation because the store refused one write (a
        // lock, a full or read-only disk): retry with a growing pause until it is finished or
        // the service shuts down (the next start then finishes it).
        let mut pause = FINISH_RETRY_FIRST;
        while !self.finish(rotation_id, old_token, outcome).await {
            tracing::warn!(%rotation_id, retry_in_secs = pause.as_secs(), "rotation not finished yet; retrying");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        tracing::info!(%rotation_id, "rotation left unfinished for the next start (shutdown)");
                        return;
                    }
                }
            }
            pause = (pause * 2).min(FINISH_RETRY_MAX);
        }
    }

    async fn finished_elsewhere(&self, rotation_id: Uuid) -> bool {
        matches!(self.0.store.rotation(rotation_id).await, Ok(Some(row)) if row.finished_at.is_some())
    }

    /// Records the outcome, revokes the old token and closes its sessions; false when the store
    /// refused (nothing changed, to be retried).
    async fn finish(&self, rotation_id: Uuid, old_token: Uuid, outcome: RotationOutcome) -> bool {
        let now = now_unix();
        let actor = Actor::system(format!("rotation:{rotation_id}"));
        let res = self.0.store.finish_rotation(rotation_id, old_token, now, outcome, &actor).await;
        match res {
            Ok(false) => {
                // Another replica finished it first (a lease changing hands).
                self.lock().remove(&rotation_id);
                true
            }
            Ok(true) => {
                self.lock().remove(&rotation_id);
                self.0.metrics.revocations.inc();
                self.0
                    .metrics
                    .finished
                    .get_or_create(&OutcomeLabel { outcome: outcome.as_str().to_owned() })
                    .inc();
                let fanout = std::time::Instant::now();
                let kicked = self.0.registry.kick(old_token, RevokedReason::Revoked);
                self.0.metrics.revoke_fanout.observe(fanout.elapsed().as_secs_f64());
                tracing::info!(%rotation_id, %old_token, outcome = outcome.as_str(), sessions_closed = kicked, "rotation finished; old token revoked");
                true
            }
            Err(e) => {
                tracing::error!(%rotation_id, error = %e, "cannot finish rotation: the store refused; the old token stays valid until it is retried");
                false
            }
        }
    }
}
