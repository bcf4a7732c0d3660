//! Crash durability of the real manager: `kill -9` at random moments during a stream of token
//! creates, revokes and rotations driven through the API. After each restart every change the
//! API acknowledged is present and no revoked token authenticates. The same scenario runs on
//! the SQLite file (after each kill it passes `PRAGMA integrity_check`) and on a real
//! PostgreSQL server (after each kill the server has ended every session of the dead manager,
//! so no transaction or lock of it is left, and `amcheck` finds every table and index of the
//! store sound). CI runs 3 kills per backend; `TETHER_LONG=1` runs 30.
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tether_protocol::error::close;
use tether_protocol::{RejectCode, Token};
use tether_tests::attack::handshake;
use tether_tests::harness::manager::Options;
use tether_tests::harness::{api_call, poll, Manager};
use uuid::Uuid;

/// What the API acknowledged (2xx) before the kill.
#[derive(Debug, Default)]
struct Ledger {
    /// Created tokens (id, value), including rotation successors.
    created: Vec<(Uuid, String)>,
    /// Revoked token ids.
    revoked: Vec<Uuid>,
    /// Rotations: (rotation id, old token id, new token id).
    rotations: Vec<(Uuid, Uuid, Uuid)>,
    /// Tokens already rotated or revoked (not picked again).
    used: Vec<Uuid>,
    /// Tokens a revoke or rotate was sent for, acknowledged or not (an operation in flight
    /// at the kill may or may not have been applied).
    attempted: Vec<Uuid>,
    /// Operations acknowledged in all.
    acked: usize,
}

