//! Partitions: one actor per partition owns its log on disk; nothing else writes a partition's files.

mod actor;
pub mod cleaner;
pub mod log;
pub mod segment;

pub use actor::{
    Append, AppendOutcome, GetOffsets, ListOffset, PartitionActor, PartitionTimers, Read, ReadOutcome, Shutdown,
    UpdateConfig,
};
pub use log::{LogConfig, LogError, LogOffsets};
