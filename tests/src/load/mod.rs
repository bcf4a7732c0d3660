//! Load generator: many lightweight delegate sessions driven directly by `tether-protocol`
//! (no delegate binary per session), spread across 127.0.0.x source addresses, each loop
//! bounded in count and time. Used by the `tether-load` binary and its CI smoke test;
//! [`cluster`] is the replica-set benchmark (several managers on one PostgreSQL), [`scale`]
//! its session count (holder child processes, each under the open-file limit).
pub mod bare;
pub mod baseline;
pub mod cluster;
pub mod fleet;
pub mod procfs;
pub mod scale;
pub mod scenarios;
pub mod session;
pub mod stats;
pub mod stores;
pub mod transport;
