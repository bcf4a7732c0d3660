//! Scenario 6: an idle real `tether-delegate`'s RSS and CPU, and the image size.
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{session_ids, settled_rss, Ctx, Scale};
use crate::harness::poll;
use crate::load::procfs;

/// Scenario 6: an idle real `tether-delegate`'s RSS and CPU, and the image size.
#[derive(Debug, Serialize)]
pub struct FootprintResult {
    /// RSS after connecting and settling, KiB.
    pub rss_kib: u64,
    /// Average CPU over the sampling window, percent of one core.
    pub cpu_percent: f64,
    /// Sampling window, seconds.
    pub window_secs: u64,
    /// Size of the `tether-delegate:latest` image in bytes, if it is built.
    pub image_bytes: Option<u64>,
}

pub async fn footprint(ctx: &Ctx, scale: &Scale) -> Result<FootprintResult> {
    let name = "footprint";
    let token = ctx.identity(name)?.token;
    let dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(&ctx.delegate_bin)
        .env_clear()
        .env("ACCOUNT_ID", &ctx.manager.init.account_id)
        .env("ACCOUNT_SECRET", token.expose().as_str())
        .env("MANAGER_HOST_AND_PORT", ctx.manager.addr.to_string())
        .env("MANAGER_CA_CERT", &ctx.manager.init.ca_cert)
        .env("DELEGATE_NAME", name)
        .env("TETHER_STATE_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting tether-delegate")?;
    let pid = child.id().context("delegate pid")?;
    poll::until("the delegate to connect", Duration::from_secs(30), || async {
        Ok((!session_ids(ctx, name).await?.is_empty()).then_some(()))
    })
    .await?;
    let rss_kib = settled_rss(pid).await?;
    let ticks0 = procfs::cpu_ticks(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(scale.footprint_secs)).await;
    let ticks = procfs::cpu_ticks(pid)? - ticks0;
    let cpu_percent = ticks as f64 / procfs::TICKS_PER_SEC as f64 / t0.elapsed().as_secs_f64() * 100.0;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let image_bytes = std::process::Command::new("docker")
        .args(["image", "inspect", "tether-delegate:latest", "--format", "{{.Size}}"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
    Ok(FootprintResult { rss_kib, cpu_percent, window_secs: scale.footprint_secs, image_bytes })
}
