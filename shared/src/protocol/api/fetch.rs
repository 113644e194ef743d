//! Fetch: stored batches from an offset, as they are on disk; long-polls with `min_bytes` and `max_wait_ms`.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// Longest time to wait for `min_bytes` to become available.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Limit on the whole response; the first batch is returned even when larger, so a consumer progresses.
    pub max_bytes: u32,
    pub topics: Vec<FetchTopic>,
    /// Set by a follower broker replicating the partitions (its node id); absent for consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<i32>,
    /// Followers: a number the follower's process drew when it started. Within one leader epoch and one
    /// incarnation the leader never counts a follower's log end lower than it already has (a follower
    /// fetching ahead has several fetches in flight whose reports may be read out of order); a new
    /// incarnation (a restart, which may have lost unflushed records) replaces the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_incarnation: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchTopic {
    pub name: String,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchPartition {
    pub partition: u32,
    pub fetch_offset: u64,
    pub partition_max_bytes: u32,
    /// The leader epoch the fetcher believes current: a mismatch is FENCED_LEADER_EPOCH or
    /// UNKNOWN_LEADER_EPOCH instead of data from the wrong leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_leader_epoch: Option<i32>,
    /// Followers: the epoch of the last batch in their log, so the leader can tell where logs diverge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_epoch: Option<i32>,
    /// Followers that fetch ahead of what they have stored (`fetch_offset` is the end of what they have
    /// received): the end of their stored log, which is what the leader counts towards the high watermark.
    /// Absent: `fetch_offset`. Larger than `fetch_offset`: INVALID_REQUEST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_log_end_offset: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse<'a> {
    #[serde(borrow)]
    pub topics: Vec<FetchTopicResponse<'a>>,
    /// How long the broker held this answer back because the principal is over its fetch quota.
    #[serde(default)]
    pub throttle_time_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchTopicResponse<'a> {
    pub name: String,
    #[serde(borrow)]
    pub partitions: Vec<FetchPartitionResponse<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchPartitionResponse<'a> {
    pub partition: u32,
    pub error_code: ErrorCode,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Followers only: the follower's log diverges from the leader's; truncate to the end offset of this
    /// epoch (`[epoch, end_offset]`) and fetch again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverging_epoch: Option<(i32, u64)>,
    /// Whole batches starting with the one that holds `fetch_offset`; may hold records below it.
    #[serde(borrow, with = "serde_bytes")]
    pub records: &'a [u8],
}

impl Request for FetchRequest {
    const API_KEY: ApiKey = ApiKey::Fetch;
    type Response = FetchResponse<'static>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(&FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: "t".into(),
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: 3,
                    partition_max_bytes: 1 << 20,
                    current_leader_epoch: Some(2),
                    last_fetched_epoch: Some(1),
                    replica_log_end_offset: Some(2),
                }],
            }],
            replica_id: Some(2),
            replica_incarnation: Some(7),
        });
    }
}
