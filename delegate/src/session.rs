//! Running one authenticated session: heartbeats at the manager's interval, WebSocket pings,
//! answers to tasks, rotations, and the ways a session ends (shutdown, fatal revoke, loss,
//! goodbye, or a switch to a session on a rotated token).
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tether_protocol::message::{
    C2s, GoodbyeReason, HeartbeatStatus, RevokedReason, RotateOutcome, S2c, TaskKind,
};
use tether_protocol::Token;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::connection::{Connection, Ws};
use crate::docker::container_id::short_id;
use crate::rotation::{RotateRequest, RotationDone, Rotator};
use crate::state::{unix_now, Health, StateDir};

/// Limit for one write to the manager.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for the closing handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(800);

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// SIGTERM: goodbye sent, connection closed.
    Shutdown,
    /// A signed `revoked` (or expiry) for the session's token.
    Fatal {
        /// Revoked or expired.
        reason: RevokedReason,
        /// The manager's explanation.
        message: String,
    },
    /// The connection was lost or broken; reconnect with backoff.
    Lost(String),
    /// The manager said goodbye; reconnect soon, with jitter.
    Goodbye(GoodbyeReason),
    /// A rotation was applied in place: continue on this token and session.
    Switch(Token, Box<Connection>),
}

/// What a session needs from the agent.
#[derive(Debug)]
pub struct SessionContext<'a> {
    /// Rotation handling.
    pub rotator: &'a Rotator,
    /// Where the health record goes.
    pub state: &'a StateDir,
    /// When the process started.
    pub started: Instant,
    /// SIGTERM.
    pub shutdown: &'a mut watch::Receiver<bool>,
    /// Finished rotations.
    pub done: &'a mut mpsc::Receiver<RotationDone>,
}

/// Sends a message with a time limit.
async fn send(ws: &mut Ws, bytes: Vec<u8>) -> Result<(), String> {
    match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::Binary(bytes.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("send failed: {err}")),
        Err(_) => Err("send timed out".into()),
    }
}

/// Sends a close frame and waits briefly for the manager's.
pub async fn close(ws: &mut Ws, code: u16) {
    let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
    let closing = async {
        let _ = ws.close(Some(frame)).await;
        // Drain until the peer's close or the end; bounded by the timeout below.
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

/// Says goodbye and closes a session we do not use (e.g. the proof of a rotated token).
pub async fn close_quietly(mut conn: Connection) {
    let bytes = conn.session.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown });
    let _ = send(&mut conn.ws, bytes).await;
    close(&mut conn.ws, tether_protocol::error::close::NORMAL).await;
}

fn ping_interval(heartbeat: Duration) -> Duration {
    heartbeat.clamp(Duration::from_secs(1), Duration::from_secs(15))
}

