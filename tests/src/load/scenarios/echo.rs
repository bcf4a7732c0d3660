//! Scenario 5: echo round-trips through the manager's ping API.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use super::{session_ids, Ctx, Scale};
use crate::load::stats::{self, Summary};

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

async fn ping_rounds(ctx: &Ctx, ids: Vec<String>, rounds_each: usize) -> Result<(f64, Vec<Duration>)> {
    let http = ctx.manager.http();
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
    let mut bench = ctx.bench("echo", scale, 32, Duration::from_secs(600))?;
    bench.grow(ctx, scale.echo_sessions, Duration::from_secs(60)).await?;
    let ids = session_ids(ctx, "echo").await?;
    if ids.len() < scale.echo_sessions {
        bail!("manager lists {} echo sessions, expected {}", ids.len(), scale.echo_sessions);
    }
    let (one_rate, mut one) = ping_rounds(ctx, ids[..1].to_vec(), scale.echo_rounds).await?;
    let per = (scale.echo_rounds / ids.len()).max(1);
    let (many_rate, mut many) = ping_rounds(ctx, ids.clone(), per).await?;
    bench.fleet.stop(Duration::from_secs(30)).await;
    Ok(EchoResult {
        one_session_per_sec: one_rate,
        one_session: stats::summarize(&mut one),
        many_sessions_per_sec: many_rate,
        many_sessions: stats::summarize(&mut many),
        sessions: ids.len(),
    })
}
