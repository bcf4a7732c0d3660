//! Scenario 3: revocation fan-out against the bare broadcast baseline. Each round holds the
//! same number of idle connections on the manager (authenticated sessions on one token, then
//! that token revoked) and on the bare baseline server (then one broadcast of a frame and a
//! Close), alternating so that background load affects both alike, and measures for both the
//! trigger call, the time from its answer to each connection's close, and the server's CPU.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use super::{median, Ctx, Scale};
use crate::load::baseline;
use crate::load::fleet::{Fleet, GrowOptions};
use crate::load::procfs;
use crate::load::session::Ended;
use crate::load::stats::{self, Summary};

/// One fan-out: the manager's revoke or the baseline's broadcast.
#[derive(Debug, Serialize)]
pub struct FanOut {
    /// Connections held when the trigger was called.
    pub sessions: usize,
    /// Connections that closed with the server's frame (a signed `revoked` for the manager:
    /// its tag verified) before the Close.
    pub saw_frame: usize,
    /// Connections whose close arrived before the trigger's answer (counted as 0 ms).
    pub closed_before_answer: usize,
    /// Distribution of answer → close, ms.
    pub latency: Option<Summary>,
    /// How long the trigger call itself took (the revoke API; the broadcast request), ms.
    pub call_ms: f64,
    /// CPU the server spent from the call until it settled after the last close (its
    /// sessions' teardown included, however late it runs), ms.
    pub cpu_ms: f64,
    /// `cpu_ms` per connection, µs.
    pub cpu_us_per_session: f64,
}

/// Scenario 3's result: every round of both servers, and the medians compared.
#[derive(Debug, Serialize)]
pub struct RevokeResult {
    /// Connections per fan-out.
    pub sessions: usize,
    /// The manager's rounds (a revoke each).
    pub manager: Vec<FanOut>,
    /// The baseline's rounds (a broadcast each), alternating with the manager's.
    pub baseline: Vec<FanOut>,
    /// Median over the rounds of the p99 answer → close, ms: (manager, baseline).
    pub p99_ms: (f64, f64),
    /// manager / baseline of `p99_ms` (target ≤ 1.25).
    pub p99_ratio: f64,
    /// Median over the rounds of the CPU per connection, µs: (manager, baseline).
    pub cpu_us_per_session: (f64, f64),
    /// manager / baseline of `cpu_us_per_session` (target ≤ 1.5).
    pub cpu_ratio: f64,
}

/// How a fan-out's connections ended, measured from `answered`.
fn fan_out(ended: &[Ended], called: Instant, answered: Instant, cpu_ticks: u64) -> FanOut {
    let mut lat: Vec<Duration> = ended.iter().map(|e| e.at.saturating_duration_since(answered)).collect();
    let cpu_ms = cpu_ticks as f64 * 1000.0 / procfs::TICKS_PER_SEC as f64;
    FanOut {
        sessions: ended.len(),
        saw_frame: ended.iter().filter(|e| e.revoked).count(),
        closed_before_answer: ended.iter().filter(|e| e.at < answered).count(),
        latency: stats::summarize(&mut lat),
        call_ms: (answered - called).as_secs_f64() * 1000.0,
        cpu_ms,
        cpu_us_per_session: cpu_ms * 1000.0 / ended.len().max(1) as f64,
    }
}

/// `perf record` of one process while a fan-out runs, when `TETHER_LOAD_PERF_DIR` names a
/// directory (BENCHMARKS.md, "Profiles"): `<dir>/revoke-<who>-<round>.data`.
struct Perf(Option<std::process::Child>);

