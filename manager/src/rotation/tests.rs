//! The rotation service with a real store and registry: shutdown stops the drivers and
//! leaves the rotation to resume; a refused start is a rotation error.
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::clock::now_unix;
use crate::metrics::Metrics;
use crate::registry::{Registry, SessionInfo};
use crate::store::audit::Actor;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn session(token_id: Uuid) -> SessionInfo {
    SessionInfo::sample(token_id)
}

fn service(data: &crate::datadir::DataDir, registry: &Registry) -> Rotations {
    let metrics = Metrics::new();
    Rotations::new(
        data.store.clone(),
        registry.clone(),
        data.master.clone(),
        RotationMetrics::of(&metrics),
        crate::cluster::Cluster::single(),
    )
}

#[test]
fn shutdown_stops_the_drivers_and_leaves_the_rotation_to_resume() {
    // Issue 12, item 6: drivers were spawned with no way to stop them, so a SIGTERM drain
    // could not wait for them and a driver could be cut mid-finish.
    let dir = tempfile::tempdir().unwrap();
    let data = crate::datadir::DataDir::open(dir.path()).unwrap();
    let master = data.master.clone();
    let (_, token, _) = rt()
        .block_on(crate::tokens::create_account(
            &data.store,
            &master,
            "acme",
            "acme",
            &Actor::system("test"),
            now_unix(),
        ))
        .unwrap();
    rt().block_on(async {
        // A live delegate on the token that never acks nor moves (grace one hour).
        let registry = Registry::default();
        let _commands = registry.insert(session(token.id));
        let rotations = service(&data, &registry);
        let started = rotations.start("acme", "default", 3_600, None, Actor::system("test")).await.unwrap();
        let id = started.rotation.id;
        // A second start is refused with the rotation error, not a store error.
        let old = started.rotation.old_token_id.to_string();
        let again = rotations.start("acme", &old, 3_600, None, Actor::system("test")).await;
        assert!(
            matches!(again, Err(RotationError::AlreadyRotating { rotation_id: Some(r) }) if r == id),
            "{again:?}"
        );
        let missing = rotations.start("acme", "nope", 60, None, Actor::system("test")).await;
        assert!(matches!(missing, Err(RotationError::TokenNotFound { .. })));
        assert_eq!(started.delegates, 1);
        assert_eq!(Arc::strong_count(&rotations.0), 2, "the driver holds the service");
        tokio::time::timeout(Duration::from_secs(10), rotations.shutdown())
            .await
            .expect("shutdown is prompt");
        assert_eq!(Arc::strong_count(&rotations.0), 1, "no driver is left running");
        let row = data.store.rotation(id).await.unwrap().unwrap();
        assert_eq!(row.finished_at, None, "a shutdown does not finish the rotation");
        // The next start resumes it.
        let next = service(&data, &registry);
        assert_eq!(next.resume().await.unwrap(), 1);
        tokio::time::timeout(Duration::from_secs(10), next.shutdown()).await.expect("shutdown is prompt");
        // A driver started after shutdown returns at once.
        assert_eq!(next.resume().await.unwrap(), 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&next.0) > 1 {
            assert!(tokio::time::Instant::now() < deadline, "a late driver did not return");
            tokio::task::yield_now().await;
        }
    });
}
