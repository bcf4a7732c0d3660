//! The HA example on the real Docker engine (issue 13, item 8): a rotation started through one
//! replica while the holder of the jobs lease (the replica that finishes rotations) is killed
//! mid-rotation completes: both delegate containers replace themselves with ones carrying the
//! successor, another replica takes the lease over and finishes the rotation, and the old
//! token ends revoked.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tether_tests::compose::ha::HaProject;
use tether_tests::compose::{rotated_token_value, token_id, DELEGATES};
use tether_tests::harness::cli;
use tether_tests::harness::docker::docker;
use tether_tests::harness::poll;

/// Generous for a loaded machine; the measured times are printed.
const BOUND: Duration = Duration::from_secs(150);

#[test]
fn a_rotation_completes_when_the_lease_holder_is_killed_mid_rotation() {
    let project = HaProject::up("ha-rotate").expect("docker/up.sh --ha");
    let old_id = token_id(project.dotenv("ACCOUNT_SECRET").expect("ACCOUNT_SECRET")).expect("token id");
    let replicas = project.replica_containers().expect("the three replica containers");
    let holder_id =
        poll::until_blocking("a holder of the jobs lease", BOUND, Duration::from_millis(500), || {
            Ok(project.jobs_holder().ok())
        })
        .expect("jobs lease held");
    let ids: BTreeMap<String, String> = replicas
        .iter()
        .map(|(service, c)| (project.replica_id(c).expect("replica id"), service.clone()))
        .collect();
    let holder = ids.get(&holder_id).cloned().expect("the lease holder is one of the replicas");
    let through = replicas.keys().find(|s| **s != holder).cloned().expect("another replica");
    let survivor = replicas[&through].clone();

    let rotated = project
        .admin(&survivor, &["token", "rotate", &old_id, "--grace-secs", "180"])
        .expect("token rotate through a replica that does not hold the lease");
    let started = Instant::now();
    let new_token = rotated_token_value(&rotated).expect("successor in the answer");
    let new_id = token_id(&new_token).expect("successor id");
    // The lease holder dies at once (and stays dead).
    docker(&["update", "--restart", "no", &replicas[&holder]]).expect("docker update");
    docker(&["kill", &replicas[&holder]]).expect("docker kill the lease holder");
    eprintln!("rotation started through {through}; {holder} (the jobs lease holder) killed");

    let moved =
        poll::until_blocking("both delegates on the successor", BOUND, Duration::from_millis(500), || {
            let listed = cli::delegate_list(&project.admin(&survivor, &["delegate", "list"])?)?;
            let on_new = DELEGATES
                .iter()
                .all(|(_, name)| listed.iter().any(|d| d.name == *name && d.token_id == new_id));
            Ok(on_new.then(|| started.elapsed()))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let finished = poll::until_blocking("the old token revoked", BOUND, Duration::from_millis(500), || {
        let state = cli::token_state(&project.admin(&survivor, &["token", "show", &old_id])?)?;
        Ok((state == "revoked").then(|| started.elapsed()))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let new_holder = project.jobs_holder().expect("a new holder");
    assert_ne!(new_holder, holder_id, "the lease moved to a survivor");
    eprintln!(
        "rotation with the lease holder killed: both delegates on the successor {:.1} s after the rotate call, the old token revoked {:.1} s after it (lease now with {})",
        moved.as_secs_f64(),
        finished.as_secs_f64(),
        ids.get(&new_holder).map_or("?", String::as_str)
    );
    project.assert_no_secrets_in_logs().expect("no secrets in logs");
}
