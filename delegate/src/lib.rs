//! Tether delegate agent.
//!
//! # Layout
//!
//! - [`cli`]: clap flags (each also an environment variable); raw strings only.
//! - [`strings`]: the `Strings` source the configuration reads (environment or a map).
//! - [`config`]: validation into [`config::Config`]; errors name the variable, never its value.
//! - [`connection`]: TCP, TLS, WebSocket and the v1 handshake, giving an authenticated session.
//! - [`session`]: one session's life: heartbeats, pings, tasks, rotations, and how it ends.
//! - [`agent`]: token choice at start, reconnects with backoff, fatal exit, shutdown.
//! - [`rotation`]: unseal, prove, apply (docker, file, manual), ack; applied ids remembered.
//! - [`docker`]: own container discovery and self-replacement through the engine.
//! - [`backoff`]: exponential backoff with full jitter; goodbye jitter.
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
pub mod docker;
pub mod health;
pub mod logging;
pub mod rotation;
pub mod session;
pub mod state;
pub mod strings;
pub mod token_file;
