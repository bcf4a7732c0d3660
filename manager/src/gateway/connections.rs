//! Caps and timeouts for connections that have not authenticated (every HTTP connection,
//! and a delegate WebSocket until its handshake succeeds), and the caps on authenticated
//! delegate sessions derived from the open-file limit.
//!
//! [`LimitAcceptor`] runs first on every accepted TCP connection (before TLS). Over the
//! per-address cap (IPv6: per /64) the connection is closed at once. When the global cap is
//! full, the newcomer is admitted by closing the oldest connection of the address holding the
//! most (fair share), as long as that address holds at least as many as the newcomer's would
//! after admission; otherwise the newcomer is closed at once. Refusals count in
//! `tether_connections_refused_total`, evictions in `tether_connections_evicted_total`, both
//! logged at most every [`LOG_EVERY`]. So a few addresses that hold the global cap with
//! keep-alive connections cannot lock out anybody else: every other address still gets in.
//!
//! An admitted connection holds a [`Slot`] and is wrapped in [`Guarded`], which closes it
//! (an I/O error to whoever reads or writes it) when it is evicted, after
//! `http_idle_timeout_secs` without a byte read or written, and at the latest
//! `max_unauthenticated_age_secs` after it was accepted, whatever phase it is in: before the
//! TLS ClientHello is complete, before the first request, between keep-alive requests, or
//! while a response waits for a peer that does not read. When a delegate's handshake
//! succeeds, [`ConnectionLimits::authenticated`] releases its slot and stops its timers: an
//! authenticated session no longer counts against these caps and is supervised by its
//! heartbeats instead; it counts against the session caps ([`SessionCaps`]) instead.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use futures_util::task::AtomicWaker;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use uuid::Uuid;

use super::ratelimit::AddressKey;
use crate::config::ServeConfig;
use crate::metrics::{CapLabel, Metrics};
use crate::registry::{CapHit, Caps as SessionCaps};

/// Refusals and evictions are logged at most this often (with the number since the last line).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Open files kept free of connections: the listener, the database with its WAL and SHM
/// files, logs, TLS files, and whatever the runtime opens.
pub const FILE_HEADROOM: u64 = 64;

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `max_unauthenticated_connections`.
    Total,
    /// `max_unauthenticated_per_address`.
    PerAddress,
}

impl Cap {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerAddress => "per_address",
        }
    }
}

/// A warning written at most every [`LOG_EVERY`], saying how many events it stands for.
#[derive(Debug, Default)]
pub struct LogEvery {
    unlogged: AtomicU64,
    last: Mutex<Option<std::time::Instant>>,
}

impl LogEvery {
    /// Counts one event; `Some(events since the last line, this one included)` when a line
    /// is due.
    pub fn due(&self) -> Option<u64> {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return None;
        }
        *last = Some(now);
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

/// One address's unauthenticated connections by admission number (oldest first).
type AddressSlots = BTreeMap<u64, Weak<Slot>>;

/// Where an address stands in the eviction order: how many it holds, then its oldest
/// connection (older sorts higher), then the address.
type OrderKey = (usize, Reverse<u64>, AddressKey);

fn order_key(key: AddressKey, slots: &AddressSlots) -> Option<OrderKey> {
    slots.first_key_value().map(|(seq, _)| (slots.len(), Reverse(*seq), key))
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<AddressKey, AddressSlots>,
    /// Every address holding connections, in eviction order: the last is the one holding the
    /// most, and among those the one with the oldest connection.
    order: BTreeSet<OrderKey>,
    /// The open unauthenticated connections by peer address (unique per live TCP connection),
    /// so the delegate endpoint can release the slot of its own connection.
    by_peer: HashMap<SocketAddr, Weak<Slot>>,
    next_seq: u64,
}

impl Counts {
    fn held_by(&self, key: AddressKey) -> usize {
        self.per_address.get(&key).map_or(0, BTreeMap::len)
    }

    fn insert(&mut self, key: AddressKey, seq: u64, slot: Weak<Slot>) {
        let slots = self.per_address.entry(key).or_default();
        if let Some(old) = order_key(key, slots) {
            self.order.remove(&old);
        }
        slots.insert(seq, slot);
        if let Some(new) = order_key(key, slots) {
            self.order.insert(new);
        }
        self.total += 1;
    }

