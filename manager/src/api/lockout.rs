//! The lockout of failed admin authentication per source address (in the manner of Vault's
//! user lockout: 5 failures in 15 minutes lock the address out for 15 minutes). A locked
//! address is answered 429 with `Retry-After` before its token is even looked up; a success
//! neither ends a lockout nor forgets earlier failures (they age out with their window).
//!
//! The limit holds under concurrency: an authentication reserves an in-flight slot
//! ([`AdminLockout::try_begin`]) before its token is looked up, and failures plus attempts in
//! flight count against the limit together, so any number of concurrent requests from one
//! address yields at most `limit` failures per window. A request that finds no free slot waits
//! (bounded) for one to be released ([`AdminLockout::begin`]); an honest client's parallel
//! requests therefore only queue for the few milliseconds a lookup takes.
//!
//! Addresses are keyed as IPv4 addresses and IPv6 /64 prefixes (one host usually owns a whole
//! /64). Memory is bounded: at most [`MAX_TRACKED`] keys, the least recently used one evicted
//! first, in O(log n). To evict its own entry an attacker must use [`MAX_TRACKED`] other keys
//! after its last attempt, and each of those keys is counted and locked out in its own right.
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Most source keys tracked at once.
pub const MAX_TRACKED: usize = 100_000;

/// How long a request waits for an in-flight slot of its address before it is refused.
pub const SLOT_WAIT: Duration = Duration::from_secs(5);

/// What failures are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// An IPv4 address (also an IPv4-mapped IPv6 one).
    V4(Ipv4Addr),
    /// The /64 prefix of an IPv6 address.
    V6(u64),
    /// No peer address known (only in-process callers without `ConnectInfo`).
    Unknown,
}

impl Key {
    /// The key of `ip`.
    pub fn of(ip: Option<IpAddr>) -> Self {
        match ip {
            None => Self::Unknown,
            Some(IpAddr::V4(v4)) => Self::V4(v4),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    window_start: u64,
    failures: u32,
    in_flight: u32,
    locked_until: u64,
    seq: u64,
}

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<Key, Slot>,
    /// Keys by the sequence number of their last use: the first is evicted first.
    order: BTreeMap<u64, Key>,
    next_seq: u64,
}

impl Table {
    /// The slot of `key`, moved to the end of the eviction order (created if missing).
    fn touch(&mut self, key: Key, now: u64, capacity: usize) -> &mut Slot {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let slot = match self.slots.remove(&key) {
            Some(mut old) => {
                self.order.remove(&old.seq);
                old.seq = seq;
                old
            }
            None => {
                while self.slots.len() >= capacity {
                    let Some((_, oldest)) = self.order.pop_first() else { break };
                    self.slots.remove(&oldest);
                }
                Slot { window_start: now, failures: 0, in_flight: 0, locked_until: 0, seq }
            }
        };
        self.order.insert(seq, key);
        self.slots.entry(key).or_insert(slot)
    }
}

#[derive(Debug, Default)]
struct LogGate {
    last: Option<u64>,
    suppressed: u64,
}

/// Why an authentication may not go ahead now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Locked out for this many more seconds (at least 1).
    Locked(u64),
    /// Every slot of the address is taken by attempts in flight.
    Busy,
}

/// Failure counts and lockouts per source key.
#[derive(Debug)]
pub struct AdminLockout {
    limit: u32,
    window_secs: u64,
    lockout_secs: u64,
    capacity: usize,
    table: Mutex<Table>,
    released: Notify,
    log: Mutex<LogGate>,
}

/// An authentication in flight: holds one slot of its address until it is resolved with
/// [`Attempt::failed`] or dropped (a success, or a request that ended early: no failure).
#[derive(Debug)]
pub struct Attempt {
    lockout: Arc<AdminLockout>,
    key: Key,
    resolved: bool,
}

impl Attempt {
    /// Counts the failure; returns the lockout's length when it starts one.
    pub fn failed(mut self, now: u64) -> Option<u64> {
        self.resolved = true;
        let started = self.lockout.release(self.key, now, true);
        self.lockout.released.notify_waiters();
        started
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.resolved {
            self.lockout.release(self.key, 0, false);
            self.lockout.released.notify_waiters();
        }
    }
}

impl AdminLockout {
    /// `limit` failures within `window_secs` lock a key out for `lockout_secs`.
    pub fn new(limit: u32, window_secs: u64, lockout_secs: u64) -> Self {
        Self::with_capacity(limit, window_secs, lockout_secs, MAX_TRACKED)
    }

