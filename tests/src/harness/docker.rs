//! Docker helpers for the delegate's self-replacement tests, through the `docker` CLI against
//! the real engine: unique names per run, a drop guard that removes every container (found by
//! the run label, which successors inherit), network and volume of the run, and the delegate
//! image (an existing `tether-delegate:latest`, or one built here from the static binary;
//! nothing is ever pulled).
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::process::{run_ok, run_within, target_dir};

/// Label every object of a run carries.
pub const RUN_LABEL: &str = "io.tether.e2e-run";

/// How long one docker or compose command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `docker args…` within [`COMMAND_TIMEOUT`]; its stdout (trimmed) on success, the
/// stderr in the error otherwise.
pub fn docker(args: &[&str]) -> Result<String> {
    Ok(run_ok(Command::new("docker").args(args), COMMAND_TIMEOUT)?.trim().to_owned())
}

/// `docker inspect` of one container, or `None` when it does not exist.
pub fn inspect(what: &str) -> Result<Option<Value>> {
    let out =
        run_within(Command::new("docker").args(["inspect", "--type", "container", what]), COMMAND_TIMEOUT)?;
    if !out.status.success() {
        return Ok(None);
    }
    let mut list: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    Ok(list.pop())
}

/// One test run's Docker objects; all removed on drop, also when the test fails.
#[derive(Debug)]
pub struct Run {
    /// Unique id of the run (8 hex).
    pub id: String,
    networks: Vec<String>,
    volumes: Vec<String>,
    _build_dir: Option<tempfile::TempDir>,
}

impl Run {
    /// A new run; fails with a clear message when the engine is unreachable.
    pub fn new() -> Result<Self> {
        docker(&["info", "--format", "{{.ServerVersion}}"]).context("these tests need the Docker engine")?;
        let id = format!("{:08x}", rand::random::<u32>());
        Ok(Self { id, networks: Vec::new(), volumes: Vec::new(), _build_dir: None })
    }

    /// `tether-e2e-<run>-<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("tether-e2e-{}-{suffix}", self.id)
    }

    /// `--label io.tether.e2e-run=<run>`.
    pub fn label(&self) -> String {
        format!("{RUN_LABEL}={}", self.id)
    }

    /// Creates a user-defined bridge network; returns its gateway address.
    pub fn network(&mut self, suffix: &str) -> Result<(String, String)> {
        let name = self.name(suffix);
        docker(&["network", "create", "--label", &self.label(), &name])?;
        self.networks.push(name.clone());
        let gateway = docker(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &name])?;
        Ok((name, gateway))
    }

    /// Creates a named volume.
    pub fn volume(&mut self, suffix: &str) -> Result<String> {
        let name = self.name(suffix);
        docker(&["volume", "create", "--label", &self.label(), &name])?;
        self.volumes.push(name.clone());
        Ok(name)
    }

    /// The delegate image: `$TETHER_DELEGATE_IMAGE`, else `tether-delegate:latest` if it
    /// exists (`docker/build-images.sh`), else an image built now, FROM scratch, from the
    /// static binary in `target/x86_64-unknown-linux-musl/release/`.
    pub fn delegate_image(&mut self) -> Result<String> {
        if let Ok(image) = std::env::var("TETHER_DELEGATE_IMAGE") {
            return Ok(image);
        }
        if docker(&["image", "inspect", "tether-delegate:latest"]).is_ok() {
            return Ok("tether-delegate:latest".into());
        }
        let binary: PathBuf = target_dir().join("x86_64-unknown-linux-musl/release/tether-delegate");
        if !binary.exists() {
            bail!(
                "no tether-delegate image and no static binary at {}: run docker/build-images.sh",
                binary.display()
            );
        }
        let dir = tempfile::tempdir()?;
        std::fs::copy(&binary, dir.path().join("tether-delegate"))?;
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY tether-delegate /tether-delegate\nENTRYPOINT [\"/tether-delegate\"]\nCMD [\"run\"]\n",
        )?;
        let tag = format!("tether-delegate-e2e:{}", self.id);
        let mut build = Command::new("docker");
        build
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "--label", &self.label(), "-t", &tag])
            .arg(dir.path());
        run_ok(&mut build, COMMAND_TIMEOUT).context("building the test image")?;
        self._build_dir = Some(dir);
        Ok(tag)
    }

    /// Ids of the run's containers (any state).
    pub fn containers(&self) -> Result<Vec<String>> {
        let out = docker(&["ps", "-aq", "--no-trunc", "--filter", &format!("label={}", self.label())])?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(ids) = self.containers() {
            for id in ids {
                let _ = docker(&["rm", "-f", "-v", &id]);
            }
        }
        for network in &self.networks {
            let _ = docker(&["network", "rm", network]);
        }
        for volume in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", volume]);
        }
        let _ = docker(&["image", "rm", &format!("tether-delegate-e2e:{}", self.id)]);
    }
}
