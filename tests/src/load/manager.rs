//! Starts a real `tether-manager` for a benchmark run: `init --json` into a fresh data dir,
//! then `serve` on a free loopback port, and waits (bounded) for `/readyz`.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// What `tether-manager init --json` prints.
#[derive(Debug, Deserialize)]
pub struct InitOutput {
    /// The first account.
    pub account_id: String,
    /// Its default token (the secret value).
    pub default_token: String,
    /// The first admin token.
    pub admin_token: String,
    /// Path of the generated CA certificate.
    pub ca_cert: PathBuf,
}

/// A running manager process; killed on drop.
#[derive(Debug)]
pub struct ManagerProc {
    child: Child,
    /// The binary, for CLI calls.
    pub bin: PathBuf,
    /// Its data dir.
    pub data_dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The init output.
    pub init: InitOutput,
}

impl ManagerProc {
    /// Initialises a data dir and serves it. `env` is passed to `serve` (e.g. heartbeat knobs).
    pub async fn start(bin: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let out = Command::new(bin)
            .args(["init", "--json", "--data-dir"])
            .arg(data_dir.path())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {} init", bin.display()))?;
        if !out.status.success() {
            bail!("tether-manager init failed with {}", out.status);
        }
        let init: InitOutput = serde_json::from_slice(&out.stdout).context("parsing init --json")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--data-dir"])
            .arg(data_dir.path())
            .args(["--listen", &addr.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting tether-manager serve")?;
        let proc = Self { child, bin: bin.to_path_buf(), data_dir, addr, init };
        proc.wait_ready(Duration::from_secs(30)).await?;
        Ok(proc)
    }

    /// The manager's PID, for RSS readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// An HTTPS client trusting the manager's CA.
    pub fn http(&self) -> Result<reqwest::Client> {
        let pem = std::fs::read(&self.init.ca_cert)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(reqwest::Client::builder().use_preconfigured_tls(tls).build()?)
    }

    async fn wait_ready(&self, within: Duration) -> Result<()> {
        let client = self.http()?;
        let deadline = Instant::now() + within;
        let url = format!("{}/readyz", self.url());
        while Instant::now() < deadline {
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("manager not ready at {url} within {within:?}")
    }

    /// Runs a CLI subcommand with `--json` against this manager and parses its output.
    pub fn cli(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = Command::new(&self.bin)
            .args(args)
            .arg("--json")
            .env("TETHER_MANAGER_URL", self.url())
            .env("TETHER_ADMIN_TOKEN", &self.init.admin_token)
            .env("TETHER_CA_CERT", &self.init.ca_cert)
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            bail!("tether-manager {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for ManagerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
