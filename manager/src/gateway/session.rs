//! The loop of one authenticated session: heartbeats (3 missed intervals close it), rotate
//! acks, task results, and the registry's commands (revoke, rotate, task, disconnect,
//! shutdown). Every frame goes through `ServerSession`; the loop ends on every path.
//!
//! Every write is bounded by `session_write_timeout_secs`: a delegate that stops reading
//! cannot wedge its task (which must stay free to see heartbeat deadlines and revokes); a
//! session whose write does not complete in time is dropped without a close handshake.
//! Leaving the registry, the sessions gauge and the rotation bookkeeping run from a drop
//! guard ([`SessionGuard`]), so they also run when the task is cancelled or a panic unwinds
//! through it.
use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use tether_protocol::error::close;
use tether_protocol::message::{C2s, GoodbyeReason, RevokedReason, S2c, TaskKind};
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use crate::clock::now_unix;
use crate::keys;
use crate::registry::{SessionCommand, SessionInfo, TaskReply};
use crate::rotation;
use crate::state::AppState;

use super::handshake::Authenticated;
use super::{close_within, is_too_big};

/// Most tasks waiting for a reply per session.
const MAX_PENDING_TASKS: usize = 64;

enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer is gone or closed.
    Gone,
    /// A write did not complete within the write timeout: drop the connection.
    Stalled,
}

/// Forgets a session when dropped, however its task ends: normally, cancelled, or unwound by
/// a panic (the release profile unwinds, so tokio contains a panic to its task, and this
/// guard leaves nothing behind).
#[derive(Debug)]
pub struct SessionGuard<'a> {
    state: &'a AppState,
    /// The session.
    pub info: SessionInfo,
}

impl<'a> SessionGuard<'a> {
    /// Counts the session in the sessions gauge until the guard is dropped. The session is
    /// already in the registry (from the handshake).
    pub fn new(state: &'a AppState, info: SessionInfo) -> Self {
        state.metrics.sessions.inc();
        Self { state, info }
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.state.registry.remove(self.info.session_id);
        self.state.metrics.sessions.dec();
        rotation::on_session_end(self.state, &self.info);
    }
}

/// Buffers (`flush: false`) or sends one frame within `within`.
async fn write(socket: &mut WebSocket, frame: Vec<u8>, flush: bool, within: Duration) -> Result<(), End> {
    let message = Message::Binary(frame.into());
    let written = match flush {
        true => tokio::time::timeout(within, socket.send(message)).await,
        false => tokio::time::timeout(within, socket.feed(message)).await,
    };
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Stalled),
    }
}

