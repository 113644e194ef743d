//! Partitions: one actor per partition owns its log on disk; nothing else writes a partition's files.

mod actor;
pub mod log;
pub mod segment;

pub use actor::{Append, AppendOutcome, GetOffsets, ListOffset, PartitionActor, Read, ReadOutcome, Shutdown};
pub use log::{LogConfig, LogError, LogOffsets};
