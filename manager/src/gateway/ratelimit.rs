//! Per-source-address limit on failed handshakes. A handshake reserves an in-flight slot for
//! its address before the challenge is sent ([`FailureLimiter::try_begin`]); attempts in
//! flight and failures within the window count against the limit together, so any number of
//! concurrent attempts from one address yields at most `limit` failures per window. A
//! successful handshake releases its slot without counting a failure. IPv6 addresses are
//! keyed by their /64 (one host usually holds a whole /64), IPv4-mapped IPv6 as IPv4.
//!
//! The table is bounded ([`MAX_TRACKED`] addresses) and every operation is O(log n). When it
//! is full, a new address takes the place of an entry whose window has ended, else of the
//! least recently used entry that is under the limit with nothing in flight. An entry that is
//! over its limit (or has attempts in flight) is never evicted, so flooding the table from
//! many addresses cannot reset the counter of an address already limited. When every entry is
//! such an entry, new addresses share one overflow entry with the same limit: fail-safe (they
//! are refused once it is exhausted) with a bounded number of extra attempts.
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

/// Most addresses tracked at once.
pub const MAX_TRACKED: usize = 65_536;

/// Expired entries dropped per call, so the table sheds them without a scan.
const PRUNE_PER_CALL: usize = 2;

/// The unit the limits apply to: an IPv4 address, or the /64 prefix of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressKey {
    /// An IPv4 address (also for IPv4-mapped IPv6 addresses).
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl AddressKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::V4(v4) => std::net::Ipv4Addr::from(v4).fmt(f),
            Self::V6Prefix(p) => write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(p) << 64)),
        }
    }
}

/// One address's (or the overflow's) counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    /// Unix seconds at which the current failure window began.
    window_start: u64,
    /// Failures within that window.
    failures: u32,
    /// Handshakes between `try_begin` and the end of their [`Attempt`].
    in_flight: u32,
    /// When the entry was last used (a counter, for the LRU order).
    touched: u64,
}

impl Entry {
    fn window_end(&self, window: u64) -> u64 {
        self.window_start.saturating_add(window)
    }

    /// Failures that still count at `now`.
    fn failures_at(&self, now: u64, window: u64) -> u32 {
        if now < self.window_end(window) {
            self.failures
        } else {
            0
        }
    }

    /// Starts a new window when the current one is over.
    fn roll(&mut self, now: u64, window: u64) {
        if now >= self.window_end(window) {
            self.window_start = now;
            self.failures = 0;
        }
    }

    fn is_full(&self, now: u64, window: u64, limit: u32) -> bool {
        u64::from(self.failures_at(now, window)) + u64::from(self.in_flight) >= u64::from(limit)
    }
}

/// Where an attempt's slot was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Tracked(AddressKey),
    Overflow,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<AddressKey, Entry>,
    /// Entries with nothing in flight, by the end of their window (expired ones first).
    by_end: BTreeSet<(u64, AddressKey)>,
    /// Entries with nothing in flight and fewer failures than the limit, least recently used
    /// first: the ones that may give way to a new address.
    under: BTreeSet<(u64, AddressKey)>,
    /// Shared by new addresses while the table is full of entries that may not be evicted.
    overflow: Entry,
    tick: u64,
}

impl Table {
    fn next_tick(&mut self) -> u64 {
        self.tick = self.tick.wrapping_add(1);
        self.tick
    }

    /// Takes `key`'s entry out of the indexes (before it changes).
    fn unindex(&mut self, key: AddressKey, e: &Entry, window: u64) {
        self.by_end.remove(&(e.window_end(window), key));
        self.under.remove(&(e.touched, key));
    }

    /// Puts `key`'s entry back: removed when it holds nothing, indexed when idle.
    fn store(&mut self, key: AddressKey, e: Entry, window: u64, limit: u32) {
        if e.in_flight == 0 && e.failures == 0 {
            self.entries.remove(&key);
            return;
        }
        if e.in_flight == 0 {
            self.by_end.insert((e.window_end(window), key));
            if e.failures < limit {
                self.under.insert((e.touched, key));
            }
        }
        self.entries.insert(key, e);
    }

    fn remove(&mut self, key: AddressKey, window: u64) {
        if let Some(e) = self.entries.remove(&key) {
            self.unindex(key, &e, window);
        }
    }

