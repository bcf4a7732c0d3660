//! Token rotation: create the successor, push `rotate` to every live delegate on the old
//! token, track each delegate (pending → acked → reconnected), and revoke the old token when
//! every delegate has moved or when the grace window ends, whichever comes first.
//!
//! The successor's value is held in memory only while its rotation runs, to seal it for
//! delegates that connect with the old token during the grace window; it never touches disk.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_protocol::message::{RevokedReason, RotateOutcome};
use tether_protocol::Token;
use tokio::sync::Notify;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::clock::now_unix;
use crate::registry::{SessionCommand, SessionInfo};
use crate::state::AppState;
use crate::store::audit::Actor;
use crate::store::rotations::{self, RotationDelegate, RotationRow};
use crate::store::tokens::{self, TokenState};
use crate::store::StoreError;
use crate::tokens::{kick, new_token, TokenSpec};

/// Outcome word when every delegate moved.
pub const COMPLETED: &str = "completed";
/// Outcome word when the grace window ended first.
pub const GRACE_EXPIRED: &str = "grace_expired";

#[derive(Debug)]
struct Active {
    old_token: Uuid,
    new_token: Uuid,
    successor: Option<Arc<Token>>,
    deadline: u64,
    notify: Arc<Notify>,
    /// Sessions already sent `rotate`: each gets it exactly once.
    pushed: HashSet<Uuid>,
}

/// The rotations in progress.
#[derive(Debug, Default)]
pub struct Rotations {
    active: Mutex<HashMap<Uuid, Active>>,
}

/// A started rotation: the successor's value is here once.
#[derive(Debug)]
pub struct Started {
    /// The rotation.
    pub rotation: RotationRow,
    /// The successor token string.
    pub token: Zeroizing<String>,
    /// Live delegates told.
    pub delegates: usize,
}

impl Rotations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self, rotation_id: Uuid) {
        if let Some(a) = self.lock().get(&rotation_id) {
            a.notify.notify_one();
        }
    }

    /// The running rotation whose old token is `token_id`: its id and whether the successor's
    /// value is still held (not after a restart).
    fn by_old(&self, token_id: Uuid) -> Option<(Uuid, bool)> {
        self.lock().iter().find(|(_, a)| a.old_token == token_id).map(|(id, a)| (*id, a.successor.is_some()))
    }

    /// Sends `rotate` to `session` unless it already got it. Returns whether it was sent.
    fn push(&self, state: &AppState, rotation_id: Uuid, session: Uuid) -> bool {
        let mut map = self.lock();
        let Some(active) = map.get_mut(&rotation_id) else { return false };
        let Some(token) = active.successor.clone() else { return false };
        if !active.pushed.insert(session) {
            return false;
        }
        let valid_until = active.deadline;
        drop(map);
        state.registry.send(session, SessionCommand::Rotate { rotation_id, token, valid_until })
    }

    /// The running rotation whose successor is `token_id`.
    fn by_new(&self, token_id: Uuid) -> Option<Uuid> {
        self.lock().iter().find(|(_, a)| a.new_token == token_id).map(|(id, _)| *id)
    }
}

