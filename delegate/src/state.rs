//! Small state files in the state directory, shared between the running delegate and other
//! invocations of the binary (the image is `FROM scratch`: no shell, maybe no `/tmp`):
//!
//! - `health-<scope>`: refreshed by the running delegate while it holds an authenticated
//!   session and removed when it loses it; `tether-delegate health` checks it is present and
//!   fresh. The scope is the container id (or the host name outside Docker), so that an old
//!   container and its successor sharing a volume as state directory never read or remove
//!   each other's record.
//! - `fatal`: the time of the last fatal exit (signed revoked/expired) and the ids (public)
//!   of the tokens that failed, so that a container restart policy does not turn exit 78
//!   into a hot loop of failed handshakes, while a restart with a different token starts at
//!   once.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// File name prefix of the health record.
pub const HEALTH_FILE: &str = "health";
/// File name of the fatal-exit record.
pub const FATAL_FILE: &str = "fatal";

/// What the running delegate records while it holds an authenticated session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Process id of the delegate.
    pub pid: u32,
    /// The session id from the manager's welcome.
    pub session_id: Uuid,
    /// The token id in use (public).
    pub token_id: Uuid,
    /// Heartbeat interval of the session, seconds.
    pub heartbeat_secs: u64,
    /// Last refresh, unix seconds.
    pub updated_at: u64,
}

/// Why `health` fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unhealthy {
    /// No record: the delegate has no authenticated session (or never ran here).
    #[error("no authenticated session (no health record in {0})")]
    Missing(String),
    /// The record is not valid.
    #[error("health record is unreadable")]
    Corrupt,
    /// The record was not refreshed in time: the delegate hangs or died.
    #[error("health record is stale: last refreshed {age_secs} s ago (limit {limit_secs} s)")]
    Stale {
        /// Seconds since the last refresh.
        age_secs: u64,
        /// The allowed age.
        limit_secs: u64,
    },
    /// The process that wrote the record is gone.
    #[error("the delegate process {0} that wrote the health record is gone")]
    Gone(u32),
}

impl Health {
    /// How old a record may be: two heartbeats and some slack.
    pub fn max_age_secs(&self) -> u64 {
        self.heartbeat_secs.saturating_mul(2).saturating_add(10)
    }
}

/// The state directory and the files in it.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    scope: String,
}

/// Who "the local delegate" is: the own container id (from `/proc/self/mountinfo` or
/// `/proc/self/cgroup`), else the kernel host name, else `local`.
pub fn local_scope() -> String {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok();
    let from_proc = mountinfo
        .as_deref()
        .and_then(crate::docker::container_id::from_mountinfo)
        .or_else(|| cgroup.as_deref().and_then(crate::docker::container_id::from_cgroup))
        .map(|id| tether_protocol::text::bounded(&id, 12).to_owned());
    let scope = from_proc
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_default();
    let scope: String = scope
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if scope.is_empty() || scope.starts_with('.') {
        "local".to_owned()
    } else {
        scope
    }
}

/// Mode of the state files: readable by a `health` check running as another user.
const STATE_FILE_MODE: u32 = 0o644;

/// Atomic replace through an unpredictable, exclusively created temporary file (the state
/// directory is by default the token file's directory, possibly writable by others).
fn write_replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::token_file::replace(path, bytes, STATE_FILE_MODE, crate::token_file::Durability::NoFsync)
}

impl StateDir {
    /// The state directory at `dir` (created on first write), for this container or host.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_scope(dir, local_scope())
    }

    /// The state directory at `dir` with an explicit health scope.
    pub fn with_scope(dir: impl Into<PathBuf>, scope: impl Into<String>) -> Self {
        Self { dir: dir.into(), scope: scope.into() }
    }

    fn health_path(&self) -> PathBuf {
        self.dir.join(format!("{HEALTH_FILE}-{}", self.scope))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn ensure(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)
    }

    /// Records an authenticated session (called at welcome and at every heartbeat).
    pub fn write_health(&self, health: &Health) -> std::io::Result<()> {
        self.ensure()?;
        let bytes = serde_json::to_vec(health).map_err(std::io::Error::other)?;
        write_replace(&self.health_path(), &bytes)
    }

    /// Removes the health record (the session ended).
    pub fn clear_health(&self) {
        let _ = std::fs::remove_file(self.health_path());
    }

    /// Checks the health record at `now` (unix seconds).
    pub fn check_health(&self, now: u64) -> Result<Health, Unhealthy> {
        let path = self.health_path();
        let bytes = std::fs::read(&path).map_err(|_| Unhealthy::Missing(self.dir.display().to_string()))?;
        let health: Health = serde_json::from_slice(&bytes).map_err(|_| Unhealthy::Corrupt)?;
        let age_secs = now.saturating_sub(health.updated_at);
        let limit_secs = health.max_age_secs();
        if age_secs > limit_secs {
            return Err(Unhealthy::Stale { age_secs, limit_secs });
        }
        if Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{}", health.pid)).exists() {
            return Err(Unhealthy::Gone(health.pid));
        }
        Ok(health)
    }

    /// Records a fatal exit at `now` of the tokens `token_ids` (ids only, never secrets).
    pub fn write_fatal(&self, now: u64, token_ids: &[Uuid]) -> std::io::Result<()> {
        self.ensure()?;
        let record = FatalRecord { at: now, token_ids: token_ids.to_vec() };
        let bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        write_replace(&self.dir.join(FATAL_FILE), &bytes)
    }

    /// Removes the fatal-exit record (a session authenticated again).
    pub fn clear_fatal(&self) {
        let _ = std::fs::remove_file(self.dir.join(FATAL_FILE));
    }

    /// How long to stay quiet at start because of a recent fatal exit, if at all: at least
    /// the rest of `backoff`, and only when one of `candidates` (the ids of the tokens this
    /// start would try) is a token that failed then; a different token starts at once. A
    /// record of an older version (the time alone) names no token and applies to any. The
    /// record holds whole seconds, so one second less than the difference is counted as
    /// elapsed (an exit at x.99 s and a start at x+1.01 s are only 20 ms apart); the wait
    /// may exceed the backoff by up to a second, never fall short.
    pub fn fatal_quiet_period(&self, now: u64, backoff: Duration, candidates: &[Uuid]) -> Option<Duration> {
        let text = std::fs::read_to_string(self.dir.join(FATAL_FILE)).ok()?;
        let (at, failed) = match serde_json::from_str::<FatalRecord>(&text) {
            Ok(record) => (record.at, Some(record.token_ids)),
            Err(_) => (text.trim().parse().ok()?, None),
        };
        if let Some(failed) = failed {
            if !candidates.iter().any(|id| failed.contains(id)) {
                return None;
            }
        }
        let elapsed = Duration::from_secs(now.saturating_sub(at).saturating_sub(1));
        backoff.checked_sub(elapsed).filter(|d| !d.is_zero())
    }
}

