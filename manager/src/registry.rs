//! The registry of live delegate sessions: who is connected, a command mailbox into each
//! session task (revoke, rotate, task, disconnect, goodbye), and how many are live per token
//! and per account, so a handshake can be refused atomically when a cap is full
//! ([`Registry::try_insert`]). A revocation's fan-out is tracked ([`final_frames`]) so the
//! sessions' teardown can wait until every revoked delegate has been told.
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tether_protocol::message::RevokedReason;
use tether_protocol::Token;
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

pub mod final_frames;

use final_frames::FinalFrames;

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
        /// The successor (held in memory, never on disk, while its rotation runs: the
        /// whole grace window, for delegates that connect on the old token late).
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

/// One session's commands. A tokio `mpsc` channel costs ~2 KiB per session even when empty
/// (a 32-slot block and cache-padded state); this costs ~150 bytes and allocates only while
/// commands wait.
#[derive(Debug, Default)]
struct Mailbox {
    queue: Mutex<VecDeque<SessionCommand>>,
    notify: Notify,
    /// The session stopped reading (its [`Commands`] was dropped).
    receiver_gone: AtomicBool,
    /// The registry forgot the session (its entry was dropped).
    sender_gone: AtomicBool,
    /// A revocation is queued for the session and its final frames are not sent yet
    /// (counted in [`FinalFrames`]).
    final_pending: AtomicBool,
}

impl Mailbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<SessionCommand>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next queued command. An emptied queue gives its storage back: an idle session
    /// keeps none (it is part of the memory every idle session costs).
    fn take(&self) -> Option<SessionCommand> {
        let mut queue = self.queue();
        let cmd = queue.pop_front();
        if queue.is_empty() && queue.capacity() > 0 {
            *queue = VecDeque::new();
        }
        cmd
    }

    /// Queues `cmd`; `false` if the session no longer reads.
    fn send(&self, cmd: SessionCommand) -> bool {
        if self.receiver_gone.load(Ordering::Acquire) {
            return false;
        }
        self.queue().push_back(cmd);
        self.notify.notify_one();
        true
    }
}

/// The receiving end of one session's commands (held by the session task).
#[derive(Debug)]
pub struct Commands {
    mailbox: Arc<Mailbox>,
    final_frames: Arc<FinalFrames>,
}

impl Commands {
    /// The next command, in order; `None` once the registry forgot the session and nothing
    /// is queued. Cancel-safe: a command is only taken when it is returned.
    pub async fn recv(&mut self) -> Option<SessionCommand> {
        loop {
            if let Some(cmd) = self.mailbox.take() {
                return Some(cmd);
            }
            if self.mailbox.sender_gone.load(Ordering::Acquire) {
                return None;
            }
            // A notify between the checks above and this wait is kept as a permit.
            self.mailbox.notify.notified().await;
        }
    }

    /// The session sent its final frames (its close, after a revocation's `revoked` if it
    /// was revoked) or never will: it takes no more commands (a later revocation neither
    /// tells nor counts it) and no longer holds back the other sessions' teardown. Whether a
    /// revocation had counted it, i.e. whether it should wait for the rest ([`Self::others_told`]).
    pub fn final_frames_sent(&self) -> bool {
        self.mailbox.receiver_gone.store(true, Ordering::Release);
        self.final_frames.release(&self.mailbox.final_pending)
    }

    /// Returns once no session has a revocation's final frames still to send, or after
    /// `within`: what a revoked session waits for between sending its own and its teardown.
    pub async fn others_told(&self, within: std::time::Duration) {
        self.final_frames.quiet(within).await;
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        self.final_frames_sent();
    }
}

/// Caps on live sessions (`max_sessions_per_token`, `max_sessions_per_account`, and the
/// global one, fitted to the open-file limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Most live sessions on one token.
    pub per_token: usize,
    /// Most live sessions in one account.
    pub per_account: usize,
    /// Most live sessions in all.
    pub total: usize,
}

impl Caps {
    /// No cap at all.
    pub const NONE: Self = Self { per_token: usize::MAX, per_account: usize::MAX, total: usize::MAX };

