//! Metadata: the brokers, and for each topic its partitions with leader, replicas and in-sync replicas.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::{ErrorCode, NodeId};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRequest {
    /// `None`: every topic.
    pub topics: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataResponse {
    pub brokers: Vec<BrokerMetadata>,
    pub controller_id: NodeId,
    pub topics: Vec<TopicMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMetadata {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    pub error_code: ErrorCode,
    pub partitions: Vec<PartitionMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    pub partition: u32,
    pub error_code: ErrorCode,
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
}

impl Request for MetadataRequest {
    const API_KEY: ApiKey = ApiKey::Metadata;
    type Response = MetadataResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(&MetadataRequest { topics: Some(vec!["a".into()]) });
        super::super::tests::round_trip(&MetadataResponse {
            brokers: vec![BrokerMetadata { node_id: 1, host: "h".into(), port: 9092 }],
            controller_id: 1,
            topics: vec![TopicMetadata {
                name: "a".into(),
                error_code: ErrorCode::NONE,
                partitions: vec![PartitionMetadata {
                    partition: 0,
                    error_code: ErrorCode::NONE,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                }],
            }],
        });
    }
}
