//! The real delegate binary, configured for a [`Manager`](super::manager::Manager).
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::Result;

use super::manager::Manager;
use super::process::{binary, Proc};

/// A running `tether-delegate`.
#[derive(Debug)]
pub struct Delegate {
    /// The process.
    pub proc: Proc,
}

/// The environment for a delegate named `name` connecting to `manager` with `token`, keeping
/// its state files in `state_dir`, in manual apply mode unless overridden.
pub fn env_for(manager: &Manager, name: &str, token: &str, state_dir: &Path) -> Vec<(String, String)> {
    vec![
        ("ACCOUNT_ID".into(), manager.init.account_id.clone()),
        ("ACCOUNT_SECRET".into(), token.to_owned()),
        ("MANAGER_HOST_AND_PORT".into(), format!("localhost:{}", manager.addr.port())),
        ("MANAGER_CA_CERT".into(), manager.init.ca_cert.display().to_string()),
        ("DELEGATE_NAME".into(), name.to_owned()),
        ("TETHER_STATE_DIR".into(), state_dir.display().to_string()),
        ("TETHER_APPLY_MODE".into(), "manual".into()),
        ("TETHER_DOCKER_SOCKET".into(), "/nonexistent/docker.sock".into()),
        ("RUST_LOG".into(), "info".into()),
    ]
}

impl Delegate {
    /// Starts the binary with exactly `env` and `args`.
    pub fn start(env: &[(String, String)], args: &[&str]) -> Result<Self> {
        Self::start_bin(&binary("tether-delegate")?, env, args)
    }

    /// [`Delegate::start`] of the binary at `bin`.
    pub fn start_bin(bin: &Path, env: &[(String, String)], args: &[&str]) -> Result<Self> {
        let mut command = Command::new(bin);
        command.env_clear().args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        Ok(Self { proc: Proc::spawn("tether-delegate", command)? })
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Runs `tether-delegate health` against `state_dir`.
    pub fn health(state_dir: &Path) -> Result<bool> {
        let status = Command::new(binary("tether-delegate")?)
            .env_clear()
            .args(["health", "--state-dir"])
            .arg(state_dir)
            .output()?
            .status;
        Ok(status.success())
    }

    /// Waits for the exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<(ExitStatus, Duration)> {
        self.proc.wait_exit(limit).await
    }
}
