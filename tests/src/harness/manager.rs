//! The real manager, the one launcher of these tests: `tether-manager init --json` into a
//! fresh data dir, then `serve --listen <ip>:0`; the address it bound is read back from its
//! `tether-manager listening` log line (no port picked here and released, so no race), and it
//! is ready once `/readyz` answers 200 (polled with a deadline). It can be stopped with
//! SIGTERM or `kill -9` and served again on the same data dir and the same address; killed on
//! drop. HTTPS clients for it and a runner for the admin CLI; the admin API calls are in
//! [`super::api`].
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::poll;
use super::process::{binary, Proc};
use crate::load::transport::Target;

/// How long one admin API request may take.
pub const REQUEST_WITHIN: Duration = Duration::from_secs(20);
/// How long a start (up to `/readyz`) or a graceful stop may take.
const START_WITHIN: Duration = Duration::from_secs(30);

/// What `init --json` prints.
#[derive(Debug, Clone, Deserialize)]
pub struct Init {
    /// The first account.
    pub account_id: String,
    /// Its default token (secret value).
    pub default_token: String,
    /// Its id.
    pub default_token_id: Uuid,
    /// The first admin token (scope admin).
    pub admin_token: String,
    /// Absolute path of the CA PEM.
    pub ca_cert: PathBuf,
}

/// Options of [`Manager::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on (the port is chosen by the manager's bind).
    pub listen_ip: IpAddr,
    /// `init --account`; default: the manager's own default.
    pub account: Option<String>,
    /// Extra certificate SANs (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// Environment for `serve` (e.g. `TETHER_HEARTBEAT_SECS`, `RUST_LOG`); every other
    /// `TETHER_*` variable of the test's own environment is removed. A `RUST_LOG` must keep
    /// the INFO `listening` line of `tether_manager::server` (`warn`, `error` and `off` are
    /// extended to keep it), which is how the bound address is read.
    pub env: Vec<(String, String)>,
    /// Host name the REST client uses (resolved to the listen address), e.g. one of
    /// `tls_sans`; default: the listen IP.
    pub url_host: Option<String>,
    /// The manager binary; default: [`binary`]`("tether-manager")`.
    pub bin: Option<PathBuf>,
    /// The PostgreSQL store (`init --database`, `TETHER_DATABASE_URL` for `serve`); default:
    /// the SQLite file in the data dir.
    pub database: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            account: None,
            tls_sans: Vec::new(),
            env: Vec::new(),
            url_host: None,
            bin: None,
            database: None,
        }
    }
}

impl Options {
    /// The defaults with `env` for `serve`.
    pub fn with_env(env: &[(&str, &str)]) -> Self {
        Self { env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Self::default() }
    }
}

/// A running manager.
#[derive(Debug)]
pub struct Manager {
    proc: Option<Proc>,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Where it listens (the same address after every restart).
    pub addr: SocketAddr,
    /// What init printed.
    pub init: Init,
    init_raw: String,
    options: Options,
    /// The delegate endpoint and the TLS configuration trusting the manager's CA.
    target: Target,
    /// The logs of earlier starts (this process's log is appended when it ends).
    earlier_logs: Vec<String>,
}

/// The address in a `tether-manager listening` log line: its `https://ADDR` URL field, the
/// same in the text and the JSON log formats.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, after) = line.split_once("tether-manager listening")?;
    let (_, url) = after.split_once("https://")?;
    let end = url.find(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c))).unwrap_or(url.len());
    url.get(..end)?.parse().ok()
}

/// `RUST_LOG` for `serve` such that the `listening` line (INFO, target
/// `tether_manager::server`, a handful of lifecycle lines) is still logged: a quieter global
/// level (`warn`, `error`, `off`) gets `tether_manager::server=info` added; anything else is
/// used as it is.
fn with_listening_line(rust_log: &str) -> String {
    match rust_log.trim().to_ascii_lowercase().as_str() {
        "warn" | "error" | "off" => format!("{rust_log},tether_manager::server=info"),
        _ => rust_log.to_owned(),
    }
}

/// An HTTPS client trusting `target`'s CA, from `source` when given, resolving `host` to the
/// target's address when given.
fn http_client(target: &Target, source: Option<IpAddr>, host: Option<&str>) -> Result<reqwest::Client> {
    let mut builder =
        reqwest::Client::builder().use_preconfigured_tls((*target.tls).clone()).timeout(REQUEST_WITHIN);
    if let Some(ip) = source {
        builder = builder.local_address(ip);
    }
    if let Some(host) = host {
        builder = builder.resolve(host, target.addr);
    }
    Ok(builder.build()?)
}

/// A command for the manager binary `bin` without the test's own `TETHER_*` environment.
pub fn command(bin: &Path) -> Command {
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TETHER_") {
            command.env_remove(key);
        }
    }
    command
}

impl Manager {
    /// Inits a fresh data dir and serves it on 127.0.0.1 with `env` for `serve` (e.g.
    /// `TETHER_HANDSHAKE_FAIL_LIMIT`, `RUST_LOG`).
    pub async fn start(env: &[(&str, &str)]) -> Result<Self> {
        Self::start_with(Options::with_env(env)).await
    }

