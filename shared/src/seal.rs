//! `sealed_token`: the successor token sealed for one session,
//! `B64(nonce[12] || ChaCha20-Poly1305(K_seal, nonce, token string, aad = rotation_id))`,
//! where the associated data is the rotation id in its canonical hyphenated text form.
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::b64;
use crate::error::SealError;
use crate::token::Token;

const NONCE_LEN: usize = 12;
const AEAD_TAG_LEN: usize = 16;

/// Seals `token` under `seal_key` for the rotation `rotation_id`. The caller supplies a
/// fresh random nonce.
pub fn seal(seal_key: &[u8; 32], rotation_id: Uuid, nonce: [u8; NONCE_LEN], token: &Token) -> String {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(seal_key));
    let aad = rotation_id.hyphenated().to_string();
    let plaintext = token.expose();
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
        .expect("ChaCha20-Poly1305 encryption of a short message cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    b64::encode(&out)
}

/// Opens a sealed token. Fails on any tampering, on a wrong key or rotation id, and when the
/// plaintext is not a valid token.
pub fn open(seal_key: &[u8; 32], rotation_id: Uuid, sealed: &str) -> Result<Token, SealError> {
    let bytes = b64::decode(sealed).ok_or(SealError::Encoding)?;
    if bytes.len() < NONCE_LEN + AEAD_TAG_LEN {
        return Err(SealError::Encoding);
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(seal_key));
    let aad = rotation_id.hyphenated().to_string();
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: aad.as_bytes() })
            .map_err(|_| SealError::Open)?,
    );
    let text = std::str::from_utf8(&plaintext).map_err(|_| SealError::Token(crate::TokenError::Encoding))?;
    Token::parse(text).map_err(SealError::Token)
}
