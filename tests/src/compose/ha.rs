//! The HA example under test ([`HaProject`]): PostgreSQL, three manager replicas behind the
//! network alias `manager` and two delegates, brought up with `bash docker/up.sh --ha` under a
//! unique project name, driven with `docker exec` into the replica containers (each replica's
//! admin CLI talks to that replica's API) and through each replica's published port (its own
//! `/metrics`: `tether_sessions` counts the sessions that replica holds, whatever the admin
//! API lists), and torn down (`compose down --volumes`, then anything left with the project's
//! label) by its drop guard, also when a test fails.
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::engine::{
    compose_command, preflight, remove_project_resources, run, stale_projects, unique_project, UP_TIMEOUT,
};
use super::{engine, repo_root};
use crate::harness::cli::{self, LiveDelegate};
use crate::harness::docker::docker;
use crate::harness::process::run_within;
use crate::load::transport::Target;
use crate::secrets::find_needles;

/// How long one `/metrics` request may take.
const METRICS_WITHIN: Duration = Duration::from_secs(5);

/// The PostgreSQL image the HA example runs (`docker/build-postgres-image.sh`).
pub const POSTGRES_IMAGE: &str = "tether-postgres:15";
/// The Compose services of the three replicas.
pub const REPLICAS: [&str; 3] = ["manager1", "manager2", "manager3"];

/// A running HA project; dropping it removes its containers, networks and volumes.
#[derive(Debug)]
pub struct HaProject {
    name: String,
    env_file: PathBuf,
    dotenv: HashMap<String, String>,
    compose: Vec<String>,
    /// Tokens and the database password, redacted from diagnostics.
    secrets: Vec<String>,
    _dir: tempfile::TempDir,
}

impl HaProject {
    /// Brings up a fresh HA project with `bash docker/up.sh --ha`, which returns once both
    /// delegates hold authenticated sessions.
    pub fn up(test: &str) -> Result<Self> {
        preflight()?;
        let found =
            run(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", POSTGRES_IMAGE]))?;
        if !found.status.success() {
            bail!("image {POSTGRES_IMAGE} is missing: build it first with docker/build-postgres-image.sh");
        }
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
        let mut up = Command::new("bash");
        up.arg(repo_root().join("docker/up.sh"))
            .arg("--ha")
            .env("TETHER_PROJECT", &project.name)
            .env("TETHER_ENV_FILE", &project.env_file)
            .env("TETHER_UP_TIMEOUT_SECS", "120")
            .env_remove("TETHER_POSTGRES_IMAGE");
        // The guard exists from here on: a failing up.sh still gets cleaned up.
        let output = run_within(&mut up, UP_TIMEOUT);
        project.reload_env()?;
        let output = output.map_err(|e| anyhow!("{}", project.redact(&e.to_string())))?;
        if !output.status.success() {
            bail!(
                "docker/up.sh --ha failed ({}):\n{}",
                output.status,
                project.redact(&String::from_utf8_lossy(&output.stderr))
            );
        }
        eprintln!("{}", project.redact(&String::from_utf8_lossy(&output.stderr)));
        Ok(project)
    }

    fn reload_env(&mut self) -> Result<()> {
        let text = match std::fs::read_to_string(&self.env_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).context("reading the project's .env"),
        };
        self.dotenv = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        for key in ["ACCOUNT_SECRET", "TETHER_ADMIN_TOKEN", "POSTGRES_PASSWORD"] {
            if let Some(value) = self.dotenv.get(key).filter(|v| !v.is_empty()).cloned() {
                if !self.secrets.contains(&value) {
                    self.secrets.push(value);
                }
            }
        }
        Ok(())
    }

    /// The Compose project name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A value from the project's .env.
    pub fn dotenv(&self, key: &str) -> Result<&str> {
        self.dotenv.get(key).map(String::as_str).ok_or_else(|| anyhow!("{key} is not in .env"))
    }

    fn compose_cmd(&self, args: &[&str]) -> Command {
        let file = repo_root().join("docker/docker-compose.ha.yml");
        engine::project_command(&self.compose, &self.name, &file, &self.env_file, args)
    }

    /// `docker compose ARGS…` for this project, which must succeed; returns stdout.
    pub fn compose(&self, args: &[&str]) -> Result<String> {
        engine::stdout_of(&mut self.compose_cmd(args), args, |t| self.redact(t))
    }

