//! The server side of the v1 handshake over one WebSocket, in the normative order: echoed
//! nonce, token exists in the account, tag (unknown token and bad tag answer alike and take
//! the same time), then state: revoked (4003), expired (4004), IP not allowed (4005), then the
//! caps on live sessions (per token, per account, in total: an unsigned, retryable
//! `rate_limited`, 4029).
//!
//! Each step returns `Result<_, Refusal>`; [`run`] is the one place that answers a refusal
//! (the failure limiter, the metric, the log, the reject and the close, every write bounded by
//! `session_write_timeout_secs`). The session enters the registry through a
//! [`SessionGuard`], so a refusal, a failed welcome or a panic after that point leaves no
//! entry behind.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use tether_protocol::error::close;
use tether_protocol::handshake::server::{unsigned_reject, HelloReceived, ServerHandshake, VerifiedHello};
use tether_protocol::message::Hello;
use tether_protocol::session::ServerSession;
use tether_protocol::{ProtocolError, RejectCode, TokenKey};
use uuid::Uuid;

use crate::clock::now_unix;
use crate::keys;
use crate::registry::{CapHit, Commands, SessionInfo};
use crate::state::AppState;
use crate::store::token_cache::{CachedToken, TOUCH_EVERY_SECS};
use crate::store::tokens::{TokenRow, TokenState};
use crate::store::{StoreError, StoreOps};
use crate::validate::ip_allowed;

use super::session::SessionGuard;
use super::{close_within, is_too_big};

/// An authenticated session, ready for the session loop.
#[derive(Debug)]
pub struct Authenticated<'a> {
    /// The socket.
    pub socket: WebSocket,
    /// The protocol session.
    pub session: ServerSession,
    /// Who is connected: in the registry until the guard is dropped.
    pub guard: SessionGuard<'a>,
    /// The registry's commands for this session.
    pub commands: Commands,
    /// When the token expires.
    pub expires_at: Option<u64>,
}

/// A handshake that passed every check: the welcome is still to be sent.
struct Accepted<'a> {
    session: ServerSession,
    welcome: Vec<u8>,
    guard: SessionGuard<'a>,
    commands: Commands,
    expires_at: Option<u64>,
}

/// What is sent before the close of a refused handshake.
#[derive(Debug)]
enum Reject {
    /// Nothing.
    Nothing,
    /// An unsigned reject (before the tag verified, or the manager's own failure): anyone
    /// could have sent it, so the delegate retries.
    Unsigned(RejectCode, String),
    /// A reject signed with `K_s2c` (after the tag verified): the delegate can trust it.
    Signed(Vec<u8>),
}

/// What the log says about a refusal.
#[derive(Debug)]
enum Log {
    /// Nothing: the metric counts it.
    Quiet,
    /// A hello that does not parse or check (debug: anyone can send one).
    BadHello(String),
    /// A refusal of an authenticated or claimed token.
    Refused(Uuid, RejectCode),
    /// The manager failed, not the delegate: what failed, for which token, and the error.
    Internal(&'static str, Uuid, String),
}

/// Why and how a handshake is refused. Built by the steps, answered by [`refuse`].
#[derive(Debug)]
struct Refusal {
    reject: Reject,
    /// The close code and reason; `None` when the peer is gone (nothing more is written).
    close: Option<(u16, &'static str)>,
    /// Whether it counts against the source address in the failure limiter.
    failure: bool,
    /// The outcome counted in the handshakes metric, if any.
    outcome: Option<RejectCode>,
    log: Log,
}

impl Refusal {
    /// Too many failed handshakes from this address (not itself counted as a failure).
    fn rate_limited() -> Self {
        Self {
            reject: Reject::Unsigned(
                RejectCode::RateLimited,
                "too many failed handshakes from this address; retry later".into(),
            ),
            close: Some((close::RATE_LIMITED, "rate limited")),
            failure: false,
            outcome: Some(RejectCode::RateLimited),
            log: Log::Quiet,
        }
    }

    /// A cap on live sessions is full: the delegate backs off and retries (unsigned, so it is
    /// never final); not a failure of its address. Counted and logged by
    /// [`crate::gateway::connections::ConnectionLimits::session_refused`].
    fn session_cap(hit: CapHit) -> Self {
        let message = match hit {
            CapHit::Token => "too many live sessions on this token; retry later",
            CapHit::Account => "too many live sessions in this account; retry later",
            CapHit::Total => "the manager holds as many delegate sessions as it can; retry later",
        };
        Self {
            reject: Reject::Unsigned(RejectCode::RateLimited, message.into()),
            close: Some((close::RATE_LIMITED, "rate limited")),
            failure: false,
            outcome: Some(RejectCode::RateLimited),
            log: Log::Quiet,
        }
    }

