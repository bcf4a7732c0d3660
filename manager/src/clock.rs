//! Wall-clock time in unix seconds, read in one place so the rest of the code passes `now` in.
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
