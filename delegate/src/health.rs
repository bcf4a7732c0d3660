//! `tether-delegate health`: exit 0 only while the local delegate holds an authenticated
//! session, judged by the health record it refreshes in the state directory.
use std::path::PathBuf;

use crate::cli::HealthFlags;
use crate::config::default_state_dir;
use crate::state::{unix_now, Health, StateDir, Unhealthy};
use crate::strings::Strings;

/// The state directory `health` looks in: `--state-dir`/`TETHER_STATE_DIR`, else the token
/// file's directory, else `/run/tether` — the same rule `run` uses.
pub fn state_dir(flags: &HealthFlags, env: &dyn Strings) -> PathBuf {
    let pick =
        |flag: &Option<String>, var: &str| flag.clone().or_else(|| env.get(var)).filter(|v| !v.is_empty());
    match pick(&flags.state_dir, "TETHER_STATE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => default_state_dir(
            pick(&flags.account_secret_file, "ACCOUNT_SECRET_FILE").as_deref().map(std::path::Path::new),
        ),
    }
}

/// Checks the health record now.
pub fn check(flags: &HealthFlags, env: &dyn Strings) -> Result<Health, Unhealthy> {
    StateDir::new(state_dir(flags, env)).check_health(unix_now())
}
