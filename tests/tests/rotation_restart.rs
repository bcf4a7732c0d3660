//! A rotation survives a `kill -9` of the real manager mid-grace: the successor is kept in the
//! store sealed under the master key, so delegates that reconnect on the old token after the
//! restart still receive it, move, and the rotation completes with the old token revoked.
//! Before, the successor lived in memory only: such delegates were cut off at the deadline.
//! The same scenario runs on the SQLite file and on a real PostgreSQL server.
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use reqwest::Method;
use serde_json::json;
use tether_protocol::Token;
use tether_tests::harness::delegate::{env_for, Delegate};
use tether_tests::harness::manager::Options;
use tether_tests::harness::{poll, Manager};
use tether_tests::load::session::{self, HoldOptions, Identity};
use tether_tests::secrets::{find_needles, token_needles};
use tokio::sync::watch;
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(30);
const NAMES: [&str; 2] = ["restart-a", "restart-b"];
const LATE: &str = "restart-late";

async fn file_holds(file: &std::path::Path, token: &str) -> Result<Option<()>> {
    Ok((std::fs::read_to_string(file).unwrap_or_default().trim() == token).then_some(()))
}

/// The token's `state` as the API shows it.
async fn token_state(manager: &Manager, token_id: Uuid) -> Result<String> {
    let path = format!("/api/v1/accounts/{}/tokens/{token_id}", manager.init.account_id);
    let (status, body) = manager.api(Method::GET, &path, None).await?;
    anyhow::ensure!(status.is_success(), "GET {path}: {status}: {body}");
    body["state"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("token without state: {body}"))
}

