//! Several real managers on one real PostgreSQL (issue 13): a revoke through one replica
//! closes the sessions every other replica holds, the cluster-wide view lists them all, a
//! replica cut off from the database (a silent TCP proxy, as a network partition) fails closed
//! and rejoins, a change it missed while its listener was cut is applied when it reconnects,
//! a rotation started on one replica finishes when the holder of the jobs lease is killed, and
//! a restart of PostgreSQL loses no acknowledged change.
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tether_tests::harness::delegate::{env_for, Delegate};
use tether_tests::harness::proxy::Proxy;
use tether_tests::harness::replicas::{held, hold_sessions, options, readyz, replica_via, upstream};
use tether_tests::harness::{poll, Manager};
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(30);

/// Starts a delegate with `env` until its first session is on `holder` (a delegate given
/// several managers picks one at random): bounded tries.
async fn start_held_by(holder: &Manager, env: &[(String, String)]) -> Result<Delegate> {
    for _ in 0..20 {
        let before = held(holder).await?;
        let delegate = Delegate::start(env, &[])?;
        poll::until("the delegate's first session", LIMIT, || async {
            Ok(delegate.log().contains("session authenticated").then_some(()))
        })
        .await
        .with_context(|| delegate.log())?;
        if held(holder).await? > before {
            return Ok(delegate);
        }
    }
    bail!("the delegate never landed on the wanted replica in 20 starts")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_through_one_replica_closes_every_session_on_the_others() -> Result<()> {
    let db = tether_tests::pg::database().await?;
    let a = Manager::start_with(options(&db, 10)).await?;
    let b = a.replica().await?;
    let c = a.replica().await?;
    let account = a.init.account_id.clone();
    let token = a.create_token(&account, "fleet", json!({})).await?;

    // Real delegates on B and on C, and in-process sessions on both.
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut delegates = Vec::new();
    for (dir, (m, name)) in dirs.iter().zip([(&b, "on-b"), (&c, "on-c")]) {
        delegates.push(Delegate::start(&env_for(m, name, &token.expose(), dir.path()), &[])?);
    }
    let (_stop_tx, stop) = watch::channel(false);
    let mut held = hold_sessions(&b, &token, "b", 20, &stop).await?;
    held.extend(hold_sessions(&c, &token, "c", 20, &stop).await?);

    // The cluster-wide view, from A, which holds none of them.
    let listed = poll::until("A to list every session of B and C", LIMIT, || async {
        let list = a.delegates().await?;
        Ok((list.iter().filter(|d| d.token_id == token.id()).count() == 42).then_some(list))
    })
    .await?;
    assert!(listed.iter().any(|d| d.name == "on-b") && listed.iter().any(|d| d.name == "on-c"));
    let (_, tokens) = a.api(Method::GET, &format!("/api/v1/accounts/{account}/tokens"), None).await?;
    let live = tokens.as_array().and_then(|ts| ts.iter().find(|t| t["id"] == token.id().to_string()));
    assert_eq!(live.map(|t| t["live_delegates"].clone()), Some(json!(42)), "{tokens}");
    let (status, replicas) = a.api(Method::GET, "/api/v1/replicas", None).await?;
    assert_eq!(status, StatusCode::OK, "{replicas}");
    let alive = replicas.as_array().map_or(0, |r| r.iter().filter(|r| r["alive"] == true).count());
    assert_eq!(alive, 3, "three replicas alive: {replicas}");
    let out = a.cli(&["replica", "list"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("accepting"), "replica list: {text}");

    a.revoke(token.id()).await?;
    let answered = Instant::now();
    let mut closes = Vec::new();
    for h in held {
        let ended = tokio::time::timeout(LIMIT, h).await.context("a session on B or C was not closed")??;
        assert!(ended.revoked, "a session ended without a signed revoked: {ended:?}");
        closes.push(ended.at.saturating_duration_since(answered));
    }
    closes.sort();
    let (p50, p99, max) = (percentile(&closes, 0.5), percentile(&closes, 0.99), closes[closes.len() - 1]);
    println!("revoke through A: 40 sessions on B and C closed; from the API answer p50 {p50:?}, p99 {p99:?}, max {max:?}");
    assert!(p99 < Duration::from_secs(5), "p99 {p99:?}");
    for mut d in delegates {
        let (status, _) = d.wait_exit(LIMIT).await.with_context(|| d.log())?;
        assert_eq!(status.code(), Some(78), "a revoked delegate exits 78: {}", d.log());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_database_fails_closed_and_rejoins() -> Result<()> {
    let db = tether_tests::pg::database().await?;
    let pg = upstream(&db)?;
    let a = Manager::start_with(options(&db, 3)).await?;
    let proxy = Proxy::start(pg).await?;
    let b = replica_via(&a, &proxy.url_for(&db, pg)).await?;
    let account = a.init.account_id.clone();
    let mover = a.create_token(&account, "mover", json!({})).await?;
    let stayer = a.create_token(&account, "stayer", json!({})).await?;

    // `mover` knows both replicas (B first); `stayer` knows only B.
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut env = env_for(&b, "mover", &mover.expose(), dirs[0].path());
    env.retain(|(k, _)| k != "MANAGER_HOST_AND_PORT");
    env.push((
        "MANAGER_HOST_AND_PORT".into(),
        format!("localhost:{},localhost:{}", b.addr.port(), a.addr.port()),
    ));
    let moving = start_held_by(&b, &env).await?;
    let mut staying = Delegate::start(&env_for(&b, "stayer", &stayer.expose(), dirs[1].path()), &[])?;
    b.wait_for_session("mover", mover.id(), LIMIT).await.with_context(|| moving.log())?;
    b.wait_for_session("stayer", stayer.id(), LIMIT).await.with_context(|| staying.log())?;

    proxy.blackhole();
    let cut = Instant::now();
    a.wait_for_session("mover", mover.id(), LIMIT).await.with_context(|| moving.log())?;
    let moved = cut.elapsed();
    println!(
        "cut off: the delegate was on the other replica {moved:?} after the cut (fail-closed window 3 s)"
    );
    assert!(moved < Duration::from_secs(15), "moved after {moved:?}");
    assert_eq!(readyz(&b).await?, StatusCode::SERVICE_UNAVAILABLE, "a replica failing closed is not ready");
    // A revoke meanwhile (through A): the session B held is gone already, and when B rejoins it
    // refuses the token (signed revoked: exit 78).
    a.revoke(stayer.id()).await?;

    proxy.restore();
    let restored = Instant::now();
    poll::until("B ready again", LIMIT, || async { Ok((readyz(&b).await? == StatusCode::OK).then_some(())) })
        .await
        .with_context(|| b.logs())?;
    println!("B rejoined {:?} after the database came back", restored.elapsed());
    let (status, _) = staying.wait_exit(LIMIT).await.with_context(|| staying.log())?;
    assert_eq!(status.code(), Some(78), "the revoked delegate of B exits 78: {}", staying.log());
    let logs = b.logs();
    assert!(logs.contains("failing closed"), "B said why it closed: {logs}");
    let (status, replicas) = a.api(Method::GET, "/api/v1/replicas", None).await?;
    assert_eq!(status, StatusCode::OK);
    poll::until("B accepting in the replica list", LIMIT, || async {
        let (_, list) = a.api(Method::GET, "/api/v1/replicas", None).await?;
        let ok = list
            .as_array()
            .is_some_and(|r| r.iter().filter(|r| r["accepting"] == true && r["alive"] == true).count() == 2);
        Ok(ok.then_some(()))
    })
    .await
    .with_context(|| format!("{replicas}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_missed_while_the_listener_was_cut_is_applied_on_reconnect() -> Result<()> {
    let db = tether_tests::pg::database().await?;
    let pg = upstream(&db)?;
    // A long fail-closed window: the session must be closed by the catch-up, not by failing closed.
    let a = Manager::start_with(options(&db, 60)).await?;
    let proxy = Proxy::start(pg).await?;
    let b = replica_via(&a, &proxy.url_for(&db, pg)).await?;
    let token = a.create_token(&a.init.account_id.clone(), "missed", json!({})).await?;
    let (_stop_tx, stop) = watch::channel(false);
    let held = hold_sessions(&b, &token, "missed", 3, &stop).await?;

    proxy.blackhole();
    a.revoke(token.id()).await?;
    // B heard nothing: its sessions are still open a moment later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(held.iter().all(|h| !h.is_finished()), "B cannot have learnt of the revoke while cut off");
    proxy.restore();
    let restored = Instant::now();
    for h in held {
        let ended =
            tokio::time::timeout(LIMIT, h).await.context("a session survived the missed revoke")??;
        assert!(ended.revoked, "closed with a signed revoked: {ended:?}");
    }
    println!(
        "catch-up: the missed revoke closed B's sessions {:?} after the database came back",
        restored.elapsed()
    );
    Ok(())
}

/// The replica id holding the jobs lease, read from the table.
async fn lease_holder(db: &str) -> Result<String> {
    let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = client
        .query_opt("SELECT owner FROM leases WHERE name = 'jobs' AND expires_at > clock_timestamp()", &[])
        .await?;
    row.map(|r| r.get::<_, String>(0)).ok_or_else(|| anyhow!("no one holds the jobs lease"))
}

async fn replica_id(m: &Manager) -> Result<String> {
    let (_, list) = m.api(Method::GET, "/api/v1/replicas", None).await?;
    list.as_array()
        .and_then(|r| r.iter().find(|r| r["this"] == true))
        .and_then(|r| r["id"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow!("no replica says `this`: {list}"))
}

/// The environment of a real delegate in token-file mode (it follows rotations) that knows
/// `managers`.
fn follower(
    first: &Manager,
    managers: &[&Manager],
    name: &str,
    token: &str,
    dir: &std::path::Path,
) -> Vec<(String, String)> {
    let mut env = env_for(first, name, token, dir);
    env.retain(|(k, _)| k != "TETHER_APPLY_MODE" && k != "MANAGER_HOST_AND_PORT");
    let list: Vec<String> = managers.iter().map(|m| format!("localhost:{}", m.addr.port())).collect();
    env.push(("MANAGER_HOST_AND_PORT".into(), list.join(",")));
    env.push(("TETHER_APPLY_MODE".into(), "file".into()));
    env.push(("ACCOUNT_SECRET_FILE".into(), dir.join("token").display().to_string()));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_finishes_when_the_lease_holder_dies_mid_rotation() -> Result<()> {
    let db = tether_tests::pg::database().await?;
    let a = Manager::start_with(options(&db, 10)).await?;
    let b = a.replica().await?;
    let holder =
        poll::until("a holder of the jobs lease", LIMIT, || async { Ok(lease_holder(&db).await.ok()) })
            .await?;
    let (mut dead, survivor) = if holder == replica_id(&a).await? { (a, b) } else { (b, a) };
    let old = survivor.create_token(&survivor.init.account_id.clone(), "rotating", json!({})).await?;

    // Two real delegates that follow rotations: one on the survivor only, one on the lease
    // holder first (it knows the survivor too).
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let d1 = Delegate::start(
        &follower(&survivor, &[&survivor], "on-survivor", &old.expose(), dirs[0].path()),
        &[],
    )?;
    let env = follower(&dead, &[&dead, &survivor], "on-holder", &old.expose(), dirs[1].path());
    let d2 = start_held_by(&dead, &env).await?;
    survivor.wait_for_session("on-survivor", old.id(), LIMIT).await.with_context(|| d1.log())?;
    dead.wait_for_session("on-holder", old.id(), LIMIT).await.with_context(|| d2.log())?;

    // Started through the survivor, which does not hold the lease; the holder dies at once.
    let rotation = survivor.rotate(old.id(), 120).await?;
    dead.kill9()?;
    let killed = Instant::now();
    let doc = poll::until("the rotation to complete", Duration::from_secs(60), || async {
        let doc = survivor.rotation(rotation.rotation_id).await?;
        Ok((doc["state"] == "completed").then_some(doc))
    })
    .await
    .with_context(|| format!("survivor:\n{}\non-holder:\n{}", survivor.logs(), d2.log()))?;
    println!("rotation completed {:?} after the lease holder was killed", killed.elapsed());
    let path = format!("/api/v1/accounts/{}/tokens/{}", survivor.init.account_id, old.id());
    let (_, token) = survivor.api(Method::GET, &path, None).await?;
    assert_eq!(token["state"], "revoked", "the old token is revoked: {token}");
    for name in ["on-survivor", "on-holder"] {
        survivor.wait_for_session(name, rotation.token_id, LIMIT).await.with_context(|| format!("{doc}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_loses_no_acknowledged_change() -> Result<()> {
    let server = tokio::task::block_in_place(tether_tests::pg::PgServer::start)?;
    let db = server.create_database().await?;
    let a = Manager::start_with(options(&db, 30)).await?;
    let b = a.replica().await?;
    let account = a.init.account_id.clone();
    let token = a.create_token(&account, "through-restart", json!({})).await?;
    let (_stop_tx, stop) = watch::channel(false);
    let held = hold_sessions(&b, &token, "restart", 3, &stop).await?;
    b.wait_for_session("restart-0", token.id(), LIMIT).await?;

    tokio::task::block_in_place(|| server.restart())?;
    // The revoke is acknowledged by A once PostgreSQL is back (the API retries nothing: poll).
    let revoked = poll::until("a revoke through A after the restart", LIMIT, || async {
        let path = format!("/api/v1/accounts/{account}/tokens/{}/revoke", token.id());
        let (status, _) = a.api(Method::POST, &path, Some(json!({}))).await?;
        Ok(status.is_success().then_some(Instant::now()))
    })
    .await
    .with_context(|| a.logs())?;
    for h in held {
        let ended = tokio::time::timeout(LIMIT, h).await.context("a session on B survived the revoke")??;
        assert!(ended.revoked, "{ended:?}");
    }
    println!(
        "PostgreSQL restart: B's sessions closed {:?} after the revoke was acknowledged",
        revoked.elapsed()
    );
    poll::until("both replicas ready", LIMIT, || async {
        Ok((readyz(&a).await? == StatusCode::OK && readyz(&b).await? == StatusCode::OK).then_some(()))
    })
    .await?;
    if b.logs().contains("panicked") {
        bail!("B panicked: {}", b.logs());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_disconnect_reach_a_session_through_another_replica() -> Result<()> {
    let db = tether_tests::pg::database().await?;
    let a = Manager::start_with(options(&db, 10)).await?;
    let b = a.replica().await?;
    let token = a.create_token(&a.init.account_id.clone(), "remote", json!({})).await?;
    let dir = tempfile::tempdir()?;
    let delegate = Delegate::start(&env_for(&b, "remote", &token.expose(), dir.path()), &[])?;
    b.wait_for_session("remote", token.id(), LIMIT).await.with_context(|| delegate.log())?;
    // A lists it once B's presence is written, and pings it through the change log.
    let row = a.wait_for_session("remote", token.id(), LIMIT).await?;
    let payload = "ping ü 漢字 🙂";
    let started = Instant::now();
    assert_eq!(a.ping(row.session_id, payload).await?, payload, "the echo comes back through A");
    println!("ping through another replica: {:?}", started.elapsed());
    // Disconnect through A: B closes the session (goodbye), the delegate comes back with a new one.
    let (status, body) =
        a.api(Method::DELETE, &format!("/api/v1/delegates/{}", row.session_id), None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    poll::until("the delegate back with a new session", LIMIT, || async {
        let list = a.delegates().await?;
        let mine: Vec<_> = list.iter().filter(|d| d.name == "remote").collect();
        Ok((mine.len() == 1 && mine[0].session_id != row.session_id).then_some(()))
    })
    .await
    .with_context(|| delegate.log())?;
    Ok(())
}
