//! Tether manager: issues, lists, rotates, expires and revokes delegate tokens, and accepts
//! the delegates' WebSocket sessions on one TLS port.
//!
//! # Layout
//!
//! - [`config`]: the `serve` settings (TOML file, `TETHER_*` env, flags) parsed once and validated.
//! - [`datadir`]: the data dir: database, master key, generated certificates.
//! - [`keys`]: the master key sealing `K_token`, token and admin-token generation (OS CSPRNG).
//! - [`tls`]: generated CA and server certificate, rustls configs (ring provider).
//! - [`store`]: SQLite (WAL, `synchronous=FULL`, migrations), called off the async threads:
//!   accounts, tokens, admin tokens, rotations, audit.
//! - [`tokens`]: create / revoke / delete operations (durable first, then applied to sessions).
//! - [`rotation`]: rotations: successor, `rotate` push, per-delegate tracking, the driver.
//! - [`registry`]: live sessions and the command channel into each.
//! - [`cluster`]: the replica set on PostgreSQL: change feed, fail-closed, jobs lease,
//!   presence and the cluster-wide view.
//! - [`gateway`]: the delegate WebSocket endpoint: handshake, rate limit, session loop.
//! - [`api`]: the REST API (`app(state) -> Router`), admin auth, DTOs, errors, OpenAPI.
//! - [`console`]: the web console under `/ui/`: HTML pages that call the REST handlers.
//! - [`server`]: `run(config, listener, shutdown, on_ready)`: serve, then drain gracefully.
//! - [`init`]: the `init` command.
//! - [`cli`]: the command line and the API client.
//! - [`metrics`], [`logging`], [`validate`], [`clock`], [`state`]: supporting parts.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod datadir;
pub mod gateway;
pub mod init;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod rotation;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod validate;

pub use server::run;
