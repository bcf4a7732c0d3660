//! The manager's path for a delegate's `rotate_ack` (the one that aborted it): a signed c2s
//! frame decoded by the manager's session, then its detail bounded and escaped by the manager
//! exactly as `rotation::on_ack` stores it.
//!
//! Input: c2s payloads the driver tags with the fixture session's `K_c2s` (length-prefixed,
//! as [`crate::input::chunks`]), so every input reaches the JSON and the ack handling.
//!
//! Invariants: decoding never panics; a stored detail is at most
//! `tether_manager::rotation::MAX_ACK_DETAIL` bytes, holds no control character, and is a
//! prefix of the escaped detail.
use tether_protocol::frame;
use tether_protocol::keys::MacKey;
use tether_protocol::message::{C2s, RotateOutcome};
use tether_protocol::text;

use crate::fixture::{self, ROTATION_ID};
use crate::input;
use crate::Reached;

/// Feeds the payloads of one input to the manager's session and its ack handling.
pub fn run(data: &[u8]) -> Reached {
    let keys = fixture::session_keys();
    let mac = MacKey::new(keys.c2s());
    let (_, mut server) = fixture::sessions();
    let mut reached = Reached::Refused;
    for chunk in input::chunks(data, 16) {
        match server.decode(&frame::signed(&mac, b"", chunk)) {
            Ok(C2s::RotateAck { detail, .. }) => {
                let stored = tether_manager::rotation::ack_detail(&detail);
                assert!(stored.len() <= tether_manager::rotation::MAX_ACK_DETAIL);
                assert!(!text::has_control(&stored));
                assert!(text::escape_control(&detail).starts_with(stored.as_str()));
                reached = Reached::Accepted;
            }
            Ok(_) if reached == Reached::Refused => reached = Reached::Parsed,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    reached
}

/// Acks whose details straddle the bound with multi-byte characters or carry control
/// characters, including the 511 ASCII bytes + `é` that aborted the manager: one input per
/// detail, and one input with sixteen of them in sequence.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut details = vec![format!("{}é", "x".repeat(511))];
    details.extend(crate::boundary::straddling());
    details.extend(crate::boundary::control());
    let ack = |client: &mut tether_protocol::session::ClientSession, detail: &str| {
        let mut f = client.encode(C2s::RotateAck {
            seq: 0,
            rotation_id: ROTATION_ID,
            outcome: RotateOutcome::Failed,
            detail: detail.to_owned(),
        });
        f.split_off(frame::HEADER_LEN)
    };
    // `chunks` reads no mode byte: drop the one `join_chunks` writes.
    let join = |parts: &[&[u8]]| input::join_chunks(0, parts).split_off(1);
    let mut out: Vec<Vec<u8>> = details
        .iter()
        .map(|d| {
            let (mut client, _) = fixture::sessions();
            join(&[&ack(&mut client, d)])
        })
        .collect();
    let (mut client, _) = fixture::sessions();
    let many: Vec<Vec<u8>> = details.iter().take(16).map(|d| ack(&mut client, d)).collect();
    out.push(join(&many.iter().map(Vec::as_slice).collect::<Vec<_>>()));
    out
}