/// Starts rotating `token_ref` of `account` with a grace window of `grace_secs`.
pub async fn start(
    state: &AppState,
    account: &str,
    token_ref: &str,
    grace_secs: u64,
    successor_spec: Option<TokenSpec>,
    actor: Actor,
) -> Result<Started, StoreError> {
    let now = now_unix();
    let rotation_id = Uuid::new_v4();
    let deadline = now + grace_secs;
    let (account, token_ref) = (account.to_owned(), token_ref.to_owned());
    let master = state.master.clone();
    let (row, token) = state
        .store
        .call(move |conn| {
            let tx = conn.transaction()?;
            let old = tokens::find(&tx, &account, &token_ref)?
                .ok_or_else(|| StoreError::NotFound(format!("token `{token_ref}` in account `{account}`")))?;
            match old.state(now) {
                TokenState::Active => {}
                TokenState::Rotating => {
                    return Err(StoreError::Conflict(format!(
                        "token is already rotating (rotation {})",
                        old.rotation_id.map(|r| r.to_string()).unwrap_or_default()
                    )))
                }
                other => {
                    return Err(StoreError::Conflict(format!("a {} token cannot be rotated", other.as_str())))
                }
            }
            let spec = successor_spec
                .unwrap_or(TokenSpec { expires_at: None, allowed_cidrs: old.allowed_cidrs.clone() });
            let old_name = format!("{}~{}", old.name, &old.id.simple().to_string()[..8]);
            tokens::set_rotation(&tx, old.id, &old_name, Some(rotation_id))?;
            let (new_row, token) = new_token(&master, &account, &old.name, &spec, &actor, now);
            tokens::insert(&tx, &new_row)?;
            let row = RotationRow {
                id: rotation_id,
                account_id: account.clone(),
                old_token_id: old.id,
                new_token_id: new_row.id,
                started_at: now,
                started_by: actor.who.clone(),
                deadline,
                finished_at: None,
                outcome: None,
            };
            rotations::insert(&tx, &row)?;
            actor.record(
                &tx,
                now,
                "token.rotate",
                &format!("token:{account}/{}", old.id),
                &format!("rotation={rotation_id} successor={} grace_secs={grace_secs}", new_row.id),
            )?;
            tx.commit()?;
            Ok((row, token))
        })
        .await?;
    let token = Arc::new(token);
    let value = token.expose();
    let notify = Arc::new(Notify::new());
    state.rotations.lock().insert(
        rotation_id,
        Active {
            old_token: row.old_token_id,
            new_token: row.new_token_id,
            successor: Some(token.clone()),
            deadline,
            notify: notify.clone(),
            pushed: HashSet::new(),
        },
    );
    // Every session on the old token now: tracked and sent the successor once. Sessions that
    // register from here on are handled by `on_authenticated`, which sees the rotation.
    let mut told = 0;
    for s in state.registry.on_token(row.old_token_id) {
        let d = pending(&s, now);
        if let Err(e) = state.store.call(move |c| rotations::add_delegate(c, rotation_id, &d)).await {
            tracing::warn!(%rotation_id, error = %e, "cannot track a delegate");
        }
        if state.rotations.push(state, rotation_id, s.session_id) {
            told += 1;
        }
    }
    tracing::info!(%rotation_id, old_token_id = %row.old_token_id, new_token_id = %row.new_token_id, delegates = told, grace_secs, "rotation started");
    tokio::spawn(drive(state.clone(), rotation_id, row.old_token_id, deadline, notify));
    Ok(Started { rotation: row, token: value, delegates: told })
}

fn pending(s: &SessionInfo, now: u64) -> RotationDelegate {
    RotationDelegate {
        instance: s.instance,
        name: s.name.clone(),
        session_id: s.session_id,
        state: "pending".into(),
        outcome: None,
        detail: None,
        updated_at: now,
    }
}

/// Resumes the drivers of unfinished rotations after a restart (the successor's value is
/// gone, so late delegates on the old token cannot be sent `rotate` any more).
pub async fn resume(state: &AppState) -> Result<usize, StoreError> {
    let open = state.store.call(|c| rotations::list(c, true, 10_000)).await?;
    let n = open.len();
    for row in open {
        let notify = Arc::new(Notify::new());
        state.rotations.lock().insert(
            row.id,
            Active {
                old_token: row.old_token_id,
                new_token: row.new_token_id,
                successor: None,
                deadline: row.deadline,
                notify: notify.clone(),
                pushed: HashSet::new(),
            },
        );
        tokio::spawn(drive(state.clone(), row.id, row.old_token_id, row.deadline, notify));
    }
    Ok(n)
}

/// A session authenticated: if its token is a successor, its delegate has moved; if its
/// token is being replaced, send it the successor too.
pub async fn on_authenticated(state: &AppState, info: &SessionInfo) {
    if let Some(rotation_id) = state.rotations.by_new(info.token_id) {
        let (instance, name, now) = (info.instance, info.name.clone(), now_unix());
        let res =
            state.store.call(move |c| rotations::reconnected(c, rotation_id, instance, &name, now)).await;
        if let Err(e) = res {
            tracing::warn!(%rotation_id, error = %e, "cannot record a reconnection");
        }
        state.rotations.notify(rotation_id);
    }
    if let Some((rotation_id, has_successor)) = state.rotations.by_old(info.token_id) {
        let d = pending(info, now_unix());
        if let Err(e) = state.store.call(move |c| rotations::add_delegate(c, rotation_id, &d)).await {
            tracing::warn!(%rotation_id, error = %e, "cannot track a late delegate");
        }
        match has_successor {
            true => {
                state.rotations.push(state, rotation_id, info.session_id);
            }
            false => tracing::warn!(%rotation_id, session_id = %info.session_id,
                "delegate connected with a rotating token after a manager restart; it cannot be sent the successor and will be cut off at the end of the grace window"),
        }
    }
}

