//! The lockout of failed admin authentication per source address (in the manner of Vault's
//! user lockout: 5 failures in 15 minutes lock the address out for 15 minutes). A locked
//! address is answered 429 with `Retry-After` before its token is even looked up; a success
//! neither ends a lockout nor forgets earlier failures (they age out with their window).
//!
//! Addresses are keyed as IPv4 addresses and IPv6 /64 prefixes (one host usually owns a whole
//! /64). Memory is bounded: at most [`MAX_TRACKED`] keys, the least recently failing one
//! evicted first, in O(log n). To evict its own entry an attacker must fail from
//! [`MAX_TRACKED`] other keys after its last failure, and each of those keys is counted and
//! locked out in its own right.
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

/// Most source keys tracked at once.
pub const MAX_TRACKED: usize = 100_000;

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
    locked_until: u64,
    seq: u64,
}

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<Key, Slot>,
    /// Keys by the sequence number of their last failure: the first is evicted first.
    order: BTreeMap<u64, Key>,
    next_seq: u64,
}

#[derive(Debug, Default)]
struct LogGate {
    last: Option<u64>,
    suppressed: u64,
}

/// Failure counts and lockouts per source key.
#[derive(Debug)]
pub struct AdminLockout {
    limit: u32,
    window_secs: u64,
    lockout_secs: u64,
    capacity: usize,
    table: Mutex<Table>,
    log: Mutex<LogGate>,
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

    /// Counts a failed authentication from `ip` at `now`. Returns the lockout's length when this
    /// failure starts one. Failures while locked out (requests already in flight) are ignored.
    pub fn record_failure(&self, ip: Option<IpAddr>, now: u64) -> Option<u64> {
        let key = Key::of(ip);
        let mut t = self.table();
        let seq = t.next_seq;
        t.next_seq = t.next_seq.wrapping_add(1);
        let mut slot = match t.slots.remove(&key) {
            Some(old) => {
                t.order.remove(&old.seq);
                old
            }
            None => {
                while t.slots.len() >= self.capacity {
                    let Some((_, oldest)) = t.order.pop_first() else { break };
                    t.slots.remove(&oldest);
                }
                Slot { window_start: now, failures: 0, locked_until: 0, seq }
            }
        };
        slot.seq = seq;
        let mut started = None;
        if slot.locked_until <= now {
            if now >= slot.window_start.saturating_add(self.window_secs) || slot.locked_until != 0 {
                slot = Slot { window_start: now, failures: 0, locked_until: 0, seq };
            }
            slot.failures = slot.failures.saturating_add(1);
            if slot.failures >= self.limit {
                slot.locked_until = now.saturating_add(self.lockout_secs);
                started = Some(self.lockout_secs);
            }
        }
        t.order.insert(seq, key);
        t.slots.insert(key, slot);
        started
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

    #[test]
    fn five_failures_lock_out_for_the_lockout_time() {
        let l = AdminLockout::new(5, 900, 900);
        let a = ip("10.0.0.1");
        for n in 1..=4 {
            assert_eq!(l.record_failure(a, 100), None, "failure {n}");
            assert_eq!(l.retry_after(a, 100), None);
        }
        assert_eq!(l.record_failure(a, 100), Some(900), "the fifth starts the lockout");
        assert_eq!(l.retry_after(a, 100), Some(900));
        assert_eq!(l.retry_after(a, 999), Some(1));
        assert_eq!(l.retry_after(ip("10.0.0.2"), 100), None, "other addresses are not affected");
        assert_eq!(l.record_failure(a, 500), None, "in-flight failures neither extend nor restart it");
        assert_eq!(l.retry_after(a, 500), Some(500));
        assert_eq!(l.retry_after(a, 1_000), None, "over");
        assert_eq!(l.record_failure(a, 1_000), None, "a fresh window after the lockout");
    }

    #[test]
    fn failures_age_out_with_their_window() {
        let l = AdminLockout::new(3, 60, 600);
        let a = ip("10.0.0.1");
        l.record_failure(a, 0);
        l.record_failure(a, 10);
        assert_eq!(l.record_failure(a, 60), None, "the window restarted at 60");
        assert_eq!(l.record_failure(a, 61), None);
        assert_eq!(l.record_failure(a, 62), Some(600));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let l = AdminLockout::new(2, 60, 60);
        l.record_failure(ip("2001:db8:1:2::1"), 0);
        assert_eq!(l.record_failure(ip("2001:db8:1:2:ffff::9"), 0), Some(60), "same /64");
        assert!(l.retry_after(ip("2001:db8:1:2::77"), 0).is_some());
        assert!(l.retry_after(ip("2001:db8:1:3::1"), 0).is_none(), "another /64");
        l.record_failure(ip("192.0.2.1"), 0);
        assert_eq!(l.record_failure(ip("::ffff:192.0.2.1"), 0), Some(60));
        assert!(l.retry_after(ip("192.0.2.1"), 0).is_some());
    }

    #[test]
    fn memory_is_bounded_and_the_least_recent_is_evicted() {
        let l = AdminLockout::with_capacity(1, 600, 600, 3);
        for n in 1..=3u8 {
            l.record_failure(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))), 0);
        }
        assert_eq!(l.tracked(), 3);
        l.record_failure(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), 1);
        l.record_failure(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4))), 1);
        assert_eq!(l.tracked(), 3);
        assert!(l.retry_after(ip("10.0.0.2"), 1).is_none(), "the least recently failing key went");
        assert!(l.retry_after(ip("10.0.0.1"), 1).is_some());
        assert!(l.retry_after(ip("10.0.0.3"), 1).is_some());
        assert!(l.retry_after(ip("10.0.0.4"), 1).is_some());
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