    fn with_capacity(limit: u32, window_secs: u64, lockout_secs: u64, capacity: usize) -> Self {
        Self {
            limit: limit.max(1),
            window_secs: window_secs.max(1),
            lockout_secs: lockout_secs.max(1),
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
            released: Notify::new(),
            log: Mutex::new(LogGate::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds until `ip`'s lockout ends (at least 1), or `None` when it is not locked out.
    pub fn retry_after(&self, ip: Option<IpAddr>, now: u64) -> Option<u64> {
        let t = self.table();
        t.slots.get(&Key::of(ip)).filter(|s| s.locked_until > now).map(|s| s.locked_until - now)
    }

    /// Reserves a slot for an authentication from `ip` at `now`, or says why not.
    pub fn try_begin(self: &Arc<Self>, ip: Option<IpAddr>, now: u64) -> Result<Attempt, Refusal> {
        let key = Key::of(ip);
        let mut t = self.table();
        let slot = t.touch(key, now, self.capacity);
        if slot.locked_until > now {
            return Err(Refusal::Locked(slot.locked_until - now));
        }
        if slot.locked_until != 0 || now >= slot.window_start.saturating_add(self.window_secs) {
            // The lockout or the window is over: a fresh window (attempts in flight stay).
            slot.window_start = now;
            slot.failures = 0;
            slot.locked_until = 0;
        }
        if slot.failures.saturating_add(slot.in_flight) >= self.limit {
            return Err(Refusal::Busy);
        }
        slot.in_flight += 1;
        Ok(Attempt { lockout: self.clone(), key, resolved: false })
    }

    /// Like [`AdminLockout::try_begin`], but waits (at most [`SLOT_WAIT`]) while the address's
    /// slots are all in flight. `now` is read again after every wait.
    pub async fn begin(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        now: impl Fn() -> u64,
    ) -> Result<Attempt, Refusal> {
        let deadline = tokio::time::Instant::now() + SLOT_WAIT;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.try_begin(ip, now()) {
                Err(Refusal::Busy) => {}
                other => return other,
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(Refusal::Busy);
            }
        }
    }

    fn release(&self, key: Key, now: u64, failed: bool) -> Option<u64> {
        let mut t = self.table();
        // An entry evicted meanwhile has nothing left to release.
        let slot = t.slots.get_mut(&key)?;
        slot.in_flight = slot.in_flight.saturating_sub(1);
        if !failed || slot.locked_until > now {
            return None;
        }
        if now >= slot.window_start.saturating_add(self.window_secs) {
            slot.window_start = now;
            slot.failures = 0;
        }
        slot.failures = slot.failures.saturating_add(1);
        if slot.failures < self.limit {
            return None;
        }
        slot.locked_until = now.saturating_add(self.lockout_secs);
        Some(self.lockout_secs)
    }

    /// Whether a lockout may be logged at `now` (at most one line per second in all); returns
    /// how many were not logged since the last line.
    pub fn may_log(&self, now: u64) -> Option<u64> {
        let mut g = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if g.last == Some(now) {
            g.suppressed = g.suppressed.saturating_add(1);
            return None;
        }
        g.last = Some(now);
        Some(std::mem::take(&mut g.suppressed))
    }

    /// The failure limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        self.table().slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn lockout(limit: u32, window: u64, lock: u64) -> Arc<AdminLockout> {
        Arc::new(AdminLockout::new(limit, window, lock))
    }

    /// One failed attempt; the lockout length if it started one.
    fn fail(l: &Arc<AdminLockout>, ip: Option<IpAddr>, now: u64) -> Result<Option<u64>, Refusal> {
        Ok(l.try_begin(ip, now)?.failed(now))
    }

    #[test]
    fn five_failures_lock_out_for_the_lockout_time() {
        let l = lockout(5, 900, 900);
        let a = ip("10.0.0.1");
        for n in 1..=4 {
            assert_eq!(fail(&l, a, 100), Ok(None), "failure {n}");
        }
        assert_eq!(fail(&l, a, 100), Ok(Some(900)), "the fifth starts the lockout");
        assert_eq!(l.retry_after(a, 100), Some(900));
        assert_eq!(l.retry_after(a, 999), Some(1));
        assert_eq!(fail(&l, a, 500), Err(Refusal::Locked(500)), "refused before any lookup");
        assert!(l.try_begin(ip("10.0.0.2"), 100).is_ok(), "other addresses are not affected");
        assert_eq!(l.retry_after(a, 1_000), None, "over");
        assert_eq!(fail(&l, a, 1_000), Ok(None), "a fresh window after the lockout");
    }

    #[test]
    fn a_success_neither_ends_a_lockout_nor_forgets_failures() {
        let l = lockout(3, 900, 900);
        let a = ip("10.0.0.1");
        fail(&l, a, 0).unwrap();
        fail(&l, a, 0).unwrap();
        drop(l.try_begin(a, 1).unwrap()); // a success
        assert_eq!(fail(&l, a, 2), Ok(Some(900)), "the success did not reset the count");
        assert!(matches!(l.try_begin(a, 3), Err(Refusal::Locked(_))), "nor does it end the lockout");
    }

    #[test]
    fn failures_age_out_with_their_window() {
        let l = lockout(3, 60, 600);
        let a = ip("10.0.0.1");
        fail(&l, a, 0).unwrap();
        fail(&l, a, 10).unwrap();
        assert_eq!(fail(&l, a, 60), Ok(None), "the window restarted at 60");
        assert_eq!(fail(&l, a, 61), Ok(None));
        assert_eq!(fail(&l, a, 62), Ok(Some(600)));
    }

    #[test]
    fn concurrent_attempts_cannot_exceed_the_limit() {
        let l = lockout(5, 900, 900);
        let a = ip("10.0.0.1");
        let attempts: Vec<Attempt> = (0..5).map(|_| l.try_begin(a, 0).unwrap()).collect();
        assert_eq!(l.try_begin(a, 0).unwrap_err(), Refusal::Busy, "every slot is in flight");
        let mut started = Vec::new();
        for at in attempts {
            started.push(at.failed(0));
        }
        assert_eq!(started.iter().flatten().count(), 1, "exactly one lockout");
        assert!(matches!(l.try_begin(a, 0), Err(Refusal::Locked(_))));
        // Successes give their slot back.
        let b = ip("10.0.0.2");
        for _ in 0..20 {
            drop(l.try_begin(b, 0).unwrap());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn begin_waits_for_a_free_slot_and_gives_up_after_the_bound() {
        let l = lockout(1, 900, 900);
        let a = ip("10.0.0.1");
        let held = l.try_begin(a, 0).unwrap();
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.begin(a, || 0).await.map(drop) })
        };
        tokio::task::yield_now().await;
        drop(held); // a success releases the slot
        assert_eq!(waiter.await.unwrap(), Ok(()), "the waiter got the slot");
        let held = l.try_begin(a, 0).unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(l.begin(a, || 0).await.unwrap_err(), Refusal::Busy);
        assert_eq!(started.elapsed(), SLOT_WAIT);
        assert_eq!(held.failed(0), Some(900));
        assert!(matches!(l.begin(a, || 0).await, Err(Refusal::Locked(900))));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let l = lockout(2, 60, 60);
        fail(&l, ip("2001:db8:1:2::1"), 0).unwrap();
        assert_eq!(fail(&l, ip("2001:db8:1:2:ffff::9"), 0), Ok(Some(60)), "same /64");
        assert!(l.retry_after(ip("2001:db8:1:2::77"), 0).is_some());
        assert!(l.retry_after(ip("2001:db8:1:3::1"), 0).is_none(), "another /64");
        fail(&l, ip("192.0.2.1"), 0).unwrap();
        assert_eq!(fail(&l, ip("::ffff:192.0.2.1"), 0), Ok(Some(60)));
        assert!(l.retry_after(ip("192.0.2.1"), 0).is_some());
    }

    #[test]
    fn memory_is_bounded_and_the_least_recent_is_evicted() {
        let l = Arc::new(AdminLockout::with_capacity(1, 600, 600, 3));
        let n = |n: u8| Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)));
        for k in 1..=3u8 {
            fail(&l, n(k), 0).unwrap();
        }
        assert_eq!(l.tracked(), 3);
        assert!(l.try_begin(n(1), 1).is_err(), "touches 10.0.0.1");
        fail(&l, n(4), 1).unwrap();
        assert_eq!(l.tracked(), 3);
        assert!(l.retry_after(n(2), 1).is_none(), "the least recently used key went");
        for k in [1, 3, 4] {
            assert!(l.retry_after(n(k), 1).is_some(), "10.0.0.{k}");
        }
    }

    #[test]
    fn logging_is_rate_limited() {
        let l = AdminLockout::new(1, 1, 1);
        assert_eq!(l.may_log(5), Some(0));
        assert_eq!(l.may_log(5), None);
        assert_eq!(l.may_log(5), None);
        assert_eq!(l.may_log(6), Some(2));
    }
}
