//! Secrets the manager makes or keeps: the master key file that seals every `K_token` at rest
//! (ChaCha20-Poly1305), fresh delegate tokens, and admin tokens (`tat_…`, stored as SHA-256).
//! All randomness comes from the OS CSPRNG.
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tether_protocol::{Token, TokenKey};
use uuid::Uuid;
use zeroize::Zeroizing;

/// Prefix of admin tokens.
pub const ADMIN_PREFIX: &str = "tat_";
const SEAL_AAD: &[u8] = b"tether/manager/v1/k_token/";
const SUCCESSOR_AAD: &[u8] = b"tether/manager/v1/rotation-successor/";

/// Errors handling the master key or sealed keys. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or written.
    #[error("master key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold 32 bytes.
    #[error("master key file {path} is malformed (expected 32 bytes)")]
    Malformed {
        /// The file.
        path: String,
    },
    /// Group or others may read the key file.
    #[error("master key file {path} has mode {mode:o}; it must be 0600 (chmod 600 it)")]
    Permissions {
        /// The file.
        path: String,
        /// The mode found.
        mode: u32,
    },
    /// A sealed key does not open: wrong master key or tampered database.
    #[error("sealed token key does not open under the master key")]
    Open,
}

/// The master key: seals `K_token` in the database. Zeroized on drop.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Loads the key file, creating it (mode 0600, fsynced) when it does not exist.
    /// Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        let io = |source| KeyError::Io { path: path.display().to_string(), source };
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Permissions { path: path.display().to_string(), mode });
                }
                let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
                let key: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Malformed { path: path.display().to_string() })?;
                Ok((Self(Zeroizing::new(key)), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(key.as_mut());
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(key.as_ref()).map_err(io)?;
                file.sync_all().map_err(io)?;
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
                }
                Ok((Self(key), true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A check value of this key (hex SHA-256 over a domain label and the key): kept in the
    /// store, so a manager started with another key refuses to serve instead of failing every
    /// handshake. It reveals nothing of the key.
    pub fn check_value(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"tether/manager/v1/master-key-check/");
        h.update(self.0.as_ref());
        hex::encode(h.finalize())
    }

    /// A key from bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(self.0.as_ref()))
    }

    /// Seals `K_token` of `token_id`: `nonce[12] || ciphertext`, bound to the token id.
    pub fn seal(&self, token_id: Uuid, key: &TokenKey) -> Vec<u8> {
        self.seal_bytes(&aad(SEAL_AAD, token_id), key.expose_bytes())
    }

    /// Opens a sealed `K_token`.
    pub fn open(&self, token_id: Uuid, sealed: &[u8]) -> Result<TokenKey, KeyError> {
        let plain = self.open_bytes(&aad(SEAL_AAD, token_id), sealed, 32)?;
        let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| KeyError::Open)?;
        Ok(TokenKey::from_bytes(bytes))
    }

    /// Seals a rotation's successor token (its id and secret) for the store, bound to the
    /// rotation id under its own associated data: a sealed `K_token` never opens as a
    /// successor, nor one rotation's successor as another's. The store keeps it only while the
    /// rotation runs, so a restarted manager can still hand it to late delegates.
    pub fn seal_successor(&self, rotation_id: Uuid, token: &Token) -> Vec<u8> {
        let mut plain = Zeroizing::new(Vec::with_capacity(16 + 32));
        plain.extend_from_slice(token.id().as_bytes());
        plain.extend_from_slice(token.secret().expose_bytes());
        self.seal_bytes(&aad(SUCCESSOR_AAD, rotation_id), &plain)
    }

    /// Opens a successor sealed by [`MasterKey::seal_successor`].
    pub fn open_successor(&self, rotation_id: Uuid, sealed: &[u8]) -> Result<Token, KeyError> {
        let plain = self.open_bytes(&aad(SUCCESSOR_AAD, rotation_id), sealed, 16 + 32)?;
        let (id, secret) = plain.split_first_chunk::<16>().ok_or(KeyError::Open)?;
        let mut secret: [u8; 32] = secret.try_into().map_err(|_| KeyError::Open)?;
        let token = Token::from_parts(Uuid::from_bytes(*id), secret);
        zeroize::Zeroize::zeroize(&mut secret);
        Ok(token)
    }

    fn seal_bytes(&self, aad: &[u8], msg: &[u8]) -> Vec<u8> {
        let nonce = random12();
        let ct = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg, aad })
            .expect("ChaCha20-Poly1305 encrypts any message of a few dozen bytes");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Opens `nonce[12] || ciphertext` whose plaintext is `len` bytes.
    fn open_bytes(&self, aad: &[u8], sealed: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if sealed.len() != 12 + len + 16 {
            return Err(KeyError::Open);
        }
        let (nonce, ct) = sealed.split_at(12);
        Ok(Zeroizing::new(
            self.cipher()
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
                .map_err(|_| KeyError::Open)?,
        ))
    }

    /// Burns the same time as [`MasterKey::open`] on a key that does not exist, so an unknown
    /// token costs what a known one does.
    pub fn dummy_open(&self) {
        let _ = self.open(Uuid::nil(), &[0u8; 60]);
    }
}

