//! Produce: validate each partition's batches on the connection's thread (CRC, framing, size), hand them
//! to the partition actors in request order, then await the replies (acks) in a separate task.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oxbow::protocol::api::produce::{ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse};
use oxbow::protocol::batch::{self, BatchHeader};
use oxbow::protocol::{Acks, CodedError, ErrorCode};
use tokio::sync::oneshot;

use super::{coded, decode, mailbox_error_code, Encoded};
use super::{error_frame, Access, RequestScope};
use crate::metrics::TopicLabels;
use crate::partition::{Append, AppendOutcome, LogError};
use crate::topic::TopicConfig;
use oxbow::protocol::api::acls::{Operation, ResourceType};

/// Longest produce timeout honoured.
const PRODUCE_TIMEOUT_MAX_MS: u32 = 300_000;

/// A produce request whose batches are with the partition actors.
pub struct PendingProduce {
    acks: Acks,
    timeout: Duration,
    outcome: Result<Vec<(String, Vec<PendingPartition>)>, CodedError>,
}

enum PendingPartition {
    Done(ProducePartitionResponse),
    Waiting { partition: u32, reply: oneshot::Receiver<Result<AppendOutcome, LogError>> },
}

/// Decodes and validates; sends each partition's batches to its actor and returns once all are queued.
/// A topic the principal may not write answers TOPIC_AUTHORIZATION_FAILED for each of its partitions, and
/// nothing of it is written.
pub async fn hand_off(body: &Bytes, scope: &RequestScope, access: &Access) -> PendingProduce {
    let request: ProduceRequest<'_> = match decode(body) {
        Ok(request) => request,
        Err(error) => return PendingProduce { acks: Acks::Leader, timeout: Duration::ZERO, outcome: Err(error) },
    };
    let timeout = Duration::from_millis(u64::from(request.timeout_ms.min(PRODUCE_TIMEOUT_MAX_MS)));
    let Some(acks) = Acks::from_wire(request.acks) else {
        let error =
            CodedError::new(ErrorCode::INVALID_REQUIRED_ACKS, format!("acks must be 0, 1 or -1, got {}", request.acks));
        return PendingProduce { acks: Acks::Leader, timeout, outcome: Err(error) };
    };
    let registry = &scope.context.registry;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let registered = registry.topic(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        let refusal = if crate::topic::is_internal(&topic.name) {
            let message = format!("'{}' is an internal topic written only by the broker", topic.name);
            Some(CodedError::new(ErrorCode::INVALID_REQUEST, message))
        } else {
            access.require(ResourceType::Topic, &topic.name, Operation::Write).err()
        };
        if let Some(refusal) = refusal {
            partitions.extend(
                topic
                    .partitions
                    .iter()
                    .map(|data| PendingPartition::Done(partition_error(data.partition, refusal.clone()))),
            );
            topics.push((topic.name, partitions));
            continue;
        }
        for data in topic.partitions {
            let partition = data.partition;
            let failed = |error: CodedError| PendingPartition::Done(partition_error(partition, error));
            let Some(handle) = registered.as_ref().and_then(|t| t.local.get(partition as usize).cloned().flatten())
            else {
                partitions.push(failed(registry.missing_partition_error(&topic.name, partition)));
                continue;
            };
            let config = registered.as_ref().map(|t| &t.config).expect("the partition exists");
            let batches = match validate(&body.slice_ref(data.records), config) {
                Ok(batches) => batches,
                Err(error) => {
                    tracing::debug!(topic = %topic.name, partition, %error, "rejected a produce");
                    partitions.push(failed(error));
                    continue;
                }
            };
            let labels = TopicLabels { topic: topic.name.clone() };
            let metrics = registry.metrics();
            metrics.bytes_in.get_or_create(&labels).inc_by(batches.iter().map(|(_, b)| b.len() as u64).sum());
            metrics
                .records_in
                .get_or_create(&labels)
                .inc_by(batches.iter().map(|(h, _)| u64::from(h.record_count)).sum());
            let (reply_tx, reply) = oneshot::channel();
            match handle.addr.send(Append { batches, acks_all: acks == Acks::All, reply: reply_tx }).await {
                Ok(()) => partitions.push(PendingPartition::Waiting { partition, reply }),
                Err(error) => {
                    partitions.push(failed(CodedError::new(mailbox_error_code(error), "the partition is closing")))
                }
            }
        }
        topics.push((topic.name, partitions));
    }
    PendingProduce { acks, timeout, outcome: Ok(topics) }
}

