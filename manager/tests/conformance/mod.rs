//! The checks of the store conformance suite (`store_conformance.rs`), each an async function
//! generic over [`StoreOps`], run unchanged on every backend: the rows the tests write, then
//! one function per area of the interface, then the concurrency checks, which take two
//! handles on the same data (two "managers").
#![allow(dead_code)]

use std::time::Duration;

use tether_manager::store::access::RestrictionRow;
use tether_manager::store::accounts::Account;
use tether_manager::store::admin::AdminTokenRow;
use tether_manager::store::audit::{Actor, AuditEntry};
use tether_manager::store::rotations::{
    AckOutcome, DelegateState, RotationDelegate, RotationOutcome, RotationRow, ShownDelegateState,
};
use tether_manager::store::tokens::{RotationPolicy, TokenRow};
use tether_manager::store::{
    AdminRevoke, DeleteOutcome, RestrictionDelete, RotationPlan, Snapshot, StoreError, StoreOps,
};
use uuid::Uuid;

/// How long one concurrency check may take.
pub const LIMIT: Duration = Duration::from_secs(60);

pub const NOW: u64 = 1_700_000_000;

pub fn actor() -> Actor {
    Actor { who: "admin:test".into(), source_ip: Some("127.0.0.1".into()) }
}

pub fn account(id: &str) -> Account {
    Account { id: id.into(), name: format!("{id} inc"), created_at: NOW, created_by: "init".into() }
}

pub fn token(account: &str, name: &str, created_at: u64) -> TokenRow {
    TokenRow {
        id: Uuid::new_v4(),
        account_id: account.into(),
        name: name.into(),
        sealed_key: vec![0, 1, 2, 255, 254, name.len() as u8],
        created_at,
        created_by: "admin:test".into(),
        expires_at: None,
        allowed_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotation_id: None,
        policy: None,
    }
}

pub fn admin(name: &str, account: Option<&str>, restriction: Option<Uuid>) -> AdminTokenRow {
    AdminTokenRow {
        id: Uuid::new_v4(),
        name: name.into(),
        hash: format!("{:x}", Uuid::new_v4().as_u128()),
        scopes: vec!["admin".into()],
        created_at: NOW,
        created_by: "init".into(),
        expires_at: None,
        allowed_cidrs: vec![],
        revoked_at: None,
        last_used_at: None,
        account_id: account.map(str::to_owned),
        restriction_id: restriction,
    }
}

pub fn restriction(name: &str) -> RestrictionRow {
    RestrictionRow {
        id: Uuid::new_v4(),
        name: name.into(),
        rules: vec!["GET /api/v1/accounts/*/tokens".into()],
        created_at: NOW,
        created_by: "admin:test".into(),
    }
}

pub fn entry(action: &str, target: &str) -> AuditEntry {
    actor().entry(NOW, action, target, "detail")
}

pub fn delegate(name: &str) -> RotationDelegate {
    RotationDelegate {
        instance: Uuid::new_v4(),
        name: name.into(),
        session_id: Uuid::new_v4(),
        state: DelegateState::Pending,
        outcome: None,
        detail: None,
        updated_at: NOW,
    }
}

/// An account `acme` with its default token `default`.
pub async fn with_account<S: StoreOps>(s: &S, id: &str) -> TokenRow {
    let t = token(id, "default", NOW);
    s.create_account(account(id), t.clone(), vec![entry("account.create", &format!("account:{id}"))])
        .await
        .unwrap();
    t
}

