//! Tether delegate agent.
//!
//! # Layout
//!
//! - [`cli`]: clap flags (each also an environment variable); raw strings only.
//! - [`strings`]: the `Strings` source the configuration reads (environment or a map).
//! - [`config`]: validation into [`config::Config`]; errors name the variable, never its value.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod cli;
pub mod config;
pub mod docker;
pub mod state;
pub mod strings;
pub mod token_file;
