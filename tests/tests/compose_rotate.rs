//! Rotation in the quick start: both delegate containers replace themselves with containers
//! carrying the new token within the grace window, the old token ends revoked, Compose still
//! sees both services, and neither a later `docker compose up -d` nor a forced recreate from
//! the unchanged compose file (whose .env still holds the old token) brings the old token back.
use std::time::Duration;

use tether_tests::compose::{rotated_token_value, token_id, ComposeProject, DELEGATES};
use tether_tests::harness::poll::until_blocking;

/// Long enough for a loaded 2-core CI machine (each Compose v1 call takes a second or more).
const GRACE_SECS: u64 = 180;

#[test]
fn rotate_replaces_both_containers_and_compose_up_keeps_the_new_token() {
    let mut project = ComposeProject::up("rotate", &[]).expect("docker/up.sh");
    let old_token = project.dotenv("ACCOUNT_SECRET").expect("ACCOUNT_SECRET").to_string();
    let old_id = token_id(&old_token).expect("token id");
    project.wait_both_connected(&old_id, &[], Duration::from_secs(60)).expect("both connected");
    let manager = project.container_id("manager").expect("manager container");
    let before: Vec<String> =
        DELEGATES.iter().map(|(service, _)| project.container_id(service).expect("container")).collect();

    let rotated_at = std::time::Instant::now();
    let rotated = project
        .admin(&["token", "rotate", &old_id, "--grace-secs", &GRACE_SECS.to_string()])
        .expect("token rotate");
    let new_token = rotated_token_value(&rotated).expect("token rotate --json shows the successor token");
    project.remember_secret(new_token.clone());
    let new_id = token_id(&new_token).expect("new token id");
    assert_ne!(new_id, old_id);

    // Within the grace window: each service is one running container, not the one before, whose
    // environment carries the new token, connected (manager's view and its own health) on it.
    let grace = Duration::from_secs(GRACE_SECS - 10);
    project.wait_both_connected(&new_id, &[], grace).expect("both delegates on the new token");
    println!("both delegates on the new token {:?} after the rotate call", rotated_at.elapsed());
    until_blocking("both services replaced", Duration::from_secs(30), Duration::from_millis(500), || {
        for ((service, _), old) in DELEGATES.iter().zip(&before) {
            let ids = project.container_ids(service)?;
            let [id] = ids.as_slice() else { return Ok(None) };
            if id == old {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .expect("replacements");
    for ((service, name), old) in DELEGATES.iter().zip(&before) {
        let id = project.container_id(service).expect("one container");
        assert_ne!(&id, old, "{service} was not replaced");
        let env = project.container_env(&id, "ACCOUNT_SECRET").expect("inspect");
        assert!(
            env.as_deref() == Some(new_token.as_str()),
            "{service}: replacement does not carry the new token"
        );
        let inspect = project.inspect(&id).expect("inspect");
        assert_eq!(inspect["State"]["Running"], true, "{service} not running");
        let canonical = format!("/{}_{}_1", project.name(), service);
        let canonical_v2 = format!("/{}-{}-1", project.name(), service);
        let container_name = inspect["Name"].as_str().unwrap_or("");
        assert!(
            container_name == canonical || container_name == canonical_v2,
            "{name}: replacement named {container_name}, not the Compose name"
        );
        // The old container is gone.
        assert!(
            tether_tests::harness::docker::docker(&["inspect", old]).is_err(),
            "{service}: old container still exists"
        );
    }
    until_blocking("old token revoked", Duration::from_secs(30), Duration::from_millis(500), || {
        Ok((project.token_state(&old_id)? == "revoked").then_some(()))
    })
    .expect("the old token is revoked once both delegates moved");
    println!("old token revoked, both replaced: {:?} after the rotate call", rotated_at.elapsed());
    let ps = project.compose(&["ps"]).expect("compose ps");
    for (service, _) in DELEGATES {
        assert!(ps.contains(service), "compose ps does not list {service}:\n{ps}");
    }

    // A later `compose up -d` (the compose file and .env unchanged, .env still holding the old
    // token) keeps both delegates on the new token.
    let sessions = project.wait_both_connected(&new_id, &[], Duration::from_secs(10)).expect("connected");
    project.compose(&["up", "-d"]).expect("compose up -d");
    project
        .wait_both_connected(&new_id, &[], Duration::from_secs(60))
        .expect("still on the new token after up -d");
    println!("after compose up -d: still on the new token ({:?})", rotated_at.elapsed());

    // Even a recreate from the compose file (ACCOUNT_SECRET = the old, revoked token) comes back
    // on the new token, through the ACCOUNT_SECRET_FILE volume the delegates kept current.
    let old_sessions: Vec<String> = sessions.values().map(|s| s.session_id.clone()).collect();
    project
        .compose(&["up", "-d", "--no-deps", "--force-recreate", "delegate1", "delegate2"])
        .expect("compose up --force-recreate");
    for (service, _) in DELEGATES {
        let id = project.container_id(service).expect("container");
        let env = project.container_env(&id, "ACCOUNT_SECRET").expect("inspect");
        assert!(
            env.as_deref() == Some(old_token.as_str()),
            "{service}: recreated without the compose file's token"
        );
    }
    project
        .wait_both_connected(&new_id, &old_sessions, Duration::from_secs(90))
        .expect("recreated delegates authenticate with the new token from their token files");
    println!("after a forced recreate: on the new token ({:?})", rotated_at.elapsed());
    assert_eq!(project.token_state(&old_id).expect("state"), "revoked");
    assert_eq!(project.container_id("manager").expect("manager"), manager, "the manager was recreated");

    project.assert_no_secrets_in_logs().expect("no secrets in logs");
}