    /// This replica cannot reach its database (it fails closed) or has not caught up with the
    /// change log yet: unsigned and retryable, so the delegate goes to another replica; never
    /// a signed, final reject because of a database error.
    fn unavailable() -> Self {
        Self {
            reject: Reject::Unsigned(
                RejectCode::RateLimited,
                "this manager cannot reach its database; try another replica or retry later".into(),
            ),
            close: Some((close::RATE_LIMITED, "unavailable")),
            failure: false,
            outcome: Some(RejectCode::RateLimited),
            log: Log::Quiet,
        }
    }

    /// A write to the peer failed: it is gone.
    fn gone() -> Self {
        Self { reject: Reject::Nothing, close: None, failure: false, outcome: None, log: Log::Quiet }
    }

    /// No hello arrived: closed, timed out, too big or not binary.
    fn no_hello(code: u16, reason: &'static str) -> Self {
        Self {
            reject: Reject::Nothing,
            close: Some((code, reason)),
            failure: true,
            outcome: Some(RejectCode::Protocol),
            log: Log::Quiet,
        }
    }

    /// The hello does not parse or check (nonce, time, version, size, fields).
    fn bad_hello(e: ProtocolError) -> Self {
        Self {
            reject: Reject::Unsigned(e.reject_code(), e.to_string()),
            close: Some((e.close_code(), "handshake failed")),
            failure: true,
            outcome: Some(e.reject_code()),
            log: Log::BadHello(e.to_string()),
        }
    }

    /// Unknown token or bad tag, answered alike.
    fn auth_failed(token_id: Uuid) -> Self {
        Self {
            reject: Reject::Unsigned(
                RejectCode::AuthFailed,
                "authentication failed: unknown token or bad tag".into(),
            ),
            close: Some((close::AUTH_FAILED, "auth failed")),
            failure: true,
            outcome: Some(RejectCode::AuthFailed),
            log: Log::Refused(token_id, RejectCode::AuthFailed),
        }
    }

    /// A verified hello whose token may not connect: a signed reject.
    fn signed(verified: VerifiedHello, code: RejectCode, message: &'static str) -> Self {
        let token_id = verified.hello().token_id;
        Self {
            reject: Reject::Signed(verified.reject(code, message)),
            close: Some((code.close_code(), "refused")),
            failure: true,
            outcome: Some(code),
            log: Log::Refused(token_id, code),
        }
    }

