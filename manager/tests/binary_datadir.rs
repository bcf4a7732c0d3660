//! The real binary and its data dir without the API: admin access recovered offline, and
//! `serve` refusing a data dir that `init` has not prepared.
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

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
