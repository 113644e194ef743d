//! Produce: record batches for partitions, appended as received. Batches borrow from the frame buffer.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceRequest<'a> {
    /// 0: no response is sent; 1: after the leader wrote; -1: after every in-sync replica has it.
    pub acks: i8,
    pub timeout_ms: u32,
    #[serde(borrow)]
    pub topics: Vec<ProduceTopic<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceTopic<'a> {
    pub name: String,
    #[serde(borrow)]
    pub partitions: Vec<ProducePartition<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducePartition<'a> {
    pub partition: u32,
    /// One or more whole record batches, concatenated (MessagePack `bin`).
    #[serde(borrow, with = "serde_bytes")]
    pub records: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceResponse {
    pub topics: Vec<ProduceTopicResponse>,
    /// How long the broker held this answer back because the principal is over its produce quota.
    #[serde(default)]
    pub throttle_time_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceTopicResponse {
    pub name: String,
    pub partitions: Vec<ProducePartitionResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducePartitionResponse {
    pub partition: u32,
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
    /// Offset of the first record of the first batch.
    pub base_offset: u64,
    pub log_start_offset: u64,
}

impl Request for ProduceRequest<'_> {
    const API_KEY: ApiKey = ApiKey::Produce;
    type Response = ProduceResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_bin_and_borrowed() {
        let records = [1u8, 2, 3];
        let request = ProduceRequest {
            acks: -1,
            timeout_ms: 100,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![ProducePartition { partition: 0, records: &records }],
            }],
        };
        let bytes = rmp_serde::to_vec_named(&request).unwrap();
        // bin8 marker 0xc4, length 3, then the bytes as they are.
        assert!(bytes.windows(5).any(|w| w == [0xc4, 3, 1, 2, 3]));
        let decoded: ProduceRequest<'_> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(decoded, request);
        let start = bytes.as_ptr() as usize;
        let borrowed = decoded.topics[0].partitions[0].records.as_ptr() as usize;
        assert!(borrowed >= start && borrowed < start + bytes.len(), "records were copied");
        for len in 0..bytes.len() {
            assert!(rmp_serde::from_slice::<ProduceRequest<'_>>(&bytes[..len]).is_err());
        }
    }
}
