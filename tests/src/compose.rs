//! The Docker quick start under test: one unique Compose project per test, brought up through
//! `docker/up.sh` (the README's run command) on the real Docker engine, driven with
//! `docker compose` / `docker-compose` and the manager's admin CLI, and torn down (containers,
//! networks, volumes) by a drop guard, also when a test fails.
//!
//! The images `tether-manager:latest` and `tether-delegate:latest` must exist
//! (`docker/build-images.sh`, which `tests/run.sh` runs first); an unreachable engine or a
//! missing image fails the test with a message that says so.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Images the quick start runs.
pub const IMAGES: [&str; 2] = ["tether-manager:latest", "tether-delegate:latest"];
/// Compose services of the two delegates, and the names they announce to the manager.
pub const DELEGATES: [(&str, &str); 2] = [("delegate1", "delegate-1"), ("delegate2", "delegate-2")];

/// Root of the repository (the parent of the `tests/` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Polls `probe` about every `interval` until it returns `Some`, an error, or `timeout` passes.
/// Bounded in time and so in count; the error names `what`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(interval);
    }
}

/// How long one docker or compose command may take (up.sh has its own, longer limit).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `docker/up.sh` may take (its own wait for the delegates is bounded at 120 s).
const UP_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a command to completion with no standard input, within [`COMMAND_TIMEOUT`].
fn run(command: &mut Command) -> Result<Output> {
    run_within(command, COMMAND_TIMEOUT)
}

/// Runs a command in its own process group; past `timeout` the whole group is killed (a hung
/// `docker` call must fail the test, not hang it past the point where its guard cleans up).
fn run_within(command: &mut Command, timeout: Duration) -> Result<Output> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;

    let program = format!("{:?}", command.get_program());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Our own child's process group, by its id.
            let _ = Command::new("kill").arg("-KILL").arg(format!("-{}", child.id())).status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output { status, stdout, stderr }),
        None => bail!(
            "{program} {:?} did not finish within {timeout:?}; stderr so far: {}",
            command.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&stderr).trim()
        ),
    }
}

