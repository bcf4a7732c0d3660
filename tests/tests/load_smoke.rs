//! Runs the benchmark suite at smoke scale (seconds) against the real manager and delegate
//! binaries, so the load generator never rots. Asserts that every scenario ran and that its
//! figures are coherent (sessions opened, revoked sessions closed, rotated sessions moved),
//! never any timing.
use std::path::PathBuf;
use std::process::Command;

fn bin(name: &str) -> PathBuf {
    tether_tests::harness::process::binary(name).unwrap()
}

#[test]
fn smoke_suite_runs_every_scenario() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("results.json");
    let status = Command::new(env!("CARGO_BIN_EXE_tether-load"))
        .args(["run", "--out"])
        .arg(&out)
        .arg("--manager-bin")
        .arg(bin("tether-manager"))
        .arg("--delegate-bin")
        .arg(bin("tether-delegate"))
        .status()
        .unwrap();
    assert!(status.success(), "tether-load run --smoke failed: {status}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();

    let steps = v["idle"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| s[1].as_u64().unwrap() > 0), "RSS readings: {steps:?}");

    assert!(v["rate"]["manager_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["rate"]["baseline_per_sec"].as_f64().unwrap() > 0.0);

    let revoke = &v["revoke"];
    for side in ["manager", "baseline"] {
        let rounds = revoke[side].as_array().unwrap();
        assert_eq!(rounds.len(), 1, "{revoke}");
        let round = &rounds[0];
        assert_eq!(round["sessions"], 50, "every {side} connection must close: {revoke}");
        assert_eq!(round["saw_frame"], 50, "every {side} connection must see the frame first: {revoke}");
    }
    // A ratio, not a timing: at this scale every manager session may close before the revoke
    // call even answers (counted as 0 ms), so 0 is a valid ratio.
    let ratio = revoke["p99_ratio"].as_f64().unwrap();
    assert!(ratio.is_finite() && ratio >= 0.0, "{revoke}");

    let baseline_steps = v["idle"]["baseline_steps"].as_array().unwrap();
    assert_eq!(baseline_steps.len(), 2);
    assert!(baseline_steps.iter().all(|s| s[1].as_u64().unwrap() > 0), "{baseline_steps:?}");

    let rotate = &v["rotate"];
    assert_eq!(rotate["moved"], 5, "every session must move to the new token: {rotate}");
    assert_eq!(rotate["dropped"], 0, "{rotate}");

    assert_eq!(v["echo"]["sessions"], 5);
    assert!(v["echo"]["one_session"]["count"].as_u64().unwrap() >= 20);

    assert!(v["footprint"]["rss_kib"].as_u64().unwrap() > 0);
}

/// The replica-set benchmark at smoke scale: three managers on one PostgreSQL, 30 sessions
/// revoked through the first, 3 real delegates failing over. Coherence only, no timing.
#[test]
fn smoke_cluster_benchmark_runs() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("cluster.json");
    let status = Command::new(env!("CARGO_BIN_EXE_tether-load"))
        .args(["cluster", "--replicas", "3", "--sessions", "30", "--delegates", "3", "--out"])
        .arg(&out)
        .arg("--manager-bin")
        .arg(bin("tether-manager"))
        .arg("--delegate-bin")
        .arg(bin("tether-delegate"))
        .status()
        .unwrap();
    assert!(status.success(), "tether-load cluster failed: {status}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let c = &v["cluster"];
    assert_eq!(c["sessions"], 30, "{c}");
    let per = c["per_replica"].as_array().unwrap();
    assert_eq!(per.len(), 3);
    for r in per {
        assert_eq!(r["sessions"], 10, "{r}");
        assert_eq!(r["saw_revoked"], 10, "every session on every replica got a signed revoked: {r}");
    }
    let killed = c["failover_killed"][1].as_u64().unwrap();
    assert!(killed > 0, "the killed replica held delegates: {c}");
    assert_eq!(c["failover"]["count"].as_u64(), Some(killed), "every moved delegate came back: {c}");
}

/// The replica set's session count at smoke scale: 60 sessions over 2 managers, held by child
/// `tether-load hold` processes. Coherence only: every session asked for is held.
#[test]
fn smoke_cluster_scale_runs() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("scale.json");
    let status = Command::new(env!("CARGO_BIN_EXE_tether-load"))
        .args(["cluster-scale", "--sessions", "60", "--replicas", "2", "--out"])
        .arg(&out)
        .arg("--manager-bin")
        .arg(bin("tether-manager"))
        .status()
        .unwrap();
    assert!(status.success(), "tether-load cluster-scale failed: {status}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let c = &v["cluster_scale"];
    assert_eq!(c["held"], 60, "{c}");
    assert_eq!(c["per_replica"].as_array().map(Vec::len), Some(2), "{c}");
}
