//! The socket side of one authenticated session: a thin adapter that reads the socket and the
//! registry's command mailbox, sleeps until the driver's next deadline, and performs the
//! driver's actions. Every protocol decision is in [`super::driver`].
//!
//! Every write is bounded by `session_write_timeout_secs`: a delegate that stops reading
//! cannot wedge its task (which must stay free to see heartbeat deadlines and revokes); a
//! session whose write does not complete in time is dropped without a close handshake.
//! Leaving the registry, the sessions gauge and the rotation bookkeeping run from a drop
//! guard ([`SessionGuard`]), taken when the handshake registers the session, so they also run
//! when the handshake fails after that, when the task is cancelled, or when a panic unwinds.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use tokio::time::Instant;

use crate::clock::now_unix;
use crate::registry::{CapHit, Caps, Commands, SessionCommand, SessionInfo};
use crate::rotation;
use crate::state::AppState;

use super::driver::{Action, Driver, SocketEvent};
use super::handshake::Authenticated;
use super::{await_peer_close, is_too_big, send_close};

/// Longest a session that sent its final frames waits for the other sessions of a revocation
/// to send theirs before its own teardown ([`crate::registry::final_frames`]).
const TEARDOWN_DEFER: Duration = Duration::from_secs(1);

/// A registered session, forgotten when dropped, however its task ends: a refused or failed
/// handshake, a normal end, cancellation, or a panic unwinding (the release profile unwinds,
/// so tokio contains a panic to its task, and this guard leaves nothing behind).
#[derive(Debug)]
pub struct SessionGuard<'a> {
    state: &'a AppState,
    /// The session (shared with its registry entry).
    pub info: Arc<SessionInfo>,
}

impl<'a> SessionGuard<'a> {
    /// Puts the session in the registry and counts it in the sessions gauge until the guard
    /// is dropped; returns the guard and the receiver of the session's commands.
    pub fn register(state: &'a AppState, info: SessionInfo) -> (Self, Commands) {
        let info = Arc::new(info);
        let commands = state.registry.insert(info.clone());
        state.metrics.sessions.inc();
        (Self { state, info }, commands)
    }

    /// [`Self::register`] unless that would exceed one of `caps` (checked and counted in one
    /// step, so concurrent handshakes cannot overshoot them); which cap is full otherwise.
    pub fn try_register(
        state: &'a AppState,
        info: SessionInfo,
        caps: &Caps,
    ) -> Result<(Self, Commands), CapHit> {
        let info = Arc::new(info);
        let commands = state.registry.try_insert(info.clone(), caps)?;
        state.metrics.sessions.inc();
        Ok((Self { state, info }, commands))
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        // Out of the registry first: the rotation woken below checks it.
        self.state.registry.remove(self.info.session_id);
        self.state.metrics.sessions.dec();
        rotation::on_session_end(self.state, &self.info);
    }
}

/// How the session ended, for the socket.
enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer is gone or closed.
    Gone,
    /// A write did not complete within the write timeout: drop the connection.
    Stalled,
}

impl End {
    /// Why the session ended, for its last log line, and the close code sent, if one is.
    fn why(&self) -> (&'static str, Option<u16>) {
        match self {
            End::Close(code, reason) => (reason, Some(*code)),
            End::Gone => ("the delegate closed the connection, or it dropped", None),
            End::Stalled => ("write timeout: the delegate stopped reading", None),
        }
    }
}

