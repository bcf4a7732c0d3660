//! The protocol decisions of one authenticated session, without sockets or clocks (the
//! quinn-proto shape): the adapter in [`super::session`] feeds it frames
//! ([`Driver::handle_frame`]), the transport's other events ([`Driver::handle_socket`]), the
//! registry's commands ([`Driver::handle_command`]) and the passing of time
//! ([`Driver::handle_timeout`] at [`Driver::poll_timeout`]), each with `now`, and performs the
//! [`Action`]s it queues ([`Driver::poll_action`]) in order.
//!
//! Heartbeat supervision: any frame that proves the delegate alive (heartbeat, rotate ack,
//! task result) moves the deadline to `now + 3 × heartbeat interval`; at the deadline the
//! session closes with 4008. A token with an expiry gets a signed `revoked` (reason expired)
//! and close 4004 when it expires mid-session. The last action of a session is
//! [`Action::Close`] or [`Action::Ended`]; after it the driver takes no input and queues
//! nothing.
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tether_protocol::error::close;
use tether_protocol::message::{C2s, GoodbyeReason, RevokedReason, RotateOutcome, S2c, TaskKind};
use tether_protocol::session::ServerSession;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::keys;
use crate::registry::{SessionCommand, TaskReply};

/// Most tasks waiting for a reply per session.
pub const MAX_PENDING_TASKS: usize = 64;

/// Heartbeat intervals without a sign of life before the session is closed.
pub const MISSED_HEARTBEATS: u32 = 3;

/// What the `revoked` sent at the token's expiry tells the delegate.
const EXPIRED_MESSAGE: &str =
    "this delegate's token expired; create a new token and restart the delegate with it";

/// What the adapter does, in the order queued.
#[derive(Debug)]
pub enum Action {
    /// Write this frame and flush.
    Send(Vec<u8>),
    /// Buffer this frame: the [`Action::Close`] that follows flushes both in one write.
    Feed(Vec<u8>),
    /// Close the socket with this code and reason; the session is over.
    Close(u16, &'static str),
    /// The peer is gone: the session is over without a close handshake.
    Ended,
    /// The delegate sent a heartbeat: record it in the registry (with the wall-clock time).
    RecordHeartbeat,
    /// The delegate acknowledged a rotation: hand it to `rotation::on_ack`.
    RotateAck {
        /// The rotation it answers.
        rotation_id: Uuid,
        /// What the delegate did.
        outcome: RotateOutcome,
        /// The delegate's detail, unbounded as received (`on_ack` bounds and escapes it).
        detail: String,
    },
    /// A task's result: send `result` on `reply` (the caller may have given up waiting).
    TaskReply {
        /// Where the caller waits.
        reply: oneshot::Sender<TaskReply>,
        /// The delegate's answer.
        result: TaskReply,
    },
    /// The session is being closed as revoked or expired (the `sessions_revoked` counter).
    CountRevoked,
    /// The session is being closed for missed heartbeats (the `heartbeat_timeouts` counter).
    CountHeartbeatTimeout,
}

/// Something the transport saw other than a binary frame (pings and pongs are the
/// transport's own business and never reach the driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketEvent {
    /// A text frame: the protocol is binary only.
    Text,
    /// A message over the size limit.
    TooBig,
    /// The peer closed, the connection dropped, or the read failed.
    Closed,
}

/// The session's protocol state. See the module documentation.
#[derive(Debug)]
pub struct Driver {
    session: ServerSession,
    token_id: Uuid,
    /// Three heartbeat intervals.
    supervision: Duration,
    heartbeat_deadline: Instant,
    expiry: Option<Instant>,
    tasks: HashMap<Uuid, oneshot::Sender<TaskReply>>,
    actions: VecDeque<Action>,
    ended: bool,
}

impl Driver {
    /// A session on `token_id` that expires at `expires_at` (unix seconds, if ever), starting
    /// at `now` (when the wall clock read `now_unix`).
    pub fn new(
        session: ServerSession,
        token_id: Uuid,
        heartbeat: Duration,
        expires_at: Option<u64>,
        now: Instant,
        now_unix: u64,
    ) -> Self {
        let supervision = heartbeat.saturating_mul(MISSED_HEARTBEATS);
        Self {
            session,
            token_id,
            supervision,
            heartbeat_deadline: now + supervision,
            expiry: expires_at.map(|at| now + Duration::from_secs(at.saturating_sub(now_unix))),
            tasks: HashMap::new(),
            actions: VecDeque::new(),
            ended: false,
        }
    }

