//! The Docker engine side of the Compose tests: the preflight (engine reachable, images
//! built), the Compose command of this machine (v2 plugin or v1), unique project names, and
//! removal of projects that earlier, killed test processes left behind.
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::IMAGES;
use crate::harness::docker::{docker, COMMAND_TIMEOUT};
use crate::harness::process::run_within;

/// How long `docker/up.sh` may take (its own wait for the delegates is bounded at 120 s).
pub const UP_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a command to completion with no standard input, within [`COMMAND_TIMEOUT`].
pub fn run(command: &mut Command) -> Result<Output> {
    run_within(command, COMMAND_TIMEOUT)
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
pub fn stale_projects() -> Result<Vec<String>> {
    let format = "{{.Label \"com.docker.compose.project\"}}";
    let filter = "label=com.docker.compose.project";
    let labels = [
        docker(&["ps", "-a", "--filter", filter, "--format", format])?,
        docker(&["volume", "ls", "--filter", filter, "--format", format])?,
        docker(&["network", "ls", "--filter", filter, "--format", format])?,
    ]
    .join("\n");
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
pub fn remove_project_resources(name: &str) {
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
pub fn compose_command() -> Vec<String> {
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
pub fn unique_project(test: &str) -> String {
    let suffix: u32 = rand::random();
    let test: String =
        test.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    format!("tether-e2e-{test}-{}-{suffix:08x}", std::process::id())
}

/// `COMPOSE --project-name NAME --file FILE --env-file ENV ARGS…`, with `compose` the command
/// words of [`compose_command`].
pub fn project_command(
    compose: &[String],
    name: &str,
    file: &Path,
    env_file: &Path,
    args: &[&str],
) -> Command {
    let mut command = Command::new(&compose[0]);
    command
        .args(&compose[1..])
        .arg("--project-name")
        .arg(name)
        .arg("--file")
        .arg(file)
        .arg("--env-file")
        .arg(env_file)
        .args(args);
    command
}

/// Runs `command` (a Compose call `args`), which must succeed; its stdout, or an error with its
/// stderr passed through `redact`.
pub fn stdout_of(command: &mut Command, args: &[&str], redact: impl Fn(&str) -> String) -> Result<String> {
    let output = run(command)?;
    if !output.status.success() {
        bail!(
            "compose {args:?} failed ({}): {}",
            output.status,
            redact(String::from_utf8_lossy(&output.stderr).trim())
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_unique_and_compose_safe() {
        let a = unique_project("Rotate_Both");
        let b = unique_project("Rotate_Both");
        assert_ne!(a, b);
        assert!(a.starts_with("tether-e2e-rotate-both-"));
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }
}