    /// Inits a fresh data dir and serves it with `options`.
    pub async fn start_with(options: Options) -> Result<Self> {
        let bin = match &options.bin {
            Some(bin) => bin.clone(),
            None => binary("tether-manager")?,
        };
        let dir = tempfile::tempdir()?;
        let mut init = command(&bin);
        init.args(["init", "--json", "--data-dir"]).arg(dir.path().join("data"));
        if let Some(account) = &options.account {
            init.args(["--account", account]);
        }
        for san in &options.tls_sans {
            init.args(["--tls-san", san]);
        }
        if let Some(db) = &options.database {
            init.args(["--database", db]);
        }
        let out = init.output().context("running tether-manager init")?;
        if !out.status.success() {
            bail!("tether-manager init failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        let init_raw = String::from_utf8(out.stdout).context("init --json printed no UTF-8")?;
        let init: Init = serde_json::from_str(&init_raw).context("parsing `init --json`")?;
        let (proc, addr) = Self::launch(&bin, &dir.path().join("data"), &options, None).await?;
        let target = Target::new(addr, "localhost", &init.ca_cert)?;
        let manager = Self {
            proc: Some(proc),
            bin,
            dir,
            addr,
            init,
            init_raw,
            options,
            target,
            earlier_logs: Vec::new(),
        };
        manager.wait_ready().await?;
        Ok(manager)
    }

    /// Spawns `serve` on `addr` (or port 0 of the listen IP) and reads back the bound address.
    async fn launch(
        bin: &Path,
        data_dir: &Path,
        options: &Options,
        addr: Option<SocketAddr>,
    ) -> Result<(Proc, SocketAddr)> {
        let listen = addr.unwrap_or(SocketAddr::new(options.listen_ip, 0));
        let mut serve = command(bin);
        serve.args(["serve", "--data-dir"]).arg(data_dir).args(["--listen", &listen.to_string()]);
        serve.env("RUST_LOG", "info");
        if let Some(db) = &options.database {
            serve.env("TETHER_DATABASE_URL", db);
        }
        for (key, value) in &options.env {
            match key.as_str() {
                "RUST_LOG" => serve.env(key, with_listening_line(value)),
                _ => serve.env(key, value),
            };
        }
        let mut proc = Proc::spawn("tether-manager serve", serve)?;
        let bound = poll::until(
            "the manager's `listening` log line (INFO, tether_manager::server)",
            START_WITHIN,
            || {
                let found = proc.lines().iter().find_map(|l| listening_addr(l));
                let exited = !proc.running();
                async move {
                    match found {
                        Some(addr) => Ok(Some(addr)),
                        None if exited => Err(anyhow!("the manager exited")),
                        None => Ok(None),
                    }
                }
            },
        )
        .await
        .with_context(|| format!("manager log:\n{}", proc.log()))?;
        Ok((proc, bound))
    }

    /// A second manager serving a copy of this one's data dir (the same master key and TLS
    /// files) with the same options on another port: with a PostgreSQL store, a second
    /// manager of the same store.
    pub async fn replica(&self) -> Result<Self> {
        self.replica_with(self.options.clone()).await
    }

    /// The options this manager was started with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// [`Manager::replica`] with other options (another database URL to the same store, e.g.
    /// through a proxy).
    pub async fn replica_with(&self, options: Options) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(self.data_dir())? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::copy(entry.path(), data.join(entry.file_name()))?;
            }
        }
        let (proc, addr) = Self::launch(&self.bin, &data, &options, None).await?;
        let target = Target::new(addr, "localhost", &self.init.ca_cert)?;
        let replica = Self {
            proc: Some(proc),
            bin: self.bin.clone(),
            dir,
            addr,
            init: self.init.clone(),
            init_raw: self.init_raw.clone(),
            options,
            target,
            earlier_logs: Vec::new(),
        };
        replica.wait_ready().await?;
        Ok(replica)
    }

    async fn wait_ready(&self) -> Result<()> {
        let url = format!("{}/readyz", self.url());
        let http = self.http();
        poll::until("the manager's /readyz", START_WITHIN, || async {
            Ok(http.get(&url).send().await?.status().is_success().then_some(()))
        })
        .await
        .with_context(|| format!("manager log:\n{}", self.logs()))
    }

    /// Serves the same data dir on the same address again (after [`Manager::kill9`] or
    /// [`Manager::stop`]); waits for `/readyz`.
    pub async fn serve(&mut self) -> Result<()> {
        if self.proc.is_some() {
            bail!("the manager is already running");
        }
        let data_dir = self.data_dir();
        let (proc, addr) = Self::launch(&self.bin, &data_dir, &self.options, Some(self.addr)).await?;
        self.proc = Some(proc);
        if addr != self.addr {
            bail!("the manager came back on {addr}, not {}", self.addr);
        }
        self.wait_ready().await
    }

    fn ended(&mut self, proc: Proc) {
        self.earlier_logs.push(proc.log());
    }

    /// `kill -9`: no chance to flush or drain.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            let killed = proc.kill9();
            self.ended(proc);
            killed?;
        }
        Ok(())
    }

    /// Sends SIGTERM (the manager says goodbye and drains); see [`Manager::wait_exit`].
    pub fn terminate(&self) -> Result<()> {
        self.proc.as_ref().context("the manager is not running")?.terminate()
    }

    /// Waits for the exit within `limit` (after [`Manager::terminate`]); the status and how
    /// long it took.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<(ExitStatus, Duration)> {
        let mut proc = self.proc.take().context("the manager is not running")?;
        let exited = proc.wait_exit(limit).await;
        self.ended(proc);
        exited
    }

    /// Stops the manager (SIGTERM, then waits).
    pub async fn stop(&mut self) -> Result<()> {
        if self.proc.is_some() {
            self.terminate()?;
            self.wait_exit(START_WITHIN).await?;
        }
        Ok(())
    }

    /// Stops the manager gracefully and serves the same data dir on the same address again.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.serve().await
    }

    /// Serves the next [`Manager::serve`] from the PostgreSQL store at `url` (or the SQLite
    /// file, with `None`).
    pub fn set_database(&mut self, url: Option<String>) {
        self.options.database = url;
    }

    /// The manager binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join("tether.db")
    }

    /// The raw `init --json` output (it holds secrets: for the secret scan's list only).
    pub fn init_json(&self) -> &str {
        &self.init_raw
    }

    /// Everything the manager wrote to stdout and stderr, over all its starts.
    pub fn logs(&self) -> String {
        self.log_lines().join("\n")
    }

    /// The log lines of all its starts.
    pub fn log_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> =
            self.earlier_logs.iter().flat_map(|l| l.lines().map(str::to_owned)).collect();
        lines.extend(self.proc.as_ref().map(Proc::lines).unwrap_or_default());
        lines
    }

    /// `https://addr` (or `https://<url_host>:port`).
    pub fn url(&self) -> String {
        match &self.options.url_host {
            Some(host) => format!("https://{host}:{}", self.addr.port()),
            None => format!("https://{}", self.addr),
        }
    }

    /// The serving process's id, while it runs (for RSS and CPU readings).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// A new HTTPS client that trusts this manager's CA. Its connections close when it is
    /// dropped: an idle one kept here would count against the manager's caps on
    /// unauthenticated connections, which the connection tests fill exactly.
    pub fn http(&self) -> reqwest::Client {
        // The CA already loaded into `target`; only the TLS backend could fail here.
        http_client(&self.target, None, self.options.url_host.as_deref()).expect("an HTTPS client")
    }

    /// A new HTTPS client whose connections come from `source` (a 127.0.0.x address).
    pub fn http_from(&self, source: IpAddr) -> Result<reqwest::Client> {
        http_client(&self.target, Some(source), self.options.url_host.as_deref())
    }

    /// The delegate endpoint, trusting the manager's CA, verifying the name `localhost`.
    pub fn target(&self) -> Result<Target> {
        Ok(self.target.clone())
    }

    /// The admin CLI against this manager (`TETHER_MANAGER_URL`, `TETHER_ADMIN_TOKEN`,
    /// `TETHER_CA_CERT` set), to run blocking or through `tokio::process`.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cli = command(&self.bin);
        cli.args(args)
            .env("TETHER_MANAGER_URL", self.url())
            .env("TETHER_ADMIN_TOKEN", &self.init.admin_token)
            .env("TETHER_CA_CERT", &self.init.ca_cert);
        cli
    }

    /// Runs the admin CLI against this manager.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        self.cli_command(args).output().context("running the tether-manager CLI")
    }

    /// Runs an admin CLI subcommand with `--json` and parses what it prints.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let out = self.cli(&[args, &["--json"]].concat())?;
        if !out.status.success() {
            bail!("tether-manager {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_bound_address_in_both_log_formats() {
        let text = "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m INFO tether_manager::server: tether-manager \
                    listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:35741 \u{1b}[3murl\u{1b}[0m\
                    \u{1b}[2m=\u{1b}[0mhttps://127.0.0.1:35741";
        assert_eq!(listening_addr(text), Some("127.0.0.1:35741".parse().unwrap()));
        let json = r#"{"level":"INFO","message":"tether-manager listening","addr":"[::1]:8443","url":"https://[::1]:8443"}"#;
        assert_eq!(listening_addr(json), Some("[::1]:8443".parse().unwrap()));
        assert_eq!(listening_addr("INFO using the generated CA url=https://127.0.0.1:1"), None);
    }

    #[test]
    fn a_quiet_rust_log_still_shows_the_listening_line() {
        assert_eq!(with_listening_line("warn"), "warn,tether_manager::server=info");
        assert_eq!(with_listening_line("trace"), "trace");
        assert_eq!(with_listening_line("info,tether_manager=debug"), "info,tether_manager=debug");
    }
}
