//! The `tdt_` delegate token string: generation from caller-supplied bytes, strict parsing,
//! and a redacted `Display`/`Debug` that never shows the secret.
//!
//! Layout: `tdt_` + base64url(token_id[16] || secret[32] || crc32_be(token_id || secret)[4]),
//! 74 characters in all.
use std::fmt;

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::b64;
use crate::error::TokenError;
pub use crate::keys::SECRET_LEN;
use crate::keys::{TokenKey, TokenSecret};

/// The fixed prefix that lets secret scanners find leaked tokens.
pub const PREFIX: &str = "tdt_";
/// Length of the token string in characters.
pub const TOKEN_LEN: usize = 74;
const BODY_LEN: usize = 16 + SECRET_LEN + 4;

/// A delegate token: a public id and a secret.
///
/// `Display` and `Debug` print only the redacted form `tdt_<token id>…`; the full string is
/// available through [`Token::expose`] only.
pub struct Token {
    id: Uuid,
    secret: TokenSecret,
}

impl Token {
    /// Builds a token from its id and secret (the caller draws the secret from a CSPRNG).
    pub fn from_parts(id: Uuid, secret: [u8; SECRET_LEN]) -> Self {
        Self { id, secret: TokenSecret::from_bytes(secret) }
    }

    /// A second copy of this token, its secret zeroized on drop like the first (no round
    /// trip through the token string).
    pub fn duplicate(&self) -> Self {
        Self { id: self.id, secret: self.secret.duplicate() }
    }

    /// Parses a token string. Errors name what is wrong, never the value.
    ///
    /// Checks, in order: prefix, length, encoding, checksum.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        if !text.starts_with(PREFIX) {
            return Err(TokenError::Prefix);
        }
        let got = text.chars().count();
        if got != TOKEN_LEN || text.len() != TOKEN_LEN {
            return Err(TokenError::Length { got });
        }
        let encoded = text.strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        let body: Zeroizing<Vec<u8>> = Zeroizing::new(b64::decode(encoded).ok_or(TokenError::Encoding)?);
        if body.len() != BODY_LEN {
            return Err(TokenError::Encoding);
        }
        let (data, crc) = body.split_at(BODY_LEN - 4);
        if crc32fast::hash(data).to_be_bytes() != crc {
            return Err(TokenError::Checksum);
        }
        let (id_bytes, secret_bytes) = data.split_first_chunk::<16>().ok_or(TokenError::Encoding)?;
        let id = Uuid::from_bytes(*id_bytes);
        let mut secret: [u8; SECRET_LEN] = secret_bytes.try_into().map_err(|_| TokenError::Encoding)?;
        let token = Self::from_parts(id, secret);
        zeroize::Zeroize::zeroize(&mut secret);
        Ok(token)
    }

    /// The public token id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The secret.
    pub fn secret(&self) -> &TokenSecret {
        &self.secret
    }

    /// `K_token = HMAC(secret, "tether/v1/token-key")`.
    pub fn key(&self) -> TokenKey {
        TokenKey::derive(&self.secret)
    }

    /// The full token string. Handle with care: it is the credential.
    pub fn expose(&self) -> Zeroizing<String> {
        let mut body = Zeroizing::new(Vec::with_capacity(BODY_LEN));
        body.extend_from_slice(self.id.as_bytes());
        body.extend_from_slice(self.secret.expose_bytes());
        let crc = crc32fast::hash(&body).to_be_bytes();
        body.extend_from_slice(&crc);
        let mut out = Zeroizing::new(String::with_capacity(TOKEN_LEN));
        out.push_str(PREFIX);
        out.push_str(&b64::encode(&body));
        out
    }

    /// Constant-time equality of the whole token.
    pub fn same_as(&self, other: &Token) -> bool {
        self.id == other.id && self.secret.ct_eq(&other.secret)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}…", self.id)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({PREFIX}{}…)", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Token {
        Token::from_parts(Uuid::from_u128(0x7c9e6679_7425_40de_944b_e07fc1f90ae7), [7u8; 32])
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let s = t.expose();
        assert_eq!(s.len(), TOKEN_LEN);
        let back = Token::parse(&s).unwrap();
        assert!(back.same_as(&t));
    }

    #[test]
    fn display_and_debug_are_redacted() {
        let t = sample();
        let full = t.expose();
        let secret_part = &full[PREFIX.len() + 22..PREFIX.len() + 60];
        for shown in [format!("{t}"), format!("{t:?}"), format!("{:?}", t.secret())] {
            assert!(!shown.contains(secret_part), "{shown}");
            assert!(!shown.contains(full.as_str()));
        }
        assert_eq!(format!("{t}"), "tdt_7c9e6679-7425-40de-944b-e07fc1f90ae7…");
    }

    #[test]
    fn errors_in_order() {
        let good = sample().expose();
        assert_eq!(Token::parse("xyz").unwrap_err(), TokenError::Prefix);
        assert_eq!(Token::parse("tdt_abc").unwrap_err(), TokenError::Length { got: 7 });
        let mut long = good.to_string();
        long.push('A');
        assert_eq!(Token::parse(&long).unwrap_err(), TokenError::Length { got: 75 });
        let bad_char = format!("{}*{}", &good[..10], &good[11..]);
        assert_eq!(Token::parse(&bad_char).unwrap_err(), TokenError::Encoding);
        let padded = format!("{}=", &good[..73]);
        assert_eq!(Token::parse(&padded).unwrap_err(), TokenError::Encoding);
        // A multi-byte character keeps the char count but not the byte count.
        let multibyte = format!("{}é", &good[..72]);
        assert!(matches!(Token::parse(&multibyte).unwrap_err(), TokenError::Length { .. }));
        let mut flipped = good.as_bytes().to_vec();
        flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(Token::parse(&flipped).unwrap_err(), TokenError::Checksum);
    }

    #[test]
    fn errors_never_contain_the_value() {
        let good = sample().expose();
        // The secret's characters: after the prefix and the 22 characters of the id.
        let secret_part = &good[PREFIX.len() + 22..PREFIX.len() + 60];
        let last = if good.ends_with('A') { 'B' } else { 'A' };
        let mut second = good.as_bytes().to_vec();
        second[PREFIX.len() + 1] ^= 0x01;
        let bad = [
            format!("{}{last}", &good[..73]),
            String::from_utf8(second).unwrap(),
            format!("{}!", &good[..73]),
            format!("{}AA", &good[..73]),
            format!("x{}", &good[1..]),
        ];
        for bad in bad {
            assert_ne!(bad.as_str(), good.as_str());
            let e = Token::parse(&bad).expect_err("a changed token is refused");
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(!shown.contains(secret_part), "{shown}");
                assert!(!shown.contains(&bad[PREFIX.len()..]), "{shown}");
            }
        }
    }

    #[test]
    fn a_duplicate_is_the_same_token() {
        let t = sample();
        let copy = t.duplicate();
        assert!(copy.same_as(&t));
        assert_eq!(copy.expose().as_str(), t.expose().as_str());
        assert!(copy.key().ct_eq(&t.key()));
    }
}
