//! The end-to-end harness, one of each: the REAL `tether-manager` ([`manager::Manager`]:
//! `init --json`, then `serve` on port 0 with the bound address read back, `/readyz` polled,
//! `kill -9` or SIGTERM and restart on the same data dir and address, killed on drop, with an
//! admin API client) and the REAL `tether-delegate` binary, with their logs collected.
//! Binaries come from the workspace's `target/debug` (built by `cargo build --workspace
//! --bins`, which `tests/run.sh` does first) unless `TETHER_MANAGER_BIN` /
//! `TETHER_DELEGATE_BIN` name others.
//!
//! - [`process`]: the binary lookup and a child process whose output lines are collected.
//! - [`manager`]: the manager process, its HTTPS clients and the admin CLI runner.
//! - [`api`]: the admin REST API calls.
//! - [`delegate`]: the delegate process.
//! - [`docker`]: a Docker test run (unique names, drop-guard cleanup, the delegate image).
//! - [`replicas`]: helpers of the replica-set tests.
//! - [`proxy`]: a TCP proxy that can cut a manager off its database silently.
//! - [`poll`]: bounded polling, the one way to wait for state.
//! - [`probe`]: an honest client's view during an attack (a metric, `/healthz`, a handshake).
//! - [`cli`]: the admin CLI's `--json` output, read with the field names the manager emits.
//! - [`clock`]: unix seconds.
pub mod api;
pub mod cli;
pub mod clock;
pub mod delegate;
pub mod docker;
pub mod manager;
pub mod poll;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod replicas;

pub use api::api_call;
pub use clock::unix_now;
pub use manager::{Manager, Options};
