//! The six benchmark scenarios of the design brief, each bounded in count and time, each
//! returning a JSON-serialisable result. Scale is chosen by [`Scale`] (`smoke` for CI: seconds;
//! `full` for BENCHMARKS.md).
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tether_protocol::Token;
use tokio_tungstenite::tungstenite::Message;

use super::fleet::{Fleet, GrowOptions};
use super::procfs;
use super::session::{self, Identity};
use super::stats::{self, Summary};
use super::transport::{self, source_for, Target};
use crate::harness::manager::Manager;

/// How big each scenario is.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    /// Session counts at which the manager's RSS is read.
    pub idle_steps: Vec<usize>,
    /// Seconds each handshake-rate loop runs.
    pub rate_secs: u64,
    /// Handshakes in flight during the rate loops.
    pub rate_concurrency: usize,
    /// Live sessions on the token that gets revoked.
    pub revoke_sessions: usize,
    /// Sessions that follow a rotation.
    pub rotate_sessions: usize,
    /// Echo round-trips per measurement.
    pub echo_rounds: usize,
    /// Sessions in the many-session echo measurement.
    pub echo_sessions: usize,
    /// Seconds the idle delegate's footprint is sampled.
    pub footprint_secs: u64,
    /// 127.0.0.x source addresses to spread over.
    pub spread: u8,
}

impl Scale {
    /// A few seconds in all: keeps the code from rotting in CI; asserts no timing.
    pub fn smoke() -> Self {
        Self {
            idle_steps: vec![20, 60],
            rate_secs: 1,
            rate_concurrency: 8,
            revoke_sessions: 50,
            rotate_sessions: 5,
            echo_rounds: 20,
            echo_sessions: 5,
            footprint_secs: 2,
            spread: 4,
        }
    }

    /// The sizes of the design brief's targets.
    pub fn full() -> Self {
        Self {
            // 100k needs ~100k open files per process; see BENCHMARKS.md for this machine's limit.
            idle_steps: vec![1_000, 5_000, 10_000, 18_000],
            rate_secs: 10,
            rate_concurrency: 64,
            revoke_sessions: 10_000,
            rotate_sessions: 100,
            echo_rounds: 2_000,
            echo_sessions: 100,
            footprint_secs: 30,
            spread: 16,
        }
    }
}

/// Everything a scenario needs to reach the manager.
#[derive(Debug)]
pub struct Ctx {
    /// The running manager.
    pub manager: Manager,
    /// Its delegate endpoint.
    pub target: Target,
    /// The delegate binary, for the footprint scenario.
    pub delegate_bin: PathBuf,
    /// This binary, to start the baseline server process.
    pub self_bin: PathBuf,
}

impl Ctx {
    fn manager_pid(&self) -> Result<u32> {
        self.manager.pid().context("the manager is not running")
    }

    fn identity(&self, token: Token, name: &str) -> Identity {
        Identity {
            account_id: self.manager.init.account_id.clone(),
            token: Arc::new(token),
            name: name.into(),
        }
    }

    /// Creates a token through the CLI and returns it parsed.
    fn create_token(&self, name: &str) -> Result<Token> {
        let v = self.manager.cli_json(&["token", "create", name])?;
        let value = v["value"].as_str().context("`value` missing in `token create --json` output")?;
        Ok(Token::parse(value)?)
    }
}

/// Scenario 1: manager RSS at each step of idle sessions, and the slope in KiB per session.
#[derive(Debug, Serialize)]
pub struct IdleResult {
    /// (sessions, manager RSS KiB) at each step.
    pub steps: Vec<(usize, u64)>,
    /// KiB per session between the first and the last step.
    pub slope_kib_per_session: f64,
    /// Seconds to open all sessions.
    pub ramp_secs: f64,
}