/// A delegate acknowledged a rotation. Stale or duplicate acks change nothing harmful.
pub async fn on_ack(
    state: &AppState,
    info: &SessionInfo,
    rotation_id: Uuid,
    outcome: RotateOutcome,
    detail: String,
) {
    let outcome_word = match outcome {
        RotateOutcome::Applied => "applied",
        RotateOutcome::Failed => "failed",
        RotateOutcome::Manual => "manual",
    };
    let mut detail = detail;
    detail.truncate(512);
    let (instance, now) = (info.instance, now_unix());
    let matched = state
        .store
        .call(move |c| {
            let Some(row) = rotations::get(c, rotation_id)? else { return Ok(false) };
            if row.finished_at.is_some() {
                return Ok(false);
            }
            rotations::ack(c, rotation_id, instance, outcome_word, &detail, now)
        })
        .await;
    match matched {
        Ok(true) => {
            tracing::info!(%rotation_id, session_id = %info.session_id, outcome = outcome_word, "rotate ack");
            state.rotations.notify(rotation_id);
        }
        Ok(false) => {
            tracing::debug!(%rotation_id, session_id = %info.session_id, "stale or unknown rotate ack ignored")
        }
        Err(e) => tracing::warn!(%rotation_id, error = %e, "cannot record a rotate ack"),
    }
}

/// A session ended: if its token is being replaced, the rotation may be complete.
pub fn on_session_end(state: &AppState, info: &SessionInfo) {
    if let Some((rotation_id, _)) = state.rotations.by_old(info.token_id) {
        state.rotations.notify(rotation_id);
    }
}

async fn all_moved(state: &AppState, rotation_id: Uuid, old_token: Uuid) -> bool {
    if !state.registry.on_token(old_token).is_empty() {
        return false;
    }
    match state.store.call(move |c| rotations::delegates(c, rotation_id)).await {
        Ok(ds) => ds.iter().all(|d| d.state == "reconnected"),
        Err(_) => false,
    }
}

/// Waits for every delegate to move or for the deadline, then finishes the rotation.
async fn drive(state: AppState, rotation_id: Uuid, old_token: Uuid, deadline: u64, notify: Arc<Notify>) {
    let outcome = loop {
        if all_moved(&state, rotation_id, old_token).await {
            break COMPLETED;
        }
        let left = deadline.saturating_sub(now_unix());
        if left == 0 {
            break GRACE_EXPIRED;
        }
        // Bounded: each wait ends at the deadline at the latest.
        let _ = tokio::time::timeout(Duration::from_secs(left), notify.notified()).await;
    };
    finish(&state, rotation_id, old_token, outcome).await;
}

async fn finish(state: &AppState, rotation_id: Uuid, old_token: Uuid, outcome: &'static str) {
    let now = now_unix();
    let actor = Actor::system(format!("rotation:{rotation_id}"));
    let res = state
        .store
        .call(move |conn| {
            let tx = conn.transaction()?;
            let finished = rotations::finish(&tx, rotation_id, now, outcome)?;
            if let Some(old) = tokens::get(&tx, old_token)? {
                if tokens::revoke(&tx, old_token, now, &actor.who)? {
                    actor.record(
                        &tx,
                        now,
                        "token.revoke",
                        &format!("token:{}/{}", old.account_id, old_token),
                        outcome,
                    )?;
                }
                tokens::set_rotation(&tx, old_token, &old.name, None)?;
            }
            if finished {
                actor.record(&tx, now, "rotation.finish", &format!("rotation:{rotation_id}"), outcome)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await;
    match res {
        Ok(()) => {
            state.rotations.lock().remove(&rotation_id);
            state.metrics.revocations.inc();
            state
                .metrics
                .rotations
                .get_or_create(&crate::metrics::OutcomeLabel { outcome: outcome.to_owned() })
                .inc();
            let kicked = kick(state, old_token, RevokedReason::Revoked);
            tracing::info!(%rotation_id, %old_token, outcome, sessions_closed = kicked, "rotation finished; old token revoked");
        }
        Err(e) => {
            tracing::error!(%rotation_id, error = %e, "cannot finish rotation; it will be retried at the next start")
        }
    }
}
