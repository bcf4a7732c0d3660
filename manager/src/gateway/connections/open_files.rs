//! The open-file limit and the caps that must fit under it: unauthenticated connections take
//! at most half of it, live sessions what is left after them and a small headroom.
use super::FILE_HEADROOM;

/// Half of `limit` (the soft open-file limit), when that is below `configured`.
pub fn fit_to_open_files(configured: usize, limit: Option<u64>) -> usize {
    match limit {
        Some(limit) => configured.min(usize::try_from(limit / 2).unwrap_or(usize::MAX).max(1)),
        None => configured,
    }
}

/// Live sessions that fit the soft open-file `limit` next to `unauthenticated` connections
/// and [`FILE_HEADROOM`] (at least 1); without a known limit, no cap (`usize::MAX`).
pub fn sessions_fit_open_files(limit: Option<u64>, unauthenticated: usize) -> usize {
    let Some(limit) = limit else { return usize::MAX };
    let left = limit.saturating_sub(unauthenticated as u64).saturating_sub(FILE_HEADROOM);
    usize::try_from(left).unwrap_or(usize::MAX).max(1)
}

/// The soft `RLIMIT_NOFILE` of this process (Linux: from `/proc/self/limits`).
pub fn open_file_limit() -> Option<u64> {
    parse_open_file_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The soft limit in the "Max open files" line of a `/proc/<pid>/limits` text.
pub fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}