/// Where the manager under test keeps its store.
enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// The sealed successors stored in the database.
    async fn sealed_successors(&self, manager: &Manager) -> Result<Vec<Vec<u8>>> {
        match self {
            Self::Sqlite => sealed_successors(&manager.db_path()),
            Self::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                let rows = client
                    .query("SELECT sealed_successor FROM rotations WHERE sealed_successor IS NOT NULL", &[])
                    .await?;
                Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
            }
        }
    }

    /// The SQLite files (database and WAL) that must hold no readable or leftover secret.
    fn files(&self, manager: &Manager) -> Vec<std::path::PathBuf> {
        match self {
            Self::Sqlite => vec![manager.db_path(), manager.db_path().with_extension("db-wal")],
            Self::Postgres(_) => Vec::new(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegates_that_reconnect_on_the_old_token_after_a_kill_9_still_move() -> Result<()> {
    scenario(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_delegates_that_reconnect_on_the_old_token_after_a_kill_9_still_move() -> Result<()> {
    scenario(Backend::Postgres(tether_tests::pg::database().await?)).await
}

/// The sealed successors stored in the database (through the `sqlite3` shell, which
/// `tests/run.sh` installs).
fn sealed_successors(db: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg("SELECT hex(sealed_successor) FROM rotations WHERE sealed_successor IS NOT NULL;")
        .output()
        .context("this test needs the `sqlite3` shell (apt-get install sqlite3)")?;
    anyhow::ensure!(out.status.success(), "sqlite3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| hex::decode(l.trim()).context("hex")).collect()
}

fn identity(manager: &Manager, token: &Token, name: &str) -> Identity {
    Identity {
        account_id: manager.init.account_id.clone(),
        token: Arc::new(token.duplicate()),
        name: name.into(),
    }
}

async fn scenario(backend: Backend) -> Result<()> {
    let mut options = Options::with_env(&[("TETHER_HEARTBEAT_SECS", "2")]);
    if let Backend::Postgres(url) = &backend {
        options.database = Some(url.clone());
    }
    let mut manager = Manager::start_with(options).await?;
    let old = manager.create_token(&manager.init.account_id.clone(), "fleet", json!({})).await?;
    let old_value = old.expose().to_string();

    // Two live delegates on the old token that ignore `rotate` (they never ack).
    let (stop_tx, stop_rx) = watch::channel(false);
    let target = manager.target()?;
    let instances: Vec<Uuid> = NAMES.iter().map(|_| Uuid::new_v4()).collect();
    let mut holders = Vec::new();
    for (name, instance) in NAMES.iter().zip(&instances) {
        let who = identity(&manager, &old, name);
        let opened = session::open_as(&target, None, &who, *instance, LIMIT).await?;
        let opts = HoldOptions {
            follow_rotation: false,
            target: None,
            source: None,
            max_time: Duration::from_secs(120),
        };
        holders.push(tokio::spawn(session::hold(opened, who, opts, stop_rx.clone())));
    }
    for name in NAMES {
        manager.wait_for_session(name, old.id(), LIMIT).await?;
    }

    let rotation = manager.rotate(old.id(), 300).await?;
    poll::until("both delegates to be tracked, pending", LIMIT, || async {
        let doc = manager.rotation(rotation.rotation_id).await?;
        let pending =
            doc["delegates"].as_array().map_or(0, |ds| ds.iter().filter(|d| d["state"] == "pending").count());
        Ok((pending == 2).then_some(()))
    })
    .await?;

    manager.kill9()?;
    // A copy of the database taken now (file and WAL) holds the successor only sealed.
    let successor = Token::parse(&rotation.token).map_err(|e| anyhow!("successor: {e}"))?;
    let needles = token_needles(&successor);
    for path in backend.files(&manager) {
        if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes);
            let hits = find_needles(&path.display().to_string(), &text, &needles);
            assert!(hits.is_empty(), "the successor is readable in {}: {hits:?}", path.display());
        }
    }
    let sealed = backend.sealed_successors(&manager).await?;
    assert_eq!(sealed.len(), 1, "one rotation running, its successor stored sealed");
    for holder in holders {
        let ended = tokio::time::timeout(LIMIT, holder).await.context("a held session did not end")??;
        assert!(!ended.revoked && !ended.rotated, "{ended:?}");
    }
    drop(stop_tx);
    manager.serve().await?;

    // A delegate that first arrives during the grace window (the real binary, token file mode)
    // is sent the successor and moves; the rotation still waits for the two it tracked.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("token");
    let mut env = env_for(&manager, LATE, &old_value, dir.path());
    env.retain(|(k, _)| k != "TETHER_APPLY_MODE");
    env.push(("TETHER_APPLY_MODE".into(), "file".into()));
    env.push(("ACCOUNT_SECRET_FILE".into(), file.display().to_string()));
    let late = Delegate::start(&env, &[])?;
    manager.wait_for_session(LATE, rotation.token_id, LIMIT).await.with_context(|| late.log())?;
    poll::until("the late delegate's token file to hold the successor", LIMIT, || {
        file_holds(&file, &rotation.token)
    })
    .await
    .with_context(|| late.log())?;
    manager.wait_for_outcome(rotation.rotation_id, "applied", LIMIT).await?;
    assert_eq!(
        manager.rotation(rotation.rotation_id).await?["state"],
        "running",
        "two delegates still to move"
    );

    // The same delegates (same instances) reconnect on the old token; this time they follow
    // the rotation: unseal the successor, prove it, ack `applied`, move.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut followers = Vec::new();
    for (name, instance) in NAMES.iter().zip(&instances) {
        let who = identity(&manager, &old, name);
        let opened = session::open_as(&target, None, &who, *instance, LIMIT).await?;
        let opts = HoldOptions {
            follow_rotation: true,
            target: Some(target.clone()),
            source: None,
            max_time: Duration::from_secs(120),
        };
        followers.push(tokio::spawn(session::hold(opened, who, opts, stop_rx.clone())));
    }
    for name in NAMES {
        manager.wait_for_session(name, rotation.token_id, LIMIT).await?;
    }
    let doc = poll::until("the rotation to complete", LIMIT, || async {
        let doc = manager.rotation(rotation.rotation_id).await?;
        Ok((doc["state"] == "completed").then_some(doc))
    })
    .await
    .with_context(|| format!("{}\nmanager:\n{}", late.log(), manager.logs()))?;
    let applied =
        doc["delegates"].as_array().map_or(0, |ds| ds.iter().filter(|d| d["outcome"] == "applied").count());
    assert_eq!(applied, 3, "every delegate acked applied: {doc}");
    assert_eq!(token_state(&manager, old.id()).await?, "revoked");
    assert_eq!(token_state(&manager, rotation.token_id).await?, "active");
    assert!(manager.logs().contains("rotation resumed"), "{}", manager.logs());
    // The finished rotation left no copy of its sealed successor: not in its row, not in the
    // database file's free space, not in the WAL.
    assert!(backend.sealed_successors(&manager).await?.is_empty(), "the sealed successor is still stored");
    for path in backend.files(&manager) {
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(sealed[0].len()).any(|w| w == sealed[0].as_slice()),
                "the sealed successor is left in {}",
                path.display()
            );
        }
    }
    let _ = stop_tx.send(true);
    for follower in followers {
        let ended = tokio::time::timeout(LIMIT, follower).await.context("a follower did not stop")??;
        assert!(ended.rotated, "{ended:?}");
    }
    Ok(())
}