    /// Drops a few entries whose window has ended.
    fn prune(&mut self, now: u64, window: u64) {
        for _ in 0..PRUNE_PER_CALL {
            match self.by_end.first() {
                Some(&(end, key)) if end <= now => self.remove(key, window),
                _ => break,
            }
        }
    }

    /// Makes room for one more entry; `false` when every entry must be kept.
    fn make_room(&mut self, now: u64, window: u64, capacity: usize) -> bool {
        if self.entries.len() < capacity {
            return true;
        }
        let victim = match (self.by_end.first(), self.under.first()) {
            (Some(&(end, key)), _) if end <= now => Some(key),
            (_, Some(&(_, key))) => Some(key),
            _ => None,
        };
        match victim {
            Some(key) => {
                self.remove(key, window);
                true
            }
            None => false,
        }
    }
}

/// Failure and in-flight counts per address (see the module documentation).
#[derive(Debug)]
pub struct FailureLimiter {
    limit: u32,
    window_secs: u64,
    capacity: usize,
    table: Mutex<Table>,
}

/// A reserved handshake slot; dropping it ends the attempt (a failure is counted separately,
/// with [`FailureLimiter::record_failure`], before the attempt ends).
#[derive(Debug)]
#[must_use = "the slot is released when the attempt is dropped"]
pub struct Attempt<'a> {
    limiter: &'a FailureLimiter,
    bucket: Bucket,
    begun_at: u64,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.limiter.end(self.bucket, self.begun_at);
    }
}

impl FailureLimiter {
    /// `limit` failures (attempts in flight included) per `window_secs`, [`MAX_TRACKED`]
    /// addresses at most.
    pub fn new(limit: u32, window_secs: u64) -> Self {
        Self::with_capacity(limit, window_secs, MAX_TRACKED)
    }

