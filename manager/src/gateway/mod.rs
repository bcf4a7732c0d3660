//! The delegate WebSocket endpoint `/api/v1/delegates/connect`: upgrade with small buffers,
//! run the v1 handshake ([`handshake`]), then the session: its protocol decisions without
//! sockets or clocks ([`driver`]) and the socket loop that performs them ([`session`]); and
//! the caps and timeouts on connections that have not authenticated ([`connections`]).
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::header::SEC_WEBSOCKET_KEY;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::api::error::AppError;
use crate::state::AppState;

pub mod connections;
pub mod driver;
pub mod handshake;
pub mod ratelimit;
pub mod session;

/// Read buffer of each delegate connection. tungstenite zero-fills and keeps the whole buffer,
/// so it is resident for every idle session; a bigger frame grows it as needed (the frame's
/// header gives its length, and the buffer is reserved for it). A session's frames are a few
/// hundred bytes (a hello ~450, a heartbeat ~150), so 1 KiB holds them; 4 KiB cost 3 KiB per
/// idle session (BENCHMARKS.md, scenario 1), and 512 bytes saved nothing measurable (a hello
/// grows it past 512). The bare baseline uses the same sizes.
const READ_BUFFER: usize = 1024;

/// Frames are gathered up to this size before a write (every send flushes anyway).
const WRITE_BUFFER: usize = 8 * 1024;

/// How long [`close_within`] waits for the peer's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Upgrades to a WebSocket and runs one delegate connection. A request that is not a
/// WebSocket upgrade is answered 400, and any request while draining 503, both in the API's
/// JSON error shape.
pub async fn connect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if state.is_draining() {
        return AppError::Unavailable("manager is shutting down".into()).into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return not_an_upgrade(&e).into_response(),
    };
    if !headers.get(SEC_WEBSOCKET_KEY).is_some_and(|k| is_websocket_key(k.as_bytes())) {
        return AppError::BadRequest(
            "`Sec-WebSocket-Key` must be 16 bytes in base64 (RFC 6455, section 4.1)".into(),
        )
        .into_response();
    }
    let max = state.config.max_frame;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max + WRITE_BUFFER + 1024)
        .max_message_size(max + 1)
        .max_frame_size(max + 1)
        .on_upgrade(move |socket| connection(state, socket, peer))
}

/// The task of one delegate connection: the handshake, then the session. Every idle session
/// keeps this future for its lifetime, so nothing in it is bigger than it must be: the
/// handshake's state is boxed and freed once it is done, and the socket and the session pass
/// through boxed (an upvar, or a local held across an `.await`, keeps its full size in the
/// future even once moved out). `connection_task_size` in the tests below guards its size.
fn connection(state: AppState, socket: WebSocket, peer: SocketAddr) -> impl Future<Output = ()> + Send {
    let socket = Box::new(socket);
    async move {
        if let Some(session) = Box::pin(handshake::run(&state, socket, peer.ip())).await {
            // Authenticated: the connection leaves the caps on unauthenticated connections
            // and its idle timer stops (heartbeats supervise it from now on).
            state.connections.authenticated(peer);
            session::run(&state, session).await;
        }
    }
}

/// Whether `key` is what RFC 6455 asks of a `Sec-WebSocket-Key`: 16 bytes in base64, i.e. 22
/// base64 characters (the last of them holding 2 bits: `A`, `Q`, `g` or `w`) and `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    let base64 = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/');
    match key {
        [head @ .., last, b'=', b'='] if key.len() == 24 => {
            head.iter().all(base64) && matches!(last, b'A' | b'Q' | b'g' | b'w')
        }
        _ => false,
    }
}

