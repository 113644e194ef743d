//! ListOffsets: the earliest offset, the latest offset, or the first offset at or after a timestamp.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsRequest {
    pub topics: Vec<ListOffsetsTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsTopic {
    pub name: String,
    pub partitions: Vec<ListOffsetsPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsPartition {
    pub partition: u32,
    /// -1 latest (the high watermark), -2 earliest (the log start), else milliseconds since the epoch.
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsResponse {
    pub topics: Vec<ListOffsetsTopicResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsTopicResponse {
    pub name: String,
    pub partitions: Vec<ListOffsetsPartitionResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsPartitionResponse {
    pub partition: u32,
    pub error_code: ErrorCode,
    /// For a timestamp with no record at or after it: the latest offset, and timestamp -1.
    pub offset: u64,
    pub timestamp: i64,
}

impl Request for ListOffsetsRequest {
    const API_KEY: ApiKey = ApiKey::ListOffsets;
    type Response = ListOffsetsResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(&ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: "t".into(),
                partitions: vec![ListOffsetsPartition { partition: 0, timestamp: -2 }],
            }],
        });
    }
}
