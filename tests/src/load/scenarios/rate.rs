//! Scenario 2: new sessions per second against the manager and against the bare TLS +
//! WebSocket baseline server.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Scale};
use crate::load::session;
use crate::load::transport::{self, source_for, Target};

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
    let who = ctx.identity("rate")?;
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
