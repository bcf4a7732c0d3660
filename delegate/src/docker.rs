//! Docker mode: replacing the delegate's own container with one that carries the new token.
//!
//! - [`container_id`]: finding the own container id (pure parsers of `/proc` text).
pub mod container_id;
