//! Bounded polling: check a condition every few milliseconds until it holds or a deadline
//! passes (never a fixed sleep to wait for state).
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Interval between probes.
pub const INTERVAL: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Some`, or fails after `limit` naming `what`.
pub async fn until<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
