//! The workspace's shared test helpers (`tests/support/base.rs` of the core).

#[path = "../../../../tests/support/base.rs"]
mod base;
pub use base::*;
