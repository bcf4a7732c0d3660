//! Session frames on arbitrary bytes, on both ends of an established session.
//!
//! Input: a mode byte, then up to 16 length-prefixed frames. Bit 0 of the mode picks the end
//! (0: the manager decodes c2s frames, 1: the delegate decodes s2c frames). Bits 1–2 pick the
//! tagging: 0 the chunks are frames as received; 1 each chunk is a payload the driver tags
//! with the receiving direction's key (so the fuzzer explores JSON, types and sequence
//! numbers); 2 each chunk is a payload tagged with the *sending* direction's key (a reflected
//! frame), which must never be accepted.
//!
//! Invariants: accepted frames carry exactly the next sequence number of their direction;
//! after the first error every later frame is refused with `SessionFailed`; a reflected frame
//! is never accepted; an opened sealed token carries the announced token id.
use tether_protocol::frame;
use tether_protocol::keys::MacKey;
use tether_protocol::message::{C2s, GoodbyeReason, RotateOutcome, S2c, Sequenced, TaskKind};
use tether_protocol::session::{ClientSession, ServerSession};
use tether_protocol::ProtocolError;
use uuid::Uuid;

use crate::fixture::{self, ROTATION_ID};
use crate::input;
use crate::Reached;

/// Most frames one input feeds.
pub const MAX_FRAMES: usize = 16;
/// Mode bit 0 = 1: the delegate's end decodes s2c frames.
pub const CLIENT_END: u8 = 1;
/// Tagging (bits 1–2): chunks are frames as received.
pub const RAW: u8 = 0;
/// Tagging: chunks are payloads tagged with the receiving direction's key.
pub const SIGNED: u8 = 2;
/// Tagging: chunks are payloads tagged with the sending direction's key (reflection).
pub const REFLECTED: u8 = 4;

/// Feeds the frames of one input to a fresh session and checks the invariants.
pub fn run(data: &[u8]) -> Reached {
    let Some((mode, rest)) = input::mode(data) else { return Reached::Refused };
    let client_end = mode & CLIENT_END != 0;
    let tagging = mode & 0b110;
    let keys = fixture::session_keys();
    let (recv_key, send_key) = if client_end { (keys.s2c(), keys.c2s()) } else { (keys.c2s(), keys.s2c()) };
    let (client, server) = fixture::sessions();
    let mut end = if client_end { End::Client(client) } else { End::Server(server) };
    let mut expected = if client_end { 1 } else { 0 };
    let mut failed = false;
    let mut reached = Reached::Refused;

    for chunk in input::chunks(rest, MAX_FRAMES) {
        let bytes = match tagging {
            SIGNED => frame::signed(&MacKey::new(recv_key), b"", chunk),
            REFLECTED => frame::signed(&MacKey::new(send_key), b"", chunk),
            _ => chunk.to_vec(),
        };
        match end.decode(&bytes) {
            Ok(seq) => {
                assert!(!failed, "a frame was accepted after the session failed");
                assert_ne!(tagging, REFLECTED, "a reflected frame was accepted");
                assert_eq!(seq, expected, "accepted a frame out of sequence");
                expected += 1;
                reached = Reached::Accepted;
            }
            Err(err) => {
                if failed {
                    assert_eq!(err, ProtocolError::SessionFailed);
                } else {
                    assert_ne!(err, ProtocolError::SessionFailed);
                    assert!(matches!(err.close_code(), 1009 | 4008), "unexpected close code for {err:?}");
                }
                failed = true;
                if reached == Reached::Refused {
                    reached = Reached::Parsed;
                }
            }
        }
    }
    reached
}

/// One end of the fixture session.
enum End {
    Client(ClientSession),
    Server(ServerSession),
}

