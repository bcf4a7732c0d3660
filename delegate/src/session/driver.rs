//! The protocol decisions of one session, without sockets or clocks (the quinn-proto shape):
//! frames, transport events and timeouts go in with the time they happened, [`Action`]s come
//! out through [`SessionDriver::poll_action`], and [`SessionDriver::poll_timeout`] says when
//! to call [`SessionDriver::handle_timeout`] next. The socket loop in [`super`] only carries
//! them out, so heartbeats, idle loss, revokes, goodbyes and rotations are tested with plain
//! values.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tether_protocol::error::close;
use tether_protocol::message::{
    C2s, GoodbyeReason, HeartbeatStatus, RevokedReason, RotateOutcome, S2c, TaskKind,
};
use tether_protocol::session::ClientSession;
use uuid::Uuid;

use crate::docker::container_id::short_id;
use crate::rotation::{Admission, Ledger, RotateRequest, RotationStart};

/// Shortest and longest interval between WebSocket pings.
const PING_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(15));

/// Fixed settings of a session.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// The manager's `heartbeat_secs` from the welcome (clamped to 1..=3600).
    pub heartbeat_secs: u64,
    /// The apply mode's name, reported in heartbeats.
    pub apply_mode: &'static str,
    /// When the process started (uptime in heartbeats).
    pub process_started: Instant,
}

/// Something the socket loop must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Send this signed frame; report a failure as [`Event::SendFailed`].
    Send(Vec<u8>),
    /// Send a WebSocket ping; report a failure as [`Event::SendFailed`].
    Ping,
    /// Rewrite the health record (at the start and after each heartbeat).
    RefreshHealth,
    /// Hand this rotation to the rotator; its result comes back as [`Event::RotationDone`].
    StartRotation(RotationStart),
    /// Close the WebSocket with this code.
    Close(u16),
    /// The session is over; nothing follows.
    End(Ended),
}

/// How a session ended, as the driver decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
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
    /// A rotation was applied in place: continue on the proven session of the new token.
    Switch,
}

/// What comes after the ack of a finished rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAck {
    /// Stay on this session.
    Stay,
    /// Say goodbye and switch to the proven session of the new token (file mode).
    Switch,
}

/// The ack of a finished rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationAck {
    /// The rotation.
    pub rotation_id: Uuid,
    /// The outcome.
    pub outcome: RotateOutcome,
    /// Human-readable detail (never the token).
    pub detail: String,
}

/// What happened besides a binary frame.
#[derive(Debug)]
pub enum Event {
    /// A ping, pong or raw frame arrived: the link is alive.
    Control,
    /// A text message arrived (v1 speaks binary only).
    Text,
    /// The manager closed the connection, with this code if it gave one.
    Closed(Option<u16>),
    /// The connection broke.
    Error(String),
    /// The stream ended.
    StreamEnded,
    /// A send or ping failed.
    SendFailed(String),
    /// SIGTERM.
    Shutdown,
}

/// One session's protocol state: owns the [`ClientSession`] (keys and sequence numbers).
#[derive(Debug)]
pub struct SessionDriver {
    session: ClientSession,
    ledger: Ledger,
    settings: DriverSettings,
    heartbeat_every: Duration,
    ping_every: Duration,
    idle_limit: Duration,
    next_heartbeat: Instant,
    next_ping: Instant,
    last_received: Instant,
    ended: bool,
    actions: VecDeque<Action>,
}

/// The ping interval for a heartbeat interval: the heartbeat, within 1..=15 s.
pub fn ping_interval(heartbeat: Duration) -> Duration {
    heartbeat.clamp(PING_BOUNDS.0, PING_BOUNDS.1)
}

/// The close code for a signed `revoked` of this reason.
pub fn revoked_close_code(reason: RevokedReason) -> u16 {
    match reason {
        RevokedReason::Revoked => close::REVOKED,
        RevokedReason::Expired => close::EXPIRED,
    }
}

impl SessionDriver {
    /// A driver for a session authenticated at `now`; its first action refreshes the health
    /// record.
    pub fn new(session: ClientSession, ledger: Ledger, settings: DriverSettings, now: Instant) -> Self {
        let heartbeat_every = Duration::from_secs(settings.heartbeat_secs.clamp(1, 3600));
        let ping_every = ping_interval(heartbeat_every);
        let mut driver = Self {
            session,
            ledger,
            settings,
            heartbeat_every,
            ping_every,
            idle_limit: ping_every * 3 + Duration::from_secs(5),
            next_heartbeat: now + heartbeat_every,
            next_ping: now + ping_every,
            last_received: now,
            ended: false,
            actions: VecDeque::new(),
        };
        driver.actions.push_back(Action::RefreshHealth);
        driver
    }

    /// The session id.
    pub fn session_id(&self) -> Uuid {
        self.session.session_id()
    }

    /// The heartbeat interval in use.
    pub fn heartbeat_every(&self) -> Duration {
        self.heartbeat_every
    }

