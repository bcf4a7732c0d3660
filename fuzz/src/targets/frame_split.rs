//! `frame::split` on arbitrary bytes: the first thing every received WebSocket message meets.
//! Invariants: it accepts exactly the frames of size 33..=max with version byte 1, the parts
//! it returns re-join to the input, and an oversize frame maps to close code 1009.
use tether_protocol::error::close;
use tether_protocol::frame::{self, HEADER_LEN};
use tether_protocol::message::S2c;
use tether_protocol::{ProtocolError, PROTOCOL_VERSION};

use crate::fixture;
use crate::Reached;

/// The maximum the driver splits against: small, so the fuzzer meets the limit often.
pub const MAX: usize = 2_048;

/// Splits `data` and checks the invariants.
pub fn run(data: &[u8]) -> Reached {
    match frame::split(data, MAX) {
        Ok(raw) => {
            assert!(data.len() <= MAX && data.len() >= HEADER_LEN);
            assert_eq!(data[0], PROTOCOL_VERSION);
            assert_eq!(frame::join(raw.tag, raw.payload), data);
            assert_eq!(raw.is_unsigned(), raw.tag == &frame::ZERO_TAG);
            Reached::Accepted
        }
        Err(err) => {
            match &err {
                ProtocolError::Oversize { len, max } => {
                    assert!(*len > *max && *max == MAX);
                    assert_eq!(err.close_code(), close::TOO_BIG);
                }
                ProtocolError::Truncated { len } => assert!(*len < HEADER_LEN),
                ProtocolError::BadVersion { got } => assert_ne!(*got, PROTOCOL_VERSION),
                other => panic!("split returned an error it never should: {other:?}"),
            }
            assert_ne!(err.close_code(), 0);
            Reached::Refused
        }
    }
}

/// Real frames of every kind: challenge, hello, welcome, session frames, a reject.
pub fn seeds() -> Vec<Vec<u8>> {
    let (_, challenge) = fixture::server();
    let (_, hello) = fixture::client_after_challenge();
    let (mut client, mut server) = fixture::sessions();
    let heartbeat =
        client.encode(tether_protocol::message::C2s::Heartbeat { seq: 0, status: Default::default() });
    let task = server.encode(S2c::Task {
        seq: 0,
        task_id: uuid::Uuid::from_u128(9),
        kind: tether_protocol::message::TaskKind::Echo,
        payload: "ping".into(),
    });
    let reject = tether_protocol::handshake::server::unsigned_reject(
        tether_protocol::RejectCode::RateLimited,
        "slow down",
    );
    vec![challenge, hello, heartbeat, task, reject, vec![PROTOCOL_VERSION; HEADER_LEN]]
}
