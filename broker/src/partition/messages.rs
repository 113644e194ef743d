//! The messages a partition actor answers (one struct each), and the values they carry.

use std::time::Duration;

use actix::Message;
use bytes::Bytes;
use oxbow::protocol::batch::BatchHeader;
use oxbow::protocol::NodeId;
use tokio::sync::oneshot;

use super::log::{LogError, LogOffsets};
use super::state::PartitionRole;
use super::PartitionConfig;

/// Where an append's answer goes.
pub type AppendReply = oneshot::Sender<Result<AppendOutcome, LogError>>;

/// The partition's state in the metadata, sent by the registry whenever it changes.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct SetRole(pub PartitionRole);

/// A follower's fetch, on the leader.
#[derive(Message)]
#[rtype(result = "Result<FollowerRead, LogError>")]
pub struct FollowerFetch {
    pub replica: NodeId,
    pub incarnation: Option<u64>,
    pub fetch_offset: u64,
    pub log_end_offset: Option<u64>,
    pub last_fetched_epoch: Option<i32>,
    pub current_leader_epoch: Option<i32>,
    /// 0: no records, only the follower's position (a report).
    pub max_bytes: usize,
}

#[derive(Debug)]
pub struct FollowerRead {
    pub records: Bytes,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub diverging_epoch: Option<(i32, u64)>,
}

/// Where a follower's log ends and the epoch of its last batch (what it fetches from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerPosition {
    pub log_end_offset: u64,
    pub last_epoch: Option<i32>,
    pub leader_epoch: i32,
}

/// Batches fetched from the leader, on a follower; replies after they are stored (and fsynced when the topic
/// acknowledges only fsynced data).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AppendReplicated {
    pub leader_epoch: i32,
    pub records: Bytes,
    pub leader_high_watermark: u64,
    pub leader_log_start_offset: u64,
    pub reply: oneshot::Sender<Result<FollowerPosition, LogError>>,
}

/// The follower's log diverges from the leader's: cut it at the end of `epoch` (at most `end_offset`).
#[derive(Message)]
#[rtype(result = "Result<FollowerPosition, LogError>")]
pub struct TruncateDiverged {
    pub leader_epoch: i32,
    pub epoch: i32,
    pub end_offset: u64,
}

/// The follower fetched below the leader's log start: empty the log and restart at `offset`.
#[derive(Message)]
#[rtype(result = "Result<FollowerPosition, LogError>")]
pub struct ResetTo {
    pub leader_epoch: i32,
    pub offset: u64,
}

#[derive(Message)]
#[rtype(result = "FollowerPosition")]
pub struct GetPosition;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: u64,
    pub log_start_offset: u64,
}

/// Append validated batches. The handler replies through `reply` (after the write, or after the fsync when
/// the topic acknowledges only fsynced data), so a sender can await the hand-off without awaiting the reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Append {
    pub batches: Vec<(BatchHeader, Bytes)>,
    /// acks=all: reply once every in-sync replica has the batches (the high watermark passed them).
    pub acks_all: bool,
    pub reply: AppendReply,
}

#[derive(Debug)]
pub struct ReadOutcome {
    pub records: Bytes,
    pub offsets: LogOffsets,
}

/// Read whole batches from `offset`: consumers read from the leader, below the high watermark; the broker's
/// own readers (`internal`, such as the group coordinator loading offsets) read any replica to its log end.
#[derive(Message)]
#[rtype(result = "Result<ReadOutcome, LogError>")]
pub struct Read {
    pub offset: u64,
    pub max_bytes: usize,
    pub internal: bool,
}

/// The first offset at or after a timestamp: `Ok(None)` when there is none.
#[derive(Message)]
#[rtype(result = "Result<Option<(u64, i64)>, LogError>")]
pub struct ListOffset {
    pub timestamp: i64,
}

#[derive(Message)]
#[rtype(result = "LogOffsets")]
pub struct GetOffsets;

/// Bytes of the replica's segments on disk.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct SizeBytes;

/// Broker-wide timer settings of partition actors, and the broker's fsync histogram they report to.
#[derive(Debug, Clone)]
pub struct PartitionTimers {
    pub retention_check_interval: Duration,
    pub cleaner_interval: Duration,
    /// Test-only fault injection point (`OXBOW_FAULT`).
    pub fault: Option<String>,
    pub fsync_seconds: prometheus_client::metrics::histogram::Histogram,
}

/// New settings (from AlterConfigs).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateConfig(pub PartitionConfig);

/// fsync everything and stop; answers the recovery point that covers the whole log.
#[derive(Message)]
#[rtype(result = "std::io::Result<super::recovery::PartitionPoint>")]
pub struct Shutdown;

/// The partition's latest recovery point (as of its last completed fsync), if it has one.
#[derive(Message)]
#[rtype(result = "Option<super::recovery::PartitionPoint>")]
pub struct GetRecoveryPoint;
