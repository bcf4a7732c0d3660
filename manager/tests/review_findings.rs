//! REVIEW FINDINGS (outside security review of the PostgreSQL store / rotation policies).
//!
//! Every test here FAILS on the code under review (main at cb40110) and demonstrates a finding;
//! see the review report. They run against a real PostgreSQL (`tether_tests::pg`).
mod conformance;

use std::time::Duration;

use conformance::{actor, plan, token, with_account, NOW};
use tether_manager::store::{PgStore, StoreError, StoreOps};

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Holds `begin_rotation` of one manager between its rename of the old token (and insert of
/// the successor under the old name) and its commit, by holding a lock on `rotations` that its
/// INSERT needs; meanwhile a second manager looks the token up BY NAME with FOR UPDATE. Under
/// READ COMMITTED the lookup blocks on the old row, re-checks it after the commit (its name is
/// now `name~xxxx`: no match) and cannot see the successor inserted concurrently: it returns
/// "not found" although a token of that name existed before, during and after.
async fn name_lookup_during_rotation_start<F, Fut, T>(op: F) -> Result<T, StoreError>
where
    F: FnOnce(PgStore) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    let url = tether_tests::pg::database().await.unwrap();
    let a = PgStore::connect(&url).await.unwrap();
    let b = PgStore::connect(&url).await.unwrap();
    with_account(&a, "acme").await;
    let old = token("acme", "victim", NOW);
    a.create_token(old.clone(), actor().entry(NOW, "token.create", "t", "")).await.unwrap();

    let blocker = raw(&url).await;
    blocker.batch_execute("BEGIN; LOCK TABLE rotations IN EXCLUSIVE MODE").await.unwrap();
    let p = plan(&old, NOW + 1);
    let rotating = tokio::spawn(async move { b.begin_rotation(p).await });
    tokio::time::sleep(Duration::from_millis(500)).await; // renamed + successor inserted, waiting
    let looking = tokio::spawn(op(a));
    tokio::time::sleep(Duration::from_millis(500)).await; // waiting on the old row's lock
    blocker.batch_execute("COMMIT").await.unwrap();
    assert!(rotating.await.unwrap().unwrap(), "the rotation started");
    tokio::time::timeout(Duration::from_secs(30), looking).await.unwrap().unwrap()
}

/// FINDING: `POST /tokens/{name}/revoke` racing a (policy) rotation start on another manager
/// answers 404 for a token that exists (seen live over HTTP: `rev404 rot201`). SQLite never
/// does (writes are serialised). An operator revoking a leaked token by name is told it does
/// not exist while it (and its predecessor, in its grace window) stays live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_revoke_by_name_racing_rotation_start_is_not_404() {
    let r = name_lookup_during_rotation_start(|a| async move {
        a.revoke_token("acme", "victim", NOW + 2, &actor()).await
    })
    .await;
    assert!(r.is_ok(), "revoke by name of an existing token must not fail: {r:?}");
}

/// FINDING: same for `PATCH /tokens/{name}` (set_token_policy).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_patch_by_name_racing_rotation_start_is_not_404() {
    let r = name_lookup_during_rotation_start(|a| async move {
        a.set_token_policy("acme", "victim", None, NOW + 2, &actor()).await
    })
    .await;
    assert!(r.is_ok(), "PATCH by name of an existing token must not fail: {r:?}");
}

/// FINDING: `store copy` fails on a PostgreSQL database whose default collation is not "C"
/// (e.g. en_US.UTF-8, the default of many clusters and of managed services): `tokens.account_id`
/// (and the other TEXT columns without `COLLATE "C"`) sort by the database collation, so the
/// PostgreSQL snapshot orders tokens of accounts `Bravo` and `alpha` differently from SQLite's
/// binary order; the read-back comparison fails after the copy was committed in full and the
/// command says "the target now holds a partial copy". Reproduced with the real binary too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_snapshot_order_does_not_depend_on_the_database_collation() {
    let server = tether_tests::pg::shared().unwrap();
    let db = format!("review_icu_{}", uuid::Uuid::new_v4().simple());
    server
        .client("postgres")
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE DATABASE {db} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = tether_manager::store::SqliteStore::open(&dir.path().join("tether.db")).unwrap();
    for id in ["Bravo", "alpha"] {
        with_account(&source, id).await;
    }
    let target = PgStore::connect(&server.url(&db)).await.unwrap();
    let snapshot = source.snapshot().await.unwrap();
    target.restore(snapshot.clone()).await.unwrap();
    let copied = target.snapshot().await.unwrap();
    let order = |s: &tether_manager::store::Snapshot| {
        s.tokens.iter().map(|t| t.account_id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(order(&copied), order(&snapshot), "token order differs");
    assert!(copied == snapshot, "the snapshots of the same rows differ");
}
