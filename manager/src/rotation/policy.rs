//! Automatic rotation: a loop that starts the rotation of every token whose rotation policy
//! makes it due, exactly as a manual rotate does (audited by `system`, the successor inherits
//! the policy, name, CIDRs and relative expiry). In a replica set the holder of the jobs lease
//! runs it; should two run a pass at once (a lease changing hands), a token is still rotated
//! once, since starting a rotation is a conditional write and the loser sees the token
//! rotating.
use std::time::Duration;

use tokio::sync::watch;

use super::{RotationError, Rotations};
use crate::clock::now_unix;
use crate::store::audit::Actor;
use crate::store::StoreOps;

/// How many due tokens one pass starts at most (the next pass takes the rest).
const PASS_LIMIT: u32 = 100;

/// The actor of automatic rotations in the audit log.
pub const POLICY_ACTOR: &str = "system";

impl Rotations {
    /// Starts the policy loop, checking every `every`; it stops with [`Rotations::shutdown`].
    pub fn spawn_policy(&self, every: Duration) {
        let this = self.clone();
        let stop = self.0.stop.subscribe();
        self.drivers().spawn(async move { this.policy_loop(every, stop).await });
    }

    async fn policy_loop(self, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow_and_update() {
                return;
            }
            // One replica of a set runs the policies: the holder of the jobs lease.
            if self.0.cluster.holds_jobs() {
                self.policy_pass().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// One pass: starts the rotation of each due token. Returns how many it started.
    pub async fn policy_pass(&self) -> usize {
        let now = now_unix();
        let due = match self.0.store.tokens_due_for_rotation(now, PASS_LIMIT).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the tokens due for rotation; trying again later");
                return 0;
            }
        };
        let mut started = 0;
        for token in due {
            let Some(policy) = token.policy else { continue };
            let id = token.id.to_string();
            match self
                .start_as(&token.account_id, &id, policy.grace, None, Actor::system(POLICY_ACTOR), true)
                .await
            {
                Ok(s) => {
                    started += 1;
                    tracing::info!(rotation_id = %s.rotation.id, token_id = %token.id, account = %token.account_id,
                        grace_secs = policy.grace, "rotation started by the token's rotation policy");
                }
                // Another manager (or an operator) got there first, or it was revoked meanwhile.
                Err(RotationError::AlreadyRotating { .. } | RotationError::NotRotatable { .. }) => {}
                Err(e) => tracing::warn!(token_id = %token.id, error = %e, "cannot start a policy rotation"),
            }
        }
        started
    }
}
