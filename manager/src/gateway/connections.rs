//! Caps and an idle timeout for connections that have not authenticated: every HTTP
//! connection, and a delegate WebSocket until its handshake succeeds.
//!
//! [`LimitAcceptor`] runs first on every accepted TCP connection (before TLS). Over the global
//! cap or the per-address cap (IPv6: per /64) the connection is closed at once, counted in
//! `tether_connections_refused_total` and logged at most every [`LOG_EVERY`]. An admitted
//! connection holds a [`Slot`] and is wrapped in [`Guarded`], which closes it (an I/O error
//! to whoever reads or writes it) after `http_idle_timeout_secs` without a byte read or
//! written, whatever phase it is in: before the TLS ClientHello is complete, before the first
//! request, between keep-alive requests, or while a response waits for a peer that does not
//! read. When a delegate's handshake succeeds, [`ConnectionLimits::authenticated`] releases
//! its slot and stops the idle timer: an authenticated session no longer counts against the
//! caps and is supervised by its heartbeats instead.
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::ratelimit::AddressKey;
use crate::config::ServeConfig;
use crate::metrics::{CapLabel, Metrics};

/// Refusals are logged at most this often (with the number refused since the last line).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

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

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<AddressKey, usize>,
    /// The open unauthenticated connections by peer address (unique per live TCP connection),
    /// so the delegate endpoint can release the slot of its own connection.
    by_peer: HashMap<SocketAddr, Weak<Slot>>,
}

#[derive(Debug)]
struct Shared {
    max_total: usize,
    max_per_address: usize,
    idle: Duration,
    counts: Mutex<Counts>,
    open: Gauge,
    refused: Family<CapLabel, Counter>,
    idle_timeouts: Counter,
    /// Refusals not yet logged, and when the last log line was written.
    unlogged: AtomicU64,
    last_log: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The caps and the idle timeout, shared by the acceptor and the delegate endpoint. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    shared: Arc<Shared>,
}

/// One unauthenticated connection's place under the caps; released when dropped or when the
/// connection authenticates, whichever is first.
#[derive(Debug)]
pub struct Slot {
    shared: Arc<Shared>,
    peer: SocketAddr,
    key: AddressKey,
    released: AtomicBool,
}

impl Slot {
    /// Whether the slot was released (the connection authenticated, or it is closing).
    fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut counts = self.shared.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_address.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_address.remove(&self.key);
            }
        }
        if counts.by_peer.get(&self.peer).is_some_and(|w| std::ptr::eq(w.as_ptr(), self)) {
            counts.by_peer.remove(&self.peer);
        }
        drop(counts);
        self.shared.open.dec();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