/// Reads RSS until two readings 500 ms apart differ by under 1 % (bounded to 10 s).
async fn settled_rss(pid: u32) -> Result<u64> {
    let mut last = procfs::rss_kib(pid)?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = procfs::rss_kib(pid)?;
        if now.abs_diff(last) * 100 < last.max(1) {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

pub async fn idle(ctx: &Ctx, scale: &Scale) -> Result<IdleResult> {
    let token = ctx.create_token("bench-idle")?;
    let who = ctx.identity(token, "idle");
    let opts = GrowOptions {
        concurrency: 128,
        follow_rotation: false,
        max_time: Duration::from_secs(1800),
        spread: scale.spread,
    };
    let mut fleet = Fleet::default();
    let started = Instant::now();
    let mut steps = Vec::new();
    for &n in &scale.idle_steps {
        fleet.grow(n, &ctx.target, &who, &opts, Duration::from_secs(900)).await?;
        steps.push((n, settled_rss(ctx.manager_pid()?).await?));
    }
    let ramp_secs = started.elapsed().as_secs_f64();
    fleet.stop(Duration::from_secs(120)).await;
    let (first, last) = (steps[0], steps[steps.len() - 1]);
    let slope = (last.1 as f64 - first.1 as f64) / ((last.0 - first.0).max(1) as f64);
    Ok(IdleResult { steps, slope_kib_per_session: slope, ramp_secs })
}

/// Scenario 2: new sessions per second against the manager and against the bare baseline.
#[derive(Debug, Serialize)]
pub struct RateResult {
    /// Full v1 handshakes per second against the manager.
    pub manager_per_sec: f64,
    /// TLS + WebSocket + two-message exchanges per second against the baseline.
    pub baseline_per_sec: f64,
    /// manager / baseline.
    pub ratio: f64,
    /// Failed attempts (manager, baseline).
    pub errors: (u64, u64),
}

async fn rate_loop<F, Fut>(secs: u64, concurrency: usize, one: F) -> (f64, u64)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (done, errors, one) = (done.clone(), errors.clone(), one.clone());
        workers.spawn(async move {
            let mut i = w;
            while Instant::now() < deadline {
                match one(i).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                i += concurrency;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    (done.load(Ordering::Relaxed) as f64 / elapsed, errors.load(Ordering::Relaxed))
}

/// One baseline exchange: receive, send, receive, close.
async fn baseline_once(target: Target, source: std::net::IpAddr) -> Result<()> {
    let mut ws = transport::connect(&target, Some(source)).await?;
    let next = |m: Option<Result<Message, _>>| -> Result<()> {
        match m {
            Some(Ok(Message::Binary(_))) => Ok(()),
            other => bail!("unexpected {other:?}"),
        }
    };
    next(ws.next().await)?;
    ws.send(Message::binary(vec![0x11u8; 420])).await?;
    next(ws.next().await)?;
    ws.close(None).await?;
    Ok(())
}

/// Rounds of the rate comparison; manager and baseline alternate so that background load
/// on the machine affects both alike, and the medians are compared.
const RATE_ROUNDS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn rate(ctx: &Ctx, scale: &Scale) -> Result<RateResult> {
    let token = ctx.create_token("bench-rate")?;
    let who = ctx.identity(token, "rate");
    let baseline = Baseline::start(&ctx.self_bin).await?;
    let spread = scale.spread;
    let (mut manager_rates, mut baseline_rates, mut errors) = (Vec::new(), Vec::new(), (0, 0));
    for _ in 0..RATE_ROUNDS {
        let (target, who) = (ctx.target.clone(), who.clone());
        let (per_sec, errs) = rate_loop(scale.rate_secs, scale.rate_concurrency, move |i| {
            let (target, who) = (target.clone(), who.clone());
            async move {
                let opened =
                    session::open(&target, Some(source_for(i, spread)), &who, Duration::from_secs(10))
                        .await?;
                opened.close().await;
                Ok(())
            }
        })
        .await;
        manager_rates.push(per_sec);
        errors.0 += errs;
        let target = baseline.target.clone();
        let (per_sec, errs) = rate_loop(scale.rate_secs, scale.rate_concurrency, move |i| {
            baseline_once(target.clone(), source_for(i, spread))
        })
        .await;
        baseline_rates.push(per_sec);
        errors.1 += errs;
    }
    drop(baseline);
    let (manager_per_sec, baseline_per_sec) = (median(manager_rates), median(baseline_rates));
    Ok(RateResult {
        manager_per_sec,
        baseline_per_sec,
        ratio: manager_per_sec / baseline_per_sec.max(f64::MIN_POSITIVE),
        errors,
    })
}

/// The baseline server process.
struct Baseline {
    child: std::process::Child,
    target: Target,
    _dir: tempfile::TempDir,
}

impl Baseline {
    async fn start(self_bin: &std::path::Path) -> Result<Self> {
        use std::io::BufRead;
        let dir = tempfile::tempdir()?;
        let mut child = std::process::Command::new(self_bin)
            .args(["baseline-server", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("baseline stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line =
            tokio::time::timeout(Duration::from_secs(10), line).await.context("baseline start")???;
        let addr = line.trim().strip_prefix("LISTENING ").context("baseline did not report its address")?;
        let target = Target::new(addr.parse()?, "localhost", &dir.path().join("ca.pem"))?;
        Ok(Self { child, target, _dir: dir })
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scenario 3: time from the revoke API's answer to each live session's close.
#[derive(Debug, Serialize)]
pub struct RevokeResult {
    /// Sessions on the token.
    pub sessions: usize,
    /// Sessions that saw a signed `revoked` before the close.
    pub saw_revoked: usize,
    /// Sessions whose close arrived before the API answered (counted as 0 ms).
    pub closed_before_answer: usize,
    /// Distribution of answer → close.
    pub latency: Option<Summary>,
    /// How long the API call itself took.
    pub api_ms: f64,
    /// CPU the manager spent from the revoke call until every session closed, ms.
    pub manager_cpu_ms: f64,
}

pub async fn revoke(ctx: &Ctx, scale: &Scale) -> Result<RevokeResult> {
    let token = ctx.create_token("bench-revoke")?;
    let token_id = token.id();
    let who = ctx.identity(token, "revoke");
    let opts = GrowOptions {
        concurrency: 128,
        follow_rotation: false,
        max_time: Duration::from_secs(600),
        spread: scale.spread,
    };
    let mut fleet = Fleet::default();
    fleet.grow(scale.revoke_sessions, &ctx.target, &who, &opts, Duration::from_secs(300)).await?;
    let http = ctx.manager.http().clone();
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
    let ended = fleet.wait_all(Duration::from_secs(60)).await;
    let cpu_ticks = procfs::cpu_ticks(ctx.manager_pid()?)? - cpu_before;
    let closed_before_answer = ended.iter().filter(|e| e.at < answered).count();
    let mut lat: Vec<Duration> = ended.iter().map(|e| e.at.saturating_duration_since(answered)).collect();
    Ok(RevokeResult {
        sessions: ended.len(),
        saw_revoked: ended.iter().filter(|e| e.revoked).count(),
        closed_before_answer,
        latency: stats::summarize(&mut lat),
        api_ms: (answered - called).as_secs_f64() * 1000.0,
        manager_cpu_ms: cpu_ticks as f64 * 1000.0 / procfs::TICKS_PER_SEC as f64,
    })
}

/// Scenario 4: sessions that ack and reconnect on the new token; time until all moved and
/// the old token is revoked.
#[derive(Debug, Serialize)]
pub struct RotateResult {
    /// Sessions on the old token.
    pub sessions: usize,
    /// From the rotate call to the old token's state `revoked`, ms.
    pub all_moved_ms: f64,
    /// Sessions that ended up on the new token.
    pub moved: usize,
    /// Sessions that dropped without moving (a delegate offline).
    pub dropped: usize,
}

fn token_state(ctx: &Ctx, token_id: &str) -> Result<String> {
    let v = ctx.manager.cli_json(&["token", "show", token_id])?;
    Ok(v["state"].as_str().unwrap_or_default().to_owned())
}

pub async fn rotate(ctx: &Ctx, scale: &Scale) -> Result<RotateResult> {
    let token = ctx.create_token("bench-rotate")?;
    let token_id = token.id().to_string();
    let who = ctx.identity(token, "rotate");
    let opts = GrowOptions {
        concurrency: 32,
        follow_rotation: true,
        max_time: Duration::from_secs(300),
        spread: scale.spread,
    };
    let mut fleet = Fleet::default();
    fleet.grow(scale.rotate_sessions, &ctx.target, &who, &opts, Duration::from_secs(120)).await?;
    let started = Instant::now();
    ctx.manager.cli_json(&["token", "rotate", &token_id, "--grace-secs", "120"])?;
    let deadline = started + Duration::from_secs(60);
    loop {
        if token_state(ctx, &token_id)? == "revoked" {
            break;
        }
        if Instant::now() > deadline {
            bail!("old token not revoked within 60 s of the rotation");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_moved_ms = started.elapsed().as_secs_f64() * 1000.0;
    let ended = fleet.stop(Duration::from_secs(30)).await;
    Ok(RotateResult {
        sessions: ended.len(),
        all_moved_ms,
        moved: ended.iter().filter(|e| e.rotated).count(),
        dropped: ended.iter().filter(|e| !e.rotated).count(),
    })
}

/// Scenario 5: echo round-trips through the manager's ping API.
#[derive(Debug, Serialize)]
pub struct EchoResult {
    /// One session: round-trips per second, sequential.
    pub one_session_per_sec: f64,
    /// One session: latency distribution.
    pub one_session: Option<Summary>,
    /// Many sessions, one request in flight per session: round-trips per second.
    pub many_sessions_per_sec: f64,
    /// Many sessions: latency distribution.
    pub many_sessions: Option<Summary>,
    /// How many sessions in the many-session run.
    pub sessions: usize,
}

async fn session_ids(ctx: &Ctx, name: &str) -> Result<Vec<String>> {
    let v = ctx.manager.cli_json(&["delegate", "list"])?;
    let list = v.as_array().or_else(|| v["delegates"].as_array()).context("delegate list --json shape")?;
    Ok(list
        .iter()
        .filter(|d| d["name"].as_str() == Some(name))
        .filter_map(|d| d["session_id"].as_str().map(str::to_owned))
        .collect())
}

async fn ping_rounds(ctx: &Ctx, ids: Vec<String>, rounds_each: usize) -> Result<(f64, Vec<Duration>)> {
    let http = ctx.manager.http().clone();
    let url = ctx.manager.url();
    let admin = ctx.manager.init.admin_token.clone();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let (http, url, admin) = (http.clone(), url.clone(), admin.clone());
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(rounds_each);
            for _ in 0..rounds_each {
                let t = Instant::now();
                let resp = http
                    .post(format!("{url}/api/v1/delegates/{id}/ping"))
                    .bearer_auth(&admin)
                    .json(&serde_json::json!({ "payload": "bench" }))
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!("ping answered {}: {}", resp.status(), resp.text().await.unwrap_or_default());
                }
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined??);
    }
    Ok((all.len() as f64 / started.elapsed().as_secs_f64(), all))
}

pub async fn echo(ctx: &Ctx, scale: &Scale) -> Result<EchoResult> {
    let token = ctx.create_token("bench-echo")?;
    let who = ctx.identity(token, "echo");
    let opts = GrowOptions {
        concurrency: 32,
        follow_rotation: false,
        max_time: Duration::from_secs(600),
        spread: scale.spread,
    };
    let mut fleet = Fleet::default();
    fleet.grow(scale.echo_sessions, &ctx.target, &who, &opts, Duration::from_secs(60)).await?;
    let ids = session_ids(ctx, "echo").await?;
    if ids.len() < scale.echo_sessions {
        bail!("manager lists {} echo sessions, expected {}", ids.len(), scale.echo_sessions);
    }
    let (one_rate, mut one) = ping_rounds(ctx, ids[..1].to_vec(), scale.echo_rounds).await?;
    let per = (scale.echo_rounds / ids.len()).max(1);
    let (many_rate, mut many) = ping_rounds(ctx, ids.clone(), per).await?;
    fleet.stop(Duration::from_secs(30)).await;
    Ok(EchoResult {
        one_session_per_sec: one_rate,
        one_session: stats::summarize(&mut one),
        many_sessions_per_sec: many_rate,
        many_sessions: stats::summarize(&mut many),
        sessions: ids.len(),
    })
}

/// Scenario 6: an idle real `tether-delegate`'s RSS and CPU, and the image size.
#[derive(Debug, Serialize)]
pub struct FootprintResult {
    /// RSS after connecting and settling, KiB.
    pub rss_kib: u64,
    /// Average CPU over the sampling window, percent of one core.
    pub cpu_percent: f64,
    /// Sampling window, seconds.
    pub window_secs: u64,
    /// Size of the `tether-delegate:latest` image in bytes, if it is built.
    pub image_bytes: Option<u64>,
}

pub async fn footprint(ctx: &Ctx, scale: &Scale) -> Result<FootprintResult> {
    let token = ctx.create_token("bench-footprint")?;
    let name = "footprint";
    let dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(&ctx.delegate_bin)
        .env_clear()
        .env("ACCOUNT_ID", &ctx.manager.init.account_id)
        .env("ACCOUNT_SECRET", token.expose().as_str())
        .env("MANAGER_HOST_AND_PORT", ctx.manager.addr.to_string())
        .env("MANAGER_CA_CERT", &ctx.manager.init.ca_cert)
        .env("DELEGATE_NAME", name)
        .env("TETHER_STATE_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting tether-delegate")?;
    let pid = child.id().context("delegate pid")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while session_ids(ctx, name).await?.is_empty() {
        if Instant::now() > deadline {
            bail!("the delegate did not connect within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_kib = settled_rss(pid).await?;
    let ticks0 = procfs::cpu_ticks(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(scale.footprint_secs)).await;
    let ticks = procfs::cpu_ticks(pid)? - ticks0;
    let cpu_percent = ticks as f64 / procfs::TICKS_PER_SEC as f64 / t0.elapsed().as_secs_f64() * 100.0;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let image_bytes = std::process::Command::new("docker")
        .args(["image", "inspect", "tether-delegate:latest", "--format", "{{.Size}}"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
    Ok(FootprintResult { rss_kib, cpu_percent, window_secs: scale.footprint_secs, image_bytes })
}