    /// The one container of `service`.
    pub fn container_id(&self, service: &str) -> Result<String> {
        let ids: Vec<String> = self.compose(&["ps", "-q", service])?.lines().map(str::to_string).collect();
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!("compose lists {} containers for {service}, expected one", ids.len()),
        }
    }

    /// The containers of the three replicas, by service.
    pub fn replica_containers(&self) -> Result<BTreeMap<String, String>> {
        REPLICAS.iter().map(|service| Ok((service.to_string(), self.container_id(service)?))).collect()
    }

    /// The sessions one replica holds: `tether-manager delegate list --json` run inside its
    /// container (against that replica's own API, with the admin token of its environment).
    pub fn replica_sessions(&self, container: &str) -> Result<Vec<LiveDelegate>> {
        let output = run(Command::new("docker").args([
            "exec",
            container,
            "/tether-manager",
            "delegate",
            "list",
            "--json",
        ]))?;
        if !output.status.success() {
            bail!(
                "delegate list in {container} failed ({}): {}",
                output.status,
                self.redact(String::from_utf8_lossy(&output.stderr).trim())
            );
        }
        let listed =
            serde_json::from_slice(&output.stdout).context("delegate list --json printed no JSON")?;
        cli::delegate_list(&listed)
    }

    /// The CA certificate the replicas' server certificate chains to (copied out of a replica
    /// into the project's temp dir once).
    pub fn ca_pem(&self) -> Result<PathBuf> {
        let path = self._dir.path().join("ca.pem");
        if !path.exists() {
            let replica = self.container_id(REPLICAS[0])?;
            docker(&["cp", &format!("{replica}:/data/ca.pem"), &path.display().to_string()])
                .context("copying the CA certificate out of a replica")?;
        }
        Ok(path)
    }

    /// The host address where `container` publishes its port 8443 (on 127.0.0.1).
    pub fn published_addr(&self, container: &str) -> Result<SocketAddr> {
        let text = docker(&["port", container, "8443/tcp"])?;
        let line = text
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .ok_or_else(|| anyhow!("{container} publishes no 8443 on 127.0.0.1: {text}"))?;
        line.trim().parse().with_context(|| format!("docker port printed {line:?}"))
    }

    /// `tether_sessions` of one replica's `/metrics`: the authenticated sessions that replica
    /// itself holds.
    pub fn replica_session_count(&self, container: &str) -> Result<u64> {
        let addr = self.published_addr(container)?;
        let target = Target::new(addr, "localhost", &self.ca_pem()?)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let text = runtime.block_on(async {
            let client = reqwest::Client::builder()
                .use_preconfigured_tls((*target.tls).clone())
                .resolve("localhost", addr)
                .timeout(METRICS_WITHIN)
                .build()?;
            let response = client.get(format!("https://localhost:{}/metrics", addr.port())).send().await?;
            anyhow::Ok(response.error_for_status()?.text().await?)
        })?;
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix("tether_sessions "))
            .ok_or_else(|| anyhow!("no tether_sessions sample in /metrics of {container}"))?;
        let value: f64 = value.trim().parse().context("tether_sessions is not a number")?;
        Ok(value as u64)
    }

    /// The status of one replica's `/readyz` (through its published port).
    pub fn replica_readyz(&self, container: &str) -> Result<u16> {
        let addr = self.published_addr(container)?;
        let target = Target::new(addr, "localhost", &self.ca_pem()?)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let client = reqwest::Client::builder()
                .use_preconfigured_tls((*target.tls).clone())
                .resolve("localhost", addr)
                .timeout(METRICS_WITHIN)
                .build()?;
            let response = client.get(format!("https://localhost:{}/readyz", addr.port())).send().await?;
            anyhow::Ok(response.status().as_u16())
        })
    }

    /// `tether-manager ARGS --json` run inside `container` (that replica's own API, the admin
    /// token of its environment).
    pub fn admin(&self, container: &str, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = vec!["exec", container, "/tether-manager"];
        full.extend_from_slice(args);
        full.push("--json");
        let output = run(Command::new("docker").args(&full))?;
        if !output.status.success() {
            bail!(
                "tether-manager {args:?} in {container} failed ({}): {}",
                output.status,
                self.redact(String::from_utf8_lossy(&output.stderr).trim())
            );
        }
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("tether-manager {args:?} --json printed no JSON"))
    }

    /// The replica id `container` reports for itself (`replica list`, the row marked `this`).
    pub fn replica_id(&self, container: &str) -> Result<String> {
        let list = self.admin(container, &["replica", "list"])?;
        list.as_array()
            .and_then(|r| r.iter().find(|r| r["this"] == true))
            .and_then(|r| r["id"].as_str().map(str::to_owned))
            .ok_or_else(|| anyhow!("no replica marked `this` in {container}'s replica list"))
    }

    /// The replica id holding the `jobs` lease now (read in PostgreSQL's container).
    pub fn jobs_holder(&self) -> Result<String> {
        let postgres = self.container_id("postgres")?;
        let output = run(Command::new("docker").args([
            "exec",
            &postgres,
            "psql",
            "-U",
            "tether",
            "-d",
            "tether",
            "-tAc",
            "SELECT owner FROM leases WHERE name = 'jobs' AND expires_at > clock_timestamp()",
        ]))?;
        let owner = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || owner.is_empty() {
            bail!("no holder of the jobs lease ({})", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(owner)
    }

    /// The project's network for the database (PostgreSQL and the replicas only).
    pub fn db_network(&self) -> String {
        format!("{}_db", self.name)
    }

    /// The logs of `container` (stdout and stderr), redacted.
    pub fn logs(&self, container: &str) -> Result<String> {
        let output = run(Command::new("docker").args(["logs", container]))?;
        let text =
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        Ok(self.redact(&text))
    }

    /// Whether `tether-delegate health` exits 0 in `service`'s container.
    pub fn delegate_healthy(&self, container: &str) -> Result<bool> {
        let output = run(Command::new("docker").args(["exec", container, "/tether-delegate", "health"]))?;
        Ok(output.status.success())
    }

    /// Fails if a token, the admin token or the database password appears in any container's logs.
    pub fn assert_no_secrets_in_logs(&self) -> Result<()> {
        let output = run(&mut self.compose_cmd(&["logs", "--no-color"]))?;
        let mut logs = String::from_utf8_lossy(&output.stdout).into_owned();
        logs.push_str(&String::from_utf8_lossy(&output.stderr));
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

    /// Removes everything of this project: `down -v`, then anything left with its label.
    fn teardown(&self) {
        let _ = run(&mut self.compose_cmd(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]));
        remove_project_resources(&self.name);
    }
}

impl Drop for HaProject {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let ps = self.compose(&["ps"]).unwrap_or_else(|e| e.to_string());
            let logs = run(&mut self.compose_cmd(&["logs", "--no-color", "--tail", "40"]))
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            eprintln!(
                "project {} failed; its state:\n{}",
                self.name,
                self.redact(&format!(
                    "--- compose ps\n{ps}\n--- compose logs (last 40 lines per service)\n{logs}"
                ))
            );
        }
        self.teardown();
    }
}