/// Runs `conn` until it ends.
pub async fn run(mut conn: Connection, ctx: SessionContext<'_>) -> SessionEnd {
    let SessionContext { rotator, state, started, shutdown, done } = ctx;
    let heartbeat_every = Duration::from_secs(conn.welcome.heartbeat_secs.clamp(1, 3600));
    let ping_every = ping_interval(heartbeat_every);
    let idle_limit = ping_every * 3 + Duration::from_secs(5);
    let session_id = conn.session.session_id();
    let token_id = conn.token_id;
    let health = |now: u64| Health {
        pid: std::process::id(),
        session_id,
        token_id,
        heartbeat_secs: heartbeat_every.as_secs(),
        updated_at: now,
    };
    if let Err(err) = state.write_health(&health(unix_now())) {
        tracing::warn!(error = %err, dir = %state.path().display(), "cannot write the health record");
    }
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + heartbeat_every, heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_received = Instant::now();

    let end = loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => {
                if let Some(pending) = rotator.take_pending() {
                    tracing::info!(rotation_id = %pending.rotation_id, successor = %short_id(&pending.successor_id),
                        "stopped by the successor container: rotation applied");
                    let ack = conn.session.encode(C2s::RotateAck {
                        seq: 0,
                        rotation_id: pending.rotation_id,
                        outcome: RotateOutcome::Applied,
                        detail: format!("replaced by container {}", short_id(&pending.successor_id)),
                    });
                    let _ = send(&mut conn.ws, ack).await;
                    let bye = conn.session.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Replaced });
                    let _ = send(&mut conn.ws, bye).await;
                } else {
                    let bye = conn.session.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown });
                    let _ = send(&mut conn.ws, bye).await;
                }
                close(&mut conn.ws, tether_protocol::error::close::GOING_AWAY).await;
                break SessionEnd::Shutdown;
            }
            _ = heartbeat.tick() => {
                let status = HeartbeatStatus {
                    uptime_secs: started.elapsed().as_secs(),
                    apply_mode: Some(rotator.mode().name().to_owned()),
                };
                let bytes = conn.session.encode(C2s::Heartbeat { seq: 0, status });
                if let Err(err) = send(&mut conn.ws, bytes).await {
                    break SessionEnd::Lost(err);
                }
                if let Err(err) = state.write_health(&health(unix_now())) {
                    tracing::warn!(error = %err, "cannot refresh the health record");
                }
            }
            _ = ping.tick() => {
                if last_received.elapsed() > idle_limit {
                    break SessionEnd::Lost(format!("nothing received for {} s", idle_limit.as_secs()));
                }
                match tokio::time::timeout(SEND_TIMEOUT, conn.ws.send(Message::Ping(Vec::new().into()))).await {
                    Ok(Ok(())) => {}
                    _ => break SessionEnd::Lost("ping failed".into()),
                }
            }
            Some(done) = done.recv() => {
                tracing::info!(rotation_id = %done.rotation_id, outcome = ?done.outcome, detail = %done.detail, "acknowledging rotation");
                let ack = conn.session.encode(C2s::RotateAck {
                    seq: 0,
                    rotation_id: done.rotation_id,
                    outcome: done.outcome,
                    detail: done.detail,
                });
                let sent = send(&mut conn.ws, ack).await;
                if let Some((token, next)) = done.switch_to {
                    let bye = conn.session.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Replaced });
                    let _ = send(&mut conn.ws, bye).await;
                    close(&mut conn.ws, tether_protocol::error::close::NORMAL).await;
                    break SessionEnd::Switch(token, Box::new(next));
                }
                if let Err(err) = sent {
                    break SessionEnd::Lost(err);
                }
            }
            incoming = conn.ws.next() => {
                last_received = Instant::now();
                let bytes = match incoming {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Text(_))) => {
                        close(&mut conn.ws, tether_protocol::error::close::PROTOCOL).await;
                        break SessionEnd::Lost("the manager sent a text message".into());
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map(|f| u16::from(f.code));
                        break SessionEnd::Lost(format!("the manager closed the connection (code {code:?})"));
                    }
                    Some(Err(err)) => break SessionEnd::Lost(format!("connection error: {err}")),
                    None => break SessionEnd::Lost("connection ended".into()),
                };
                let message = match conn.session.decode(&bytes) {
                    Ok(message) => message,
                    Err(err) => {
                        tracing::warn!(error = %err, "protocol violation from the manager; closing");
                        close(&mut conn.ws, err.close_code()).await;
                        break SessionEnd::Lost(format!("protocol error: {err}"));
                    }
                };
                match message {
                    S2c::Task { task_id, kind: TaskKind::Echo, payload, .. } => {
                        let bytes = conn.session.encode(C2s::TaskResult { seq: 0, task_id, ok: true, payload });
                        if let Err(err) = send(&mut conn.ws, bytes).await {
                            break SessionEnd::Lost(err);
                        }
                    }
                    S2c::Rotate { rotation_id, token_id, sealed_token, old_token_valid_until, .. } => {
                        let request = RotateRequest { rotation_id, token_id, sealed_token: &sealed_token, old_token_valid_until };
                        if let Some((outcome, detail)) = rotator.on_rotate(&conn.session, request) {
                            let ack = conn.session.encode(C2s::RotateAck { seq: 0, rotation_id, outcome, detail });
                            if let Err(err) = send(&mut conn.ws, ack).await {
                                break SessionEnd::Lost(err);
                            }
                        }
                    }
                    S2c::Revoked { reason, message, .. } => {
                        close(&mut conn.ws, revoked_close_code(reason)).await;
                        break SessionEnd::Fatal { reason, message };
                    }
                    S2c::Goodbye { reason, .. } => {
                        close(&mut conn.ws, tether_protocol::error::close::NORMAL).await;
                        break SessionEnd::Goodbye(reason);
                    }
                    other => tracing::debug!(message = ?other, "ignoring a message this version does not handle"),
                }
            }
        }
    };
    state.clear_health();
    end
}

fn revoked_close_code(reason: RevokedReason) -> u16 {
    match reason {
        RevokedReason::Revoked => tether_protocol::error::close::REVOKED,
        RevokedReason::Expired => tether_protocol::error::close::EXPIRED,
    }
}