/// Runs the session until it ends, then forgets it.
/// `auth` comes boxed: an `async fn` keeps its arguments' storage for its whole life, and
/// this future is what every idle session keeps (see the size test below).
pub async fn run(state: &AppState, auth: Box<Authenticated<'_>>) {
    let Authenticated { mut socket, session, guard, mut commands, expires_at } = *auth;
    let (info, write_timeout) = (&guard.info, Duration::from_secs(state.config.session_write_timeout_secs));
    if state.is_draining() {
        // Registered after the shutdown broadcast: say goodbye like the others.
        state.registry.send(info.session_id, SessionCommand::Shutdown);
    }
    let now = || Instant::now().into_std();
    // This future is what every idle session keeps, so its layout matters (see
    // `gateway::tests`): the driver lives in this block only, so the close below does not
    // keep it; the protocol session moves into it before the first `.await`, so the future
    // never holds both; and the writes and rotation calls are boxed (a write's future is
    // ~300 bytes, the rotation calls' store futures kilobytes).
    let end = {
        let heartbeat = Duration::from_secs(state.config.heartbeat_secs);
        let mut driver = Driver::new(session, info.token_id, heartbeat, expires_at, now(), now_unix());
        Box::pin(rotation::on_authenticated(state, info)).await;
        'session: loop {
            loop {
                // Nothing of an action is kept across an await but a boxed future: the
                // future every idle session keeps is as large as its largest await point.
                let Some(action) = driver.poll_action() else { break };
                let end = match perform(state, info, action) {
                    Performed::Now(end) => end,
                    Performed::Wait(waits) => {
                        Box::pin(finish(state, info, &mut socket, waits, write_timeout)).await
                    }
                };
                if let Some(end) = end {
                    break 'session end;
                }
            }
            let deadline = driver.poll_timeout().map(Instant::from_std);
            tokio::select! {
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Binary(bytes))) => driver.handle_frame(&bytes, now()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Text(_))) => driver.handle_socket(SocketEvent::Text),
                    Some(Err(e)) if is_too_big(&e) => driver.handle_socket(SocketEvent::TooBig),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => driver.handle_socket(SocketEvent::Closed),
                },
                // `None`: the registry forgot the session; leave as at a shutdown.
                cmd = commands.recv() => driver.handle_command(cmd.unwrap_or(SessionCommand::Shutdown), now()),
                _ = sleep_until_opt(deadline) => driver.handle_timeout(now()),
            }
        }
    };
    let (session_id, token_id) = (info.session_id, info.token_id);
    let (account, delegate) = (info.account_id.clone(), info.name.clone());
    let (reason, close_code) = end.why();
    // Forgotten before the close handshake, so a revoke or a listing never waits for it; its
    // socket still counts against the total cap until it is dropped below.
    let closing = state.registry.closing();
    drop(guard);
    match end {
        // Boxed: at most once per session, and inline it would size every idle session.
        End::Close(code, reason) => {
            Box::pin(async {
                let sent = send_close(&mut socket, code, reason, write_timeout).await;
                let revoked = commands.final_frames_sent();
                if sent {
                    if revoked {
                        // The teardown (the peer's close, the socket's) after every revoked
                        // delegate of the fan-out has been told, not between them.
                        commands.others_told(TEARDOWN_DEFER).await;
                    }
                    await_peer_close(&mut socket).await;
                }
            })
            .await
        }
        End::Gone => {}
        End::Stalled => {
            state.metrics.session_write_timeouts.inc();
            tracing::info!(%session_id, %token_id, timeout_secs = write_timeout.as_secs(),
                "dropping a session that could not be written to in time (the delegate stopped reading)");
        }
    }
    drop(socket);
    drop(closing);
    // `close_code` is left out (not `None`) when the socket was not closed with one.
    tracing::info!(%session_id, %token_id, %account, %delegate, reason, close_code, "delegate disconnected");
}

/// What is left to do of an action after [`perform`].
enum Performed {
    /// Nothing to wait for; the session ends if an [`End`] is given.
    Now(Option<End>),
    /// Something to wait for, in [`finish`].
    Wait(Waits),
}

/// The part of an action that needs waiting.
enum Waits {
    /// Write this frame, flushing it (`true`) or buffering it.
    Write(Vec<u8>, bool),
    /// Hand a rotate ack to the rotation service.
    Ack { rotation_id: uuid::Uuid, outcome: tether_protocol::message::RotateOutcome, detail: String },
}

/// Performs what of one action needs no waiting, and says what is left.
fn perform(state: &AppState, info: &SessionInfo, action: Action) -> Performed {
    match action {
        Action::Send(frame) => Performed::Wait(Waits::Write(frame, true)),
        Action::Feed(frame) => Performed::Wait(Waits::Write(frame, false)),
        Action::Close(code, reason) => Performed::Now(Some(End::Close(code, reason))),
        Action::Ended => Performed::Now(Some(End::Gone)),
        Action::RecordHeartbeat => {
            state.registry.heartbeat(info.session_id, now_unix());
            Performed::Now(None)
        }
        Action::RotateAck { rotation_id, outcome, detail } => {
            Performed::Wait(Waits::Ack { rotation_id, outcome, detail })
        }
        Action::TaskReply { reply, result } => {
            let _ = reply.send(result); // the caller may have stopped waiting
            Performed::Now(None)
        }
        Action::CountRevoked => {
            state.metrics.sessions_revoked.inc();
            Performed::Now(None)
        }
        Action::CountHeartbeatTimeout => {
            state.metrics.heartbeat_timeouts.inc();
            Performed::Now(None)
        }
    }
}

/// Does what [`perform`] left that needs waiting (a write, a rotation ack); how the session
/// ends, if it does.
async fn finish(
    state: &AppState,
    info: &SessionInfo,
    socket: &mut WebSocket,
    waits: Waits,
    write_timeout: Duration,
) -> Option<End> {
    match waits {
        Waits::Write(frame, flush) => write(socket, frame, flush, write_timeout).await.err(),
        Waits::Ack { rotation_id, outcome, detail } => {
            rotation::on_ack(state, info, rotation_id, outcome, detail).await;
            None
        }
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
    use uuid::Uuid;

    pub(crate) fn info() -> SessionInfo {
        SessionInfo::sample(Uuid::new_v4())
    }

    #[test]
    fn the_guard_forgets_a_session_whose_task_panics() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let data = DataDir::open(dir.path()).unwrap();
            let state = AppState::new(ServeConfig::for_data_dir(dir.path()), &data);
            let task_state = state.clone();
            let task = tokio::spawn(async move {
                let (_guard, _commands) = SessionGuard::register(&task_state, info());
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
