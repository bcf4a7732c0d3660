//! The six benchmark scenarios of the design brief, each bounded in count and time, each
//! returning a JSON-serialisable result. Scale is chosen by [`Scale`] (`smoke` for CI: seconds;
//! `full` for BENCHMARKS.md).
//!
//! One scenario per module: [`idle`], [`rate`], [`revoke`], [`rotate`], [`echo`], [`footprint`].
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tether_protocol::Token;

use uuid::Uuid;

use super::fleet::{Fleet, GrowOptions};
use super::procfs;
use super::session::Identity;
use super::transport::Target;
use crate::harness::cli;
use crate::harness::manager::Manager;

pub mod echo;
pub mod footprint;
pub mod idle;
pub mod rate;
pub mod revoke;
pub mod rotate;

pub use echo::{echo, EchoResult};
pub use footprint::{footprint, FootprintResult};
pub use idle::{idle, IdleResult};
pub use rate::{rate, RateResult};
pub use revoke::{revoke, RevokeResult};
pub use rotate::{rotate, RotateResult};

/// How big each scenario is.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    /// Session counts at which the manager's RSS is read.
    pub idle_steps: Vec<usize>,
    /// Seconds each handshake-rate loop runs.
    pub rate_secs: u64,
    /// Handshakes in flight during the rate loops.
    pub rate_concurrency: usize,
    /// Live sessions on the token that gets revoked (and bare connections broadcast to).
    pub revoke_sessions: usize,
    /// Revoke rounds, each followed by a bare broadcast round.
    pub revoke_rounds: usize,
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
            revoke_rounds: 1,
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
            revoke_rounds: 5,
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

    /// The identity of sessions named `name` on a new token `bench-<name>`.
    fn identity(&self, name: &str) -> Result<Identity> {
        let created = self.manager.cli_json(&["token", "create", &format!("bench-{name}")])?;
        let token = Token::parse(&cli::created_token_value(&created)?)?;
        Ok(Identity {
            account_id: self.manager.init.account_id.clone(),
            token: Arc::new(token),
            name: name.into(),
        })
    }

    /// An empty fleet of sessions named `name` on a new token, growing `concurrency`
    /// handshakes at a time, each session living at most `max_time`.
    fn bench(&self, name: &str, scale: &Scale, concurrency: usize, max_time: Duration) -> Result<Bench> {
        let who = self.identity(name)?;
        let token_id = who.token.id();
        let opts = GrowOptions { concurrency, follow_rotation: false, max_time, spread: scale.spread };
        Ok(Bench { fleet: Fleet::default(), who, opts, token_id })
    }
}

/// A scenario's sessions, all named after it, on a token of their own.
struct Bench {
    fleet: Fleet,
    who: Identity,
    opts: GrowOptions,
    token_id: Uuid,
}

impl Bench {
    /// Grows the fleet to `total` sessions within `within`.
    async fn grow(&mut self, ctx: &Ctx, total: usize, within: Duration) -> Result<()> {
        self.fleet.grow(total, &ctx.target, &self.who, &self.opts, within).await
    }
}

/// The median of `v` (the upper one of an even count; NaN for none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Reads RSS until two readings 500 ms apart differ by under 1 % (bounded to 10 s).
pub(crate) async fn settled_rss(pid: u32) -> Result<u64> {
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

/// The session ids of delegates named `name` (`delegate list --json`).
async fn session_ids(ctx: &Ctx, name: &str) -> Result<Vec<String>> {
    let listed = cli::delegate_list(&ctx.manager.cli_json(&["delegate", "list"])?)?;
    Ok(listed.into_iter().filter(|d| d.name == name).map(|d| d.session_id).collect())
}
