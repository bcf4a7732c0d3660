//! `tether-manager store copy` moves an SQLite installation onto PostgreSQL (issue 12, item 5):
//! the real manager on SQLite with tokens, an admin token and a live real delegate is stopped,
//! copied into an empty PostgreSQL database, and served from it with the same data dir; the
//! same delegate authenticates again with its unchanged token, revoked tokens stay revoked, the
//! audit log came along. A non-empty target and a running rotation are refused, changing
//! nothing.
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tether_tests::harness::delegate::{env_for, Delegate};
use tether_tests::harness::manager::command;
use tether_tests::harness::{poll, Manager};

const LIMIT: Duration = Duration::from_secs(30);

fn store_copy(manager: &Manager, to: &str) -> Result<Output> {
    let mut copy = command(manager.bin());
    copy.args(["store", "copy", "--from"]).arg(manager.data_dir()).args(["--to", to]);
    copy.output().context("running tether-manager store copy")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_installation_is_served_from_postgresql_after_a_copy() -> Result<()> {
    let mut manager = Manager::start(&[("TETHER_HEARTBEAT_SECS", "2")]).await?;
    let account = manager.init.account_id.clone();
    let fleet = manager.create_token(&account, "fleet", json!({ "allowed_cidrs": ["127.0.0.0/8"] })).await?;
    let gone = manager.create_token(&account, "gone", json!({})).await?;
    let tokens = format!("/api/v1/accounts/{account}/tokens");
    let (status, _) = manager.api(Method::POST, &format!("{tokens}/gone/revoke"), Some(json!({}))).await?;
    assert_eq!(status, StatusCode::OK);
    let state = tempfile::tempdir()?;
    let delegate = Delegate::start(&env_for(&manager, "mover", &fleet.expose(), state.path()), &[])?;
    manager.wait_for_session("mover", fleet.id(), LIMIT).await.with_context(|| delegate.log())?;
    let (_, audit_before) = manager.api(Method::GET, "/api/v1/audit?limit=1000", None).await?;

    // A running rotation is refused: its sealed successor stays where it is. A delegate in
    // manual mode acknowledges and stays on the old token, so the rotation runs until its
    // grace window ends.
    let target = tether_tests::pg::database().await?;
    let rotating = manager.create_token(&account, "rotating", json!({})).await?;
    let stayer_state = tempfile::tempdir()?;
    let mut stayer =
        Delegate::start(&env_for(&manager, "stayer", &rotating.expose(), stayer_state.path()), &[])?;
    manager.wait_for_session("stayer", rotating.id(), LIMIT).await.with_context(|| stayer.log())?;
    let rotation = manager.rotate(rotating.id(), 4).await?;
    let refused = store_copy(&manager, &target)?;
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("rotation is running"), "{}", text(&refused));
    poll::until("the rotation's grace window to end", LIMIT, || async {
        let doc = manager.rotation(rotation.rotation_id).await?;
        Ok((doc["state"] == "grace_expired").then_some(()))
    })
    .await?;
    let (code, _) = stayer.wait_exit(LIMIT).await?;
    assert_eq!(code.code(), Some(78), "the stayer is cut off with the old token: {}", stayer.log());
    manager.stop().await?;

    let copied = store_copy(&manager, &target)?;
    assert!(copied.status.success(), "{}", text(&copied));
    let out = text(&copied);
    for table in ["accounts", "tokens", "admin_tokens", "audit"] {
        assert!(out.lines().any(|l| l.starts_with(table)), "counts of {table}: {out}");
    }
    assert!(!out.contains(&target), "the URL (with its password) is not printed: {out}");
    // A second copy into the same (now full) database changes nothing.
    let again = store_copy(&manager, &target)?;
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));

    // Served from PostgreSQL, with the same data dir; the SQLite file is moved away, so
    // nothing can be read from it.
    std::fs::rename(manager.db_path(), manager.db_path().with_extension("db.moved"))?;
    manager.set_database(Some(target.clone()));
    manager.serve().await?;
    manager.wait_for_session("mover", fleet.id(), LIMIT).await.with_context(|| delegate.log())?;
    assert!(manager.logs().contains("connected to the PostgreSQL store"), "{}", manager.logs());
    let (_, list) = manager.api(Method::GET, &tokens, None).await?;
    let state_of = |name: &str| {
        list.as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name))
            .map(|t| t["state"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(state_of("fleet").as_deref(), Some("active"));
    assert_eq!(state_of("gone").as_deref(), Some("revoked"));
    let (_, fleet_row) = manager.api(Method::GET, &format!("{tokens}/fleet"), None).await?;
    assert_eq!(fleet_row["allowed_cidrs"], json!(["127.0.0.0/8"]));
    // The revoked token is still refused.
    let gone_state = tempfile::tempdir()?;
    let mut refused = Delegate::start(&env_for(&manager, "gone", &gone.expose(), gone_state.path()), &[])?;
    let (code, _) = refused.wait_exit(LIMIT).await?;
    assert_eq!(code.code(), Some(78), "a revoked token stays revoked: {}", refused.log());
    // The audit log came along, ids and all; new entries follow it.
    let (_, audit_after) = manager.api(Method::GET, "/api/v1/audit?limit=1000", None).await?;
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array().map(|es| es.iter().filter_map(|e| e["id"].as_i64()).collect()).unwrap_or_default()
    };
    let (before, after) = (ids(&audit_before), ids(&audit_after));
    assert!(before.iter().all(|id| after.contains(id)), "every earlier audit entry is there");
    let (status, _) = manager.api(Method::POST, &format!("{tokens}/fleet/revoke"), Some(json!({}))).await?;
    assert_eq!(status, StatusCode::OK);
    let (_, newest) = manager.api(Method::GET, "/api/v1/audit?limit=1", None).await?;
    assert!(ids(&newest)[0] > *after.iter().max().unwrap_or(&0), "new audit ids follow the copied ones");
    Ok(())
}
