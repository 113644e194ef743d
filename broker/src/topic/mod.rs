//! Topics: per-topic configs and the registry that maps (topic, partition) to its partition actor.

pub mod config;
mod registry;

pub use config::TopicConfig;
pub use registry::{is_internal, Followed, PartitionHandle, Registry, Topic};
