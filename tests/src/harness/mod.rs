//! Harness for the delegate's end-to-end tests: the REAL `tether-manager` (`init --json`, then
//! `serve` on a free port, `/readyz` polled with a deadline, killed on drop) and the REAL
//! `tether-delegate` binary, with their logs collected. Binaries come from the workspace's
//! `target/debug` (built by `cargo build --bins`, which `tests/run.sh` does first) unless
//! `TETHER_MANAGER_BIN` / `TETHER_DELEGATE_BIN` name others.
//!
//! - [`process`]: binary lookup and a child process whose stderr lines are collected.
//! - [`manager`]: the manager process and a small REST client for its admin API.
//! - [`delegate`]: the delegate process.
//! - [`docker`]: a Docker test run (unique names, drop-guard cleanup, the delegate image).
//! - [`poll`]: bounded polling.
pub mod delegate;
pub mod docker;
pub mod manager;
pub mod poll;
pub mod process;
