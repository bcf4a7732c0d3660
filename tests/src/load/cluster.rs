//! The replica-set benchmark (`tether-load cluster`): N real managers on one PostgreSQL, the
//! same run measuring
//! - **revoke fan-out**: sessions spread evenly over the replicas, one revoke through the
//!   first; the time from the API's answer to each session's close, per replica and overall;
//! - **failover**: real delegates that know every replica; the replica holding the most of
//!   them (not the first, which answers the API) is `kill -9`ed; each moved delegate's time
//!   from the kill to its next `session authenticated` (read from its own log, so the cluster
//!   view's 2 s presence period does not blur it);
//! - **memory**: each replica's RSS before and with its share of the idle sessions.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::fleet::{Fleet, GrowOptions};
use super::procfs;
use super::stats::{self, Summary};
use super::stores::PgSource;
use super::transport::Target;
use crate::harness::delegate::{env_for, Delegate};
use crate::harness::manager::{Manager, Options};
use crate::harness::poll;
use crate::harness::replicas::identity;

/// What to run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Managers in the set.
    pub replicas: usize,
    /// Idle sessions spread over them, then revoked.
    pub sessions: usize,
    /// Real delegate processes for the failover measurement.
    pub delegates: usize,
    /// The manager binary.
    pub manager_bin: PathBuf,
    /// The delegate binary.
    pub delegate_bin: PathBuf,
    /// A PostgreSQL URL whose role may CREATE DATABASE (default: a private server).
    pub database: Option<String>,
    /// 127.0.0.x source addresses to spread the sessions over.
    pub spread: u8,
}

/// One replica's share of the revoke.
#[derive(Debug, Serialize)]
pub struct ReplicaRevoke {
    /// 1-based; the revoke went through replica 1.
    pub replica: usize,
    /// Sessions it held.
    pub sessions: usize,
    /// Of them, closed after a signed `revoked`.
    pub saw_revoked: usize,
    /// Answer → close.
    pub latency: Option<Summary>,
    /// RSS before the sessions, KiB.
    pub rss_before_kib: u64,
    /// RSS holding them, KiB.
    pub rss_with_sessions_kib: u64,
    /// (with − before) / sessions, KiB.
    pub rss_per_session_kib: f64,
}

/// The whole result.
#[derive(Debug, Serialize)]
pub struct ClusterResult {
    /// Managers.
    pub replicas: usize,
    /// Sessions opened in all.
    pub sessions: usize,
    /// The revoke API call, ms.
    pub revoke_api_ms: f64,
    /// Answer → close over every session.
    pub revoke_all: Option<Summary>,
    /// Answer → close of the sessions on replicas other than the one revoked through.
    pub revoke_other_replicas: Option<Summary>,
    /// Per replica.
    pub per_replica: Vec<ReplicaRevoke>,
    /// Delegates in the failover measurement.
    pub failover_delegates: usize,
    /// The replica killed (1-based) and how many delegates it held.
    pub failover_killed: (usize, usize),
    /// Kill → the moved delegate's next authenticated session.
    pub failover: Option<Summary>,
}

/// Unix time of an RFC 3339 UTC timestamp `YYYY-MM-DDTHH:MM:SS[.frac]Z` (the delegates' log).
fn unix_of(stamp: &str) -> Option<Duration> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3_600 + min * 60 + s).ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = format!("{digits:0<9}").parse::<u32>().ok()?;
    Some(Duration::new(secs, nanos))
}

/// The first `session authenticated` in `log` at or after `since` (unix time).
fn reconnected_at(log: &str, since: Duration) -> Option<Duration> {
    log.lines()
        .filter(|l| l.contains("session authenticated"))
        .filter_map(|l| unix_of(l.split_whitespace().next()?))
        .find(|at| *at >= since)
}

/// A replica set for a benchmark: `replicas` managers of `bin` (release builds: `RUST_LOG=warn`,
/// plus `env`) on a fresh database of a PostgreSQL server (a private one unless `database`
/// names one), the first `init`ed, the others on copies of its data dir. The server lives as
/// long as the returned source (bind it before the managers, so they stop first).
pub async fn start_set(
    replicas: usize,
    bin: &std::path::Path,
    database: Option<String>,
    env: Vec<(String, String)>,
) -> Result<(PgSource, Vec<Manager>)> {
    let pg = PgSource::start(database).await?;
    let db = pg.fresh_database().await?;
    let mut all_env = vec![("RUST_LOG".to_owned(), "warn".to_owned())];
    all_env.extend(env);
    let first = Manager::start_with(Options {
        bin: Some(bin.to_path_buf()),
        env: all_env,
        database: Some(db),
        ..Options::default()
    })
    .await?;
    let mut managers = vec![first];
    for _ in 1..replicas {
        let replica = managers[0].replica().await?;
        managers.push(replica);
    }
    Ok((pg, managers))
}

