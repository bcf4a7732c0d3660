//! The Docker quick start under test: one unique Compose project per test, brought up through
//! `docker/up.sh` (the README's run command) on the real Docker engine, driven with
//! `docker compose` / `docker-compose` and the manager's admin CLI, and torn down (containers,
//! networks, volumes) by a drop guard, also when a test fails.
//!
//! The images `tether-manager:latest` and `tether-delegate:latest` must exist
//! (`docker/build-images.sh`, which `tests/run.sh` runs first); an unreachable engine or a
//! missing image fails the test with a message that says so.
//!
//! - [`project`]: [`ComposeProject`], one running quick start.
//! - [`engine`]: the engine preflight, the Compose command, cleanup of stale projects.
//! - [`ha`]: [`HaProject`], the HA example (`docker/up.sh --ha`: PostgreSQL, three replicas,
//!   two delegates), which also needs the image `tether-postgres:15`.
//!
//! The admin CLI's `--json` output is read through [`crate::harness::cli`], the one contract.
use std::path::{Path, PathBuf};

pub mod engine;
pub mod ha;
pub mod project;

pub use crate::harness::cli::{created_token_value, rotated_token_value, token_id, LiveDelegate};
pub use engine::preflight;
pub use ha::HaProject;
pub use project::ComposeProject;

/// Images the quick start runs.
pub const IMAGES: [&str; 2] = ["tether-manager:latest", "tether-delegate:latest"];
/// Compose services of the two delegates, and the names they announce to the manager.
pub const DELEGATES: [(&str, &str); 2] = [("delegate1", "delegate-1"), ("delegate2", "delegate-2")];

/// Root of the repository (the parent of the `tests/` crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
