//! The PostgreSQL store through the real binary's command line: `init --database`, the offline
//! admin-token recovery, `migrate` (idempotent), and the refusals a user meets with a bad
//! setting — each names `--database / TETHER_DATABASE_URL`, exits 64, creates nothing, and never
//! prints the password.
use std::process::Output;

use anyhow::{Context, Result};
use tether_tests::harness::manager::command;
use tether_tests::harness::process::binary;

fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let mut c = command(&binary("tether-manager")?);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().context("running tether-manager")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The password in a harness URL (`postgres://role:PASSWORD@…`).
fn password(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(auth, _)| auth.split_once(':'))
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn init_offline_recovery_migrate_and_refusals_on_postgresql() -> Result<()> {
    let url = tether_tests::pg::database().await?;
    let secret = password(&url);
    assert!(secret.len() >= 8, "the harness password is distinctive");
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data = data.to_str().context("utf-8 path")?;

    // An uninitialised database is refused by `serve`, creating nothing.
    let serve =
        run(&["serve", "--data-dir", data, "--listen", "127.0.0.1:0"], &[("TETHER_DATABASE_URL", &url)])?;
    assert_eq!(serve.status.code(), Some(64), "{}", text(&serve));
    assert!(text(&serve).contains("--database / TETHER_DATABASE_URL"), "{}", text(&serve));
    assert!(text(&serve).contains("not initialised"), "{}", text(&serve));
    assert!(!std::path::Path::new(data).join("master.key").exists(), "nothing was created");

    // init on PostgreSQL: the data dir has the key and TLS files, no SQLite file.
    let init = run(&["init", "--json", "--data-dir", data, "--database", &url], &[])?;
    assert!(init.status.success(), "{}", text(&init));
    assert!(std::path::Path::new(data).join("master.key").exists());
    assert!(!std::path::Path::new(data).join("tether.db").exists(), "no SQLite file with --database");
    let again = run(&["init", "--data-dir", data, "--database", &url], &[])?;
    assert!(!again.status.success());
    assert!(text(&again).contains("already initialised"), "{}", text(&again));

    // The offline recovery writes into PostgreSQL.
    let offline = run(
        &["admin-token", "create", "rescue", "--offline", "--data-dir", data, "--json"],
        &[("TETHER_DATABASE_URL", &url)],
    )?;
    assert!(offline.status.success(), "{}", text(&offline));
    assert!(String::from_utf8_lossy(&offline.stdout).contains("tat_"), "{}", text(&offline));

    // migrate is idempotent and says the version.
    for _ in 0..2 {
        let m = run(&["migrate", "--database", &url], &[])?;
        assert!(m.status.success(), "{}", text(&m));
        assert!(text(&m).contains("schema at version"), "{}", text(&m));
    }

    // A wrong password, a closed port, a malformed URL: exit 64, the setting named, no password.
    let wrong = url.replacen(&secret, "not-the-password-Zq9", 1);
    let port = url.rsplit_once(':').and_then(|(_, p)| p.split('/').next()).unwrap_or_default().to_owned();
    let closed = url.replacen(&format!(":{port}/"), ":1/", 1);
    let not_pg = format!("mysql://tether:{secret}@127.0.0.1/x");
    for bad in [wrong.as_str(), closed.as_str(), not_pg.as_str()] {
        let out =
            run(&["serve", "--data-dir", data, "--listen", "127.0.0.1:0"], &[("TETHER_DATABASE_URL", bad)])?;
        let t = text(&out);
        assert_eq!(out.status.code(), Some(64), "{t}");
        assert!(t.contains("database"), "the setting is named: {t}");
        assert!(!t.contains(&secret) && !t.contains("not-the-password-Zq9"), "no password in: {t}");
        let m = run(&["migrate", "--database", bad], &[])?;
        let t = text(&m);
        assert!(!m.status.success(), "{t}");
        assert!(!t.contains(&secret) && !t.contains("not-the-password-Zq9"), "no password in: {t}");
    }
    Ok(())
}
