//! Property tests: round trips hold, any single flipped bit of a signed frame is rejected, and
//! any reordering, drop or duplication of a valid frame sequence is rejected.
mod common;

use common::*;
use proptest::prelude::*;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::handshake::server::ServerHandshake;
use tether_protocol::message::{C2s, GoodbyeReason, HeartbeatStatus, RotateOutcome, S2c, TaskKind};
use tether_protocol::Token;
use uuid::Uuid;

fn c2s_strategy() -> impl Strategy<Value = C2s> {
    prop_oneof![
        (any::<u64>(), proptest::option::of("[a-z]{0,8}")).prop_map(|(u, m)| C2s::Heartbeat {
            seq: 0,
            status: HeartbeatStatus { uptime_secs: u, apply_mode: m }
        }),
        (any::<u128>(), 0..3u8, ".{0,40}").prop_map(|(id, o, detail)| C2s::RotateAck {
            seq: 0,
            rotation_id: Uuid::from_u128(id),
            outcome: [RotateOutcome::Applied, RotateOutcome::Failed, RotateOutcome::Manual][o as usize],
            detail
        }),
        (any::<u128>(), any::<bool>(), ".{0,200}").prop_map(|(id, ok, payload)| C2s::TaskResult {
            seq: 0,
            task_id: Uuid::from_u128(id),
            ok,
            payload
        }),
        Just(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown }),
    ]
}

fn s2c_strategy() -> impl Strategy<Value = S2c> {
    prop_oneof![
        (any::<u128>(), ".{0,100}").prop_map(|(id, payload)| S2c::Task {
            seq: 0,
            task_id: Uuid::from_u128(id),
            kind: TaskKind::Echo,
            payload
        }),
        (any::<u128>(), ".{0,60}").prop_map(|(id, message)| S2c::Revoked {
            seq: 0,
            token_id: Uuid::from_u128(id),
            reason: tether_protocol::message::RevokedReason::Revoked,
            message
        }),
        Just(S2c::Goodbye { seq: 0, reason: GoodbyeReason::Restart }),
    ]
}

fn set_seq<T: tether_protocol::message::Sequenced>(mut m: T, seq: u64) -> T {
    m.set_seq(seq);
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn token_round_trip(id in any::<u128>(), secret in any::<[u8; 32]>()) {
        let t = Token::from_parts(Uuid::from_u128(id), secret);
        let s = t.expose();
        prop_assert_eq!(s.len(), 74);
        let back = Token::parse(&s).unwrap();
        prop_assert!(back.same_as(&t));
        let shown = format!("{} {:?}", t, t);
        prop_assert!(!shown.contains(&s[30..60]));
    }

    #[test]
    fn token_parse_never_panics(s in ".{0,100}") {
        let _ = Token::parse(&s);
    }

    #[test]
    fn session_round_trip(msgs in proptest::collection::vec(c2s_strategy(), 1..8),
                          replies in proptest::collection::vec(s2c_strategy(), 1..8)) {
        let (mut client, mut server) = sessions();
        for (i, m) in msgs.into_iter().enumerate() {
            let f = client.encode(m.clone());
            prop_assert_eq!(server.decode(&f).unwrap(), set_seq(m, i as u64));
        }
        for (i, m) in replies.into_iter().enumerate() {
            let f = server.encode(m.clone());
            prop_assert_eq!(client.decode(&f).unwrap(), set_seq(m, i as u64 + 1));
        }
    }

    #[test]
    fn any_bit_flip_in_a_session_frame_is_rejected(m in c2s_strategy(), bit in any::<prop::sample::Index>()) {
        let (mut client, mut server) = sessions();
        let mut f = client.encode(m);
        let i = bit.index(f.len() * 8);
        f[i / 8] ^= 1 << (i % 8);
        prop_assert!(server.decode(&f).is_err());
    }

    #[test]
    fn any_bit_flip_in_a_hello_is_rejected(bit in any::<prop::sample::Index>()) {
        let t = token(1);
        let (server, _, mut hello) = until_hello(&t);
        let i = bit.index(hello.len() * 8);
        hello[i / 8] ^= 1 << (i % 8);
        let accepted = server
            .receive_hello(&hello, NOW)
            .ok()
            .and_then(|r| r.verify(Some(&t.key())).ok());
        prop_assert!(accepted.is_none());
    }

    #[test]
    fn any_bit_flip_in_a_welcome_is_rejected(bit in any::<prop::sample::Index>()) {
        let t = token(1);
        let (received, awaiting) = received(&t);
        let (_, mut welcome) = received.verify(Some(&t.key())).unwrap().accept(Uuid::from_u128(3), 30, None);
        let i = bit.index(welcome.len() * 8);
        welcome[i / 8] ^= 1 << (i % 8);
        prop_assert!(awaiting.receive_welcome(&welcome).is_err());
    }

    #[test]
    fn any_bit_flip_in_a_signed_reject_is_not_trusted(bit in any::<prop::sample::Index>()) {
        let t = token(1);
        let (received, awaiting) = received(&t);
        let mut reject = received
            .verify(Some(&t.key()))
            .unwrap()
            .reject(tether_protocol::RejectCode::Revoked, "revoked");
        let i = bit.index(reject.len() * 8);
        reject[i / 8] ^= 1 << (i % 8);
        match awaiting.receive_welcome(&reject) {
            Err(tether_protocol::error::HandshakeError::Rejected(r)) => prop_assert!(!r.is_final()),
            Err(_) => {}
            Ok(_) => prop_assert!(false, "a flipped reject became a welcome"),
        }
    }

    /// Delivers frames in an arbitrary order (with drops and duplicates): the receiver accepts
    /// exactly the prefix that is in order and rejects the first frame that is not.
    #[test]
    fn reorder_drop_duplicate_is_rejected(order in proptest::collection::vec(0usize..6, 1..12)) {
        let (mut client, mut server) = sessions();
        let frames: Vec<Vec<u8>> = (0..6)
            .map(|_| client.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown }))
            .collect();
        let in_order = order.iter().enumerate().take_while(|(i, idx)| i == *idx).count();
        for (i, idx) in order.iter().enumerate() {
            let result = server.decode(&frames[*idx]);
            if i < in_order {
                prop_assert!(result.is_ok());
            } else {
                prop_assert!(result.is_err());
            }
        }
    }

    /// A hello can only be answered on the connection whose challenge it echoes.
    #[test]
    fn hello_for_another_challenge_is_rejected(nonce in any::<[u8; 32]>()) {
        prop_assume!(nonce != [0xa5; 32]);
        let t = token(1);
        let (_, _, hello) = until_hello(&t);
        let (server, _) = ServerHandshake::new(nonce, NOW, 65_536);
        prop_assert!(server.receive_hello(&hello, NOW).is_err());
    }

    #[test]
    fn challenge_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let t = token(1);
        let _ = ClientHandshake::new("a", &t, delegate()).receive_challenge(&bytes, [0; 32], NOW);
        let (server, _) = ServerHandshake::new([0; 32], NOW, 65_536);
        let _ = server.receive_hello(&bytes, NOW);
    }
}
