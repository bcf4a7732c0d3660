//! Token rotation: create the successor, push `rotate` to every live delegate on the old
//! token, track each delegate (pending → acked → reconnected), and revoke the old token when
//! every delegate has moved or when the grace window ends, whichever comes first.
//!
//! The successor's value is held in memory while its rotation runs, to seal it for delegates
//! that connect with the old token during the grace window, and in the store sealed under the
//! master key (ChaCha20-Poly1305, bound to the rotation id), so that a manager restarted
//! mid-rotation resumes with it; the sealed copy is wiped when the rotation finishes. Which
//! session was sent `rotate` is recorded with each delegate's progress, so no session is sent
//! the same rotation twice.
//!
//! [`Rotations`] is the rotation service. It owns the handles it needs (the store, the session
//! registry, the master key, its metrics) and the driver task of each running rotation;
//! [`Rotations::shutdown`] stops the drivers and waits for them (the SIGTERM drain). A
//! rotation stopped that way stays unfinished in the store and resumes at the next start.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tether_protocol::message::RotateOutcome;
use tether_protocol::SecretString;
use tether_protocol::Token;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::clock::now_unix;
use crate::cluster::Cluster;
use crate::keys::MasterKey;
use crate::metrics::{Metrics, OutcomeLabel};
use crate::registry::{Registry, SessionCommand, SessionInfo};
use crate::store::audit::Actor;
use crate::store::rotations::{AckOutcome, RotationRow};
use crate::store::tokens::TokenState;
use crate::store::{RotationPlan, Store, StoreError, StoreOps};
use crate::tokens::new_token;

mod drive;
mod policy;
mod rules;

pub use policy::POLICY_ACTOR;
pub use rules::{ack_detail, has_moved, MAX_ACK_DETAIL};
use rules::{acks_from, pending, successor_spec};

/// Why a rotation cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// No such token in the account.
    #[error("token `{token}` in account `{account}` not found")]
    TokenNotFound {
        /// The account.
        account: String,
        /// The token id or name asked for.
        token: String,
    },
    /// The token is already being replaced.
    #[error("token is already rotating (rotation {})", .rotation_id.map(|r| r.to_string()).unwrap_or_default())]
    AlreadyRotating {
        /// The running rotation.
        rotation_id: Option<Uuid>,
    },
    /// A revoked or expired token cannot be rotated.
    #[error("a {} token cannot be rotated", .state.as_str())]
    NotRotatable {
        /// Its state.
        state: TokenState,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The metrics a rotation moves (handles into [`Metrics`]).
#[derive(Debug, Clone)]
pub struct RotationMetrics {
    revocations: Counter,
    finished: Family<OutcomeLabel, Counter>,
    revoke_fanout: Histogram,
}

impl RotationMetrics {
    /// The rotation metrics of `metrics`.
    pub fn of(metrics: &Metrics) -> Self {
        Self {
            revocations: metrics.revocations.clone(),
            finished: metrics.rotations.clone(),
            revoke_fanout: metrics.revoke_fanout.clone(),
        }
    }
}

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

/// The rotation service: rotations in progress and their drivers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Rotations(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Store,
    registry: Registry,
    master: Arc<MasterKey>,
    metrics: RotationMetrics,
    /// Whether this replica holds the jobs lease (finishing rotations, policies), and the
    /// sessions of the other replicas.
    cluster: Cluster,
    active: Mutex<HashMap<Uuid, Active>>,
    drivers: Mutex<JoinSet<()>>,
    /// `true` once [`Rotations::shutdown`] ran: drivers stop waiting and return.
    stop: watch::Sender<bool>,
}

