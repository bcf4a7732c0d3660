//! Running a change to completion whether or not its HTTP caller stays. A client that
//! disconnects or times out makes the server drop the handler's future; a change dropped
//! between its commit and what must follow it (emptying the handshake's token cache, telling
//! the live sessions, starting the rotation's driver) would leave the store saying one thing
//! and the running manager another: a revoked token still admitted from the cache, its live
//! sessions never told. So the changes that have such a tail run on a task of their own.
use std::future::Future;

use super::error::AppError;

/// Runs `work` on a task of its own and waits for it; the task runs to the end even if this
/// future is dropped. A panic in `work` is an internal error (its message is not passed on).
pub async fn to_completion<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, AppError> {
    tokio::spawn(work)
        .await
        .map_err(|_| AppError::Internal("the operation failed inside the manager; see its log".into()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::ServeConfig;
    use crate::datadir::DataDir;
    use crate::registry::{SessionCommand, SessionInfo};
    use crate::state::AppState;
    use crate::store::audit::Actor;
    use crate::store::token_cache::CachedToken;
    use crate::store::StoreOps;
    use crate::tokens;

    /// A revoke whose caller is dropped after it started still commits, empties the token
    /// cache and tells the token's live sessions (found by an outside review: before, the
    /// cache kept the token admitted, and its sessions were never told).
    #[test]
    fn a_revoke_whose_caller_goes_away_still_empties_the_cache_and_tells_the_sessions() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let data = DataDir::open(dir.path()).unwrap();
            let state = AppState::new(ServeConfig::for_data_dir(dir.path()), &data);
            let actor = Actor::system("test");
            let (_, row, token) =
                tokens::create_account(&state.store, &state.master, "acme", "Acme", &actor, 1).await.unwrap();
            let cache = state.store.token_cache();
            let key = Arc::new(token.key());
            cache.insert(cache.generation(), CachedToken { row: row.clone(), key, touched_at: u64::MAX / 2 });
            let mut commands = state.registry.insert(SessionInfo::sample(row.id));

            let revoking = {
                let state = state.clone();
                to_completion(async move {
                    tokens::revoke(&state.store, &state.registry, &state.metrics, "acme", "default", actor)
                        .await
                })
            };
            let mut revoking = Box::pin(revoking);
            // Polled exactly once (the work is spawned, not yet run: this runtime has one
            // thread, busy here), then dropped: the client went away.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(revoking.as_mut().poll(&mut cx).is_pending());
            drop(revoking);

            let told = tokio::time::timeout(Duration::from_secs(10), commands.recv()).await;
            assert!(matches!(told, Ok(Some(SessionCommand::Revoke { .. }))), "the session was not told");
            assert!(cache.get(row.id).is_none(), "the revoked token is still cached");
            let stored = state.store.token(row.id).await.unwrap().unwrap();
            assert!(stored.revoked_at.is_some());
        });
    }
}