    /// Whether the session has ended (an [`Action::End`] was queued).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] is due next: the next heartbeat or ping; `None` once ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.ended).then(|| self.next_heartbeat.min(self.next_ping))
    }

    /// Sends what is due at `now`: the idle check and ping, the heartbeat.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        if now >= self.next_ping {
            if now.saturating_duration_since(self.last_received) > self.idle_limit {
                let limit = self.idle_limit.as_secs();
                self.end(Ended::Lost(format!("nothing received for {limit} s")));
                return;
            }
            self.actions.push_back(Action::Ping);
            self.next_ping = now + self.ping_every;
        }
        if now >= self.next_heartbeat {
            let status = HeartbeatStatus {
                uptime_secs: now.saturating_duration_since(self.settings.process_started).as_secs(),
                apply_mode: Some(self.settings.apply_mode.to_owned()),
            };
            self.send(C2s::Heartbeat { seq: 0, status });
            self.actions.push_back(Action::RefreshHealth);
            self.next_heartbeat = now + self.heartbeat_every;
        }
    }

    /// A binary frame from the manager, received at `now`. A frame that does not verify
    /// (unsigned, forged, replayed, garbage) ends the session as lost, never as fatal.
    pub fn handle_frame(&mut self, bytes: &[u8], now: Instant) {
        if self.ended {
            return;
        }
        self.last_received = now;
        let message = match self.session.decode(bytes) {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(error = %err, "protocol violation from the manager; closing");
                self.close_and_end(err.close_code(), Ended::Lost(format!("protocol error: {err}")));
                return;
            }
        };
        match message {
            S2c::Task { task_id, kind: TaskKind::Echo, payload, .. } => {
                self.send(C2s::TaskResult { seq: 0, task_id, ok: true, payload });
            }
            S2c::Rotate { rotation_id, token_id, sealed_token, old_token_valid_until, .. } => {
                let request = RotateRequest {
                    rotation_id,
                    token_id,
                    sealed_token: &sealed_token,
                    old_token_valid_until,
                };
                match self.ledger.admit(&self.session, request) {
                    Admission::Ack(outcome, detail) => {
                        self.send(C2s::RotateAck { seq: 0, rotation_id, outcome, detail })
                    }
                    Admission::Running => {}
                    Admission::Start(start) => self.actions.push_back(Action::StartRotation(start)),
                }
            }
            S2c::Revoked { reason, message, .. } => {
                self.close_and_end(revoked_close_code(reason), Ended::Fatal { reason, message });
            }
            S2c::Goodbye { reason, .. } => self.close_and_end(close::NORMAL, Ended::Goodbye(reason)),
            other => tracing::debug!(message = ?other, "ignoring a message this version does not handle"),
        }
    }

    /// Anything else that happened at `now`. Once the session has ended, events change nothing
    /// (a send failing during the closing handshake does not turn a shutdown into a loss).
    pub fn handle_event(&mut self, event: Event, now: Instant) {
        if self.ended {
            return;
        }
        match event {
            Event::Control => self.last_received = now,
            Event::Text => {
                self.close_and_end(close::PROTOCOL, Ended::Lost("the manager sent a text message".into()))
            }
            Event::Closed(code) => {
                self.end(Ended::Lost(format!("the manager closed the connection (code {code:?})")))
            }
            Event::Error(err) => self.end(Ended::Lost(format!("connection error: {err}"))),
            Event::StreamEnded => self.end(Ended::Lost("connection ended".into())),
            Event::SendFailed(err) => {
                // Nothing queued after a failed send makes sense any more.
                self.actions.clear();
                self.end(Ended::Lost(err));
            }
            Event::Shutdown => self.shutdown(),
        }
    }

    /// A finished rotation to ack; `Err` gives it back when the session has already ended (a
    /// result that lost the race with a close): nothing is sent on a closed session, and the
    /// caller keeps the result for the next one.
    pub fn handle_rotation_done(&mut self, ack: RotationAck, after: AfterAck) -> Result<(), RotationAck> {
        if self.ended {
            return Err(ack);
        }
        let RotationAck { rotation_id, outcome, detail } = ack;
        tracing::info!(%rotation_id, ?outcome, %detail, "acknowledging rotation");
        self.send(C2s::RotateAck { seq: 0, rotation_id, outcome, detail });
        if after == AfterAck::Switch {
            self.send(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Replaced });
            self.close_and_end(close::NORMAL, Ended::Switch);
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        if let Some(pending) = self.ledger.take_pending() {
            let successor = short_id(&pending.successor_id);
            tracing::info!(rotation_id = %pending.rotation_id, %successor,
                "stopped by the successor container: rotation applied");
            self.send(C2s::RotateAck {
                seq: 0,
                rotation_id: pending.rotation_id,
                outcome: RotateOutcome::Applied,
                detail: format!("replaced by container {successor}"),
            });
            self.send(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Replaced });
        } else {
            self.send(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown });
        }
        self.close_and_end(close::GOING_AWAY, Ended::Shutdown);
    }

    fn send(&mut self, message: C2s) {
        let bytes = self.session.encode(message);
        self.actions.push_back(Action::Send(bytes));
    }

    fn close_and_end(&mut self, code: u16, ended: Ended) {
        self.actions.push_back(Action::Close(code));
        self.end(ended);
    }

    fn end(&mut self, ended: Ended) {
        self.ended = true;
        self.actions.push_back(Action::End(ended));
    }
}

#[cfg(test)]
mod tests;