    /// Takes connection `seq` of `key` out of the counts; `None` if it was not in them.
    fn remove(&mut self, key: AddressKey, seq: u64) -> Option<Weak<Slot>> {
        let slots = self.per_address.get_mut(&key)?;
        let old = order_key(key, slots);
        let slot = slots.remove(&seq)?;
        if let Some(old) = old {
            self.order.remove(&old);
        }
        match order_key(key, slots) {
            Some(new) => {
                self.order.insert(new);
            }
            None => {
                self.per_address.remove(&key);
            }
        }
        self.total = self.total.saturating_sub(1);
        Some(slot)
    }

    /// The connection to close so that one more from `key` fits: the oldest of the address
    /// holding the most, unless that address holds fewer than `key` would after admission
    /// (then nobody is evicted: the newcomer's address already has its fair share).
    fn victim(&self, key: AddressKey) -> Option<(AddressKey, u64)> {
        let &(held, Reverse(seq), victim) = self.order.last()?;
        (held > self.held_by(key)).then_some((victim, seq))
    }

    fn forget_peer(&mut self, slot: &Slot) {
        if self.by_peer.get(&slot.peer).is_some_and(|w| std::ptr::eq(w.as_ptr(), slot)) {
            self.by_peer.remove(&slot.peer);
        }
    }
}

#[derive(Debug)]
struct Shared {
    max_total: usize,
    max_per_address: usize,
    idle: Duration,
    max_age: Duration,
    sessions: SessionCaps,
    counts: Mutex<Counts>,
    open: Gauge,
    refused: Family<CapLabel, Counter>,
    evicted: Counter,
    idle_timeouts: Counter,
    max_age_closes: Counter,
    sessions_refused: Family<CapLabel, Counter>,
    refusal_log: LogEvery,
    eviction_log: LogEvery,
    session_log: LogEvery,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The caps and timeouts, shared by the acceptor and the delegate endpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    shared: Arc<Shared>,
}

/// A slot that still counts against the caps.
const HELD: u8 = 0;
/// Released because the connection authenticated as a delegate session.
const AUTHENTICATED: u8 = 1;
/// Released to make room for a connection from an address holding fewer: close it.
const EVICTED: u8 = 2;
/// Released because the connection is gone.
const CLOSED: u8 = 3;

/// One unauthenticated connection's place under the caps; released when dropped, when the
/// connection authenticates or when it is evicted, whichever is first.
#[derive(Debug)]
pub struct Slot {
    shared: Arc<Shared>,
    peer: SocketAddr,
    key: AddressKey,
    /// Admission number: smaller is older.
    seq: u64,
    state: AtomicU8,
    /// The task of the connection, woken when it is evicted.
    waker: AtomicWaker,
}

impl Slot {
    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Leaves the caps for the reason `to` (only the first reason sticks).
    fn leave(&self, to: u8) {
        let _ = self.state.compare_exchange(HELD, to, Ordering::AcqRel, Ordering::Acquire);
        let mut counts = self.shared.lock();
        let counted = counts.remove(self.key, self.seq).is_some();
        counts.forget_peer(self);
        drop(counts);
        if counted {
            self.shared.open.dec();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.leave(CLOSED);
    }
}

/// How [`ConnectionLimits`] is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Most unauthenticated connections over every address.
    pub max_total: usize,
    /// Most from one address (IPv6: /64).
    pub max_per_address: usize,
    /// Closed after this long without traffic.
    pub idle: Duration,
    /// Closed this long after it was accepted at the latest, unless it authenticated.
    pub max_age: Duration,
    /// The caps on authenticated sessions.
    pub sessions: SessionCaps,
}

impl ConnectionLimits {
    /// The limits of `settings`.
    pub fn new(settings: Settings, metrics: &Metrics) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_total: settings.max_total.max(1),
                max_per_address: settings.max_per_address.max(1),
                idle: settings.idle,
                max_age: settings.max_age,
                sessions: settings.sessions,
                counts: Mutex::new(Counts::default()),
                open: metrics.unauthenticated_connections.clone(),
                refused: metrics.connections_refused.clone(),
                evicted: metrics.connections_evicted.clone(),
                idle_timeouts: metrics.connection_idle_timeouts.clone(),
                max_age_closes: metrics.connection_max_age_closes.clone(),
                sessions_refused: metrics.sessions_refused.clone(),
                refusal_log: LogEvery::default(),
                eviction_log: LogEvery::default(),
                session_log: LogEvery::default(),
            }),
        }
    }

    /// The limits of `config`, fitted to the process's open-file limit: the global cap on
    /// unauthenticated connections is lowered to half the limit when that is smaller, and the
    /// sessions may use what is left but [`FILE_HEADROOM`] (so connections alone cannot use
    /// up the file descriptors that the database, the listener and the API need).
    pub fn from_config(config: &ServeConfig, metrics: &Metrics) -> Self {
        let limit = open_file_limit();
        let configured = config.max_unauthenticated_connections;
        let max_total = fit_to_open_files(configured, limit);
        if max_total < configured {
            tracing::warn!(
                max_unauthenticated_connections = configured,
                using = max_total,
                "max_unauthenticated_connections is above half the open-file limit (RLIMIT_NOFILE); using half the limit: raise the limit (LimitNOFILE=, ulimit -n) to allow more"
            );
        }
        let fitted = sessions_fit_open_files(limit, max_total);
        let total_sessions = match config.max_sessions {
            Some(configured) if configured > fitted => {
                tracing::warn!(
                    max_sessions = configured,
                    using = fitted,
                    "max_sessions is above what the open-file limit (RLIMIT_NOFILE) leaves after the unauthenticated connections; raise the limit (LimitNOFILE=, ulimit -n) to allow more"
                );
                fitted
            }
            Some(configured) => configured,
            None => fitted,
        };
        let sessions = SessionCaps {
            per_token: config.max_sessions_per_token,
            per_account: config.max_sessions_per_account,
            total: total_sessions,
        };
        Self::new(
            Settings {
                max_total,
                max_per_address: config.max_unauthenticated_per_address.min(max_total),
                idle: Duration::from_secs(config.http_idle_timeout_secs),
                max_age: Duration::from_secs(config.max_unauthenticated_age_secs),
                sessions,
            },
            metrics,
        )
    }

    /// The acceptor to put first in the server's acceptor chain.
    pub fn acceptor(&self) -> LimitAcceptor {
        LimitAcceptor { limits: self.clone() }
    }

    /// The effective global cap.
    pub fn max_total(&self) -> usize {
        self.shared.max_total
    }

    /// The effective per-address cap.
    pub fn max_per_address(&self) -> usize {
        self.shared.max_per_address
    }

    /// The effective caps on authenticated sessions.
    pub fn session_caps(&self) -> SessionCaps {
        self.shared.sessions
    }

    /// Unauthenticated connections open now.
    pub fn open(&self) -> usize {
        self.shared.lock().total
    }

    /// Takes a slot for a connection from `peer` (evicting another address's oldest
    /// connection when the global cap is full and that is fair), or says which cap refuses it.
    pub fn admit(&self, peer: SocketAddr) -> Result<Arc<Slot>, Cap> {
        let key = AddressKey::of(peer.ip());
        let mut counts = self.shared.lock();
        if counts.held_by(key) >= self.shared.max_per_address {
            return Err(Cap::PerAddress);
        }
        let mut evicted = None;
        if counts.total >= self.shared.max_total {
            let Some((victim_key, victim_seq)) = counts.victim(key) else { return Err(Cap::Total) };
            let Some(victim) = counts.remove(victim_key, victim_seq) else { return Err(Cap::Total) };
            let victim = victim.upgrade();
            if let Some(v) = &victim {
                counts.forget_peer(v);
            }
            evicted = Some((victim_key, victim));
        }
        let seq = counts.next_seq;
        counts.next_seq += 1;
        let slot = Arc::new(Slot {
            shared: self.shared.clone(),
            peer,
            key,
            seq,
            state: AtomicU8::new(HELD),
            waker: AtomicWaker::new(),
        });
        counts.insert(key, seq, Arc::downgrade(&slot));
        counts.by_peer.insert(peer, Arc::downgrade(&slot));
        // Unlocked before the victim is dropped (its drop takes the lock).
        drop(counts);
        self.shared.open.inc();
        if let Some((victim_key, victim)) = evicted {
            self.shared.open.dec();
            self.evicted(victim_key, key, victim);
        }
        Ok(slot)
    }

    /// Closes an evicted connection (its task sees the eviction at its next poll) and counts it.
    fn evicted(&self, victim_key: AddressKey, for_key: AddressKey, victim: Option<Arc<Slot>>) {
        if let Some(v) = victim {
            if v.state.compare_exchange(HELD, EVICTED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                v.waker.wake();
            }
        }
        self.shared.evicted.inc();
        if let Some(evicted) = self.shared.eviction_log.due() {
            tracing::warn!(evicted, limit = self.shared.max_total, last_evicted_from = %victim_key,
                last_admitted_from = %for_key,
                "the cap on unauthenticated connections is full: closing the oldest connections of the addresses holding the most to admit others (logged at most every 10 s)");
        }
    }

    /// The connection from `peer` authenticated as a delegate session: it no longer counts
    /// against the caps, and its timers stop.
    pub fn authenticated(&self, peer: SocketAddr) {
        let slot = self.shared.lock().by_peer.remove(&peer).and_then(|w| w.upgrade());
        if let Some(slot) = slot {
            slot.leave(AUTHENTICATED);
        }
    }

    /// Admits or refuses an accepted TCP connection (TCP_NODELAY is set on admitted ones: the
    /// handshake is a few small frames each way, and Nagle plus delayed ACKs add ~40 ms).
    pub fn accept(&self, stream: TcpStream) -> io::Result<Guarded<TcpStream>> {
        let peer = stream.peer_addr()?;
        match self.admit(peer) {
            Ok(slot) => {
                stream.set_nodelay(true)?;
                Ok(Guarded::watched(stream, slot, self.shared.idle, self.shared.max_age))
            }
            Err(cap) => {
                self.refused(cap, peer);
                Err(io::Error::other("connection refused: too many unauthenticated connections"))
            }
        }
    }

    fn refused(&self, cap: Cap, peer: SocketAddr) {
        let s = &self.shared;
        s.refused.get_or_create(&CapLabel { cap: cap.as_str().to_owned() }).inc();
        let Some(refused) = s.refusal_log.due() else { return };
        let limit = match cap {
            Cap::Total => s.max_total,
            Cap::PerAddress => s.max_per_address,
        };
        tracing::warn!(refused, cap = cap.as_str(), limit, last_address = %AddressKey::of(peer.ip()),
            "refusing connections: too many unauthenticated connections (logged at most every 10 s)");
    }

    /// Counts (`tether_sessions_refused_total{cap}`) and logs (at most every [`LOG_EVERY`]) a
    /// handshake refused because a session cap was full.
    pub fn session_refused(&self, hit: CapHit, token_id: Uuid, account: &str) {
        let s = &self.shared;
        s.sessions_refused.get_or_create(&CapLabel { cap: hit.as_str().to_owned() }).inc();
        let Some(refused) = s.session_log.due() else { return };
        tracing::warn!(refused, cap = hit.as_str(), limit = s.sessions.limit(hit), last_token_id = %token_id,
            last_account = %account,
            "refusing delegate sessions (rate_limited): a cap on live sessions is full (logged at most every 10 s)");
    }
}

