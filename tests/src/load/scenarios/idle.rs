//! Scenario 1: manager RSS at each step of idle sessions, and the slope in KiB per session.
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::{settled_rss, Ctx, Scale};

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
    let (first, last) = (steps[0], steps[steps.len() - 1]);
    let slope = (last.1 as f64 - first.1 as f64) / ((last.0 - first.0).max(1) as f64);
    Ok(IdleResult { steps, slope_kib_per_session: slope, ramp_secs })
}
