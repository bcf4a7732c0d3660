//! The delegate's life: pick the token that authenticates (the file's first, then the
//! environment's), keep a session up with backoff between attempts, follow rotations, and
//! stop for good on a signed revoke or expiry (exit 78) or on SIGTERM (exit 0).
//!
//! No hot loop after a fatal exit: the time of the exit and the ids of the tokens that failed
//! are written to `<state dir>/fatal`; a delegate that starts within
//! `TETHER_FATAL_BACKOFF_SECS` (default 60) of it with one of those tokens among its
//! candidates waits out the rest before its first handshake (a different token starts at
//! once). If the state file cannot be written, the delegate sleeps
//! for the backoff before it exits instead.
use std::time::{Duration, Instant};

use tether_protocol::error::Rejection;
use tether_protocol::message::{DelegateInfo, RevokedReason};
use tether_protocol::Token;
use tokio::sync::{mpsc, watch};

use crate::backoff::{self, Backoff};
use crate::config::{ApplyModeSetting, Candidate, Config, TokenSource};
use crate::connection::{self, Connection, Connector};
use crate::docker::container_id::short_id;
use crate::docker::engine::DockerHost;
use crate::logging::shown;
use crate::rotation::{ApplyMode, RotationDone, Rotator};
use crate::session::{self, Ended, SessionContext, SessionEnd};
use crate::state::{unix_now, StateDir};
use crate::token_file;

/// Exit code for a fatal, final token state (EX_CONFIG).
pub const EXIT_FATAL: u8 = 78;
/// Exit code for bad configuration (EX_USAGE): a setting that does not validate, including a
/// `MANAGER_CA_CERT` rustls cannot use (the TLS configuration is built by `Config::load`).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// A session that lasted this long counts as healthy: its loss restarts the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);

/// How the delegate ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM: exit 0.
    Stopped,
    /// Signed revoked/expired: exit 78.
    Fatal,
    /// The configuration does not load (at start, or on a restart after an internal error):
    /// exit 64.
    BadConfig,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Stopped => 0,
            Self::Fatal => EXIT_FATAL,
            Self::BadConfig => EXIT_BAD_CONFIG,
        }
    }
}

/// Resolves the apply mode: kubernetes in a pod (or when required), then docker when the own
/// container is found through the socket, then file when `ACCOUNT_SECRET_FILE` is set, else
/// manual.
pub async fn resolve_mode(config: &Config) -> ApplyMode {
    let k8s = &config.kubernetes;
    let want_k8s = match config.apply_mode {
        ApplyModeSetting::Kubernetes => true,
        ApplyModeSetting::Auto => k8s.in_pod(),
        _ => false,
    };
    if want_k8s {
        match crate::kubernetes::cluster::Cluster::connect(k8s) {
            Ok(cluster) => {
                tracing::info!(
                    ?cluster,
                    "kubernetes mode: a rotation writes the Secret and rolls the workload"
                );
                return ApplyMode::Kubernetes(cluster);
            }
            Err(err) if config.apply_mode == ApplyModeSetting::Kubernetes => {
                tracing::error!(error = %err, "kubernetes mode was requested but is unavailable; rotations will fail");
                return ApplyMode::Unavailable(err.to_string());
            }
            Err(err) => tracing::warn!(error = %err, "running in a pod, but kubernetes mode is unavailable"),
        }
    }
    let want_docker = matches!(config.apply_mode, ApplyModeSetting::Auto | ApplyModeSetting::Docker);
    if want_docker {
        let discovery =
            DockerHost::discover(&config.docker_socket, config.container_id.as_deref(), Some(&config.host));
        match tokio::time::timeout(Duration::from_secs(10), discovery).await {
            Ok(Ok(host)) => return ApplyMode::Docker(host),
            Ok(Err(err)) if config.apply_mode == ApplyModeSetting::Docker => {
                tracing::error!(error = %err, "docker mode was requested but is unavailable; rotations will fail");
                return ApplyMode::Unavailable(err.to_string());
            }
            Err(_) if config.apply_mode == ApplyModeSetting::Docker => {
                return ApplyMode::Unavailable("the Docker engine did not answer within 10 s".into());
            }
            Ok(Err(err @ crate::docker::engine::DockerError::NoSocket(_))) => {
                tracing::debug!(reason = %err, "docker mode unavailable")
            }
            Ok(Err(err)) => {
                tracing::warn!(reason = %err, "a Docker socket is mounted but docker mode is unavailable; rotations fall back to the token file or manual mode")
            }
            Err(_) => tracing::debug!("docker mode unavailable: the engine did not answer"),
        }
    }
    match (config.apply_mode, &config.secret_file) {
        (ApplyModeSetting::Manual, _) => ApplyMode::Manual,
        (_, Some(path)) => ApplyMode::File(path.clone()),
        (_, None) => ApplyMode::Manual,
    }
}

