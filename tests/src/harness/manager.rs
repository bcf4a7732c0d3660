//! The real manager: `tether-manager init --data-dir <tmp> --json`, then `serve --data-dir
//! <tmp> --listen <addr>:<free port>`, ready once `/readyz` answers 200 (polled with a
//! deadline); killed on drop. A small REST client for the admin API (delegate list, ping,
//! revoke, rotate, rotation status) and a runner for the admin CLI.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::poll;
use super::process::{binary, Proc};

/// What `init --json` prints.
#[derive(Debug, Clone, Deserialize)]
pub struct Init {
    /// The first account.
    pub account_id: String,
    /// Its default token (secret value).
    pub default_token: String,
    /// Its id.
    pub default_token_id: Uuid,
    /// The first admin token.
    pub admin_token: String,
    /// Absolute path of the CA PEM.
    pub ca_cert: PathBuf,
}

/// A live delegate session as the manager lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct DelegateRow {
    /// Session id.
    pub session_id: Uuid,
    /// Token in use.
    pub token_id: Uuid,
    /// Delegate name.
    pub name: String,
    /// Delegate instance.
    pub instance: Uuid,
    /// When the session was authenticated, unix seconds.
    pub connected_at: u64,
    /// The last heartbeat the manager received, unix seconds.
    pub last_heartbeat: u64,
}

/// A started rotation.
#[derive(Debug, Clone, Deserialize)]
pub struct Rotation {
    /// Rotation id.
    pub rotation_id: Uuid,
    /// The successor token's id.
    pub token_id: Uuid,
    /// The successor's value.
    pub token: String,
}

/// Options of [`Manager::start`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on (port chosen free).
    pub listen_ip: IpAddr,
    /// Extra certificate SANs (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// Environment for `serve` (e.g. `TETHER_HEARTBEAT_SECS`).
    pub env: Vec<(String, String)>,
    /// Host name the REST client uses (resolved to the listen address), e.g. one of
    /// `tls_sans`; default: the listen IP.
    pub url_host: Option<String>,
    /// The manager binary; default `$TETHER_MANAGER_BIN` or `target/debug/tether-manager`.
    pub bin: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tls_sans: Vec::new(),
            env: vec![("TETHER_HEARTBEAT_SECS".into(), "2".into())],
            url_host: None,
            bin: None,
        }
    }
}

/// A running manager.
#[derive(Debug)]
pub struct Manager {
    proc: Option<Proc>,
    bin: PathBuf,
    /// Its data dir (removed on drop).
    pub data_dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What init printed.
    pub init: Init,
    options: Options,
    http: reqwest::Client,
}

/// A free TCP port on `ip`.
pub fn free_port(ip: IpAddr) -> Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

fn http_client(ca_pem: &[u8], resolve: Option<(&str, SocketAddr)>) -> Result<reqwest::Client> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.context("CA PEM")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(20));
    if let Some((host, addr)) = resolve {
        builder = builder.resolve(host, addr);
    }
    Ok(builder.build()?)
}

