//! The quick start comes up: `docker/up.sh` initialises the manager once, writes the project's
//! .env (0600) and starts a manager and two delegates that both hold authenticated sessions on
//! the account's default token; running it again changes nothing.
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tether_tests::compose::{token_id, ComposeProject, DELEGATES};

#[test]
#[ignore = "needs the manager (issue 3): tether-manager init/serve/CLI not landed yet"]
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
    let again = std::process::Command::new("bash")
        .arg(tether_tests::compose::repo_root().join("docker/up.sh"))
        .env("TETHER_PROJECT", project.name())
        .env("TETHER_ENV_FILE", project.env_file())
        .env("TETHER_PUBLISH_PORT", "")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run up.sh");
    assert!(
        again.status.success(),
        "second up.sh: {}",
        project.redact(&String::from_utf8_lossy(&again.stderr))
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialised"));
    let after: Vec<String> =
        DELEGATES.iter().map(|(service, _)| project.container_id(service).expect("container")).collect();
    assert_eq!(after, containers, "a second up.sh recreated delegate containers");
    let live = project.live_delegates().expect("delegate list");
    for session in sessions.values() {
        assert!(live.contains(session), "delegate {} reconnected after a second up.sh", session.name);
    }

    project.assert_no_secrets_in_logs().expect("no secrets in logs");
}
