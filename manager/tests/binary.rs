//! The real `tether-manager` binary: the `init` contract, exit codes of bad configuration,
//! every CLI subcommand against a running manager, `kill -9` durability, graceful SIGTERM,
//! and no secret in the captured logs. The binary runs through the end-to-end harness
//! (`tether_tests::harness`), the one launcher; the in-test delegate client is `common`'s.
//! The data dir's offline paths are in `binary_datadir.rs`, the CLI's errors, durations and
//! generated files in `binary_cli.rs`, log behaviour in `binary_logs.rs`.
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tether_protocol::message::S2c;

#[test]
fn init_prints_once_and_refuses_to_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let out = init(dir.path(), &["--json", "--tls-san", "manager", "--manager-url", "https://manager:8443"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "account_id",
        "default_token",
        "default_token_id",
        "admin_token",
        "ca_cert",
        "ca_fingerprint_sha256",
        "manager_url",
    ] {
        assert!(keys.contains(&k), "missing {k}");
    }
    assert_eq!(v["account_id"], "default");
    assert_eq!(v["manager_url"], "https://manager:8443");
    assert!(v["default_token"].as_str().unwrap().starts_with("tdt_"));
    assert!(v["admin_token"].as_str().unwrap().starts_with("tat_"));
    let ca = PathBuf::from(v["ca_cert"].as_str().unwrap());
    assert!(ca.is_absolute() && ca.exists());
    assert_eq!(v["ca_fingerprint_sha256"].as_str().unwrap().len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let snapshot = |p: &Path| {
        ["tether.db", "master.key", "ca.pem", "server.pem"].map(|f| std::fs::read(p.join(f)).unwrap())
    };
    let before = snapshot(dir.path());
    let again = init(dir.path(), &["--json"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialised"));
    assert!(again.stdout.is_empty());
    assert_eq!(before, snapshot(dir.path()), "nothing changed");

    let env_dir = tempfile::tempdir().unwrap();
    let out = init(env_dir.path(), &["--env", "--account", "acme"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], "ACCOUNT_ID=acme");
    assert!(lines[1].starts_with("ACCOUNT_SECRET=tdt_"));
    assert!(lines[2].starts_with("TETHER_ADMIN_TOKEN=tat_"));
}

#[test]
fn bad_configuration_and_usage_exit_64_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = command()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TETHER_HEARTBEAT_SECS", "zero")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("heartbeat_secs") && err.contains("TETHER_HEARTBEAT_SECS"), "{err}");
    let out = command().args(["serve", "--listen", "nowhere"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`listen`"));
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "max_frame = 12\n").unwrap();
    let out = command().args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_frame"));
    assert_eq!(command().args(["token"]).output().unwrap().status.code(), Some(64));
    assert_eq!(command().args(["frobnicate"]).output().unwrap().status.code(), Some(64));
    let out = command().args(["token", "list", "--ca-cert", "/nonexistent"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "no admin token is a usage error");
}

/// Runs the admin CLI against `m` as the init admin (through `tokio::process`, so the
/// in-test delegate keeps answering while the CLI waits).
#[tokio::test]
async fn every_cli_subcommand_works_against_a_running_manager() {
    install_provider();
    let m = start(&[]).await;
    let init = &m.init;

    // account
    let created = cli_json(&m, &["account", "create", "beta", "--name", "Beta"]).await;
    assert_eq!(created["account"]["id"], "beta");
    assert!(cli(&m, &["account", "list"]).await.contains("beta"));
    assert_eq!(cli_json(&m, &["account", "show", "beta"]).await["name"], "Beta");

    // token
    let t = cli_json(
        &m,
        &[
            "token",
            "create",
            "ci",
            "--account",
            "acme",
            "--allow-cidr",
            "127.0.0.0/8",
            "--expires-in",
            "3600",
        ],
    )
    .await;
    let value = t["value"].as_str().unwrap().to_owned();
    assert!(value.starts_with("tdt_"));
    let human = cli(&m, &["token", "create", "ci2", "--account", "acme"]).await;
    assert!(human.contains("shown once") && human.contains("tdt_"));
    let table = cli(&m, &["token", "list", "--account", "acme"]).await;
    assert!(table.starts_with("ID") && table.contains("ci2") && table.contains("127.0.0.0/8"), "{table}");
    assert!(!table.contains(&value), "lists never show values");
    let shown = cli_json(&m, &["token", "show", "ci", "--account", "acme"]).await;
    assert_eq!(shown["state"], "active");

    // delegate: a live test delegate on the new token
    let m_like = Target { url: m.url(), ca: init.ca_cert.clone() };
    let d = m_like.connect(&init.account_id, &value, "cli-test").await;
    let sid = d.welcome.session_id.to_string();
    let serving = d.serve_tasks();
    let list = cli_json(&m, &["delegate", "list"]).await;
    assert_eq!(list[0]["session_id"], sid.as_str());
    assert!(cli(&m, &["delegate", "list", "--account", "acme"]).await.contains("cli-test"));
    let pong = cli(&m, &["delegate", "ping", &sid]).await;
    assert!(pong.contains("reply from") && pong.contains(" ms"), "{pong}");
    let pong = cli_json(&m, &["delegate", "ping", &sid, "--payload", "abc"]).await;
    assert_eq!(pong["payload"], "abc");
    cli(&m, &["delegate", "disconnect", &sid]).await;
    assert_eq!(tokio::time::timeout(WAIT, serving).await.unwrap().unwrap(), Some(1000));

    // rotate, rotation, revoke, delete
    let r = cli_json(&m, &["token", "rotate", "ci2", "--account", "acme", "--grace-secs", "30"]).await;
    assert!(r["token"].as_str().unwrap().starts_with("tdt_"));
    let rid = r["rotation_id"].as_str().unwrap().to_owned();
    let shown = cli(&m, &["rotation", "show", &rid]).await;
    assert!(shown.contains(&rid), "{shown}");
    assert!(cli(&m, &["rotation", "list"]).await.contains(&rid));
    let revoked = cli(&m, &["token", "revoke", "ci", "--account", "acme"]).await;
    assert!(revoked.contains("Revoked token ci"), "{revoked}");
    assert_eq!(cli_json(&m, &["token", "delete", "ci", "--account", "acme"]).await["deleted"], "ci");

    // admin-token
    let a = cli_json(
        &m,
        &["admin-token", "create", "ops", "--scope", "tokens:read", "--scope", "delegates:read"],
    )
    .await;
    assert!(a["value"].as_str().unwrap().starts_with("tat_"));
    assert!(cli(&m, &["admin-token", "list"]).await.contains("ops"));
    let rv = cli_json(&m, &["admin-token", "revoke", "ops"]).await;
    assert!(rv["revoked_at"].as_u64().is_some());

    // audit
    let audit = cli(&m, &["audit", "--limit", "100"]).await;
    assert!(
        audit.contains("admin_token.revoke") && audit.contains("token.delete") && audit.contains("127.0.0.1"),
        "{audit}"
    );

    // A refused call (409) exits 65 with the API's message.
    let out = cli_output(&m, &["token", "delete", "ci2", "--account", "acme"]).await;
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoke it first"));

    let logs = m.log_lines();
    assert_no_secrets(
        &logs,
        &[
            &init.admin_token,
            &init.default_token,
            &value,
            r["token"].as_str().unwrap(),
            a["value"].as_str().unwrap(),
        ],
    );
}

#[tokio::test]
async fn kill_9_loses_nothing_that_was_acknowledged() {
    install_provider();
    let mut m = start(&[]).await;
    let init = m.init.clone();
    let api = tether_manager::cli::ApiClient::new(&m.url(), &init.ca_cert, &init.admin_token).unwrap();
    let post = |path: &'static str, body: Value| {
        let api = api.clone();
        async move { api.request::<Value>(reqwest::Method::POST, path, Some(&body)).await.unwrap() }
    };
    let kept =
        post("/api/v1/accounts/acme/tokens", json!({"name": "kept", "allowed_cidrs": ["127.0.0.1"]})).await;
    let gone = post("/api/v1/accounts/acme/tokens", json!({"name": "gone"})).await;
    let gone_id = gone["token"]["id"].as_str().unwrap().to_owned();
    let _ = api
        .request::<Value>(
            reqwest::Method::POST,
            &format!("/api/v1/accounts/acme/tokens/{gone_id}/revoke"),
            Some(&json!({})),
        )
        .await
        .unwrap();
    let admin = post("/api/v1/admin-tokens", json!({"name": "second", "scopes": ["tokens:read"]})).await;
    let _ = post("/api/v1/accounts", json!({"id": "gamma"})).await;
    // A live delegate on the default token keeps its rotation running.
    let target = Target { url: m.url(), ca: init.ca_cert.clone() };
    let _live = target.connect("acme", &init.default_token, "live").await;
    // The last acknowledged change, then kill -9 at once.
    let rotated = post("/api/v1/accounts/acme/tokens/default/rotate", json!({"grace_secs": 600})).await;
    m.kill9().unwrap();

    m.serve().await.unwrap();
    let api = tether_manager::cli::ApiClient::new(&m.url(), &init.ca_cert, &init.admin_token).unwrap();
    let tokens: Vec<Value> =
        api.request(reqwest::Method::GET, "/api/v1/accounts/acme/tokens", None::<&Value>).await.unwrap();
    let state = |name: &str| tokens.iter().find(|t| t["name"] == name).map(|t| t["state"].clone());
    assert_eq!(state("kept"), Some(json!("active")));
    assert_eq!(state("gone"), Some(json!("revoked")));
    assert_eq!(state("default"), Some(json!("active")), "the successor survived");
    let old = tokens.iter().find(|t| t["id"] == init.default_token_id.to_string().as_str()).unwrap();
    assert_eq!(old["state"], "rotating", "the rotation survived");
    let rotation: Value = api
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/rotations/{}", rotated["rotation_id"].as_str().unwrap()),
            None::<&Value>,
        )
        .await
        .unwrap();
    assert_eq!(rotation["state"], "running");
    let accounts: Vec<Value> =
        api.request(reqwest::Method::GET, "/api/v1/accounts", None::<&Value>).await.unwrap();
    assert!(accounts.iter().any(|a| a["id"] == "gamma"));
    let second =
        tether_manager::cli::ApiClient::new(&m.url(), &init.ca_cert, admin["value"].as_str().unwrap())
            .unwrap();
    second
        .request::<Value>(reqwest::Method::GET, "/api/v1/accounts", None::<&Value>)
        .await
        .expect("second admin token works");

    // Keys survived too: the kept token and the successor authenticate; the revoked one is refused.
    let target = Target { url: m.url(), ca: init.ca_cert.clone() };
    target.connect("acme", kept["value"].as_str().unwrap(), "after-restart").await;
    target.connect("acme", rotated["token"].as_str().unwrap(), "successor").await;
    let refused = target.refused("acme", gone["value"].as_str().unwrap()).await;
    assert!(
        matches!(refused.error, tether_protocol::error::HandshakeError::Rejected(ref r) if r.signed && r.code == tether_protocol::RejectCode::Revoked)
    );

    let all = m.log_lines();
    assert_no_secrets(
        &all,
        &[&init.admin_token, kept["value"].as_str().unwrap(), rotated["token"].as_str().unwrap()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_goodbye_and_exits_promptly() {
    install_provider();
    let mut m = start(&[("TETHER_DRAIN_SECS", "5")]).await;
    let init = m.init.clone();
    let target = Target { url: m.url(), ca: init.ca_cert.clone() };
    let mut d = target.connect("acme", &init.default_token, "term").await;
    let started = Instant::now();
    m.terminate().unwrap();
    match d.recv().await {
        Ok(S2c::Goodbye { .. }) => {}
        other => panic!("expected goodbye, got {other:?}"),
    }
    assert_eq!(close_code(&mut d.ws).await, Some(1001));
    let (status, _) = m.wait_exit(Duration::from_secs(8)).await.expect("manager did not exit within 8 s");
    assert!(status.success(), "{status:?}");
    eprintln!("SIGTERM → exit in {:?}", started.elapsed());
    let logs = m.log_lines();
    assert!(logs.iter().all(|l| serde_json::from_str::<Value>(l).is_ok()), "every log line is JSON");
    assert!(logs.iter().any(|l| l.contains("SIGTERM received")));
    assert_no_secrets(&logs, &[&init.admin_token, &init.default_token]);
}
