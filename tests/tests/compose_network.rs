//! A delegate cut off its network for 20 s reconnects once the network is back, while the
//! other delegate stays connected throughout.
use std::time::{Duration, Instant};

use tether_tests::compose::{token_id, ComposeProject};
use tether_tests::harness::docker::docker;

/// How long the delegate is cut off (the scenario's duration, not a wait for state).
const CUT: Duration = Duration::from_secs(20);

#[test]
fn network_disconnect_for_20s_then_the_delegate_reconnects() {
    // Short heartbeats, so the manager notices the silent delegate within the cut.
    let project = ComposeProject::up("netcut", &[("TETHER_HEARTBEAT_SECS", "5")]).expect("docker/up.sh");
    let token = token_id(project.dotenv("ACCOUNT_SECRET").expect("ACCOUNT_SECRET")).expect("token id");
    let before = project.wait_both_connected(&token, &[], Duration::from_secs(60)).expect("both connected");

    let delegate1 = project.container_id("delegate1").expect("delegate1 container");
    let network = project.network();
    docker(&["network", "disconnect", &network, &delegate1]).expect("network disconnect");
    let cut_end = Instant::now() + CUT;
    let mut other_stayed = true;
    while Instant::now() < cut_end {
        // delegate2 is untouched: its session never changes.
        let live = project.live_delegates().expect("delegate list");
        other_stayed &= live.iter().any(|d| d == &before["delegate-2"]);
        std::thread::sleep(Duration::from_secs(1));
    }
    docker(&["network", "connect", &network, &delegate1]).expect("network connect");
    assert!(other_stayed, "delegate-2 lost its session while delegate-1 was cut off");

    // delegate-1 is back on a new session (its old one timed out during the cut), and
    // delegate-2 still has the session it had before.
    let after = project
        .wait_both_connected(&token, &[before["delegate-1"].session_id.clone()], Duration::from_secs(90))
        .expect("delegate-1 reconnects once the network is back");
    assert_eq!(after["delegate-2"], before["delegate-2"], "delegate-2 reconnected");
    project.assert_no_secrets_in_logs().expect("no secrets in logs");
}