impl End {
    /// Decodes one frame; returns the accepted frame's seq.
    fn decode(&mut self, bytes: &[u8]) -> Result<u64, ProtocolError> {
        match self {
            End::Server(session) => session.decode(bytes).map(|msg| msg.seq()),
            End::Client(session) => {
                let msg = session.decode(bytes)?;
                if let S2c::Rotate { rotation_id, token_id, sealed_token, .. } = &msg {
                    if let Ok(token) = session.open_sealed_token(*rotation_id, *token_id, sealed_token) {
                        assert_eq!(token.id(), *token_id);
                    }
                }
                Ok(msg.seq())
            }
        }
    }
}

/// Real session traffic in both directions, as frames and as payloads, plus replays.
pub fn seeds() -> Vec<Vec<u8>> {
    let (mut client, mut server) = fixture::sessions();
    let c2s: Vec<Vec<u8>> = [
        C2s::Heartbeat { seq: 0, status: Default::default() },
        C2s::RotateAck {
            seq: 0,
            rotation_id: ROTATION_ID,
            outcome: RotateOutcome::Applied,
            detail: "ok".into(),
        },
        C2s::TaskResult { seq: 0, task_id: Uuid::from_u128(5), ok: true, payload: "pong".into() },
        C2s::Goodbye { seq: 0, reason: GoodbyeReason::Restart },
        // The ack detail that aborted the manager (511 bytes + a 2-byte character).
        C2s::RotateAck {
            seq: 0,
            rotation_id: ROTATION_ID,
            outcome: RotateOutcome::Failed,
            detail: format!("{}é", "x".repeat(511)),
        },
    ]
    .into_iter()
    .map(|m| client.encode(m))
    .collect();
    let successor = fixture::token(2);
    let sealed = server.seal_token(ROTATION_ID, [3; 12], &successor);
    let s2c: Vec<Vec<u8>> = [
        S2c::Rotate {
            seq: 0,
            rotation_id: ROTATION_ID,
            token_id: successor.id(),
            sealed_token: sealed,
            old_token_valid_until: fixture::NOW + 300,
        },
        S2c::Task { seq: 0, task_id: Uuid::from_u128(5), kind: TaskKind::Echo, payload: "ping".into() },
        S2c::Revoked {
            seq: 0,
            token_id: fixture::token(1).id(),
            reason: tether_protocol::message::RevokedReason::Revoked,
            message: "revoked".into(),
        },
        S2c::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown },
    ]
    .into_iter()
    .map(|m| server.encode(m))
    .collect();

    fn frames(v: &[Vec<u8>]) -> Vec<&[u8]> {
        v.iter().map(Vec::as_slice).collect()
    }
    fn payloads(v: &[Vec<u8>]) -> Vec<&[u8]> {
        v.iter().map(|f| &f[frame::HEADER_LEN..]).collect()
    }
    fn replay(v: &[Vec<u8>]) -> Vec<&[u8]> {
        vec![&v[0], &v[1], &v[1], &v[2]]
    }
    // Signed frames whose `type` straddles 64 bytes with a multi-byte character.
    let evil_types: Vec<Vec<u8>> = crate::boundary::straddling()
        .into_iter()
        .map(|kind| serde_json::to_vec(&serde_json::json!({ "type": kind, "seq": 0 })).expect("serialises"))
        .collect();
    let evil: Vec<&[u8]> = evil_types.iter().take(16).map(Vec::as_slice).collect();
    vec![
        input::join_chunks(RAW, &frames(&c2s)),
        input::join_chunks(CLIENT_END | RAW, &frames(&s2c)),
        input::join_chunks(SIGNED, &payloads(&c2s)),
        input::join_chunks(CLIENT_END | SIGNED, &payloads(&s2c)),
        input::join_chunks(REFLECTED, &payloads(&s2c)),
        input::join_chunks(CLIENT_END | REFLECTED, &payloads(&c2s)),
        input::join_chunks(RAW, &replay(&c2s)),
        input::join_chunks(CLIENT_END | RAW, &frames(&c2s)),
        input::join_chunks(SIGNED, &evil[..1]),
        input::join_chunks(CLIENT_END | SIGNED, &evil[..1]),
    ]
}
