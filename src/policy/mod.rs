//! Pure HTTP caching rules (RFC 9111): no I/O, no bodies, no clock reads.
//!
//! Every function takes the time it needs as a parameter, so it can be tested table by table
//! with fixed dates. The tower plumbing (`service.rs`, `future.rs`) is the only caller.
//!
//! `docs/http-caching.md` maps every implemented section to its function and tests.

pub(crate) mod cache_control;
pub(crate) mod decision;
pub(crate) mod freshness;
pub(crate) mod storable;
pub(crate) mod validation;
pub(crate) mod vary;

pub(crate) use cache_control::{RequestDirectives, ResponseDirectives};