    /// The store failed: not the delegate's fault, so an unsigned reject it retries with
    /// backoff, and no failure counted against its address.
    fn internal(what: &'static str, token_id: Uuid, e: StoreError) -> Self {
        Self {
            reject: Reject::Unsigned(RejectCode::Protocol, "manager error; retry later".into()),
            close: Some((close::PROTOCOL, "internal error")),
            failure: false,
            outcome: None,
            log: Log::Internal(what, token_id, e.to_string()),
        }
    }
}

/// Runs the handshake; `None` when it failed (the socket is closed with the right code).
///
/// The socket comes boxed and the session goes out boxed: an `async fn` keeps its arguments'
/// storage for its whole life, and the caller's future keeps the result's, so passing them by
/// value would add their size (~1.3 KiB) to every idle session's task.
pub async fn run(state: &AppState, socket: Box<WebSocket>, ip: IpAddr) -> Option<Box<Authenticated<'_>>> {
    let mut socket = *socket;
    let write_timeout = Duration::from_secs(state.config.session_write_timeout_secs);
    let started = Instant::now();
    // A slot for this address is reserved before the challenge and held until this function
    // returns: attempts in flight count against the limit with the failures, so concurrent
    // attempts cannot overshoot it; a success releases the slot uncounted.
    let attempt = state.limiter.try_begin(ip, now_unix());
    let accepted = match attempt {
        None => Err(Refusal::rate_limited()),
        Some(_) if !state.cluster.accepting() => Err(Refusal::unavailable()),
        Some(_) => authenticate(state, &mut socket, ip, write_timeout).await,
    };
    let Accepted { session, welcome, guard, commands, expires_at } = match accepted {
        Ok(accepted) => accepted,
        Err(refusal) => {
            // Count the failure and end the attempt before the peer hears the answer: a client
            // that retries once it has read the reject must not find this attempt still in
            // flight beside its counted failure (that counted it twice).
            if refusal.failure {
                state.limiter.record_failure(ip, now_unix());
            }
            drop(attempt);
            state.metrics.handshake_latency(false, started.elapsed());
            refuse(state, &mut socket, ip, refusal, write_timeout).await;
            return None;
        }
    };
    // A welcome that cannot be written drops the guard: the registry forgets the session.
    write(&mut socket, welcome, write_timeout).await.ok()?;
    state.metrics.handshake("ok");
    state.metrics.handshake_latency(true, started.elapsed());
    let info = &guard.info;
    tracing::info!(session_id = %info.session_id, token_id = %info.token_id, account = %info.account_id,
        delegate = %info.name, %ip, "delegate connected");
    Some(Box::new(Authenticated { socket, session, guard, commands, expires_at }))
}

/// The steps, in the normative order, up to the welcome.
async fn authenticate<'a>(
    state: &'a AppState,
    socket: &mut WebSocket,
    ip: IpAddr,
    write_timeout: Duration,
) -> Result<Accepted<'a>, Refusal> {
    let (hs, challenge) = ServerHandshake::new(keys::random32(), now_unix(), state.config.max_frame);
    write(socket, challenge, write_timeout).await?;
    let bytes = read_hello(socket, state.config.hello_timeout_secs).await?;
    let received = hs.receive_hello(&bytes, now_unix()).map_err(Refusal::bad_hello)?;
    let Lookup { row, key, cached, generation } = lookup(state, received.hello()).await?;
    let (verified, row) = verify(received, key.as_deref(), row)?;
    if let (false, Some(key)) = (cached, key) {
        // Only a token whose tag verified is cached: no one without a token can fill it.
        let touched_at = 0;
        state.store.token_cache().insert(generation, CachedToken { row: row.clone(), key, touched_at });
    }
    let now = now_unix();
    if let Some((code, message)) = refusal_of(row.state(now), ip_allowed(&row.allowed_cidrs, ip)) {
        return Err(Refusal::signed(verified, code, message));
    }
    let hello = verified.hello();
    let session_id = Uuid::new_v4();
    let info = SessionInfo {
        session_id,
        account_id: row.account_id.clone(),
        token_id: row.id,
        name: truncated(&hello.delegate.name),
        instance: hello.delegate.instance,
        host: truncated(&hello.delegate.host),
        version: truncated(&hello.delegate.version),
        ip,
        connected_at: now,
        last_heartbeat: now,
    };
    // Register before the welcome, then re-read the token: a revoke that commits from here on
    // finds this session in the registry, and one that committed since the first read is seen.
    // Every return from here drops the guard, which takes the session out again. A full cap
    // on live sessions (per token, per account, or the global one fitted to the open-file
    // limit) is checked in the same step: an unsigned, retryable `rate_limited`.
    let caps = state.connections.session_caps();
    let (account, token_id) = (info.account_id.clone(), info.token_id);
    let (guard, commands) = match SessionGuard::try_register(state, info, &caps) {
        Ok(registered) => registered,
        Err(hit) => {
            state.connections.session_refused(hit, token_id, &account);
            return Err(Refusal::session_cap(hit));
        }
    };
    if !state.cluster.accepting() {
        // The replica failed closed while this handshake ran.
        return Err(Refusal::unavailable());
    }
    if let Some((code, message)) = late_refusal_of(recheck(state, row.id, now).await?) {
        return Err(Refusal::signed(verified, code, message));
    }
    let (session, welcome) = verified.accept(session_id, state.config.heartbeat_secs, row.expires_at);
    Ok(Accepted { session, welcome, guard, commands, expires_at: row.expires_at })
}

/// The token of the hello's account and its key: from the handshake's token cache, or opened
/// from the store (a dummy open for an unknown token, so both take the same time).
async fn lookup(state: &AppState, hello: &Hello) -> Result<Lookup, Refusal> {
    let token_id = hello.token_id;
    let cache = state.store.token_cache();
    if let Some(cached) = state.cluster.feed_current().then(|| cache.get(token_id)).flatten() {
        if cached.row.account_id == hello.account_id {
            return Ok(Lookup { row: Some(cached.row), key: Some(cached.key), cached: true, generation: 0 });
        }
    }
    // Taken before the read: a token change committed meanwhile keeps this row out of the cache.
    let generation = cache.generation();
    let row = state
        .store
        .token(token_id)
        .await
        .map_err(|e| Refusal::internal("token lookup failed during handshake", token_id, e))?
        .filter(|t| t.account_id == hello.account_id);
    let key = match &row {
        Some(t) => state.master.open(t.id, &t.sealed_key).ok().map(Arc::new),
        None => {
            state.master.dummy_open();
            None
        }
    };
    Ok(Lookup { row, key, cached: false, generation })
}

