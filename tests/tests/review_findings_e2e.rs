//! REVIEW FINDINGS, end to end with the real manager binary (outside security review of the
//! PostgreSQL store / rotation policies). Every test here FAILS on the code under review (main
//! at cb40110) and demonstrates a finding; see the review report.
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::json;
use tether_tests::harness::Manager;

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
    let out =
        tether_tests::harness::manager::command(&tether_tests::harness::process::binary("tether-manager")?)
            .args(["serve", "--data-dir", data.to_str().context("utf-8")?, "--listen", "127.0.0.1:0"])
            .env("TETHER_DATABASE_URL", &url)
            .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(64), "{text}");
    let client = tether_tests::pg::shared()?.client(&db).await?;
    let n: i64 =
        client.query_one("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'", &[]).await?.get(0);
    assert_eq!(n, 0, "serve refused (`{}`) yet created {n} tables", text.lines().last().unwrap_or(""));
    Ok(())
}

async fn pg_manager() -> Result<Manager> {
    let mut options = tether_tests::harness::manager::Options::with_env(&[]);
    options.database = Some(tether_tests::pg::database().await?);
    Manager::start_with(options).await
}

/// FINDING: on PostgreSQL a NUL byte (`%00`) in a token or account path segment is a server
/// error (PostgreSQL refuses 0x00 in TEXT: `ERROR 22021`): 500 "internal error" and an ERROR
/// log line per request, where the SQLite backend answers 404. Any caller with tokens:read on
/// its own account can fill the error log / alerting this way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_nul_in_a_path_is_404_not_500_on_postgres() -> Result<()> {
    let m = pg_manager().await?;
    let account = m.init.account_id.clone();
    let mut bad = Vec::new();
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/accounts/{account}/tokens/a%00b"), None),
        (Method::POST, format!("/api/v1/accounts/{account}/tokens/a%00b/revoke"), None),
        (
            Method::PATCH,
            format!("/api/v1/accounts/{account}/tokens/a%00b"),
            Some(json!({ "rotation_policy": null })),
        ),
        (Method::GET, format!("/api/v1/accounts/{account}%00/tokens"), None),
    ] {
        let (status, answer) = m.api(method.clone(), &path, body).await?;
        if status.is_server_error() {
            bad.push(format!("{method} {path}: {status} {answer}"));
        }
    }
    assert!(bad.is_empty(), "server errors for a NUL in the path:\n{}", bad.join("\n"));
    Ok(())
}

/// FINDING (low): `rotation_policy` given as a JSON array (`[3600]`, serde's sequence form of
/// a struct) is accepted by PATCH as `{"every_secs": 3600}`, although RotationPolicyDto is
/// `deny_unknown_fields` and documented as an object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_rotation_policy_as_an_array_is_refused() -> Result<()> {
    let m = Manager::start(&[]).await?;
    let account = m.init.account_id.clone();
    let path = format!("/api/v1/accounts/{account}/tokens/default");
    let (status, answer) = m.api(Method::PATCH, &path, Some(json!({ "rotation_policy": [86_400] }))).await?;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{answer}");
    Ok(())
}

/// FINDING (low): PATCH of a token that is being rotated (by its id: the old token, renamed
/// `name~xxxx`, revoked at the end of the grace window) answers 200 and changes nothing that
/// lasts: the successor already copied the old policy and keeps rotating. An operator who runs
/// `token update <id> --no-rotation` during a grace window is told it worked. Expected: 409
/// (the token is rotating; update its successor), as rotate refuses a rotating token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_patch_of_a_rotating_token_is_refused() -> Result<()> {
    let m = Manager::start(&[("TETHER_MIN_ROTATE_EVERY_SECS", "1")]).await?;
    let account = m.init.account_id.clone();
    let body = json!({ "rotation_policy": { "every_secs": 86_400, "grace_secs": 600 } });
    let old = m.create_token(&account, "lineage", body).await?;
    // A live delegate (manual apply mode) keeps the rotation running for its grace window.
    let state = tempfile::tempdir()?;
    let env = tether_tests::harness::delegate::env_for(&m, "lineage-0", &old.expose(), state.path());
    let _delegate = tether_tests::harness::delegate::Delegate::start(&env, &[])?;
    m.wait_for_session("lineage-0", old.id(), Duration::from_secs(30)).await?;
    let rotate = format!("/api/v1/accounts/{account}/tokens/lineage/rotate");
    let (status, started) = m.api(Method::POST, &rotate, Some(json!({ "grace_secs": 600 }))).await?;
    assert!(status.is_success(), "{started}");
    let path = format!("/api/v1/accounts/{account}/tokens/{}", old.id());
    let (status, answer) = m.api(Method::PATCH, &path, Some(json!({ "rotation_policy": null }))).await?;
    let (_, successor) =
        m.api(Method::GET, &format!("/api/v1/accounts/{account}/tokens/lineage"), None).await?;
    assert_eq!(
        status,
        reqwest::StatusCode::CONFLICT,
        "PATCH of the rotating token: {answer}\nits successor keeps the policy: {}",
        successor["rotation_policy"]
    );
    Ok(())
}

