//! How many sessions still have a revocation's final frames to send, so a session that sent
//! its own can leave its teardown until the rest are out ([`FinalFrames::quiet`]).
//!
//! A revoke of a token with thousands of live sessions wakes them all at once. Each then does
//! two things: sends its signed `revoked` and the close frame (what the delegate must see),
//! and tears down (reads the delegate's close, closes the socket, deregisters it: most of a
//! session's CPU, in the kernel). Done in wake-up order, the last delegate learns of the
//! revocation only after nearly every other session's teardown too; with the teardown
//! deferred while final frames are pending, it learns after their frames only
//! (BENCHMARKS.md, "Against bare baselines"). The wait is bounded, so a session whose frames
//! cannot go out (a delegate that stopped reading) delays no one's cleanup for long.
//!
//! Each session's mailbox carries a flag, set when a revocation for it is queued and cleared
//! when it has sent its frames (or its command receiver is dropped, however its task ends);
//! the count moves with the flag, so it is never counted twice and never left behind.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The count of sessions with final frames still to send, and who waits for it to reach 0.
#[derive(Debug, Default)]
pub struct FinalFrames {
    pending: AtomicUsize,
    quiet: Notify,
}

impl FinalFrames {
    /// Counts the session whose mailbox has `flag`, unless it is counted already.
    pub(super) fn expect(&self, flag: &AtomicBool) {
        // Counted before the flag is set: whoever clears the flag finds the count there.
        self.pending.fetch_add(1, Ordering::AcqRel);
        if flag.swap(true, Ordering::AcqRel) {
            self.done_one();
        }
    }

    /// Uncounts the session whose mailbox has `flag`, if it is counted; whether it was.
    pub(super) fn release(&self, flag: &AtomicBool) -> bool {
        let counted = flag.swap(false, Ordering::AcqRel);
        if counted {
            self.done_one();
        }
        counted
    }

    fn done_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.quiet.notify_waiters();
        }
    }

    /// How many sessions still have final frames to send.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Returns once no session has final frames to send, or after `within`.
    pub async fn quiet(&self, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            loop {
                // Made before the check: a `notify_waiters` after it still completes it.
                let notified = self.quiet.notified();
                if self.pending() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_is_counted_once_and_released_once() {
        let (frames, flag) = (FinalFrames::default(), AtomicBool::new(false));
        frames.expect(&flag);
        frames.expect(&flag);
        assert_eq!(frames.pending(), 1, "a second revocation of the same session counts once");
        assert!(frames.release(&flag));
        assert!(!frames.release(&flag));
        assert_eq!(frames.pending(), 0, "released once, never below 0");
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_returns_when_the_last_session_is_released_or_at_the_bound() {
        let frames = std::sync::Arc::new(FinalFrames::default());
        let flags: Vec<AtomicBool> = (0..3).map(|_| AtomicBool::new(false)).collect();
        flags.iter().for_each(|f| frames.expect(f));
        let waiter = {
            let frames = frames.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                frames.quiet(Duration::from_secs(60)).await;
                started.elapsed()
            })
        };
        tokio::task::yield_now().await;
        frames.release(&flags[0]);
        frames.release(&flags[1]);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one session still has frames to send");
        tokio::time::advance(Duration::from_secs(1)).await;
        frames.release(&flags[2]);
        assert_eq!(waiter.await.unwrap(), Duration::from_secs(1), "woken by the last release");

        // Never released: the bound ends the wait.
        frames.expect(&flags[0]);
        let started = tokio::time::Instant::now();
        frames.quiet(Duration::from_secs(2)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
