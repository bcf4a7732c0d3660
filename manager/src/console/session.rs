//! The console's server-side sessions: a random id in the browser's cookie, everything else in
//! memory here. The map is keyed by the SHA-256 of the id, so this process holds no id a
//! browser could present; the CSRF token and the one-time secrets ([`Flash`]) live with the
//! session and are zeroized when dropped.
//!
//! A session ends on sign-out, after [`IDLE_SECS`] without a request, after [`ABSOLUTE_SECS`]
//! in all, or (checked on every request by [`super::auth`]) when its admin token is revoked
//! or expires. At most [`MAX_SESSIONS`] live at once; the least recently used goes first.
//! Sessions are per process: a restart signs every browser out.
use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::keys::random32;

/// A session ends after this long without a request.
pub const IDLE_SECS: u64 = 30 * 60;
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE_SECS: u64 = 12 * 3_600;
/// Most sessions kept at once.
pub const MAX_SESSIONS: usize = 10_000;

/// Most live sessions of one admin token (browsers signed in with it).
pub const MAX_SESSIONS_PER_TOKEN: usize = 16;
/// Most one-time secrets waiting in one session.
pub const MAX_FLASHES: usize = 8;
/// A one-time secret not shown within this long is dropped.
pub const FLASH_SECS: u64 = 10 * 60;

/// A random value for a cookie, a CSRF token or a flash id: 32 bytes, hex.
pub fn random_id() -> Zeroizing<String> {
    Zeroizing::new(hex::encode(random32()))
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// A secret shown once: a new token's value with what the page says about it.
#[derive(Debug)]
pub struct Flash {
    /// What kind of secret (the page's heading).
    pub title: String,
    /// The account it belongs to, for the ready-to-paste lines (none for admin tokens).
    pub account: Option<String>,
    /// The token's name.
    pub name: String,
    /// Where the page links back to.
    pub back: String,
    /// The value itself.
    pub value: Zeroizing<String>,
    created_at: u64,
}

impl Flash {
    /// A flash made at `now`.
    pub fn new(
        title: String,
        account: Option<String>,
        name: String,
        back: String,
        value: Zeroizing<String>,
        now: u64,
    ) -> Self {
        Self { title, account, name, back, value, created_at: now }
    }
}

/// One signed-in browser.
#[derive(Debug)]
struct Session {
    admin_token_id: Uuid,
    csrf: Zeroizing<String>,
    created_at: u64,
    last_seen: u64,
    /// A message for the next page (the outcome of the last action).
    notice: Option<Notice>,
    flashes: HashMap<[u8; 32], Flash>,
}

/// The outcome of an action, shown once on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Whether it reports a failure.
    pub error: bool,
    /// The text.
    pub text: String,
}

/// What a request learns of its session.
#[derive(Debug, Clone)]
pub struct Current {
    /// The admin token the browser signed in with.
    pub admin_token_id: Uuid,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: Zeroizing<String>,
}

/// Why a cookie names no usable session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// No such session (never was, signed out, evicted, or the manager restarted).
    #[error("you are not signed in")]
    Unknown,
    /// Idle too long.
    #[error("your session ended after {} minutes without activity; sign in again", IDLE_SECS / 60)]
    Idle,
    /// Too old.
    #[error("your session ended after {} hours; sign in again", ABSOLUTE_SECS / 3600)]
    Absolute,
}

