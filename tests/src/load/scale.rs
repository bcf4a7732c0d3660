//! The replica set's session count (`tether-load cluster-scale`): one process may hold at most
//! 20,000 open files here, both a manager and a load generator, so the sessions are spread over
//! as many replicas as it takes and held by several `tether-load hold` child processes, each
//! with at most [`PER_HOLDER`] sessions on one token of one replica. Reports every replica's session gauge
//! and RSS before and holding them.
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::fleet::{Fleet, GrowOptions};
use super::procfs;
use super::transport::Target;
use crate::harness::replicas::held;

/// Sessions one holder process opens at most: on one token, under a manager's
/// `max_sessions_per_token` (10,000 by default) and the holder's open-file limit.
pub const PER_HOLDER: usize = 9_000;

/// What `cluster-scale` runs.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Sessions in all.
    pub sessions: usize,
    /// Managers in the set.
    pub replicas: usize,
    /// The manager binary.
    pub manager_bin: PathBuf,
    /// A PostgreSQL URL whose role may CREATE DATABASE (default: a private server).
    pub database: Option<String>,
}

/// One replica holding its share.
#[derive(Debug, Serialize)]
pub struct ReplicaScale {
    /// 1-based.
    pub replica: usize,
    /// Its `tether_sessions` gauge while held.
    pub sessions: u64,
    /// RSS before, KiB.
    pub rss_before_kib: u64,
    /// RSS holding them, KiB (settled).
    pub rss_with_sessions_kib: u64,
    /// (with − before) / sessions, KiB.
    pub rss_per_session_kib: f64,
}

/// The result.
#[derive(Debug, Serialize)]
pub struct ScaleResult {
    /// Sessions asked for.
    pub asked: usize,
    /// Sessions the replicas held at once (sum of their gauges).
    pub held: u64,
    /// Replicas.
    pub replicas: usize,
    /// Holder processes.
    pub holders: usize,
    /// From the first holder's start until every session was open, seconds.
    pub open_secs: f64,
    /// Per replica.
    pub per_replica: Vec<ReplicaScale>,
}

/// A child `tether-load hold` and its token file; killed (and the file removed) on drop.
struct Holder(Child, #[allow(dead_code)] tempfile::NamedTempFile);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs it.
pub async fn run(o: &ScaleOptions) -> Result<ScaleResult> {
    if o.replicas == 0 || o.sessions.div_ceil(o.replicas) > 18_000 {
        bail!(
            "{} sessions need more than {} replicas here (each holds at most ~18,000)",
            o.sessions,
            o.replicas
        );
    }
    // One account holds every session: its cap per manager (10,000 by default) is raised to
    // the whole run; the per-token cap stays (a token per holder).
    let env = vec![("TETHER_MAX_SESSIONS_PER_ACCOUNT".to_owned(), o.sessions.max(1).to_string())];
    let (_pg, managers) =
        super::cluster::start_set(o.replicas, &o.manager_bin, o.database.clone(), env).await?;
    let a = &managers[0];
    let mut rss_before = Vec::new();
    for m in &managers {
        rss_before.push(procfs::rss_kib(m.pid().context("replica not running")?)?);
    }

    // Each replica's share, in holders of at most PER_HOLDER sessions.
    let started = Instant::now();
    let mut holders = Vec::new();
    for (i, m) in managers.iter().enumerate() {
        let mut share = o.sessions / o.replicas + usize::from(i < o.sessions % o.replicas);
        while share > 0 {
            let n = share.min(PER_HOLDER);
            share -= n;
            // A token per holder, as a fleet has (one token may hold at most
            // `max_sessions_per_token` sessions on one manager, 10,000 by default).
            let name = format!("bench-scale-{}", holders.len());
            let token = a.create_token(&a.init.account_id.clone(), &name, serde_json::json!({})).await?;
            let token_file = tempfile::NamedTempFile::new()?;
            std::fs::write(token_file.path(), token.expose().as_bytes())?;
            let child = Command::new(std::env::current_exe()?)
                .args(["hold", "--port", &m.addr.port().to_string(), "--count", &n.to_string()])
                .arg("--ca")
                .arg(&m.init.ca_cert)
                .arg("--token-file")
                .arg(token_file.path())
                .args(["--account", &a.init.account_id, "--name", &format!("scale-{i}-{}", holders.len())])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting a holder")?;
            holders.push(Holder(child, token_file));
        }
    }
    for h in &mut holders {
        let out = h.0.stdout.take().context("holder stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).map(|_| line)
        })
        .await??;
        if !line.starts_with("opened ") {
            bail!("a holder did not open its sessions: {line:?}");
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let mut per_replica = Vec::new();
    for (i, m) in managers.iter().enumerate() {
        let sessions = held(m).await?;
        let with = super::scenarios::settled_rss(m.pid().context("replica not running")?).await?;
        per_replica.push(ReplicaScale {
            replica: i + 1,
            sessions,
            rss_before_kib: rss_before[i],
            rss_with_sessions_kib: with,
            rss_per_session_kib: with.saturating_sub(rss_before[i]) as f64 / sessions.max(1) as f64,
        });
    }
    for h in &mut holders {
        if let Some(mut stdin) = h.0.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
    }
    Ok(ScaleResult {
        asked: o.sessions,
        held: per_replica.iter().map(|r| r.sessions).sum(),
        replicas: o.replicas,
        holders: holders.len(),
        open_secs,
        per_replica,
    })
}

/// `tether-load hold`: opens `count` sessions on the manager at 127.0.0.1:`port`, prints
/// `opened N`, and holds them until its standard input closes (or 15 minutes).
pub async fn hold(
    port: u16,
    ca: &std::path::Path,
    token_file: &std::path::Path,
    account: &str,
    name: &str,
    count: usize,
) -> Result<()> {
    let text = std::fs::read_to_string(token_file).context("reading the token file")?;
    let token = tether_protocol::Token::parse(text.trim()).map_err(|e| anyhow::anyhow!("token file: {e}"))?;
    let target = Target::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)), "localhost", ca)?;
    let who = super::session::Identity {
        account_id: account.to_owned(),
        token: std::sync::Arc::new(token),
        name: name.to_owned(),
    };
    let opts = GrowOptions {
        concurrency: 32,
        follow_rotation: false,
        max_time: Duration::from_secs(900),
        spread: 16,
    };
    let mut fleet = Fleet::default();
    fleet.grow(count, &target, &who, &opts, Duration::from_secs(600)).await?;
    println!("opened {count}");
    std::io::stdout().flush()?;
    let wait = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    });
    let _ = tokio::time::timeout(Duration::from_secs(900), wait).await;
    fleet.stop(Duration::from_secs(10)).await;
    Ok(())
}