/// Runs the delegate until SIGTERM (`shutdown` turns true) or a fatal token state.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> Exit {
    let started = Instant::now();
    let state = StateDir::new(&config.state_dir);
    state.clear_health();
    let connector = Connector::new(
        config.endpoints.clone(),
        config.tls.clone(),
        config.account_id.clone(),
        delegate_info(&config),
    );
    let mode = resolve_mode(&config).await;
    tracing::info!(manager = %connector.describe(), mode = mode.name(), name = %config.delegate_name, "tether-delegate starting");
    let docker = match &mode {
        ApplyMode::Docker(host) => Some(host.clone()),
        _ => None,
    };
    let (rotator, mut done) =
        Rotator::new(connector.clone(), mode, config.secret_file.clone(), config.replace_timeout);
    if wait_out_fatal_backoff(&config, &state, &mut shutdown).await {
        return Exit::Stopped;
    }
    let (token, conn) = match first_session(&config, &connector, &state, &mut shutdown).await {
        Ok(Some(first)) => first,
        Ok(None) => return Exit::Stopped,
        Err(exit) => return exit,
    };
    if let Some(host) = docker {
        spawn_take_over(host);
    }
    let mut agent = Agent { config: &config, connector: &connector, state: &state, rotator: &rotator, token };
    agent.keep_connected(conn, started, &mut shutdown, &mut done).await
}

/// What the delegate announces in every hello.
fn delegate_info(config: &Config) -> DelegateInfo {
    DelegateInfo {
        name: config.delegate_name.clone(),
        instance: uuid::Uuid::new_v4(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        host: config.host.clone(),
    }
}

/// After a recent fatal exit, waits out the rest of the quiet period; returns whether SIGTERM
/// came first.
async fn wait_out_fatal_backoff(
    config: &Config,
    state: &StateDir,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let ids: Vec<uuid::Uuid> = config.candidates.iter().map(|c| c.token.id()).collect();
    let Some(quiet) = state.fatal_quiet_period(unix_now(), config.fatal_backoff, &ids) else { return false };
    tracing::warn!(
        wait_secs = quiet.as_secs(),
        "the previous run stopped on a revoked or expired token that is still configured; waiting before trying again"
    );
    sleep_or_stop(quiet, shutdown).await
}

/// Docker mode: stops and removes the container this one replaces, if any, in the background.
fn spawn_take_over(host: DockerHost) {
    tokio::spawn(async move {
        match host.take_over().await {
            Ok(Some(old)) => {
                tracing::info!(replaced = %short_id(&old), "took over from the previous container")
            }
            Ok(None) => {}
            Err(err) => tracing::error!(error = %err, "could not take over from the previous container"),
        }
    });
}

/// The reason and message of a signed `revoked`/`expired` reject; `None` for any other error.
fn final_reason(err: &connection::ConnectError) -> Option<(&Rejection, RevokedReason)> {
    let rejection = err.rejection().filter(|r| r.is_final())?;
    let reason = match rejection.code {
        tether_protocol::RejectCode::Expired => RevokedReason::Expired,
        _ => RevokedReason::Revoked,
    };
    Some((rejection, reason))
}

/// The running delegate after its first session: the token in use and what it works with.
struct Agent<'a> {
    config: &'a Config,
    connector: &'a Connector,
    state: &'a StateDir,
    rotator: &'a Rotator,
    token: Token,
}