/// Half of `limit` (the soft open-file limit), when that is below `configured`.
pub fn fit_to_open_files(configured: usize, limit: Option<u64>) -> usize {
    match limit {
        Some(limit) => configured.min(usize::try_from(limit / 2).unwrap_or(usize::MAX).max(1)),
        None => configured,
    }
}

/// Live sessions that fit the soft open-file `limit` next to `unauthenticated` connections
/// and [`FILE_HEADROOM`] (at least 1); without a known limit, no cap (`usize::MAX`).
pub fn sessions_fit_open_files(limit: Option<u64>, unauthenticated: usize) -> usize {
    let Some(limit) = limit else { return usize::MAX };
    let left = limit.saturating_sub(unauthenticated as u64).saturating_sub(FILE_HEADROOM);
    usize::try_from(left).unwrap_or(usize::MAX).max(1)
}

/// The soft `RLIMIT_NOFILE` of this process (Linux: from `/proc/self/limits`).
pub fn open_file_limit() -> Option<u64> {
    parse_open_file_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The soft limit in the "Max open files" line of a `/proc/<pid>/limits` text.
pub fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// Why a watched connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Evicted to admit another address's connection (counted when evicted).
    Evicted,
    /// No traffic for the idle timeout.
    Idle,
    /// Older than `max_unauthenticated_age_secs`.
    MaxAge,
}