/// Stdout of a command that must succeed; its stderr in the error otherwise.
fn run_ok(command: &mut Command) -> Result<String> {
    let output = run(command)?;
    if !output.status.success() {
        bail!(
            "{:?} {:?} failed ({}): {}",
            command.get_program(),
            command.get_args().collect::<Vec<_>>(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `docker ARGS…`, which must succeed.
pub fn docker(args: &[&str]) -> Result<String> {
    run_ok(Command::new("docker").args(args))
}

/// Fails unless the Docker engine answers and both images exist.
pub fn preflight() -> Result<()> {
    let info = run(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]))
        .context("the docker CLI is not installed; these tests need the Docker engine")?;
    if !info.status.success() {
        bail!(
            "the Docker engine is unreachable; these tests need it: {}",
            String::from_utf8_lossy(&info.stderr).trim()
        );
    }
    for image in IMAGES {
        let found = run(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", image]))?;
        if !found.status.success() {
            bail!("image {image} is missing: build it first with docker/build-images.sh");
        }
    }
    Ok(())
}

/// Compose projects of earlier test processes that died without their guard running (e.g.
/// killed by a test-runner timeout): their names carry the pid of the process that made them.
fn stale_projects() -> Result<Vec<String>> {
    let format = "{{.Label \"com.docker.compose.project\"}}";
    let filter = "label=com.docker.compose.project";
    let mut labels = docker(&["ps", "-a", "--filter", filter, "--format", format])?;
    labels.push_str(&docker(&["volume", "ls", "--filter", filter, "--format", format])?);
    labels.push_str(&docker(&["network", "ls", "--filter", filter, "--format", format])?);
    let mut stale: Vec<String> = labels
        .lines()
        .filter(|name| name.starts_with("tether-e2e-"))
        .filter(|name| {
            let mut parts = name.rsplitn(3, '-');
            let (_suffix, pid) = (parts.next(), parts.next());
            pid.and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(str::to_string)
        .collect();
    stale.sort();
    stale.dedup();
    Ok(stale)
}

/// Removes everything labelled with Compose project `name`: containers, networks, volumes.
fn remove_project_resources(name: &str) {
    let label = format!("label=com.docker.compose.project={name}");
    for (list, remove) in [
        (vec!["ps", "-aq", "--filter", &label], vec!["rm", "-f"]),
        (vec!["network", "ls", "-q", "--filter", &label], vec!["network", "rm"]),
        (vec!["volume", "ls", "-q", "--filter", &label], vec!["volume", "rm", "-f"]),
    ] {
        let Ok(ids) = docker(&list) else { continue };
        for id in ids.lines().filter(|id| !id.is_empty()) {
            let mut args = remove.clone();
            args.push(id);
            let _ = docker(&args);
        }
    }
}

/// The Compose command here: v2 plugin (`docker compose`) when present, else v1 (`docker-compose`).
fn compose_command() -> Vec<String> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if v2 {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// A unique Compose project name for `test`: parallel tests and reruns never share anything.
fn unique_project(test: &str) -> String {
    let suffix: u32 = rand::random();
    let test: String =
        test.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    format!("tether-e2e-{test}-{}-{suffix:08x}", std::process::id())
}

/// Parses `KEY=VALUE` lines (comments and blank lines skipped).
fn parse_dotenv(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A delegate session as the manager lists it (`delegate list --json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveDelegate {
    /// `DELEGATE_NAME`.
    pub name: String,
    /// Id of the token the session authenticated with.
    pub token_id: String,
    /// The session id from the welcome: a new one after every reconnect.
    pub session_id: String,
}

/// The public id of a token string (`tdt_…`).
pub fn token_id(token: &str) -> Result<String> {
    Ok(tether_protocol::Token::parse(token).map_err(|e| anyhow!("not a token: {e}"))?.id().to_string())
}

/// The first string in `value` that looks like a delegate token (`tdt_…`): where the CLI's
/// JSON puts a token value it shows once.
pub fn find_token_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.starts_with("tdt_") => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(find_token_value),
        Value::Object(map) => map.values().find_map(find_token_value),
        _ => None,
    }
}

/// A string field of a JSON object, under the first of `keys` present.
fn field(object: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| match &object[*key] {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    })
}

/// The list in a CLI `--json` answer: the value itself, or the first array field of an object.
fn json_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Object(map) => map.values().find_map(|v| v.as_array().cloned()).unwrap_or_default(),
        _ => Vec::new(),
    }
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
        let mut command = Command::new(&self.compose[0]);
        command
            .args(&self.compose[1..])
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(repo_root().join("docker/docker-compose.yml"))
            .arg("--env-file")
            .arg(&self.env_file)
            .args(args)
            .env("TETHER_PUBLISH_PORT", "");
        command
    }

    /// `docker compose ARGS…` for this project, which must succeed; returns stdout.
    pub fn compose(&self, args: &[&str]) -> Result<String> {
        let output = run(&mut self.compose_cmd(args))?;
        if !output.status.success() {
            bail!(
                "compose {args:?} failed ({}): {}",
                output.status,
                self.redact(String::from_utf8_lossy(&output.stderr).trim())
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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
        let listed = self.admin(&["delegate", "list"])?;
        json_list(&listed)
            .iter()
            .map(|d| {
                Ok(LiveDelegate {
                    name: field(d, &["name", "delegate_name"])
                        .ok_or_else(|| anyhow!("delegate without name"))?,
                    token_id: field(d, &["token_id"]).ok_or_else(|| anyhow!("delegate without token_id"))?,
                    session_id: field(d, &["session_id", "session"])
                        .ok_or_else(|| anyhow!("delegate without session_id"))?,
                })
            })
            .collect()
    }

    /// The state of a token (`token show ID --json`: active, rotating, revoked, expired).
    pub fn token_state(&self, token_id: &str) -> Result<String> {
        let shown = self.admin(&["token", "show", token_id])?;
        let token = if shown["token"].is_object() { &shown["token"] } else { &shown };
        field(token, &["state", "status"]).ok_or_else(|| anyhow!("token show printed no state"))
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
        let result = wait_until("both delegates connected", timeout, Duration::from_millis(500), || {
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
        let leaked = self.secrets.iter().filter(|secret| logs.contains(secret.as_str())).count();
        if leaked > 0 {
            bail!("{leaked} secret value(s) appear in the containers' logs");
        }
        Ok(())
    }

    /// Replaces every known secret in `text` with a placeholder.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_string(), |acc, secret| acc.replace(secret.as_str(), "<redacted>"))
    }

    /// `die` events of this project's containers since `since` (unix seconds): (service, exit code).
    pub fn die_events(&self, since: u64) -> Result<Vec<(String, i64)>> {
        let until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("clock before 1970")?
            .as_secs()
            + 1;
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

    #[test]
    fn project_names_are_unique_and_compose_safe() {
        let a = unique_project("Rotate_Both");
        let b = unique_project("Rotate_Both");
        assert_ne!(a, b);
        assert!(a.starts_with("tether-e2e-rotate-both-"));
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }
}
