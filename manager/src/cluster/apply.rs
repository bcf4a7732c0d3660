//! Applying one change of the log to this replica's live sessions. Each change names what
//! changed; the current state is read from the tables, so applying a change late, or after a
//! later one, leaves the sessions as the tables say.
use tether_protocol::message::RevokedReason;

use crate::registry::SessionCommand;
use crate::state::AppState;
use crate::store::cluster::Change;
use crate::store::tokens::TokenState;
use crate::store::{StoreError, StoreOps};

/// Applies `change` to the sessions of this replica. An error leaves it unapplied (the feed
/// reconnects and applies it again).
pub(super) async fn apply(state: &AppState, change: Change) -> Result<(), StoreError> {
    match change {
        Change::Token(_) | Change::RotationStarted(_) | Change::RotationFinished(_) => {
            // A token changed on another replica: the handshake's cache forgets it before
            // the sessions are told (see `store::token_cache`).
            state.store.token_cache().invalidate();
        }
        Change::Disconnect(_) | Change::Ping(_) => {}
    }
    match change {
        Change::Token(id) => {
            let now = crate::clock::now_unix();
            let reason = match state.store.token(id).await? {
                None => Some(RevokedReason::Revoked),
                Some(row) => match row.state(now) {
                    TokenState::Revoked => Some(RevokedReason::Revoked),
                    TokenState::Expired => Some(RevokedReason::Expired),
                    _ => None,
                },
            };
            if let Some(reason) = reason {
                let kicked = state.registry.kick(id, reason);
                if kicked > 0 {
                    state.metrics.remote_revocations.inc_by(kicked as u64);
                    tracing::info!(token_id = %id, sessions = kicked, "token revoked on another replica; its sessions here closed");
                }
            }
        }
        Change::RotationStarted(id) => state.rotations.adopt(id).await?,
        Change::RotationFinished(id) => state.rotations.forget(id),
        Change::Disconnect(session) => {
            if state.registry.send(session, SessionCommand::Disconnect) {
                tracing::info!(session_id = %session, "disconnect asked through another replica");
            }
        }
        Change::Ping(id) => ping(state, id).await?,
    }
    Ok(())
}

/// A ping asked through another replica: if this replica holds the session, sends the echo
/// task and writes the delegate's answer into the request's row (in a task of its own, so a
/// slow delegate does not hold the feed up).
async fn ping(state: &AppState, id: uuid::Uuid) -> Result<(), StoreError> {
    let Some(pg) = state.cluster.postgres().cloned() else { return Ok(()) };
    let Some((session, payload)) = pg.ping_request(id).await? else { return Ok(()) };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !state
        .registry
        .send(session, SessionCommand::Task { task_id: uuid::Uuid::new_v4(), payload, reply: tx })
    {
        return Ok(());
    }
    tokio::spawn(async move {
        if let Ok(Ok(reply)) = tokio::time::timeout(crate::api::delegates::PING_TIMEOUT, rx).await {
            if let Err(e) = pg.answer_ping(id, reply.ok, &reply.payload).await {
                tracing::warn!(ping = %id, error = %e, "cannot record a ping's answer");
            }
        }
    });
    Ok(())
}

/// Re-reads what the log would have said: every live session's token, and the unfinished
/// rotations (after the log was pruned past this replica's position).
pub(super) async fn resync(state: &AppState) -> Result<(), StoreError> {
    // Whatever the log held since this replica last read it, the cache may predate it.
    state.store.token_cache().invalidate();
    let tokens: std::collections::HashSet<_> =
        state.registry.list(None).into_iter().map(|s| s.token_id).collect();
    for id in tokens {
        apply(state, Change::Token(id)).await?;
    }
    state.rotations.resume_missing().await?;
    Ok(())
}
