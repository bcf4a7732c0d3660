//! Probes of a running manager as an honest client sees it while an attack is on, from a
//! chosen loopback source address: one metric sample, `/healthz`, and a full handshake, each
//! bounded by [`HONEST_WITHIN`].
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use reqwest::StatusCode;

use super::manager::Manager;
use crate::attack::handshake;

/// How long an honest client may take while a flood is on.
pub const HONEST_WITHIN: Duration = Duration::from_secs(5);

/// Slack on top of a configured timeout before a connection must be seen closed.
pub const SLACK: Duration = Duration::from_secs(6);

impl Manager {
    /// The value of one metric sample (`name{labels}`), 0 when absent.
    pub async fn metric(&self, sample: &str) -> Result<f64> {
        let text = self.http().get(format!("{}/metrics", self.url())).send().await?.text().await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0))
    }

    /// `/healthz` from `source`, within [`HONEST_WITHIN`].
    pub async fn healthz_from(&self, source: IpAddr) -> Result<StatusCode> {
        let client = self.http_from(source)?;
        let resp = tokio::time::timeout(HONEST_WITHIN, client.get(format!("{}/healthz", self.url())).send())
            .await
            .map_err(|_| anyhow!("/healthz from {source} took longer than {HONEST_WITHIN:?}"))??;
        Ok(resp.status())
    }

    /// A handshake with the default token from `source` that must be welcomed within
    /// [`HONEST_WITHIN`]; how long it took.
    pub async fn honest_handshake(&self, source: IpAddr) -> Result<Duration> {
        let started = Instant::now();
        let answer = tokio::time::timeout(
            HONEST_WITHIN,
            handshake(&self.target()?, Some(source), &self.init.account_id, &self.default_token()?),
        )
        .await
        .map_err(|_| anyhow!("the honest handshake from {source} took longer than {HONEST_WITHIN:?}"))??;
        if !answer.is_welcome() {
            bail!("honest handshake from {source}: {}", answer.describe());
        }
        Ok(started.elapsed())
    }
}