    /// Like [`FailureLimiter::new`] with a table of `capacity` addresses (at least 1).
    pub fn with_capacity(limit: u32, window_secs: u64, capacity: usize) -> Self {
        Self {
            limit: limit.max(1),
            window_secs,
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a handshake slot for `ip` at `now`; `None` when its failures and attempts in
    /// flight already reach the limit (answer `rate_limited`).
    pub fn try_begin(&self, ip: IpAddr, now: u64) -> Option<Attempt<'_>> {
        let (window, limit) = (self.window_secs, self.limit);
        let key = AddressKey::of(ip);
        let mut t = self.lock();
        t.prune(now, window);
        let tick = t.next_tick();
        if let Some(mut e) = t.entries.get(&key).copied() {
            if e.is_full(now, window, limit) {
                return None;
            }
            t.unindex(key, &e, window);
            e.roll(now, window);
            e.in_flight = e.in_flight.saturating_add(1);
            e.touched = tick;
            t.store(key, e, window, limit);
            return Some(Attempt { limiter: self, bucket: Bucket::Tracked(key), begun_at: now });
        }
        if t.make_room(now, window, self.capacity) {
            let e = Entry { window_start: now, failures: 0, in_flight: 1, touched: tick };
            t.store(key, e, window, limit);
            return Some(Attempt { limiter: self, bucket: Bucket::Tracked(key), begun_at: now });
        }
        if t.overflow.is_full(now, window, limit) {
            return None;
        }
        t.overflow.roll(now, window);
        t.overflow.in_flight = t.overflow.in_flight.saturating_add(1);
        Some(Attempt { limiter: self, bucket: Bucket::Overflow, begun_at: now })
    }

    /// Counts a failed handshake from `ip` at `now` (normally while its [`Attempt`] is held).
    pub fn record_failure(&self, ip: IpAddr, now: u64) {
        let (window, limit) = (self.window_secs, self.limit);
        let key = AddressKey::of(ip);
        let mut t = self.lock();
        let tick = t.next_tick();
        let mut e = match t.entries.get(&key).copied() {
            Some(e) => {
                t.unindex(key, &e, window);
                e
            }
            None => {
                // Not tracked while an attempt is held: the attempt went to the overflow entry
                // (an entry with attempts in flight is never evicted).
                let overflow = t.overflow.in_flight > 0 || !t.make_room(now, window, self.capacity);
                if overflow {
                    t.overflow.roll(now, window);
                    t.overflow.failures = t.overflow.failures.saturating_add(1);
                    return;
                }
                Entry { window_start: now, ..Entry::default() }
            }
        };
        e.roll(now, window);
        e.failures = e.failures.saturating_add(1);
        e.touched = tick;
        t.store(key, e, window, limit);
    }

    /// Whether a handshake from `ip` would be refused at `now`.
    pub fn is_limited(&self, ip: IpAddr, now: u64) -> bool {
        let t = self.lock();
        t.entries.get(&AddressKey::of(ip)).is_some_and(|e| e.is_full(now, self.window_secs, self.limit))
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().entries.len()
    }

    fn end(&self, bucket: Bucket, begun_at: u64) {
        let (window, limit) = (self.window_secs, self.limit);
        let mut t = self.lock();
        match bucket {
            Bucket::Overflow => t.overflow.in_flight = t.overflow.in_flight.saturating_sub(1),
            Bucket::Tracked(key) => {
                let Some(mut e) = t.entries.get(&key).copied() else { return };
                t.unindex(key, &e, window);
                e.in_flight = e.in_flight.saturating_sub(1);
                if e.in_flight == 0 && e.failures_at(begun_at, window) == 0 {
                    e.failures = 0; // nothing left to count: dropped by `store`
                }
                t.store(key, e, window, limit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// One complete failed handshake from `a` at `now`; `false` if it was refused up front.
    fn failed(l: &FailureLimiter, a: IpAddr, now: u64) -> bool {
        match l.try_begin(a, now) {
            Some(attempt) => {
                l.record_failure(a, now);
                drop(attempt);
                true
            }
            None => false,
        }
    }

    #[test]
    fn limits_per_address_and_window() {
        let l = FailureLimiter::new(3, 60);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        for _ in 0..3 {
            assert!(failed(&l, a, 100));
        }
        assert!(l.is_limited(a, 100));
        assert!(l.try_begin(a, 159).is_none(), "still within the window");
        assert!(l.try_begin(b, 100).is_some(), "another address is unaffected");
        assert!(!l.is_limited(a, 160), "window over");
        assert!(failed(&l, a, 160));
        assert!(!l.is_limited(a, 160), "a new window counts from zero");
    }

    #[test]
    fn concurrent_attempts_cannot_overshoot_the_limit() {
        let l = FailureLimiter::new(20, 60);
        let a = ip("127.0.0.5");
        // 500 handshakes begin before any of them fails (the finding: all 500 were let in).
        let attempts: Vec<_> = (0..500).filter_map(|_| l.try_begin(a, 100)).collect();
        assert_eq!(attempts.len(), 20, "at most `limit` attempts in flight");
        for attempt in attempts {
            l.record_failure(a, 100);
            drop(attempt);
        }
        assert!(l.try_begin(a, 100).is_none(), "20 failures: limited");
    }

    #[test]
    fn a_success_releases_its_slot_without_counting_a_failure() {
        let l = FailureLimiter::new(2, 60);
        let a = ip("10.0.0.1");
        for _ in 0..100 {
            let attempt = l.try_begin(a, 100).expect("successes never use up the limit");
            drop(attempt);
        }
        assert_eq!(l.tracked(), 0, "an address with only successes leaves no entry");
        let first = l.try_begin(a, 100).unwrap();
        let second = l.try_begin(a, 100).unwrap();
        assert!(l.try_begin(a, 100).is_none(), "two in flight reach a limit of 2");
        drop(first);
        assert!(l.try_begin(a, 100).is_some(), "a finished attempt frees its slot");
        drop(second);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let l = FailureLimiter::new(2, 60);
        assert!(failed(&l, ip("2001:db8:1:2::1"), 100));
        assert!(failed(&l, ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 100));
        assert!(l.is_limited(ip("2001:db8:1:2::abcd"), 100), "the whole /64 is one address");
        assert!(!l.is_limited(ip("2001:db8:1:3::1"), 100), "the next /64 is another");
        assert!(failed(&l, ip("192.0.2.7"), 100));
        assert!(failed(&l, ip("::ffff:192.0.2.7"), 100));
        assert!(l.is_limited(ip("192.0.2.7"), 100));
        assert_eq!(AddressKey::of(ip("2001:db8:1:2::9")).to_string(), "2001:db8:1:2::/64");
        assert_eq!(AddressKey::of(ip("::ffff:192.0.2.7")).to_string(), "192.0.2.7");
    }

    #[test]
    fn flooding_new_addresses_cannot_reset_a_limited_address() {
        let l = FailureLimiter::with_capacity(3, 60, 4);
        let victim = ip("10.0.0.1");
        for _ in 0..3 {
            assert!(failed(&l, victim, 100));
        }
        // Thousands of new addresses, each failing once: the table stays bounded, and the
        // limited address keeps its counter however often the others are evicted.
        for i in 0..5_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            failed(&l, a, 100);
            assert!(l.tracked() <= 4);
        }
        assert!(l.try_begin(victim, 110).is_none(), "still limited");
        assert!(l.try_begin(victim, 160).is_some(), "until its own window ends");
    }

    #[test]
    fn evicts_expired_entries_first_then_the_least_recently_used_under_the_limit() {
        let l = FailureLimiter::with_capacity(2, 60, 3);
        let [x, a, b, c, d] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"].map(ip);
        assert!(failed(&l, x, 10)); // window ends at 70
        assert!(failed(&l, a, 65));
        assert!(failed(&l, b, 66));
        // Full; at 75 x's window is over: x gives way, a and b keep their failure.
        assert!(failed(&l, c, 75));
        assert_eq!(l.tracked(), 3);
        // Full, nothing expired: the least recently used entry under the limit (a) gives way.
        assert!(failed(&l, d, 76));
        assert!(failed(&l, b, 77));
        assert!(l.is_limited(b, 77), "b kept its first failure");
        assert!(!l.is_limited(a, 77));
        // a comes back: c (least recently used under the limit) gives way; b, limited, stays.
        assert!(failed(&l, a, 77));
        assert!(failed(&l, a, 77));
        assert!(l.is_limited(a, 77) && l.is_limited(b, 77));
        assert_eq!(l.tracked(), 3);
    }

    #[test]
    fn a_table_full_of_limited_addresses_fails_safe() {
        let l = FailureLimiter::with_capacity(2, 60, 2);
        for a in [ip("10.0.0.1"), ip("10.0.0.2")] {
            assert!(failed(&l, a, 100));
            assert!(failed(&l, a, 100));
        }
        // New addresses share one overflow entry with the same limit: two more failures in
        // all, then every new address is refused until a window ends.
        assert!(failed(&l, ip("10.0.1.1"), 100));
        assert!(failed(&l, ip("10.0.1.2"), 100));
        assert!(l.try_begin(ip("10.0.1.3"), 100).is_none());
        assert!(l.try_begin(ip("10.0.1.4"), 159).is_none());
        assert_eq!(l.tracked(), 2);
        assert!(l.try_begin(ip("10.0.1.5"), 160).is_some(), "windows over: room again");
    }

    #[test]
    fn the_overflow_entry_also_counts_attempts_in_flight() {
        let l = FailureLimiter::with_capacity(2, 60, 1);
        assert!(failed(&l, ip("10.0.0.1"), 100));
        assert!(failed(&l, ip("10.0.0.1"), 100));
        let one = l.try_begin(ip("10.0.0.2"), 100).unwrap();
        let two = l.try_begin(ip("10.0.0.3"), 100).unwrap();
        assert!(l.try_begin(ip("10.0.0.4"), 100).is_none());
        drop((one, two));
        assert!(l.try_begin(ip("10.0.0.4"), 100).is_some(), "successes free the overflow's slots");
    }

    #[test]
    fn entries_with_attempts_in_flight_are_never_evicted() {
        let l = FailureLimiter::with_capacity(3, 60, 1);
        let a = ip("10.0.0.1");
        let held = l.try_begin(a, 100).unwrap();
        l.record_failure(a, 100);
        // The table is full with an entry in flight: another address goes to the overflow.
        let other = l.try_begin(ip("10.0.0.2"), 100).unwrap();
        l.record_failure(ip("10.0.0.2"), 100);
        drop(other);
        drop(held);
        assert!(l.try_begin(a, 100).is_some());
        assert_eq!(l.tracked(), 1);
    }
}