/// The plan that rotates `old` (as the manager makes it).
pub fn plan(old: &TokenRow, now: u64) -> RotationPlan {
    let rotation_id = Uuid::new_v4();
    let mut successor = token(&old.account_id, &old.name, now);
    successor.policy = old.policy;
    RotationPlan {
        old: old.clone(),
        old_new_name: format!(
            "{}~{}",
            old.name,
            old.id.simple().to_string().chars().take(8).collect::<String>()
        ),
        successor: successor.clone(),
        rotation: RotationRow {
            id: rotation_id,
            account_id: old.account_id.clone(),
            old_token_id: old.id,
            new_token_id: successor.id,
            started_at: now,
            started_by: "admin:test".into(),
            deadline: now + 600,
            finished_at: None,
            outcome: None,
        },
        sealed_successor: vec![7; 48],
        audit: actor().entry(now, "token.rotate", &format!("token:{}/{}", old.account_id, old.id), "r"),
    }
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

/// The audit entries with `action` on `target`.
async fn audit_count<S: StoreOps>(s: &S, action: &str, target: &str) -> usize {
    s.audit(10_000, None).await.unwrap().iter().filter(|e| e.action == action && e.target == target).count()
}

// ---- one function per area -------------------------------------------------------------------

pub async fn meta<S: StoreOps>(s: &S) {
    assert_eq!(s.meta_get("initialised_at").await.unwrap(), None);
    let values = vec![("initialised_at".to_owned(), "1".to_owned()), ("k".to_owned(), "v".to_owned())];
    s.meta_set(values, vec![entry("meta.set", "meta")]).await.unwrap();
    assert_eq!(s.meta_get("initialised_at").await.unwrap().as_deref(), Some("1"));
    s.meta_set(vec![("k".into(), "w".into())], vec![]).await.unwrap();
    assert_eq!(s.meta_get("k").await.unwrap().as_deref(), Some("w"));
    assert_eq!(audit_count(s, "meta.set", "meta").await, 1);
}

pub async fn accounts<S: StoreOps>(s: &S) {
    assert!(s.is_empty().await.unwrap());
    let default = with_account(s, "zeta").await;
    with_account(s, "acme").await;
    assert!(!s.is_empty().await.unwrap());
    assert_eq!(s.account("acme").await.unwrap(), Some(account("acme")));
    assert_eq!(s.account("nope").await.unwrap(), None);
    let ids: Vec<String> = s.accounts().await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["acme", "zeta"], "by id");
    let again = s.create_account(account("acme"), token("acme", "other", NOW), vec![]).await;
    match again {
        Err(StoreError::Conflict(m)) => assert_eq!(m, "account `acme` already exists"),
        other => panic!("a taken account id: {other:?}"),
    }
    assert_eq!(s.token(default.id).await.unwrap(), Some(default));
    assert_eq!(audit_count(s, "account.create", "account:acme").await, 1, "the refused create wrote nothing");
}

