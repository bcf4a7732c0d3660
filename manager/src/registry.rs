//! The registry of live delegate sessions: who is connected, and a command channel into each
//! session task (revoke, rotate, task, disconnect, goodbye).
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tether_protocol::message::RevokedReason;
use tether_protocol::Token;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// What the registry knows about one live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id (from the welcome).
    pub session_id: Uuid,
    /// Account.
    pub account_id: String,
    /// Token the session authenticated with.
    pub token_id: Uuid,
    /// Delegate name.
    pub name: String,
    /// Delegate instance.
    pub instance: Uuid,
    /// Delegate host name.
    pub host: String,
    /// Delegate software version.
    pub version: String,
    /// Source address.
    pub ip: IpAddr,
    /// Unix seconds.
    pub connected_at: u64,
    /// Unix seconds of the last heartbeat (or the handshake).
    pub last_heartbeat: u64,
}

/// The reply of a delegate to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReply {
    /// Whether the task succeeded.
    pub ok: bool,
    /// Its output.
    pub payload: String,
}

/// A command to a session task.
#[derive(Debug)]
pub enum SessionCommand {
    /// Send signed `revoked` and close with 4003 (or 4004 for expiry).
    Revoke {
        /// Revoked or expired.
        reason: RevokedReason,
        /// For the delegate's log.
        message: String,
    },
    /// Seal and send the successor token.
    Rotate {
        /// Rotation id.
        rotation_id: Uuid,
        /// The successor (held in memory only for the rotation's start).
        token: Arc<Token>,
        /// Until when the old token stays valid.
        valid_until: u64,
    },
    /// Send a task; the reply comes back on `reply`.
    Task {
        /// Task id.
        task_id: Uuid,
        /// Echo payload.
        payload: String,
        /// Where the result goes.
        reply: oneshot::Sender<TaskReply>,
    },
    /// An operator disconnects the session: `goodbye` then close 1000.
    Disconnect,
    /// The manager shuts down: `goodbye` then close 1001.
    Shutdown,
}

#[derive(Debug)]
struct Entry {
    info: SessionInfo,
    tx: mpsc::UnboundedSender<SessionCommand>,
}

/// The live sessions. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<Uuid, Entry>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session; returns the receiver of its commands.
    pub fn insert(&self, info: SessionInfo) -> mpsc::UnboundedReceiver<SessionCommand> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(info.session_id, Entry { info, tx });
        rx
    }

    /// Forgets a session.
    pub fn remove(&self, session_id: Uuid) -> Option<SessionInfo> {
        self.lock().remove(&session_id).map(|e| e.info)
    }

    /// Records a heartbeat.
    pub fn heartbeat(&self, session_id: Uuid, now: u64) {
        if let Some(e) = self.lock().get_mut(&session_id) {
            e.info.last_heartbeat = now;
        }
    }

    /// One session.
    pub fn get(&self, session_id: Uuid) -> Option<SessionInfo> {
        self.lock().get(&session_id).map(|e| e.info.clone())
    }

    /// Every session, optionally of one account, ordered by connection time.
    pub fn list(&self, account: Option<&str>) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .lock()
            .values()
            .filter(|e| account.is_none_or(|a| e.info.account_id == a))
            .map(|e| e.info.clone())
            .collect();
        out.sort_by_key(|s| (s.connected_at, s.session_id));
        out
    }

    /// The sessions on a token.
    pub fn on_token(&self, token_id: Uuid) -> Vec<SessionInfo> {
        self.lock().values().filter(|e| e.info.token_id == token_id).map(|e| e.info.clone()).collect()
    }

    /// Live sessions per token.
    pub fn counts_by_token(&self) -> HashMap<Uuid, usize> {
        let mut out = HashMap::new();
        for e in self.lock().values() {
            *out.entry(e.info.token_id).or_insert(0) += 1;
        }
        out
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends a command to one session; `false` if it is gone.
    pub fn send(&self, session_id: Uuid, cmd: SessionCommand) -> bool {
        self.lock().get(&session_id).is_some_and(|e| e.tx.send(cmd).is_ok())
    }

    /// Sends a command (made per session) to every session on a token; returns how many.
    pub fn send_to_token(
        &self,
        token_id: Uuid,
        mut make: impl FnMut(&SessionInfo) -> SessionCommand,
    ) -> usize {
        let guard = self.lock();
        guard
            .values()
            .filter(|e| e.info.token_id == token_id)
            .filter(|e| e.tx.send(make(&e.info)).is_ok())
            .count()
    }

    /// Sends `Shutdown` to every session; returns how many.
    pub fn shutdown_all(&self) -> usize {
        self.lock().values().filter(|e| e.tx.send(SessionCommand::Shutdown).is_ok()).count()
    }
}