/// Runs the session until it ends, then forgets it.
pub async fn run(state: &AppState, auth: Authenticated) {
    let Authenticated { mut socket, mut session, info, mut commands, expires_at } = auth;
    let guard = SessionGuard::new(state, info);
    let info = &guard.info;
    let session_id = info.session_id;
    let write_timeout = Duration::from_secs(state.config.session_write_timeout_secs);
    if state.is_draining() {
        // Registered after the shutdown broadcast: say goodbye like the others.
        state.registry.send(session_id, SessionCommand::Shutdown);
    }
    rotation::on_authenticated(state, info).await;

    let interval = Duration::from_secs(state.config.heartbeat_secs);
    let mut heartbeat_deadline = Instant::now() + interval * 3;
    let expiry = expires_at.map(|at| Instant::now() + Duration::from_secs(at.saturating_sub(now_unix())));
    let mut tasks: HashMap<Uuid, oneshot::Sender<TaskReply>> = HashMap::new();

    let end = loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(bytes))) => match session.decode(&bytes) {
                    Ok(C2s::Heartbeat { .. }) => {
                        heartbeat_deadline = Instant::now() + interval * 3;
                        state.registry.heartbeat(session_id, now_unix());
                    }
                    Ok(C2s::RotateAck { rotation_id, outcome, detail, .. }) => {
                        heartbeat_deadline = Instant::now() + interval * 3;
                        rotation::on_ack(state, info, rotation_id, outcome, detail).await;
                    }
                    Ok(C2s::TaskResult { task_id, ok, payload, .. }) => {
                        heartbeat_deadline = Instant::now() + interval * 3;
                        if let Some(reply) = tasks.remove(&task_id) {
                            let _ = reply.send(TaskReply { ok, payload });
                        }
                    }
                    Ok(C2s::Goodbye { .. }) => break End::Close(close::NORMAL, "goodbye"),
                    Ok(_) => break End::Close(close::PROTOCOL, "unexpected message"),
                    Err(e) => {
                        tracing::info!(%session_id, error = %e, "session protocol error");
                        break End::Close(e.close_code(), "protocol error");
                    }
                },
                Some(Ok(Message::Text(_))) => break End::Close(close::PROTOCOL, "binary frames only"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break End::Gone,
                Some(Err(e)) if is_too_big(&e) => break End::Close(close::TOO_BIG, "frame too big"),
                Some(Err(_)) => break End::Gone,
            },
            cmd = commands.recv() => match cmd {
                Some(SessionCommand::Revoke { reason, message }) => {
                    let frame = session.encode(S2c::Revoked { seq: 0, token_id: info.token_id, reason, message });
                    // Counted closed whether or not the frame can be written: the session ends
                    // here either way.
                    state.metrics.sessions_revoked.inc();
                    // Buffered: the close that follows flushes both in one write.
                    if let Err(end) = write(&mut socket, frame, false, write_timeout).await {
                        break end;
                    }
                    break match reason {
                        RevokedReason::Expired => End::Close(close::EXPIRED, "token expired"),
                        _ => End::Close(close::REVOKED, "token revoked"),
                    };
                }
                Some(SessionCommand::Rotate { rotation_id, token, valid_until }) => {
                    let sealed_token = session.seal_token(rotation_id, keys::random12(), &token);
                    let frame = session.encode(S2c::Rotate {
                        seq: 0,
                        rotation_id,
                        token_id: token.id(),
                        sealed_token,
                        old_token_valid_until: valid_until,
                    });
                    if let Err(end) = write(&mut socket, frame, true, write_timeout).await {
                        break end;
                    }
                }
                Some(SessionCommand::Task { task_id, payload, reply }) => {
                    if tasks.len() >= MAX_PENDING_TASKS {
                        tasks.retain(|_, tx| !tx.is_closed());
                    }
                    if tasks.len() >= MAX_PENDING_TASKS {
                        continue; // dropping `reply` tells the caller
                    }
                    tasks.insert(task_id, reply);
                    let frame = session.encode(S2c::Task { seq: 0, task_id, kind: TaskKind::Echo, payload });
                    if let Err(end) = write(&mut socket, frame, true, write_timeout).await {
                        break end;
                    }
                }
                Some(SessionCommand::Disconnect) => {
                    let frame = session.encode(S2c::Goodbye { seq: 0, reason: GoodbyeReason::Disconnected });
                    // Buffered: the close that follows flushes both in one write.
                    if let Err(end) = write(&mut socket, frame, false, write_timeout).await {
                        break end;
                    }
                    break End::Close(close::NORMAL, "disconnected by an operator");
                }
                Some(SessionCommand::Shutdown) | None => {
                    let frame = session.encode(S2c::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown });
                    // Buffered: the close that follows flushes both in one write.
                    if let Err(end) = write(&mut socket, frame, false, write_timeout).await {
                        break end;
                    }
                    break End::Close(close::GOING_AWAY, "manager shutting down");
                }
            },
            _ = tokio::time::sleep_until(heartbeat_deadline) => {
                state.metrics.heartbeat_timeouts.inc();
                tracing::info!(%session_id, "closing session after 3 missed heartbeats");
                break End::Close(close::PROTOCOL, "missed heartbeats");
            }
            _ = sleep_until_opt(expiry) => {
                let frame = session.encode(S2c::Revoked {
                    seq: 0,
                    token_id: info.token_id,
                    reason: RevokedReason::Expired,
                    message: "this delegate's token expired; create a new token and restart the delegate with it".into(),
                });
                state.metrics.sessions_revoked.inc();
                // Buffered: the close that follows flushes both in one write.
                if let Err(end) = write(&mut socket, frame, false, write_timeout).await {
                    break end;
                }
                break End::Close(close::EXPIRED, "token expired");
            }
        }
    };
    let token_id = info.token_id;
    // Forgotten before the close handshake, so a revoke or a listing never waits for it.
    drop(guard);
    match end {
        End::Close(code, reason) => close_within(&mut socket, code, reason, write_timeout).await,
        End::Gone => {}
        End::Stalled => {
            state.metrics.session_write_timeouts.inc();
            tracing::info!(%session_id, %token_id, timeout_secs = write_timeout.as_secs(),
                "dropping a session that could not be written to in time (the delegate stopped reading)");
        }
    }
    tracing::info!(%session_id, %token_id, "delegate disconnected");
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeConfig;
    use crate::datadir::DataDir;

    #[test]
    fn the_guard_forgets_a_session_whose_task_panics() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let data = DataDir::open(dir.path()).unwrap();
            let state = AppState::new(ServeConfig::for_data_dir(dir.path()), &data);
            let info = SessionInfo {
                session_id: Uuid::new_v4(),
                account_id: "acme".into(),
                token_id: Uuid::new_v4(),
                name: "d".into(),
                instance: Uuid::new_v4(),
                host: "h".into(),
                version: "0".into(),
                ip: std::net::IpAddr::from([127, 0, 0, 1]),
                connected_at: 1,
                last_heartbeat: 1,
            };
            let commands = state.registry.insert(info.clone());
            let task_state = state.clone();
            let task = tokio::spawn(async move {
                let _guard = SessionGuard::new(&task_state, info);
                let _commands = commands;
                assert_eq!((task_state.registry.len(), task_state.metrics.sessions.get()), (1, 1));
                tokio::task::yield_now().await;
                panic!("a bug in one session task");
            });
            let err = task.await.expect_err("the task panicked");
            assert!(err.is_panic());
            assert!(state.registry.is_empty(), "the registry forgot the session");
            assert_eq!(state.metrics.sessions.get(), 0, "the sessions gauge is back to 0");
        });
    }
}