    /// The next action to perform, in order. The queue's storage is freed once it is empty
    /// (an idle session's heartbeat would otherwise keep ~200 bytes per session), as is that
    /// of the pending tasks.
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front();
        if self.actions.is_empty() && self.actions.capacity() > 0 {
            self.actions = VecDeque::new();
        }
        if self.tasks.is_empty() && self.tasks.capacity() > 0 {
            self.tasks = HashMap::new();
        }
        action
    }

    /// When [`Driver::handle_timeout`] is due next; `None` once the session is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        Some(match self.expiry {
            Some(expiry) => expiry.min(self.heartbeat_deadline),
            None => self.heartbeat_deadline,
        })
    }

    /// Whether the session is over (its last action is queued).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Tasks waiting for their result.
    pub fn pending_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// A binary frame from the delegate.
    pub fn handle_frame(&mut self, bytes: &[u8], now: Instant) {
        if self.ended {
            return;
        }
        match self.session.decode(bytes) {
            Ok(C2s::Heartbeat { .. }) => {
                self.alive(now);
                self.actions.push_back(Action::RecordHeartbeat);
            }
            Ok(C2s::RotateAck { rotation_id, outcome, detail, .. }) => {
                self.alive(now);
                self.actions.push_back(Action::RotateAck { rotation_id, outcome, detail });
            }
            Ok(C2s::TaskResult { task_id, ok, payload, .. }) => {
                self.alive(now);
                if let Some(reply) = self.tasks.remove(&task_id) {
                    self.actions.push_back(Action::TaskReply { reply, result: TaskReply { ok, payload } });
                }
            }
            Ok(C2s::Goodbye { .. }) => self.close(close::NORMAL, "goodbye"),
            Ok(_) => self.close(close::PROTOCOL, "unexpected message"),
            Err(e) => {
                tracing::info!(session_id = %self.session.session_id(), error = %e, "session protocol error");
                self.close(e.close_code(), "protocol error");
            }
        }
    }

    /// Anything else the transport saw.
    pub fn handle_socket(&mut self, event: SocketEvent) {
        if self.ended {
            return;
        }
        match event {
            SocketEvent::Text => self.close(close::PROTOCOL, "binary frames only"),
            SocketEvent::TooBig => self.close(close::TOO_BIG, "frame too big"),
            SocketEvent::Closed => self.end(Action::Ended),
        }
    }

    /// A command from the registry. `now` is unused today; it is part of the shape so a
    /// command that starts a timer needs no new signature.
    pub fn handle_command(&mut self, cmd: SessionCommand, _now: Instant) {
        if self.ended {
            // Dropping the command drops a task's `reply`, which tells its caller.
            return;
        }
        match cmd {
            SessionCommand::Revoke { reason, message } => self.revoke(reason, message),
            SessionCommand::Rotate { rotation_id, token, valid_until } => {
                let sealed_token = self.session.seal_token(rotation_id, keys::random12(), &token);
                let frame = self.session.encode(S2c::Rotate {
                    seq: 0,
                    rotation_id,
                    token_id: token.id(),
                    sealed_token,
                    old_token_valid_until: valid_until,
                });
                self.actions.push_back(Action::Send(frame));
            }
            SessionCommand::Task { task_id, payload, reply } => {
                if self.tasks.len() >= MAX_PENDING_TASKS {
                    self.tasks.retain(|_, tx| !tx.is_closed());
                }
                if self.tasks.len() >= MAX_PENDING_TASKS {
                    return; // dropping `reply` tells the caller
                }
                self.tasks.insert(task_id, reply);
                let frame = self.session.encode(S2c::Task { seq: 0, task_id, kind: TaskKind::Echo, payload });
                self.actions.push_back(Action::Send(frame));
            }
            SessionCommand::Disconnect => {
                self.goodbye(GoodbyeReason::Disconnected, close::NORMAL, "disconnected by an operator")
            }
            SessionCommand::Shutdown => {
                self.goodbye(GoodbyeReason::Shutdown, close::GOING_AWAY, "manager shutting down")
            }
        }
    }

    /// Time passed: close the session if its token expired or its heartbeats stopped.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        if self.expiry.is_some_and(|expiry| now >= expiry) {
            self.revoke(RevokedReason::Expired, EXPIRED_MESSAGE.to_owned());
        } else if now >= self.heartbeat_deadline {
            tracing::info!(session_id = %self.session.session_id(), "closing session after 3 missed heartbeats");
            self.actions.push_back(Action::CountHeartbeatTimeout);
            self.close(close::PROTOCOL, "missed heartbeats");
        }
    }

    /// The delegate showed a sign of life.
    fn alive(&mut self, now: Instant) {
        self.heartbeat_deadline = now + self.supervision;
    }

    /// A signed `revoked`, then close 4003 (4004 for expiry). Counted whether or not the
    /// frame can be written: the session ends here either way.
    fn revoke(&mut self, reason: RevokedReason, message: String) {
        let frame = self.session.encode(S2c::Revoked { seq: 0, token_id: self.token_id, reason, message });
        self.actions.push_back(Action::CountRevoked);
        self.actions.push_back(Action::Feed(frame));
        match reason {
            RevokedReason::Expired => self.close(close::EXPIRED, "token expired"),
            RevokedReason::Revoked => self.close(close::REVOKED, "token revoked"),
        }
    }

    /// A `goodbye`, then close with `code`.
    fn goodbye(&mut self, reason: GoodbyeReason, code: u16, why: &'static str) {
        let frame = self.session.encode(S2c::Goodbye { seq: 0, reason });
        self.actions.push_back(Action::Feed(frame));
        self.close(code, why);
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        self.end(Action::Close(code, reason));
    }

    /// Queues the last action. Tasks still waiting are dropped, which tells their callers.
    fn end(&mut self, last: Action) {
        self.actions.push_back(last);
        self.tasks.clear();
        self.ended = true;
    }
}

#[cfg(test)]
mod tests;
