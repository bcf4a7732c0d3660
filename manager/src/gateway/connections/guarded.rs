//! [`Guarded`]: an admitted connection that closes itself (an I/O error to whoever reads or
//! writes it) when its slot is evicted, after the idle timeout, or at its maximum age, until
//! its delegate handshake succeeds.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::{Slot, AUTHENTICATED, EVICTED};

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
