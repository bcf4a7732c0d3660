//! One running quick-start project ([`ComposeProject`]): brought up with `docker/up.sh`,
//! driven with `docker compose` and the admin CLI inside the manager container, its secrets
//! remembered (redacted from diagnostics, looked for in its logs), and torn down on drop.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::engine::{
    compose_command, preflight, remove_project_resources, run, stale_projects, unique_project, UP_TIMEOUT,
};
use super::{engine, repo_root, DELEGATES};
use crate::harness::cli::{self, LiveDelegate};
use crate::harness::clock::unix_now;
use crate::harness::docker::docker;
use crate::harness::poll;
use crate::harness::process::run_within;
use crate::secrets::find_needles;

/// Parses `KEY=VALUE` lines (comments and blank lines skipped).
fn parse_dotenv(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A running quick-start project; dropping it removes its containers, networks and volumes.
#[derive(Debug)]
pub struct ComposeProject {
    name: String,
    env_file: PathBuf,
    dotenv: HashMap<String, String>,
    compose: Vec<String>,
    /// Secrets seen during the test (tokens), redacted from any diagnostics this prints.
    secrets: Vec<String>,
    _dir: tempfile::TempDir,
}

impl ComposeProject {
    /// Brings up a fresh project with `docker/up.sh` (init, .env, `up -d`, wait for both
    /// delegates), with extra environment for Compose's interpolation (e.g.
    /// `TETHER_HEARTBEAT_SECS`). The admin API is published on a free loopback port.
    pub fn up(test: &str, extra_env: &[(&str, &str)]) -> Result<Self> {
        preflight()?;
        for stale in stale_projects()? {
            eprintln!("removing Compose project {stale} left by a test process that is gone");
            remove_project_resources(&stale);
        }
        let dir = tempfile::tempdir().context("temp dir for the project's .env")?;
        let mut project = Self {
            name: unique_project(test),
            env_file: dir.path().join(".env"),
            dotenv: HashMap::new(),
            compose: compose_command(),
            secrets: Vec::new(),
            _dir: dir,
        };
        let mut up = project.up_command();
        for (key, value) in extra_env {
            up.env(key, value);
        }
        // The guard exists from here on: a failing up.sh still gets cleaned up.
        let output = run_within(&mut up, UP_TIMEOUT);
        project.reload_env()?;
        let output = output.map_err(|e| anyhow!("{}", project.redact(&e.to_string())))?;
        if !output.status.success() {
            bail!(
                "docker/up.sh failed ({}):\n{}",
                output.status,
                project.redact(&String::from_utf8_lossy(&output.stderr))
            );
        }
        Ok(project)
    }

    /// `bash docker/up.sh` for this project (its own name and .env, the admin API on a free port).
    fn up_command(&self) -> Command {
        let mut up = Command::new("bash");
        up.arg(repo_root().join("docker/up.sh"))
            .env("TETHER_PROJECT", &self.name)
            .env("TETHER_ENV_FILE", &self.env_file)
            .env("TETHER_PUBLISH_PORT", "")
            .env("TETHER_UP_TIMEOUT_SECS", "120");
        up
    }

    /// Runs `docker/up.sh` again on this (initialised) project; returns its stderr, the
    /// script's progress report. Fails if the script does.
    pub fn rerun_up(&self) -> Result<String> {
        let output = run_within(&mut self.up_command(), UP_TIMEOUT)?;
        let stderr = self.redact(&String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            bail!("docker/up.sh failed again ({}):\n{stderr}", output.status);
        }
        Ok(stderr)
    }

    /// Re-reads the project's .env (written by up.sh).
    fn reload_env(&mut self) -> Result<()> {
        let text = match std::fs::read_to_string(&self.env_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).context("reading the project's .env"),
        };
        self.dotenv = parse_dotenv(&text);
        for key in ["ACCOUNT_SECRET", "TETHER_ADMIN_TOKEN"] {
            if let Some(value) = self.dotenv.get(key).cloned() {
                self.remember_secret(value);
            }
        }
        Ok(())
    }

    /// Adds a secret to redact from diagnostics and to look for in `assert_no_secrets_in_logs`.
    pub fn remember_secret(&mut self, secret: String) {
        if !secret.is_empty() && !self.secrets.contains(&secret) {
            self.secrets.push(secret);
        }
    }

    /// Sets `key=value` in the project's .env, as an operator editing it would (the value is
    /// remembered as a secret).
    pub fn set_dotenv(&mut self, key: &str, value: &str) -> Result<()> {
        let text = std::fs::read_to_string(&self.env_file).context("reading .env")?;
        let prefix = format!("{key}=");
        let mut lines: Vec<String> =
            text.lines().filter(|line| !line.starts_with(&prefix)).map(str::to_string).collect();
        lines.push(format!("{key}={value}"));
        std::fs::write(&self.env_file, lines.join("\n") + "\n").context("writing .env")?;
        self.reload_env()?;
        self.remember_secret(value.to_string());
        Ok(())
    }

    /// The Compose project name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the project's .env.
    pub fn env_file(&self) -> &Path {
        &self.env_file
    }

    /// A value from the project's .env (e.g. `ACCOUNT_ID`, `ACCOUNT_SECRET`).
    pub fn dotenv(&self, key: &str) -> Result<&str> {
        self.dotenv.get(key).map(String::as_str).ok_or_else(|| anyhow!("{key} is not in .env"))
    }

    /// The project's default network.
    pub fn network(&self) -> String {
        format!("{}_default", self.name)
    }

    fn compose_cmd(&self, args: &[&str]) -> Command {
        let file = repo_root().join("docker/docker-compose.yml");
        let mut command = engine::project_command(&self.compose, &self.name, &file, &self.env_file, args);
        command.env("TETHER_PUBLISH_PORT", "");
        command
    }

    /// `docker compose ARGS…` for this project, which must succeed; returns stdout.
    pub fn compose(&self, args: &[&str]) -> Result<String> {
        engine::stdout_of(&mut self.compose_cmd(args), args, |t| self.redact(t))
    }

    /// Runs the admin CLI inside the manager container (`tether-manager ARGS… --json`, with the
    /// admin token from .env in the container's environment) and parses its JSON output.
    pub fn admin(&self, args: &[&str]) -> Result<Value> {
        let mut full = vec!["exec", "-T", "manager", "/tether-manager"];
        full.extend_from_slice(args);
        full.push("--json");
        let output = run(&mut self.compose_cmd(&full))?;
        if !output.status.success() {
            bail!(
                "tether-manager {args:?} failed ({}): {}",
                output.status,
                self.redact(String::from_utf8_lossy(&output.stderr).trim())
            );
        }
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("tether-manager {args:?} --json printed no JSON"))
    }

    /// The delegate sessions the manager holds now.
    pub fn live_delegates(&self) -> Result<Vec<LiveDelegate>> {
        cli::delegate_list(&self.admin(&["delegate", "list"])?)
    }

    /// The state of a token (`token show ID --json`: active, rotating, revoked, expired).
    pub fn token_state(&self, token_id: &str) -> Result<String> {
        cli::token_state(&self.admin(&["token", "show", token_id])?)
    }

    /// Waits until the manager lists both delegates, each exactly once, on `token_id` (and
    /// not in `old_sessions`), and each container's `tether-delegate health` passes.
    /// Returns the sessions by delegate name.
    pub fn wait_both_connected(
        &self,
        token_id: &str,
        old_sessions: &[String],
        timeout: Duration,
    ) -> Result<HashMap<String, LiveDelegate>> {
        // What the last probe saw, for the timeout message (ids only, never token values).
        let mut last = String::from("nothing yet");
        let result =
            poll::until_blocking("both delegates connected", timeout, Duration::from_millis(500), || {
                // The manager may be restarting: a failed `delegate list` means "not yet".
                let live = match self.live_delegates() {
                    Ok(live) => live,
                    Err(e) => {
                        last = format!("delegate list failed: {e}");
                        return Ok(None);
                    }
                };
                last = live
                    .iter()
                    .map(|d| format!("{} on token {} (session {})", d.name, d.token_id, d.session_id))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut found = HashMap::new();
                for (service, name) in DELEGATES {
                    let sessions: Vec<&LiveDelegate> = live.iter().filter(|d| d.name == name).collect();
                    let [session] = sessions.as_slice() else { return Ok(None) };
                    if session.token_id != token_id || old_sessions.contains(&session.session_id) {
                        return Ok(None);
                    }
                    if !self.delegate_healthy(service)? {
                        last.push_str(&format!("; {service}: tether-delegate health fails"));
                        return Ok(None);
                    }
                    found.insert(name.to_string(), (*session).clone());
                }
                Ok(Some(found))
            });
        result.map_err(|e| anyhow!("{e}; the manager last listed: [{last}]"))
    }

    /// Ids of the containers Compose lists for `service` (running or not).
    pub fn container_ids(&self, service: &str) -> Result<Vec<String>> {
        Ok(self.compose(&["ps", "-q", service])?.lines().map(str::to_string).collect())
    }

    /// The one container of `service`.
    pub fn container_id(&self, service: &str) -> Result<String> {
        let ids = self.container_ids(service)?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!("compose lists {} containers for {service}, expected one", ids.len()),
        }
    }

    /// `docker inspect` of one container.
    pub fn inspect(&self, container: &str) -> Result<Value> {
        let text = docker(&["inspect", container])?;
        let mut list: Vec<Value> = serde_json::from_str(&text).context("docker inspect output")?;
        list.pop().ok_or_else(|| anyhow!("docker inspect {container}: empty"))
    }

    /// The value of `key` in a container's configured environment. A secret: compare it,
    /// never print it.
    pub fn container_env(&self, container: &str, key: &str) -> Result<Option<String>> {
        let inspect = self.inspect(container)?;
        let prefix = format!("{key}=");
        Ok(inspect["Config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find_map(|entry| entry.strip_prefix(&prefix).map(str::to_string)))
    }

    /// Whether `tether-delegate health` exits 0 inside `service`'s container (an
    /// authenticated session right now).
    pub fn delegate_healthy(&self, service: &str) -> Result<bool> {
        let output = run(&mut self.compose_cmd(&["exec", "-T", service, "/tether-delegate", "health"]))?;
        Ok(output.status.success())
    }

    /// All of this project's logs, secrets redacted only in what the caller prints.
    pub fn logs(&self) -> Result<String> {
        let output = run(&mut self.compose_cmd(&["logs", "--no-color", "--timestamps"]))?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok(text)
    }

    /// Fails if any token or admin token seen in this test appears in any container's logs.
    pub fn assert_no_secrets_in_logs(&self) -> Result<()> {
        let logs = self.logs()?;
        let leaked = find_needles("the containers' logs", &logs, &self.secrets);
        if !leaked.is_empty() {
            bail!("{} secret value(s) appear in the containers' logs", leaked.len());
        }
        Ok(())
    }

    /// Replaces every known secret in `text` with a placeholder.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_string(), |acc, secret| acc.replace(secret.as_str(), "<redacted>"))
    }

    /// `die` events of this project's containers since `since` (unix seconds): (service, exit code).
    pub fn die_events(&self, since: u64) -> Result<Vec<(String, i64)>> {
        let until = unix_now() + 1;
        let text = docker(&[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            "type=container",
            "--filter",
            "event=die",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--format",
            "{{json .}}",
        ])?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let event: Value = serde_json::from_str(line).context("docker events line")?;
                let attributes = &event["Actor"]["Attributes"];
                let service = attributes["com.docker.compose.service"].as_str().unwrap_or("").to_string();
                let code = attributes["exitCode"].as_str().and_then(|c| c.parse().ok()).unwrap_or(-1);
                Ok((service, code))
            })
            .collect()
    }

    /// What to show when a test fails: `compose ps` and the last log lines, secrets redacted.
    fn diagnostics(&self) -> String {
        let ps = self.compose(&["ps"]).unwrap_or_else(|e| e.to_string());
        let logs = run(&mut self.compose_cmd(&["logs", "--no-color", "--tail", "40"]))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        self.redact(&format!("--- compose ps\n{ps}\n--- compose logs (last 40 lines per service)\n{logs}"))
    }

    /// Removes everything of this project: `down -v`, then anything left with its label.
    fn teardown(&self) {
        let _ = run(&mut self.compose_cmd(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]));
        remove_project_resources(&self.name);
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("project {} failed; its state:\n{}", self.name, self.diagnostics());
        }
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines_parse_and_skip_comments() {
        let env = parse_dotenv("# c\nCOMPOSE_PROJECT_NAME=x\n\nACCOUNT_ID=acc=1\n");
        assert_eq!(env["COMPOSE_PROJECT_NAME"], "x");
        assert_eq!(env["ACCOUNT_ID"], "acc=1");
        assert_eq!(env.len(), 2);
    }
}
