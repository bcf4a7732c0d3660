//! The HA example on the real Docker engine: `docker/up.sh --ha` brings up PostgreSQL, three
//! manager replicas behind the network alias `manager` and two delegates; `docker kill` of the
//! replica that holds the most sessions moves every one of its delegates to a surviving
//! replica within seconds, and the survivors' `delegate list` shows both delegates; then a
//! revoke through the survivor with the fewest sessions stops both delegates (signed
//! `revoked`, exit 78) wherever they are.
//!
//! Where the sessions are is read from each replica's own `tether_sessions` gauge, which does
//! not depend on what `delegate list` shows (it is cluster-wide: every replica lists every
//! replica's sessions; the test unions the survivors' lists by session id).
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tether_tests::compose::ha::{HaProject, Placement};
use tether_tests::compose::{token_id, DELEGATES};
use tether_tests::harness::docker::docker;
use tether_tests::harness::poll;

/// What the issue asks for: every delegate back on another replica within this long.
const FAILOVER_TARGET: Duration = Duration::from_secs(10);
/// What the test asserts: generous, for a loaded machine (the measured time is printed).
const FAILOVER_BOUND: Duration = Duration::from_secs(30);

#[test]
fn killing_the_busiest_replica_moves_its_delegates_to_the_survivors() {
    let project = HaProject::up("ha-kill").expect("docker/up.sh --ha");
    let token = token_id(project.dotenv("ACCOUNT_SECRET").expect("ACCOUNT_SECRET")).expect("token id");
    let replicas = project.replica_containers().expect("the three replica containers");
    let delegates: BTreeMap<&str, String> = DELEGATES
        .iter()
        .map(|(service, name)| (*name, project.container_id(service).expect("delegate container")))
        .collect();
    let listed_on_token = |placement: &Placement| {
        delegates.keys().all(|name| {
            placement
                .by_delegate
                .get(*name)
                .is_some_and(|sessions| sessions.iter().any(|(_, s)| s.token_id == token))
        })
    };

    // Both delegates listed on the account's token, and the replicas hold two sessions in all.
    let mut last = String::from("nothing yet");
    let before = poll::until_blocking(
        "both delegates on the replica set",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || {
            let placement = Placement::look(&project, &replicas);
            last = placement.describe();
            let settled = placement.failed.is_empty()
                && placement.total_held() == DELEGATES.len() as u64
                && listed_on_token(&placement);
            Ok(settled.then_some(placement))
        },
    )
    .unwrap_or_else(|e| panic!("{e}; the replicas: [{last}]"));
    eprintln!("before: {}", before.describe());
    let old_sessions: BTreeSet<String> =
        before.by_delegate.values().flatten().map(|(_, s)| s.session_id.clone()).collect();

    // The replica holding the most sessions (the first of them on a tie).
    let (busiest, moving) = before
        .held
        .iter()
        .max_by_key(|(replica, n)| (**n, std::cmp::Reverse(replica.as_str())))
        .map(|(replica, n)| (replica.clone(), *n))
        .expect("three replicas");
    assert!(moving > 0, "the busiest replica {busiest} holds no session");
    let survivors: BTreeMap<String, String> = replicas
        .iter()
        .filter(|(service, _)| **service != busiest)
        .map(|(s, c)| (s.clone(), c.clone()))
        .collect();

    // Stays dead: its restart policy would bring it back and blur where the delegates went.
    let victim = &replicas[&busiest];
    docker(&["update", "--restart", "no", victim]).expect("docker update --restart no");
    let killed_at = Instant::now();
    docker(&["kill", victim]).expect("docker kill the busiest replica");
    eprintln!("killed {busiest}, which held {moving} session(s)");

    // The survivors hold every session again, as many new sessions as the victim held are
    // listed, both delegates are listed on the token, and each delegate's own health check agrees.
    let mut last = String::from("nothing yet");
    let after = poll::until_blocking(
        "every delegate on a surviving replica",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let placement = Placement::look(&project, &survivors);
            last = placement.describe();
            let new_sessions = placement
                .by_delegate
                .values()
                .flatten()
                .filter(|(_, s)| s.token_id == token && !old_sessions.contains(&s.session_id))
                .count() as u64;
            if placement.total_held() < DELEGATES.len() as u64
                || new_sessions < moving
                || !listed_on_token(&placement)
            {
                return Ok(None);
            }
            for container in delegates.values() {
                if !project.delegate_healthy(container)? {
                    return Ok(None);
                }
            }
            Ok(Some(placement))
        },
    )
    .unwrap_or_else(|e| panic!("{e}; the survivors: [{last}]"));
    let failover = killed_at.elapsed();
    eprintln!(
        "failover: every delegate back on a surviving replica {:.1} s after `docker kill` (target {} s): {}",
        failover.as_secs_f64(),
        FAILOVER_TARGET.as_secs(),
        after.describe()
    );
    assert!(
        failover <= FAILOVER_BOUND,
        "failover took {:.1} s (target {} s, bound {} s)",
        failover.as_secs_f64(),
        FAILOVER_TARGET.as_secs(),
        FAILOVER_BOUND.as_secs()
    );

    // The killed replica stayed down: the delegates are on the survivors, not back on it.
    let state =
        docker(&["inspect", "--format", "{{.State.Running}}", victim]).expect("inspect the killed replica");
    assert_eq!(state, "false", "{busiest} is running again");

    // A revoke through the survivor holding the fewest sessions (none, if one holds none)
    // reaches the delegates wherever they are: each gets a signed `revoked` and stops (78).
    let (through, _) = survivors
        .iter()
        .min_by_key(|(_, c)| project.replica_session_count(c).unwrap_or(u64::MAX))
        .expect("two survivors");
    let revoke = std::process::Command::new("docker")
        .args(["exec", &survivors[through], "/tether-manager", "token", "revoke", &token.to_string()])
        .output()
        .expect("docker exec token revoke");
    assert!(
        revoke.status.success(),
        "token revoke through {through}: {}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    let revoked_at = Instant::now();
    let stopped = poll::until_blocking(
        "every delegate to stop on the signed revoked",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            for container in delegates.values() {
                let logs = std::process::Command::new("docker").args(["logs", container]).output()?;
                let text = String::from_utf8_lossy(&logs.stdout).into_owned()
                    + &String::from_utf8_lossy(&logs.stderr);
                if !text.contains("the delegate token was revoked") {
                    return Ok(None);
                }
            }
            Ok(Some(revoked_at.elapsed()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: a delegate did not hear the revoke made through {through}"));
    eprintln!(
        "revoke through {through}: every delegate told (signed revoked, exit 78) within {:.2} s of the CLI's answer (docker logs polled every 100 ms)",
        stopped.as_secs_f64()
    );
    project.assert_no_secrets_in_logs().expect("no secrets in logs");
}