impl ConnectionLimits {
    /// At most `max_total` unauthenticated connections, `max_per_address` of them from one
    /// address, each closed after `idle` without traffic.
    pub fn new(max_total: usize, max_per_address: usize, idle: Duration, metrics: &Metrics) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_total: max_total.max(1),
                max_per_address: max_per_address.max(1),
                idle,
                counts: Mutex::new(Counts::default()),
                open: metrics.unauthenticated_connections.clone(),
                refused: metrics.connections_refused.clone(),
                idle_timeouts: metrics.connection_idle_timeouts.clone(),
                unlogged: AtomicU64::new(0),
                last_log: Mutex::new(None),
            }),
        }
    }

    /// The limits of `config`, with the global cap lowered to half the process's open-file
    /// limit when that is smaller (so unauthenticated connections alone cannot use up the
    /// file descriptors that sessions, the database and the listener need).
    pub fn from_config(config: &ServeConfig, metrics: &Metrics) -> Self {
        let configured = config.max_unauthenticated_connections;
        let max_total = fit_to_open_files(configured, open_file_limit());
        if max_total < configured {
            tracing::warn!(
                max_unauthenticated_connections = configured,
                using = max_total,
                "max_unauthenticated_connections is above half the open-file limit (RLIMIT_NOFILE); using half the limit: raise the limit (LimitNOFILE=, ulimit -n) to allow more"
            );
        }
        let max_per_address = config.max_unauthenticated_per_address.min(max_total);
        Self::new(max_total, max_per_address, Duration::from_secs(config.http_idle_timeout_secs), metrics)
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

    /// Unauthenticated connections open now.
    pub fn open(&self) -> usize {
        self.shared.lock().total
    }

    /// Takes a slot for a connection from `peer`, or says which cap refuses it.
    pub fn admit(&self, peer: SocketAddr) -> Result<Arc<Slot>, Cap> {
        let key = AddressKey::of(peer.ip());
        let mut counts = self.shared.lock();
        if counts.total >= self.shared.max_total {
            return Err(Cap::Total);
        }
        let from_address = counts.per_address.get(&key).copied().unwrap_or(0);
        if from_address >= self.shared.max_per_address {
            return Err(Cap::PerAddress);
        }
        counts.total += 1;
        counts.per_address.insert(key, from_address + 1);
        let slot =
            Arc::new(Slot { shared: self.shared.clone(), peer, key, released: AtomicBool::new(false) });
        counts.by_peer.insert(peer, Arc::downgrade(&slot));
        drop(counts);
        self.shared.open.inc();
        Ok(slot)
    }

    /// The connection from `peer` authenticated as a delegate session: it no longer counts
    /// against the caps, and its idle timer stops.
    pub fn authenticated(&self, peer: SocketAddr) {
        let slot = self.shared.lock().by_peer.remove(&peer).and_then(|w| w.upgrade());
        if let Some(slot) = slot {
            slot.release();
        }
    }

    /// Admits or refuses an accepted TCP connection (TCP_NODELAY is set on admitted ones: the
    /// handshake is a few small frames each way, and Nagle plus delayed ACKs add ~40 ms).
    pub fn accept(&self, stream: TcpStream) -> io::Result<Guarded<TcpStream>> {
        let peer = stream.peer_addr()?;
        match self.admit(peer) {
            Ok(slot) => {
                stream.set_nodelay(true)?;
                Ok(Guarded::watched(stream, slot, self.shared.idle))
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
        s.unlogged.fetch_add(1, Ordering::Relaxed);
        let mut last = s.last_log.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return;
        }
        *last = Some(now);
        drop(last);
        let refused = s.unlogged.swap(0, Ordering::Relaxed);
        let limit = match cap {
            Cap::Total => s.max_total,
            Cap::PerAddress => s.max_per_address,
        };
        tracing::warn!(refused, cap = cap.as_str(), limit, last_address = %AddressKey::of(peer.ip()),
            "refusing connections: too many unauthenticated connections (logged at most every 10 s)");
    }
}

/// Half of `limit` (the soft open-file limit), when that is below `configured`.
pub fn fit_to_open_files(configured: usize, limit: Option<u64>) -> usize {
    match limit {
        Some(limit) => configured.min(usize::try_from(limit / 2).unwrap_or(usize::MAX).max(1)),
        None => configured,
    }
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

/// The idle watch of an unauthenticated connection.
#[derive(Debug)]
struct Watch {
    slot: Arc<Slot>,
    idle: Duration,
    last: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    fired: bool,
}

/// A connection with its [`Slot`]: closed (an `io::ErrorKind::TimedOut` error on read and
/// write) after the idle timeout without progress, until its slot is released by
/// authentication. The slot is released when this is dropped.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    watch: Option<Box<Watch>>,
}

impl<S> Guarded<S> {
    /// `inner`, holding `slot`, closed after `idle` without progress.
    pub fn watched(inner: S, slot: Arc<Slot>, idle: Duration) -> Self {
        let watch = Watch { slot, idle, last: Instant::now(), timer: None, fired: false };
        Self { inner, watch: Some(Box::new(watch)) }
    }

    fn progress(&mut self) {
        if let Some(w) = self.watch.as_mut() {
            w.last = Instant::now();
        }
    }

    /// Called when the inner stream is not ready: an error once the connection has been idle
    /// too long, otherwise pending (with the timer registered to wake the task).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.watch.as_ref().is_some_and(|w| w.slot.is_released()) {
            self.watch = None; // authenticated: supervised by heartbeats from now on
        }
        let Some(w) = self.watch.as_mut() else { return Poll::Pending };
        let deadline = w.last + w.idle;
        let timer = w.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                if !w.fired {
                    w.fired = true;
                    w.slot.shared.idle_timeouts.inc();
                    tracing::debug!(peer = %w.slot.peer, "closing an idle unauthenticated connection");
                }
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
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

    fn limits(total: usize, per: usize, idle: Duration) -> (ConnectionLimits, Metrics) {
        let metrics = Metrics::new();
        (ConnectionLimits::new(total, per, idle, &metrics), metrics)
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
        assert_eq!(l.admit(peer("[2001:db8::2]:1000")).unwrap_err(), Cap::Total);
        assert_eq!(m.unauthenticated_connections.get(), 4);
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
        let (l, m) = limits(2, 1, Duration::from_secs(30));
        let _a = l.admit(peer("10.0.0.1:1")).unwrap();
        for _ in 0..3 {
            let cap = l.admit(peer("10.0.0.1:2")).unwrap_err();
            l.refused(cap, peer("10.0.0.1:2"));
        }
        let _b = l.admit(peer("10.0.0.2:1")).unwrap();
        let cap = l.admit(peer("10.0.0.3:1")).unwrap_err();
        l.refused(cap, peer("10.0.0.3:1"));
        let count = |cap: &str| m.connections_refused.get_or_create(&CapLabel { cap: cap.into() }).get();
        assert_eq!((count("per_address"), count("total")), (3, 1));
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
            Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5));
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
            Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5));
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
            Guarded::watched(server, l.admit(peer("10.0.0.1:1")).unwrap(), Duration::from_secs(5));
        let err = guarded.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "a peer that does not read");
    }

    #[tokio::test(start_paused = true)]
    async fn authentication_stops_the_idle_timer() {
        let (l, _m) = limits(8, 8, Duration::from_secs(5));
        let p = peer("10.0.0.1:1");
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::watched(server, l.admit(p).unwrap(), Duration::from_secs(5));
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
