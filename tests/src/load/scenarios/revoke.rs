//! Scenario 3: time from the revoke API's answer to each live session's close.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use super::{Ctx, Scale};
use crate::load::procfs;
use crate::load::stats::{self, Summary};

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
    let mut bench = ctx.bench("revoke", scale, 128, Duration::from_secs(600))?;
    let token_id = bench.token_id;
    bench.grow(ctx, scale.revoke_sessions, Duration::from_secs(300)).await?;
    let http = ctx.manager.http();
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
