//! The handshake's cache of tokens: the row and its opened key per token id, so that a
//! delegate's handshake reads neither the store nor the sealed key while nothing about its
//! token has changed, and records the token's last use at most once a minute.
//!
//! Correctness rests on two rules. Every store operation that writes a token row (create,
//! revoke, delete, policy, rotation start and finish, restore) empties the cache when it
//! returns, before its caller tells any live session ([`super::Store`] does it, so no caller
//! can forget), and a replica's change feed empties it before it applies a change another
//! replica made (`cluster::apply`). And an entry read from the store is only kept if no
//! emptying happened since the read began (the generation check), so a read that raced a
//! revoke cannot put the old row back. A handshake that hits a stale entry in the moment
//! between a revoke's commit and the emptying registers its session before re-checking, and
//! the revoke's fan-out, which runs after the emptying, finds that session in the registry.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tether_protocol::TokenKey;
use uuid::Uuid;

use super::tokens::TokenRow;

/// Most entries held; a full cache is emptied (only verified tokens are ever added).
const MAX_ENTRIES: usize = 65_536;

/// How often a handshake on a cached token writes the token's `last_used_at`, seconds.
pub const TOUCH_EVERY_SECS: u64 = 60;

/// A token as the handshake needs it.
#[derive(Clone)]
pub struct CachedToken {
    /// The row as read from the store.
    pub row: TokenRow,
    /// `K_token`, opened from the row's sealed key.
    pub key: Arc<TokenKey>,
    /// When this manager last wrote the token's `last_used_at` (unix seconds; 0: never).
    pub touched_at: u64,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("token_id", &self.row.id)
            .field("touched_at", &self.touched_at)
            .finish()
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Counts emptyings; an insert made with an older generation is dropped.
    generation: u64,
    entries: HashMap<Uuid, CachedToken>,
}

/// The cache; cheap to share (`Arc` inside the store).
#[derive(Debug, Default)]
pub struct TokenCache {
    inner: Mutex<Inner>,
}

impl TokenCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves a consistent map: recover it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current generation: take it before reading the store for [`Self::insert`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The cached token `id`, if any.
    pub fn get(&self, id: Uuid) -> Option<CachedToken> {
        self.lock().entries.get(&id).cloned()
    }

    /// Keeps `token` unless the cache was emptied since `generation` was read.
    pub fn insert(&self, generation: u64, token: CachedToken) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES && !inner.entries.contains_key(&token.row.id) {
            inner.entries.clear();
        }
        inner.entries.insert(token.row.id, token);
    }

    /// Forgets every token: a token changed (here or on another replica).
    pub fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.clear();
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: Uuid) -> CachedToken {
        let row = TokenRow {
            id,
            account_id: "acct".into(),
            name: "t".into(),
            sealed_key: vec![1, 2, 3],
            created_at: 0,
            created_by: "test".into(),
            expires_at: None,
            allowed_cidrs: Vec::new(),
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
            rotation_id: None,
            policy: None,
        };
        CachedToken { row, key: Arc::new(TokenKey::from_bytes([7; 32])), touched_at: 0 }
    }

    #[test]
    fn an_insert_begun_before_an_invalidation_is_dropped() {
        let cache = TokenCache::default();
        let id = Uuid::new_v4();
        let before = cache.generation();
        cache.invalidate(); // a revoke committed while the handshake read the store
        cache.insert(before, token(id));
        assert!(cache.get(id).is_none(), "the row read before the revoke must not come back");
        cache.insert(cache.generation(), token(id));
        assert_eq!(cache.get(id).map(|t| t.row.id), Some(id));
    }

    #[test]
    fn invalidate_forgets_every_token() {
        let cache = TokenCache::default();
        for _ in 0..3 {
            cache.insert(cache.generation(), token(Uuid::new_v4()));
        }
        assert_eq!(cache.len(), 3);
        cache.invalidate();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_is_emptied_and_keeps_the_newcomer() {
        let cache = TokenCache::default();
        let generation = cache.generation();
        for _ in 0..MAX_ENTRIES {
            cache.insert(generation, token(Uuid::new_v4()));
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        let newcomer = Uuid::new_v4();
        cache.insert(generation, token(newcomer));
        assert_eq!(cache.len(), 1);
        assert!(cache.get(newcomer).is_some());
    }

    #[test]
    fn the_debug_form_shows_no_key() {
        let shown = format!("{:?}", token(Uuid::nil()));
        assert!(!shown.contains("key") && !shown.contains("sealed"), "{shown}");
    }
}
