//! Token rotation: create the successor, push `rotate` to every live delegate on the old
//! token, track each delegate (pending → acked → reconnected), and revoke the old token when
//! every delegate has moved or when the grace window ends, whichever comes first.
//!
//! The successor's value is held in memory only while its rotation runs, to seal it for
//! delegates that connect with the old token during the grace window; it never touches disk.
//!
//! [`Rotations`] is the rotation service. It owns the handles it needs (the store, the session
//! registry, the master key, its metrics) and the driver task of each running rotation;
//! [`Rotations::shutdown`] stops the drivers and waits for them (the SIGTERM drain). A
//! rotation stopped that way stays unfinished in the store and resumes at the next start.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tether_protocol::message::{RevokedReason, RotateOutcome};
use tether_protocol::SecretString;
use tether_protocol::Token;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::clock::now_unix;
use crate::keys::MasterKey;
use crate::metrics::{Metrics, OutcomeLabel};
use crate::registry::{Registry, SessionCommand, SessionInfo};
use crate::store::audit::Actor;
use crate::store::rotations::{
    self, AckOutcome, DelegateState, RotationDelegate, RotationOutcome, RotationRow,
};
use crate::store::tokens::{self, TokenState};
use crate::store::{Store, StoreError};
use crate::tokens::{new_token, TokenSpec};

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
}

