//! The rotation ledger: which rotations are finished (with the outcome to ack again), which
//! are running, and which successor container waits to take over. Shared by the sessions and
//! the rotation tasks; plain memory, no I/O, so a session driver decides with it directly.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tether_protocol::message::RotateOutcome;
use tether_protocol::session::ClientSession;
use tether_protocol::Token;
use uuid::Uuid;

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

/// A rotation to run: the unsealed successor token, for the [`super::Rotator`].
#[derive(Debug)]
pub struct RotationStart {
    /// Rotation id.
    pub rotation_id: Uuid,
    /// The successor token (its `Debug` shows the id only).
    pub token: Token,
    /// Deadline of the current token, unix seconds.
    pub old_token_valid_until: u64,
}

/// What to do with a `rotate`.
#[derive(Debug)]
pub enum Admission {
    /// Ack now with this outcome and detail: a repeat of a finished rotation, or a sealed
    /// token that does not open.
    Ack(RotateOutcome, String),
    /// The rotation is already running: its result is acked when it finishes.
    Running,
    /// A new rotation, now marked running: hand it to the rotator.
    Start(RotationStart),
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

/// Rotation bookkeeping shared by the sessions and the rotation tasks.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    book: Arc<Mutex<Book>>,
}

impl Ledger {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides about a `rotate` received on `session`: ack a finished one again, ignore a
    /// running one, refuse a sealed token that does not open, or mark a new one running.
    pub fn admit(&self, session: &ClientSession, request: RotateRequest<'_>) -> Admission {
        let RotateRequest { rotation_id, token_id, sealed_token, old_token_valid_until } = request;
        {
            let book = self.book();
            if let Some((outcome, detail)) = book.completed.get(&rotation_id) {
                tracing::info!(%rotation_id, "rotation already handled; acknowledging again");
                return Admission::Ack(*outcome, detail.clone());
            }
            if book.in_progress.contains(&rotation_id) {
                tracing::info!(%rotation_id, "rotation already in progress");
                return Admission::Running;
            }
        }
        let token = match session.open_sealed_token(rotation_id, token_id, sealed_token) {
            Ok(token) => token,
            Err(err) => {
                tracing::warn!(%rotation_id, error = %err, "cannot open the rotated token");
                return Admission::Ack(RotateOutcome::Failed, format!("cannot open the sealed token: {err}"));
            }
        };
        self.book().in_progress.insert(rotation_id);
        Admission::Start(RotationStart { rotation_id, token, old_token_valid_until })
    }

    /// Records the end of a running rotation; a failed one is forgotten, so it may be tried
    /// again.
    pub fn finish(&self, rotation_id: Uuid, outcome: RotateOutcome, detail: &str) {
        let mut book = self.book();
        book.in_progress.remove(&rotation_id);
        if outcome != RotateOutcome::Failed {
            book.completed.insert(rotation_id, (outcome, detail.to_owned()));
        }
    }

    /// Records the successor container that is to take over.
    pub fn set_pending(&self, pending: PendingReplacement) {
        self.book().pending = Some(pending);
    }

    /// Takes the pending replacement (at SIGTERM: the successor took over).
    pub fn take_pending(&self) -> Option<PendingReplacement> {
        self.book().pending.take()
    }

    /// Takes the pending replacement if it is still `successor_id`'s; returns whether it was.
    pub fn take_pending_of(&self, successor_id: &str) -> bool {
        let mut book = self.book();
        let mine = book.pending.as_ref().is_some_and(|p| p.successor_id == successor_id);
        if mine {
            book.pending = None;
        }
        mine
    }

    /// Whether a successor container is waiting to take over.
    pub fn has_pending(&self) -> bool {
        self.book().pending.is_some()
    }
}
