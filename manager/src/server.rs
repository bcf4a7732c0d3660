//! `serve`: open the data dir, build TLS, serve the router on one TLS port, report readiness,
//! and on shutdown say `goodbye` to every delegate, drain, and stop within a bounded time.
//!
//! Every accepted connection first passes the caps on unauthenticated connections (and gets
//! their idle timeout, `gateway::connections`), then a bounded TLS handshake, then HTTP/1 with
//! a header-read timeout (hyper's, which needs a timer to be on at all).
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum_server::tls_rustls::RustlsConfig;

use crate::config::ServeConfig;
use crate::datadir::{DataDir, DataDirError};
use crate::state::AppState;
use crate::store::{Store, StoreOps};
use crate::tls::{self, TlsError, TlsFiles};

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data dir.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listener or the HTTP server.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// The store, at start.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The data dir is not initialised and `init` was not asked for: nothing was created.
    #[error("data dir {path} is not initialised (no Tether database there); nothing was created. Run `tether-manager init --data-dir {path}` first (it prints the first admin token), check --data-dir / TETHER_DATA_DIR for a typo, or pass --init (TETHER_INIT=1) to initialise it at start without any token (see OPERATIONS.md)")]
    NotInitialised {
        /// The data dir as given.
        path: String,
    },
    /// With the PostgreSQL store: the database is not initialised, or the data dir has no
    /// master key. Nothing was created.
    #[error("{}", if *.marked {
        format!("data dir {path} has no master key, but the PostgreSQL store (--database / TETHER_DATABASE_URL) is initialised: copy the master key and TLS files from the data dir of the manager that initialised it (see OPERATIONS.md); nothing was created")
    } else {
        format!("the PostgreSQL store (--database / TETHER_DATABASE_URL) is not initialised; nothing was created. Run `tether-manager init --data-dir {path} --database URL` first (it prints the first admin token), or `tether-manager store copy` to move an SQLite installation onto it")
    })]
    NotInitialisedDatabase {
        /// The data dir as given.
        path: String,
        /// Whether the database is initialised (then the data dir lacks the master key).
        marked: bool,
    },
    /// The PostgreSQL store cannot be used (bad URL, unreachable, refused credentials, a
    /// schema newer than this binary). The message never holds the password.
    #[error("cannot use the PostgreSQL store (--database / TETHER_DATABASE_URL): {0}")]
    Database(crate::store::StoreError),
    /// The data dir's master key is not the one the store's tokens are sealed under.
    #[error("the master key in data dir {path} is not the key this store was initialised with: every token would fail to open. Serve with the data dir (master.key) of the manager that initialised the store (copy it, mode 0600; see OPERATIONS.md); nothing was changed")]
    WrongMasterKey {
        /// The data dir.
        path: String,
    },
    /// `--init` failed.
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
}

