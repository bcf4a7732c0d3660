//! Tether delegate agent.
//!
//! # Layout
//!
//! - [`cli`]: clap flags (each also an environment variable); raw strings only.
//! - [`strings`]: the `Strings` source the configuration reads (environment or a map).
//! - [`config`]: validation into [`config::Config`]; errors name the variable, never its value.
//! - [`connection`]: TCP, TLS, WebSocket and the v1 handshake, giving an authenticated session.
//! - [`session`]: the socket loop of one session; [`session::driver`] holds its decisions
//!   (heartbeats, pings, tasks, rotations, how it ends) without sockets or clocks.
//! - [`dial`]: the order in which manager addresses are tried (several hosts, several
//!   addresses per name, the one that said goodbye last).
//! - [`agent`]: token choice at start, reconnects with backoff, fatal exit, shutdown.
//! - [`rotation`]: prove and apply (kubernetes, docker, file, manual) a rotated token; its ledger
//!   remembers applied, running and pending rotations.
//! - [`kubernetes`]: in a pod, write the token to the Secret and roll the workload.
//! - [`docker`]: own container discovery and self-replacement through the engine.
//! - [`backoff`]: exponential backoff with full jitter; goodbye jitter.
//! - [`tls`]: the TLS client configuration (pinned CA or public roots), built at load.
//! - [`token_file`]: atomic rewrite of `ACCOUNT_SECRET_FILE`.
//! - [`state`]: health and fatal-exit records in the state directory.
//! - [`health`]: the `health` subcommand.
//! - [`logging`]: text or JSON logs.
#![forbid(unsafe_code)]
// Input must never reach a panic: no byte-index string slicing, no unchecked indexing.
#![cfg_attr(not(test), warn(clippy::string_slice, clippy::indexing_slicing))]

pub mod agent;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod connection;
pub mod dial;
pub mod docker;
pub mod health;
pub mod kubernetes;
pub mod logging;
pub mod rotation;
pub mod session;
pub mod state;
pub mod strings;
pub mod tls;
pub mod token_file;

#[cfg(test)]
mod test_support;