/// The `fatal` file: when, and which tokens (ids) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FatalRecord {
    /// Unix seconds of the fatal exit.
    at: u64,
    /// The ids of the tokens that got a signed revoked/expired.
    token_ids: Vec<Uuid>,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(updated_at: u64) -> Health {
        Health {
            pid: std::process::id(),
            session_id: Uuid::new_v4(),
            token_id: Uuid::new_v4(),
            heartbeat_secs: 5,
            updated_at,
        }
    }

    #[test]
    fn health_is_fresh_then_stale_then_missing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("nested"));
        assert!(matches!(state.check_health(1000), Err(Unhealthy::Missing(_))));
        let health = record(1000);
        state.write_health(&health).unwrap();
        assert_eq!(state.check_health(1000).unwrap(), health);
        assert_eq!(state.check_health(1020).unwrap(), health);
        assert_eq!(state.check_health(1021), Err(Unhealthy::Stale { age_secs: 21, limit_secs: 20 }));
        state.clear_health();
        assert!(matches!(state.check_health(1000), Err(Unhealthy::Missing(_))));
    }

    #[test]
    fn health_of_a_dead_process_fails() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let mut health = record(1000);
        health.pid = u32::MAX - 1;
        state.write_health(&health).unwrap();
        assert_eq!(state.check_health(1000), Err(Unhealthy::Gone(u32::MAX - 1)));
        std::fs::write(state.health_path(), "{").unwrap();
        assert_eq!(state.check_health(1000), Err(Unhealthy::Corrupt));
    }

    #[test]
    fn containers_sharing_a_directory_keep_separate_health_records() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (
            StateDir::with_scope(dir.path(), "aaaaaaaaaaaa"),
            StateDir::with_scope(dir.path(), "bbbbbbbbbbbb"),
        );
        new.write_health(&record(1000)).unwrap();
        assert!(matches!(old.check_health(1000), Err(Unhealthy::Missing(_))));
        old.write_health(&record(1000)).unwrap();
        old.clear_health();
        assert!(new.check_health(1000).is_ok(), "the old container removed its successor's record");
    }

    #[test]
    fn local_scope_is_a_safe_file_name_part() {
        let scope = local_scope();
        assert!(!scope.is_empty() && !scope.contains('/') && !scope.starts_with('.'), "{scope}");
    }

    #[test]
    fn fatal_quiet_period_counts_down() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let backoff = Duration::from_secs(60);
        let failed = Uuid::new_v4();
        let ids = [failed];
        assert_eq!(state.fatal_quiet_period(1000, backoff, &ids), None);
        state.write_fatal(1000, &ids).unwrap();
        assert_eq!(state.fatal_quiet_period(1000, backoff, &ids), Some(Duration::from_secs(60)));
        // A second boundary right after the exit does not shorten the wait.
        assert_eq!(state.fatal_quiet_period(1001, backoff, &ids), Some(Duration::from_secs(60)));
        assert_eq!(state.fatal_quiet_period(1045, backoff, &ids), Some(Duration::from_secs(16)));
        assert_eq!(state.fatal_quiet_period(1060, backoff, &ids), Some(Duration::from_secs(1)));
        assert_eq!(state.fatal_quiet_period(1061, backoff, &ids), None);
        state.clear_fatal();
        assert_eq!(state.fatal_quiet_period(1000, backoff, &ids), None);
    }

    #[test]
    fn fatal_quiet_period_applies_only_to_the_token_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let backoff = Duration::from_secs(60);
        let (failed, other) = (Uuid::new_v4(), Uuid::new_v4());
        state.write_fatal(1000, &[failed]).unwrap();
        assert_eq!(state.fatal_quiet_period(1010, backoff, &[other]), None, "a different token waits");
        assert_eq!(state.fatal_quiet_period(1010, backoff, &[other, failed]), Some(Duration::from_secs(51)));
        let text = std::fs::read_to_string(dir.path().join(FATAL_FILE)).unwrap();
        assert!(text.contains(&failed.to_string()), "{text}");
        // A record of an older version (the time alone) applies to any token.
        std::fs::write(dir.path().join(FATAL_FILE), "1000").unwrap();
        assert_eq!(state.fatal_quiet_period(1010, backoff, &[other]), Some(Duration::from_secs(51)));
        std::fs::write(dir.path().join(FATAL_FILE), "{garbage").unwrap();
        assert_eq!(state.fatal_quiet_period(1010, backoff, &[other]), None);
    }
}
