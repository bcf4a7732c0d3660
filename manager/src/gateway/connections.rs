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
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum_server::accept::Accept;
use futures_util::task::AtomicWaker;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use uuid::Uuid;

use super::ratelimit::AddressKey;
use crate::config::ServeConfig;
use crate::metrics::{CapLabel, Metrics};
use crate::registry::{CapHit, Caps as SessionCaps};

mod guarded;
mod open_files;
pub use guarded::Guarded;
pub use open_files::{fit_to_open_files, open_file_limit, parse_open_file_limit, sessions_fit_open_files};

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
mod tests;
