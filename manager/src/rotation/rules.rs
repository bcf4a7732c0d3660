//! The rules of a rotation that need no I/O: the successor's lifetime and networks, who may
//! acknowledge, and how an ack's detail is stored.
use uuid::Uuid;

use crate::registry::SessionInfo;
use crate::store::rotations::{DelegateState, RotationDelegate, RotationRow};
use crate::store::tokens;
use crate::tokens::TokenSpec;

/// Whether a tracked delegate has moved onto the successor: it acknowledged `applied` (which
/// it sends only once the new token is where its next start reads it: token file written,
/// successor container running) and a session on the new token was seen. A session on the
/// new token alone is not enough: the delegate's proof handshake opens one before anything is
/// written, and a delegate killed right after it would restart on the old token, revoked.
pub fn has_moved(d: &RotationDelegate) -> bool {
    d.state == DelegateState::Reconnected && d.outcome == Some(crate::store::rotations::AckOutcome::Applied)
}

/// Longest rotate-ack detail kept (bytes, cut on a character boundary).
pub const MAX_ACK_DETAIL: usize = 512;

/// The successor's expiry and CIDRs: the old token's CIDRs; `expires_in_secs` from now when
/// given, else the old token's lifetime (expiry minus creation) from now, else none.
pub(super) fn successor_spec(old: &tokens::TokenRow, expires_in_secs: Option<u64>, now: u64) -> TokenSpec {
    let lifetime = expires_in_secs.or(old.expires_at.map(|e| e.saturating_sub(old.created_at).max(1)));
    TokenSpec {
        expires_at: lifetime.map(|l| now.saturating_add(l)),
        allowed_cidrs: old.allowed_cidrs.clone(),
        policy: old.policy,
    }
}

pub(super) fn pending(s: &SessionInfo, now: u64) -> RotationDelegate {
    RotationDelegate {
        instance: s.instance,
        name: s.name.clone(),
        session_id: s.session_id,
        state: DelegateState::Pending,
        outcome: None,
        detail: None,
        updated_at: now,
    }
}

/// Whether a session of `account` on `token_id` may acknowledge rotation `row`.
pub(super) fn acks_from(row: &RotationRow, account: &str, token_id: Uuid) -> bool {
    row.account_id == account && (token_id == row.old_token_id || token_id == row.new_token_id)
}

/// A delegate's ack detail as stored: control characters escaped, then bounded.
pub fn ack_detail(detail: &str) -> String {
    let shown = tether_protocol::text::escape_control(detail);
    tether_protocol::text::bounded(&shown, MAX_ACK_DETAIL).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delegate_has_moved_only_after_it_applied_and_reconnected() {
        use crate::store::rotations::AckOutcome;
        let d = |state, outcome| RotationDelegate {
            instance: Uuid::from_u128(1),
            name: "d".into(),
            session_id: Uuid::from_u128(2),
            state,
            outcome,
            detail: None,
            updated_at: 0,
        };
        // Review of issue 10 (N3): the proof handshake alone marked a delegate moved, so a
        // delegate killed before writing its token file was left on a revoked token.
        assert!(!has_moved(&d(DelegateState::Reconnected, None)), "proof handshake only");
        assert!(!has_moved(&d(DelegateState::Reconnected, Some(AckOutcome::Failed))));
        assert!(!has_moved(&d(DelegateState::Reconnected, Some(AckOutcome::Manual))));
        assert!(!has_moved(&d(DelegateState::Acked, Some(AckOutcome::Applied))), "not seen on the new token");
        assert!(has_moved(&d(DelegateState::Reconnected, Some(AckOutcome::Applied))));
    }

    #[test]
    fn ack_details_are_bounded_on_a_character_boundary_and_escaped() {
        // The detail that aborted the manager (issue 10, finding 2).
        let crash = format!("{}é", "x".repeat(511));
        assert_eq!(ack_detail(&crash), "x".repeat(511));
        for tail in ["é", "日", "😀"] {
            for pad in 505..=513 {
                let d = ack_detail(&format!("{}{tail}", "a".repeat(pad)));
                assert!(d.len() <= MAX_ACK_DETAIL);
            }
        }
        let shown = ack_detail("ok\u{1b}[2J\n");
        assert!(!tether_protocol::text::has_control(&ack_detail("a\u{1b}]0;t\u{7}\nb")));
        assert_eq!(shown, "ok\\u{1b}[2J\\u{a}");
    }

    fn row(account: &str, old: u128, new: u128) -> RotationRow {
        RotationRow {
            id: Uuid::from_u128(1),
            account_id: account.into(),
            old_token_id: Uuid::from_u128(old),
            new_token_id: Uuid::from_u128(new),
            started_at: 0,
            started_by: "t".into(),
            deadline: 10,
            finished_at: None,
            outcome: None,
        }
    }

    #[test]
    fn acks_count_only_from_the_rotations_tokens_and_account() {
        let r = row("acme", 10, 11);
        assert!(acks_from(&r, "acme", Uuid::from_u128(10)));
        assert!(acks_from(&r, "acme", Uuid::from_u128(11)));
        assert!(!acks_from(&r, "acme", Uuid::from_u128(12)), "another token of the account");
        assert!(!acks_from(&r, "other", Uuid::from_u128(10)), "another account");
    }

    fn token_row(created_at: u64, expires_at: Option<u64>) -> tokens::TokenRow {
        tokens::TokenRow {
            id: Uuid::from_u128(5),
            account_id: "acme".into(),
            name: "t".into(),
            sealed_key: vec![],
            created_at,
            created_by: "t".into(),
            expires_at,
            allowed_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
            rotation_id: None,
            policy: None,
        }
    }

    #[test]
    fn the_successor_keeps_the_lifetime_and_cidrs_of_the_old_token() {
        // Issue 10, finding 4: a rotation used to drop the expiry.
        let old = token_row(1_000, Some(1_000 + 3_600));
        let spec = successor_spec(&old, None, 5_000);
        assert_eq!(spec.expires_at, Some(5_000 + 3_600));
        assert_eq!(spec.allowed_cidrs, old.allowed_cidrs);
        assert_eq!(successor_spec(&old, Some(60), 5_000).expires_at, Some(5_060));
        assert_eq!(successor_spec(&token_row(1_000, None), None, 5_000).expires_at, None);
        assert_eq!(successor_spec(&token_row(1_000, None), Some(7), 5_000).expires_at, Some(5_007));
    }
}