impl AsRef<Rotations> for Rotations {
    fn as_ref(&self) -> &Rotations {
        self
    }
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

/// How many unfinished rotations a start resumes at most.
const RESUME_LIMIT: u32 = 10_000;

impl Rotations {
    /// The service over these handles, with no rotation running.
    pub fn new(
        store: Store,
        registry: Registry,
        master: Arc<MasterKey>,
        metrics: RotationMetrics,
        cluster: Cluster,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            registry,
            master,
            metrics,
            cluster,
            active: Mutex::new(HashMap::new()),
            drivers: Mutex::new(JoinSet::new()),
            stop: watch::Sender::new(false),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Active>> {
        self.0.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drivers(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.0.drivers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self, rotation_id: Uuid) {
        if let Some(a) = self.lock().get(&rotation_id) {
            a.notify.notify_one();
        }
    }

    /// The running rotation whose old token is `token_id`: its id and whether the successor's
    /// value is held (not for a rotation resumed without its stored successor).
    fn by_old(&self, token_id: Uuid) -> Option<(Uuid, bool)> {
        self.lock().iter().find(|(_, a)| a.old_token == token_id).map(|(id, a)| (*id, a.successor.is_some()))
    }

    /// The running rotation whose successor is `token_id`.
    fn by_new(&self, token_id: Uuid) -> Option<Uuid> {
        self.lock().iter().find(|(_, a)| a.new_token == token_id).map(|(id, _)| *id)
    }

    /// Tracks the delegate of `info` in the rotation and sends it `rotate` unless its session
    /// already got it (recorded in the store, so this holds across restarts, and in memory, so
    /// it holds when the store fails). Returns whether it was sent.
    async fn track_and_push(&self, rotation_id: Uuid, info: &SessionInfo, now: u64) -> bool {
        let d = pending(info, now);
        let session = info.session_id;
        let claimed = match self.0.store.claim_rotate_push(rotation_id, d).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(%rotation_id, %session, error = %e, "cannot record a delegate's rotation progress; sending anyway");
                true
            }
        };
        if !claimed {
            return false;
        }
        let mut map = self.lock();
        let Some(active) = map.get_mut(&rotation_id) else { return false };
        let Some(token) = active.successor.clone() else { return false };
        if !active.pushed.insert(session) {
            return false;
        }
        let valid_until = active.deadline;
        drop(map);
        self.0.registry.send(session, SessionCommand::Rotate { rotation_id, token, valid_until })
    }

    /// Tracks `row` as running and starts its driver.
    fn run(&self, row: &RotationRow, successor: Option<Arc<Token>>) {
        let notify = Arc::new(Notify::new());
        self.lock().insert(
            row.id,
            Active {
                old_token: row.old_token_id,
                new_token: row.new_token_id,
                successor,
                deadline: row.deadline,
                notify: notify.clone(),
                pushed: HashSet::new(),
            },
        );
        let (this, stop) = (self.clone(), self.0.stop.subscribe());
        let (rotation_id, old_token, deadline) = (row.id, row.old_token_id, row.deadline);
        let mut drivers = self.drivers();
        // Reap the drivers that have finished, so the set holds only running ones.
        while drivers.try_join_next().is_some() {}
        drivers.spawn(async move { this.drive(rotation_id, old_token, deadline, notify, stop).await });
    }

    /// Starts rotating `token_ref` of `account` with a grace window of `grace_secs`.
    ///
    /// The successor keeps the old token's allowed CIDRs and, unless `expires_in_secs` sets
    /// another, the old token's lifetime counted from now: a token with an expiry never silently
    /// becomes one without.
    pub async fn start(
        &self,
        account: &str,
        token_ref: &str,
        grace_secs: u64,
        expires_in_secs: Option<u64>,
        actor: Actor,
    ) -> Result<Started, RotationError> {
        self.start_as(account, token_ref, grace_secs, expires_in_secs, actor, false).await
    }