/// What one look at (some of) the replicas saw; the caller's polls bound how long it looks.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Sessions by delegate name, the union of the replicas' `delegate list`: (the first
    /// replica that listed it, session).
    pub by_delegate: BTreeMap<String, Vec<(String, LiveDelegate)>>,
    /// Sessions each replica holds itself (`tether_sessions` of its `/metrics`).
    pub held: BTreeMap<String, u64>,
    /// Replicas whose `delegate list` or `/metrics` failed, with why.
    pub failed: Vec<(String, String)>,
}

impl Placement {
    /// Reads each of `replicas` (service → container): its session count and its
    /// `delegate list`, unioned by session id (a cluster-wide `delegate list` shows the same
    /// session on every replica).
    pub fn look(project: &HaProject, replicas: &BTreeMap<String, String>) -> Self {
        let mut placement = Self::default();
        for (service, container) in replicas {
            match project.replica_session_count(container) {
                Ok(n) => {
                    placement.held.insert(service.clone(), n);
                }
                Err(e) => placement.failed.push((service.clone(), format!("/metrics: {e}"))),
            }
            match project.replica_sessions(container) {
                Ok(sessions) => {
                    for session in sessions {
                        let entry = placement.by_delegate.entry(session.name.clone()).or_default();
                        if !entry.iter().any(|(_, s)| s.session_id == session.session_id) {
                            entry.push((service.clone(), session));
                        }
                    }
                }
                Err(e) => placement.failed.push((service.clone(), e.to_string())),
            }
        }
        placement
    }

    /// Sessions held by all the replicas looked at.
    pub fn total_held(&self) -> u64 {
        self.held.values().sum()
    }

    /// One line for messages: who is where (ids only, never token values).
    pub fn describe(&self) -> String {
        let held: Vec<String> = self.held.iter().map(|(replica, n)| format!("{replica} holds {n}")).collect();
        let mut parts: Vec<String> = self
            .by_delegate
            .iter()
            .flat_map(|(name, sessions)| {
                sessions
                    .iter()
                    .map(move |(replica, s)| format!("{name} on {replica} (session {})", s.session_id))
            })
            .collect();
        parts.extend(self.failed.iter().map(|(replica, why)| format!("{replica}: {why}")));
        if parts.is_empty() {
            parts.push("no sessions listed".to_string());
        }
        format!("{}; {}", held.join(", "), parts.join(", "))
    }
}
