//! Bounded polling, the one way these tests wait for state: check a condition every
//! [`INTERVAL`] until it holds or a deadline passes (never a fixed sleep). A probe that fails
//! counts as "not yet"; the last failure is named in the timeout error.
//!
//! [`until`] is for async tests (its deadline is `tokio::time`'s, so it also works under
//! `tokio::time::pause()`); [`until_blocking`] is the same loop for synchronous tests (the
//! Docker Compose ones, which drive `docker` commands).
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Error, Result};

/// Interval between probes.
pub const INTERVAL: Duration = Duration::from_millis(25);

/// The error once `limit` has passed.
fn timed_out(what: &str, limit: Duration, last: Option<Error>) -> Error {
    match last {
        Some(e) => anyhow!("timed out after {limit:?} waiting for {what}; last error: {e:#}"),
        None => anyhow!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `probe` until it returns `Some`, or fails after `limit` naming `what`.
pub async fn until<T, F, Fut>(what: impl Display, limit: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = None;
    loop {
        match probe().await {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(timed_out(&what.to_string(), limit, last));
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// [`until`] for synchronous code, probing every `interval` (the thread sleeps in between).
pub fn until_blocking<T>(
    what: impl Display,
    limit: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = std::time::Instant::now() + limit;
    let mut last = None;
    loop {
        match probe() {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if std::time::Instant::now() >= deadline {
            return Err(timed_out(&what.to_string(), limit, last));
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_timeout_names_the_last_error() {
        let mut n = 0;
        let err = until("a thing", Duration::from_millis(200), || {
            n += 1;
            let attempt = n;
            async move { Err::<Option<()>, _>(anyhow!("attempt {attempt} failed")) }
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for a thing") && err.contains("failed"), "{err}");
        assert!((2..=10).contains(&n), "probed {n} times");
    }

    #[test]
    fn the_blocking_loop_returns_what_the_probe_found() {
        let mut n = 0;
        let found = until_blocking("three probes", Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            Ok((n == 3).then_some(n))
        });
        assert_eq!(found.unwrap(), 3);
    }
}