    /// The value of the cap `hit`.
    pub fn limit(&self, hit: CapHit) -> usize {
        match hit {
            CapHit::Token => self.per_token,
            CapHit::Account => self.per_account,
            CapHit::Total => self.total,
        }
    }
}

/// Which session cap is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapHit {
    /// The token's.
    Token,
    /// The account's.
    Account,
    /// The global one.
    Total,
}

impl CapHit {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Account => "account",
            Self::Total => "total",
        }
    }
}

/// One session in the registry. `info` is shared with the session's own guard (one copy per
/// session, not two: it is part of the memory every idle session costs); the last heartbeat,
/// the one thing that changes, is kept beside it.
#[derive(Debug)]
struct Entry {
    info: Arc<SessionInfo>,
    last_heartbeat: u64,
    tx: Arc<Mailbox>,
}

impl Entry {
    /// The session as listed: its info with the last heartbeat.
    fn snapshot(&self) -> SessionInfo {
        SessionInfo { last_heartbeat: self.last_heartbeat, ..(*self.info).clone() }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.tx.sender_gone.store(true, Ordering::Release);
        self.tx.notify.notify_one();
    }
}

/// The sessions and their counts per token and per account (kept with them, under one lock).
#[derive(Debug, Default)]
struct Sessions {
    entries: HashMap<Uuid, Entry>,
    per_token: HashMap<Uuid, usize>,
    per_account: HashMap<String, usize>,
}

impl Sessions {
    fn count(&mut self, info: &SessionInfo) {
        *self.per_token.entry(info.token_id).or_insert(0) += 1;
        *self.per_account.entry(info.account_id.clone()).or_insert(0) += 1;
    }

    fn uncount(&mut self, info: &SessionInfo) {
        if let Some(n) = self.per_token.get_mut(&info.token_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_token.remove(&info.token_id);
            }
        }
        if let Some(n) = self.per_account.get_mut(&info.account_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_account.remove(&info.account_id);
            }
        }
    }

    /// The cap that one more session like `info` would exceed, with `closing` sessions out
    /// of the registry whose sockets are still open.
    fn full(&self, info: &SessionInfo, caps: &Caps, closing: usize) -> Option<CapHit> {
        let on_token = self.per_token.get(&info.token_id).copied().unwrap_or(0);
        let in_account = self.per_account.get(&info.account_id).copied().unwrap_or(0);
        if on_token >= caps.per_token {
            Some(CapHit::Token)
        } else if in_account >= caps.per_account {
            Some(CapHit::Account)
        } else if self.entries.len().saturating_add(closing) >= caps.total {
            Some(CapHit::Total)
        } else {
            None
        }
    }

    fn insert(&mut self, info: Arc<SessionInfo>) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox::default());
        self.count(&info);
        let last_heartbeat = info.last_heartbeat;
        let replaced =
            self.entries.insert(info.session_id, Entry { info, last_heartbeat, tx: mailbox.clone() });
        if let Some(old) = replaced {
            self.uncount(&old.info);
        }
        mailbox
    }
}

/// The live sessions. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Sessions>>,
    final_frames: Arc<FinalFrames>,
    /// Sessions out of the registry whose sockets are still open ([`Closing`]).
    closing: Arc<AtomicUsize>,
}