/// What [`lookup`] found.
struct Lookup {
    row: Option<TokenRow>,
    key: Option<Arc<TokenKey>>,
    /// Whether it came from the cache.
    cached: bool,
    /// The cache's generation before the store was read (when not cached).
    generation: u64,
}

/// The tag under the token's key; an unknown token and a bad tag are refused alike.
fn verify(
    received: HelloReceived,
    key: Option<&TokenKey>,
    row: Option<TokenRow>,
) -> Result<(VerifiedHello, TokenRow), Refusal> {
    let token_id = received.hello().token_id;
    match (received.verify(key), row) {
        (Ok(verified), Some(row)) => Ok((verified, row)),
        _ => Err(Refusal::auth_failed(token_id)),
    }
}

/// Records the last use (best effort) and re-reads the token's state: from the token cache
/// when this manager recorded the token's use within [`TOUCH_EVERY_SECS`] (the cache is
/// emptied by every token change, and this session is registered already, so a revoke that
/// has not emptied it yet will find the session when it fans out), otherwise from the store.
async fn recheck(state: &AppState, token_id: Uuid, now: u64) -> Result<Option<TokenState>, Refusal> {
    let cache = state.store.token_cache();
    let cached = cache.get(token_id);
    let fresh = |c: &&CachedToken| now.saturating_sub(c.touched_at) < TOUCH_EVERY_SECS;
    if let Some(cached) = cached.as_ref().filter(fresh).filter(|_| state.cluster.feed_current()) {
        return Ok(Some(cached.row.state(now)));
    }
    let generation = cache.generation();
    // Recording the last use is best effort: a database that cannot be written (full disk,
    // read-only, locked) must not turn into a refusal, let alone a signed, final `revoked`.
    let row = state
        .store
        .touch_token(token_id, now)
        .await
        .map_err(|e| Refusal::internal("token re-read failed during handshake", token_id, e))?;
    if let (Some(row), Some(cached)) = (&row, cached) {
        cache.insert(generation, CachedToken { row: row.clone(), key: cached.key, touched_at: now });
    }
    Ok(row.map(|t| t.state(now)))
}

const REVOKED: &str = "this token was revoked; use a valid token";
const EXPIRED: &str = "this token expired; create a new token";
const IP_NOT_ALLOWED: &str = "this source address is not in the token's allowed CIDRs";

/// The signed reject for a verified token's state, in the normative order: revoked, expired,
/// then the source address.
fn refusal_of(state: TokenState, address_allowed: bool) -> Option<(RejectCode, &'static str)> {
    match state {
        TokenState::Revoked => Some((RejectCode::Revoked, REVOKED)),
        TokenState::Expired => Some((RejectCode::Expired, EXPIRED)),
        _ if !address_allowed => Some((RejectCode::IpNotAllowed, IP_NOT_ALLOWED)),
        _ => None,
    }
}

/// The signed reject for the token's state re-read after registering; `None` (deleted since
/// the first read) counts as revoked, since only a revoked token can be deleted.
fn late_refusal_of(state: Option<TokenState>) -> Option<(RejectCode, &'static str)> {
    match state {
        Some(TokenState::Active | TokenState::Rotating) => None,
        Some(TokenState::Expired) => Some((RejectCode::Expired, EXPIRED)),
        Some(TokenState::Revoked) | None => Some((RejectCode::Revoked, REVOKED)),
    }
}

/// Answers a refusal (already counted in the limiter): metric, log, then the reject and the
/// close, each write bounded.
async fn refuse(
    state: &AppState,
    socket: &mut WebSocket,
    ip: IpAddr,
    refusal: Refusal,
    write_timeout: Duration,
) {
    let Refusal { reject, close, failure: _, outcome, log } = refusal;
    if let Some(outcome) = outcome {
        state.metrics.handshake(outcome.as_str());
    }
    match log {
        Log::Quiet => {}
        Log::BadHello(e) => tracing::debug!(%ip, error = %e, "bad hello"),
        Log::Refused(token_id, code) => {
            tracing::info!(%ip, %token_id, code = code.as_str(), "handshake refused")
        }
        Log::Internal(what, token_id, e) => tracing::error!(%ip, %token_id, error = %e, "{what}"),
    }
    let Some((code, reason)) = close else { return };
    let frame = match reject {
        Reject::Nothing => None,
        Reject::Unsigned(code, message) => Some(unsigned_reject(code, message)),
        Reject::Signed(frame) => Some(frame),
    };
    if let Some(frame) = frame {
        // Buffered: the close that follows flushes both in one write.
        let fed = tokio::time::timeout(write_timeout, socket.feed(Message::Binary(frame.into()))).await;
        if !matches!(fed, Ok(Ok(()))) {
            return;
        }
    }
    close_within(socket, code, reason, write_timeout).await;
}

