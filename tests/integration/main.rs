//! Integration tests through a real hyper origin on 127.0.0.1 and a hyper-util client.

mod attacks;
mod axum;
mod body;
mod breaker;
mod caching;
#[cfg(all(feature = "redis-cluster", feature = "disk", feature = "test-util"))]
mod cluster;
mod coalesce;
mod common;
mod compose;
#[cfg(all(feature = "disk", feature = "lz4", feature = "zstd", feature = "serde"))]
mod compression;
#[cfg(feature = "serde")]
mod config;
mod controls;
mod default_deny;
mod directives;
#[cfg(all(unix, feature = "disk"))]
mod disk_processes;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod disk_variants;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod disk_write;
mod entry_modes;
mod fills;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod fleet_attacks;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod fleet_attacks2;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod fleet_attacks3;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod fleet_attacks4;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod fleet_support;
mod http2;
mod https;
mod inspect;
mod large_in_memory;
#[cfg(feature = "metrics")]
mod metrics;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod near;
mod ranges;
mod refresh_bounds;
mod security;
#[cfg(feature = "disk")]
mod segments;
mod stale;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod store_backends;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod store_bounds;
mod store_contract;
#[cfg(all(unix, feature = "disk", feature = "redis", feature = "test-util"))]
mod store_links;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod tag_index_attacks;
mod tamper;
mod traits;
mod validation;