/// A session that left the registry but still holds its socket (its close handshake, its
/// teardown): counted against the total cap, which is fitted to the open-file limit, until
/// dropped.
#[derive(Debug)]
pub struct Closing(Arc<AtomicUsize>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session; returns the receiver of its commands.
    pub fn insert(&self, info: impl Into<Arc<SessionInfo>>) -> Commands {
        let mailbox = self.lock().insert(info.into());
        self.commands(mailbox)
    }

    fn commands(&self, mailbox: Arc<Mailbox>) -> Commands {
        Commands { mailbox, final_frames: self.final_frames.clone() }
    }

    /// Registers a session unless that would exceed one of `caps` (checked and counted under
    /// one lock, so concurrent handshakes cannot overshoot a cap); which cap is full otherwise.
    pub fn try_insert(&self, info: impl Into<Arc<SessionInfo>>, caps: &Caps) -> Result<Commands, CapHit> {
        let info = info.into();
        let mut sessions = self.lock();
        match sessions.full(&info, caps, self.closing.load(Ordering::Acquire)) {
            Some(hit) => Err(hit),
            None => {
                let mailbox = sessions.insert(info);
                drop(sessions);
                Ok(self.commands(mailbox))
            }
        }
    }

    /// Counts one more session closing until the returned guard is dropped: take it before
    /// the session leaves the registry, drop it with the socket.
    pub fn closing(&self) -> Closing {
        self.closing.fetch_add(1, Ordering::AcqRel);
        Closing(self.closing.clone())
    }

    /// Forgets a session; whether it was there. (No copy of it is returned: this runs once
    /// per session of every fan-out, and a copy is four strings to allocate and free.)
    pub fn remove(&self, session_id: Uuid) -> bool {
        let mut sessions = self.lock();
        let Some(entry) = sessions.entries.remove(&session_id) else { return false };
        sessions.uncount(&entry.info);
        drop(sessions); // the entry's drop wakes the session task: not under the lock
        drop(entry);
        true
    }

    /// Records a heartbeat.
    pub fn heartbeat(&self, session_id: Uuid, now: u64) {
        if let Some(e) = self.lock().entries.get_mut(&session_id) {
            e.last_heartbeat = now;
        }
    }

    /// One session.
    pub fn get(&self, session_id: Uuid) -> Option<SessionInfo> {
        self.lock().entries.get(&session_id).map(Entry::snapshot)
    }

    /// Every session, optionally of one account, ordered by connection time.
    pub fn list(&self, account: Option<&str>) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .lock()
            .entries
            .values()
            .filter(|e| account.is_none_or(|a| e.info.account_id == a))
            .map(Entry::snapshot)
            .collect();
        out.sort_by_key(|s| (s.connected_at, s.session_id));
        out
    }

    /// The sessions on a token.
    pub fn on_token(&self, token_id: Uuid) -> Vec<SessionInfo> {
        self.lock().entries.values().filter(|e| e.info.token_id == token_id).map(Entry::snapshot).collect()
    }

    /// Live sessions per token.
    pub fn counts_by_token(&self) -> HashMap<Uuid, usize> {
        self.lock().per_token.clone()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends a command to one session; `false` if it is gone.
    pub fn send(&self, session_id: Uuid, cmd: SessionCommand) -> bool {
        self.lock().entries.get(&session_id).is_some_and(|e| e.tx.send(cmd))
    }

    /// Sends a command (made per session) to every session on a token; returns how many.
    /// The mailboxes are collected under the registry's lock and filled after it is released:
    /// a session woken by its command leaves the registry at once, and must not wait for the
    /// rest of a 10,000-session fan-out to let go of the lock.
    pub fn send_to_token(&self, token_id: Uuid, make: impl FnMut(&SessionInfo) -> SessionCommand) -> usize {
        self.fan_out(token_id, false, make)
    }

    /// [`Self::send_to_token`]; with `final_frames`, each session told is counted in
    /// [`FinalFrames`] until it has sent its last frames.
    fn fan_out(
        &self,
        token_id: Uuid,
        final_frames: bool,
        mut make: impl FnMut(&SessionInfo) -> SessionCommand,
    ) -> usize {
        let mut targets: Vec<(Arc<SessionInfo>, Arc<Mailbox>)> = self
            .lock()
            .entries
            .values()
            .filter(|e| e.info.token_id == token_id)
            .map(|e| (e.info.clone(), e.tx.clone()))
            .collect();
        // A session that left the registry meanwhile is not told (nor counted).
        targets.retain(|(_, tx)| !tx.sender_gone.load(Ordering::Acquire));
        if final_frames {
            // All counted before any is told: a session told early must not find the count
            // at 0 (and start its teardown) while the rest are still being told.
            targets.iter().for_each(|(_, tx)| self.final_frames.expect(&tx.final_pending));
        }
        let mut told = 0;
        for (info, tx) in &targets {
            if tx.send(make(info)) {
                told += 1;
            } else if final_frames {
                self.final_frames.release(&tx.final_pending);
            }
        }
        told
    }

    /// Tells every live session on `token_id` that its token is no longer valid (a signed
    /// `revoked`, then close); returns how many.
    pub fn kick(&self, token_id: Uuid, reason: RevokedReason) -> usize {
        let message = match reason {
            RevokedReason::Expired => {
                "this delegate's token expired; create a new token and restart the delegate with it"
            }
            _ => "this delegate's token was revoked; restart the delegate with a valid token",
        };
        self.fan_out(token_id, true, |_| SessionCommand::Revoke { reason, message: message.to_owned() })
    }

    /// How many sessions still have a revocation's final frames to send.
    #[cfg(test)]
    pub fn final_frames_pending(&self) -> usize {
        self.final_frames.pending()
    }

    /// Sends `Shutdown` to every session; returns how many.
    pub fn shutdown_all(&self) -> usize {
        self.lock().entries.values().filter(|e| e.tx.send(SessionCommand::Shutdown)).count()
    }
}