/// Runs the benchmark.
pub async fn run(o: &ClusterOptions) -> Result<ClusterResult> {
    if o.replicas < 2 {
        bail!("a replica set needs at least 2 managers");
    }
    let (_pg, mut managers) = start_set(o.replicas, &o.manager_bin, o.database.clone(), Vec::new()).await?;
    let a = &managers[0];
    let account = a.init.account_id.clone();

    // Revoke fan-out: sessions spread evenly, each replica's RSS before and after.
    let token = a.create_token(&account, "bench-cluster-revoke", serde_json::json!({})).await?;
    let who = identity(a, &token, "cluster");
    let opts = GrowOptions {
        concurrency: 64,
        follow_rotation: false,
        max_time: Duration::from_secs(900),
        spread: o.spread,
    };
    let mut fleets = Vec::new();
    let mut rss_before = Vec::new();
    for (i, m) in managers.iter().enumerate() {
        rss_before.push(procfs::rss_kib(m.pid().context("replica not running")?)?);
        let share = o.sessions / o.replicas + usize::from(i < o.sessions % o.replicas);
        let target = Target::new(m.addr, "localhost", &m.init.ca_cert)?;
        let mut fleet = Fleet::default();
        fleet.grow(share, &target, &who, &opts, Duration::from_secs(600)).await?;
        eprintln!("replica {}: {} sessions open", i + 1, share);
        fleets.push(fleet);
    }
    let mut rss_with = Vec::new();
    for m in &managers {
        rss_with.push(super::scenarios::settled_rss(m.pid().context("replica not running")?).await?);
    }
    let called = Instant::now();
    a.revoke(token.id()).await?;
    let answered = Instant::now();
    let mut per_replica = Vec::new();
    let (mut all, mut others) = (Vec::new(), Vec::new());
    for (i, mut fleet) in fleets.into_iter().enumerate() {
        let ended = fleet.wait_all(Duration::from_secs(120)).await;
        let mut lat: Vec<Duration> = ended.iter().map(|e| e.at.saturating_duration_since(answered)).collect();
        all.extend(lat.iter().copied());
        if i > 0 {
            others.extend(lat.iter().copied());
        }
        let sessions = ended.len();
        per_replica.push(ReplicaRevoke {
            replica: i + 1,
            sessions,
            saw_revoked: ended.iter().filter(|e| e.revoked).count(),
            latency: stats::summarize(&mut lat),
            rss_before_kib: rss_before[i],
            rss_with_sessions_kib: rss_with[i],
            rss_per_session_kib: rss_with[i].saturating_sub(rss_before[i]) as f64 / sessions.max(1) as f64,
        });
    }
    let revoke_api_ms = (answered - called).as_secs_f64() * 1000.0;

    // Failover: real delegates knowing every replica.
    let token = a.create_token(&account, "bench-cluster-failover", serde_json::json!({})).await?;
    let list: Vec<String> = managers.iter().map(|m| format!("localhost:{}", m.addr.port())).collect();
    let dirs: Vec<tempfile::TempDir> =
        (0..o.delegates).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    let mut delegates = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut env = env_for(a, &format!("fo-{i}"), &token.expose(), dir.path());
        env.retain(|(k, _)| k != "MANAGER_HOST_AND_PORT" && k != "RUST_LOG");
        env.push(("MANAGER_HOST_AND_PORT".into(), list.join(",")));
        env.push(("RUST_LOG".into(), "info".into()));
        delegates.push(Delegate::start_bin(&o.delegate_bin, &env, &[])?);
    }
    poll::until("every failover delegate connected", Duration::from_secs(120), || async {
        let n = a.delegates().await?.iter().filter(|d| d.token_id == token.id()).count();
        Ok((n == o.delegates).then_some(()))
    })
    .await?;
    // Where they are: each replica's own gauge (the revoked fleet is gone). The victim is the
    // busiest replica but the first (whose API the run uses), unless the first holds them
    // all: delegates pick a replica at random, so with few of them that happens (1 in 27 for
    // three delegates on three replicas), and killing a replica that holds none moves none.
    let mut held = BTreeMap::new();
    for (i, m) in managers.iter().enumerate() {
        let body = m.http().get(format!("{}/metrics", m.url())).send().await?.text().await?;
        let n = body
            .lines()
            .find_map(|l| l.strip_prefix("tether_sessions "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as usize;
        held.insert(i, n);
    }
    let busiest_other = held.iter().filter(|(i, n)| **i > 0 && **n > 0).max_by_key(|(_, n)| **n);
    let (&victim, &moving) = busiest_other.or_else(|| held.iter().next()).context("no replica to kill")?;
    let since = SystemTime::now().duration_since(UNIX_EPOCH)?;
    managers[victim].kill9()?;
    let killed = Instant::now();
    let mut times = Vec::new();
    let deadline = killed + Duration::from_secs(120);
    while times.len() < moving && Instant::now() < deadline {
        times = delegates
            .iter()
            .filter_map(|d| reconnected_at(&d.log(), since))
            .map(|at| at.saturating_sub(since))
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failover = stats::summarize(&mut times);
    Ok(ClusterResult {
        replicas: o.replicas,
        sessions: per_replica.iter().map(|r| r.sessions).sum(),
        revoke_api_ms,
        revoke_all: stats::summarize(&mut all),
        revoke_other_replicas: stats::summarize(&mut others),
        per_replica,
        failover_delegates: o.delegates,
        failover_killed: (victim + 1, moving),
        failover,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_read_as_unix_time() {
        assert_eq!(unix_of("1970-01-01T00:00:00Z"), Some(Duration::ZERO));
        assert_eq!(unix_of("2026-12-06T23:07:21.862332Z"), Some(Duration::new(1_796_598_441, 862_332_000)));
        assert_eq!(unix_of("2000-02-29T12:00:00.5Z"), Some(Duration::new(951_825_600, 500_000_000)));
        assert_eq!(unix_of("not a time"), None);
        assert_eq!(unix_of("2026-12-06T23:07:21ü"), None);
        let log = "2026-12-06T23:07:21.862332Z  INFO session authenticated x\n2026-12-06T23:07:30.000001Z  INFO session authenticated y";
        assert_eq!(
            reconnected_at(log, Duration::new(1_796_598_442, 0)),
            Some(Duration::new(1_796_598_450, 1_000))
        );
    }
}
