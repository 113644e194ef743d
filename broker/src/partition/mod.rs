//! Partitions: one actor per partition owns its log on disk; nothing else writes a partition's files. The
//! replication logic (roles, high watermark, in-sync set, producer sequences) is the plain state machine in
//! `state.rs`; the actor performs its effects.

mod actor;
pub mod cleaner;
pub mod log;
mod messages;
pub mod recovery;
pub mod replica;
pub mod segment;
pub mod state;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oxbow::protocol::NodeId;

pub use actor::{PartitionActor, MAILBOX_CAPACITY};
pub use log::{LogConfig, LogError, LogOffsets};
pub use messages::{
    Append, AppendOutcome, AppendReplicated, FollowerFetch, FollowerPosition, FollowerRead, GetOffsets, GetPosition,
    GetRecoveryPoint, ListOffset, PartitionTimers, Read, ReadOutcome, ResetTo, SetRole, Shutdown, SizeBytes,
    TruncateDiverged, UpdateConfig,
};
pub use state::{IsrAnswer, PartitionRole};

/// What a partition actor needs of the cluster, and nothing more (the broker's `Cluster` implements it).
pub trait ClusterLink: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    /// Whether this broker may act as a leader now (its heartbeats reach the controller).
    fn lease_valid(&self) -> bool;
    /// How long an in-sync follower may go without catching up before the leader drops it.
    fn replica_lag_time_max(&self) -> Duration;
    /// Asks the controller to change a partition's in-sync set: accepted, refused (never applied), or unknown.
    fn alter_isr(self: std::sync::Arc<Self>, change: IsrChange) -> Pin<Box<dyn Future<Output = IsrAnswer> + Send>>;
}

/// An in-sync set change a leader proposes to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub topic: String,
    pub partition: u32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<NodeId>,
}

/// What happens to old records: deleted by age and size, compacted to the newest per key, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    /// `cleanup.policy` as a topic config spells it.
    pub fn parse(value: &str) -> Option<CleanupPolicy> {
        let mut policy = CleanupPolicy { delete: false, compact: false };
        for part in value.split(',').map(str::trim) {
            match part {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => return None,
            }
        }
        (policy.delete || policy.compact).then_some(policy)
    }

    pub fn name(self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }
}

/// A partition's effective settings (its topic's configs over the broker's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionConfig {
    pub log: LogConfig,
    /// 0: acknowledge only fsynced records.
    pub flush_ms: u64,
    /// Start an fsync once this many bytes are unsynced (0: never early).
    pub write_behind_bytes: u64,
    pub min_insync_replicas: u32,
    pub cleanup_policy: CleanupPolicy,
    /// -1: no limit.
    pub retention_ms: i64,
    /// -1: no limit.
    pub retention_bytes: i64,
    pub delete_retention_ms: i64,
}