/// The watch of an unauthenticated connection.
#[derive(Debug)]
struct Watch {
    slot: Arc<Slot>,
    idle: Duration,
    last: Instant,
    /// When it is closed at the latest (`max_unauthenticated_age_secs` after it was accepted).
    expires: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    closed: Option<Closing>,
}

impl Watch {
    /// The error every read and write gets from now on (counted once).
    fn close(&mut self, why: Closing) -> io::Error {
        if self.closed.is_none() {
            self.closed = Some(why);
            let peer = self.slot.peer;
            match why {
                Closing::Evicted => {
                    tracing::debug!(%peer, "closing an unauthenticated connection to admit another address's")
                }
                Closing::Idle => {
                    self.slot.shared.idle_timeouts.inc();
                    tracing::debug!(%peer, "closing an idle unauthenticated connection");
                }
                Closing::MaxAge => {
                    self.slot.shared.max_age_closes.inc();
                    tracing::debug!(%peer, "closing an unauthenticated connection at its maximum age");
                }
            }
        }
        match self.closed.unwrap_or(why) {
            Closing::Evicted => io::Error::new(io::ErrorKind::ConnectionAborted, "evicted"),
            Closing::Idle => io::Error::new(io::ErrorKind::TimedOut, "idle timeout"),
            Closing::MaxAge => io::Error::new(io::ErrorKind::TimedOut, "maximum age"),
        }
    }
}