impl Manager {
    /// Inits a fresh data dir and serves it on loopback.
    pub async fn start() -> Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// Inits a fresh data dir and serves it with `options`.
    pub async fn start_with(options: Options) -> Result<Self> {
        let bin = match &options.bin {
            Some(bin) => bin.clone(),
            None => binary("tether-manager", "TETHER_MANAGER_BIN")?,
        };
        let data_dir = tempfile::tempdir()?;
        let mut init = Command::new(&bin);
        init.args(["init", "--json", "--data-dir"]).arg(data_dir.path());
        for san in &options.tls_sans {
            init.args(["--tls-san", san]);
        }
        let out = init.output().context("running tether-manager init")?;
        if !out.status.success() {
            bail!("tether-manager init failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        let init: Init = serde_json::from_slice(&out.stdout).context("parsing `init --json`")?;
        let ca =
            std::fs::read(&init.ca_cert).with_context(|| format!("reading {}", init.ca_cert.display()))?;
        let addr = SocketAddr::new(options.listen_ip, free_port(options.listen_ip)?);
        let http = http_client(&ca, options.url_host.as_deref().map(|h| (h, addr)))?;
        let mut manager = Self { proc: None, bin, data_dir, addr, init, options, http };
        manager.serve().await?;
        Ok(manager)
    }

    async fn serve(&mut self) -> Result<()> {
        let mut command = Command::new(&self.bin);
        command
            .args(["serve", "--data-dir"])
            .arg(self.data_dir.path())
            .args(["--listen", &self.addr.to_string()])
            .env("RUST_LOG", "info");
        for (key, value) in &self.options.env {
            command.env(key, value);
        }
        self.proc = Some(Proc::spawn("tether-manager serve", command)?);
        let url = format!("{}/readyz", self.url());
        let http = self.http.clone();
        poll::until("the manager's /readyz", Duration::from_secs(30), || {
            let (http, url) = (http.clone(), url.clone());
            async move { Ok(http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
        })
        .await
        .with_context(|| format!("manager log:\n{}", self.log()))
    }

    /// Stops the manager (SIGTERM, then waits) and serves the same data dir on the same
    /// address again.
    pub async fn restart(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate()?;
            proc.wait_exit(Duration::from_secs(15)).await?;
        }
        self.serve().await
    }

    /// Stops the manager for good.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate()?;
            proc.wait_exit(Duration::from_secs(15)).await?;
        }
        Ok(())
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

    /// The HTTPS client that trusts this manager's CA.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Runs an admin CLI subcommand with `--json` and parses what it prints.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let out = self.cli(&[args, &["--json"]].concat())?;
        if !out.status.success() {
            bail!("tether-manager {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The manager's log so far.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url()))
            .bearer_auth(&self.init.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }

    /// Live delegate sessions.
    pub async fn delegates(&self) -> Result<Vec<DelegateRow>> {
        Ok(serde_json::from_value(self.call(reqwest::Method::GET, "/api/v1/delegates", None).await?)?)
    }

    /// Waits until a session of `name` on `token_id` is live; returns it.
    pub async fn wait_for_session(&self, name: &str, token_id: Uuid, limit: Duration) -> Result<DelegateRow> {
        poll::until(&format!("a session of `{name}` on token {token_id}"), limit, || async {
            Ok(self.delegates().await?.into_iter().find(|d| d.name == name && d.token_id == token_id))
        })
        .await
    }

    /// Pings a session through the REST API; returns the echoed payload.
    pub async fn ping(&self, session_id: Uuid, payload: &str) -> Result<String> {
        let path = format!("/api/v1/delegates/{session_id}/ping");
        let reply = self.call(reqwest::Method::POST, &path, Some(json!({ "payload": payload }))).await?;
        reply["payload"].as_str().map(str::to_owned).context("ping reply without payload")
    }

    /// Revokes a token of the init account.
    pub async fn revoke(&self, token_id: Uuid) -> Result<()> {
        let path = format!("/api/v1/accounts/{}/tokens/{token_id}/revoke", self.init.account_id);
        self.call(reqwest::Method::POST, &path, Some(json!({}))).await.map(drop)
    }

    /// Rotates a token of the init account with a grace window.
    pub async fn rotate(&self, token_id: Uuid, grace_secs: u64) -> Result<Rotation> {
        let path = format!("/api/v1/accounts/{}/tokens/{token_id}/rotate", self.init.account_id);
        let body = self.call(reqwest::Method::POST, &path, Some(json!({ "grace_secs": grace_secs }))).await?;
        Ok(serde_json::from_value(body)?)
    }

    /// A rotation's status document.
    pub async fn rotation(&self, rotation_id: Uuid) -> Result<Value> {
        self.call(reqwest::Method::GET, &format!("/api/v1/rotations/{rotation_id}"), None).await
    }

    /// Runs the admin CLI against this manager (`--manager`, `--admin-token`, `--ca-cert` set).
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(&self.bin)
            .args(args)
            .env("TETHER_MANAGER_URL", self.url())
            .env("TETHER_ADMIN_TOKEN", &self.init.admin_token)
            .env("TETHER_CA_CERT", &self.init.ca_cert)
            .output()
            .context("running the tether-manager CLI")
    }
}
