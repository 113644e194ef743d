//! The Oxbow broker: partition actors over segment files, a topic registry, and the TCP server speaking
//! the protocol of `oxbow::protocol`. (The `oxbow` command-line tool is its own crate, `cli/`.)

pub mod broker;
pub mod cluster;
pub mod config;
pub mod durable;
pub mod group;
pub mod launch;
pub mod metrics;
pub mod partition;
pub mod replication;
pub mod security;
pub mod server;
pub mod topic;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
