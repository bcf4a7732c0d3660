//! The real `tether-manager` binary: the `init` contract, exit codes, every CLI subcommand
//! against a running manager, `kill -9` durability, graceful SIGTERM, and no secret in the
//! captured logs. The binary runs through the end-to-end harness (`tether_tests::harness`),
//! the one launcher; the in-test delegate client is `common`'s.
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tether_protocol::message::S2c;
use tether_tests::harness::{Manager, Options};
use tether_tests::secrets::find_needles;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_tether-manager");

fn command() -> std::process::Command {
    tether_tests::harness::manager::command(Path::new(BIN))
}

fn init(dir: &Path, extra: &[&str]) -> std::process::Output {
    command().arg("init").arg("--data-dir").arg(dir).args(extra).output().unwrap()
}

/// Serves a fresh data dir (`init --account acme --tls-san manager`) through the one
/// end-to-end harness, with JSON logs and `env`.
async fn start(env: &[(&str, &str)]) -> Manager {
    let mut options = Options::with_env(env);
    options.env.push(("TETHER_LOG_FORMAT".into(), "json".into()));
    options.account = Some("acme".into());
    options.tls_sans = vec!["manager".into()];
    options.bin = Some(BIN.into());
    Manager::start_with(options).await.expect("the manager starts")
}

fn assert_no_secrets(logs: &[String], secrets: &[&str]) {
    assert!(!logs.is_empty());
    // Each value, and not even the part after its `tdt_` / `tat_` prefix.
    let needles: Vec<String> =
        secrets.iter().flat_map(|s| [s.to_string(), s.get(4..).unwrap_or_default().to_owned()]).collect();
    for line in logs {
        let found = find_needles("log line", line, &needles);
        assert!(found.is_empty(), "a secret leaked into the logs ({found:?}): {line}");
    }
}

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
async fn cli_output(m: &Manager, args: &[&str]) -> std::process::Output {
    tokio::process::Command::from(m.cli_command(args)).output().await.unwrap()
}

/// Runs a CLI subcommand and returns stdout (asserting exit 0).
async fn cli(m: &Manager, args: &[&str]) -> String {
    let out = cli_output(m, args).await;
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

async fn cli_json(m: &Manager, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&cli(m, &all).await).unwrap()
}

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

/// A manager address for the in-test delegate client.
struct Target {
    url: String,
    ca: PathBuf,
}

impl Target {
    async fn connect(&self, account: &str, token: &str, name: &str) -> TestDelegate {
        let ws_url = format!("{}/api/v1/delegates/connect", self.url.replace("https://", "wss://"));
        let ws = open_ws(&ws_url, &self.ca).await;
        let token = tether_protocol::Token::parse(token).unwrap();
        handshake_on(ws, account, &token, Uuid::new_v4(), name).await.expect("handshake")
    }

