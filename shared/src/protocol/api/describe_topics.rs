//! DescribeTopics: partitions with leader and offsets, and every config with its effective value.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::{ErrorCode, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeTopicsRequest {
    /// `None`: every topic.
    pub names: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeTopicsResponse {
    pub topics: Vec<TopicDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: String,
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
    pub internal: bool,
    pub configs: Vec<ConfigEntry>,
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    /// True when the topic does not override the broker default.
    pub is_default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDescription {
    pub partition: u32,
    pub leader: NodeId,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub log_end_offset: u64,
    /// Bytes of the answering replica's log on disk (added in 0.2; absent from older brokers).
    #[serde(default)]
    pub size_bytes: u64,
}

impl Request for DescribeTopicsRequest {
    const API_KEY: ApiKey = ApiKey::DescribeTopics;
    type Response = DescribeTopicsResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(&DescribeTopicsResponse {
            topics: vec![TopicDescription {
                name: "t".into(),
                error_code: ErrorCode::NONE,
                error_message: None,
                internal: false,
                configs: vec![ConfigEntry { name: "retention.ms".into(), value: "1".into(), is_default: true }],
                partitions: vec![PartitionDescription {
                    partition: 0,
                    leader: 1,
                    replicas: vec![1],
                    isr: vec![1],
                    log_start_offset: 0,
                    high_watermark: 5,
                    size_bytes: 4096,
                    log_end_offset: 5,
                }],
            }],
        });
    }
}