/// FINDING (low): `store copy --from` a data dir whose tether.db is a 0-byte file refuses
/// ("nothing was changed") but has turned the source into an empty Tether SQLite database:
/// `DataDir::initialised_at` ("without creating anything") opens it with SqliteStore::open,
/// which migrates. Likewise an older-schema source is migrated in place by the copy.
#[tokio::test]
async fn review_store_copy_does_not_write_its_source() -> Result<()> {
    let url = tether_tests::pg::database().await?;
    let dir = tempfile::tempdir()?;
    let bin = tether_tests::harness::process::binary("tether-manager")?;
    let data = dir.path().join("data");
    let init = tether_tests::harness::manager::command(&bin)
        .args(["init", "--json", "--data-dir"])
        .arg(&data)
        .output()?;
    assert!(init.status.success());
    let db = data.join("tether.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("tether.db{suffix}")));
    }
    std::fs::write(&db, b"")?;
    let out = tether_tests::harness::manager::command(&bin)
        .args(["store", "copy", "--from"])
        .arg(&data)
        .args(["--to", &url])
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert_eq!(std::fs::metadata(&db)?.len(), 0, "the refused source was written: {text}");
    Ok(())
}

/// FINDING: two managers on one PostgreSQL (the set-up the rotation-policy loop claims to
/// support: "Several managers on one store may run it at once"). A rotation started on A of a
/// token whose live delegate is on B "completes" at once (A sees no delegate of it), revoking
/// the old token immediately: the grace window is skipped, the delegate on B is never sent the
/// successor and, on its next handshake, is refused (`revoked`) and exits 78. With the policy
/// loop on every replica this happens by itself, audited as `system`. (Cross-replica fan-out is
/// out of scope of this change; this is its consequence for rotations, which the policy loop
/// makes automatic.) Here the rotation is started through A's API, as the loop would. Fixed by
/// the replica set (issue 13): B learns of the rotation from the change log and sends the
/// successor, and the driver counts B's sessions (the cluster view) before it completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_rotation_on_one_replica_does_not_strand_delegates_on_another() -> Result<()> {
    let url = tether_tests::pg::database().await?;
    let mut options = tether_tests::harness::manager::Options::with_env(&[]);
    options.database = Some(url.clone());
    let a = Manager::start_with(options).await?;
    // Replica B: a copy of A's data dir (same master key and CA), the same database.
    let copy = tempfile::tempdir()?;
    let b_dir = copy.path().join("data");
    let status = std::process::Command::new("cp").arg("-a").arg(a.data_dir()).arg(&b_dir).status()?;
    assert!(status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut serve = tether_tests::harness::manager::command(a.bin());
    serve
        .args(["serve", "--data-dir"])
        .arg(&b_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("TETHER_DATABASE_URL", &url);
    let b = tether_tests::harness::process::Proc::spawn("manager-b", serve)?;
    tether_tests::harness::poll::until("replica B to listen", Duration::from_secs(30), || async {
        Ok(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ()))
    })
    .await
    .with_context(|| b.log())?;

    let account = a.init.account_id.clone();
    let token = a.create_token(&account, "spread", json!({})).await?;
    let state = tempfile::tempdir()?;
    let mut env = tether_tests::harness::delegate::env_for(&a, "on-b", &token.expose(), state.path());
    for (k, v) in env.iter_mut() {
        if k == "MANAGER_HOST_AND_PORT" {
            *v = format!("localhost:{port}");
        }
    }
    let delegate = tether_tests::harness::delegate::Delegate::start(&env, &[])?;
    tether_tests::harness::poll::until("the delegate's session on B", Duration::from_secs(30), || async {
        Ok(delegate.log().contains("session authenticated").then_some(()))
    })
    .await
    .with_context(|| delegate.log())?;

    let rotate = format!("/api/v1/accounts/{account}/tokens/spread/rotate");
    let (status, started) = a.api(Method::POST, &rotate, Some(json!({ "grace_secs": 60 }))).await?;
    assert!(status.is_success(), "{started}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, old) =
        a.api(Method::GET, &format!("/api/v1/accounts/{account}/tokens/{}", token.id()), None).await?;
    assert_ne!(
        old["state"],
        "revoked",
        "3 s into a 60 s grace window the old token is revoked while its delegate on replica B was \
         never sent the successor: {old}\n{}",
        delegate.log()
    );
    Ok(())
}

/// FINDING: a TOML syntax error on the `database = …` line of the config file prints that line,
/// password and all (the toml crate's error quotes the source line; config.rs passes its text
/// through): `cannot read config file …: TOML parse error … | database = "postgres://u:PASSWORD@…`.
/// It goes to stderr, i.e. journald / container logs / CI output.
#[tokio::test]
async fn review_a_toml_error_on_the_database_line_hides_the_password() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = "Toml-Secret-Quokka-7731";
    let bin = tether_tests::harness::process::binary("tether-manager")?;
    for line in [
        format!("database = \"postgres://tether:{secret}@127.0.0.1:1/tether\n"),
        format!("database = postgres://tether:{secret}@127.0.0.1:1/tether\n"),
        format!("database = \"postgres://tether:{secret}@127.0.0.1:1/tether\"\ndatabase = \"x\"\n"),
    ] {
        let config = dir.path().join("tether.toml");
        std::fs::write(&config, &line)?;
        let out = tether_tests::harness::manager::command(&bin)
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success());
        assert!(!text.contains(secret) && !text.contains("Quokka"), "the password leaked:\n{text}");
    }
    Ok(())
}
