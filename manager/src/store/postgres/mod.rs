//! The PostgreSQL backend: [`PgStore`], a pool of async connections (tokio-postgres and
//! deadpool-postgres; nothing runs on the blocking pool) to one database that several
//! managers may share. Every operation is one transaction; uniqueness rests on the tables'
//! UNIQUE constraints (a unique violation is [`StoreError::Conflict`]), checks that read
//! before they write lock the rows or table they read (see each operation in `ops.rs`), and a
//! transaction PostgreSQL rolls back as a serialization failure or a deadlock runs again, a
//! bounded number of times.
//!
//! - `url`: the `--database` URL and the TLS modes supported.
//! - `tls`: rustls (ring) for connections that use TLS.
//! - `schema`: migrations under an advisory lock.
//! - `rows`: reading rows back.
//! - `error`: PostgreSQL errors as store errors, without secrets.
//! - `ops`: the [`super::StoreOps`] implementation.
//! - `cluster`: the replica set's change log, listener, leases and cluster-wide view.
use std::future::Future;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use super::{StoreError, Timing};
use error::Failure;
use tls::MakeRustls;
use url::PgUrl;

pub use cluster::Listener;

mod cluster;
mod error;
mod ops;
mod rows;
mod schema;
mod tls;
mod url;

/// Connections one manager keeps open at most.
const POOL_SIZE: usize = 16;

/// How long an operation waits for a free connection, and for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How many times a transaction runs when PostgreSQL keeps rolling it back as a serialization
/// failure or a deadlock.
const ATTEMPTS: u32 = 5;

/// A handle to a PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    timing: Option<std::sync::Arc<Timing>>,
    /// Host and database, for logs (no user, no password).
    target: String,
    /// This process's id in the replica set (new at every connect).
    replica: uuid::Uuid,
    /// For connections of their own (the change listener).
    config: std::sync::Arc<tokio_postgres::Config>,
    tls: MakeRustls,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("target", &self.target).finish_non_exhaustive()
    }
}

/// What [`PgStore::migrate_only`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version before.
    pub from: i64,
    /// The schema version now.
    pub to: i64,
}

impl PgStore {
    /// Connects to the database of `url` (see the `url` module for the forms and TLS modes),
    /// checks the server, migrates the schema (refusing one newer than this binary) and opens
    /// the pool. Errors never carry the URL or the password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let url = PgUrl::parse(url)?;
        let tls = MakeRustls::new(url.root_cert.as_deref())
            .map_err(|e| url.redact_error(StoreError::Postgres(e)))?;
        Self::migrate_with(&url, &tls).await?;
        let manager = Manager::from_config(
            url.config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Postgres(format!("connection pool: {e}")))?;
        let store = Self {
            pool,
            timing: None,
            target: target(&url.config),
            replica: uuid::Uuid::new_v4(),
            config: std::sync::Arc::new(url.config.clone()),
            tls,
        };
        // One pooled connection now, so a store that connected also serves.
        drop(store.pool.get().await.map_err(|e| url.redact_error(Failure::from(e).into_store()))?);
        Ok(store)
    }

    /// Migrates the database of `url` and returns (the `migrate` command): idempotent, and safe
    /// to run while managers are serving from it.
    pub async fn migrate_only(url: &str) -> Result<Migrated, StoreError> {
        let url = PgUrl::parse(url)?;
        let tls = MakeRustls::new(url.root_cert.as_deref())
            .map_err(|e| url.redact_error(StoreError::Postgres(e)))?;
        Self::migrate_with(&url, &tls).await
    }

    /// Whether the database of `url` holds an initialised Tether store (`initialised_at` in
    /// its meta table), read on a connection of its own without migrating or writing anything:
    /// `serve` refuses an uninitialised database before it creates any table there.
    pub async fn is_initialised(url: &str) -> Result<bool, StoreError> {
        let url = PgUrl::parse(url)?;
        let tls = MakeRustls::new(url.root_cert.as_deref())
            .map_err(|e| url.redact_error(StoreError::Postgres(e)))?;
        let redact = |f: Failure| url.redact_error(f.into_store());
        let (client, connection) = url.config.connect(tls).await.map_err(|e| redact(e.into()))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %error::describe(&e), "probe connection closed");
            }
        });
        let result = async {
            let meta: Option<String> =
                client.query_one("SELECT to_regclass('meta')::text", &[]).await?.try_get(0)?;
            if meta.is_none() {
                return Ok(false);
            }
            let row = client.query_opt("SELECT value FROM meta WHERE key = 'initialised_at'", &[]).await?;
            Ok::<_, Failure>(row.is_some())
        }
        .await;
        drop(client);
        let _ = driver.await;
        result.map_err(redact)
    }

    /// Opens a connection of its own, checks the server version and migrates.
    async fn migrate_with(url: &PgUrl, tls: &MakeRustls) -> Result<Migrated, StoreError> {
        let redact = |f: Failure| url.redact_error(f.into_store());
        let (mut client, connection) = url.config.connect(tls.clone()).await.map_err(|e| redact(e.into()))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %error::describe(&e), "migration connection closed");
            }
        });
        let result = async {
            let version: String = client.query_one("SHOW server_version_num", &[]).await?.try_get(0)?;
            let number: i32 = version.trim().parse().unwrap_or(0);
            if number < schema::MIN_SERVER_VERSION {
                return Err(Failure::Store(StoreError::Postgres(format!(
                    "the server is PostgreSQL {number}; Tether needs {} or newer",
                    schema::MIN_SERVER_VERSION / 10_000
                ))));
            }
            let (from, to) = schema::migrate(&mut client, crate::clock::now_unix()).await?;
            if from != to {
                tracing::info!(from, to, target = %target(&url.config), "PostgreSQL schema migrated");
            }
            Ok(Migrated { from, to })
        }
        .await;
        drop(client);
        let _ = driver.await;
        result.map_err(redact)
    }

    /// This store, recording the latency of every operation in `timing`: the wait for a pooled
    /// connection and the transaction's run.
    pub fn with_timing(&self, timing: Timing) -> Self {
        Self { timing: Some(std::sync::Arc::new(timing)), ..self.clone() }
    }

    /// This process's id in the replica set: the origin of the changes it logs.
    pub fn replica_id(&self) -> uuid::Uuid {
        self.replica
    }

    /// A pooled connection (the wait is recorded).
    async fn client(&self) -> Result<deadpool_postgres::Object, Failure> {
        let started = Instant::now();
        let client = self.pool.get().await?;
        if let Some(t) = &self.timing {
            t.wait.observe(started.elapsed().as_secs_f64());
        }
        Ok(client)
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been rolled back as a
    /// serialization failure or deadlock [`ATTEMPTS`] times. `attempt` runs one whole
    /// transaction (it opens, commits or drops it), so running it again is safe.
    async fn run<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let started = Instant::now();
        let mut tries = 0;
        let result = loop {
            tries += 1;
            match attempt().await {
                Err(f) if f.retryable() && tries < ATTEMPTS => {
                    tracing::debug!(
                        operation = what,
                        tries,
                        "transaction rolled back by PostgreSQL; running it again"
                    );
                }
                other => break other,
            }
        };
        if let Some(t) = &self.timing {
            t.run.observe(started.elapsed().as_secs_f64());
        }
        result.map_err(Failure::into_store)
    }
}

/// `host:port/dbname` of the first host, for logs.
fn target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => String::from("?"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}
