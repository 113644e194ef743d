//! DescribeGroups: members with their assignments, and committed offsets with lag.

use serde::{Deserialize, Serialize};

use super::join_group::TopicPartitions;
use super::{ApiKey, Request};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeGroupsRequest {
    pub group_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeGroupsResponse {
    pub groups: Vec<GroupDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDescription {
    pub group_id: String,
    pub error_code: ErrorCode,
    pub state: String,
    pub strategy: String,
    pub generation_id: i32,
    pub members: Vec<MemberDescription>,
    pub offsets: Vec<PartitionLag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub assignment: Vec<TopicPartitions>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// -1: nothing committed.
    pub committed_offset: i64,
    pub log_end_offset: u64,
    /// `log_end_offset - committed_offset`, or the whole log when nothing is committed.
    pub lag: u64,
    /// The member holding the partition, if any.
    pub member_id: Option<String>,
    pub client_id: Option<String>,
}

impl Request for DescribeGroupsRequest {
    const API_KEY: ApiKey = ApiKey::DescribeGroups;
    type Response = DescribeGroupsResponse;
}
