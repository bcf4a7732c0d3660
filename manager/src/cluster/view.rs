//! The cluster-wide view the API reads: this replica's own sessions from its registry (exact),
//! the other live replicas' from the store (as of their last presence write, at most
//! [`super::PRESENCE_EVERY`] old). With the SQLite store, the registry alone.
use std::collections::HashMap;

use uuid::Uuid;

use super::{presence, Cluster};
use crate::registry::{Registry, SessionInfo};
use crate::store::cluster::ReplicaRow;
use crate::store::StoreError;

impl Cluster {
    /// Live sessions on every replica (of `account` only, if given), this replica's first.
    pub async fn sessions(
        &self,
        registry: &Registry,
        account: Option<&str>,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let mut list = registry.list(account);
        if let Some(pg) = self.postgres() {
            let mine: std::collections::HashSet<Uuid> = list.iter().map(|s| s.session_id).collect();
            let others = pg.sessions_elsewhere(account, None).await?;
            list.extend(others.into_iter().filter(|s| !mine.contains(&s.session_id)).map(presence::from_row));
        }
        Ok(list)
    }

    /// Live sessions per token on every replica.
    pub async fn counts_by_token(&self, registry: &Registry) -> Result<HashMap<Uuid, usize>, StoreError> {
        let mut counts = registry.counts_by_token();
        if let Some(pg) = self.postgres() {
            for (token, n) in pg.counts_elsewhere(None).await? {
                *counts.entry(token).or_default() += n;
            }
        }
        Ok(counts)
    }

    /// Live sessions on `token` on every replica.
    pub async fn live_on_token(&self, registry: &Registry, token: Uuid) -> Result<usize, StoreError> {
        let here = registry.on_token(token).len();
        Ok(here + self.live_elsewhere_on(token).await?)
    }

    /// Live sessions on `token` on the other replicas.
    pub async fn live_elsewhere_on(&self, token: Uuid) -> Result<usize, StoreError> {
        match self.postgres() {
            Some(pg) => Ok(pg.counts_elsewhere(Some(token)).await?.get(&token).copied().unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// Live session `id` on another replica of the set, if one holds it.
    pub async fn session_elsewhere(&self, id: Uuid) -> Result<Option<SessionInfo>, StoreError> {
        match self.postgres() {
            Some(pg) => {
                Ok(pg.sessions_elsewhere(None, Some(id)).await?.into_iter().next().map(presence::from_row))
            }
            None => Ok(None),
        }
    }

    /// The replicas recorded (with the SQLite store: this manager alone, as it is now).
    pub async fn replicas(&self, registry: &Registry, draining: bool) -> Result<Vec<ReplicaRow>, StoreError> {
        match self.postgres() {
            Some(pg) => pg.replicas().await,
            None => {
                let now = crate::clock::now_unix();
                Ok(vec![ReplicaRow {
                    id: self.replica_id(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    host: String::from("local"),
                    started_at: self.0.started_at,
                    last_seen: now,
                    sessions: registry.len() as u64,
                    accepting: !draining,
                    alive: true,
                }])
            }
        }
    }

    /// Publishes `change` to the other replicas (nothing to do on one store of one manager).
    pub async fn publish(&self, change: crate::store::cluster::Change) -> Result<(), StoreError> {
        match self.postgres() {
            Some(pg) => pg.publish(change).await,
            None => Ok(()),
        }
    }
}
