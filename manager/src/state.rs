//! The shared state of a running manager, handed to the API handlers and the gateway.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::config::ServeConfig;
use crate::datadir::DataDir;
use crate::gateway::connections::ConnectionLimits;
use crate::gateway::ratelimit::FailureLimiter;
use crate::keys::MasterKey;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::rotation::{RotationMetrics, Rotations};
use crate::store::Store;

/// Everything a request or a session needs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Inner {
    /// Validated configuration.
    pub config: ServeConfig,
    /// The database.
    pub store: Store,
    /// Seals token keys at rest.
    pub master: Arc<MasterKey>,
    /// Live sessions.
    pub registry: Registry,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Failed-handshake limits per source address.
    pub limiter: FailureLimiter,
    /// Caps and idle timeout of connections that have not authenticated.
    pub connections: ConnectionLimits,
    /// The rotation service (rotations in progress and their drivers).
    pub rotations: Rotations,
    /// The replica set (with the SQLite store: this manager alone).
    pub cluster: Cluster,
    ready: AtomicBool,
    draining: AtomicBool,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AsRef<crate::rotation::Rotations> for AppState {
    fn as_ref(&self) -> &Rotations {
        &self.rotations
    }
}

impl AppState {
    /// State over an opened data dir.
    pub fn new(config: ServeConfig, data: &DataDir) -> Self {
        let limiter = FailureLimiter::new(config.handshake_fail_limit, config.handshake_fail_window_secs);
        let metrics = Metrics::new();
        let connections = ConnectionLimits::from_config(&config, &metrics);
        let registry = Registry::default();
        let store = data.store.with_timing(metrics.store_timing());
        let cluster = match store.postgres() {
            Some(pg) => Cluster::replica(pg.clone(), std::time::Duration::from_secs(config.fail_closed_secs)),
            None => Cluster::single(),
        };
        let rotations = Rotations::new(
            store.clone(),
            registry.clone(),
            data.master.clone(),
            RotationMetrics::of(&metrics),
            cluster.clone(),
        );
        Self(Arc::new(Inner {
            config,
            store,
            master: data.master.clone(),
            registry,
            metrics,
            limiter,
            connections,
            rotations,
            cluster,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }))
    }

    /// Whether `/readyz` answers 200: started, not draining, and (in a replica set) in touch
    /// with the database.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_draining() && self.cluster.accepting()
    }

    /// Marks the manager ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Whether a shutdown is draining sessions (new handshakes are refused).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts draining.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}
