//! `hcc` run as a subprocess against stores filled through the library: a `DiskStore`, and
//! Redis servers (and a Redis Cluster) started here on 127.0.0.1.

mod cli;
mod cli_security;
mod common;
