//! Reconnect delays: exponential backoff with full jitter, capped (60 s by default), and the
//! short jittered delay after a `goodbye`. Pure functions of an attempt count and a random
//! source, so they are tested without sleeping.
use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: attempt `n` waits a uniform random time in
/// `[0, min(cap, base * 2^n)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

/// Default first ceiling.
pub const BASE: Duration = Duration::from_millis(500);
/// Default cap.
pub const CAP: Duration = Duration::from_secs(60);
/// Upper bound of the delay before reconnecting after the manager's `goodbye`: short, since
/// in a replica set the delegate goes to another replica (the one that said goodbye is tried
/// last), and a restarting single manager refuses the first attempts anyway (backoff then).
pub const GOODBYE_MAX: Duration = Duration::from_secs(1);

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BASE, CAP)
    }
}

impl Backoff {
    /// A backoff starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, attempt: 0 }
    }

    /// The ceiling for the current attempt, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).map_or(self.cap, |d| d.min(self.cap))
    }

    /// The next delay (full jitter), and one more attempt counted.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        jitter(ceiling, rng)
    }

    /// Forget failures: called after a session authenticated.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures counted since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// A uniform random duration in `[0, max]`.
pub fn jitter(max: Duration, rng: &mut impl Rng) -> Duration {
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.gen_range(0..=millis))
}

/// The delay before reconnecting after the manager said `goodbye`: prompt, but jittered so
/// that a restart does not bring every delegate back in the same instant.
pub fn after_goodbye(rng: &mut impl Rng) -> Duration {
    Duration::from_millis(100) + jitter(GOODBYE_MAX, rng)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let mut rng = StdRng::seed_from_u64(1);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(backoff.ceiling());
            backoff.next_delay(&mut rng);
        }
        let secs: Vec<f64> = ceilings.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0, 60.0]);
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_are_spread() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..40u32 {
            let mut backoff = Backoff::default();
            for _ in 0..attempt {
                backoff.next_delay(&mut rng);
            }
            let ceiling = backoff.ceiling();
            assert!(ceiling <= CAP);
            let delays: Vec<Duration> = (0..200).map(|_| backoff.clone().next_delay(&mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling));
            // Full jitter: both halves of the range are used.
            assert!(delays.iter().any(|d| *d < ceiling / 2));
            assert!(delays.iter().any(|d| *d > ceiling / 2));
        }
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(1), CAP);
        backoff.attempt = u32::MAX;
        assert_eq!(backoff.ceiling(), CAP);
        let mut rng = StdRng::seed_from_u64(3);
        assert!(backoff.next_delay(&mut rng) <= CAP);
        assert_eq!(backoff.attempts(), u32::MAX);
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::default();
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..5 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert_eq!(backoff.ceiling(), BASE);
    }

    #[test]
    fn goodbye_delay_is_prompt_and_jittered() {
        let mut rng = StdRng::seed_from_u64(9);
        let delays: Vec<Duration> = (0..200).map(|_| after_goodbye(&mut rng)).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(100) && *d <= GOODBYE_MAX + Duration::from_millis(100)));
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(*max - *min > GOODBYE_MAX / 2, "not spread: {min:?}..{max:?}");
    }
}
