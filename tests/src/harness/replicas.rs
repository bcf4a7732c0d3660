//! Helpers of the replica-set tests (`replica_set.rs`, `review_replica_set.rs`): managers on
//! one PostgreSQL with a chosen fail-closed window, a replica that reaches the database by
//! another URL (through a [`super::proxy::Proxy`]), in-process sessions held on one replica,
//! and a few readings (readiness, sessions held, the log without access lines, SQL).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::StatusCode;
use tether_protocol::Token;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::manager::{Manager, Options};
use crate::load::session::{self, Ended, HoldOptions, Identity};

/// How long a session may take to open.
const OPEN_WITHIN: Duration = Duration::from_secs(30);

/// Options of a replica on `database`, heartbeats every 2 s, failing closed after
/// `fail_closed` seconds.
pub fn options(database: &str, fail_closed: u64) -> Options {
    let fail = fail_closed.to_string();
    Options {
        database: Some(database.to_owned()),
        ..Options::with_env(&[("TETHER_HEARTBEAT_SECS", "2"), ("TETHER_FAIL_CLOSED_SECS", fail.as_str())])
    }
}

/// Another replica of `first`'s store, reaching the database at `database`.
pub async fn replica_via(first: &Manager, database: &str) -> Result<Manager> {
    let mut options = first.options().clone();
    options.database = Some(database.to_owned());
    first.replica_with(options).await
}

/// A session identity named `name` on `token` in `manager`'s first account.
pub fn identity(manager: &Manager, token: &Token, name: &str) -> Identity {
    Identity {
        account_id: manager.init.account_id.clone(),
        token: Arc::new(token.duplicate()),
        name: name.into(),
    }
}

/// `count` in-process sessions of `token` on `manager`, named `<prefix>-<i>`, held until they
/// end (or `stop`).
pub async fn hold_sessions(
    manager: &Manager,
    token: &Token,
    prefix: &str,
    count: usize,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<Ended>>> {
    let target = manager.target()?;
    let mut held = Vec::new();
    for i in 0..count {
        let who = identity(manager, token, &format!("{prefix}-{i}"));
        let opened = session::open_as(&target, None, &who, Uuid::new_v4(), OPEN_WITHIN).await?;
        let opts = HoldOptions {
            follow_rotation: false,
            target: None,
            source: None,
            max_time: Duration::from_secs(180),
        };
        held.push(tokio::spawn(session::hold(opened, who, opts, stop.clone())));
    }
    Ok(held)
}

/// The server address of a loopback PostgreSQL URL (`…@127.0.0.1:port/db…`).
pub fn upstream(url: &str) -> Result<SocketAddr> {
    let at = url.rfind('@').context("URL without credentials")?;
    let rest = url.get(at + 1..).context("URL ends at its `@`")?;
    let end = rest.find('/').context("URL without a database")?;
    rest.get(..end).context("URL host")?.parse().context("URL host is not an address")
}

/// `/readyz`'s status.
pub async fn readyz(manager: &Manager) -> Result<StatusCode> {
    Ok(manager.http().get(format!("{}/readyz", manager.url())).send().await?.status())
}

/// The sessions `manager` itself holds (its `tether_sessions` gauge).
pub async fn held(manager: &Manager) -> Result<u64> {
    let body = manager.http().get(format!("{}/metrics", manager.url())).send().await?.text().await?;
    let value =
        body.lines().find_map(|l| l.strip_prefix("tether_sessions ")).context("no tether_sessions")?;
    Ok(value.trim().parse::<f64>()? as u64)
}

/// A manager's log without the access lines.
pub fn notable(m: &Manager) -> String {
    m.log_lines().into_iter().filter(|l| !l.contains("tether_manager::access")).collect::<Vec<_>>().join("\n")
}

/// A connection of the test's own to the database (what an operator's `psql` is).
pub async fn sql(db: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}
