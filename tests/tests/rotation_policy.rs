//! Automatic rotation (issue 12, item 4): a token with a rotation policy is rotated by the real
//! manager itself when due, its live delegates (the real binary) move onto the successor, the
//! old token is revoked, the audit log names `system`, and the successor inherits the policy.
//! The manager allows a `rotate_every` of seconds only through the documented test setting
//! `TETHER_MIN_ROTATE_EVERY_SECS`; without it, a short policy is refused.
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tether_tests::harness::delegate::{env_for, Delegate};
use tether_tests::harness::{poll, Manager};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(40);
const EVERY: u64 = 8;
const GRACE: u64 = 6;

async fn token(manager: &Manager, id: &str) -> Result<Value> {
    let path = format!("/api/v1/accounts/{}/tokens/{id}", manager.init.account_id);
    let (status, body) = manager.api(Method::GET, &path, None).await?;
    anyhow::ensure!(status.is_success(), "GET {path}: {status}: {body}");
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_token_is_rotated_by_the_manager_and_its_delegates_move() -> Result<()> {
    let manager = Manager::start(&[
        ("TETHER_MIN_ROTATE_EVERY_SECS", "1"),
        ("TETHER_ROTATION_POLICY_CHECK_SECS", "1"),
        ("TETHER_HEARTBEAT_SECS", "2"),
    ])
    .await?;
    let account = manager.init.account_id.clone();
    let policy = json!({ "rotation_policy": { "every_secs": EVERY, "grace_secs": GRACE } });
    let old = manager.create_token(&account, "auto", policy).await?;
    let shown = token(&manager, &old.id().to_string()).await?;
    assert_eq!(shown["rotation_policy"], json!({ "every_secs": EVERY, "grace_secs": GRACE }));
    let created = shown["created_at"].as_u64().context("created_at")?;
    assert_eq!(shown["next_rotation_at"].as_u64(), Some(created + EVERY));

    // Two real delegates on the token, in file mode: they apply the successor themselves.
    let mut delegates = Vec::new();
    let mut files = Vec::new();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    for (i, dir) in dirs.iter().enumerate() {
        let name = format!("auto-{i}");
        let file = dir.path().join("token");
        let mut env = env_for(&manager, &name, &old.expose(), dir.path());
        env.retain(|(k, _)| k != "TETHER_APPLY_MODE");
        env.push(("TETHER_APPLY_MODE".into(), "file".into()));
        env.push(("ACCOUNT_SECRET_FILE".into(), file.display().to_string()));
        delegates.push(Delegate::start(&env, &[])?);
        files.push(file);
    }
    for i in 0..2 {
        manager.wait_for_session(&format!("auto-{i}"), old.id(), LIMIT).await?;
    }

    // No API call: the manager starts the rotation itself once the token is due.
    let rotation = poll::until("the manager to rotate the due token", LIMIT, || async {
        let (_, list) = manager.api(Method::GET, "/api/v1/rotations", None).await?;
        Ok(list
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["old_token_id"] == old.id().to_string()).cloned()))
    })
    .await
    .with_context(|| manager.logs())?;
    assert_eq!(rotation["started_by"], "system", "{rotation}");
    let rotation_id: Uuid = rotation["id"].as_str().context("rotation id")?.parse()?;
    let successor: Uuid = rotation["new_token_id"].as_str().context("new token id")?.parse()?;

    let doc = poll::until("the policy rotation to complete", LIMIT, || async {
        let doc = manager.rotation(rotation_id).await?;
        Ok((doc["state"] == "completed").then_some(doc))
    })
    .await
    .with_context(|| format!("{}\n{}\n{}", manager.logs(), delegates[0].log(), delegates[1].log()))?;
    let applied =
        doc["delegates"].as_array().map_or(0, |ds| ds.iter().filter(|d| d["outcome"] == "applied").count());
    assert_eq!(applied, 2, "both delegates applied the successor: {doc}");
    for i in 0..2 {
        manager.wait_for_session(&format!("auto-{i}"), successor, LIMIT).await?;
    }
    for (file, d) in files.iter().zip(&delegates) {
        let held = std::fs::read_to_string(file).unwrap_or_default();
        assert!(held.trim().starts_with("tdt_") && held.trim() != old.expose().as_str(), "{}", d.log());
    }
    assert_eq!(token(&manager, &old.id().to_string()).await?["state"], "revoked");

    // The successor carries the same policy, due `every` after its own creation.
    let next = token(&manager, &successor.to_string()).await?;
    assert_eq!(next["name"], "auto");
    assert_eq!(next["rotation_policy"], json!({ "every_secs": EVERY, "grace_secs": GRACE }));
    let next_created = next["created_at"].as_u64().context("created_at")?;
    assert_eq!(next["next_rotation_at"].as_u64(), Some(next_created + EVERY));

    // The audit log names `system` for the rotation.
    let (_, audit) = manager.api(Method::GET, "/api/v1/audit?limit=200", None).await?;
    let by_system = audit.as_array().is_some_and(|es| {
        es.iter().any(|e| {
            e["action"] == "token.rotate"
                && e["actor"] == "system"
                && e["target"].as_str().is_some_and(|t| t.ends_with(&old.id().to_string()))
        })
    });
    assert!(by_system, "no token.rotate by system in the audit log: {audit}");
    Ok(())
}

