//! Presence: every [`PRESENCE_EVERY`] a replica writes its own row (version, host, session
//! count, whether it accepts) and the difference of its live sessions since the last write, in
//! one transaction; its sessions' heartbeats are its own. The holder of the jobs lease also
//! reaps the rows of replicas silent past their lease ([`Cluster::replica_lease`]: a replica's
//! sessions may stay open until it fails closed) and prunes the change log.
use std::collections::HashSet;

use tokio::sync::watch;
use uuid::Uuid;

use super::{Cluster, CHANGE_LOG_KEEP_SECS, PRESENCE_EVERY};
use crate::registry::SessionInfo;
use crate::state::AppState;
use crate::store::cluster::{ClusterSession, Presence};
use crate::store::PgStore;

/// Runs until `stop`.
pub(super) async fn run(cluster: Cluster, pg: PgStore, state: AppState, mut stop: watch::Receiver<bool>) {
    let mut synced: HashSet<Uuid> = HashSet::new();
    let host = hostname();
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let live = state.registry.list(None);
        let now_ids: HashSet<Uuid> = live.iter().map(|s| s.session_id).collect();
        let added = live
            .iter()
            .filter(|s| !synced.contains(&s.session_id))
            .map(|s| to_row(cluster.replica_id(), s))
            .collect();
        let removed = synced.difference(&now_ids).copied().collect();
        let presence = Presence {
            replica_id: cluster.replica_id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            host: host.clone(),
            started_at: cluster.0.started_at,
            now: crate::clock::now_unix(),
            accepting: cluster.accepting() && !state.is_draining(),
            added,
            removed,
            sessions: live.len() as u64,
            lease: cluster.replica_lease(),
        };
        match tokio::time::timeout(PRESENCE_EVERY * 2, pg.sync_presence(&presence)).await {
            Ok(Ok(new_row)) => {
                // A row that had to be inserted again: this replica was reaped while it was
                // silent (its sessions' rows with it); the next sync writes them all again.
                synced = if new_row && !synced.is_empty() { HashSet::new() } else { now_ids };
                if std::mem::take(&mut failing) {
                    tracing::info!("presence recorded again");
                }
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot record this replica's presence; retrying");
            }
            _ => failing = true,
        }
        if cluster.holds_jobs() {
            match pg.reap(CHANGE_LOG_KEEP_SECS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(replicas = n, "reaped the rows of replicas silent past their lease"),
                Err(e) => tracing::debug!(error = %e, "cannot reap dead replicas"),
            }
        }
    }
}

fn to_row(replica_id: Uuid, s: &SessionInfo) -> ClusterSession {
    ClusterSession {
        replica_id,
        session_id: s.session_id,
        account_id: s.account_id.clone(),
        token_id: s.token_id,
        name: s.name.clone(),
        instance: s.instance,
        host: s.host.clone(),
        version: s.version.clone(),
        ip: s.ip,
        connected_at: s.connected_at,
        last_heartbeat: s.last_heartbeat,
    }
}

/// A session of another replica as the registry's record (for the cluster-wide lists).
pub fn from_row(s: ClusterSession) -> SessionInfo {
    SessionInfo {
        session_id: s.session_id,
        account_id: s.account_id,
        token_id: s.token_id,
        name: s.name,
        instance: s.instance,
        host: s.host,
        version: s.version,
        ip: s.ip,
        connected_at: s.connected_at,
        last_heartbeat: s.last_heartbeat,
    }
}

/// This machine's host name (the container's, under Docker), for `replica list`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().take(64).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| String::from("unknown"))
}