impl PendingProduce {
    /// Awaits every partition's reply (up to the request's timeout); `None` for acks=0. `throttle` (the
    /// principal's produce quota) holds the answer back.
    pub async fn complete(self, correlation_id: u32, throttle: Duration) -> Option<BytesMut> {
        let topics = match self.outcome {
            Ok(topics) => topics,
            Err(error) => return Some(error_frame(correlation_id, error.code, error.message)),
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let throttle_time_ms = throttle.as_millis() as u32;
        let mut response = ProduceResponse { topics: Vec::with_capacity(topics.len()), throttle_time_ms };
        for (name, partitions) in topics {
            let mut results = Vec::with_capacity(partitions.len());
            for pending in partitions {
                results.push(match pending {
                    PendingPartition::Done(result) => result,
                    PendingPartition::Waiting { partition, reply } => {
                        match tokio::time::timeout_at(deadline, reply).await {
                            Ok(Ok(Ok(outcome))) => ProducePartitionResponse {
                                partition,
                                error_code: ErrorCode::NONE,
                                error_message: None,
                                base_offset: outcome.base_offset,
                                log_start_offset: outcome.log_start_offset,
                            },
                            Ok(Ok(Err(error))) => partition_error(partition, coded(error)),
                            Ok(Err(_)) => partition_error(
                                partition,
                                CodedError::new(ErrorCode::BROKER_SHUTTING_DOWN, "the partition stopped"),
                            ),
                            Err(_) => partition_error(
                                partition,
                                CodedError::new(ErrorCode::REQUEST_TIMED_OUT, "not acknowledged within timeout_ms"),
                            ),
                        }
                    }
                });
            }
            response.topics.push(ProduceTopicResponse { name, partitions: results });
        }
        crate::security::quota::hold_back(throttle).await;
        (self.acks != Acks::None).then(|| Encoded::new(&response).into_frame(correlation_id))
    }
}

/// Splits and checks the batches of one partition; nothing is stored if any batch is refused.
fn validate(records: &Bytes, config: &TopicConfig) -> Result<Vec<(BatchHeader, Bytes)>, CodedError> {
    let max_message_bytes = config.max_message_bytes as usize;
    let corrupt = |message: String| CodedError::new(ErrorCode::CORRUPT_MESSAGE, message);
    if records.is_empty() {
        return Err(corrupt("no record batch in the request".into()));
    }
    let (ranges, covered) = batch::split_batches(records).map_err(|error| corrupt(error.to_string()))?;
    if covered != records.len() {
        return Err(corrupt(format!("{} bytes after the last whole batch", records.len() - covered)));
    }
    let mut batches = Vec::with_capacity(ranges.len());
    for (_, range) in ranges {
        let bytes = records.slice(range);
        if bytes.len() > max_message_bytes {
            return Err(CodedError::new(
                ErrorCode::RECORD_BATCH_TOO_LARGE,
                format!("batch of {} bytes is over max.message.bytes {max_message_bytes}", bytes.len()),
            ));
        }
        let (header, null_key) =
            batch::validate_batch_keys(&bytes, true).map_err(|error| corrupt(error.to_string()))?;
        if config.cleanup_policy.compact && null_key {
            return Err(CodedError::new(ErrorCode::INVALID_RECORD, "a compacted topic needs a key on every record"));
        }
        match config.compression {
            Some(codec) if header.compression() != Ok(codec) => {
                let bytes = batch::recompress(&bytes, &header, codec).map_err(|error| corrupt(error.to_string()))?;
                let header = batch::check_batch(&bytes).expect("a batch we just sealed is valid");
                batches.push((header, bytes));
            }
            _ => batches.push((header, bytes)),
        }
    }
    Ok(batches)
}

fn partition_error(partition: u32, error: CodedError) -> ProducePartitionResponse {
    ProducePartitionResponse {
        partition,
        error_code: error.code,
        error_message: Some(error.message),
        base_offset: 0,
        log_start_offset: 0,
    }
}
