//! The socket loop of one authenticated session: a thin adapter that carries out what the
//! [`driver`] decides (heartbeats at the manager's interval, WebSocket pings, answers to tasks,
//! rotations) and reports how the session ended (shutdown, fatal revoke, loss, goodbye, or a
//! switch to a session on a rotated token).
use std::time::Instant;

use tether_protocol::Token;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::connection::Connection;
use crate::rotation::{RotationDone, Rotator};
use crate::state::{unix_now, Health, StateDir};

pub mod driver;
pub use driver::Ended;
use driver::{Action, AfterAck, DriverSettings, Event, RotationAck, SessionDriver};

/// How a session ended: as the driver decided, or a switch onto the proven session of the
/// rotated token (which the driver cannot hold: it owns no socket).
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown, a signed revoke, a loss or a goodbye ([`Ended::Switch`] never appears here).
    Ended(Ended),
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

/// Runs `conn` until it ends: carries out the driver's actions and feeds it what the socket,
/// the timer, SIGTERM and the rotator report. The decisions are all in [`driver`].
pub async fn run(conn: Connection, ctx: SessionContext<'_>) -> SessionEnd {
    let SessionContext { rotator, state, started, shutdown, done } = ctx;
    let Connection { mut link, session, welcome, token_id } = conn;
    let settings = DriverSettings {
        heartbeat_secs: welcome.heartbeat_secs,
        apply_mode: rotator.mode().name(),
        process_started: started,
    };
    let mut driver = SessionDriver::new(session, rotator.ledger().clone(), settings, now());
    let health = Health {
        pid: std::process::id(),
        session_id: driver.session_id(),
        token_id,
        heartbeat_secs: driver.heartbeat_every().as_secs(),
        updated_at: 0,
    };
    let mut switch_to = None;
    let ended = 'session: loop {
        while let Some(action) = driver.poll_action() {
            match action {
                Action::Send(bytes) => {
                    if let Err(err) = link.send(bytes).await {
                        driver.handle_event(Event::SendFailed(err), now());
                    }
                }
                Action::Ping => {
                    if let Err(err) = link.ping().await {
                        driver.handle_event(Event::SendFailed(err), now());
                    }
                }
                Action::RefreshHealth => {
                    if let Err(err) = state.write_health(&Health { updated_at: unix_now(), ..health }) {
                        tracing::warn!(error = %err, dir = %state.path().display(), "cannot write the health record");
                    }
                }
                Action::StartRotation(start) => rotator.start(start),
                Action::Close(code) => link.close(code).await,
                Action::End(ended) => break 'session ended,
            }
        }
        let Some(deadline) = driver.poll_timeout() else { break Ended::Lost("the session ended".into()) };
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => driver.handle_event(Event::Shutdown, now()),
            _ = tokio::time::sleep_until(deadline.into()) => driver.handle_timeout(now()),
            Some(done) = done.recv() => {
                let RotationDone { rotation_id, outcome, detail, switch_to: next } = done;
                let after = if next.is_some() { AfterAck::Switch } else { AfterAck::Stay };
                switch_to = next;
                if let Err(ack) = driver.handle_rotation_done(RotationAck { rotation_id, outcome, detail }, after) {
                    tracing::warn!(rotation_id = %ack.rotation_id, "rotation finished after the session ended");
                }
            }
            incoming = link.next() => match incoming {
                Some(Ok(Message::Binary(bytes))) => driver.handle_frame(&bytes, now()),
                other => driver.handle_event(event_of(other), now()),
            },
        }
    };
    state.clear_health();
    session_end(ended, switch_to)
}

/// The driver's event for what the WebSocket gave besides a binary message.
fn event_of(incoming: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Event {
    match incoming {
        Some(Ok(Message::Text(_))) => Event::Text,
        Some(Ok(Message::Close(frame))) => Event::Closed(frame.map(|f| u16::from(f.code))),
        Some(Ok(_)) => Event::Control,
        Some(Err(err)) => Event::Error(err.to_string()),
        None => Event::StreamEnded,
    }
}

/// How the session ended, for the agent; a switch carries the proven session of the new token.
fn session_end(ended: Ended, switch_to: Option<(Token, Connection)>) -> SessionEnd {
    match (ended, switch_to) {
        (Ended::Switch, Some((token, next))) => SessionEnd::Switch(token, Box::new(next)),
        (Ended::Switch, None) => SessionEnd::Ended(Ended::Lost("switched without a proven session".into())),
        (ended, _) => SessionEnd::Ended(ended),
    }
}

/// The time the driver is given: tokio's clock, so `tokio::time::pause()` applies.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
