//! Scenario 4: sessions that ack and reconnect on the new token.
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::{Ctx, Scale};
use crate::harness::cli;
use crate::harness::poll;

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
    cli::token_state(&ctx.manager.cli_json(&["token", "show", token_id])?)
}

pub async fn rotate(ctx: &Ctx, scale: &Scale) -> Result<RotateResult> {
    let mut bench = ctx.bench("rotate", scale, 32, Duration::from_secs(300))?;
    bench.opts.follow_rotation = true;
    let token_id = bench.token_id.to_string();
    bench.grow(ctx, scale.rotate_sessions, Duration::from_secs(120)).await?;
    let started = Instant::now();
    ctx.manager.cli_json(&["token", "rotate", &token_id, "--grace-secs", "120"])?;
    poll::until("the old token to be revoked after the rotation", Duration::from_secs(60), || async {
        Ok((token_state(ctx, &token_id)? == "revoked").then_some(()))
    })
    .await?;
    let all_moved_ms = started.elapsed().as_secs_f64() * 1000.0;
    let ended = bench.fleet.stop(Duration::from_secs(30)).await;
    Ok(RotateResult {
        sessions: ended.len(),
        all_moved_ms,
        moved: ended.iter().filter(|e| e.rotated).count(),
        dropped: ended.iter().filter(|e| !e.rotated).count(),
    })
}