fn aad(label: &[u8], id: Uuid) -> Vec<u8> {
    let mut aad = label.to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad
}

/// A fresh delegate token: random UUIDv4 id and 32 secret bytes from the OS CSPRNG.
pub fn new_delegate_token() -> Token {
    let mut secret = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(secret.as_mut());
    Token::from_parts(Uuid::new_v4(), *secret)
}

/// 32 random bytes.
pub fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b
}

/// 12 random bytes (AEAD nonces).
pub fn random12() -> [u8; 12] {
    let mut b = [0u8; 12];
    OsRng.fill_bytes(&mut b);
    b
}

/// A fresh admin token string `tat_` + base64url(32 random bytes).
pub fn new_admin_token() -> Zeroizing<String> {
    let bytes = Zeroizing::new(random32());
    Zeroizing::new(format!(
        "{ADMIN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref())
    ))
}

/// The stored form of an admin token: hex SHA-256 of the whole string.
pub fn admin_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_file_is_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (k1, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (k2, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        let token = new_delegate_token();
        let sealed = k1.seal(token.id(), &token.key());
        assert!(k2.open(token.id(), &sealed).unwrap().ct_eq(&token.key()));
        assert!(k2.open(Uuid::new_v4(), &sealed).is_err(), "bound to the token id");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(MasterKey::load_or_create(&path), Err(KeyError::Permissions { .. })));
    }

    #[test]
    fn a_sealed_successor_opens_only_for_its_rotation_and_only_as_a_successor() {
        let key = MasterKey::from_bytes(random32());
        let token = new_delegate_token();
        let rotation = Uuid::new_v4();
        let sealed = key.seal_successor(rotation, &token);
        let opened = key.open_successor(rotation, &sealed).unwrap();
        assert!(opened.same_as(&token));
        assert!(key.open_successor(Uuid::new_v4(), &sealed).is_err(), "bound to the rotation id");
        assert!(
            MasterKey::from_bytes(random32()).open_successor(rotation, &sealed).is_err(),
            "another master key"
        );
        // A sealed K_token under the same id does not open as a successor, nor the reverse.
        let sealed_key = key.seal(rotation, &token.key());
        assert!(key.open_successor(rotation, &sealed_key).is_err());
        assert!(key.open(rotation, &sealed).is_err());
        for bit in [0, 8 * 12, sealed.len() * 8 - 1] {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(key.open_successor(rotation, &bad).is_err(), "bit {bit} flipped");
        }
        assert!(key.open_successor(rotation, &sealed[..sealed.len() - 1]).is_err());
        assert!(key.open_successor(rotation, &[]).is_err());
        // The sealed bytes hold neither the token string nor its secret.
        let secret = token.secret().expose_bytes();
        assert!(!sealed.windows(secret.len()).any(|w| w == secret));
    }

    #[test]
    fn admin_tokens() {
        let t = new_admin_token();
        assert!(t.starts_with("tat_"));
        assert_eq!(t.len(), 4 + 43);
        assert_ne!(admin_token_hash(&t), admin_token_hash(&new_admin_token()));
        assert_eq!(admin_token_hash(&t).len(), 64);
    }
}
