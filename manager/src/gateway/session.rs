//! The loop of one authenticated session: heartbeats (3 missed intervals close it), rotate
//! acks, task results, and the registry's commands (revoke, rotate, task, disconnect,
//! shutdown). Every frame goes through `ServerSession`; the loop ends on every path.
use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::SinkExt;
use tether_protocol::error::close;
use tether_protocol::message::{C2s, GoodbyeReason, RevokedReason, S2c, TaskKind};
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use crate::clock::now_unix;
use crate::keys;
use crate::registry::{SessionCommand, TaskReply};
use crate::rotation;
use crate::state::AppState;

use super::handshake::Authenticated;
use super::{close as close_ws, is_too_big};

/// Most tasks waiting for a reply per session.
const MAX_PENDING_TASKS: usize = 64;

enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer is gone or closed.
    Gone,
}

/// Runs the session until it ends, then forgets it.
pub async fn run(state: &AppState, auth: Authenticated) {
    let Authenticated { mut socket, mut session, info, mut commands, expires_at } = auth;
    let session_id = info.session_id;
    state.metrics.sessions.inc();
    if state.is_draining() {
        // Registered after the shutdown broadcast: say goodbye like the others.
        state.registry.send(session_id, SessionCommand::Shutdown);
    }
    rotation::on_authenticated(state, &info).await;

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
                        rotation::on_ack(state, &info, rotation_id, outcome, detail).await;
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
                    // Buffered: the close that follows flushes both in one write.
                    let _ = socket.feed(Message::Binary(frame.into())).await;
                    state.metrics.sessions_revoked.inc();
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
                    if socket.send(Message::Binary(frame.into())).await.is_err() {
                        break End::Gone;
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
                    if socket.send(Message::Binary(frame.into())).await.is_err() {
                        break End::Gone;
                    }
                }
                Some(SessionCommand::Disconnect) => {
                    let frame = session.encode(S2c::Goodbye { seq: 0, reason: GoodbyeReason::Disconnected });
                    // Buffered: the close that follows flushes both in one write.
                    let _ = socket.feed(Message::Binary(frame.into())).await;
                    break End::Close(close::NORMAL, "disconnected by an operator");
                }
                Some(SessionCommand::Shutdown) | None => {
                    let frame = session.encode(S2c::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown });
                    // Buffered: the close that follows flushes both in one write.
                    let _ = socket.feed(Message::Binary(frame.into())).await;
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
                // Buffered: the close that follows flushes both in one write.
                    let _ = socket.feed(Message::Binary(frame.into())).await;
                state.metrics.sessions_revoked.inc();
                break End::Close(close::EXPIRED, "token expired");
            }
        }
    };
    state.registry.remove(session_id);
    state.metrics.sessions.dec();
    rotation::on_session_end(state, &info);
    if let End::Close(code, reason) = end {
        close_ws(&mut socket, code, reason).await;
    }
    tracing::info!(%session_id, token_id = %info.token_id, "delegate disconnected");
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
