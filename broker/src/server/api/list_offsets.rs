//! ListOffsets: earliest (log start), latest (high watermark), or the first offset at or after a timestamp.

use oxbow::protocol::api::list_offsets::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use oxbow::protocol::{offset_spec, CodedError, ErrorCode};

use super::RequestScope;
use super::{log_error_code, mailbox_error_code, Encoded};
use crate::partition::ListOffset;

pub async fn handle(request: ListOffsetsRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let registry = &scope.context.registry;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let mut response = ListOffsetsPartitionResponse {
                partition: wanted.partition,
                error_code: ErrorCode::NONE,
                offset: 0,
                timestamp: -1,
            };
            match registry.partition(&topic.name, wanted.partition) {
                None => response.error_code = registry.missing_partition_error(&topic.name, wanted.partition).code,
                Some(handle) => {
                    let offsets = *handle.offsets.borrow();
                    match wanted.timestamp {
                        // Only the leader knows the partition's offsets (a follower's high watermark lags).
                        offset_spec::LATEST | offset_spec::EARLIEST if !offsets.leader => {
                            response.error_code = ErrorCode::NOT_LEADER_OR_FOLLOWER
                        }
                        offset_spec::LATEST if !offsets.high_watermark_known => {
                            response.error_code = ErrorCode::OFFSET_NOT_AVAILABLE
                        }
                        offset_spec::LATEST => response.offset = offsets.high_watermark,
                        offset_spec::EARLIEST => response.offset = offsets.log_start_offset,
                        timestamp if timestamp < 0 => response.error_code = ErrorCode::INVALID_REQUEST,
                        timestamp => match handle.addr.send(ListOffset { timestamp }).await {
                            Ok(Ok(Some((offset, found)))) => (response.offset, response.timestamp) = (offset, found),
                            Ok(Ok(None)) => response.offset = offsets.high_watermark,
                            Ok(Err(error)) => response.error_code = log_error_code(&error),
                            Err(error) => response.error_code = mailbox_error_code(error),
                        },
                    }
                }
            }
            partitions.push(response);
        }
        topics.push(ListOffsetsTopicResponse { name: topic.name, partitions });
    }
    Ok(Encoded::new(&ListOffsetsResponse { topics }))
}
