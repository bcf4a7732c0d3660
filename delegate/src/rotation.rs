//! Token rotation: unseal the successor token, prove it with a second handshake, then apply
//! it in the first mode that fits (docker, file, manual) and report the outcome for the
//! `rotate_ack`. Rotation ids already applied are remembered, so a repeated `rotate` is acked
//! again and not re-applied.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_protocol::message::RotateOutcome;
use tether_protocol::session::ClientSession;
use tether_protocol::Token;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::connection::{Connection, Connector};
use crate::docker::container_id::short_id;
use crate::docker::engine::DockerHost;
use crate::logging::shown;
use crate::{session, token_file};

/// How this delegate applies a rotated token (resolved once at start).
#[derive(Debug, Clone)]
pub enum ApplyMode {
    /// Replace the own container through the Docker engine.
    Docker(DockerHost),
    /// Rewrite `ACCOUNT_SECRET_FILE` (this path) and continue in place.
    File(PathBuf),
    /// Keep running on the old token and warn.
    Manual,
    /// Docker mode was required but is not available; rotations fail with this reason.
    Unavailable(String),
}

impl ApplyMode {
    /// The name reported in heartbeats.
    pub fn name(&self) -> &'static str {
        match self {
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

/// A successor container started for a rotation, waiting to take over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReplacement {
    /// The rotation.
    pub rotation_id: Uuid,
    /// The successor's container id.
    pub successor_id: String,
}

#[derive(Debug, Default)]
struct Book {
    completed: HashMap<Uuid, (RotateOutcome, String)>,
    in_progress: HashSet<Uuid>,
    pending: Option<PendingReplacement>,
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
    book: Mutex<Book>,
    done: mpsc::Sender<RotationDone>,
}

/// The `rotate` message's fields.
#[derive(Debug)]
pub struct RotateRequest<'a> {
    /// Rotation id.
    pub rotation_id: Uuid,
    /// Successor token id.
    pub token_id: Uuid,
    /// The sealed successor.
    pub sealed_token: &'a str,
    /// Deadline of the current token, unix seconds.
    pub old_token_valid_until: u64,
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
        let inner =
            Inner { connector, mode, secret_file, replace_timeout, book: Mutex::new(Book::default()), done };
        (Self { inner: Arc::new(inner) }, rx)
    }

    /// The apply mode.
    pub fn mode(&self) -> &ApplyMode {
        &self.inner.mode
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Handles a `rotate`: returns an ack to send now (a repeat of an applied rotation, or a
    /// token that does not unseal), or starts the rotation in the background.
    pub fn on_rotate(
        &self,
        session: &ClientSession,
        request: RotateRequest<'_>,
    ) -> Option<(RotateOutcome, String)> {
        let RotateRequest { rotation_id, token_id, sealed_token, old_token_valid_until } = request;
        {
            let book = self.book();
            if let Some(done) = book.completed.get(&rotation_id) {
                tracing::info!(%rotation_id, "rotation already handled; acknowledging again");
                return Some(done.clone());
            }
            if book.in_progress.contains(&rotation_id) {
                tracing::info!(%rotation_id, "rotation already in progress");
                return None;
            }
        }
        let token = match session.open_sealed_token(rotation_id, token_id, sealed_token) {
            Ok(token) => token,
            Err(err) => {
                tracing::warn!(%rotation_id, error = %err, "cannot open the rotated token");
                return Some((RotateOutcome::Failed, format!("cannot open the sealed token: {err}")));
            }
        };
        tracing::info!(%rotation_id, new_token_id = %token_id, mode = self.mode().name(), "token rotation received");
        self.book().in_progress.insert(rotation_id);
        let this = self.clone();
        tokio::spawn(async move {
            let done = this.rotate(rotation_id, token, old_token_valid_until).await;
            {
                let mut book = this.book();
                book.in_progress.remove(&rotation_id);
                if done.outcome != RotateOutcome::Failed {
                    book.completed.insert(rotation_id, (done.outcome, done.detail.clone()));
                }
            }
            let _ = this.inner.done.send(done).await;
        });
        None
    }

    /// Takes the pending replacement (at SIGTERM: the successor took over).
    pub fn take_pending(&self) -> Option<PendingReplacement> {
        self.book().pending.take()
    }

    /// Whether a successor container is waiting to take over.
    pub fn has_pending(&self) -> bool {
        self.book().pending.is_some()
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
                        session::close_quietly(proven).await;
                        fail(format!("cannot rewrite ACCOUNT_SECRET_FILE: {err}"))
                    }
                }
            }
            ApplyMode::Manual => {
                session::close_quietly(proven).await;
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
                session::close_quietly(proven).await;
                fail(format!("docker mode is required but unavailable: {reason}"))
            }
            ApplyMode::Docker(host) => {
                session::close_quietly(proven).await;
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
        self.book().pending = Some(PendingReplacement { rotation_id, successor_id: successor_id.clone() });
        tokio::time::sleep(self.inner.replace_timeout).await;
        // Still here: the successor never stopped this container.
        let still_pending = {
            let mut book = self.book();
            let mine = book.pending.as_ref().is_some_and(|p| p.successor_id == successor_id);
            if mine {
                book.pending = None;
            }
            mine
        };
        if !still_pending {
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

async fn write_file(path: PathBuf, token: &Token) -> std::io::Result<()> {
    let token = Token::parse(&token.expose()).map_err(std::io::Error::other)?;
    tokio::task::spawn_blocking(move || token_file::write_atomic(&path, &token))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests;
