//! Per-source-address limit on failed handshakes: after `limit` failures within a window the
//! address is answered `rate_limited` (4029) until the window ends. Memory is bounded.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Most addresses tracked at once; beyond this, expired windows are pruned, then the oldest.
const MAX_TRACKED: usize = 100_000;

/// Failure counts per address.
#[derive(Debug)]
pub struct FailureLimiter {
    limit: u32,
    window_secs: u64,
    state: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl FailureLimiter {
    /// `limit` failures per `window_secs`.
    pub fn new(limit: u32, window_secs: u64) -> Self {
        Self { limit, window_secs, state: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u64, u32)>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` is over its limit at `now`.
    pub fn is_limited(&self, ip: IpAddr, now: u64) -> bool {
        match self.lock().get(&ip) {
            Some(&(start, count)) => now < start + self.window_secs && count >= self.limit,
            None => false,
        }
    }

    /// Counts a failed handshake from `ip` at `now`.
    pub fn record_failure(&self, ip: IpAddr, now: u64) {
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            let window = self.window_secs;
            map.retain(|_, (start, _)| now < *start + window);
            if map.len() >= MAX_TRACKED {
                if let Some(oldest) = map.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now >= entry.0 + self.window_secs {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_window() {
        let l = FailureLimiter::new(3, 60);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(!l.is_limited(a, 100));
            l.record_failure(a, 100);
        }
        assert!(l.is_limited(a, 100));
        assert!(!l.is_limited(b, 100));
        assert!(!l.is_limited(a, 160), "window over");
        l.record_failure(a, 160);
        assert!(!l.is_limited(a, 160));
    }
}
