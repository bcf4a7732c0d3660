//! Which manager address to try next. `MANAGER_HOST_AND_PORT` may list several `host:port`
//! (a replica set), and one name may resolve to several addresses (a DNS name or a compose
//! alias shared by the replicas). Every address of every listed host is tried, in an order
//! shuffled per attempt so delegates spread over the replicas (the first connection too),
//! beginning with the host that answered last, and with the address that last said `goodbye` or refused the
//! handshake (a draining replica, or one cut off from its database) tried last, its host too.
//! Pure: resolving and connecting are the caller's.
use std::net::SocketAddr;

use rand::seq::SliceRandom;
use rand::Rng;

/// What the dialer remembers between attempts.
#[derive(Debug, Default, Clone)]
pub struct DialState {
    /// The index of the endpoint that answered last (tried first); none before the first
    /// session, so delegates given the same list spread over it.
    preferred: Option<usize>,
    /// The address that said `goodbye` last (tried last).
    avoid: Option<SocketAddr>,
    /// The endpoint of that address (tried last among the endpoints).
    avoid_endpoint: Option<usize>,
    /// The endpoint and address of the current session (or of the handshake under way).
    current: Option<(usize, SocketAddr)>,
}

impl DialState {
    /// Endpoint indexes in the order to try: the preferred one first, then the others in a
    /// shuffled order.
    pub fn endpoint_order(&self, count: usize, rng: &mut impl Rng) -> Vec<usize> {
        let first = self.preferred.filter(|p| *p < count && self.avoid_endpoint != Some(*p));
        let mut rest: Vec<usize> = (0..count).filter(|i| Some(*i) != first).collect();
        rest.shuffle(rng);
        let mut order = Vec::with_capacity(count);
        order.extend(first.filter(|_| count > 0));
        order.extend(rest);
        if let Some(i) = self.avoid_endpoint.and_then(|a| order.iter().position(|e| *e == a)) {
            let e = order.remove(i);
            order.push(e);
        }
        order
    }

    /// The resolved addresses of one endpoint in the order to try: shuffled, the address to
    /// avoid last; duplicates dropped.
    pub fn address_order(&self, mut addrs: Vec<SocketAddr>, rng: &mut impl Rng) -> Vec<SocketAddr> {
        addrs.sort();
        addrs.dedup();
        addrs.shuffle(rng);
        if let Some(avoid) = self.avoid {
            if let Some(i) = addrs.iter().position(|a| *a == avoid) {
                let a = addrs.remove(i);
                addrs.push(a);
            }
        }
        addrs
    }

    /// A session was opened to `addr` of endpoint `index`.
    pub fn connected(&mut self, index: usize, addr: SocketAddr) {
        self.preferred = Some(index);
        self.current = Some((index, addr));
        if self.avoid == Some(addr) {
            self.avoid = None;
            self.avoid_endpoint = None;
        }
    }

    /// The current session's manager said `goodbye`, or refused the handshake: try its address
    /// (and its endpoint) last next time.
    pub fn goodbye(&mut self) {
        if let Some((index, addr)) = self.current.take() {
            self.avoid = Some(addr);
            self.avoid_endpoint = Some(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 8443))
    }

    #[test]
    fn every_endpoint_once_shuffled_then_the_preferred_first() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = DialState::default();
        for count in 0..6 {
            let mut order = s.endpoint_order(count, &mut rng);
            order.sort();
            assert_eq!(order, (0..count).collect::<Vec<_>>());
        }
        // Before any session the first endpoint tried is spread over the list.
        let firsts: std::collections::HashSet<usize> =
            (0..50).map(|_| s.endpoint_order(3, &mut rng)[0]).collect();
        assert_eq!(firsts.len(), 3, "delegates given one list spread over it");
        s.connected(3, addr(1));
        assert_eq!(s.endpoint_order(5, &mut rng)[0], 3);
        // A shorter list (configuration changed): shuffled again, every endpoint once.
        let mut order = s.endpoint_order(2, &mut rng);
        order.sort();
        assert_eq!(order, vec![0, 1]);
    }

    #[test]
    fn addresses_are_spread_and_the_goodbye_address_comes_last() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut s = DialState::default();
        let all = vec![addr(1), addr(2), addr(3), addr(2)];
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..50 {
            let order = s.address_order(all.clone(), &mut rng);
            assert_eq!(order.len(), 3, "duplicates dropped");
            firsts.insert(order[0]);
        }
        assert_eq!(firsts.len(), 3, "reconnects spread over every address");
        s.connected(0, addr(2));
        s.goodbye();
        for _ in 0..20 {
            assert_eq!(s.address_order(all.clone(), &mut rng).last(), Some(&addr(2)));
        }
        // Connecting there again (the only one left) clears it.
        s.connected(0, addr(2));
        assert!(s.avoid.is_none());
    }

    #[test]
    fn the_endpoint_that_said_goodbye_or_refused_goes_last_even_when_preferred() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = DialState::default();
        s.connected(0, addr(1));
        s.goodbye();
        for _ in 0..20 {
            let order = s.endpoint_order(3, &mut rng);
            assert_eq!(order.last(), Some(&0), "{order:?}");
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2]);
        }
        // One endpoint only: it is still tried.
        assert_eq!(s.endpoint_order(1, &mut rng), vec![0]);
        // Connected elsewhere: that one is preferred, the refusing one still last.
        s.connected(2, addr(3));
        let order = s.endpoint_order(3, &mut rng);
        assert_eq!((order[0], order[2]), (2, 0));
    }
}
