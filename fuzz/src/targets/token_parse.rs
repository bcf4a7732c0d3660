//! `Token::parse` on arbitrary text: what the delegate does with `ACCOUNT_SECRET`, and what
//! the seal opener does with a decrypted successor.
//!
//! Invariants: an accepted string is canonical (`expose()` gives back exactly the input);
//! the redacted `Display`/`Debug` never contain the secret part; an error message never
//! contains the body of a would-be token.
use tether_protocol::token::{PREFIX, TOKEN_LEN};
use tether_protocol::Token;

use crate::fixture;
use crate::Reached;

/// Parses the input (as UTF-8, lossily) and checks the invariants.
pub fn run(data: &[u8]) -> Reached {
    let text = String::from_utf8_lossy(data);
    match Token::parse(&text) {
        Ok(token) => {
            assert_eq!(token.expose().as_str(), text, "a non-canonical token string was accepted");
            let secret_part = &text[PREFIX.len() + 22..TOKEN_LEN - 6];
            for shown in [format!("{token}"), format!("{token:?}"), format!("{:?}", token.secret())] {
                assert!(!shown.contains(secret_part), "redacted form shows the secret");
            }
            Reached::Accepted
        }
        Err(err) => {
            // Only a would-be token body (16+ base64url characters) counts: a text that merely
            // quotes an error message contains that message, and the fuzzer found exactly
            // such inputs twice before this condition was added.
            let body = text.strip_prefix(PREFIX).unwrap_or_default();
            let tokenish =
                body.len() >= 16 && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if tokenish {
                assert!(!err.to_string().contains(body), "an error message echoes the token");
            }
            Reached::Parsed
        }
    }
}

/// Valid tokens and the near misses the parser distinguishes.
pub fn seeds() -> Vec<Vec<u8>> {
    let good = fixture::token(1).expose().to_string();
    let mut seeds: Vec<String> = (1..=3).map(|s| fixture::token(s).expose().to_string()).collect();
    seeds.push(format!("{}A", good));
    seeds.push(good[..73].to_string());
    seeds.push(format!("tdx_{}", &good[4..]));
    seeds.push(format!("{}=", &good[..73]));
    seeds.push(format!("{}é", &good[..72]));
    seeds.into_iter().map(String::into_bytes).collect()
}