/// Every session of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock leaves a consistent map (no invariant spans a panic).
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session for `admin_token_id`; the cookie value to send.
    pub fn create(&self, admin_token_id: Uuid, now: u64) -> Zeroizing<String> {
        let id = random_id();
        let session = Session {
            admin_token_id,
            csrf: random_id(),
            created_at: now,
            last_seen: now,
            notice: None,
            flashes: HashMap::new(),
        };
        let mut map = self.lock();
        map.retain(|_, s| live(s, now).is_ok());
        // One admin token holds at most MAX_SESSIONS_PER_TOKEN sessions: its own oldest goes,
        // so signing in over and over evicts only the signer's sessions, never anyone else's.
        let own: Vec<_> = map
            .iter()
            .filter(|(_, s)| s.admin_token_id == admin_token_id)
            .map(|(k, s)| (*k, s.last_seen))
            .collect();
        if own.len() >= MAX_SESSIONS_PER_TOKEN {
            if let Some((oldest, _)) = own.iter().min_by_key(|(_, seen)| *seen) {
                map.remove(oldest);
            }
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(key_of(&id), session);
        id
    }

    /// The session of cookie value `id` at `now`, marked used; an ended one is removed.
    pub fn touch(&self, id: &str, now: u64) -> Result<Current, Ended> {
        let key = key_of(id);
        let mut map = self.lock();
        let session = map.get_mut(&key).ok_or(Ended::Unknown)?;
        if let Err(ended) = live(session, now) {
            map.remove(&key);
            return Err(ended);
        }
        session.last_seen = now;
        Ok(Current { admin_token_id: session.admin_token_id, csrf: session.csrf.clone() })
    }

    /// Ends the session of cookie value `id` (sign-out, or its admin token is no longer valid).
    pub fn end(&self, id: &str) {
        self.lock().remove(&key_of(id));
    }

    /// Ends every session of an admin token (it was revoked from this console).
    pub fn end_all_of(&self, admin_token_id: Uuid) {
        self.lock().retain(|_, s| s.admin_token_id != admin_token_id);
    }

    /// Whether `presented` is the CSRF token of the session `id` (compared in constant time).
    pub fn csrf_matches(&self, id: &str, presented: &str) -> bool {
        let map = self.lock();
        map.get(&key_of(id)).is_some_and(|s| {
            s.csrf.len() == presented.len() && bool::from(s.csrf.as_bytes().ct_eq(presented.as_bytes()))
        })
    }

    /// Leaves a notice for the next page of session `id`.
    pub fn notify(&self, id: &str, notice: Notice) {
        if let Some(s) = self.lock().get_mut(&key_of(id)) {
            s.notice = Some(notice);
        }
    }

    /// Takes the waiting notice of session `id`.
    pub fn take_notice(&self, id: &str) -> Option<Notice> {
        self.lock().get_mut(&key_of(id)).and_then(|s| s.notice.take())
    }

    /// Keeps `flash` for one showing; its id (for the page's address), `None` without a session.
    pub fn put_flash(&self, id: &str, flash: Flash, now: u64) -> Option<Zeroizing<String>> {
        let mut map = self.lock();
        let session = map.get_mut(&key_of(id))?;
        session.flashes.retain(|_, f| f.created_at.saturating_add(FLASH_SECS) > now);
        if session.flashes.len() >= MAX_FLASHES {
            if let Some(oldest) = session.flashes.iter().min_by_key(|(_, f)| f.created_at).map(|(k, _)| *k) {
                session.flashes.remove(&oldest);
            }
        }
        let flash_id = random_id();
        session.flashes.insert(key_of(&flash_id), flash);
        Some(flash_id)
    }

    /// Takes the flash `flash_id` of session `id` (a second call finds nothing).
    pub fn take_flash(&self, id: &str, flash_id: &str, now: u64) -> Option<Flash> {
        let mut map = self.lock();
        let session = map.get_mut(&key_of(id))?;
        let flash = session.flashes.remove(&key_of(flash_id))?;
        (flash.created_at.saturating_add(FLASH_SECS) > now).then_some(flash)
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn live(s: &Session, now: u64) -> Result<(), Ended> {
    if s.created_at.saturating_add(ABSOLUTE_SECS) <= now {
        Err(Ended::Absolute)
    } else if s.last_seen.saturating_add(IDLE_SECS) <= now {
        Err(Ended::Idle)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_idle_or_old_and_on_sign_out() {
        let sessions = Sessions::default();
        let token = Uuid::new_v4();
        let id = sessions.create(token, 1_000);
        assert_eq!(sessions.touch(&id, 1_001).map(|c| c.admin_token_id), Ok(token));
        assert_eq!(sessions.touch(&id, 1_001 + IDLE_SECS).err(), Some(Ended::Idle));
        assert_eq!(sessions.touch(&id, 1_002).err(), Some(Ended::Unknown), "an ended session is gone");

        let id = sessions.create(token, 1_000);
        let mut now = 1_000;
        while now < 1_000 + ABSOLUTE_SECS - IDLE_SECS / 2 {
            now += IDLE_SECS / 2;
            assert!(sessions.touch(&id, now).is_ok());
        }
        assert_eq!(sessions.touch(&id, 1_000 + ABSOLUTE_SECS).err(), Some(Ended::Absolute));

        let id = sessions.create(token, 1_000);
        sessions.end(&id);
        assert_eq!(sessions.touch(&id, 1_000).err(), Some(Ended::Unknown));
        assert_eq!(sessions.touch("not-a-session", 1_000).err(), Some(Ended::Unknown));
    }

    #[test]
    fn signing_in_again_and_again_evicts_only_the_signers_own_sessions() {
        // Outside review: any admin token that could sign in pushed every other browser out by
        // filling the global cap with fresh sessions.
        let sessions = Sessions::default();
        let (victim, flooder) = (Uuid::new_v4(), Uuid::new_v4());
        let kept = sessions.create(victim, 1_000);
        let first = sessions.create(flooder, 1_000);
        for i in 0..(MAX_SESSIONS_PER_TOKEN as u64 * 3) {
            sessions.create(flooder, 1_001 + i);
        }
        assert!(sessions.touch(&kept, 1_100).is_ok(), "the other token's session stays");
        assert_eq!(sessions.touch(&first, 1_100).err(), Some(Ended::Unknown), "the flooder's oldest went");
        let flooders = sessions.lock().values().filter(|s| s.admin_token_id == flooder).count();
        assert_eq!(flooders, MAX_SESSIONS_PER_TOKEN);
    }

    #[test]
    fn csrf_tokens_match_only_their_session() {
        let sessions = Sessions::default();
        let a = sessions.create(Uuid::new_v4(), 1);
        let b = sessions.create(Uuid::new_v4(), 1);
        let csrf_a = sessions.touch(&a, 1).map(|c| c.csrf).unwrap_or_default();
        assert!(sessions.csrf_matches(&a, &csrf_a));
        assert!(!sessions.csrf_matches(&b, &csrf_a));
        assert!(!sessions.csrf_matches(&a, ""));
        assert!(!sessions.csrf_matches(&a, "é"), "multi-byte input is just a mismatch");
    }

    #[test]
    fn a_flash_is_shown_once_and_expires() {
        let sessions = Sessions::default();
        let s = sessions.create(Uuid::new_v4(), 1);
        let flash = || Flash::new("t".into(), None, "n".into(), "/ui/".into(), Zeroizing::new("v".into()), 1);
        let f = sessions.put_flash(&s, flash(), 1).unwrap_or_default();
        assert!(sessions.take_flash(&s, &f, 2).is_some());
        assert!(sessions.take_flash(&s, &f, 2).is_none(), "a second showing finds nothing");
        let f = sessions.put_flash(&s, flash(), 1).unwrap_or_default();
        assert!(sessions.take_flash(&s, &f, 1 + FLASH_SECS).is_none());
        let other = sessions.create(Uuid::new_v4(), 1);
        let f = sessions.put_flash(&s, flash(), 1).unwrap_or_default();
        assert!(sessions.take_flash(&other, &f, 2).is_none(), "another session cannot take it");
    }
}