pub async fn tokens<S: StoreOps>(s: &S) {
    let default = with_account(s, "acme").await;
    with_account(s, "other").await;
    let mut a = token("acme", "ci", NOW + 5);
    a.expires_at = Some(NOW + 100);
    a.policy = Some(RotationPolicy { every: 3600, grace: 60 });
    s.create_token(a.clone(), entry("token.create", "t")).await.unwrap();
    let b = token("acme", "build", NOW + 5);
    s.create_token(b.clone(), entry("token.create", "t")).await.unwrap();
    // Duplicate name in the account: a conflict with the SQLite text; another account is fine.
    match s.create_token(token("acme", "ci", NOW), entry("token.create", "t")).await {
        Err(StoreError::Conflict(m)) => assert_eq!(m, "a token named `ci` already exists in this account"),
        other => panic!("a taken name: {other:?}"),
    }
    s.create_token(token("other", "ci", NOW), entry("token.create", "t")).await.unwrap();
    assert!(matches!(
        s.create_token(token("missing", "x", NOW), entry("token.create", "t")).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.token(a.id).await.unwrap(), Some(a.clone()), "every field round-trips");
    assert_eq!(s.token(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(s.find_token("acme", "ci").await.unwrap(), Some(a.clone()));
    assert_eq!(s.find_token("acme", &a.id.to_string()).await.unwrap(), Some(a.clone()));
    assert_eq!(s.find_token("other", &a.id.to_string()).await.unwrap(), None, "another account's id");
    assert_eq!(s.find_token("acme", "nope").await.unwrap(), None);
    let names: Vec<String> = s.tokens("acme").await.unwrap().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["default", "build", "ci"], "by creation time, then name");
    assert_eq!(s.tokens("missing").await.unwrap(), None);
    let touched = s.touch_token(default.id, NOW + 9).await.unwrap().unwrap();
    assert_eq!(touched.last_used_at, Some(NOW + 9));
    assert_eq!(s.touch_token(Uuid::new_v4(), NOW).await.unwrap(), None);
}

pub async fn revoke_and_delete<S: StoreOps>(s: &S) {
    with_account(s, "acme").await;
    let t = token("acme", "ci", NOW);
    s.create_token(t.clone(), entry("token.create", "t")).await.unwrap();
    let target = format!("token:acme/{}", t.id);
    match s.delete_revoked_token("acme", "ci", NOW, &actor()).await.unwrap() {
        DeleteOutcome::NotRevoked => {}
        other => panic!("deleting an active token: {other:?}"),
    }
    let (row, newly) = s.revoke_token("acme", "ci", NOW + 1, &actor()).await.unwrap();
    assert!(newly);
    assert_eq!((row.revoked_at, row.revoked_by.as_deref()), (Some(NOW + 1), Some("admin:test")));
    let (again, newly) = s.revoke_token("acme", &t.id.to_string(), NOW + 2, &actor()).await.unwrap();
    assert!(!newly, "revoking twice changes nothing");
    assert_eq!(again.revoked_at, Some(NOW + 1));
    assert_eq!(audit_count(s, "token.revoke", &target).await, 1, "one audit entry");
    let audit = s.audit(1, None).await.unwrap();
    assert_eq!((audit[0].detail.as_str(), audit[0].source_ip.as_deref()), ("ci", Some("127.0.0.1")));
    assert!(matches!(s.revoke_token("acme", "nope", NOW, &actor()).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.revoke_token("nope", "ci", NOW, &actor()).await, Err(StoreError::NotFound(_))));
    match s.delete_revoked_token("acme", "ci", NOW + 3, &actor()).await.unwrap() {
        DeleteOutcome::Deleted(row) => assert_eq!(row.id, t.id),
        other => panic!("deleting a revoked token: {other:?}"),
    }
    assert_eq!(audit_count(s, "token.delete", &target).await, 1);
    assert_eq!(s.token(t.id).await.unwrap(), None);
    assert_eq!(s.delete_revoked_token("acme", "ci", NOW, &actor()).await.unwrap(), DeleteOutcome::NotFound);
    // The name is free again.
    s.create_token(token("acme", "ci", NOW), entry("token.create", "t")).await.unwrap();
}

pub async fn token_policy<S: StoreOps>(s: &S) {
    with_account(s, "acme").await;
    let t = token("acme", "ci", NOW);
    s.create_token(t.clone(), entry("token.create", "t")).await.unwrap();
    let policy = RotationPolicy { every: 86_400, grace: 300 };
    let row = s.set_token_policy("acme", "ci", Some(policy), NOW + 1, &actor()).await.unwrap();
    assert_eq!(row.policy, Some(policy));
    assert_eq!(s.token(t.id).await.unwrap().unwrap().policy, Some(policy));
    let row = s.set_token_policy("acme", &t.id.to_string(), None, NOW + 2, &actor()).await.unwrap();
    assert_eq!(row.policy, None);
    let target = format!("token:acme/{}", t.id);
    let details: Vec<String> = s
        .audit(100, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "token.update" && e.target == target)
        .map(|e| e.detail)
        .collect();
    assert_eq!(details, ["rotation policy cleared", "rotate_every_secs=86400 grace_secs=300"]);
    assert!(matches!(
        s.set_token_policy("acme", "nope", Some(policy), NOW, &actor()).await,
        Err(StoreError::NotFound(_))
    ));
    s.revoke_token("acme", "ci", NOW + 3, &actor()).await.unwrap();
    match s.set_token_policy("acme", "ci", Some(policy), NOW + 4, &actor()).await {
        Err(StoreError::Conflict(m)) => assert_eq!(m, "token `ci` is revoked"),
        other => panic!("a revoked token's policy: {other:?}"),
    }
}

pub async fn admin_tokens<S: StoreOps>(s: &S) {
    with_account(s, "acme").await;
    let r = restriction("read-only");
    s.create_restriction(r.clone(), entry("restriction.create", "r")).await.unwrap();
    let op = admin("operator", None, None);
    let bound = admin("acme-ci", Some("acme"), Some(r.id));
    s.create_admin_token(op.clone(), entry("admin_token.create", "a")).await.unwrap();
    s.create_admin_token(bound.clone(), entry("admin_token.create", "a")).await.unwrap();
    match s.create_admin_token(admin("operator", None, None), entry("admin_token.create", "a")).await {
        Err(StoreError::Conflict(m)) => assert_eq!(m, "an admin token named `operator` already exists"),
        other => panic!("a taken admin token name: {other:?}"),
    }
    assert!(matches!(
        s.create_admin_token(admin("x", Some("missing"), None), entry("admin_token.create", "a")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.create_admin_token(admin("y", None, Some(Uuid::new_v4())), entry("admin_token.create", "a")).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.admin_token_by_hash(&op.hash).await.unwrap(), Some((op.clone(), None)));
    assert_eq!(
        s.admin_token_by_hash(&bound.hash).await.unwrap(),
        Some((bound.clone(), Some(Some(r.clone()))))
    );
    assert_eq!(s.admin_token_by_hash("nope").await.unwrap(), None);
    s.touch_admin_token(op.id, NOW + 7).await.unwrap();
    assert_eq!(s.find_admin_token("operator").await.unwrap().unwrap().last_used_at, Some(NOW + 7));
    assert_eq!(s.find_admin_token(&bound.id.to_string()).await.unwrap(), Some(bound.clone()));
    assert_eq!(s.find_admin_token("nope").await.unwrap(), None);
    let (all, names) = s.admin_tokens(None).await.unwrap();
    let listed: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(listed, ["acme-ci", "operator"], "by creation time, then name");
    assert_eq!(names.get(&r.id).map(String::as_str), Some("read-only"));
    let (of_acme, _) = s.admin_tokens(Some("acme")).await.unwrap();
    assert_eq!(of_acme, vec![bound.clone()]);
    // A restriction in use is kept; once its user is revoked it can go, and the token then
    // names a restriction that no longer exists.
    match s.delete_restriction("read-only", NOW, &actor()).await.unwrap() {
        RestrictionDelete::InUse { row, users } => assert_eq!((row.id, users), (r.id, 1)),
        other => panic!("a restriction in use: {other:?}"),
    }
    assert!(matches!(
        s.revoke_admin_token(bound.id, NOW, &actor()).await.unwrap(),
        AdminRevoke::Revoked { newly: true, .. }
    ));
    match s.delete_restriction(&r.id.to_string(), NOW, &actor()).await.unwrap() {
        RestrictionDelete::Deleted(row) => assert_eq!(row, r),
        other => panic!("a restriction used by revoked tokens only: {other:?}"),
    }
    assert_eq!(audit_count(s, "restriction.delete", &format!("restriction:{}", r.id)).await, 1);
    assert_eq!(s.delete_restriction("read-only", NOW, &actor()).await.unwrap(), RestrictionDelete::NotFound);
    let (_, gone) = s.admin_token_by_hash(&bound.hash).await.unwrap().unwrap();
    assert_eq!(gone, Some(None), "its restriction no longer exists");
}

pub async fn last_operator<S: StoreOps>(s: &S) {
    with_account(s, "acme").await;
    let (a, b) = (admin("a", None, None), admin("b", None, None));
    let scoped = admin("scoped", Some("acme"), None);
    let mut expired = admin("expired", None, None);
    expired.expires_at = Some(NOW - 1);
    for t in [&a, &b, &scoped, &expired] {
        s.create_admin_token(t.clone(), entry("admin_token.create", "a")).await.unwrap();
    }
    assert!(matches!(
        s.revoke_admin_token(scoped.id, NOW, &actor()).await.unwrap(),
        AdminRevoke::Revoked { newly: true, .. }
    ));
    match s.revoke_admin_token(a.id, NOW, &actor()).await.unwrap() {
        AdminRevoke::Revoked { row, newly: true } => assert_eq!(row.revoked_at, Some(NOW)),
        other => panic!("one of two operators: {other:?}"),
    }
    match s.revoke_admin_token(b.id, NOW, &actor()).await.unwrap() {
        AdminRevoke::LastOperator(row) => assert_eq!(row.id, b.id),
        other => panic!("the last operator (an expired one does not count): {other:?}"),
    }
    assert!(s.find_admin_token("b").await.unwrap().unwrap().revoked_at.is_none());
    assert!(matches!(
        s.revoke_admin_token(a.id, NOW, &actor()).await.unwrap(),
        AdminRevoke::Revoked { newly: false, .. }
    ));
    assert_eq!(s.revoke_admin_token(Uuid::new_v4(), NOW, &actor()).await.unwrap(), AdminRevoke::NotFound);
    assert_eq!(audit_count(s, "admin_token.revoke", &format!("admin_token:{}", a.id)).await, 1);
    assert_eq!(audit_count(s, "admin_token.revoke", &format!("admin_token:{}", b.id)).await, 0);
}

pub async fn restrictions<S: StoreOps>(s: &S) {
    let (z, a) = (restriction("zz"), restriction("aa"));
    s.create_restriction(z.clone(), entry("restriction.create", "r")).await.unwrap();
    s.create_restriction(a.clone(), entry("restriction.create", "r")).await.unwrap();
    match s.create_restriction(restriction("zz"), entry("restriction.create", "r")).await {
        Err(StoreError::Conflict(m)) => assert_eq!(m, "a restriction named `zz` already exists"),
        other => panic!("a taken restriction name: {other:?}"),
    }
    assert_eq!(s.find_restriction("zz").await.unwrap(), Some(z.clone()));
    assert_eq!(s.find_restriction(&a.id.to_string()).await.unwrap(), Some(a.clone()));
    assert_eq!(s.find_restriction("nope").await.unwrap(), None);
    assert_eq!(s.restrictions().await.unwrap(), vec![a, z], "by name");
}

pub async fn audit<S: StoreOps>(s: &S) {
    for i in 0..5 {
        let mut e = entry("thing.do", &format!("thing:{i}"));
        e.id = 999; // ignored
        s.append_audit(e).await.unwrap();
    }
    let all = s.audit(100, None).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].target, "thing:4");
    let older = s.audit(2, Some(all[1].id)).await.unwrap();
    assert_eq!(older.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["thing:2", "thing:1"]);
}

/// A rotation from start to finish. `sealed_of` reads the stored sealed successor of a
/// rotation straight from the backend's table.
pub async fn rotation_lifecycle<S: StoreOps, F, Fut>(s: &S, sealed_of: F)
where
    F: Fn(Uuid) -> Fut,
    Fut: std::future::Future<Output = Option<Vec<u8>>>,
{
    with_account(s, "acme").await;
    let old = token("acme", "ci", NOW);
    s.create_token(old.clone(), entry("token.create", "t")).await.unwrap();
    let p = plan(&old, NOW + 10);
    let rid = p.rotation.id;
    assert!(s.begin_rotation(p.clone()).await.unwrap());
    // The same plan again: the old token has changed (renamed, rotating).
    let mut again = plan(&old, NOW + 11);
    again.successor.name = "ci".into();
    assert!(!s.begin_rotation(again).await.unwrap());
    let renamed = s.token(old.id).await.unwrap().unwrap();
    assert_eq!((renamed.name.as_str(), renamed.rotation_id), (p.old_new_name.as_str(), Some(rid)));
    assert_eq!(
        s.find_token("acme", "ci").await.unwrap().unwrap().id,
        p.successor.id,
        "the successor has the name"
    );
    assert_eq!(s.rotation(rid).await.unwrap(), Some(p.rotation.clone()));
    assert_eq!(s.rotation(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(s.unfinished_rotations(10).await.unwrap(), vec![(p.rotation.clone(), Some(vec![7; 48]))]);
    assert_eq!(sealed_of(rid).await, Some(vec![7; 48]));
    assert_eq!(audit_count(s, "token.rotate", &format!("token:acme/{}", old.id)).await, 1);
    assert!(is_conflict(&s.snapshot().await), "no snapshot while a rotation runs");

    // Delegates: claims once per session, acks, reconnections.
    let d1 = delegate("alpha");
    let d2 = delegate("beta");
    assert!(s.claim_rotate_push(rid, d1.clone()).await.unwrap());
    assert!(!s.claim_rotate_push(rid, d1.clone()).await.unwrap(), "the same session is sent once");
    let mut d1_new_session = d1.clone();
    d1_new_session.session_id = Uuid::new_v4();
    assert!(s.claim_rotate_push(rid, d1_new_session).await.unwrap(), "a new session is sent again");
    s.add_rotation_delegate(rid, d2.clone()).await.unwrap();
    s.add_rotation_delegate(rid, d2.clone()).await.unwrap();
    let listed = s.rotation_delegates(rid).await.unwrap();
    assert_eq!(listed, vec![d1.clone(), d2.clone()], "by name, tracked once, the first session kept");
    assert!(s.rotation_ack(rid, d1.instance, AckOutcome::Applied, "ok".into(), NOW + 20).await.unwrap());
    assert!(!s.rotation_ack(rid, Uuid::new_v4(), AckOutcome::Applied, "ok".into(), NOW + 20).await.unwrap());
    assert!(s.rotation_ack(rid, d2.instance, AckOutcome::Manual, "by hand".into(), NOW + 20).await.unwrap());
    assert_eq!(s.rotation_reconnected(rid, d1.instance, "alpha", NOW + 30).await.unwrap(), 1);
    assert_eq!(s.rotation_reconnected(rid, d1.instance, "alpha", NOW + 31).await.unwrap(), 0, "already so");
    assert!(s.rotation_ack(rid, d1.instance, AckOutcome::Applied, "late".into(), NOW + 32).await.unwrap());
    let listed = s.rotation_delegates(rid).await.unwrap();
    assert_eq!(
        (listed[0].state, listed[0].outcome, listed[0].updated_at),
        (DelegateState::Reconnected, Some(AckOutcome::Applied), NOW + 32)
    );
    assert_eq!((listed[1].state, listed[1].detail.as_deref()), (DelegateState::Acked, Some("by hand")));
    let progress = s.rotation_progress(NOW + 10 + 301).await.unwrap();
    assert_eq!((progress.running, progress.past_half_grace), (1, 1));
    let mut shown = progress.delegates.clone();
    shown.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(shown, vec![(ShownDelegateState::Manual, 1), (ShownDelegateState::Reconnected, 1)]);
    assert_eq!(s.rotation_progress(NOW + 10 + 299).await.unwrap().past_half_grace, 0);
    let listed = s.rotations(Some("acme"), 10).await.unwrap();
    assert_eq!((listed.len(), listed[0].1.len()), (1, 2));
    assert!(s.rotations(Some("other"), 10).await.unwrap().is_empty());

    // Finish: the old token revoked (audited once), its mark cleared, the successor wiped.
    let system = Actor::system(format!("rotation:{rid}"));
    assert!(s.finish_rotation(rid, old.id, NOW + 40, RotationOutcome::Completed, &system).await.unwrap());
    assert!(!s.finish_rotation(rid, old.id, NOW + 41, RotationOutcome::GraceExpired, &system).await.unwrap());
    let finished = s.rotation(rid).await.unwrap().unwrap();
    assert_eq!((finished.finished_at, finished.outcome), (Some(NOW + 40), Some(RotationOutcome::Completed)));
    let old_now = s.token(old.id).await.unwrap().unwrap();
    assert_eq!((old_now.revoked_at, old_now.rotation_id), (Some(NOW + 40), None));
    assert_eq!(old_now.revoked_by.as_deref(), Some(system.who.as_str()));
    let target = format!("token:acme/{}", old.id);
    assert_eq!(audit_count(s, "token.revoke", &target).await, 1);
    let revoke = s.audit(100, None).await.unwrap().into_iter().find(|e| e.action == "token.revoke").unwrap();
    assert_eq!(revoke.detail, "completed");
    assert!(s.unfinished_rotations(10).await.unwrap().is_empty());
    assert_eq!(sealed_of(rid).await, None, "the sealed successor is wiped when the rotation finishes");
    assert!(
        !s.rotation_ack(rid, d2.instance, AckOutcome::Applied, "after".into(), NOW + 50).await.unwrap(),
        "finished"
    );
    assert_eq!(s.rotation_progress(NOW + 50).await.unwrap().running, 0);
    s.snapshot().await.unwrap();
}

/// A rotation plan for a token that was revoked (or renamed) since is refused.
pub async fn rotation_refused_when_stale<S: StoreOps>(s: &S) {
    with_account(s, "acme").await;
    let old = token("acme", "ci", NOW);
    s.create_token(old.clone(), entry("token.create", "t")).await.unwrap();
    let p = plan(&old, NOW + 1);
    s.revoke_token("acme", "ci", NOW, &actor()).await.unwrap();
    assert!(!s.begin_rotation(p.clone()).await.unwrap());
    assert_eq!(s.rotation(p.rotation.id).await.unwrap(), None, "nothing written");
    assert_eq!(s.token(p.successor.id).await.unwrap(), None);
    let mut gone = plan(&token("acme", "ghost", NOW), NOW);
    gone.successor.name = "ghost".into();
    assert!(!s.begin_rotation(gone).await.unwrap());
}

pub async fn due_for_rotation<S: StoreOps>(s: &S) {
    with_account(s, "acme").await;
    let policy = |every| Some(RotationPolicy { every, grace: 60 });
    let mut due_late = token("acme", "a", NOW - 100);
    due_late.policy = policy(50); // due at NOW - 50
    let mut due_early = token("acme", "b", NOW - 1000);
    due_early.policy = policy(100); // due at NOW - 900
    let mut not_yet = token("acme", "c", NOW);
    not_yet.policy = policy(10);
    let mut expired = token("acme", "d", NOW - 1000);
    expired.policy = policy(1);
    expired.expires_at = Some(NOW);
    let mut revoked = token("acme", "e", NOW - 1000);
    revoked.policy = policy(1);
    revoked.revoked_at = Some(NOW - 5);
    let mut huge = token("acme", "f", NOW - 1000);
    huge.policy = policy(u64::MAX); // never due, and no overflow
    let no_policy = token("acme", "g", NOW - 1000);
    for t in [&due_late, &due_early, &not_yet, &expired, &revoked, &huge, &no_policy] {
        s.create_token(t.clone(), entry("token.create", "t")).await.unwrap();
    }
    let due: Vec<String> =
        s.tokens_due_for_rotation(NOW, 10).await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(due, ["b", "a"], "oldest due first");
    assert_eq!(s.tokens_due_for_rotation(NOW, 1).await.unwrap().len(), 1);
    assert!(s.begin_rotation(plan(&due_early, NOW)).await.unwrap());
    let due: Vec<String> =
        s.tokens_due_for_rotation(NOW, 10).await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(due, ["a"], "a rotating token is not due");
}

/// Fills a store with one of everything (a finished rotation included).
pub async fn fill<S: StoreOps>(s: &S) {
    s.meta_set(vec![("initialised_at".into(), NOW.to_string())], vec![entry("init", "store")]).await.unwrap();
    with_account(s, "acme").await;
    with_account(s, "beta").await;
    let mut t = token("acme", "ci", NOW);
    t.policy = Some(RotationPolicy { every: 86_400, grace: 600 });
    s.create_token(t.clone(), entry("token.create", "t")).await.unwrap();
    let r = restriction("ro");
    s.create_restriction(r.clone(), entry("restriction.create", "r")).await.unwrap();
    s.create_admin_token(admin("op", None, None), entry("admin_token.create", "a")).await.unwrap();
    s.create_admin_token(admin("acme", Some("acme"), Some(r.id)), entry("admin_token.create", "a"))
        .await
        .unwrap();
    let p = plan(&t, NOW + 5);
    let rid = p.rotation.id;
    assert!(s.begin_rotation(p).await.unwrap());
    let d = delegate("alpha");
    s.claim_rotate_push(rid, d.clone()).await.unwrap();
    s.rotation_ack(rid, d.instance, AckOutcome::Applied, "ok".into(), NOW + 6).await.unwrap();
    s.finish_rotation(rid, t.id, NOW + 7, RotationOutcome::Completed, &Actor::system("rotation"))
        .await
        .unwrap();
}

pub async fn snapshot_restore<S: StoreOps>(from: &S, into: &S) {
    fill(from).await;
    let snap = from.snapshot().await.unwrap();
    let counts: Vec<usize> = snap.counts().into_iter().map(|(_, n)| n).collect();
    assert!(counts.iter().all(|n| *n > 0), "one of everything: {:?}", snap.counts());
    assert!(is_conflict(&from.restore(snap.clone()).await), "restoring into a store that is not empty");
    assert!(into.is_empty().await.unwrap());
    into.restore(snap.clone()).await.unwrap();
    let copied = into.snapshot().await.unwrap();
    assert_eq!(copied, snap, "a snapshot of the restored store is the snapshot restored");
    assert!(is_conflict(&into.restore(Snapshot::default()).await));
    // New audit entries continue after the restored ids.
    into.append_audit(entry("after", "restore")).await.unwrap();
    let newest = into.audit(1, None).await.unwrap();
    assert!(newest[0].id > snap.audit.iter().map(|e| e.id).max().unwrap_or(0));
    assert_eq!(newest[0].action, "after");
}

// ---- concurrency: two handles on the same data -----------------------------------------------

/// Two writers create tokens of the same names at once: each name once, the loser a conflict.
pub async fn concurrent_token_names<S: StoreOps>(a: &S, b: &S) {
    with_account(a, "acme").await;
    for i in 0..10 {
        let name = format!("race-{i}");
        let (x, y) = tokio::time::timeout(LIMIT, async {
            tokio::join!(
                a.create_token(token("acme", &name, NOW), entry("token.create", "a")),
                b.create_token(token("acme", &name, NOW), entry("token.create", "b"))
            )
        })
        .await
        .expect("bounded");
        let wins = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "exactly one create of `{name}` wins: {x:?} / {y:?}");
        assert!(is_conflict(&x) || is_conflict(&y), "the other is a conflict: {x:?} / {y:?}");
    }
    let names = a.tokens("acme").await.unwrap().unwrap();
    assert_eq!(names.len(), 11);
    assert_eq!(
        a.audit(1000, None).await.unwrap().iter().filter(|e| e.action == "token.create").count(),
        10,
        "losers wrote no audit entry"
    );
}

/// Two managers revoke the last two operator admin tokens at once: exactly one succeeds, and
/// one operator token stays. Each round starts with exactly two active operator tokens.
pub async fn concurrent_last_operator<S: StoreOps>(a: &S, b: &S) {
    let mut survivor: Option<Uuid> = None;
    for round in 0..5 {
        let (x, y) = (admin(&format!("x{round}"), None, None), admin(&format!("y{round}"), None, None));
        a.create_admin_token(x.clone(), entry("admin_token.create", "a")).await.unwrap();
        b.create_admin_token(y.clone(), entry("admin_token.create", "a")).await.unwrap();
        if let Some(previous) = survivor {
            let r = a.revoke_admin_token(previous, NOW, &actor()).await.unwrap();
            assert!(matches!(r, AdminRevoke::Revoked { newly: true, .. }), "one of three: {r:?}");
        }
        let who = actor();
        let (rx, ry) = tokio::time::timeout(LIMIT, async {
            tokio::join!(a.revoke_admin_token(x.id, NOW, &who), b.revoke_admin_token(y.id, NOW, &who))
        })
        .await
        .expect("bounded");
        let (rx, ry) = (rx.unwrap(), ry.unwrap());
        let revoked =
            [&rx, &ry].iter().filter(|r| matches!(r, AdminRevoke::Revoked { newly: true, .. })).count();
        assert_eq!(revoked, 1, "exactly one of the last two is revoked: {rx:?} / {ry:?}");
        assert!(matches!((&rx, &ry), (AdminRevoke::LastOperator(_), _) | (_, AdminRevoke::LastOperator(_))));
        let (all, _) = a.admin_tokens(None).await.unwrap();
        let active: Vec<Uuid> = all.iter().filter(|t| t.revoked_at.is_none()).map(|t| t.id).collect();
        assert_eq!(active.len(), 1, "one operator token stays");
        survivor = active.first().copied();
    }
}

/// Two managers start the same rotation at once: one starts it, the other is told the token
/// changed.
pub async fn concurrent_rotation_start<S: StoreOps>(a: &S, b: &S) {
    with_account(a, "acme").await;
    for i in 0..5 {
        let old = token("acme", &format!("rot-{i}"), NOW);
        a.create_token(old.clone(), entry("token.create", "t")).await.unwrap();
        let (pa, pb) = (plan(&old, NOW + 1), plan(&old, NOW + 1));
        let (x, y) =
            tokio::time::timeout(LIMIT, async { tokio::join!(a.begin_rotation(pa), b.begin_rotation(pb)) })
                .await
                .expect("bounded");
        let started = [&x, &y].iter().filter(|r| matches!(r, Ok(true))).count();
        assert_eq!(started, 1, "one rotation starts: {x:?} / {y:?}");
        assert!(matches!((&x, &y), (Ok(false), _) | (_, Ok(false))), "the other is refused: {x:?} / {y:?}");
        assert_eq!(a.unfinished_rotations(100).await.unwrap().len(), i + 1);
    }
}

/// One manager revokes a token while another starts its rotation: whichever commits first, the
/// other sees it, and no half-written rotation is left (a started rotation has its successor
/// and its mark on the old token; a refused one wrote nothing).
pub async fn concurrent_revoke_and_rotation<S: StoreOps>(a: &S, b: &S) {
    with_account(a, "acme").await;
    let who = actor();
    for i in 0..5 {
        let old = token("acme", &format!("contested-{i}"), NOW);
        a.create_token(old.clone(), entry("token.create", "t")).await.unwrap();
        let p = plan(&old, NOW + 1);
        let id = old.id.to_string();
        let (revoked, started) = tokio::time::timeout(LIMIT, async {
            tokio::join!(a.revoke_token("acme", &id, NOW + 1, &who), b.begin_rotation(p.clone()))
        })
        .await
        .expect("bounded");
        let (_, newly) = revoked.unwrap();
        assert!(newly, "the revoke always lands (by id, renamed or not)");
        let after = a.token(old.id).await.unwrap().unwrap();
        assert!(after.revoked_at.is_some());
        match started.unwrap() {
            true => {
                assert_eq!(after.rotation_id, Some(p.rotation.id));
                assert!(a.token(p.successor.id).await.unwrap().is_some());
                assert!(a.rotation(p.rotation.id).await.unwrap().is_some());
            }
            false => {
                assert_eq!((after.rotation_id, after.name.as_str()), (None, old.name.as_str()));
                assert_eq!(a.token(p.successor.id).await.unwrap(), None);
                assert_eq!(a.rotation(p.rotation.id).await.unwrap(), None);
            }
        }
    }
}
