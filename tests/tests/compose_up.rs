//! The quick start comes up: `docker/up.sh` initialises the manager once, writes the project's
//! .env (0600) and starts a manager and two delegates that both hold authenticated sessions on
//! the account's default token; running it again changes nothing.
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tether_tests::compose::{token_id, ComposeProject, DELEGATES};

#[test]
fn up_brings_both_delegates_online_and_a_second_up_changes_nothing() {
    let project = ComposeProject::up("up", &[]).expect("docker/up.sh");

    let mode = std::fs::metadata(project.env_file()).expect(".env").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, ".env must be private");
    let default_token = token_id(project.dotenv("ACCOUNT_SECRET").expect("ACCOUNT_SECRET")).expect("token");

    let sessions = project
        .wait_both_connected(&default_token, &[], Duration::from_secs(60))
        .expect("both delegates connected on the default token");
    let containers: Vec<String> =
        DELEGATES.iter().map(|(service, _)| project.container_id(service).expect("container")).collect();

    // Each delegate container carries the token in its environment (Harness's ACCOUNT_SECRET)
    // and runs as the image's non-root user with the socket's group added.
    for container in &containers {
        let secret = project.container_env(container, "ACCOUNT_SECRET").expect("inspect");
        assert!(secret.as_deref() == project.dotenv("ACCOUNT_SECRET").ok(), "ACCOUNT_SECRET not from .env");
        let inspect = project.inspect(container).expect("inspect");
        assert_eq!(inspect["Config"]["User"], "65532:65532");
    }

    // up.sh again: already initialised, nothing recreated, nobody reconnects.
    let again = project.rerun_up().expect("a second docker/up.sh");
    assert!(again.contains("already initialised"), "second up.sh did not notice:\n{again}");
    let after: Vec<String> =
        DELEGATES.iter().map(|(service, _)| project.container_id(service).expect("container")).collect();
    assert_eq!(after, containers, "a second up.sh recreated delegate containers");
    let live = project.live_delegates().expect("delegate list");
    for session in sessions.values() {
        assert!(live.contains(session), "delegate {} reconnected after a second up.sh", session.name);
    }

    project.assert_no_secrets_in_logs().expect("no secrets in logs");
}
