//! The change feed of one replica: `LISTEN` on a connection of its own, then read the change
//! log in order from the last number applied — at every notification, every
//! [`POLL_EVERY`] (notifications are lost while the connection is down, and a silent
//! connection must be noticed), and after every reconnect — applying each row once. The
//! watchdog beside it fails the replica closed when the feed has not reached the database
//! for the configured window.
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::{apply, Cluster};
use crate::state::AppState;
use crate::store::postgres::Listener;
use crate::store::{PgStore, StoreError};

/// How often the log is read without a notification (also the connection's liveness probe).
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Rows read per query while catching up.
const BATCH: u32 = 500;

/// First pause before reconnecting; doubles up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Runs until `stop`.
pub(super) async fn run(cluster: Cluster, pg: PgStore, state: AppState, mut stop: watch::Receiver<bool>) {
    let mut applied: Option<i64> = None;
    let mut pause = RECONNECT_FIRST;
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let mut listener = match pg.listen().await {
            Ok(l) => l,
            Err(e) => {
                if down_since.is_none() {
                    tracing::warn!(error = %e, "change feed cannot reach the database; retrying");
                    down_since = Some(std::time::Instant::now());
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return,
                }
                pause = (pause * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        pause = RECONNECT_FIRST;
        match follow(&cluster, &state, &mut listener, &mut applied, &mut down_since, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "change feed lost the database; reconnecting and catching up");
                down_since.get_or_insert_with(std::time::Instant::now);
            }
        }
    }
}

/// Catches up, then follows notifications and the poll until the connection fails (`Err`) or
/// `stop` (`Ok`).
async fn follow(
    cluster: &Cluster,
    state: &AppState,
    listener: &mut Listener,
    applied: &mut Option<i64>,
    down_since: &mut Option<std::time::Instant>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let (low, high) = listener.bounds().await?;
    match *applied {
        // First start: the tables are the state, read after `LISTEN` (anything later is
        // notified); the log's history is not this replica's to replay.
        None => {
            apply::resync(state).await?;
            *applied = Some(high);
        }
        // The rows this replica missed were pruned: re-read the state instead.
        Some(at) if high > at && low > at + 1 => {
            tracing::warn!(
                applied = at,
                oldest = low,
                "change log pruned past this replica's position; re-reading the state"
            );
            apply::resync(state).await?;
            *applied = Some(high);
        }
        // The log went back (the database failed over to a standby that lagged, or was
        // restored): numbers this replica applied will be written again. Re-read the state
        // and follow from the log's current end.
        Some(at) if high < at => {
            tracing::warn!(
                applied = at,
                newest = high,
                "the change log is behind this replica's position (database failover or restore?); re-reading the state"
            );
            apply::resync(state).await?;
            *applied = Some(high);
        }
        Some(_) => catch_up(state, listener, applied).await?,
    }
    cluster.mark_ok();
    if let Some(since) = down_since.take() {
        tracing::info!(
            down_ms = since.elapsed().as_millis() as u64,
            applied = applied.unwrap_or(0),
            "change feed back and caught up"
        );
    }
    reopen(cluster, state);
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            note = listener.next_note() => match note {
                None => return Err(StoreError::Postgres("the listener connection closed".into())),
                Some(seq) if Some(seq) <= *applied => {}
                Some(_) => catch_up(state, listener, applied).await?,
            },
            _ = tick.tick() => catch_up(state, listener, applied).await?,
            _ = stop.changed() => return Ok(()),
        }
        cluster.mark_ok();
        // Failed closed while an apply was slow (the database answered late, not never): the
        // feed is caught up again, so the replica opens again.
        reopen(cluster, state);
    }
}

/// Accepts sessions again (the feed has caught up).
fn reopen(cluster: &Cluster, state: &AppState) {
    if !cluster.0.accepting.swap(true, Ordering::SeqCst) {
        state.metrics.accepting.set(1);
        tracing::info!(replica = %cluster.replica_id(), "accepting delegate sessions (change feed caught up)");
    }
}

/// Applies every row after `applied`, in order, advancing `applied` past each one applied.
async fn catch_up(
    state: &AppState,
    listener: &Listener,
    applied: &mut Option<i64>,
) -> Result<(), StoreError> {
    loop {
        let after = applied.unwrap_or(0);
        let rows = listener.changes_after(after, BATCH).await?;
        let Some(last) = rows.last().map(|r| r.seq) else { return Ok(()) };
        if rows.first().is_some_and(|r| r.seq != after + 1) {
            // A hole: rows this replica never saw are gone (pruned). Whatever they said, the
            // tables say now.
            tracing::warn!(
                applied = after,
                "change log has a hole after this replica's position; re-reading the state"
            );
            apply::resync(state).await?;
        }
        for row in rows {
            if row.origin != state.cluster.replica_id() {
                match row.change {
                    Some(change) => {
                        apply::apply(state, change).await?;
                        state.metrics.changes_applied.inc();
                    }
                    // A kind this version does not know (a newer replica's, during a rolling
                    // upgrade) may have changed a token: the handshake's cache forgets them all.
                    None => state.store.token_cache().invalidate(),
                }
            }
            *applied = Some(row.seq);
        }
        if last - after < i64::from(BATCH) {
            return Ok(());
        }
    }
}

/// Fails the replica closed when its feed has been silent for the window: `goodbye` to every
/// session, handshakes refused, `/readyz` failing, until the feed is back and caught up.
pub(super) async fn watchdog(cluster: Cluster, state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let silent = cluster.silent_for();
        if silent < cluster.0.fail_closed {
            continue;
        }
        if cluster.0.accepting.swap(false, Ordering::SeqCst) {
            state.metrics.accepting.set(0);
            let told = state.registry.shutdown_all();
            state.metrics.fail_closed.inc();
            tracing::error!(silent_ms = silent.as_millis() as u64, sessions = told,
                "cannot reach the database: failing closed (goodbye sent to every delegate, handshakes refused, /readyz failing) until the change feed is back");
        }
    }
}