    /// [`Rotations::start`]; `by_policy`: only if the token still carries a rotation policy.
    async fn start_as(
        &self,
        account: &str,
        token_ref: &str,
        grace_secs: u64,
        expires_in_secs: Option<u64>,
        actor: Actor,
        by_policy: bool,
    ) -> Result<Started, RotationError> {
        let now = now_unix();
        let rotation_id = Uuid::new_v4();
        let deadline = now + grace_secs;
        let master = &self.0.master;
        let not_found =
            || RotationError::TokenNotFound { account: account.to_owned(), token: token_ref.to_owned() };
        let old = self.0.store.find_token(account, token_ref).await?.ok_or_else(not_found)?;
        match old.state(now) {
            TokenState::Active => {}
            TokenState::Rotating => {
                return Err(RotationError::AlreadyRotating { rotation_id: old.rotation_id })
            }
            state => return Err(RotationError::NotRotatable { state }),
        }
        let spec = successor_spec(&old, expires_in_secs, now);
        let old_new_name =
            format!("{}~{}", old.name, tether_protocol::text::bounded(&old.id.simple().to_string(), 8));
        let (successor, token) = new_token(master, account, &old.name, &spec, &actor, now);
        let row = RotationRow {
            id: rotation_id,
            account_id: account.to_owned(),
            old_token_id: old.id,
            new_token_id: successor.id,
            started_at: now,
            started_by: actor.who.clone(),
            deadline,
            finished_at: None,
            outcome: None,
        };
        let audit = actor.entry(
            now,
            "token.rotate",
            &format!("token:{account}/{}", old.id),
            &format!("rotation={rotation_id} successor={} grace_secs={grace_secs}", successor.id),
        );
        let plan = RotationPlan {
            old: old.clone(),
            old_new_name,
            successor,
            rotation: row.clone(),
            sealed_successor: master.seal_successor(rotation_id, &token),
            audit,
            by_policy,
        };
        if !self.0.store.begin_rotation(plan).await? {
            // The token changed between the read and the write (revoked, rotated or renamed by
            // a concurrent request): say what it is now.
            return Err(match self.0.store.token(old.id).await? {
                Some(now_row) if by_policy && now_row.policy.is_none() => {
                    RotationError::NotRotatable { state: now_row.state(now) }
                }
                Some(now_row) if now_row.state(now) == TokenState::Rotating => {
                    RotationError::AlreadyRotating { rotation_id: now_row.rotation_id }
                }
                Some(now_row) if now_row.state(now) != TokenState::Active => {
                    RotationError::NotRotatable { state: now_row.state(now) }
                }
                _ => not_found(),
            });
        }
        let token = Arc::new(token);
        let value = SecretString::new(token.expose().to_string());
        self.run(&row, Some(token));
        // Every session on the old token now: tracked and sent the successor once. Sessions that
        // register from here on are handled by `on_authenticated`, which sees the rotation.
        let mut told = 0;
        for s in self.0.registry.on_token(row.old_token_id) {
            if self.track_and_push(rotation_id, &s, now).await {
                told += 1;
            }
        }
        tracing::info!(%rotation_id, old_token_id = %row.old_token_id, new_token_id = %row.new_token_id, delegates = told, grace_secs, "rotation started");
        Ok(Started { rotation: row, token: value, delegates: told })
    }

    /// Resumes the drivers of unfinished rotations after a restart, each with its successor
    /// opened from the store, so delegates that reconnect on the old token still receive it. A
    /// rotation whose successor cannot be opened (started by a manager before successors were
    /// stored, or a different master key) runs on to its deadline without one, and says so.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        self.resume_where(|_| true).await
    }

    /// [`Rotations::resume`] of the unfinished rotations this replica does not track yet
    /// (started on another replica of the set).
    pub async fn resume_missing(&self) -> Result<usize, StoreError> {
        self.resume_where(|id| !self.lock().contains_key(&id)).await
    }

    async fn resume_where(&self, wanted: impl Fn(Uuid) -> bool) -> Result<usize, StoreError> {
        let open = self.0.store.unfinished_rotations(RESUME_LIMIT).await?;
        let mut resumed = 0;
        for (row, sealed) in &open {
            let id = row.id;
            if !wanted(id) {
                continue;
            }
            resumed += 1;
            let successor = match sealed {
                Some(sealed) => match self.0.master.open_successor(id, sealed) {
                    Ok(token) if token.id() == row.new_token_id => Some(Arc::new(token)),
                    Ok(_) | Err(_) => {
                        tracing::error!(rotation_id = %id, "the stored successor does not open under this master key; late delegates cannot be sent it");
                        None
                    }
                },
                None => {
                    tracing::warn!(rotation_id = %id, "no stored successor (rotation started by an older manager); late delegates cannot be sent it");
                    None
                }
            };
            tracing::info!(rotation_id = %id, successor = successor.is_some(), deadline = row.deadline, "rotation resumed");
            self.run(row, successor);
        }
        Ok(resumed)
    }

    /// A rotation another replica started: tracked here too (with its successor opened from
    /// the store), and its successor sent to this replica's sessions on the old token.
    pub async fn adopt(&self, rotation_id: Uuid) -> Result<(), StoreError> {
        if !self.lock().contains_key(&rotation_id) {
            self.resume_missing().await?;
        }
        let Some(old_token) = self.lock().get(&rotation_id).map(|a| a.old_token) else {
            // Finished already (or beyond the resume limit): nothing to send.
            return Ok(());
        };
        let now = now_unix();
        let mut told = 0;
        for s in self.0.registry.on_token(old_token) {
            if self.track_and_push(rotation_id, &s, now).await {
                told += 1;
            }
        }
        tracing::info!(%rotation_id, %old_token, delegates = told, "rotation started on another replica; delegates here told");
        Ok(())
    }

    /// A rotation another replica finished: no longer tracked here (its driver returns).
    pub fn forget(&self, rotation_id: Uuid) {
        if let Some(a) = self.lock().remove(&rotation_id) {
            a.notify.notify_one();
            tracing::debug!(%rotation_id, "rotation finished on another replica");
        }
    }

