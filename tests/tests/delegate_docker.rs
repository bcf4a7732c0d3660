//! Docker-mode rotation against the REAL Docker engine and the REAL manager: the delegate
//! container named X is replaced by a different container still named X that carries the new
//! `ACCOUNT_SECRET`, keeps networks, aliases, mounts, labels and restart policy, and is
//! authenticated on the new token, while the old container is gone — and the manager's
//! delegate list never shows X absent. And the rollback: a successor that cannot authenticate
//! is removed, the old container keeps running, and the rotation records `failed`.
//!
//! The manager runs on the host, listening on the gateway of the test's own network; the
//! containers reach it by a host name (`--add-host`) that is in its certificate.
//!
//! The delegates run at `RUST_LOG=trace`, and the logs of the old container (followed until
//! it is removed) and of the successor are scanned for both tokens in every encoding: the
//! engine's client library sees them (the successor's create request carries the new
//! `ACCOUNT_SECRET`, the inspect answers the old one) and must not write them to the log.
use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tether_protocol::Token;
use tether_tests::harness::docker::{docker, inspect, Run};
use tether_tests::harness::{poll, Manager, Options};
use tether_tests::secrets::{find_needles, token_needles};

const MANAGER_HOST: &str = "tether-manager-e2e";
const LIMIT: Duration = Duration::from_secs(60);

struct Setup {
    run: Run,
    manager: Manager,
    name: String,
    net_a: String,
    net_b: String,
    volume: String,
}

/// Networks, volume, manager; then the delegate container X, created, wired to two networks
/// with aliases, and started. `ca_in_layer` puts the CA into the container's own layer
/// (`docker cp`) instead of a bind mount, so a successor built from the image lacks it.
async fn setup(replace_timeout_secs: u64, ca_in_layer: bool) -> Result<Setup> {
    let mut run = Run::new()?;
    let image = run.delegate_image()?;
    let (net_a, gateway) = run.network("a")?;
    let (net_b, _) = run.network("b")?;
    let volume = run.volume("data")?;
    let manager = Manager::start_with(Options {
        listen_ip: gateway.parse().context("gateway address")?,
        tls_sans: vec![MANAGER_HOST.into()],
        url_host: Some(MANAGER_HOST.into()),
        env: vec![("TETHER_HEARTBEAT_SECS".into(), "2".into())],
        ..Options::default()
    })
    .await?;
    let name = run.name("delegate");
    let ca = manager.init.ca_cert.display().to_string();
    let mut args: Vec<String> = [
        "create",
        "--name",
        &name,
        "--label",
        &run.label(),
        "--label",
        "team=e2e",
        "--restart",
        "unless-stopped",
        "--user",
        "0:0",
        "--network",
        &net_a,
        "--network-alias",
        "alias-a",
        "--add-host",
        &format!("{MANAGER_HOST}:{gateway}"),
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{volume}:/data"),
        "-e",
        &format!("ACCOUNT_ID={}", manager.init.account_id),
        "-e",
        &format!("ACCOUNT_SECRET={}", manager.init.default_token),
        "-e",
        &format!("MANAGER_HOST_AND_PORT={MANAGER_HOST}:{}", manager.addr.port()),
        "-e",
        &format!("DELEGATE_NAME={name}"),
        "-e",
        "TETHER_STATE_DIR=/data",
        "-e",
        "ACCOUNT_SECRET_FILE=/data/token",
        "-e",
        &format!("TETHER_REPLACE_TIMEOUT_SECS={replace_timeout_secs}"),
        "-e",
        "RUST_LOG=trace",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if ca_in_layer {
        args.extend(["-e".into(), "MANAGER_CA_CERT=/ca.pem".into()]);
    } else {
        args.extend([
            "-v".into(),
            format!("{ca}:/etc/tether/ca.pem:ro"),
            "-e".into(),
            "MANAGER_CA_CERT=/etc/tether/ca.pem".into(),
        ]);
    }
    args.push(image);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args)?;
    if ca_in_layer {
        docker(&["cp", &ca, &format!("{name}:/ca.pem")])?;
    }
    docker(&["network", "connect", "--alias", "alias-b", &net_b, &name])?;
    docker(&["start", &name])?;
    Ok(Setup { run, manager, name, net_a, net_b, volume })
}

fn logs(container: &str) -> String {
    docker(&["logs", container]).unwrap_or_default()
        + &std::process::Command::new("docker")
            .args(["logs", container])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
}

/// `docker logs -f` of one container into a file, until the container is gone.
struct Follow {
    child: Child,
    out: tempfile::NamedTempFile,
}

