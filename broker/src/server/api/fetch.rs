//! Fetch: reads stored batches from each partition's actor; if fewer than `min_bytes` are ready, waits for
//! any of the partitions to grow (or `max_wait_ms`, or shutdown) and reads again.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{join_all, select_all};
use oxbow::protocol::api::fetch::{
    FetchPartition, FetchPartitionResponse, FetchRequest, FetchResponse, FetchTopicResponse,
};
use oxbow::protocol::{frame, CodedError, ErrorCode};

use super::RequestScope;
use super::{log_error_code, mailbox_error_code, Answer, Encoded};
use crate::metrics::TopicLabels;
use crate::partition::{FollowerFetch, Read};
use crate::security::Principal;
use crate::topic::PartitionHandle;

struct PartitionRead {
    partition: u32,
    error_code: ErrorCode,
    high_watermark: u64,
    log_start_offset: u64,
    diverging_epoch: Option<(i32, u64)>,
    records: Bytes,
}

/// Refuses a request that names a partition twice (each mention could add a whole batch to one response),
/// then takes the response's share of the connection's response budget, waiting while the client has not
/// read earlier answers, and caps `max_bytes` to it.
pub async fn handle(
    mut request: FetchRequest,
    scope: &RequestScope,
    principal: &Principal,
) -> Result<Answer, CodedError> {
    let mut seen = std::collections::HashSet::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            if !seen.insert((topic.name.as_str(), partition.partition)) {
                return Err(CodedError::new(
                    ErrorCode::INVALID_REQUEST,
                    format!("partition {}/{} is named twice in one fetch", topic.name, partition.partition),
                ));
            }
        }
    }
    let config = &scope.context.config;
    let overshoot = config.log.max_message_bytes as usize;
    let share = (request.max_bytes as usize).saturating_add(overshoot).min(config.connection_response_bytes_max);
    let mut shutdown = scope.shutdown.clone();
    let permit = tokio::select! {
        permit = scope.response_budget.clone().acquire_many_owned(share as u32) => {
            permit.map_err(|_| CodedError::new(ErrorCode::BROKER_SHUTTING_DOWN, "connection closing"))?
        }
        _ = shutdown.changed() => {
            return Err(CodedError::new(ErrorCode::BROKER_SHUTTING_DOWN, "the broker is shutting down"));
        }
    };
    request.max_bytes = request.max_bytes.min(share.saturating_sub(overshoot).max(1) as u32);
    let (encoded, throttle) = long_poll(request, scope, principal).await?;
    // Over its fetch quota the principal gets the answer late, not never.
    crate::security::quota::hold_back(throttle).await;
    Ok(Answer::Budgeted(encoded, permit))
}

