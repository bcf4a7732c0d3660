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
use tether_protocol::SecretString;
use tether_protocol::Token;
use tokio::sync::Notify;
use uuid::Uuid;

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
    /// The successor token string (redacted in `Debug`).
    pub token: SecretString,
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

/// Longest rotate-ack detail kept (bytes, cut on a character boundary).
pub const MAX_ACK_DETAIL: usize = 512;

/// Starts rotating `token_ref` of `account` with a grace window of `grace_secs`.
///
/// The successor keeps the old token's allowed CIDRs and, unless `expires_in_secs` sets
/// another, the old token's lifetime counted from now: a token with an expiry never silently
/// becomes one without.
pub async fn start(
    state: &AppState,
    account: &str,
    token_ref: &str,
    grace_secs: u64,
    expires_in_secs: Option<u64>,
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
            let spec = successor_spec(&old, expires_in_secs, now);
            let old_name =
                format!("{}~{}", old.name, tether_protocol::text::bounded(&old.id.simple().to_string(), 8));
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
    let value = SecretString::new(token.expose().to_string());
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

/// The successor's expiry and CIDRs: the old token's CIDRs; `expires_in_secs` from now when
/// given, else the old token's lifetime (expiry minus creation) from now, else none.
fn successor_spec(old: &tokens::TokenRow, expires_in_secs: Option<u64>, now: u64) -> TokenSpec {
    let lifetime = expires_in_secs.or(old.expires_at.map(|e| e.saturating_sub(old.created_at).max(1)));
    TokenSpec {
        expires_at: lifetime.map(|l| now.saturating_add(l)),
        allowed_cidrs: old.allowed_cidrs.clone(),
    }
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

/// A delegate acknowledged a rotation. Stale or duplicate acks change nothing harmful; an
/// ack counts only from a session on the rotation's account and its old or new token (a
/// delegate of another token or account that learnt the ids changes nothing). The detail is
/// bounded on a character boundary and its control characters are escaped, since operators
/// read it in a terminal.
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
    let detail = ack_detail(&detail);
    let (instance, now) = (info.instance, now_unix());
    let (account, token_id) = (info.account_id.clone(), info.token_id);
    let matched = state
        .store
        .call(move |c| {
            let Some(row) = rotations::get(c, rotation_id)? else { return Ok(false) };
            if row.finished_at.is_some() || !acks_from(&row, &account, token_id) {
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

/// Whether a session of `account` on `token_id` may acknowledge rotation `row`.
fn acks_from(row: &RotationRow, account: &str, token_id: Uuid) -> bool {
    row.account_id == account && (token_id == row.old_token_id || token_id == row.new_token_id)
}

/// A delegate's ack detail as stored: control characters escaped, then bounded.
pub fn ack_detail(detail: &str) -> String {
    let shown = tether_protocol::text::escape_control(detail);
    tether_protocol::text::bounded(&shown, MAX_ACK_DETAIL).to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_details_are_bounded_on_a_character_boundary_and_escaped() {
        // The detail that aborted the manager (issue 10, finding 2).
        let crash = format!("{}é", "x".repeat(511));
        assert_eq!(ack_detail(&crash), "x".repeat(511));
        for tail in ["é", "日", "😀"] {
            for pad in 505..=513 {
                let d = ack_detail(&format!("{}{tail}", "a".repeat(pad)));
                assert!(d.len() <= MAX_ACK_DETAIL);
            }
        }
        let shown = ack_detail("ok\u{1b}[2J\n");
        assert!(!tether_protocol::text::has_control(&ack_detail("a\u{1b}]0;t\u{7}\nb")));
        assert_eq!(shown, "ok\\u{1b}[2J\\u{a}");
    }

    fn row(account: &str, old: u128, new: u128) -> RotationRow {
        RotationRow {
            id: Uuid::from_u128(1),
            account_id: account.into(),
            old_token_id: Uuid::from_u128(old),
            new_token_id: Uuid::from_u128(new),
            started_at: 0,
            started_by: "t".into(),
            deadline: 10,
            finished_at: None,
            outcome: None,
        }
    }

    #[test]
    fn acks_count_only_from_the_rotations_tokens_and_account() {
        let r = row("acme", 10, 11);
        assert!(acks_from(&r, "acme", Uuid::from_u128(10)));
        assert!(acks_from(&r, "acme", Uuid::from_u128(11)));
        assert!(!acks_from(&r, "acme", Uuid::from_u128(12)), "another token of the account");
        assert!(!acks_from(&r, "other", Uuid::from_u128(10)), "another account");
    }

    fn token_row(created_at: u64, expires_at: Option<u64>) -> tokens::TokenRow {
        tokens::TokenRow {
            id: Uuid::from_u128(5),
            account_id: "acme".into(),
            name: "t".into(),
            sealed_key: vec![],
            created_at,
            created_by: "t".into(),
            expires_at,
            allowed_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
            rotation_id: None,
        }
    }

    #[test]
    fn the_successor_keeps_the_lifetime_and_cidrs_of_the_old_token() {
        // Issue 10, finding 4: a rotation used to drop the expiry.
        let old = token_row(1_000, Some(1_000 + 3_600));
        let spec = successor_spec(&old, None, 5_000);
        assert_eq!(spec.expires_at, Some(5_000 + 3_600));
        assert_eq!(spec.allowed_cidrs, old.allowed_cidrs);
        assert_eq!(successor_spec(&old, Some(60), 5_000).expires_at, Some(5_060));
        assert_eq!(successor_spec(&token_row(1_000, None), None, 5_000).expires_at, None);
        assert_eq!(successor_spec(&token_row(1_000, None), Some(7), 5_000).expires_at, Some(5_007));
    }
}
