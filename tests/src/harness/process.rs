//! Locating the workspace's binaries, and a child process whose stderr lines are collected
//! (for assertions on logs) and which is killed on drop.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace's `target` directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"))
}

/// Path of a workspace binary: `$<env_var>` if set, else `target/debug/<name>`.
pub fn binary(name: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let path = target_dir().join("debug").join(name);
    if !path.exists() {
        bail!("{} is missing: build it first (`cargo build --bins`) or set {env_var}", path.display());
    }
    Ok(path)
}

/// A workspace binary built by the same cargo invocation as the running test:
/// `target/<profile>/<name>`, beside the test executable's `deps/` directory.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).context("test executable has no target dir")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!("{} is not built: run `cargo build --workspace --bins` first", path.display());
    }
    Ok(path)
}

/// A running child process; its stderr lines are collected; killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `command` with stderr piped into the collected log.
    pub fn spawn(name: &str, mut command: Command) -> Result<Self> {
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
        let stderr = child.stderr.take().context("stderr piped")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
        });
        Ok(Self { child, lines, reader: Some(reader), name: name.to_owned() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join("\n")
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        Ok(())
    }

    /// Waits for the exit within `limit`; returns the status and how long it took. The log is
    /// complete afterwards.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<(ExitStatus, Duration)> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let elapsed = start.elapsed();
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Ok((status, elapsed));
            }
            if start.elapsed() >= limit {
                bail!("{} did not exit within {limit:?}; log:\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