async fn long_poll(
    request: FetchRequest,
    scope: &RequestScope,
    principal: &Principal,
) -> Result<(Encoded, Duration), CodedError> {
    let answer = |reads: &[Vec<PartitionRead>]| {
        let bytes: usize = reads.iter().flatten().map(|read| read.records.len()).sum();
        let metrics = scope.context.registry.metrics();
        for (topic, topic_reads) in request.topics.iter().zip(reads) {
            let topic_bytes: usize = topic_reads.iter().map(|read| read.records.len()).sum();
            if topic_bytes > 0 {
                metrics.bytes_out.get_or_create(&TopicLabels { topic: topic.name.clone() }).inc_by(topic_bytes as u64);
            }
        }
        let throttle = scope.context.quotas.fetch(principal, bytes as u64);
        (encode(&request, reads, throttle), throttle)
    };
    let context = &scope.context;
    let max_wait = Duration::from_millis(u64::from(request.max_wait_ms).min(context.config.fetch_wait_max_ms));
    let deadline = tokio::time::Instant::now() + max_wait;
    let mut shutdown = scope.shutdown.clone();
    // Resolve every partition once; unknown ones answer with an error code.
    let mut handles: Vec<Vec<Option<PartitionHandle>>> = request
        .topics
        .iter()
        .map(|topic| topic.partitions.iter().map(|p| context.registry.partition(&topic.name, p.partition)).collect())
        .collect();
    loop {
        for handle in handles.iter_mut().flatten().flatten() {
            handle.offsets.borrow_and_update();
        }
        let reads = read_all(&request, &handles, &context.registry).await;
        let total_bytes: usize = reads.iter().flatten().map(|read| read.records.len()).sum();
        let any_error =
            reads.iter().flatten().any(|read| read.error_code != ErrorCode::NONE || read.diverging_epoch.is_some());
        let expired = tokio::time::Instant::now() >= deadline || *shutdown.borrow();
        if total_bytes >= request.min_bytes as usize || any_error || expired {
            return Ok(answer(&reads));
        }
        let mut waiters: Vec<_> =
            handles.iter_mut().flatten().flatten().map(|handle| Box::pin(handle.offsets.changed())).collect();
        if waiters.is_empty() {
            return Ok(answer(&reads));
        }
        tokio::select! {
            _ = select_all(waiters.iter_mut()) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn read_all(
    request: &FetchRequest,
    handles: &[Vec<Option<PartitionHandle>>],
    registry: &crate::topic::Registry,
) -> Vec<Vec<PartitionRead>> {
    let mut remaining_bytes = request.max_bytes as usize;
    let mut reads = Vec::with_capacity(request.topics.len());
    // A follower's fetch names every partition it follows from this leader (a thousand, say), and each must
    // reach its actor (to record the follower's position). Those with nothing new for it are sent all at
    // once and awaited together, instead of one round trip between threads after the other; those with data
    // are read one after the other below, within the response's byte budget.
    let mut follower_reads = match request.replica_id {
        Some(replica) => join_all(request.topics.iter().zip(handles).flat_map(|(topic, topic_handles)| {
            topic.partitions.iter().zip(topic_handles).map(move |(wanted, handle)| async move {
                let handle = handle.as_ref().filter(|h| h.offsets.borrow().log_end_offset <= wanted.fetch_offset)?;
                let budget = usize::from(wanted.partition_max_bytes > 0);
                Some(handle.addr.send(follower_fetch(replica, request.replica_incarnation, wanted, budget)).await)
            })
        }))
        .await
        .into_iter(),
        None => Vec::new().into_iter(),
    };
    for (topic, topic_handles) in request.topics.iter().zip(handles) {
        let mut topic_reads = Vec::with_capacity(topic.partitions.len());
        for (wanted, handle) in topic.partitions.iter().zip(topic_handles) {
            let follower_read = follower_reads.next().flatten();
            let mut read = PartitionRead {
                partition: wanted.partition,
                error_code: ErrorCode::NONE,
                high_watermark: 0,
                log_start_offset: 0,
                diverging_epoch: None,
                records: Bytes::new(),
            };
            match handle {
                None => read.error_code = registry.missing_partition_error(&topic.name, wanted.partition).code,
                Some(handle) if request.replica_id.is_some() => {
                    let outcome = match follower_read {
                        Some(read) => read,
                        None => {
                            // A partition_max_bytes of 0 is a report of the follower's position: no records.
                            let budget = match wanted.partition_max_bytes {
                                0 => 0,
                                wanted_bytes => (wanted_bytes as usize).min(remaining_bytes).max(1),
                            };
                            let replica = request.replica_id.unwrap_or(-1);
                            let fetch = follower_fetch(replica, request.replica_incarnation, wanted, budget);
                            handle.addr.send(fetch).await
                        }
                    };
                    match outcome {
                        Ok(Ok(outcome)) => {
                            read.high_watermark = outcome.high_watermark;
                            read.log_start_offset = outcome.log_start_offset;
                            read.diverging_epoch = outcome.diverging_epoch;
                            remaining_bytes = remaining_bytes.saturating_sub(outcome.records.len());
                            read.records = outcome.records;
                        }
                        Ok(Err(error)) => {
                            read.error_code = log_error_code(&error);
                            read.log_start_offset = handle.offsets.borrow().log_start_offset;
                        }
                        Err(error) => read.error_code = mailbox_error_code(error),
                    }
                }
                Some(_) if !leads(registry, &topic.name, wanted.partition) => {
                    read.error_code = ErrorCode::NOT_LEADER_OR_FOLLOWER;
                }
                Some(handle) => {
                    let offsets = *handle.offsets.borrow();
                    (read.high_watermark, read.log_start_offset) = (offsets.high_watermark, offsets.log_start_offset);
                    // Skip the actor when nothing new can be there, and stop filling once the response is full
                    // (the first batch is always returned whole so that a consumer progresses).
                    let has_data =
                        wanted.fetch_offset < offsets.high_watermark || wanted.fetch_offset < offsets.log_start_offset;
                    let out_of_range = wanted.fetch_offset > offsets.log_end_offset;
                    let budget = (wanted.partition_max_bytes as usize).min(remaining_bytes);
                    if (has_data && (budget > 0 || remaining_bytes == request.max_bytes as usize)) || out_of_range {
                        let read_request =
                            Read { offset: wanted.fetch_offset, max_bytes: budget.max(1), internal: false };
                        match handle.addr.send(read_request).await {
                            Ok(Ok(outcome)) => {
                                read.high_watermark = outcome.offsets.high_watermark;
                                read.log_start_offset = outcome.offsets.log_start_offset;
                                remaining_bytes = remaining_bytes.saturating_sub(outcome.records.len());
                                read.records = outcome.records;
                            }
                            Ok(Err(error)) => read.error_code = log_error_code(&error),
                            Err(error) => read.error_code = mailbox_error_code(error),
                        }
                    }
                }
            }
            topic_reads.push(read);
        }
        reads.push(topic_reads);
    }
    reads
}

fn follower_fetch(replica: i32, incarnation: Option<u64>, wanted: &FetchPartition, max_bytes: usize) -> FollowerFetch {
    FollowerFetch {
        replica,
        incarnation,
        fetch_offset: wanted.fetch_offset,
        log_end_offset: wanted.replica_log_end_offset,
        last_fetched_epoch: wanted.last_fetched_epoch,
        current_leader_epoch: wanted.current_leader_epoch,
        max_bytes,
    }
}

/// Whether this broker leads the partition in its current metadata.
fn leads(registry: &crate::topic::Registry, topic: &str, partition: u32) -> bool {
    let cluster = registry.cluster();
    cluster.state().partition(topic, partition).is_some_and(|p| p.leader == cluster.node_id)
}

fn encode(request: &FetchRequest, reads: &[Vec<PartitionRead>], throttle: Duration) -> Encoded {
    let topics = request
        .topics
        .iter()
        .zip(reads)
        .map(|(topic, reads)| FetchTopicResponse {
            name: topic.name.clone(),
            partitions: reads
                .iter()
                .map(|read| FetchPartitionResponse {
                    partition: read.partition,
                    error_code: read.error_code,
                    high_watermark: read.high_watermark,
                    log_start_offset: read.log_start_offset,
                    diverging_epoch: read.diverging_epoch,
                    records: &read.records,
                })
                .collect(),
        })
        .collect();
    // The records stay in the buffers they were read into: the writer sends them from there.
    let buffers: Vec<Bytes> = reads
        .iter()
        .flatten()
        .filter(|read| read.records.len() >= frame::SPLICE_BYTES_MIN)
        .map(|read| read.records.clone())
        .collect();
    Encoded::spliced(&FetchResponse { topics, throttle_time_ms: throttle.as_millis() as u32 }, &buffers)
}
