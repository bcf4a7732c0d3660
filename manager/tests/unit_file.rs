//! The shipped systemd unit keeps its hardening (a regression test on the file itself).

#[test]
fn unit_file_is_notify_and_hardened() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tether-manager.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for required in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=tether",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestartPreventExitStatus=64",
    ] {
        assert!(lines.contains(&required), "missing `{required}`");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("ExecStart=")
            && l.contains(" serve ")
            && l.contains("--data-dir /var/lib/tether")),
        "ExecStart runs serve on the state directory"
    );
}