    async fn refused(&self, account: &str, token: &str) -> Refused {
        let ws_url = format!("{}/api/v1/delegates/connect", self.url.replace("https://", "wss://"));
        let ws = open_ws(&ws_url, &self.ca).await;
        let token = tether_protocol::Token::parse(token).unwrap();
        handshake_on(ws, account, &token, Uuid::new_v4(), "x").await.err().expect("refused")
    }
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

/// `admin-token create --offline --data-dir D …` with `extra` arguments (no API, no token).
fn offline_create(data_dir: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    command()
        .args(["admin-token", "create", "--offline", "--data-dir"])
        .arg(data_dir)
        .args(["--name", name])
        .args(extra)
        .output()
        .unwrap()
}

/// Issue 17, finding 1: the last admin token is not revoked (409, saying what to do), and
/// access comes back offline, through the data dir: on a stopped manager (then served), and
/// on a running one; audited as `local`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_access_is_recovered_offline_through_the_data_dir() {
    let mut m = start(&[]).await;
    let out = cli_output(&m, &["admin-token", "revoke", "init-admin"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("last active admin token") && err.contains("--offline"), "{err}");
    assert!(cli(&m, &["admin-token", "list"]).await.contains("init-admin"), "the init token still works");

    // Stopped: create one offline, serve again, it works.
    m.stop().await.unwrap();
    let data_dir = m.data_dir();
    let out = offline_create(&data_dir, "rescue", &["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rescue = created["value"].as_str().unwrap().to_owned();
    assert!(rescue.starts_with("tat_"));
    assert_eq!(created["admin_token"]["scopes"], json!(["admin"]), "admin by default");
    assert_eq!(created["admin_token"]["created_by"], "local");
    m.serve().await.unwrap();
    fn with_token<'a>(args: &[&'a str], token: &'a str) -> Vec<&'a str> {
        [args, &["--admin-token", token]].concat()
    }
    let shown = cli(&m, &with_token(&["admin-token", "revoke", "init-admin"], &rescue)).await;
    assert!(shown.contains("revoked"), "{shown}");

    // Running: the manager holds the database open; a second writer waits for its lock.
    let out = offline_create(&data_dir, "rescue-2", &["--scope", "admin", "--expires-in", "3600"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let second = text.lines().find(|l| l.starts_with("tat_")).expect("the value, once").to_owned();
    let list = cli(&m, &["admin-token", "list", "--admin-token", &second]).await;
    assert!(list.contains("rescue-2") && list.contains("rescue"), "{list}");

    let audit = cli_json(&m, &with_token(&["audit", "--limit", "50"], &rescue)).await;
    let local: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "admin_token.create" && e["actor"] == "local")
        .collect();
    assert_eq!(local.len(), 2, "{audit:#}");
    assert!(local.iter().all(|e| e["source_ip"].is_null()));

    // Refused, changing nothing: an unknown data dir, a duplicate name, a bad scope.
    let empty = tempfile::tempdir().unwrap();
    let out = offline_create(&empty.path().join("typo"), "x", &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not initialised"));
    assert!(!empty.path().join("typo").exists());
    assert!(!offline_create(&data_dir, "rescue", &[]).status.success(), "names are unique");
    assert_eq!(offline_create(&data_dir, "y", &["--scope", "root"]).status.code(), Some(64));
    assert_no_secrets(&m.log_lines(), &[&rescue, &second]);
}

/// Issue 17, finding 7: `serve` on a data dir that is not initialised (a typo, an empty
/// volume) refuses with 64 and creates nothing, saying to run `init` or pass `--init`;
/// `--init` initialises it without making any token (nothing secret in the log), and the
/// first admin token then comes from the offline create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_data_dir_that_is_not_initialised() {
    install_provider();
    let root = tempfile::tempdir().unwrap();
    let serve = |dir: &Path| {
        let mut c = command();
        c.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir);
        c
    };
    let missing = root.path().join("typo");
    let out =
        tether_tests::harness::process::run_within(&mut serve(&missing), Duration::from_secs(20)).unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("tether-manager init --data-dir {}", missing.display()))
            && err.contains("--init"),
        "{err}"
    );
    assert!(!missing.exists(), "nothing created");
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out =
        tether_tests::harness::process::run_within(&mut serve(&empty), Duration::from_secs(20)).unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing written");