    /// Stops every driver and waits for them: a driver finishing its rotation completes that
    /// first; the others leave their rotation unfinished in the store, to resume at the next
    /// start. Drivers started after this return at once.
    pub async fn shutdown(&self) {
        self.0.stop.send_replace(true);
        let mut drivers = std::mem::take(&mut *self.drivers());
        let running = drivers.len();
        while drivers.join_next().await.is_some() {}
        tracing::info!(drivers = running, "rotation drivers stopped");
    }

    /// A session authenticated: if its token is a successor, its delegate has moved; if its
    /// token is being replaced, send it the successor too.
    pub async fn on_authenticated(&self, info: &SessionInfo) {
        if let Some(rotation_id) = self.by_new(info.token_id) {
            let (instance, name, now) = (info.instance, info.name.clone(), now_unix());
            let res = self.0.store.rotation_reconnected(rotation_id, instance, &name, now).await;
            if let Err(e) = res {
                tracing::warn!(%rotation_id, error = %e, "cannot record a reconnection");
            }
            self.notify(rotation_id);
        }
        if let Some((rotation_id, has_successor)) = self.by_old(info.token_id) {
            if has_successor {
                self.track_and_push(rotation_id, info, now_unix()).await;
            } else {
                let d = pending(info, now_unix());
                if let Err(e) = self.0.store.add_rotation_delegate(rotation_id, d).await {
                    tracing::warn!(%rotation_id, error = %e, "cannot track a late delegate");
                }
                tracing::warn!(%rotation_id, session_id = %info.session_id,
                    "delegate connected with a rotating token whose successor this manager does not hold; it will be cut off at the end of the grace window");
            }
        }
    }

    /// A delegate acknowledged a rotation. Stale or duplicate acks change nothing harmful; an
    /// ack counts only from a session on the rotation's account and its old or new token (a
    /// delegate of another token or account that learnt the ids changes nothing). The detail is
    /// bounded on a character boundary and its control characters are escaped, since operators
    /// read it in a terminal.
    pub async fn on_ack(
        &self,
        info: &SessionInfo,
        rotation_id: Uuid,
        outcome: RotateOutcome,
        detail: String,
    ) {
        let outcome = AckOutcome::from(outcome);
        let detail = ack_detail(&detail);
        let (instance, now) = (info.instance, now_unix());
        let (account, token_id) = (info.account_id.clone(), info.token_id);
        let matched = match self.0.store.rotation(rotation_id).await {
            Ok(Some(row)) if row.finished_at.is_none() && acks_from(&row, &account, token_id) => {
                self.0.store.rotation_ack(rotation_id, instance, outcome, detail, now).await
            }
            Ok(_) => Ok(false),
            Err(e) => Err(e),
        };
        match matched {
            Ok(true) => {
                tracing::info!(%rotation_id, session_id = %info.session_id, outcome = outcome.as_str(), "rotate ack");
                self.notify(rotation_id);
            }
            Ok(false) => {
                tracing::debug!(%rotation_id, session_id = %info.session_id, "stale or unknown rotate ack ignored")
            }
            Err(e) => tracing::warn!(%rotation_id, error = %e, "cannot record a rotate ack"),
        }
    }

    /// A session ended: if its token is being replaced, the rotation may be complete.
    pub fn on_session_end(&self, info: &SessionInfo) {
        if let Some((rotation_id, _)) = self.by_old(info.token_id) {
            self.notify(rotation_id);
        }
    }
}

/// Resumes the unfinished rotations of `service` (an `AppState` or the [`Rotations`] itself).
pub async fn resume(service: &(impl AsRef<Rotations> + Sync)) -> Result<usize, StoreError> {
    service.as_ref().resume().await
}

/// [`Rotations::on_authenticated`] of `service` (an `AppState` or the [`Rotations`] itself).
pub async fn on_authenticated(service: &(impl AsRef<Rotations> + Sync), info: &SessionInfo) {
    service.as_ref().on_authenticated(info).await;
}

/// [`Rotations::on_ack`] of `service` (an `AppState` or the [`Rotations`] itself).
pub async fn on_ack(
    service: &(impl AsRef<Rotations> + Sync),
    info: &SessionInfo,
    rotation_id: Uuid,
    outcome: RotateOutcome,
    detail: String,
) {
    service.as_ref().on_ack(info, rotation_id, outcome, detail).await;
}

/// [`Rotations::on_session_end`] of `service` (an `AppState` or the [`Rotations`] itself).
pub fn on_session_end(service: &impl AsRef<Rotations>, info: &SessionInfo) {
    service.as_ref().on_session_end(info);
}

#[cfg(test)]
mod tests;
