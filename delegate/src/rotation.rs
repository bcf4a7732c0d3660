//! Token rotation: unseal the successor token, prove it with a second handshake, then apply
//! it in the first mode that fits (kubernetes, docker, file, manual) and report the outcome for the
//! `rotate_ack`. Rotation ids already applied are remembered, so a repeated `rotate` is acked
//! again and not re-applied.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tether_protocol::message::RotateOutcome;
use tether_protocol::Token;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::connection::{Connection, Connector};
use crate::docker::container_id::short_id;
use crate::docker::engine::DockerHost;
use crate::kubernetes::cluster::{Applied, Cluster, Unconfirmed};
use crate::logging::shown;
use crate::token_file;

mod ledger;
pub use ledger::{Admission, Ledger, PendingReplacement, RotateRequest, RotationStart};

/// How this delegate applies a rotated token (resolved once at start).
#[derive(Debug, Clone)]
pub enum ApplyMode {
    /// Replace the own container through the Docker engine.
    Docker(DockerHost),
    /// Rewrite `ACCOUNT_SECRET_FILE` (this path) and continue in place.
    File(PathBuf),
    /// Write the token to the pod's Secret and roll its workload.
    Kubernetes(Cluster),
    /// Keep running on the old token and warn.
    Manual,
    /// Kubernetes or docker mode was required but is not available; rotations fail with this
    /// reason.
    Unavailable(String),
}

impl ApplyMode {
    /// The name reported in heartbeats.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Kubernetes(_) => "kubernetes",
            Self::Docker(_) => "docker",
            Self::File(_) => "file",
            Self::Manual => "manual",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// A finished rotation, to be acked on the current session.
#[derive(Debug)]
pub struct RotationDone {
    /// The rotation.
    pub rotation_id: Uuid,
    /// The outcome.
    pub outcome: RotateOutcome,
    /// Human-readable detail (never the token).
    pub detail: String,
    /// In file mode: the new token and its proven session, to continue on.
    pub switch_to: Option<(Token, Connection)>,
}

/// Rotation state shared by the sessions and the rotation tasks.
#[derive(Debug, Clone)]
pub struct Rotator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connector: Connector,
    mode: ApplyMode,
    secret_file: Option<PathBuf>,
    replace_timeout: Duration,
    ledger: Ledger,
    done: mpsc::Sender<RotationDone>,
}

impl Rotator {
    /// A rotator; finished rotations arrive on the returned receiver.
    pub fn new(
        connector: Connector,
        mode: ApplyMode,
        secret_file: Option<PathBuf>,
        replace_timeout: Duration,
    ) -> (Self, mpsc::Receiver<RotationDone>) {
        let (done, rx) = mpsc::channel(16);
        let inner = Inner { connector, mode, secret_file, replace_timeout, ledger: Ledger::default(), done };
        (Self { inner: Arc::new(inner) }, rx)
    }

    /// The apply mode.
    pub fn mode(&self) -> &ApplyMode {
        &self.inner.mode
    }

    /// The rotation ledger the sessions decide with.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// Whether a successor container is waiting to take over.
    pub fn has_pending(&self) -> bool {
        self.inner.ledger.has_pending()
    }

    /// Runs an admitted rotation in the background; its result arrives as a [`RotationDone`].
    pub fn start(&self, start: RotationStart) {
        let RotationStart { rotation_id, token, old_token_valid_until } = start;
        tracing::info!(%rotation_id, new_token_id = %token.id(), mode = self.mode().name(), "token rotation received");
        let this = self.clone();
        tokio::spawn(async move {
            let done = this.rotate(rotation_id, token, old_token_valid_until).await;
            this.inner.ledger.finish(rotation_id, done.outcome, &done.detail);
            let _ = this.inner.done.send(done).await;
        });
    }

