//! Scenario 4: sessions that ack and reconnect on the new token.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use super::{Ctx, Scale};
use crate::harness::cli;
use crate::load::fleet::{Fleet, GrowOptions};

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