impl RotationMetrics {
    /// The rotation metrics of `metrics`.
    pub fn of(metrics: &Metrics) -> Self {
        Self { revocations: metrics.revocations.clone(), finished: metrics.rotations.clone() }
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

/// Longest rotate-ack detail kept (bytes, cut on a character boundary).
pub const MAX_ACK_DETAIL: usize = 512;

/// How many unfinished rotations a start resumes at most.
const RESUME_LIMIT: u32 = 10_000;

impl Rotations {
    /// The service over these handles, with no rotation running.
    pub fn new(store: Store, registry: Registry, master: Arc<MasterKey>, metrics: RotationMetrics) -> Self {
        Self(Arc::new(Inner {
            store,
            registry,
            master,
            metrics,
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
    /// value is still held (not after a restart).
    fn by_old(&self, token_id: Uuid) -> Option<(Uuid, bool)> {
        self.lock().iter().find(|(_, a)| a.old_token == token_id).map(|(id, a)| (*id, a.successor.is_some()))
    }

    /// The running rotation whose successor is `token_id`.
    fn by_new(&self, token_id: Uuid) -> Option<Uuid> {
        self.lock().iter().find(|(_, a)| a.new_token == token_id).map(|(id, _)| *id)
    }

    /// Sends `rotate` to `session` unless it already got it. Returns whether it was sent.
    fn push(&self, rotation_id: Uuid, session: Uuid) -> bool {
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
        let now = now_unix();
        let rotation_id = Uuid::new_v4();
        let deadline = now + grace_secs;
        let (account, token_ref) = (account.to_owned(), token_ref.to_owned());
        let master = self.0.master.clone();
        let (row, token) = self
            .0
            .store
            .call(move |conn| {
                let tx = conn.transaction()?;
                let Some(old) = tokens::find(&tx, &account, &token_ref)? else {
                    return Ok(Err(RotationError::TokenNotFound { account, token: token_ref }));
                };
                match old.state(now) {
                    TokenState::Active => {}
                    TokenState::Rotating => {
                        return Ok(Err(RotationError::AlreadyRotating { rotation_id: old.rotation_id }))
                    }
                    state => return Ok(Err(RotationError::NotRotatable { state })),
                }
                let spec = successor_spec(&old, expires_in_secs, now);
                let old_name = format!(
                    "{}~{}",
                    old.name,
                    tether_protocol::text::bounded(&old.id.simple().to_string(), 8)
                );
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
                Ok(Ok((row, token)))
            })
            .await??;
        let token = Arc::new(token);
        let value = SecretString::new(token.expose().to_string());
        self.run(&row, Some(token));
        // Every session on the old token now: tracked and sent the successor once. Sessions that
        // register from here on are handled by `on_authenticated`, which sees the rotation.
        let mut told = 0;
        for s in self.0.registry.on_token(row.old_token_id) {
            let d = pending(&s, now);
            if let Err(e) = self.0.store.call(move |c| rotations::add_delegate(c, rotation_id, &d)).await {
                tracing::warn!(%rotation_id, error = %e, "cannot track a delegate");
            }
            if self.push(rotation_id, s.session_id) {
                told += 1;
            }
        }
        tracing::info!(%rotation_id, old_token_id = %row.old_token_id, new_token_id = %row.new_token_id, delegates = told, grace_secs, "rotation started");
        Ok(Started { rotation: row, token: value, delegates: told })
    }

    /// Resumes the drivers of unfinished rotations after a restart (the successor's value is
    /// gone, so late delegates on the old token cannot be sent `rotate` any more).
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let open = self.0.store.call(|c| rotations::list_unfinished(c, RESUME_LIMIT)).await?;
        for row in &open {
            self.run(row, None);
        }
        Ok(open.len())
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
            let res = self
                .0
                .store
                .call(move |c| rotations::reconnected(c, rotation_id, instance, &name, now))
                .await;
            if let Err(e) = res {
                tracing::warn!(%rotation_id, error = %e, "cannot record a reconnection");
            }
            self.notify(rotation_id);
        }
        if let Some((rotation_id, has_successor)) = self.by_old(info.token_id) {
            let d = pending(info, now_unix());
            if let Err(e) = self.0.store.call(move |c| rotations::add_delegate(c, rotation_id, &d)).await {
                tracing::warn!(%rotation_id, error = %e, "cannot track a late delegate");
            }
            match has_successor {
                true => {
                    self.push(rotation_id, info.session_id);
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
        let matched = self
            .0
            .store
            .call(move |c| {
                let Some(row) = rotations::get(c, rotation_id)? else { return Ok(false) };
                if row.finished_at.is_some() || !acks_from(&row, &account, token_id) {
                    return Ok(false);
                }
                rotations::ack(c, rotation_id, instance, outcome, &detail, now)
            })
            .await;
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

    async fn all_moved(&self, rotation_id: Uuid, old_token: Uuid) -> bool {
        if !self.0.registry.on_token(old_token).is_empty() {
            return false;
        }
        match self.0.store.call(move |c| rotations::delegates(c, rotation_id)).await {
            Ok(ds) => ds.iter().all(|d| d.state == DelegateState::Reconnected),
            Err(_) => false,
        }
    }

    /// Waits for every delegate to move or for the deadline, then finishes the rotation; or
    /// returns, leaving it unfinished, once the service shuts down.
    async fn drive(
        self,
        rotation_id: Uuid,
        old_token: Uuid,
        deadline: u64,
        notify: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        let outcome = loop {
            if *stop.borrow_and_update() {
                tracing::info!(%rotation_id, "rotation left running for the next start (shutdown)");
                return;
            }
            if self.all_moved(rotation_id, old_token).await {
                break RotationOutcome::Completed;
            }
            let left = deadline.saturating_sub(now_unix());
            if left == 0 {
                break RotationOutcome::GraceExpired;
            }
            // Bounded: each wait ends at the deadline at the latest, or at shutdown.
            tokio::select! {
                _ = tokio::time::timeout(Duration::from_secs(left), notify.notified()) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        };
        self.finish(rotation_id, old_token, outcome).await;
    }

    async fn finish(&self, rotation_id: Uuid, old_token: Uuid, outcome: RotationOutcome) {
        let now = now_unix();
        let actor = Actor::system(format!("rotation:{rotation_id}"));
        let res = self
            .0
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
                            outcome.as_str(),
                        )?;
                    }
                    tokens::set_rotation(&tx, old_token, &old.name, None)?;
                }
                if finished {
                    actor.record(
                        &tx,
                        now,
                        "rotation.finish",
                        &format!("rotation:{rotation_id}"),
                        outcome.as_str(),
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await;
        match res {
            Ok(()) => {
                self.lock().remove(&rotation_id);
                self.0.metrics.revocations.inc();
                self.0
                    .metrics
                    .finished
                    .get_or_create(&OutcomeLabel { outcome: outcome.as_str().to_owned() })
                    .inc();
                let kicked = self.0.registry.kick(old_token, RevokedReason::Revoked);
                tracing::info!(%rotation_id, %old_token, outcome = outcome.as_str(), sessions_closed = kicked, "rotation finished; old token revoked");
            }
            Err(e) => {
                tracing::error!(%rotation_id, error = %e, "cannot finish rotation; it will be retried at the next start")
            }
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
        state: DelegateState::Pending,
        outcome: None,
        detail: None,
        updated_at: now,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    fn session(token_id: Uuid) -> SessionInfo {
        SessionInfo {
            session_id: Uuid::new_v4(),
            account_id: "acme".into(),
            token_id,
            name: "d1".into(),
            instance: Uuid::new_v4(),
            host: "h".into(),
            version: "0".into(),
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
            connected_at: 1,
            last_heartbeat: 1,
        }
    }

    fn service(data: &crate::datadir::DataDir, registry: &Registry) -> Rotations {
        let metrics = Metrics::new();
        Rotations::new(
            data.store.clone(),
            registry.clone(),
            data.master.clone(),
            RotationMetrics::of(&metrics),
        )
    }

    #[test]
    fn shutdown_stops_the_drivers_and_leaves_the_rotation_to_resume() {
        // Issue 12, item 6: drivers were spawned with no way to stop them, so a SIGTERM drain
        // could not wait for them and a driver could be cut mid-finish.
        let dir = tempfile::tempdir().unwrap();
        let data = crate::datadir::DataDir::open(dir.path()).unwrap();
        let master = data.master.clone();
        let (_, token, _) = data
            .store
            .call_blocking(|c| {
                crate::tokens::create_account(c, &master, "acme", "acme", &Actor::system("test"), now_unix())
            })
            .unwrap();
        rt().block_on(async {
            // A live delegate on the token that never acks nor moves (grace one hour).
            let registry = Registry::default();
            let _commands = registry.insert(session(token.id));
            let rotations = service(&data, &registry);
            let started =
                rotations.start("acme", "default", 3_600, None, Actor::system("test")).await.unwrap();
            let id = started.rotation.id;
            // A second start is refused with the rotation error, not a store error.
            let old = started.rotation.old_token_id.to_string();
            let again = rotations.start("acme", &old, 3_600, None, Actor::system("test")).await;
            assert!(
                matches!(again, Err(RotationError::AlreadyRotating { rotation_id: Some(r) }) if r == id),
                "{again:?}"
            );
            let missing = rotations.start("acme", "nope", 60, None, Actor::system("test")).await;
            assert!(matches!(missing, Err(RotationError::TokenNotFound { .. })));
            assert_eq!(started.delegates, 1);
            assert_eq!(Arc::strong_count(&rotations.0), 2, "the driver holds the service");
            tokio::time::timeout(Duration::from_secs(10), rotations.shutdown())
                .await
                .expect("shutdown is prompt");
            assert_eq!(Arc::strong_count(&rotations.0), 1, "no driver is left running");
            let row = data.store.call(move |c| rotations::get(c, id)).await.unwrap().unwrap();
            assert_eq!(row.finished_at, None, "a shutdown does not finish the rotation");
            // The next start resumes it.
            let next = service(&data, &registry);
            assert_eq!(next.resume().await.unwrap(), 1);
            tokio::time::timeout(Duration::from_secs(10), next.shutdown()).await.expect("shutdown is prompt");
            // A driver started after shutdown returns at once.
            assert_eq!(next.resume().await.unwrap(), 1);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while Arc::strong_count(&next.0) > 1 {
                assert!(tokio::time::Instant::now() < deadline, "a late driver did not return");
                tokio::task::yield_now().await;
            }
        });
    }

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
