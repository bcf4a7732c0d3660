//! `tether-delegate health`: exit 0 only while the local delegate holds an authenticated
//! session, judged by the health record it refreshes in the state directory.
use std::path::PathBuf;

use crate::cli::HealthFlags;
use crate::config;
use crate::state::{unix_now, Health, StateDir, Unhealthy};
use crate::strings::Strings;

/// The state directory `health` looks in: `--state-dir`/`TETHER_STATE_DIR`, else the token
/// file's directory, else `/run/tether` — through the same functions `run`'s configuration uses.
pub fn state_dir(flags: &HealthFlags, env: &dyn Strings) -> PathBuf {
    let secret_file = config::secret_file(&flags.account_secret_file, env);
    config::state_dir(&flags.state_dir, env, secret_file.as_deref())
}

/// Checks the health record now.
pub fn check(flags: &HealthFlags, env: &dyn Strings) -> Result<Health, Unhealthy> {
    StateDir::new(state_dir(flags, env)).check_health(unix_now())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::cli::RunFlags;
    use crate::config::Config;

    /// `run`'s state directory for this environment (with a valid token and manager set).
    fn run_state_dir(env: &[(&str, &str)]) -> PathBuf {
        let token = tether_protocol::Token::from_parts(uuid::Uuid::new_v4(), [3; 32]);
        let secret = token.expose().to_string();
        let mut vars: HashMap<&str, &str> = HashMap::from([
            ("ACCOUNT_ID", "acme"),
            ("ACCOUNT_SECRET", &secret),
            ("MANAGER_HOST_AND_PORT", "m:1"),
        ]);
        vars.extend(env.iter().copied());
        Config::load(&RunFlags::default(), &vars).unwrap().state_dir
    }

    #[test]
    fn health_looks_where_run_writes() {
        let cases: [&[(&str, &str)]; 5] = [
            &[],
            &[("TETHER_STATE_DIR", "/srv/state")],
            &[("ACCOUNT_SECRET_FILE", "/secrets/token")],
            // Blank values count as unset for `run`; `health` must not look in "  ".
            &[("TETHER_STATE_DIR", "  "), ("ACCOUNT_SECRET_FILE", "/secrets/token")],
            &[("TETHER_STATE_DIR", " "), ("ACCOUNT_SECRET_FILE", " ")],
        ];
        for env in cases {
            let vars: HashMap<&str, &str> = env.iter().copied().collect();
            assert_eq!(state_dir(&HealthFlags::default(), &vars), run_state_dir(env), "{env:?}");
        }
    }
}
