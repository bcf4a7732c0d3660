//! A fleet of held sessions (or of bare baseline connections): opens many with bounded
//! concurrency, keeps them until told to stop, and collects how each ended.
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::bare;
use super::session::{self, Ended, HoldOptions, Identity};
use super::transport::{source_for, Target};

/// Sessions being held.
#[derive(Debug)]
pub struct Fleet {
    tasks: JoinSet<Ended>,
    stop: watch::Sender<bool>,
    /// Sessions that completed the handshake.
    pub opened: Arc<AtomicUsize>,
    /// Sessions that failed to open.
    pub failed: Arc<AtomicUsize>,
}

/// Options for [`Fleet::grow`].
#[derive(Debug, Clone)]
pub struct GrowOptions {
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// Follow rotations onto the new token.
    pub follow_rotation: bool,
    /// How long each session may live at most.
    pub max_time: Duration,
    /// How many 127.0.0.x source addresses to spread over.
    pub spread: u8,
}

impl Default for Fleet {
    fn default() -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            tasks: JoinSet::new(),
            stop,
            opened: Arc::new(AtomicUsize::new(0)),
            failed: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Fleet {
    /// Opens sessions until `total` are open (counting those already open), within `within`.
    pub async fn grow(
        &mut self,
        total: usize,
        target: &Target,
        who: &Identity,
        opts: &GrowOptions,
        within: Duration,
    ) -> Result<()> {
        let follow_rotation = opts.follow_rotation;
        let max_time = opts.max_time;
        self.grow_with(total, opts, within, |source, stop| {
            let (target, who) = (target.clone(), who.clone());
            async move {
                let opened = session::open(&target, Some(source), &who, Duration::from_secs(30)).await?;
                let hold =
                    HoldOptions { follow_rotation, target: Some(target), source: Some(source), max_time };
                Ok(session::hold(opened, who, hold, stop))
            }
        })
        .await
    }

    /// [`Self::grow`] with connections to the bare baseline server ([`bare`]).
    pub async fn grow_bare(
        &mut self,
        total: usize,
        target: &Target,
        opts: &GrowOptions,
        within: Duration,
    ) -> Result<()> {
        let max_time = opts.max_time;
        self.grow_with(total, opts, within, |source, stop| {
            let target = target.clone();
            async move {
                let ws = bare::open(&target, Some(source), Duration::from_secs(30)).await?;
                Ok(bare::hold(ws, stop, max_time))
            }
        })
        .await
    }

    /// Opens connections with `open` (given the source address and the stop signal; it
    /// returns the future that holds the connection) until `total` are open, within `within`.
    async fn grow_with<O, Fo, H>(
        &mut self,
        total: usize,
        opts: &GrowOptions,
        within: Duration,
        open: O,
    ) -> Result<()>
    where
        O: Fn(IpAddr, watch::Receiver<bool>) -> Fo,
        Fo: Future<Output = Result<H>> + Send + 'static,
        H: Future<Output = Ended> + Send + 'static,
    {
        let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
        let start = self.opened.load(Ordering::SeqCst) + self.failed.load(Ordering::SeqCst);
        for i in start..total.max(start) {
            let permit = permits.clone().acquire_owned().await?;
            let source: IpAddr = source_for(i, opts.spread);
            let opening = open(source, self.stop.subscribe());
            let (opened, failed) = (self.opened.clone(), self.failed.clone());
            self.tasks.spawn(async move {
                let result = opening.await;
                drop(permit);
                match result {
                    Ok(held) => {
                        opened.fetch_add(1, Ordering::SeqCst);
                        held.await
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        Ended {
                            at: std::time::Instant::now(),
                            revoked: false,
                            close_code: None,
                            rotated: false,
                            reason: format!("open failed: {e:#}"),
                        }
                    }
                }
            });
        }
        let deadline = tokio::time::Instant::now() + within;
        while self.opened.load(Ordering::SeqCst) + self.failed.load(Ordering::SeqCst) < total {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "only {} of {total} sessions opened within {within:?}",
                    self.opened.load(Ordering::SeqCst)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failed = self.failed.load(Ordering::SeqCst);
        if failed > 0 {
            let reason = self.first_failure().await;
            bail!("{failed} of {total} sessions failed to open; first: {reason}");
        }
        Ok(())
    }

    async fn first_failure(&mut self) -> String {
        while let Some(Ok(ended)) = self.tasks.try_join_next() {
            if ended.reason.starts_with("open failed") {
                return ended.reason;
            }
        }
        "unknown".into()
    }

    /// Waits (bounded) until every session ended by itself, and returns how.
    pub async fn wait_all(&mut self, within: Duration) -> Vec<Ended> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
            if let Ok(ended) = joined {
                out.push(ended);
            }
        }
        out
    }

    /// Asks every session to say goodbye and close; returns how they ended.
    pub async fn stop(mut self, within: Duration) -> Vec<Ended> {
        let _ = self.stop.send(true);
        let out = self.wait_all(within).await;
        self.tasks.abort_all();
        out
    }
}
