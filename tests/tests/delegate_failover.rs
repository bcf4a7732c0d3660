//! A delegate given several managers (`MANAGER_HOST_AND_PORT=a,b`, issue 13 item 5) moves to
//! another one when its manager dies: two real managers serve one PostgreSQL store (the same
//! data dir copied: same master key and CA), the real delegate connects to one, that manager is
//! `kill -9`ed, and the delegate is back on the other within seconds with its unchanged token.
//! It also starts when the first listed address is dead.
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tether_tests::harness::delegate::{env_for, Delegate};
use tether_tests::harness::manager::Options;
use tether_tests::harness::Manager;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegate_moves_to_the_other_manager_when_its_manager_dies() -> Result<()> {
    let options = Options {
        database: Some(tether_tests::pg::database().await?),
        ..Options::with_env(&[("TETHER_HEARTBEAT_SECS", "2")])
    };
    let mut a = Manager::start_with(options).await?;
    let mut b = a.replica().await?;
    let token = a.create_token(&a.init.account_id.clone(), "ha", serde_json::json!({})).await?;

    // The first listed address is closed: the delegate goes on to the next ones.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let state = tempfile::tempdir()?;
    let mut env = env_for(&a, "mover", &token.expose(), state.path());
    env.retain(|(k, _)| k != "MANAGER_HOST_AND_PORT");
    let list = format!("localhost:{closed},localhost:{},localhost:{}", a.addr.port(), b.addr.port());
    env.push(("MANAGER_HOST_AND_PORT".into(), list));
    let delegate = Delegate::start(&env, &[])?;

    let on_a = tether_tests::harness::poll::until("the delegate on one of the managers", LIMIT, || async {
        let on_a = a.delegates().await?.iter().any(|d| d.name == "mover");
        let on_b = b.delegates().await?.iter().any(|d| d.name == "mover");
        Ok((on_a || on_b).then_some(on_a))
    })
    .await
    .with_context(|| delegate.log())?;
    let (dead, survivor) = if on_a { (&mut a, &b) } else { (&mut b, &a) };
    dead.kill9()?;
    let killed = Instant::now();
    survivor.wait_for_session("mover", token.id(), LIMIT).await.with_context(|| delegate.log())?;
    let moved = killed.elapsed();
    println!("failover: the delegate was back on the surviving manager {moved:?} after the kill");
    assert!(moved < Duration::from_secs(20), "failover took {moved:?}");
    Ok(())
}