/// Serves on `listener` until `shutdown` completes, then drains (bounded by `drain_secs`).
/// `on_ready` runs once the manager accepts connections (sd-notify in the binary).
pub async fn run(
    config: ServeConfig,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(),
) -> Result<(), ServeError> {
    // Startup file work (database open and migrations, key file, certificates) runs on the
    // blocking pool like every other store call.
    let (data_dir, tls_cert, tls_key, init) =
        (config.data_dir.clone(), config.tls_cert.clone(), config.tls_key.clone(), config.init);
    // The PostgreSQL store, connected (and migrated) on this runtime, where its connections
    // live; a data dir without a master key, or a database `init` has not marked, is refused.
    let postgres = match &config.database {
        None => None,
        Some(url) => {
            // Refused before connecting for good (which migrates): an uninitialised database
            // gets no table from a `serve` that refuses it.
            let probed = crate::store::postgres::PgStore::is_initialised(url.connect_string())
                .await
                .map_err(ServeError::Database)?;
            if !probed && !init {
                return Err(ServeError::NotInitialisedDatabase {
                    path: data_dir.display().to_string(),
                    marked: false,
                });
            }
            let store = Store::connect(&url.location()).await.map_err(ServeError::Database)?;
            let marked = store.meta_get("initialised_at").await.map_err(ServeError::Database)?.is_some();
            if !(marked && DataDir::has_master_key(&data_dir)) {
                if !init || marked {
                    return Err(ServeError::NotInitialisedDatabase {
                        path: data_dir.display().to_string(),
                        marked,
                    });
                }
                {
                    let ca = crate::init::init_bare_with(&data_dir, store.clone()).await?;
                    tracing::warn!(data_dir = %data_dir.display(), ca_cert = %ca.display(),
                        "initialised the database (--init): no account and no admin token exist yet");
                }
            }
            tracing::info!(store = "postgres", "connected to the PostgreSQL store");
            Some(store)
        }
    };
    let (data, files, rustls, fingerprint) = tokio::task::spawn_blocking(move || -> Result<_, ServeError> {
        let data = match postgres {
            Some(store) => DataDir::open_with(&data_dir, store)?,
            None => {
                // A data dir that is not initialised (a typo, a missing volume) is refused
                // before anything is created in it, unless initialising was asked for.
                if DataDir::initialised_at(&data_dir)?.is_none() {
                    if !init {
                        return Err(ServeError::NotInitialised { path: data_dir.display().to_string() });
                    }
                    let ca = crate::init::init_bare(&data_dir)?;
                    tracing::warn!(data_dir = %data_dir.display(), ca_cert = %ca.display(),
                        "initialised the data dir (--init): no account and no admin token exist yet; create the first admin token on this host with `tether-manager admin-token create NAME --offline --data-dir DIR` (it prints the value once)");
                }
                DataDir::open(&data_dir)?
            }
        };
        let files = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => TlsFiles { cert, key, ca: None },
            _ => tls::ensure_generated(&data.path, &[])?,
        };
        let rustls = tls::server_config(&files)?;
        let fingerprint = files.ca.as_deref().map(tls::fingerprint_sha256).transpose()?;
        Ok((data, files, rustls, fingerprint))
    })
    .await
    .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    if let (Some(ca), Some(fingerprint)) = (&files.ca, &fingerprint) {
        tracing::info!(ca_cert = %ca.display(), ca_fingerprint_sha256 = %fingerprint, "using the generated CA; give delegates this CA (MANAGER_CA_CERT)");
    }
    // The first start records the master key's check value; every later start (and every
    // other manager of a shared store) must present the same key.
    let check = data.master.check_value();
    if data.store.meta_claim("master_key_check", &check).await? != check {
        return Err(ServeError::WrongMasterKey { path: data.path.display().to_string() });
    }
    let state = AppState::new(config.clone(), &data);
    let resumed = crate::rotation::resume(&state).await?;
    if resumed > 0 {
        tracing::info!(rotations = resumed, "resumed unfinished rotations");
    }
    state.rotations.spawn_policy(Duration::from_secs(config.rotation_policy_check_secs));
    // In a replica set: the change feed (sessions are accepted once it has caught up), the
    // fail-closed watchdog, the jobs lease and presence.
    state.cluster.spawn(&state);
    if state.cluster.postgres().is_none() {
        state.metrics.accepting.set(1);
    }

    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    // The limit acceptor admits or refuses the TCP connection (and sets TCP_NODELAY), then
    // TLS runs within its handshake timeout.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(RustlsConfig::from_config(rustls))
        .handshake_timeout(Duration::from_secs(config.tls_handshake_timeout_secs))
        .acceptor(state.connections.acceptor());
    let mut server = axum_server::from_tcp(listener)?.acceptor(acceptor).handle(handle.clone());
    // Without a timer hyper's header-read timeout is off. With it, a request head must be
    // complete within the timeout, counted from when the connection is ready for one (so it
    // also bounds the wait between keep-alive requests).
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.http_header_timeout_secs));
    let server =
        server.serve(crate::api::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>());
    let mut server = tokio::spawn(server);
    state.set_ready();
    tracing::info!(%addr, url = %format!("https://{addr}"), "tether-manager listening");
    tracing::debug!(
        max_unauthenticated_connections = state.connections.max_total(),
        max_unauthenticated_per_address = state.connections.max_per_address(),
        tls_handshake_timeout_secs = config.tls_handshake_timeout_secs,
        http_header_timeout_secs = config.http_header_timeout_secs,
        http_idle_timeout_secs = config.http_idle_timeout_secs,
        "connection limits"
    );
    on_ready();

    tokio::select! {
        () = shutdown => {}
        res = &mut server => {
            return match res {
                Ok(r) => r.map_err(ServeError::Io),
                Err(e) => Err(ServeError::Io(std::io::Error::other(e))),
            };
        }
    }
    drain(&state, &handle, Duration::from_secs(config.drain_secs)).await;
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(Ok(r)) => r.map_err(ServeError::Io),
        Ok(Err(e)) => Err(ServeError::Io(std::io::Error::other(e))),
        Err(_) => {
            tracing::warn!("server did not stop in time; exiting anyway");
            Ok(())
        }
    }
}

/// Says `goodbye` to every delegate, waits (bounded) for the sessions to end, then stops the
/// HTTP server.
async fn drain(state: &AppState, handle: &axum_server::Handle<SocketAddr>, limit: Duration) {
    state.set_draining();
    // Rotation drivers stop first; an unfinished rotation resumes at the next start. A replica
    // then gives up the jobs lease and leaves the cluster view.
    state.rotations.shutdown().await;
    state.cluster.shutdown().await;
    let started = Instant::now();
    let told = state.registry.shutdown_all();
    tracing::info!(sessions = told, "shutting down: goodbye sent to every delegate");
    // Bounded poll: at most `limit`, in 20 ms steps.
    while !state.registry.is_empty() && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = limit.saturating_sub(started.elapsed());
    handle.graceful_shutdown(Some(left.max(Duration::from_millis(100))));
    tracing::info!(remaining_sessions = state.registry.len(), "drained");
}