    async fn rotate(&self, rotation_id: Uuid, token: Token, valid_until: u64) -> RotationDone {
        let fail = |detail: String| {
            tracing::warn!(%rotation_id, %detail, "token rotation failed; staying on the current token");
            RotationDone { rotation_id, outcome: RotateOutcome::Failed, detail, switch_to: None }
        };
        let proven = match self.inner.connector.connect(&token).await {
            Ok(conn) => conn,
            Err(err) => {
                return fail(format!("the new token did not authenticate: {}", shown(&err.to_string())))
            }
        };
        tracing::info!(%rotation_id, new_token_id = %token.id(), "new token proven by a second handshake");
        match &self.inner.mode {
            ApplyMode::File(path) => {
                let path = path.clone();
                match write_file(path.clone(), &token).await {
                    Ok(()) => {
                        tracing::info!(%rotation_id, file = %path.display(), "token file rewritten; continuing on the new token");
                        RotationDone {
                            rotation_id,
                            outcome: RotateOutcome::Applied,
                            detail: "token file rewritten; continuing on the new token".into(),
                            switch_to: Some((token, proven)),
                        }
                    }
                    Err(err) => {
                        proven.close_quietly().await;
                        fail(format!("cannot rewrite ACCOUNT_SECRET_FILE: {err}"))
                    }
                }
            }
            ApplyMode::Manual => {
                proven.close_quietly().await;
                let detail = format!(
                    "no Docker socket and no ACCOUNT_SECRET_FILE: deploy the new token {} by hand before {} (unix time); until then this delegate stays on the current token",
                    token.id(),
                    valid_until
                );
                tracing::warn!(%rotation_id, new_token_id = %token.id(), old_token_valid_until = valid_until,
                    "ACTION REQUIRED: the token was rotated but this delegate cannot apply it itself; set ACCOUNT_SECRET to the new token (shown once by `tether-manager token rotate`) and restart the delegate before the deadline, or it will be disconnected");
                RotationDone { rotation_id, outcome: RotateOutcome::Manual, detail, switch_to: None }
            }
            ApplyMode::Unavailable(reason) => {
                proven.close_quietly().await;
                fail(format!("the apply mode is required but unavailable: {reason}"))
            }
            ApplyMode::Kubernetes(cluster) => match cluster.apply(rotation_id, &token).await {
                Ok(applied) => {
                    // The Secret is where the pods read the token; a token file, if one is
                    // configured, is kept current too (it is tried first at a restart).
                    if let Some(path) = &self.inner.secret_file {
                        if let Err(err) = write_file(path.clone(), &token).await {
                            tracing::warn!(%rotation_id, error = %err, "cannot rewrite ACCOUNT_SECRET_FILE; the Secret holds the new token");
                        }
                    }
                    let detail = applied_detail(&applied);
                    tracing::info!(%rotation_id, workload = %applied.workload, restarted = applied.restarted,
                        keys = ?applied.keys_written, %detail, "kubernetes apply done; continuing on the new token until this pod is replaced");
                    RotationDone {
                        rotation_id,
                        outcome: RotateOutcome::Applied,
                        detail,
                        switch_to: Some((token, proven)),
                    }
                }
                Err(err) => {
                    proven.close_quietly().await;
                    // An error is always from before the Secret write (or a refused one).
                    fail(format!("kubernetes: {err}; the Secret was not changed"))
                }
            },
            ApplyMode::Docker(host) => {
                proven.close_quietly().await;
                self.replace_container(host, rotation_id, token, fail).await
            }
        }
    }

    async fn replace_container(
        &self,
        host: &DockerHost,
        rotation_id: Uuid,
        token: Token,
        fail: impl Fn(String) -> RotationDone,
    ) -> RotationDone {
        let previous = self.inner.secret_file.as_ref().and_then(|p| token_file::read(p));
        if let Some(path) = &self.inner.secret_file {
            if let Err(err) = write_file(path.clone(), &token).await {
                return fail(format!("cannot rewrite ACCOUNT_SECRET_FILE: {err}"));
            }
        }
        let restore = || async {
            if let (Some(path), Some(previous)) = (&self.inner.secret_file, &previous) {
                if let Err(err) = write_file(path.clone(), previous).await {
                    tracing::error!(error = %err, "could not restore ACCOUNT_SECRET_FILE after a failed rotation");
                }
            }
        };
        let successor_id = match host.start_successor(&token).await {
            Ok(id) => id,
            Err(err) => {
                restore().await;
                return fail(format!("cannot start the successor container: {err}"));
            }
        };
        tracing::info!(%rotation_id, successor = %short_id(&successor_id), timeout_secs = self.inner.replace_timeout.as_secs(),
            "successor container started; waiting for it to authenticate and take over");
        self.inner.ledger.set_pending(PendingReplacement { rotation_id, successor_id: successor_id.clone() });
        tokio::time::sleep(self.inner.replace_timeout).await;
        // Still here: the successor never stopped this container.
        if !self.inner.ledger.take_pending_of(&successor_id) {
            // The shutdown path took it; the process is exiting.
            return RotationDone {
                rotation_id,
                outcome: RotateOutcome::Applied,
                detail: "replaced".into(),
                switch_to: None,
            };
        }
        host.remove_quietly(&successor_id).await;
        restore().await;
        fail(format!(
            "the successor container {} did not authenticate within {} s; it was removed and this container keeps running",
            short_id(&successor_id),
            self.inner.replace_timeout.as_secs()
        ))
    }
}

/// The ack detail of an applied kubernetes-mode rotation.
fn applied_detail(applied: &Applied) -> String {
    match &applied.unconfirmed {
        Some(Unconfirmed::Restart(reason)) => {
            return format!(
                "kubernetes: the Secret holds the new token; the {} rolling restart was refused or unconfirmed ({reason}); this pod continues on the new token, and pods pick it up from the Secret when they restart",
                applied.workload
            )
        }
        Some(Unconfirmed::SecretWrite(reason)) => {
            return format!(
                "kubernetes: the Secret write was sent but not confirmed ({reason}); it is not undone and no rolling restart was requested; this pod continues on the new token; check that the Secret holds it before pods restart"
            )
        }
        None => {}
    }
    let secret = match applied.keys_written.as_slice() {
        [] => "the Secret already held the new token".to_owned(),
        keys => format!("{} written to the Secret", keys.join(" and ")),
    };
    let restart = if applied.restarted {
        format!("{} rolling restart requested", applied.workload)
    } else {
        format!("{} already rolling for this rotation", applied.workload)
    };
    format!("kubernetes: {secret}; {restart}; continuing on the new token until replaced")
}

async fn write_file(path: PathBuf, token: &Token) -> std::io::Result<()> {
    let token = token.duplicate();
    tokio::task::spawn_blocking(move || token_file::write_atomic(&path, &token))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests;