    // --init (here TETHER_INIT=1): initialised and served.
    let mut cmd = serve(&empty);
    cmd.env("TETHER_INIT", "1").env("RUST_LOG", "info");
    let mut proc = tether_tests::harness::process::Proc::spawn("serve --init", cmd).unwrap();
    let addr = tether_tests::harness::poll::until("the listening line", Duration::from_secs(20), || {
        let found = proc.lines().iter().find_map(|l| tether_tests::harness::manager::listening_addr(l));
        let exited = !proc.running();
        async move {
            match found {
                Some(a) => Ok(Some(a)),
                None if exited => Err(std::io::Error::other("the manager exited").into()),
                None => Ok(None),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {}", proc.log()));
    assert!(empty.join("ca.pem").exists() && empty.join("tether.db").exists());
    let out = offline_create(&empty, "first", &["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = first["value"].as_str().unwrap().to_owned();
    let client =
        tether_manager::cli::ApiClient::new(&format!("https://{addr}"), &empty.join("ca.pem"), &first)
            .unwrap();
    let accounts: Value =
        client.request(reqwest::Method::GET, "/api/v1/accounts", None::<&Value>).await.unwrap();
    assert_eq!(accounts, json!([]), "--init makes no account");
    let log = proc.log();
    assert!(log.contains("--offline"), "the log says how to get the first admin token: {log}");
    assert!(!log.contains("tat_") && !log.contains("tdt_"), "{log}");
    proc.terminate().unwrap();
    proc.wait_exit(Duration::from_secs(15)).await.unwrap();

    // An initialised data dir is served without --init (as every other test does), and
    // --init on it changes nothing.
    let before = std::fs::read(empty.join("ca.pem")).unwrap();
    let mut cmd = serve(&empty);
    cmd.arg("--init").env("RUST_LOG", "info");
    let mut proc = tether_tests::harness::process::Proc::spawn("serve --init again", cmd).unwrap();
    tether_tests::harness::poll::until("the listening line", Duration::from_secs(20), || {
        let found = proc.lines().iter().any(|l| tether_tests::harness::manager::listening_addr(l).is_some());
        let exited = !proc.running();
        async move {
            match found {
                true => Ok(Some(())),
                false if exited => Err(std::io::Error::other("the manager exited").into()),
                false => Ok(None),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {}", proc.log()));
    assert!(!proc.log().contains("initialised the data dir"));
    assert_eq!(before, std::fs::read(empty.join("ca.pem")).unwrap());
    proc.terminate().unwrap();
    proc.wait_exit(Duration::from_secs(15)).await.unwrap();
}

/// Runs the CLI with `--json` expecting `exit`; returns the one JSON error object it printed
/// on stderr (stdout stays empty).
async fn cli_json_error(m: &Manager, args: &[&str], exit: i32) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cli_output(m, &all).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    let v: Value =
        serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {err}"));
    assert_eq!(v["error"]["exit_code"], exit, "{v}");
    assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{v}");
    v
}

/// Issue 17, finding 9: the documented exit codes (64 usage, 65 refused input, 69
/// unreachable or untrusted, 77 not authorised), errors as JSON under `--json`, and the TLS
/// trust failure naming `--ca-cert` and where the CA is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_have_documented_exit_codes_and_json() {
    let m = start(&[]).await;

    // 64: usage, before any call (clap's refusal too).
    let v = cli_json_error(&m, &["token", "list", "--admin-token", ""], 64).await;
    assert_eq!(v["error"]["code"], "usage");
    let v = cli_json_error(&m, &["token", "create"], 64).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("<NAME>"), "{v}");
    let out = cli_output(&m, &["token", "create"]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(!String::from_utf8_lossy(&out.stderr).trim_start().starts_with('{'), "text without --json");

    // 65: the server refused the input (400 validation, 404, 409).
    let v = cli_json_error(&m, &["token", "create", "bad name!", "--account", "acme"], 65).await;
    assert_eq!(v["error"]["status"], 400, "{v}");
    let v = cli_json_error(&m, &["token", "show", "nope", "--account", "acme"], 65).await;
    assert_eq!((v["error"]["status"].clone(), v["error"]["code"].clone()), (json!(404), json!("not_found")));
    let v = cli_json_error(&m, &["account", "create", "acme"], 65).await;
    assert_eq!(v["error"]["status"], 409, "{v}");
    let out = cli_output(&m, &["account", "create", "acme"]).await;
    assert_eq!(out.status.code(), Some(65));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("tether-manager: "),
        "a sentence without --json"
    );

    // 77: not authorised (403 for a token without the scope, 401 for an unknown one).
    let reader = cli_json(&m, &["admin-token", "create", "reader", "--scope", "tokens:read"]).await;
    let reader = reader["value"].as_str().unwrap().to_owned();
    let v = cli_json_error(&m, &["account", "create", "zeta", "--admin-token", &reader], 77).await;
    assert_eq!(v["error"]["status"], 403, "{v}");
    let unknown = "tat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let v = cli_json_error(&m, &["token", "list", "--account", "acme", "--admin-token", unknown], 77).await;
    assert_eq!(v["error"]["status"], 401, "{v}");

    // 69: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let v = cli_json_error(&m, &["token", "list", "--manager", &nowhere], 69).await;
    assert_eq!(v["error"]["code"], "unreachable");

    // 69: another manager's CA — the message says to pass --ca-cert and where the CA is.
    let other = tempfile::tempdir().unwrap();
    assert!(init(other.path(), &["--json"]).status.success());
    let other_ca = other.path().join("ca.pem");
    let other_ca = other_ca.to_str().unwrap();
    let v = cli_json_error(&m, &["token", "list", "--ca-cert", other_ca], 69).await;
    assert_eq!(v["error"]["code"], "tls_untrusted");
    let out = cli_output(&m, &["token", "list", "--ca-cert", other_ca]).await;
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-cert") && err.contains("ca.pem") && err.contains(other_ca), "{err}");

    assert_no_secrets(&m.log_lines(), &[&m.init.admin_token, &reader]);
}

/// Issue 17, finding 9: durations as `90s`, `1h`, `30d` wherever seconds are taken (plain
/// seconds still work); a bad one is a usage error naming the forms, multi-byte and overflow
/// input included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_durations_take_units() {
    let m = start(&[]).await;
    let lifetime = |v: &Value| v["expires_at"].as_u64().unwrap() - v["created_at"].as_u64().unwrap();
    let t = cli_json(&m, &["token", "create", "h1", "--account", "acme", "--expires-in", "1h"]).await;
    assert_eq!(lifetime(&t["token"]), 3600, "{t}");
    let t = cli_json(&m, &["token", "create", "s90", "--account", "acme", "--expires-in", "90"]).await;
    assert_eq!(lifetime(&t["token"]), 90, "plain seconds");
    let a =
        cli_json(&m, &["admin-token", "create", "month", "--scope", "tokens:read", "--expires-in", "30d"])
            .await;
    assert_eq!(lifetime(&a["admin_token"]), 30 * 86_400, "{a}");
    let r =
        cli_json(&m, &["token", "rotate", "h1", "--account", "acme", "--grace", "90s", "--expires-in", "2h"])
            .await;
    let shown = cli_json(&m, &["rotation", "show", r["rotation_id"].as_str().unwrap()]).await;
    assert_eq!(shown["deadline"].as_u64().unwrap() - shown["started_at"].as_u64().unwrap(), 90, "{shown}");

    for bad in ["1é", "１h", "💥", "1.5h", "99999999999999999999", "18446744073709551615m"] {
        let out = cli_output(&m, &["token", "create", "x", "--account", "acme", "--expires-in", bad]).await;
        assert_eq!(out.status.code(), Some(64), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("duration") && err.contains("--expires-in"), "{bad}: {err}");
    }
    let v = cli_json_error(&m, &["token", "rotate", "s90", "--account", "acme", "--grace-secs", "1w2d"], 64)
        .await;
    assert!(v["error"]["message"].as_str().unwrap().contains("not a duration"), "{v}");
}

/// Issue 17, finding 9: completions and the man page come from the clap definitions.
#[test]
fn completions_and_man_page_are_generated() {
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef tether-manager"), ("fish", "complete -c tether-manager")]
    {
        let out = command().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["admin-token", "rotate", "ca-cert", "completions"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    assert_eq!(command().args(["completions", "tcsh"]).output().unwrap().status.code(), Some(64));
    let out = command().arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH tether-manager"), "{page}");
    for word in ["init", "serve", "admin\\-token", "completions", "rotation"] {
        assert!(page.contains(word), "the man page lacks {word}");
    }
}

/// The JSON log lines whose message is `message`.
fn logged(lines: &[String], message: &str) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

/// Issue 17, finding 6: admin-token, account, token and restriction changes are logged, a
/// revocation once however often it is repeated; a delegate's disconnect line says which
/// delegate, which account and why; JSON carries no `"None"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_logged_once_and_a_disconnect_says_who_and_why() {
    install_provider();
    let m = start(&[]).await;
    cli_json(&m, &["account", "create", "beta"]).await;
    let ops = cli_json(&m, &["admin-token", "create", "ops", "--scope", "tokens:read"]).await;
    for _ in 0..2 {
        cli_json(&m, &["admin-token", "revoke", "ops"]).await;
    }
    cli_json(&m, &["token", "create", "t1", "--account", "acme"]).await;
    for _ in 0..2 {
        cli_json(&m, &["token", "revoke", "t1", "--account", "acme"]).await;
    }
    cli_json(&m, &["token", "delete", "t1", "--account", "acme"]).await;
    cli_json(&m, &["restriction", "create", "r1", "--allow", "GET /api/v1/accounts"]).await;
    cli_json(&m, &["restriction", "delete", "r1"]).await;

    let target = Target { url: m.url(), ca: m.init.ca_cert.clone() };
    let d = target.connect("acme", &m.init.default_token, "logged-one").await;
    let sid = d.welcome.session_id.to_string();
    let serving = d.serve_tasks();
    cli(&m, &["delegate", "disconnect", &sid]).await;
    assert_eq!(tokio::time::timeout(WAIT, serving).await.unwrap().unwrap(), Some(1000));
    let gone = tether_tests::harness::poll::until("the disconnect line", WAIT, || {
        let found = logged(&m.log_lines(), "delegate disconnected").into_iter().next();
        async move { Ok(found) }
    })
    .await
    .unwrap();
    assert_eq!(gone["session_id"], sid.as_str(), "{gone}");
    assert_eq!(gone["delegate"], "logged-one", "{gone}");
    assert_eq!(gone["account"], "acme", "{gone}");
    assert_eq!(gone["reason"], "disconnected by an operator", "{gone}");
    assert_eq!(gone["close_code"], 1000, "{gone}");

    let lines = m.log_lines();
    let ops_id = ops["admin_token"]["id"].as_str().unwrap();
    let created = logged(&lines, "admin token created");
    assert!(created.iter().any(|l| l["admin_token_id"] == ops_id), "{created:?}");
    let revoked = logged(&lines, "admin token revoked");
    assert_eq!(revoked.len(), 1, "logged once, not at the idempotent repeat: {revoked:?}");
    assert_eq!(revoked[0]["admin_token_id"], ops_id);
    assert_eq!(logged(&lines, "token revoked").len(), 1, "logged once, not at the idempotent repeat");
    for change in
        ["account created", "token created", "token deleted", "restriction created", "restriction deleted"]
    {
        assert_eq!(logged(&lines, change).len(), 1, "{change}");
    }
    let none: Vec<&String> = lines.iter().filter(|l| l.contains("\"None\"") || l.contains("Some(")).collect();
    assert!(none.is_empty(), "an Option printed with Debug: {none:?}");
}

/// A TLS ClientHello whose SNI is an IP address, which rustls logs as a WARN each time it
/// sees one ("Illegal SNI extension: ignoring IP address presented as hostname").
fn client_hello_with_ip_sni() -> Vec<u8> {
    let be16 = |n: usize| u16::try_from(n).unwrap().to_be_bytes();
    let name = b"127.0.0.1";
    let entry = [&[0u8][..], &be16(name.len()), name].concat();
    let list = [&be16(entry.len())[..], &entry].concat();
    let sni = [&[0u8, 0][..], &be16(list.len()), &list].concat();
    let body = [
        &[3u8, 3][..],       // legacy version
        &[7u8; 32],          // random
        &[0],                // no session id
        &[0, 2, 0x13, 0x01], // TLS_AES_128_GCM_SHA256
        &[1, 0],             // null compression
        &be16(sni.len()),
        &sni,
    ]
    .concat();
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let handshake = [&[1u8, len[1], len[2], len[3]][..], &body].concat();
    [&[0x16u8, 3, 1][..], &be16(handshake.len()), &handshake].concat()
}

/// Issue 17, finding 6: a warning repeated once per connection (rustls's "Illegal SNI
/// extension", as a TLS scanner provokes) is written once, then summarised as "N similar log
/// lines suppressed"; text logs carry no colour codes when stderr is not a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_warnings_are_summarised_and_text_logs_have_no_colours() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    install_provider();
    let mut options = Options::with_env(&[("TETHER_LOG_FORMAT", "text")]);
    options.account = Some("acme".into());
    options.bin = Some(BIN.into());
    let mut m = Manager::start_with(options).await.expect("the manager starts");
    const SCANS: usize = 20;
    for _ in 0..SCANS {
        let mut tcp = tokio::net::TcpStream::connect(m.addr).await.unwrap();
        tcp.write_all(&client_hello_with_ip_sni()).await.unwrap();
        // The manager answers with an alert and closes: by then it has read the hello.
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await.expect("the manager closes");
        assert!(read.is_ok() || answer.is_empty());
    }
    m.terminate().unwrap();
    let (status, _) = m.wait_exit(WAIT).await.unwrap();
    assert!(status.success(), "{status:?}");
    let lines = m.log_lines();
    let sni: Vec<&String> =
        lines.iter().filter(|l| l.contains("Illegal SNI") && !l.contains("suppressed")).collect();
    assert_eq!(sni.len(), 1, "one line of {SCANS} identical warnings: {sni:#?}");
    let summary = format!("{} similar log lines suppressed", SCANS - 1);
    assert!(
        lines.iter().any(|l| l.contains(&summary) && l.contains("rustls")),
        "no `{summary}`:\n{}",
        m.logs()
    );
    let coloured: Vec<&String> = lines.iter().filter(|l| l.contains('\u{1b}')).collect();
    assert!(coloured.is_empty(), "ANSI escapes in logs written to a pipe: {coloured:?}");
}
