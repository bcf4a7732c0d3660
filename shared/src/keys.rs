//! Key derivation: `K_token` from the secret, and the per-session keys `K_c2s`, `K_s2c`,
//! `K_seal` from `K_token` and both nonces, and the token secret they start from. Keys and
//! secrets are zeroized on drop.
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::ZeroizeOnDrop;

type HmacSha256 = Hmac<Sha256>;

/// Length of every key and tag in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a token secret in bytes.
pub const SECRET_LEN: usize = 32;

const TOKEN_KEY_LABEL: &[u8] = b"tether/v1/token-key";
const C2S_LABEL: &[u8] = b"tether/v1/c2s\n";
const S2C_LABEL: &[u8] = b"tether/v1/s2c\n";
const SEAL_LABEL: &[u8] = b"tether/v1/seal\n";

/// `HMAC-SHA256(key, parts[0] || parts[1] || …)`.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The 32 secret bytes of a token. Zeroized on drop; no `Debug` content, no `Clone` (a
/// deliberate copy is [`TokenSecret::duplicate`]).
#[derive(ZeroizeOnDrop)]
pub struct TokenSecret([u8; SECRET_LEN]);

impl TokenSecret {
    /// Wraps secret bytes (the caller draws them from a CSPRNG or parses a token string).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for key derivation and the token string only.
    pub fn expose_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// A second, independently zeroized copy.
    pub fn duplicate(&self) -> Self {
        Self(self.0)
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &TokenSecret) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// `K_token = HMAC(secret, "tether/v1/token-key")`: what the manager stores (sealed) and
/// what proves possession of the token in the handshake.
#[derive(Clone, ZeroizeOnDrop)]
pub struct TokenKey([u8; KEY_LEN]);

impl TokenKey {
    /// Derives `K_token` from a token secret.
    pub fn derive(secret: &TokenSecret) -> Self {
        Self(hmac(secret.expose_bytes(), &[TOKEN_KEY_LABEL]))
    }

    /// Rebuilds a key from its bytes (the manager's sealed store).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes, for sealing at rest only.
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Derives the session keys for the nonce pair `server_nonce || client_nonce`.
    pub fn session_keys(&self, server_nonce: &[u8; 32], client_nonce: &[u8; 32]) -> SessionKeys {
        let n: [&[u8]; 2] = [server_nonce, client_nonce];
        SessionKeys {
            c2s: hmac(&self.0, &[C2S_LABEL, n[0], n[1]]),
            s2c: hmac(&self.0, &[S2C_LABEL, n[0], n[1]]),
            seal: hmac(&self.0, &[SEAL_LABEL, n[0], n[1]]),
        }
    }

    /// The MAC key of this key (for the hello tag).
    pub(crate) fn mac_key(&self) -> MacKey {
        MacKey::new(&self.0)
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &TokenKey) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// The three keys of one session. Zeroized on drop.
#[derive(ZeroizeOnDrop)]
pub struct SessionKeys {
    c2s: [u8; KEY_LEN],
    s2c: [u8; KEY_LEN],
    seal: [u8; KEY_LEN],
}

impl SessionKeys {
    /// `K_c2s`: tags client-to-server frames.
    pub fn c2s(&self) -> &[u8; KEY_LEN] {
        &self.c2s
    }
    /// `K_s2c`: tags server-to-client frames, the welcome and signed rejects.
    pub fn s2c(&self) -> &[u8; KEY_LEN] {
        &self.s2c
    }
    /// `K_seal`: seals the successor token in `rotate`.
    pub fn seal(&self) -> &[u8; KEY_LEN] {
        &self.seal
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

/// An HMAC-SHA256 key: the 32 key bytes (zeroed on drop), keyed into an HMAC for each tag.
/// Keeping the inner and outer pads' states instead would save two SHA-256 compressions per
/// tag (~0.1 µs, `cargo bench -p tether-protocol --bench tag`) but cost 152 bytes a key
/// instead of 32; a live session holds two keys, and an
/// idle session's memory is what every one of thousands of sessions costs (BENCHMARKS.md,
/// "Against bare baselines").
#[derive(Clone)]
pub struct MacKey(zeroize::Zeroizing<[u8; KEY_LEN]>);

impl MacKey {
    /// Prepares a key.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self(zeroize::Zeroizing::new(*key))
    }

    fn keyed(&self, label: &[u8], payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.0.as_slice()).expect("HMAC accepts any key length");
        mac.update(label);
        mac.update(payload);
        mac
    }

    /// `HMAC(key, label || payload)`.
    pub fn tag(&self, label: &[u8], payload: &[u8]) -> [u8; KEY_LEN] {
        self.keyed(label, payload).finalize().into_bytes().into()
    }

    /// Constant-time check of `tag` against `HMAC(key, label || payload)`.
    pub fn verify(&self, label: &[u8], payload: &[u8], tag: &[u8; KEY_LEN]) -> bool {
        self.keyed(label, payload).verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}