/// A connection with its [`Slot`]: closed (an I/O error on read and write: `TimedOut` for
/// the timeouts, `ConnectionAborted` for an eviction) when evicted, after the idle timeout
/// without progress, or at its maximum age, until its slot is released by authentication.
/// The slot is released when this is dropped.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    watch: Option<Box<Watch>>,
}

impl<S> Guarded<S> {
    /// `inner`, holding `slot`, closed after `idle` without progress or `max_age` after now.
    pub fn watched(inner: S, slot: Arc<Slot>, idle: Duration, max_age: Duration) -> Self {
        let now = Instant::now();
        let watch = Watch { slot, idle, last: now, expires: now + max_age, timer: None, closed: None };
        Self { inner, watch: Some(Box::new(watch)) }
    }

    fn progress(&mut self) {
        if let Some(w) = self.watch.as_mut() {
            w.last = Instant::now();
        }
    }

    /// Checked before every read and write: an error once the connection is evicted, has
    /// reached its maximum age or was closed already; nothing once it authenticated.
    fn check(&mut self) -> Option<io::Error> {
        let w = self.watch.as_mut()?;
        if let Some(why) = w.closed {
            return Some(w.close(why));
        }
        match w.slot.state() {
            AUTHENTICATED => {
                self.watch = None; // authenticated: supervised by heartbeats from now on
                None
            }
            EVICTED => Some(w.close(Closing::Evicted)),
            _ if Instant::now() >= w.expires => Some(w.close(Closing::MaxAge)),
            _ => None,
        }
    }

