//! The server side of the v1 handshake over one WebSocket, in the normative order: echoed
//! nonce, token exists in the account, tag (unknown token and bad tag answer alike and take
//! the same time), then state: revoked (4003), expired (4004), IP not allowed (4005).
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use tether_protocol::error::close;
use tether_protocol::handshake::server::{unsigned_reject, ServerHandshake};
use tether_protocol::session::ServerSession;
use tether_protocol::RejectCode;
use uuid::Uuid;

use crate::clock::now_unix;
use crate::keys;
use crate::registry::SessionInfo;
use crate::state::AppState;
use crate::store::tokens::{self, TokenState};
use crate::validate::ip_allowed;

use super::{close as close_ws, is_too_big};

/// An authenticated session, ready for the session loop.
#[derive(Debug)]
pub struct Authenticated {
    /// The socket.
    pub socket: WebSocket,
    /// The protocol session.
    pub session: ServerSession,
    /// Who is connected (already in the registry).
    pub info: SessionInfo,
    /// The registry's commands for this session.
    pub commands: crate::registry::Commands,
    /// When the token expires.
    pub expires_at: Option<u64>,
}

/// Runs the handshake; `None` when it failed (the socket is closed with the right code).
pub async fn run(state: &AppState, mut socket: WebSocket, ip: IpAddr) -> Option<Authenticated> {
    let now = now_unix();
    // A slot for this address is reserved before the challenge and held until this function
    // returns: attempts in flight count against the limit with the failures (`fail`), so
    // concurrent attempts cannot overshoot it; a success releases the slot uncounted.
    let Some(_attempt) = state.limiter.try_begin(ip, now) else {
        state.metrics.handshake(RejectCode::RateLimited.as_str());
        let reject = unsigned_reject(
            RejectCode::RateLimited,
            "too many failed handshakes from this address; retry later",
        );
        let _ = socket.feed(Message::Binary(reject.into())).await;
        close_ws(&mut socket, close::RATE_LIMITED, "rate limited").await;
        return None;
    };
    let (hs, challenge) = ServerHandshake::new(keys::random32(), now, state.config.max_frame);
    if socket.send(Message::Binary(challenge.into())).await.is_err() {
        return None;
    }
    let bytes = match read_hello(&mut socket, state.config.hello_timeout_secs).await {
        Ok(bytes) => bytes,
        Err((code, reason)) => {
            fail(state, ip, "protocol");
            close_ws(&mut socket, code, reason).await;
            return None;
        }
    };
    let received = match hs.receive_hello(&bytes, now_unix()) {
        Ok(r) => r,
        Err(e) => {
            fail(state, ip, e.reject_code().as_str());
            tracing::debug!(%ip, error = %e, "bad hello");
            let _ =
                socket.send(Message::Binary(unsigned_reject(e.reject_code(), e.to_string()).into())).await;
            close_ws(&mut socket, e.close_code(), "handshake failed").await;
            return None;
        }
    };
    let hello = received.hello().clone();
    let (token_id, account) = (hello.token_id, hello.account_id.clone());
    let master = state.master.clone();
    let lookup = state
        .store
        .call(move |c| {
            let row = tokens::get(c, token_id)?.filter(|t| t.account_id == account);
            let key = match &row {
                Some(t) => master.open(t.id, &t.sealed_key).ok(),
                None => {
                    master.dummy_open();
                    None
                }
            };
            Ok((row, key))
        })
        .await;
    let (row, key) = match lookup {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "token lookup failed during handshake");
            let _ = socket
                .send(Message::Binary(
                    unsigned_reject(RejectCode::Protocol, "manager error; retry later").into(),
                ))
                .await;
            close_ws(&mut socket, close::PROTOCOL, "internal error").await;
            return None;
        }
    };
    let verified = match received.verify(key.as_ref()) {
        Ok(v) => v,
        Err(_) => {
            fail(state, ip, RejectCode::AuthFailed.as_str());
            tracing::info!(%ip, %token_id, "handshake refused: auth_failed");
            let frame =
                unsigned_reject(RejectCode::AuthFailed, "authentication failed: unknown token or bad tag");
            let _ = socket.feed(Message::Binary(frame.into())).await;
            close_ws(&mut socket, close::AUTH_FAILED, "auth failed").await;
            return None;
        }
    };
    let row = row.expect("a verified hello has a token row");
    let now = now_unix();
    let refusal = match row.state(now) {
        TokenState::Revoked => Some((RejectCode::Revoked, "this token was revoked; use a valid token")),
        TokenState::Expired => Some((RejectCode::Expired, "this token expired; create a new token")),
        _ if !ip_allowed(&row.allowed_cidrs, ip) => {
            Some((RejectCode::IpNotAllowed, "this source address is not in the token's allowed CIDRs"))
        }
        _ => None,
    };
    if let Some((code, message)) = refusal {
        fail(state, ip, code.as_str());
        tracing::info!(%ip, %token_id, code = code.as_str(), "handshake refused");
        let _ = socket.feed(Message::Binary(verified.reject(code, message).into())).await;
        close_ws(&mut socket, code.close_code(), "refused").await;
        return None;
    }
    let session_id = Uuid::new_v4();
    let info = SessionInfo {
        session_id,
        account_id: row.account_id.clone(),
        token_id,
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
    let commands = state.registry.insert(info.clone());
    // Recording the last use is best effort: a database that cannot be written (full disk,
    // read-only, locked) must not turn into a refusal, let alone a signed, final `revoked`.
    let recheck = state
        .store
        .call(move |c| {
            if let Err(e) = tokens::touch(c, token_id, now) {
                tracing::warn!(%token_id, error = %e, "could not record the token's last use");
            }
            Ok(tokens::get(c, token_id)?.map(|t| t.state(now)))
        })
        .await;
    let late_refusal = match recheck {
        Ok(Some(TokenState::Active | TokenState::Rotating)) => None,
        Ok(Some(TokenState::Expired)) => {
            Some((RejectCode::Expired, "this token expired; create a new token"))
        }
        // Revoked, or deleted (only a revoked token can be deleted) since the first read.
        Ok(Some(TokenState::Revoked) | None) => {
            Some((RejectCode::Revoked, "this token was revoked; use a valid token"))
        }
        Err(e) => {
            // Not the delegate's fault: an unsigned reject, which it retries with backoff.
            tracing::error!(%token_id, error = %e, "token re-read failed during handshake");
            state.registry.remove(session_id);
            let reject = unsigned_reject(RejectCode::Protocol, "manager error; retry later");
            let _ = socket.send(Message::Binary(reject.into())).await;
            close_ws(&mut socket, close::PROTOCOL, "internal error").await;
            return None;
        }
    };
    if let Some((code, message)) = late_refusal {
        state.registry.remove(session_id);
        fail(state, ip, code.as_str());
        let _ = socket.feed(Message::Binary(verified.reject(code, message).into())).await;
        close_ws(&mut socket, code.close_code(), "refused").await;
        return None;
    }
    let (session, welcome) = verified.accept(session_id, state.config.heartbeat_secs, row.expires_at);
    if socket.send(Message::Binary(welcome.into())).await.is_err() {
        state.registry.remove(session_id);
        return None;
    }
    state.metrics.handshake("ok");
    tracing::info!(%session_id, %token_id, account = %info.account_id, delegate = %info.name, %ip, "delegate connected");
    Some(Authenticated { socket, session, info, commands, expires_at: row.expires_at })
}

/// A delegate-supplied field as kept in the registry: at most 128 characters (control
/// characters were refused by the protocol crate's hello check).
fn truncated(s: &str) -> String {
    tether_protocol::text::bounded_chars(s, 128).to_owned()
}

fn fail(state: &AppState, ip: IpAddr, outcome: &str) {
    state.limiter.record_failure(ip, now_unix());
    state.metrics.handshake(outcome);
}

async fn read_hello(socket: &mut WebSocket, timeout_secs: u64) -> Result<Vec<u8>, (u16, &'static str)> {
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
    match tokio::time::timeout(Duration::from_secs(timeout_secs), read).await {
        Ok(r) => r,
        Err(_) => Err((close::PROTOCOL, "hello timeout")),
    }
}
