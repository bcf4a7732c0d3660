//! Locating the workspace's binaries (one lookup), a child process whose output lines are
//! collected (for assertions on logs) and which is killed on drop, and a command run to
//! completion within a time limit.
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The workspace's `target` directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"))
}

/// The variable that overrides where binary `name` is found: `tether-manager` →
/// `TETHER_MANAGER_BIN` (to check a test against an earlier build).
pub fn override_var(name: &str) -> String {
    format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"))
}

/// Path of a workspace binary: `$TETHER_<NAME>_BIN` if set and not empty, else `<name>` in
/// the profile directory of the running executable (`target/debug/` for a test in
/// `target/debug/deps/`, or for `tether-load` itself), else `target/debug/<name>`.
pub fn binary(name: &str) -> Result<PathBuf> {
    let var = override_var(name);
    if let Some(path) = std::env::var_os(&var).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent().context("the running executable has no directory")?;
    if dir.file_name().is_some_and(|d| d == "deps") {
        dir = dir.parent().context("deps/ has no parent")?;
    }
    for candidate in [dir.join(name), target_dir().join("debug").join(name)] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("{name} is not built: run `cargo build --workspace --bins` first, or set {var}")
}

type Lines = Arc<Mutex<Vec<String>>>;

/// A running child process; its stdout and stderr lines are collected; killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    lines: Lines,
    readers: Vec<JoinHandle<()>>,
    name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(from: impl Read + Send + 'static, sink: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap_or_else(PoisonError::into_inner).push(line);
        }
    })
}

impl Proc {
    /// Spawns `command` with its stdout and stderr collected into one log.
    pub fn spawn(name: &str, mut command: Command) -> Result<Self> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
        let lines = Lines::default();
        let stdout = child.stdout.take().context("stdout piped")?;
        let stderr = child.stderr.take().context("stderr piped")?;
        let readers = vec![collect(stdout, lines.clone()), collect(stderr, lines.clone())];
        Ok(Self { child, lines, readers, name: name.to_owned() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.lines().join("\n")
    }

    /// The log lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM (through `kill`, as Docker or systemd would).
    pub fn terminate(&self) -> Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        Ok(())
    }

    /// `kill -9`: no chance to flush or drain. Waits for the exit; the log is complete after.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill()?; // SIGKILL on Unix
        self.child.wait()?;
        self.join_readers();
        Ok(())
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// Waits for the exit within `limit`; returns the status and how long it took. The log is
    /// complete afterwards.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<(ExitStatus, Duration)> {
        let start = tokio::time::Instant::now();
        let child = &mut self.child;
        let status = super::poll::until(&format!("{} to exit", self.name), limit, || {
            let exited = child.try_wait().context("waiting for the child");
            async move { exited }
        })
        .await
        .with_context(|| format!("log:\n{}", self.log()))?;
        self.join_readers();
        Ok((status, start.elapsed()))
    }
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        buf
    })
}

/// Runs `command` to completion with no standard input, in its own process group; past
/// `limit` the whole group is killed (a hung `docker` call must fail the test, not hang it
/// past the point where its guard cleans up).
pub fn run_within(command: &mut Command, limit: Duration) -> Result<Output> {
    let program = format!("{:?} {:?}", command.get_program(), command.get_args().collect::<Vec<_>>());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let stdout = read_all(child.stdout.take().context("stdout piped")?);
    let stderr = read_all(child.stderr.take().context("stderr piped")?);
    let status = super::poll::until_blocking(&program, limit, Duration::from_millis(20), || {
        child.try_wait().context("waiting for a child")
    });
    if status.is_err() {
        // Our own child's process group, by its id.
        let _ = Command::new("kill").arg("-KILL").arg(format!("-{}", child.id())).status();
        let _ = child.wait();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Ok(status) => Ok(Output { status, stdout, stderr }),
        Err(e) => bail!("{e}; stderr so far: {}", String::from_utf8_lossy(&stderr).trim()),
    }
}

/// The stdout of `command`, which must succeed within `limit`; its stderr in the error
/// otherwise.
pub fn run_ok(command: &mut Command, limit: Duration) -> Result<String> {
    let output = run_within(command, limit)?;
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
