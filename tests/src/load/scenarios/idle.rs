//! Scenario 1: RSS at each step of idle connections, and the slope in KiB per connection, for
//! the manager (authenticated sessions) and then for the bare baseline server (connections
//! that exchanged the handshake's messages) at the same steps, in the same run.
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::{settled_rss, Ctx, Scale};
use crate::load::baseline;
use crate::load::fleet::{Fleet, GrowOptions};

/// Scenario 1: RSS at each step of idle connections, and the slopes compared.
#[derive(Debug, Serialize)]
pub struct IdleResult {
    /// (sessions, manager RSS KiB) at each step.
    pub steps: Vec<(usize, u64)>,
    /// KiB per session between the first and the last step.
    pub slope_kib_per_session: f64,
    /// Seconds to open all sessions.
    pub ramp_secs: f64,
    /// (connections, bare baseline server RSS KiB) at the same steps.
    pub baseline_steps: Vec<(usize, u64)>,
    /// The bare server's KiB per connection between the first and the last step.
    pub baseline_slope_kib: f64,
    /// manager / baseline slope (target ≤ 1.3).
    pub slope_ratio: f64,
}

fn slope(steps: &[(usize, u64)]) -> f64 {
    match (steps.first(), steps.last()) {
        (Some(first), Some(last)) => {
            (last.1 as f64 - first.1 as f64) / ((last.0.saturating_sub(first.0)).max(1) as f64)
        }
        _ => f64::NAN,
    }
}

pub async fn idle(ctx: &Ctx, scale: &Scale) -> Result<IdleResult> {
    let mut bench = ctx.bench("idle", scale, 128, Duration::from_secs(1800))?;
    let started = Instant::now();
    let mut steps = Vec::new();
    for &n in &scale.idle_steps {
        bench.grow(ctx, n, Duration::from_secs(900)).await?;
        steps.push((n, settled_rss(ctx.manager_pid()?).await?));
    }
    let ramp_secs = started.elapsed().as_secs_f64();
    bench.fleet.stop(Duration::from_secs(120)).await;

    let server = baseline::Server::start(&ctx.self_bin).await?;
    let opts = GrowOptions {
        concurrency: 128,
        follow_rotation: false,
        max_time: Duration::from_secs(1800),
        spread: scale.spread,
    };
    let mut fleet = Fleet::default();
    let mut baseline_steps = Vec::new();
    for &n in &scale.idle_steps {
        fleet.grow_bare(n, &server.target, &opts, Duration::from_secs(900)).await?;
        baseline_steps.push((n, settled_rss(server.pid()).await?));
    }
    fleet.stop(Duration::from_secs(120)).await;
    drop(server);

    let (manager_slope, baseline_slope) = (slope(&steps), slope(&baseline_steps));
    Ok(IdleResult {
        steps,
        slope_kib_per_session: manager_slope,
        ramp_secs,
        baseline_steps,
        baseline_slope_kib: baseline_slope,
        slope_ratio: manager_slope / baseline_slope.max(f64::MIN_POSITIVE),
    })
}