impl Perf {
    async fn start(pid: u32, who: &str, round: usize) -> Self {
        let Some(dir) = std::env::var_os("TETHER_LOAD_PERF_DIR") else { return Self(None) };
        let out = std::path::Path::new(&dir).join(format!("revoke-{who}-{round}.data"));
        let child = std::process::Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "999",
                "--call-graph",
                "dwarf",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => {
                // perf needs a moment to attach; the fan-out is what it must see.
                tokio::time::sleep(Duration::from_millis(300)).await;
                Self(Some(child))
            }
            Err(e) => {
                eprintln!("perf record: {e}");
                Self(None)
            }
        }
    }

    fn stop(self) {
        if let Some(mut child) = self.0 {
            // SIGINT: perf writes its data and exits.
            let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

/// One manager round: `n` sessions on a new token, then the token revoked.
async fn manager_round(ctx: &Ctx, scale: &Scale, round: usize) -> Result<FanOut> {
    let mut bench = ctx.bench(&format!("revoke-{round}"), scale, 128, Duration::from_secs(600))?;
    let token_id = bench.token_id;
    bench.grow(ctx, scale.revoke_sessions, Duration::from_secs(300)).await?;
    let http = ctx.manager.http();
    let perf = Perf::start(ctx.manager_pid()?, "manager", round).await;
    let cpu_before = procfs::cpu_ticks(ctx.manager_pid()?)?;
    let called = Instant::now();
    let resp = http
        .post(format!(
            "{}/api/v1/accounts/{}/tokens/{token_id}/revoke",
            ctx.manager.url(),
            ctx.manager.init.account_id
        ))
        .json(&serde_json::json!({}))
        .bearer_auth(&ctx.manager.init.admin_token)
        .send()
        .await?;
    let answered = Instant::now();
    if !resp.status().is_success() {
        bail!("revoke answered {}: {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    let ended = bench.fleet.wait_all(Duration::from_secs(60)).await;
    let cpu = settled_cpu_ticks(ctx.manager_pid()?).await? - cpu_before;
    perf.stop();
    Ok(fan_out(&ended, called, answered, cpu))
}

/// One baseline round: `n` bare connections, then one broadcast.
async fn baseline_round(server: &baseline::Server, scale: &Scale, round: usize) -> Result<FanOut> {
    let mut fleet = Fleet::default();
    let opts = GrowOptions {
        concurrency: 128,
        follow_rotation: false,
        max_time: Duration::from_secs(600),
        spread: scale.spread,
    };
    fleet.grow_bare(scale.revoke_sessions, &server.target, &opts, Duration::from_secs(300)).await?;
    let perf = Perf::start(server.pid(), "baseline", round).await;
    let cpu_before = procfs::cpu_ticks(server.pid())?;
    let called = Instant::now();
    server.broadcast().await?;
    let answered = Instant::now();
    let ended = fleet.wait_all(Duration::from_secs(60)).await;
    let cpu = settled_cpu_ticks(server.pid()).await? - cpu_before;
    perf.stop();
    Ok(fan_out(&ended, called, answered, cpu))
}

/// `pid`'s CPU ticks once they stop growing: the same reading for 1.2 s, longer than the
/// manager defers a revoked session's teardown (1 s), so work it left until after the last
/// close counts (at most 20 s; any background work in the window counts too).
async fn settled_cpu_ticks(pid: u32) -> Result<u64> {
    let (mut last, mut same) = (procfs::cpu_ticks(pid)?, 0);
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = procfs::cpu_ticks(pid)?;
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if same >= 12 {
            break;
        }
    }
    Ok(last)
}

fn p99(f: &FanOut) -> f64 {
    f.latency.as_ref().map_or(f64::NAN, |l| l.p99_ms)
}

pub async fn revoke(ctx: &Ctx, scale: &Scale) -> Result<RevokeResult> {
    let server = baseline::Server::start(&ctx.self_bin).await?;
    let (mut manager, mut bare) = (Vec::new(), Vec::new());
    for round in 0..scale.revoke_rounds.max(1) {
        manager.push(manager_round(ctx, scale, round).await?);
        bare.push(baseline_round(&server, scale, round).await?);
    }
    drop(server);
    let p99_ms = (median(manager.iter().map(p99).collect()), median(bare.iter().map(p99).collect()));
    let cpu = |v: &[FanOut]| median(v.iter().map(|f| f.cpu_us_per_session).collect());
    let cpu_us_per_session = (cpu(&manager), cpu(&bare));
    Ok(RevokeResult {
        sessions: scale.revoke_sessions,
        p99_ratio: p99_ms.0 / p99_ms.1.max(f64::MIN_POSITIVE),
        cpu_ratio: cpu_us_per_session.0 / cpu_us_per_session.1.max(f64::MIN_POSITIVE),
        p99_ms,
        cpu_us_per_session,
        manager,
        baseline: bare,
    })
}
