//! Revocation in the quick start: both delegates stop with exit 78 (EX_CONFIG), their
//! restart policy does not turn that into a hot loop of failed handshakes, and the README's
//! way back (a new token in .env, `docker compose up -d`) brings them back.
use std::time::Duration;

use tether_tests::compose::{created_token_value, token_id, ComposeProject, DELEGATES};
use tether_tests::harness::poll::until_blocking;
use tether_tests::harness::unix_now;

/// How long to watch for a hot loop after the first exit.
const WATCH: Duration = Duration::from_secs(30);

#[test]
fn revoke_stops_both_delegates_with_78_and_no_hot_loop() {
    let mut project = ComposeProject::up("revoke", &[]).expect("docker/up.sh");
    let token = token_id(project.dotenv("ACCOUNT_SECRET").expect("ACCOUNT_SECRET")).expect("token id");
    project.wait_both_connected(&token, &[], Duration::from_secs(60)).expect("both connected");

    let since = unix_now().saturating_sub(1);
    project.admin(&["token", "revoke", &token]).expect("token revoke");
    assert_eq!(project.token_state(&token).expect("state"), "revoked");

    // Both delegate containers die with 78: the engine's own record (die events).
    until_blocking("both delegates exit 78", Duration::from_secs(30), Duration::from_millis(500), || {
        let events = project.die_events(since)?;
        Ok(DELEGATES
            .iter()
            .all(|(service, _)| events.iter().any(|(s, code)| s == service && *code == 78))
            .then_some(()))
    })
    .expect("exit 78");
    let first_exit = unix_now();

    // No hot loop: the restart policy starts them again, but nothing dies again for a while
    // (the delegate waits out its quiet period before any new handshake), nothing exits with
    // another code, and the manager shows no session on the revoked token.
    let watch_end = std::time::Instant::now() + WATCH;
    while std::time::Instant::now() < watch_end {
        let events = project.die_events(since).expect("events");
        for (service, _) in DELEGATES {
            let exits: Vec<i64> = events.iter().filter(|(s, _)| s == service).map(|(_, c)| *c).collect();
            assert!(exits.len() <= 1, "{service} exited {} times within {WATCH:?}: {exits:?}", exits.len());
            assert!(exits.iter().all(|c| *c == 78), "{service} exit codes {exits:?}");
        }
        let live = project.live_delegates().expect("delegate list");
        assert!(live.iter().all(|d| d.token_id != token), "a session on the revoked token");
        std::thread::sleep(Duration::from_secs(2));
    }
    println!("watched {}s after the exits: no further exits", unix_now() - first_exit);
    for (service, _) in DELEGATES {
        assert!(!project.delegate_healthy(service).unwrap_or(false), "{service} claims a session");
    }

    // The way back: a new token in .env and `compose up -d` (which recreates the delegates
    // with it); each tries its token file's revoked token, then the new one from the
    // environment, after the quiet period of the last fatal exit.
    let created = project.admin(&["token", "create", "second"]).expect("token create");
    let second = created_token_value(&created).expect("token create --json shows the value");
    project.set_dotenv("ACCOUNT_SECRET", &second).expect("edit .env");
    project.compose(&["up", "-d"]).expect("compose up -d");
    let second_id = token_id(&second).expect("token id");
    project.wait_both_connected(&second_id, &[], Duration::from_secs(120)).expect("back on the new token");

    project.assert_no_secrets_in_logs().expect("no secrets in logs");
}
