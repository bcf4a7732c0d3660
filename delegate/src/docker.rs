//! Docker mode: replacing the delegate's own container with one that carries the new token.
//!
//! - [`container_id`]: finding the own container id (pure parsers of `/proc` text).
//! - [`successor`]: the successor's create spec from an inspect (pure).
//! - [`engine`]: the engine calls: discover and confirm, create and start the successor,
//!   roll it back, and the successor's takeover (stop and remove the old one, rename).
pub mod container_id;
pub mod engine;
pub mod successor;
