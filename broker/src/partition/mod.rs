//! Partitions: one actor per partition owns its log on disk; nothing else writes a partition's files.

mod actor;
pub mod cleaner;
pub mod log;
pub mod replica;
pub mod segment;

pub use actor::{
    Append, AppendOutcome, AppendReplicated, FollowerFetch, FollowerPosition, FollowerRead, GetOffsets, GetPosition,
    ListOffset, PartitionActor, PartitionTimers, Read, ReadOutcome, ResetTo, SetRole, Shutdown, TruncateDiverged,
    UpdateConfig,
};
pub use log::{LogConfig, LogError, LogOffsets};
