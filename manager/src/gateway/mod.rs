//! The delegate WebSocket endpoint `/api/v1/delegates/connect`: upgrade with small buffers,
//! run the v1 handshake ([`handshake`]), then the session: its protocol decisions without
//! sockets or clocks ([`driver`]) and the socket loop that performs them ([`session`]); and
//! the caps and timeouts on connections that have not authenticated ([`connections`]).
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub mod connections;
pub mod driver;
pub mod handshake;
pub mod ratelimit;
pub mod session;

/// Read buffer of each delegate connection. tungstenite zero-fills and keeps the whole buffer,
/// so it is resident for every idle session; a bigger frame grows it as needed.
const READ_BUFFER: usize = 4 * 1024;

/// Frames are gathered up to this size before a write (every send flushes anyway).
const WRITE_BUFFER: usize = 8 * 1024;

/// How long [`close_within`] waits for the peer's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Upgrades to a WebSocket and runs one delegate connection.
pub async fn connect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "manager is shutting down").into_response();
    }
    let max = state.config.max_frame;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max + WRITE_BUFFER + 1024)
        .max_message_size(max + 1)
        .max_frame_size(max + 1)
        .on_upgrade(move |socket| async move {
            // Boxed: the handshake's state is freed once it is done instead of sizing the
            // future every idle session keeps.
            if let Some(session) = Box::pin(handshake::run(&state, socket, peer.ip())).await {
                // Authenticated: the connection leaves the caps on unauthenticated connections
                // and its idle timer stops (heartbeats supervise it from now on).
                state.connections.authenticated(peer);
                session::run(&state, session).await;
            }
        })
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
    let frame = CloseFrame { code, reason: reason.into() };
    match tokio::time::timeout(write_timeout, socket.send(Message::Close(Some(frame)))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => return,
    }
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
#[utoipa::path(get, path = "/api/v1/delegates/connect", tag = "delegates",
    description = "WebSocket upgrade for delegates: Tether wire protocol v1 (binary frames, HMAC-tagged). Authentication is the protocol's handshake, not a bearer token.",
    responses((status = 101, description = "Switching protocols"), (status = 503, description = "Shutting down")))]
#[allow(dead_code)]
pub(crate) async fn connect_doc() {}
