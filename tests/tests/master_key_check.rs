//! A manager started with a master key other than the one its store was initialised with
//! refuses to serve (exit 64, a message saying which key to use) instead of failing every
//! handshake — on the SQLite file (a swapped `master.key`) and on PostgreSQL (a second data dir
//! pointed at the same database). The right key still serves.
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use anyhow::{Context, Result};
use tether_tests::harness::manager::{command, Options};
use tether_tests::harness::process::binary;
use tether_tests::harness::Manager;

/// Runs `serve`, which must refuse and exit; one that serves instead is killed after 30 s.
async fn serve(data: &std::path::Path, database: Option<&str>) -> Result<Output> {
    let mut c = command(&binary("tether-manager")?);
    c.args(["serve", "--data-dir"]).arg(data).args(["--listen", "127.0.0.1:0"]);
    if let Some(db) = database {
        c.env("TETHER_DATABASE_URL", db);
    }
    let mut c = tokio::process::Command::from(c);
    c.kill_on_drop(true);
    tokio::time::timeout(std::time::Duration::from_secs(30), c.output())
        .await
        .context("serve did not refuse within 30 s")?
        .context("running serve")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn write_key(path: &std::path::Path, byte: u8) -> Result<()> {
    std::fs::write(path, [byte; 32])?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[tokio::test]
async fn a_swapped_master_key_is_refused_on_sqlite() -> Result<()> {
    let mut manager = Manager::start(&[]).await?;
    manager.stop().await?;
    let key = manager.data_dir().join("master.key");
    let original = std::fs::read(&key)?;
    write_key(&key, 7)?;
    let out = serve(&manager.data_dir(), None).await?;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("not the key this store was initialised with"), "{}", text(&out));
    std::fs::write(&key, original)?;
    manager.serve().await?;
    Ok(())
}

#[tokio::test]
async fn a_second_data_dir_with_another_key_is_refused_on_postgresql() -> Result<()> {
    let url = tether_tests::pg::database().await?;
    let options = Options { database: Some(url.clone()), ..Options::default() };
    let manager = Manager::start_with(options).await?;
    // Another data dir (its own, new master key) on the same database.
    let other = tempfile::tempdir()?;
    let other_data = other.path().join("data");
    std::fs::create_dir(&other_data)?;
    std::fs::set_permissions(&other_data, std::fs::Permissions::from_mode(0o700))?;
    write_key(&other_data.join("master.key"), 9)?;
    let out = serve(&other_data, Some(&url)).await?;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("not the key this store was initialised with"), "{}", text(&out));
    drop(manager);
    Ok(())
}
