//! REVIEW FINDINGS, end to end with the real manager binary (outside security review of the
//! PostgreSQL store / rotation policies). Every test here FAILS on the code under review (main
//! at cb40110) and demonstrates a finding; see the review report.
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::json;
use tether_tests::harness::Manager;

/// FINDING: a token's `expires_in_secs` is defeated by its rotation policy. The policy loop
/// rotates the token before it expires and the successor gets the same *relative* lifetime
/// (rotation/rules.rs successor_spec), so the token name (and the delegates on it) stays
/// valid forever, extended every `every_secs` by `system` with no human action. The operator
/// asked for a token that stops working at `expires_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_rotation_policy_does_not_extend_a_tokens_expiry() -> Result<()> {
    let manager = Manager::start(&[
        ("TETHER_MIN_ROTATE_EVERY_SECS", "1"),
        ("TETHER_ROTATION_POLICY_CHECK_SECS", "1"),
    ])
    .await?;
    let account = manager.init.account_id.clone();
    let body = json!({ "expires_in_secs": 6, "rotation_policy": { "every_secs": 3, "grace_secs": 1 } });
    let created = manager.create_token(&account, "bounded", body).await?;
    let path = format!("/api/v1/accounts/{account}/tokens/{}", created.id());
    let (_, first) = manager.api(Method::GET, &path, None).await?;
    let deadline = first["expires_at"].as_u64().context("expires_at")?;
    // Well past the expiry the operator set.
    tokio::time::sleep(Duration::from_secs(14)).await;
    let (_, list) = manager.api(Method::GET, &format!("/api/v1/accounts/{account}/tokens"), None).await?;
    let live: Vec<_> = list
        .as_array()
        .context("list")?
        .iter()
        .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with("bounded")) && t["state"] == "active")
        .cloned()
        .collect();
    assert!(
        live.iter().all(|t| t["expires_at"].as_u64().is_some_and(|e| e <= deadline)),
        "a token of the `bounded` lineage outlives the expiry {deadline} the operator set: {live:#?}\n{}",
        manager.logs()
    );
    Ok(())
}

/// FINDING: `serve` on a PostgreSQL database that is not initialised refuses (exit 64) saying
/// "nothing was created", but it has already run the migrations: the database now holds
/// Tether's nine tables (server.rs connects, i.e. migrates, before checking `initialised_at`).
/// A typo'd database name in a shared cluster gets Tether's schema written into it.
#[tokio::test]
async fn review_serve_on_an_uninitialised_postgres_creates_nothing() -> Result<()> {
    let url = tether_tests::pg::database().await?;
    let db = url.rsplit_once('/').map(|(_, d)| d.split('?').next().unwrap_or(d).to_owned()).context("db")?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let out = tether_tests::harness::manager::command(&tether_tests::harness::process::binary("tether-manager")?)
        .args(["serve", "--data-dir", data.to_str().context("utf-8")?, "--listen", "127.0.0.1:0"])
        .env("TETHER_DATABASE_URL", &url)
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(64), "{text}");
    let client = tether_tests::pg::shared()?.client(&db).await?;
    let n: i64 = client
        .query_one("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await?
        .get(0);
    assert_eq!(n, 0, "serve refused (`{}`) yet created {n} tables", text.lines().last().unwrap_or(""));
    Ok(())
}