    /// Called when the inner stream is not ready: an error once the connection has been idle
    /// too long, reached its maximum age or was evicted, otherwise pending (with the timer
    /// and the eviction waker registered to wake the task).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if let Some(w) = self.watch.as_ref() {
            w.slot.waker.register(cx.waker());
        }
        // After registering: an eviction from now on wakes this task.
        if let Some(e) = self.check() {
            return Poll::Ready(e);
        }
        let Some(w) = self.watch.as_mut() else { return Poll::Pending };
        let deadline = (w.last + w.idle).min(w.expires);
        let timer = w.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let why = if Instant::now() >= w.expires { Closing::MaxAge } else { Closing::Idle };
                Poll::Ready(w.close(why))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready => {
                this.progress();
                ready
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready => {
                this.progress();
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready => {
                this.progress();
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The first acceptor on every TCP connection: [`ConnectionLimits::accept`].
#[derive(Debug, Clone)]
pub struct LimitAcceptor {
    limits: ConnectionLimits,
}

impl<S> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = Guarded<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Guarded<TcpStream>, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.limits.accept(stream).map(|s| (s, service)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const AGE: Duration = Duration::from_secs(300);

    fn limits(total: usize, per: usize, idle: Duration) -> (ConnectionLimits, Metrics) {
        let metrics = Metrics::new();
        let settings = Settings {
            max_total: total,
            max_per_address: per,
            idle,
            max_age: AGE,
            sessions: SessionCaps::NONE,
        };
        (ConnectionLimits::new(settings, &metrics), metrics)
    }

    fn state_of(slot: &Slot) -> u8 {
        slot.state()
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// `elapsed` is `secs` on the paused clock (timers round up to the millisecond).
    fn within(elapsed: Duration, secs: u64) -> bool {
        let at = Duration::from_secs(secs);
        elapsed >= at && elapsed < at + Duration::from_millis(50)
    }

    #[test]
    fn caps_per_address_and_in_total() {
        let (l, m) = limits(4, 2, Duration::from_secs(30));
        let a1 = l.admit(peer("10.0.0.1:1000")).unwrap();
        let a2 = l.admit(peer("10.0.0.1:1001")).unwrap();
        assert_eq!(l.admit(peer("10.0.0.1:1002")).unwrap_err(), Cap::PerAddress);
        let b1 = l.admit(peer("10.0.0.2:1000")).unwrap();
        // One /64 is one address.
        let c1 = l.admit(peer("[2001:db8::1]:1000")).unwrap();
        assert_eq!(m.unauthenticated_connections.get(), 4);
        assert_eq!(m.connections_evicted.get(), 0);
        drop(a1);
        assert_eq!(l.open(), 3);
        assert!(l.admit(peer("10.0.0.1:1003")).is_ok(), "a closed connection frees its slot");
        drop((a2, b1, c1));
        let c2 = l.admit(peer("[2001:db8::2]:1000")).unwrap();
        let c3 = l.admit(peer("[2001:db8::ffff]:1000")).unwrap();
        assert_eq!(l.admit(peer("[2001:db8::3]:1000")).unwrap_err(), Cap::PerAddress);
        assert!(l.admit(peer("[2001:db8:0:1::3]:1000")).is_ok(), "another /64");
        drop((c2, c3));
        assert_eq!(l.open(), 0);
        assert_eq!(m.unauthenticated_connections.get(), 0);
    }

    #[test]
    fn a_full_global_cap_evicts_from_the_address_holding_the_most() {
        let (l, m) = limits(4, 4, Duration::from_secs(30));
        let a: Vec<_> = (0..4).map(|i| l.admit(peer(&format!("10.0.0.1:{}", 1000 + i))).unwrap()).collect();
        // Full, all from one address: a newcomer from another address takes the oldest's place.
        let b1 = l.admit(peer("10.0.0.2:1000")).expect("admitted by evicting");
        assert_eq!(state_of(&a[0]), EVICTED);
        assert!(a[1..].iter().all(|s| state_of(s) == HELD));
        assert_eq!((l.open(), m.unauthenticated_connections.get(), m.connections_evicted.get()), (4, 4, 1));
        // A holds 3, B would hold 2: evict A's oldest left.
        let b2 = l.admit(peer("10.0.0.2:1001")).unwrap();
        assert_eq!(state_of(&a[1]), EVICTED);
        // A holds 2, B would hold 3: never evict from an address holding fewer.
        assert_eq!(l.admit(peer("10.0.0.2:1002")).unwrap_err(), Cap::Total);
        // C (would hold 1): among A and B (2 each) the oldest connection goes, which is A's.
        let c1 = l.admit(peer("10.0.0.3:1000")).unwrap();
        assert_eq!(state_of(&a[2]), EVICTED);
        assert_eq!((state_of(&b1), state_of(&b2)), (HELD, HELD));
        assert_eq!((l.open(), m.unauthenticated_connections.get(), m.connections_evicted.get()), (4, 4, 3));
        // Dropping evicted slots releases nothing twice; a held one frees its place.
        drop(a);
        assert_eq!((l.open(), m.unauthenticated_connections.get()), (3, 3));
        drop((b1, b2, c1));
        assert_eq!((l.open(), m.unauthenticated_connections.get()), (0, 0));
    }

    #[test]
    fn an_authenticated_connection_is_never_evicted() {
        let (l, _m) = limits(2, 2, Duration::from_secs(30));
        let p = peer("10.0.0.1:1000");
        let session = l.admit(p).unwrap();
        let other = l.admit(peer("10.0.0.1:1001")).unwrap();
        l.authenticated(p);
        let _b1 = l.admit(peer("10.0.0.2:1000")).unwrap(); // the free place
        let _b2 = l.admit(peer("10.0.0.3:1000")).unwrap(); // evicts the other one of 10.0.0.1
        assert_eq!((state_of(&session), state_of(&other)), (AUTHENTICATED, EVICTED));
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_connection_is_closed_at_once() {
        let (l, m) = limits(1, 1, Duration::from_secs(30));
        let (_client, server) = tokio::io::duplex(64);
        let mut guarded =
            Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(30), AGE);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let started = Instant::now();
            (guarded.read(&mut buf).await.unwrap_err().kind(), started.elapsed())
        });
        tokio::task::yield_now().await; // the reader waits in its read
        let _newcomer = l.admit(peer("10.0.0.2:1")).unwrap();
        let (kind, after) = reader.await.unwrap();
        assert_eq!(kind, io::ErrorKind::ConnectionAborted);
        assert_eq!(after, Duration::ZERO, "woken at once, not at a timeout");
        assert_eq!((m.connections_evicted.get(), m.connection_idle_timeouts.get()), (1, 0));
        assert_eq!(l.open(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_unauthenticated_connection_is_closed_at_its_maximum_age() {
        let (l, m) = limits(8, 8, Duration::from_secs(5));
        let (mut client, server) = tokio::io::duplex(64);
        let age = Duration::from_secs(12);
        let mut guarded =
            Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5), age);
        let started = Instant::now();
        // A byte every second: the idle timer never fires.
        let writer = tokio::spawn(async move {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client.write_all(b"x").await.is_err() {
                    break;
                }
            }
            client
        });
        let mut buf = [0u8; 1];
        let mut got = 0;
        let err = loop {
            match guarded.read(&mut buf).await {
                Ok(_) => got += 1,
                Err(e) => break e,
            }
            assert!(got <= 30, "never closed");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(within(started.elapsed(), 12), "{:?}", started.elapsed());
        assert_eq!((m.connection_max_age_closes.get(), m.connection_idle_timeouts.get()), (1, 0));
        drop(guarded);
        drop(writer.await.unwrap());
        assert_eq!(l.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_authenticated_connection_has_no_maximum_age() {
        let (l, _m) = limits(8, 8, Duration::from_secs(5));
        let p = peer("10.0.0.1:1");
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded =
            Guarded::watched(server, l.admit(p).unwrap(), Duration::from_secs(5), Duration::from_secs(10));
        l.authenticated(p);
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"b").await.unwrap();
        let mut buf = [0u8; 1];
        guarded.read_exact(&mut buf).await.expect("open after a minute");
    }

    #[test]
    fn sessions_fit_the_open_file_limit_next_to_the_unauthenticated_connections() {
        // ulimit -n 300: 150 unauthenticated, 64 spare, 86 sessions.
        assert_eq!(sessions_fit_open_files(Some(300), fit_to_open_files(4096, Some(300))), 86);
        assert_eq!(sessions_fit_open_files(Some(1_048_576), 4096), 1_048_576 - 4096 - 64);
        assert_eq!(sessions_fit_open_files(Some(10), 5), 1);
        assert_eq!(sessions_fit_open_files(None, 4096), usize::MAX);
        let metrics = Metrics::new();
        let mut config = ServeConfig::for_data_dir("/nonexistent");
        config.max_sessions = Some(3);
        config.max_sessions_per_token = 1;
        config.max_sessions_per_account = 2;
        let caps = ConnectionLimits::from_config(&config, &metrics).session_caps();
        assert_eq!((caps.per_token, caps.per_account, caps.total), (1, 2, 3));
        config.max_sessions = Some(10_000_000);
        let l = ConnectionLimits::from_config(&config, &metrics);
        let fitted = sessions_fit_open_files(open_file_limit(), l.max_total());
        assert_eq!(l.session_caps().total, fitted, "never above what the open-file limit leaves");
    }

    #[test]
    fn an_authenticated_connection_no_longer_counts() {
        let (l, m) = limits(2, 2, Duration::from_secs(30));
        let p = peer("10.0.0.1:1000");
        let slot = l.admit(p).unwrap();
        let _other = l.admit(peer("10.0.0.1:1001")).unwrap();
        assert!(l.admit(peer("10.0.0.1:1002")).is_err());
        l.authenticated(p);
        assert_eq!(l.open(), 1);
        let third = l.admit(peer("10.0.0.1:1002")).expect("the authenticated session left the cap");
        drop(slot); // the session ends later: nothing is released twice
        assert_eq!(l.open(), 2);
        drop(third);
        assert_eq!(l.open(), 1);
        assert_eq!(m.unauthenticated_connections.get(), 1);
        l.authenticated(peer("10.0.0.9:1")); // unknown peer: nothing happens
        assert_eq!(l.open(), 1);
    }

    #[test]
    fn refusals_are_counted_by_cap() {
        let (l, m) = limits(4, 3, Duration::from_secs(30));
        let mut held: Vec<_> = ["10.0.0.1:1", "10.0.0.1:2", "10.0.0.2:1", "10.0.0.2:2"]
            .into_iter()
            .map(|p| l.admit(peer(p)).unwrap())
            .collect();
        // Full, and each newcomer's address would hold more than any other: nobody is evicted.
        for p in ["10.0.0.1:3", "10.0.0.2:3"] {
            let cap = l.admit(peer(p)).unwrap_err();
            assert_eq!(cap, Cap::Total);
            l.refused(cap, peer(p));
        }
        held.pop();
        held.push(l.admit(peer("10.0.0.1:3")).unwrap());
        for _ in 0..3 {
            let cap = l.admit(peer("10.0.0.1:4")).unwrap_err();
            assert_eq!(cap, Cap::PerAddress);
            l.refused(cap, peer("10.0.0.1:4"));
        }
        let count = |cap: &str| m.connections_refused.get_or_create(&CapLabel { cap: cap.into() }).get();
        assert_eq!((count("per_address"), count("total")), (3, 2));
        assert_eq!(m.connections_evicted.get(), 0);
    }

    #[test]
    fn the_global_cap_fits_the_open_file_limit() {
        assert_eq!(fit_to_open_files(4096, Some(1024)), 512);
        assert_eq!(fit_to_open_files(100, Some(1024)), 100);
        assert_eq!(fit_to_open_files(4096, None), 4096);
        assert_eq!(fit_to_open_files(4096, Some(1)), 1);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63432                63432                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_file_limit(limits), Some(1024));
        assert_eq!(parse_open_file_limit("Max open files  unlimited  unlimited  files"), None);
        assert_eq!(parse_open_file_limit(""), None);
        assert!(open_file_limit().is_some_and(|n| n > 0), "readable on Linux");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_timeout() {
        let (l, m) = limits(8, 8, Duration::from_secs(5));
        let (client, server) = tokio::io::duplex(64);
        let mut guarded =
            Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5), AGE);
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(within(started.elapsed(), 5), "{:?}", started.elapsed());
        assert_eq!(m.connection_idle_timeouts.get(), 1);
        drop(guarded);
        assert_eq!(l.open(), 0, "closing releases the slot");
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_resets_the_idle_timer() {
        let (l, _m) = limits(8, 8, Duration::from_secs(5));
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded =
            Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5), AGE);
        let started = Instant::now();
        // A byte every 4 s keeps it open (a trickle is bounded by the header timeout instead).
        let writer = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                client.write_all(b"x").await.unwrap();
            }
            client
        });
        let mut buf = [0u8; 1];
        for _ in 0..5 {
            guarded.read_exact(&mut buf).await.unwrap();
        }
        assert!(within(started.elapsed(), 20), "{:?}", started.elapsed());
        let _client = writer.await.unwrap();
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(within(started.elapsed(), 25), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_is_bounded_too() {
        let (l, _m) = limits(8, 8, Duration::from_secs(5));
        let (_client, server) = tokio::io::duplex(16);
        let mut guarded =
            Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5), AGE);
        let err = guarded.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "a peer that does not read");
    }

    #[tokio::test(start_paused = true)]
    async fn authentication_stops_the_idle_timer() {
        let (l, _m) = limits(8, 8, Duration::from_secs(5));
        let p = peer("10.0.0.1:1");
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::watched(server, l.admit(p).unwrap(), Duration::from_secs(5), AGE);
        client.write_all(b"a").await.unwrap();
        let mut buf = [0u8; 1];
        guarded.read_exact(&mut buf).await.unwrap();
        l.authenticated(p);
        assert_eq!(l.open(), 0);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            guarded.read_exact(&mut buf).await.map(|_| buf)
        });
        tokio::time::sleep(Duration::from_secs(3_600)).await; // paused clock: an hour passes at once
        client.write_all(b"b").await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), *b"b", "still open after an idle hour");
    }
}
