//! `docker restart` of the manager: both delegates come back on new sessions by themselves.
use std::time::Duration;

use tether_tests::compose::{token_id, ComposeProject};
use tether_tests::harness::docker::docker;

#[test]
fn manager_restart_both_delegates_reconnect() {
    let project = ComposeProject::up("mgr-restart", &[]).expect("docker/up.sh");
    let token = token_id(project.dotenv("ACCOUNT_SECRET").expect("ACCOUNT_SECRET")).expect("token id");
    let before = project.wait_both_connected(&token, &[], Duration::from_secs(60)).expect("both connected");
    let old_sessions: Vec<String> = before.values().map(|s| s.session_id.clone()).collect();

    let manager = project.container_id("manager").expect("manager container");
    docker(&["restart", "--time", "10", &manager]).expect("docker restart manager");

    // Reconnect backoff is capped at 60 s; a manager `goodbye` makes it prompt.
    let after = project
        .wait_both_connected(&token, &old_sessions, Duration::from_secs(90))
        .expect("both delegates reconnect after the manager restarts");
    assert_eq!(after.len(), 2);
    project.assert_no_secrets_in_logs().expect("no secrets in logs");
}