impl Follow {
    fn start(container: &str) -> Result<Self> {
        let out = tempfile::NamedTempFile::new()?;
        let child = Command::new("docker")
            .args(["logs", "-f", container])
            .stdout(out.reopen()?)
            .stderr(out.reopen()?)
            .spawn()
            .context("docker logs -f")?;
        Ok(Self { child, out })
    }

    /// Waits (bounded) for the stream to end with its container, and returns the log.
    async fn finish(mut self, limit: Duration) -> Result<String> {
        let ended = poll::until("docker logs -f to end with its container", limit, || {
            let done = self.child.try_wait().map(|status| status.is_some());
            async move { Ok(done?.then_some(())) }
        })
        .await;
        if ended.is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        ended?;
        Ok(std::fs::read_to_string(self.out.path())?)
    }
}

/// Where any form of any of `tokens` occurs in `log` (one entry per line and form).
fn secret_hits(label: &str, log: &str, tokens: &[&str]) -> Result<Vec<String>> {
    let mut needles = Vec::new();
    for token in tokens {
        needles.extend(token_needles(&Token::parse(token).context("a token")?));
    }
    Ok(log
        .lines()
        .enumerate()
        .flat_map(|(n, line)| find_needles(&format!("{label} log line {}", n + 1), line, &needles))
        .collect())
}

/// A file's content in a (running or stopped) container, through `docker cp`.
fn read_in(container: &str, path: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("copy");
    docker(&["cp", &format!("{container}:{path}"), &local.display().to_string()])?;
    Ok(std::fs::read_to_string(local)?.trim().to_owned())
}

fn id_of(container: &Value) -> String {
    container["Id"].as_str().unwrap_or_default().to_owned()
}

