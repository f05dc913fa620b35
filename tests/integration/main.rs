//! Integration tests through a real hyper origin on 127.0.0.1 and a hyper-util client.

mod axum;
mod body;
mod caching;
mod coalesce;
mod common;
mod compose;
mod controls;
mod inspect;
mod security;
mod stale;
mod store;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod stores;
mod tamper;
mod traits;
mod validation;
