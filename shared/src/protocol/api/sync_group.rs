//! SyncGroup: report the partitions a member holds and receive the ones it may hold now.

use serde::{Deserialize, Serialize};

use super::join_group::TopicPartitions;
use super::{ApiKey, Request};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncGroupRequest {
    pub group_id: String,
    pub member_id: String,
    /// What the member holds now (after revoking what an earlier sync took away).
    pub owned: Vec<TopicPartitions>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncGroupResponse {
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
    pub generation_id: i32,
    /// The member may consume exactly these; anything it holds beyond them it must commit and release, then
    /// sync again.
    pub assignment: Vec<TopicPartitions>,
}

impl Request for SyncGroupRequest {
    const API_KEY: ApiKey = ApiKey::SyncGroup;
    type Response = SyncGroupResponse;
}