/// Polls the manager's delegate list every 50 ms while `scenario` runs; returns the
/// scenario's result and the smallest number of live sessions named `name` seen (every poll
/// must succeed, and there must be several).
async fn watching<T>(
    manager: &Manager,
    name: &str,
    scenario: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, usize)> {
    let done = AtomicBool::new(false);
    let min = AtomicUsize::new(usize::MAX);
    let observations = AtomicUsize::new(0);
    let watch = async {
        while !done.load(Ordering::SeqCst) {
            let rows = manager.delegates().await.expect("the manager's delegate list answers throughout");
            let live = rows.iter().filter(|d| d.name == name).count();
            min.fetch_min(live, Ordering::SeqCst);
            observations.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let work = async {
        let result = scenario.await;
        done.store(true, Ordering::SeqCst);
        result
    };
    let ((), result) = tokio::join!(watch, work);
    let seen = observations.load(Ordering::SeqCst);
    assert!(seen >= 3, "only {seen} observations of the delegate list");
    Ok((result?, min.load(Ordering::SeqCst)))
}

fn network_aliases(container: &Value, network: &str) -> BTreeSet<String> {
    container["NetworkSettings"]["Networks"][network]["Aliases"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn env_value(container: &Value, key: &str) -> Option<String> {
    container["Config"]["Env"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|e| e.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

fn mounts(container: &Value) -> BTreeSet<(String, String)> {
    container["Mounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let source = m["Name"].as_str().or(m["Source"].as_str()).unwrap_or_default();
                    (source.to_owned(), m["Destination"].as_str().unwrap_or_default().to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_docker_rotation_replaces_the_container_without_a_gap() -> Result<()> {
    let s = setup(45, false).await?;
    let (manager, name) = (&s.manager, s.name.as_str());
    let old_token_id = manager.init.default_token_id;
    manager.wait_for_session(name, old_token_id, LIMIT).await.with_context(|| logs(name))?;
    let old = inspect(name)?.context("container X")?;
    let old_id = id_of(&old);
    let old_log = Follow::start(&old_id)?;

    let started = std::time::Instant::now();
    let (rotation, min_live) = watching(manager, name, async {
        let rotation = manager.rotate(old_token_id, 300).await?;
        poll::until("X to be a different container on the new token, the old one gone", LIMIT, || async {
            let current = inspect(name)?;
            let replaced =
                current.as_ref().is_some_and(|c| id_of(c) != old_id && c["State"]["Running"] == true);
            let old_gone = inspect(&old_id)?.is_none();
            let on_new =
                manager.delegates().await?.iter().any(|d| d.name == name && d.token_id == rotation.token_id);
            Ok((replaced && old_gone && on_new).then_some(()))
        })
        .await
        .with_context(|| format!("old container log:\n{}", logs(&old_id)))?;
        Ok(rotation)
    })
    .await?;
    assert!(min_live >= 1, "at some moment no delegate named {name} was connected");
    eprintln!("docker-mode replacement took {:?} from the rotate call", started.elapsed());

    let new = inspect(name)?.context("X after rotation")?;
    assert_ne!(id_of(&new), old_id);
    assert_eq!(
        env_value(&new, "ACCOUNT_SECRET").as_deref(),
        Some(rotation.token.as_str()),
        "new ACCOUNT_SECRET"
    );
    let networks = |c: &Value| -> BTreeSet<String> {
        c["NetworkSettings"]["Networks"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    };
    assert_eq!(networks(&new), BTreeSet::from([s.net_a.clone(), s.net_b.clone()]));
    assert!(network_aliases(&new, &s.net_a).contains("alias-a"), "{:?}", network_aliases(&new, &s.net_a));
    assert!(network_aliases(&new, &s.net_b).contains("alias-b"), "{:?}", network_aliases(&new, &s.net_b));
    assert_eq!(mounts(&new), mounts(&old));
    assert!(mounts(&new).iter().any(|(source, _)| *source == s.volume));
    assert_eq!(new["Config"]["Labels"]["team"], "e2e");
    assert_eq!(new["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(new["Name"], format!("/{name}"));

    // Authenticated on the new token, and answering.
    let session = manager.wait_for_session(name, rotation.token_id, LIMIT).await?;
    assert_eq!(manager.ping(session.session_id, "after-replacement").await?, "after-replacement");
    manager.wait_for_outcome(rotation.rotation_id, "applied", LIMIT).await?;
    // The token file on the shared volume was kept current too.
    assert_eq!(read_in(name, "/data/token")?, rotation.token, "ACCOUNT_SECRET_FILE not rewritten");
    // The image's HEALTHCHECK command works in the scratch image (no shell).
    docker(&["exec", name, "/tether-delegate", "health"]).context("health in the successor")?;
    // Only X is left of the run's containers.
    assert_eq!(s.run.containers()?, vec![id_of(&new)]);

    // The secret scan at TRACE: neither token, in any encoding, in either container's log.
    let old_log = old_log.finish(LIMIT).await?;
    let new_log = logs(name);
    let tokens = [manager.init.default_token.as_str(), rotation.token.as_str()];
    let mut hits = secret_hits("old container", &old_log, &tokens)?;
    hits.extend(secret_hits("successor", &new_log, &tokens)?);
    assert!(hits.is_empty(), "secrets in the delegates' logs at RUST_LOG=trace: {hits:?}");
    // The scan means something only if the delegates did log at debug level and beyond.
    for (label, log) in [("old container", &old_log), ("successor", &new_log)] {
        assert!(log.contains("own container found"), "{label} did not log at debug level:\n{log}");
    }
    assert!(old_log.contains("successor container started"), "old container log:\n{old_log}");
    assert!(new_log.contains("took over from the previous container"), "successor log:\n{new_log}");
    eprintln!(
        "secret scan at TRACE: 0 hits in {} + {} log lines ({} + {} bytes)",
        old_log.lines().count(),
        new_log.lines().count(),
        old_log.len(),
        new_log.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_docker_rotation_rolls_back_when_the_successor_cannot_authenticate() -> Result<()> {
    let s = setup(8, true).await?;
    let (manager, name) = (&s.manager, s.name.as_str());
    let old_token_id = manager.init.default_token_id;
    manager.wait_for_session(name, old_token_id, LIMIT).await.with_context(|| logs(name))?;
    let old_id = id_of(&inspect(name)?.context("container X")?);

    let (rotation, min_live) = watching(manager, name, async {
        let rotation = manager.rotate(old_token_id, 300).await?;
        manager.wait_for_outcome(rotation.rotation_id, "failed", LIMIT).await.with_context(|| logs(name))?;
        Ok(rotation)
    })
    .await?;
    assert!(min_live >= 1, "at some moment no delegate named {name} was connected");

    // The old container keeps running under its name; the successor is gone.
    let current = inspect(name)?.context("X after rollback")?;
    assert_eq!(id_of(&current), old_id);
    assert_eq!(current["State"]["Running"], true);
    assert_eq!(s.run.containers()?, vec![old_id.clone()], "the successor was not removed");
    let rows = manager.delegates().await?;
    assert!(rows.iter().any(|d| d.name == name && d.token_id == old_token_id), "old session gone: {rows:?}");
    assert!(!rows.iter().any(|d| d.name == name && d.token_id == rotation.token_id));
    let log = logs(name);
    assert!(log.contains("did not authenticate"), "log:\n{log}");
    // The token file was restored to the token still in use.
    assert_eq!(read_in(name, "/data/token")?, manager.init.default_token);
    // The secret scan at TRACE of the container that created and removed the successor.
    let hits =
        secret_hits("old container", &log, &[manager.init.default_token.as_str(), rotation.token.as_str()])?;
    assert!(hits.is_empty(), "secrets in the delegate's log at RUST_LOG=trace: {hits:?}");
    assert!(log.contains("own container found"), "no debug-level line:\n{log}");
    Ok(())
}