/// Why a request to the delegate endpoint is not a WebSocket upgrade it can take.
fn not_an_upgrade(rejection: &WebSocketUpgradeRejection) -> AppError {
    let why = match rejection {
        WebSocketUpgradeRejection::MethodNotGet(_) => "the request is not a GET",
        WebSocketUpgradeRejection::MethodNotConnect(_) => "the request is not an extended CONNECT",
        WebSocketUpgradeRejection::InvalidConnectionHeader(_) => "`Connection: upgrade` is missing",
        WebSocketUpgradeRejection::InvalidUpgradeHeader(_) => "`Upgrade: websocket` is missing",
        WebSocketUpgradeRejection::InvalidProtocolPseudoheader(_) => "the `:protocol` is not `websocket`",
        WebSocketUpgradeRejection::InvalidWebSocketVersionHeader(_) => {
            "`Sec-WebSocket-Version: 13` is missing"
        }
        WebSocketUpgradeRejection::WebSocketKeyHeaderMissing(_) => "`Sec-WebSocket-Key` is missing",
        WebSocketUpgradeRejection::ConnectionNotUpgradable(_) => "this connection cannot be upgraded",
        _ => "the request is not a valid upgrade",
    };
    AppError::BadRequest(format!(
        "this is the delegates' WebSocket endpoint (Tether protocol v1), not a REST resource: {why}"
    ))
}

/// Sends a close frame and waits (bounded) for the peer's close, so the code reaches it. The
/// close frame's write (and whatever is buffered before it) is bounded by `write_timeout`
/// (`session_write_timeout_secs`): a peer that does not read is dropped without the close
/// handshake.
pub(crate) async fn close_within(
    socket: &mut WebSocket,
    code: u16,
    reason: &'static str,
    write_timeout: Duration,
) {
    if send_close(socket, code, reason, write_timeout).await {
        await_peer_close(socket).await;
    }
}

/// The first half of [`close_within`]: sends the close frame (and flushes whatever is buffered
/// before it) within `write_timeout`; whether it went out.
pub(crate) async fn send_close(
    socket: &mut WebSocket,
    code: u16,
    reason: &'static str,
    write_timeout: Duration,
) -> bool {
    let frame = CloseFrame { code, reason: reason.into() };
    matches!(tokio::time::timeout(write_timeout, socket.send(Message::Close(Some(frame)))).await, Ok(Ok(())))
}

/// The second half of [`close_within`]: reads (at most [`CLOSE_WAIT`], at most 16 messages)
/// until the peer's close frame, so the socket is closed cleanly after it.
pub(crate) async fn await_peer_close(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        for _ in 0..16 {
            match socket.recv().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
}

/// Whether a read error means the peer sent a message over the size limit.
pub(crate) fn is_too_big(err: &axum::Error) -> bool {
    let text = err.to_string();
    text.contains("too long") || text.contains("Space limit")
}

/// The delegate WebSocket endpoint (documentation stub for the OpenAPI document).
#[utoipa::path(get, path = "/api/v1/delegates/connect", operation_id = "connect_delegate", tag = "delegates",
    description = "WebSocket upgrade for delegates: Tether wire protocol v1 (binary frames, HMAC-tagged). Authentication is the protocol's handshake, not a bearer token.",
    params(
        ("Connection" = String, Header, description = "`Upgrade`"),
        ("Upgrade" = String, Header, description = "`websocket`"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "16 random bytes in base64 (RFC 6455)"),
    ),
    responses((status = 101, description = "Switching protocols"),
        (status = 400, description = "Not a WebSocket upgrade", body = crate::api::error::ErrorBody),
        (status = 503, description = "Shutting down", body = crate::api::error::ErrorBody)))]
#[allow(dead_code)]
pub(crate) async fn connect_doc() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without running it.
    fn future_size<A, B, C, Fut>(_: impl FnOnce(A, B, C) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every idle session keeps its connection task's future, so its size is part of the
    /// memory per session (BENCHMARKS.md, scenario 1). In a release build it was 4,032 bytes
    /// (the socket and the authenticated session each stored twice, the rotation calls'
    /// store futures inline), then 1,392 (two absorbed HMAC states of 152 bytes, a write's
    /// future inline); 1,096 in a debug build now.
    #[test]
    fn the_connection_task_an_idle_session_keeps_is_small() {
        let task = future_size(connection);
        let session =
            future_size(|s: &'static AppState, a: Box<handshake::Authenticated<'static>>, _: ()| {
                session::run(s, a)
            });
        println!("connection task future: {task} bytes, of which the session loop's: {session} bytes");
        assert!(task <= 1536, "the connection task's future grew to {task} bytes");
    }

    #[test]
    fn websocket_keys_are_16_bytes_in_base64() {
        assert!(is_websocket_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_websocket_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZR==",
            b"dGhlIHNhbXBsZSBub25j*Q==",
            b"==",
            b"x",
        ] {
            assert!(!is_websocket_key(bad), "{bad:?}");
        }
    }
}
