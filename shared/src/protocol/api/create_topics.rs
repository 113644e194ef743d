//! CreateTopics: create topics with a partition count, replication factor and configs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicsRequest {
    pub topics: Vec<NewTopic>,
    /// Check everything but create nothing.
    pub validate_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicsResponse {
    pub topics: Vec<TopicResult>,
}

/// The outcome for one topic of CreateTopics or DeleteTopics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicResult {
    pub name: String,
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
}

impl Request for CreateTopicsRequest {
    const API_KEY: ApiKey = ApiKey::CreateTopics;
    type Response = CreateTopicsResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(&CreateTopicsRequest {
            topics: vec![NewTopic {
                name: "t".into(),
                partitions: 3,
                replication_factor: 1,
                configs: [("segment.bytes".to_string(), "1024".to_string())].into(),
            }],
            validate_only: false,
        });
        super::super::tests::round_trip(&CreateTopicsResponse {
            topics: vec![TopicResult { name: "t".into(), error_code: ErrorCode::NONE, error_message: None }],
        });
    }
}