#[tokio::test]
async fn policies_are_validated_changed_and_cleared() -> Result<()> {
    // The default minimum is one hour.
    let manager = Manager::start(&[]).await?;
    let account = manager.init.account_id.clone();
    let tokens = format!("/api/v1/accounts/{account}/tokens");
    let short = json!({ "name": "short", "rotation_policy": { "every_secs": 60 } });
    let (status, body) = manager.api(Method::POST, &tokens, Some(short)).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("every_secs"), "{body}");
    let grace_too_long =
        json!({ "name": "g", "rotation_policy": { "every_secs": 7200, "grace_secs": 7200 } });
    let (status, body) = manager.api(Method::POST, &tokens, Some(grace_too_long)).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let audit_before = manager.api(Method::GET, "/api/v1/audit?limit=1000", None).await?.1;

    // A policy set afterwards; its default grace is at most half the period.
    let plain = manager.create_token(&account, "plain", json!({})).await?;
    let path = format!("{tokens}/plain");
    let (status, body) =
        manager.api(Method::PATCH, &path, Some(json!({ "rotation_policy": { "every_secs": 7200 } }))).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rotation_policy"], json!({ "every_secs": 7200, "grace_secs": 3600 }));
    let created = body["created_at"].as_u64().context("created_at")?;
    assert_eq!(body["next_rotation_at"].as_u64(), Some(created + 7200));
    // The key must be present; `null` clears.
    let (status, _) = manager.api(Method::PATCH, &path, Some(json!({}))).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = manager.api(Method::PATCH, &path, Some(json!({ "rotation_policy": null }))).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rotation_policy"], Value::Null);
    assert_eq!(body["next_rotation_at"], Value::Null);
    // A revoked token's policy cannot change.
    manager.api(Method::POST, &format!("{path}/revoke"), Some(json!({}))).await?;
    let (status, body) =
        manager.api(Method::PATCH, &path, Some(json!({ "rotation_policy": { "every_secs": 7200 } }))).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let audit = manager.api(Method::GET, "/api/v1/audit?limit=1000", None).await?.1;
    let updates =
        audit.as_array().map_or(0, |es| es.iter().filter(|e| e["action"] == "token.update").count());
    assert_eq!(updates, 2, "one audit entry per change: {audit}");
    assert_eq!(
        audit.as_array().map(Vec::len).unwrap_or(0),
        audit_before.as_array().map(Vec::len).unwrap_or(0) + 4,
        "create, two updates, revoke; the refused requests changed nothing"
    );
    drop(plain);
    Ok(())
}