impl Agent<'_> {
    /// Runs sessions one after another, reconnecting with backoff, until SIGTERM or a fatal
    /// token state.
    async fn keep_connected(
        &mut self,
        mut conn: Connection,
        started: Instant,
        shutdown: &mut watch::Receiver<bool>,
        done: &mut mpsc::Receiver<RotationDone>,
    ) -> Exit {
        let mut backoff = Backoff::default();
        loop {
            self.state.clear_fatal();
            let session_started = Instant::now();
            tracing::info!(session_id = %conn.session.session_id(), token_id = %conn.token_id,
                heartbeat_secs = conn.welcome.heartbeat_secs, token_expires_at = conn.welcome.token_expires_at, "session authenticated");
            let ctx = SessionContext { rotator: self.rotator, state: self.state, started, shutdown, done };
            let delay = match session::run(conn, ctx).await {
                SessionEnd::Ended(Ended::Shutdown) => {
                    tracing::info!("stopped");
                    return Exit::Stopped;
                }
                SessionEnd::Ended(Ended::Fatal { reason, message }) => {
                    return self.fatal(reason, &message, shutdown).await
                }
                SessionEnd::Switch(new_token, next) => {
                    tracing::info!(old_token_id = %self.token.id(), token_id = %new_token.id(), "now using the rotated token");
                    self.token = new_token;
                    conn = *next;
                    continue;
                }
                SessionEnd::Ended(Ended::Goodbye(reason)) => {
                    self.connector.note_goodbye();
                    let delay = backoff::after_goodbye(&mut rand::thread_rng());
                    tracing::info!(
                        ?reason,
                        delay_ms = delay.as_millis() as u64,
                        "the manager said goodbye; reconnecting soon"
                    );
                    delay
                }
                SessionEnd::Ended(lost @ (Ended::Lost(_) | Ended::Switch)) => {
                    let reason = match lost {
                        Ended::Lost(reason) => reason,
                        _ => "switched without a proven session".to_owned(),
                    };
                    // A session that held for a while resets the backoff; one that drops at once
                    // (a manager that accepts and fails) keeps growing it.
                    if session_started.elapsed() >= STABLE_SESSION {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay(&mut rand::thread_rng());
                    tracing::warn!(%reason, delay_ms = delay.as_millis() as u64, "session lost; reconnecting");
                    delay
                }
            };
            conn = match self.reconnect(delay, &mut backoff, shutdown).await {
                Ok(conn) => conn,
                Err(exit) => return exit,
            };
        }
    }

    /// Waits `delay`, then connects until a session is up (backing off between attempts);
    /// `Err` with the exit on SIGTERM or a signed revoked/expired.
    async fn reconnect(
        &self,
        mut delay: Duration,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Connection, Exit> {
        loop {
            if sleep_or_stop(delay, shutdown).await {
                return Err(Exit::Stopped);
            }
            let Some(attempt) = connect_or_stop(self.connector, &self.token, shutdown).await else {
                return Err(Exit::Stopped);
            };
            let err = match attempt {
                Ok(conn) => return Ok(conn),
                Err(err) => err,
            };
            if let Some((rejection, reason)) = final_reason(&err) {
                let message = rejection.message.clone();
                return Err(self.fatal(reason, &message, shutdown).await);
            }
            delay = backoff.next_delay(&mut rand::thread_rng());
            tracing::warn!(error = %shown(&err.to_string()), attempt = backoff.attempts(), delay_ms = delay.as_millis() as u64, "cannot connect; retrying");
        }
    }

    async fn fatal(
        &self,
        reason: RevokedReason,
        message: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Exit {
        fatal(self.config, self.state, self.rotator, &[self.token.id()], reason, message, shutdown).await
    }
}

/// A connection attempt, abandoned at SIGTERM (`None`), so that a manager that does not
/// answer cannot hold up shutdown.
async fn connect_or_stop(
    connector: &Connector,
    token: &Token,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Result<Connection, connection::ConnectError>> {
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => None,
        attempt = connector.connect(token) => Some(attempt),
    }
}

/// Sleeps for `delay` unless SIGTERM comes first; returns whether it did.
async fn sleep_or_stop(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

/// The first session: tries each candidate token in order (the file's, then the
/// environment's); the one that authenticates is kept and written to the token file.
/// Candidates with a signed revoked/expired are dropped; when none is left, the exit is fatal.
async fn first_session(
    config: &Config,
    connector: &Connector,
    state: &StateDir,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<(Token, Connection)>, Exit> {
    let mut candidates: Vec<Candidate> = config
        .candidates
        .iter()
        .map(|c| Candidate { source: c.source.clone(), token: c.token.duplicate() })
        .collect();
    let mut backoff = Backoff::default();
    let mut last_final: Option<(RevokedReason, String)> = None;
    let mut failed: Vec<uuid::Uuid> = Vec::new();
    loop {
        let mut index = 0;
        while let Some(candidate) = candidates.get(index) {
            let Some(attempt) = connect_or_stop(connector, &candidate.token, shutdown).await else {
                return Ok(None);
            };
            match attempt {
                Ok(conn) => {
                    let candidate = candidates.swap_remove(index);
                    seed_token_file(config, &candidate).await;
                    return Ok(Some((candidate.token, conn)));
                }
                Err(err) => {
                    if let Some((rejection, reason)) = final_reason(&err) {
                        tracing::warn!(source = %candidate.source, token_id = %candidate.token.id(), reject = %shown(&rejection.to_string()), "token is no longer valid");
                        last_final = Some((reason, rejection.message.clone()));
                        failed.push(candidate.token.id());
                        candidates.remove(index);
                    } else {
                        tracing::warn!(source = %candidate.source, token_id = %candidate.token.id(), error = %shown(&err.to_string()), "cannot authenticate");
                        index += 1;
                    }
                }
            }
        }
        if candidates.is_empty() {
            let (reason, message) = last_final.unwrap_or((RevokedReason::Revoked, String::new()));
            let (rotator, _) = Rotator::new(connector.clone(), ApplyMode::Manual, None, Duration::ZERO);
            return Err(fatal(config, state, &rotator, &failed, reason, &message, shutdown).await);
        }
        let delay = backoff.next_delay(&mut rand::thread_rng());
        if sleep_or_stop(delay, shutdown).await {
            return Ok(None);
        }
    }
}

/// Writes the authenticated token to the token file when it is not already there.
async fn seed_token_file(config: &Config, candidate: &Candidate) {
    let Some(path) = config.secret_file.clone() else { return };
    if candidate.source == TokenSource::File {
        return;
    }
    if token_file::read(&path).is_some_and(|t| t.same_as(&candidate.token)) {
        return;
    }
    let token = candidate.token.duplicate();
    let result = tokio::task::spawn_blocking(move || token_file::write_atomic(&path, &token)).await;
    match result {
        Ok(Ok(())) => {
            tracing::info!(source = %candidate.source, token_id = %candidate.token.id(), "token file updated with the token that authenticated")
        }
        Ok(Err(err)) => tracing::error!(error = %err, "cannot write ACCOUNT_SECRET_FILE"),
        Err(err) => tracing::error!(error = %err, "cannot write ACCOUNT_SECRET_FILE"),
    }
}

/// Logs what happened and what to do, records the fatal exit of the tokens `failed` (ids),
/// and returns [`Exit::Fatal`].
/// During a container replacement, a revoke of the old token is expected: wait for the
/// successor to stop this container instead.
async fn fatal(
    config: &Config,
    state: &StateDir,
    rotator: &Rotator,
    failed: &[uuid::Uuid],
    reason: RevokedReason,
    message: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Exit {
    state.clear_health();
    let token_ids = failed.iter().map(uuid::Uuid::to_string).collect::<Vec<_>>().join(", ");
    if rotator.has_pending() {
        tracing::info!(token_id = %token_ids, "the old token ended while the successor container takes over; waiting to be stopped");
        if sleep_or_stop(config.replace_timeout, shutdown).await {
            return Exit::Stopped;
        }
    }
    let what = match reason {
        RevokedReason::Revoked => "was revoked",
        RevokedReason::Expired => "has expired",
    };
    tracing::error!(
        token_id = %token_ids,
        manager_message = %shown(message),
        "the delegate token {what}: this delegate cannot connect with it again and stops (exit code 78). \
         What to do: create a new token (or rotate it) on the manager, put its value in ACCOUNT_SECRET \
         (or the file named by ACCOUNT_SECRET_FILE), and restart the delegate. A restart within {} s waits out the rest first.",
        config.fatal_backoff.as_secs()
    );
    if let Err(err) = state.write_fatal(unix_now(), failed) {
        tracing::warn!(error = %err, "cannot record the fatal exit; sleeping before exit instead, so a restart policy does not spin");
        let _ = sleep_or_stop(config.fatal_backoff, shutdown).await;
    }
    Exit::Fatal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(Exit::Stopped.code(), 0);
        assert_eq!(Exit::BadConfig.code(), 64);
        assert_eq!(Exit::Fatal.code(), 78);
    }
}
