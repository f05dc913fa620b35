//! Integration tests of hyper-client-cache-reqwest: a real `reqwest::Client` against a hyper
//! origin on 127.0.0.1.

mod coalescing;
mod common;
mod reqwest;
#[cfg(feature = "cookies")]
mod reqwest_cookies;
mod reqwest_edges;
