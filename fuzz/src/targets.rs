//! One module per fuzz target: the driver (`run`) and its seeds (`seeds`).
pub mod client_handshake;
pub mod frame_split;
pub mod manager_ack;
pub mod rest_bodies;
pub mod sealed_token_open;
pub mod server_handshake;
pub mod session_decode;
pub mod text_bound;
pub mod token_parse;

/// Every target's name with its seeds, for the seed writer and the seed tests.
pub fn all_seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("frame_split", frame_split::seeds()),
        ("server_handshake", server_handshake::seeds()),
        ("client_handshake", client_handshake::seeds()),
        ("session_decode", session_decode::seeds()),
        ("token_parse", token_parse::seeds()),
        ("sealed_token_open", sealed_token_open::seeds()),
        ("rest_bodies", rest_bodies::seeds()),
        ("text_bound", text_bound::seeds()),
        ("manager_ack", manager_ack::seeds()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reached;

    fn driver(name: &str) -> fn(&[u8]) -> Reached {
        match name {
            "frame_split" => frame_split::run,
            "server_handshake" => server_handshake::run,
            "client_handshake" => client_handshake::run,
            "session_decode" => session_decode::run,
            "token_parse" => token_parse::run,
            "sealed_token_open" => sealed_token_open::run,
            "rest_bodies" => rest_bodies::run,
            "text_bound" => text_bound::run,
            "manager_ack" => manager_ack::run,
            other => panic!("no driver for {other}"),
        }
    }

    #[test]
    fn every_target_has_a_seed_that_gets_all_the_way_through() {
        for (name, seeds) in all_seeds() {
            let run = driver(name);
            let reached: Vec<Reached> = seeds.iter().map(|s| run(s)).collect();
            assert!(reached.contains(&Reached::Accepted), "{name}: no seed is accepted: {reached:?}");
        }
    }

    #[test]
    fn the_deep_seeds_reach_what_they_are_for() {
        let server = server_handshake::seeds();
        assert_eq!(server_handshake::run(&server[0]), Reached::Accepted, "raw valid hello");
        assert_eq!(server_handshake::run(&server[1]), Reached::Accepted, "signed payload");
        assert_eq!(server_handshake::run(&server[2]), Reached::Parsed, "wrong key refused");
        for other in &server[3..6] {
            assert_ne!(server_handshake::run(other), Reached::Accepted);
        }
        assert_eq!(server_handshake::run(&server[6]), Reached::Refused, "the crash frame is refused");
        // Then pairs per boundary string: a hello whose type is it (refused), and one whose
        // delegate name is it (printable: accepted; control characters: refused).
        let controls = crate::boundary::control().len();
        let pairs: Vec<&[Vec<u8>]> = server[7..].chunks(2).collect();
        for (i, pair) in pairs.iter().enumerate() {
            assert_eq!(server_handshake::run(&pair[0]), Reached::Refused, "evil type {i}");
            let expect = if i + controls >= pairs.len() { Reached::Refused } else { Reached::Accepted };
            assert_eq!(server_handshake::run(&pair[1]), expect, "evil name {i}");
        }
        let ack = manager_ack::seeds();
        assert!(
            ack.iter().all(|s| manager_ack::run(s) == Reached::Accepted),
            "every ack seed reaches the ack path"
        );
        let client = client_handshake::seeds();
        assert_eq!(client_handshake::run(&client[0]), Reached::Accepted);
        assert_eq!(client_handshake::run(&client[5]), Reached::Accepted);
        assert_eq!(client_handshake::run(&client[8]), Reached::Accepted);
        let session = session_decode::seeds();
        for (i, expect) in [Reached::Accepted, Reached::Accepted, Reached::Accepted, Reached::Accepted]
            .into_iter()
            .enumerate()
        {
            assert_eq!(session_decode::run(&session[i]), expect, "session seed {i}");
        }
        assert_eq!(session_decode::run(&session[4]), Reached::Parsed, "reflection refused");
        assert_eq!(session_decode::run(&session[5]), Reached::Parsed, "reflection refused");
    }

    /// A deterministic mutation smoke test that runs on the stable toolchain without
    /// libFuzzer: every single-bit flip in the first 160 bytes of every seed, plus every
    /// truncation, through every driver. The drivers' assertions are the oracle.
    #[test]
    fn single_bit_flips_and_truncations_of_every_seed_hold_the_invariants() {
        let mut tried = 0u64;
        for (name, seeds) in all_seeds() {
            let run = driver(name);
            for seed in &seeds {
                for bit in 0..seed.len().min(160) * 8 {
                    let mut mutated = seed.clone();
                    mutated[bit / 8] ^= 1 << (bit % 8);
                    run(&mutated);
                    tried += 1;
                }
                for len in 0..seed.len() {
                    run(&seed[..len]);
                    tried += 1;
                }
            }
        }
        assert!(tried > 10_000, "only {tried} inputs tried");
        println!("inputs tried: {tried}");
    }
}

#[cfg(test)]
mod regressions {
    /// Inputs that once failed a driver (`regressions/<target>/<name>`) pass it now.
    #[test]
    fn past_findings_stay_fixed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
        let mut replayed = 0;
        for (target, run) in [
            ("server_handshake", super::server_handshake::run as fn(&[u8]) -> crate::Reached),
            ("client_handshake", super::client_handshake::run),
        ] {
            for entry in std::fs::read_dir(dir.join(target)).expect("regressions dir").flatten() {
                run(&std::fs::read(entry.path()).expect("readable"));
                replayed += 1;
            }
        }
        assert!(replayed >= 2, "only {replayed} regression inputs found");
    }
}