/// Sends one frame within `within`.
async fn write(socket: &mut WebSocket, frame: Vec<u8>, within: Duration) -> Result<(), Refusal> {
    match tokio::time::timeout(within, socket.send(Message::Binary(frame.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(Refusal::gone()),
    }
}

/// A delegate-supplied field as kept in the registry: at most 128 characters (control
/// characters were refused by the protocol crate's hello check).
fn truncated(s: &str) -> String {
    tether_protocol::text::bounded_chars(s, 128).to_owned()
}

/// The hello, within `hello_timeout_secs`; pings and pongs before it are skipped.
async fn read_hello(socket: &mut WebSocket, timeout_secs: u64) -> Result<Vec<u8>, Refusal> {
    let read = async {
        // Bounded: pings and pongs are skipped, at most a handful.
        for _ in 0..8 {
            match socket.recv().await {
                Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Text(_))) => return Err((close::PROTOCOL, "binary frames only")),
                Some(Ok(Message::Close(_))) | None => return Err((close::NORMAL, "closed")),
                Some(Err(e)) if is_too_big(&e) => return Err((close::TOO_BIG, "frame too big")),
                Some(Err(_)) => return Err((close::PROTOCOL, "read error")),
            }
        }
        Err((close::PROTOCOL, "expected hello"))
    };
    let read = match tokio::time::timeout(Duration::from_secs(timeout_secs), read).await {
        Ok(read) => read,
        Err(_) => Err((close::PROTOCOL, "hello timeout")),
    };
    read.map_err(|(code, reason)| Refusal::no_hello(code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_tokens_state_is_checked_in_the_normative_order() {
        let code = |state, allowed| refusal_of(state, allowed).map(|(code, _)| code);
        assert_eq!(code(TokenState::Revoked, false), Some(RejectCode::Revoked));
        assert_eq!(code(TokenState::Expired, false), Some(RejectCode::Expired));
        assert_eq!(code(TokenState::Active, false), Some(RejectCode::IpNotAllowed));
        assert_eq!(code(TokenState::Rotating, false), Some(RejectCode::IpNotAllowed));
        assert_eq!(code(TokenState::Active, true), None);
        assert_eq!(code(TokenState::Rotating, true), None);
    }

    #[test]
    fn a_token_deleted_or_revoked_during_the_handshake_is_refused_as_revoked() {
        let code = |state| late_refusal_of(state).map(|(code, _)| code);
        assert_eq!(code(None), Some(RejectCode::Revoked));
        assert_eq!(code(Some(TokenState::Revoked)), Some(RejectCode::Revoked));
        assert_eq!(code(Some(TokenState::Expired)), Some(RejectCode::Expired));
        assert_eq!(code(Some(TokenState::Active)), None);
    }

    #[test]
    fn refusals_before_the_tag_count_as_failures_and_the_managers_own_do_not() {
        assert!(!Refusal::rate_limited().failure, "a rate-limited attempt is not a new failure");
        assert!(Refusal::no_hello(close::NORMAL, "closed").failure);
        assert!(Refusal::auth_failed(Uuid::nil()).failure);
        let internal = Refusal::internal("x", Uuid::nil(), StoreError::Task);
        assert!(!internal.failure && internal.outcome.is_none());
        assert!(matches!(internal.reject, Reject::Unsigned(RejectCode::Protocol, _)));
        assert_eq!(internal.close, Some((close::PROTOCOL, "internal error")));
    }

    #[test]
    fn a_full_session_cap_is_an_unsigned_retryable_rate_limited() {
        for hit in [CapHit::Token, CapHit::Account, CapHit::Total] {
            let refusal = Refusal::session_cap(hit);
            assert!(!refusal.failure, "not counted against the delegate's address");
            assert!(matches!(refusal.reject, Reject::Unsigned(RejectCode::RateLimited, _)));
            assert_eq!(refusal.close, Some((close::RATE_LIMITED, "rate limited")));
            assert_eq!(refusal.outcome, Some(RejectCode::RateLimited));
        }
    }
}
