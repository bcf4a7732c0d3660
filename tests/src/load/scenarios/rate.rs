//! Scenario 2: new sessions per second against the manager and against the bare TLS +
//! WebSocket baseline server.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::{median, Ctx, Scale};
use crate::load::transport::source_for;
use crate::load::{bare, baseline, session};

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

/// Rounds of the rate comparison; manager and baseline alternate so that background load
/// on the machine affects both alike, and the medians are compared.
const RATE_ROUNDS: usize = 3;

pub async fn rate(ctx: &Ctx, scale: &Scale) -> Result<RateResult> {
    let who = ctx.identity("rate")?;
    let baseline = baseline::Server::start(&ctx.self_bin).await?;
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
            let target = target.clone();
            async move { bare::once(&target, source_for(i, spread)).await }
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