/// `PRAGMA integrity_check` through the sqlite3 shell (or Python's sqlite3 when the shell is
/// missing); the manager must be stopped.
fn integrity_check(db: &std::path::Path) -> String {
    let out = Command::new("sqlite3").arg(db).arg("PRAGMA integrity_check;").output().or_else(|_| {
        Command::new("python3")
            .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])"])
            .arg(db)
            .output()
    });
    let out = out.expect("the crash test needs the `sqlite3` shell or python3 (apt-get install sqlite3)");
    assert!(out.status.success(), "integrity check failed to run: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs create / revoke / rotate operations until the manager dies, recording what was
/// acknowledged. Bounded: at most 10,000 operations.
async fn drive(
    client: reqwest::Client,
    base: String,
    admin: String,
    account: String,
    ledger: Arc<Mutex<Ledger>>,
) {
    let tokens = format!("/api/v1/accounts/{account}/tokens");
    for n in 0..10_000u32 {
        let pick = {
            let l = ledger.lock().unwrap();
            let candidates: Vec<Uuid> =
                l.created.iter().map(|c| c.0).filter(|id| !l.used.contains(id)).collect();
            let mut rng = rand::thread_rng();
            (!candidates.is_empty()).then(|| candidates[rng.gen_range(0..candidates.len())])
        };
        let op = rand::thread_rng().gen_range(0..4);
        if let (2 | 3, Some(id)) = (op, pick) {
            ledger.lock().unwrap().attempted.push(id);
        }
        let result = match (op, pick) {
            (2, Some(id)) => {
                api_call(&client, &base, Method::POST, &format!("{tokens}/{id}/revoke"), Some(&admin), None)
                    .await
                    .map(|(s, v)| {
                        if s == StatusCode::OK {
                            let mut l = ledger.lock().unwrap();
                            l.revoked.push(id);
                            l.used.push(id);
                            l.acked += 1;
                        }
                        let _ = v;
                    })
            }
            (3, Some(id)) => api_call(
                &client,
                &base,
                Method::POST,
                &format!("{tokens}/{id}/rotate"),
                Some(&admin),
                Some(json!({"grace_secs": 3600})),
            )
            .await
            .map(|(s, v)| {
                if s == StatusCode::CREATED {
                    let rotation = v["rotation_id"].as_str().and_then(|s| s.parse().ok());
                    let new_id = v["token_id"].as_str().and_then(|s| s.parse().ok());
                    let value = v["token"].as_str().map(str::to_owned);
                    if let (Some(r), Some(new_id), Some(value)) = (rotation, new_id, value) {
                        let mut l = ledger.lock().unwrap();
                        l.rotations.push((r, id, new_id));
                        l.created.push((new_id, value));
                        l.used.push(id);
                        l.acked += 1;
                    }
                }
            }),
            _ => api_call(
                &client,
                &base,
                Method::POST,
                &tokens,
                Some(&admin),
                Some(json!({"name": format!("t{n}-{}", Uuid::new_v4().simple())})),
            )
            .await
            .map(|(s, v)| {
                if s == StatusCode::CREATED {
                    if let (Some(id), Some(value)) =
                        (v["token"]["id"].as_str().and_then(|s| s.parse().ok()), v["value"].as_str())
                    {
                        let mut l = ledger.lock().unwrap();
                        l.created.push((id, value.to_owned()));
                        l.acked += 1;
                    }
                }
            }),
        };
        if result.is_err() {
            return; // the manager is gone
        }
    }
}

/// Where the manager under test keeps its store.
enum Backend {
    Sqlite,
    /// The URL of a fresh database on the test process's PostgreSQL server.
    Postgres(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }
}

/// What one backend's run measured.
#[derive(Debug, Default)]
struct Figures {
    /// Rounds in which every check passed.
    survived: usize,
    /// Acknowledged tokens, revokes and rotations found missing after a restart.
    lost: usize,
    /// Handshakes tried with revoked tokens (the 5 latest each round: a token may be tried in
    /// several rounds).
    revoked_tried: usize,
    /// Of those, the ones welcomed (must be none).
    revoked_accepted: usize,
    /// PostgreSQL: the longest time from the kill until the server had ended every session
    /// of the dead manager.
    pg_sessions_ended: Duration,
}

/// After a kill, on PostgreSQL: waits (polling, bounded) until the server has ended every
/// session of the dead manager on its database, so no transaction or row lock of it is left,
/// then runs `amcheck` over the store: `verify_heapam` on every table, `bt_index_check` with
/// `heapallindexed` on every index. Returns how long the sessions took to end, or what
/// `amcheck` reported.
async fn postgres_after_kill(url: &str, killed_at: Instant) -> anyhow::Result<Duration> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    poll::until("PostgreSQL to end the killed manager's sessions", Duration::from_secs(20), || async {
        let others: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await?
            .get(0);
        Ok((others == 0).then_some(()))
    })
    .await?;
    let ended = killed_at.elapsed();
    // In a schema of its own, out of the store's way.
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS tether_check; \
             CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA tether_check",
        )
        .await?;
    let tables = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind = 'r'",
            &[],
        )
        .await?;
    anyhow::ensure!(!tables.is_empty(), "the store has no tables in schema public");
    for table in &tables {
        let table: String = table.get(0);
        let damage = client
            .query("SELECT blkno, offnum, msg FROM tether_check.verify_heapam($1::text::regclass)", &[&table])
            .await?;
        if let Some(row) = damage.first() {
            let (block, offset, msg): (i64, Option<i32>, String) = (row.get(0), row.get(1), row.get(2));
            anyhow::bail!("verify_heapam({table}): block {block} offset {offset:?}: {msg}");
        }
    }
    let indexes = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_am a ON a.oid = c.relam WHERE n.nspname = 'public' AND c.relkind = 'i' AND a.amname = 'btree'",
            &[],
        )
        .await?;
    for index in &indexes {
        let index: String = index.get(0);
        client
            .execute("SELECT tether_check.bt_index_check($1::text::regclass, true)", &[&index])
            .await
            .map_err(|e| anyhow::anyhow!("bt_index_check({index}): {e}"))?;
    }
    Ok(ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_kill_9() {
    scenario(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_acknowledged_changes_survive_kill_9() {
    scenario(Backend::Postgres(tether_tests::pg::database().await.unwrap())).await;
}

async fn scenario(backend: Backend) {
    let kills: usize = if std::env::var("TETHER_LONG").is_ok_and(|v| v == "1") { 30 } else { 3 };
    let mut options = Options::with_env(&[("TETHER_HANDSHAKE_FAIL_LIMIT", "1000000")]);
    if let Backend::Postgres(url) = &backend {
        options.database = Some(url.clone());
    }
    let mut m = Manager::start_with(options).await.unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let account = m.init.account_id.clone();
    let started = Instant::now();
    let mut figures = Figures::default();
    for round in 0..kills {
        let acked_before = ledger.lock().unwrap().acked;
        let driver = tokio::spawn(drive(
            m.http(),
            m.url(),
            m.init.admin_token.clone(),
            account.clone(),
            ledger.clone(),
        ));
        // Kill at a random moment once this round has had at least one acknowledged change.
        let wait_ms = rand::thread_rng().gen_range(20..400);
        let deadline = Instant::now() + Duration::from_secs(20);
        while ledger.lock().unwrap().acked == acked_before {
            assert!(Instant::now() < deadline, "round {round}: no change acknowledged within 20 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        m.kill9().unwrap();
        let killed_at = Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(30), driver).await;

        match &backend {
            Backend::Sqlite => {
                assert_eq!(
                    integrity_check(&m.db_path()),
                    "ok",
                    "round {round}: integrity check after kill -9"
                )
            }
            Backend::Postgres(url) => {
                let ended = postgres_after_kill(url, killed_at)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: PostgreSQL after kill -9: {e:#}"));
                figures.pg_sessions_ended = figures.pg_sessions_ended.max(ended);
            }
        }
        m.serve().await.unwrap_or_else(|e| panic!("round {round}: restart after kill -9 failed: {e}"));

        let (created, revoked, rotations, attempted) = {
            let l = ledger.lock().unwrap();
            (l.created.clone(), l.revoked.clone(), l.rotations.clone(), l.attempted.clone())
        };
        // Every loss is counted and named, then the round fails if there was any.
        let mut losses = Vec::new();
        for (id, _) in &created {
            let (status, v) =
                m.api(Method::GET, &format!("/api/v1/accounts/{account}/tokens/{id}"), None).await.unwrap();
            if status != StatusCode::OK {
                losses.push(format!("acknowledged token {id} lost: {status} {v}"));
            }
        }
        for id in &revoked {
            let (_, v) =
                m.api(Method::GET, &format!("/api/v1/accounts/{account}/tokens/{id}"), None).await.unwrap();
            if v["state"] != "revoked" {
                losses.push(format!("acknowledged revoke of {id} lost: {v}"));
            }
        }
        for (rotation, _, new_id) in &rotations {
            let (status, v) =
                m.api(Method::GET, &format!("/api/v1/rotations/{rotation}"), None).await.unwrap();
            if status != StatusCode::OK || v["new_token_id"].as_str() != Some(new_id.to_string().as_str()) {
                losses.push(format!("acknowledged rotation {rotation} (to {new_id}) lost: {status} {v}"));
            }
        }
        figures.lost += losses.len();
        assert!(losses.is_empty(), "round {round} on {}: {}", backend.name(), losses.join("\n"));
        // No revoked token authenticates (the 5 most recent, to bound the time).
        let target = m.target().unwrap();
        for id in revoked.iter().rev().take(5) {
            let value = &created.iter().find(|c| c.0 == *id).expect("revoked tokens were created").1;
            let token = Token::parse(value).unwrap();
            let answer = handshake(&target, None, &account, &token).await.unwrap();
            figures.revoked_tried += 1;
            if answer.is_welcome() {
                figures.revoked_accepted += 1;
            }
            assert_eq!(
                answer.rejection(),
                (RejectCode::Revoked, true, Some(close::REVOKED)),
                "round {round} on {}: {id}",
                backend.name()
            );
        }
        // Successors of acknowledged rotations authenticate, unless a revoke or rotate was sent
        // for them since (acknowledged or in flight at the kill; and with no live delegate a
        // rotation may finish, revoking its old token, at once).
        for (_, _, new_id) in rotations.iter().rev().take(3) {
            if attempted.contains(new_id) {
                continue;
            }
            let value = &created.iter().find(|c| c.0 == *new_id).unwrap().1;
            let answer = handshake(&target, None, &account, &Token::parse(value).unwrap()).await.unwrap();
            if !answer.is_welcome() {
                let (_, v) = m
                    .api(Method::GET, &format!("/api/v1/accounts/{account}/tokens/{new_id}"), None)
                    .await
                    .unwrap();
                panic!("round {round}: successor {new_id}: {}; token now: {v}", answer.describe());
            }
        }
        figures.survived += 1;
    }
    let l = ledger.lock().unwrap();
    let pg = match &backend {
        Backend::Postgres(_) => {
            format!(
                "; PostgreSQL ended the dead manager's sessions within {:?} of a kill",
                figures.pg_sessions_ended
            )
        }
        Backend::Sqlite => String::new(),
    };
    println!(
        "{}: kill -9 survived: {}/{kills} in {:?}; acknowledged changes verified: {} ({} tokens created, {} revoked, {} rotations); lost: {}; handshakes with revoked tokens: {}, accepted: {}{pg}",
        backend.name(),
        figures.survived,
        started.elapsed(),
        l.acked,
        l.created.len(),
        l.revoked.len(),
        l.rotations.len(),
        figures.lost,
        figures.revoked_tried,
        figures.revoked_accepted,
    );
    assert_eq!(figures.survived, kills);
}