#[cfg(test)]
impl SessionInfo {
    /// A session of delegate `d1` in account `acme` on `token_id`, for unit tests.
    pub(crate) fn sample(token_id: Uuid) -> Self {
        SessionInfo {
            session_id: Uuid::new_v4(),
            account_id: "acme".into(),
            token_id,
            name: "d1".into(),
            instance: Uuid::new_v4(),
            host: "h".into(),
            version: "0".into(),
            ip: IpAddr::from([127, 0, 0, 1]),
            connected_at: 1,
            last_heartbeat: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SessionInfo {
        SessionInfo::sample(Uuid::new_v4())
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_closing_session_keeps_its_place_under_the_total_cap_until_its_socket_is_dropped() {
        let registry = Registry::default();
        let caps = Caps { total: 2, ..Caps::NONE };
        let (a, b) = (info(), info());
        let _ca = registry.try_insert(a.clone(), &caps).unwrap();
        let _cb = registry.try_insert(b, &caps).unwrap();
        assert!(matches!(registry.try_insert(info(), &caps), Err(CapHit::Total)));
        let closing = registry.closing();
        assert!(registry.remove(a.session_id));
        assert!(matches!(registry.try_insert(info(), &caps), Err(CapHit::Total)), "its socket is still open");
        drop(closing);
        assert!(registry.try_insert(info(), &caps).is_ok(), "its place is free once the socket is gone");
    }

    #[test]
    fn a_session_that_sent_its_final_frames_is_neither_told_nor_counted_again() {
        let registry = Registry::default();
        let token = Uuid::new_v4();
        let commands = registry.insert(SessionInfo::sample(token));
        assert_eq!(registry.kick(token, RevokedReason::Revoked), 1);
        assert!(commands.final_frames_sent(), "the revocation counted it");
        // Still in the registry (its guard not yet dropped): a second revocation finds it.
        assert_eq!(registry.kick(token, RevokedReason::Revoked), 0, "it takes no more commands");
        assert_eq!(registry.final_frames_pending(), 0, "so nothing waits for it");
        assert!(!commands.final_frames_sent());
    }

    #[test]
    fn a_revocation_counts_each_session_told_until_it_sent_its_final_frames() {
        let registry = Registry::default();
        let token = Uuid::new_v4();
        let (a, b, c) = (SessionInfo::sample(token), SessionInfo::sample(token), SessionInfo::sample(token));
        let (ca, cb, cc) = (registry.insert(a), registry.insert(b), registry.insert(c));
        let other = registry.insert(info());
        drop(cc); // a session whose task ended: not told, not counted
        assert_eq!(registry.kick(token, RevokedReason::Revoked), 2);
        assert_eq!(registry.final_frames_pending(), 2);
        assert_eq!(registry.kick(token, RevokedReason::Revoked), 2, "told again");
        assert_eq!(registry.final_frames_pending(), 2, "but counted once each");
        assert_eq!(registry.send_to_token(token, |_| SessionCommand::Disconnect), 2);
        assert_eq!(registry.final_frames_pending(), 2, "only a revocation has final frames to wait for");
        assert!(ca.final_frames_sent());
        assert!(!ca.final_frames_sent());
        assert_eq!(registry.final_frames_pending(), 1);
        drop(cb); // however a told session's task ends, it stops holding the others back
        assert_eq!(registry.final_frames_pending(), 0);
        drop(other);
        assert_eq!(registry.final_frames_pending(), 0);
    }

    #[test]
    fn commands_arrive_in_order_and_end_when_forgotten() {
        rt().block_on(async {
            let registry = Registry::default();
            let s = info();
            let mut commands = registry.insert(s.clone());
            assert!(registry.send(s.session_id, SessionCommand::Disconnect));
            assert!(registry.send(s.session_id, SessionCommand::Shutdown));
            assert!(matches!(commands.recv().await, Some(SessionCommand::Disconnect)));
            assert!(matches!(commands.recv().await, Some(SessionCommand::Shutdown)));
            // A waiting receiver is woken by a later send, and by the registry forgetting it.
            let waiter = tokio::spawn(async move {
                let first = commands.recv().await;
                let second = commands.recv().await;
                (first, second)
            });
            tokio::task::yield_now().await;
            assert_eq!(registry.send_to_token(s.token_id, |_| SessionCommand::Disconnect), 1);
            tokio::task::yield_now().await;
            assert!(registry.remove(s.session_id));
            let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("receiver woken")
                .unwrap();
            assert!(matches!(first, Some(SessionCommand::Disconnect)));
            assert!(second.is_none());
            assert!(!registry.send(s.session_id, SessionCommand::Disconnect));
        });
    }

    #[test]
    fn caps_on_live_sessions_per_token_per_account_and_in_total() {
        let registry = Registry::default();
        let caps = Caps { per_token: 2, per_account: 3, total: 4 };
        let on =
            |token_id: Uuid, account: &str| SessionInfo { token_id, account_id: account.into(), ..info() };
        let (t1, t2, t3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let first = on(t1, "acme");
        let _c1 = registry.try_insert(first.clone(), &caps).unwrap();
        let _c2 = registry.try_insert(on(t1, "acme"), &caps).unwrap();
        assert_eq!(registry.try_insert(on(t1, "acme"), &caps).unwrap_err(), CapHit::Token);
        let _c3 = registry.try_insert(on(t2, "acme"), &caps).unwrap();
        assert_eq!(registry.try_insert(on(t2, "acme"), &caps).unwrap_err(), CapHit::Account);
        let _c4 = registry.try_insert(on(t3, "other"), &caps).unwrap();
        assert_eq!(registry.try_insert(on(Uuid::new_v4(), "third"), &caps).unwrap_err(), CapHit::Total);
        assert_eq!(registry.len(), 4);
        assert_eq!(registry.counts_by_token().get(&t1), Some(&2));
        // A session that ends frees its place on the token and in the account.
        registry.remove(first.session_id);
        let _c5 = registry.try_insert(on(t1, "acme"), &caps).expect("a place came free");
        assert_eq!(registry.counts_by_token().get(&t1), Some(&2));
    }

    #[test]
    fn a_dropped_receiver_refuses_commands() {
        let registry = Registry::default();
        let s = info();
        drop(registry.insert(s.clone()));
        assert!(!registry.send(s.session_id, SessionCommand::Disconnect));
        assert_eq!(registry.send_to_token(s.token_id, |_| SessionCommand::Disconnect), 0);
        assert_eq!(registry.shutdown_all(), 0);
    }

    #[test]
    fn a_cancelled_recv_loses_no_command() {
        rt().block_on(async {
            let registry = Registry::default();
            let s = info();
            let mut commands = registry.insert(s.clone());
            // Cancel a waiting recv (as `select!` does when another branch wins), then send.
            let cancelled = tokio::time::timeout(std::time::Duration::from_millis(1), commands.recv()).await;
            assert!(cancelled.is_err());
            assert!(registry.send(s.session_id, SessionCommand::Shutdown));
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), commands.recv()).await;
            assert!(matches!(got, Ok(Some(SessionCommand::Shutdown))));
        });
    }
}
