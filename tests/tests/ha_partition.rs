//! The HA example on the real Docker engine, cut from its database (issue 13, item 8):
//! - `docker network disconnect` of one replica from the database network (the delegates'
//!   network stays): a revoke made through another replica at that moment reaches every
//!   delegate — those of the cut replica once it fails closed (`goodbye`, then their
//!   reconnection elsewhere is refused with a signed `revoked`) — and the cut replica fails
//!   `/readyz`; connected again, it rejoins;
//! - `docker restart` of PostgreSQL: the replicas reconnect and catch up, and a revoke
//!   acknowledged after the restart reaches every delegate.
use std::time::{Duration, Instant};

use tether_tests::compose::ha::{HaProject, Placement};
use tether_tests::compose::{token_id, DELEGATES};
use tether_tests::harness::docker::docker;
use tether_tests::harness::poll;

/// The replicas' fail-closed window (the shipped default).
const FAIL_CLOSED: Duration = Duration::from_secs(10);
/// Generous bounds for a loaded machine; the measured times are printed.
const BOUND: Duration = Duration::from_secs(60);

/// Polls until every delegate container's log says its token was revoked; the time it took.
fn every_delegate_revoked(project: &HaProject, since: Instant, what: &str) -> Duration {
    let containers: Vec<String> = DELEGATES
        .iter()
        .map(|(service, _)| project.container_id(service).expect("delegate container"))
        .collect();
    poll::until_blocking(what, BOUND, Duration::from_millis(200), || {
        for c in &containers {
            if !project.logs(c)?.contains("the delegate token was revoked") {
                return Ok(None);
            }
        }
        Ok(Some(since.elapsed()))
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Revokes the account's first token through `container`'s CLI; whether it answered success.
fn revoke_through(container: &str, token: &str) -> bool {
    std::process::Command::new("docker")
        .args(["exec", container, "/tether-manager", "token", "revoke", token])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_replica_cut_from_the_database_fails_closed_and_no_revoke_is_missed() {
    let project = HaProject::up("ha-cut").expect("docker/up.sh --ha");
    let token = token_id(project.dotenv("ACCOUNT_SECRET").expect("ACCOUNT_SECRET")).expect("token id");
    let replicas = project.replica_containers().expect("the three replica containers");
    let before = poll::until_blocking("both delegates placed", BOUND, Duration::from_millis(250), || {
        let p = Placement::look(&project, &replicas);
        Ok((p.failed.is_empty() && p.total_held() == DELEGATES.len() as u64).then_some(p))
    })
    .expect("both delegates on the replica set");
    let (cut, _) =
        before.held.iter().max_by_key(|(_, n)| **n).map(|(r, n)| (r.clone(), *n)).expect("replicas");
    let (through, _) =
        before.held.iter().min_by_key(|(_, n)| **n).map(|(r, n)| (r.clone(), *n)).expect("replicas");
    assert_ne!(cut, through);
    eprintln!("before: {}", before.describe());

    docker(&["network", "disconnect", &project.db_network(), &replicas[&cut]]).expect("network disconnect");
    let cut_at = Instant::now();
    assert!(revoke_through(&replicas[&through], &token.to_string()), "revoke through {through}");
    let answered = Instant::now();
    eprintln!("cut {cut} from the database; revoked through {through} {:?} later", answered - cut_at);

    // The cut replica cannot learn of the revoke; it fails closed within its window.
    let closed =
        poll::until_blocking("the cut replica failing /readyz", BOUND, Duration::from_millis(200), || {
            Ok((project.replica_readyz(&replicas[&cut])? == 503).then_some(cut_at.elapsed()))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let revoked = every_delegate_revoked(&project, answered, "every delegate told its token was revoked");
    eprintln!(
        "partition: {cut} failed /readyz {:.1} s after the cut (window {} s); every delegate had the signed revoked {:.1} s after the revoke's answer",
        closed.as_secs_f64(),
        FAIL_CLOSED.as_secs(),
        revoked.as_secs_f64()
    );
    assert!(revoked < BOUND);
    let logs = project.logs(&replicas[&cut]).expect("logs");
    assert!(logs.contains("failing closed"), "the cut replica says why it closed");

    docker(&["network", "connect", &project.db_network(), &replicas[&cut]]).expect("network connect");
    let connected = Instant::now();
    poll::until_blocking("the cut replica ready again", BOUND, Duration::from_millis(200), || {
        Ok((project.replica_readyz(&replicas[&cut])? == 200).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("rejoin: {cut} ready {:.1} s after it was connected again", connected.elapsed().as_secs_f64());
    project.assert_no_secrets_in_logs().expect("no secrets in logs");
}

#[test]
fn a_postgresql_restart_loses_no_revoke() {
    let project = HaProject::up("ha-pg-restart").expect("docker/up.sh --ha");
    let token = token_id(project.dotenv("ACCOUNT_SECRET").expect("ACCOUNT_SECRET")).expect("token id");
    let replicas = project.replica_containers().expect("the three replica containers");
    let postgres = project.container_id("postgres").expect("postgres container");
    docker(&["restart", "--time", "5", &postgres]).expect("docker restart postgres");
    let restarted = Instant::now();
    // A revoke through manager1, acknowledged once PostgreSQL is back.
    let answered = poll::until_blocking(
        "a revoke acknowledged after the restart",
        BOUND,
        Duration::from_millis(250),
        || Ok(revoke_through(&replicas["manager1"], &token.to_string()).then(Instant::now)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "postgres restart: the revoke was acknowledged {:.1} s after the restart",
        (answered - restarted).as_secs_f64()
    );
    let revoked = every_delegate_revoked(&project, answered, "every delegate told its token was revoked");
    eprintln!(
        "postgres restart: every delegate had the signed revoked {:.1} s after the revoke's answer",
        revoked.as_secs_f64()
    );
    for (service, container) in &replicas {
        poll::until_blocking(format!("{service} ready"), BOUND, Duration::from_millis(250), || {
            Ok((project.replica_readyz(container)? == 200).then_some(()))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    project.assert_no_secrets_in_logs().expect("no secrets in logs");
}
