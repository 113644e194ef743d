//! The consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups and DescribeGroups. Each forwards to the group coordinator actor.

use oxbow::protocol::api::describe_groups::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupDescription, MemberDescription, PartitionLag,
};
use oxbow::protocol::api::find_coordinator::{FindCoordinatorRequest, FindCoordinatorResponse};
use oxbow::protocol::api::heartbeat::{HeartbeatRequest, HeartbeatResponse};
use oxbow::protocol::api::join_group::{JoinGroupRequest, JoinGroupResponse, TopicPartitions};
use oxbow::protocol::api::leave_group::{LeaveGroupRequest, LeaveGroupResponse};
use oxbow::protocol::api::list_groups::{GroupListing, ListGroupsRequest, ListGroupsResponse};
use oxbow::protocol::api::offset_commit::{
    OffsetCommitPartitionResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetCommitTopicResponse,
};
use oxbow::protocol::api::offset_fetch::{CommittedOffset, OffsetFetchRequest, OffsetFetchResponse};
use oxbow::protocol::api::sync_group::{SyncGroupRequest, SyncGroupResponse};
use oxbow::protocol::{CodedError, ErrorCode};

use super::RequestScope;
use super::{Access, Encoded};
use crate::group::offsets::{self, Committed, OFFSETS_TOPIC};
use crate::group::{self, assignor::Strategy};

/// The coordinator of a group is the leader of its `__consumer_offsets` partition. The topic is created on
/// first use, replicated like any topic (up to three replicas).
pub async fn find_coordinator(request: FindCoordinatorRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let context = &scope.context;
    let registry = &context.registry;
    let cluster = registry.cluster();
    let not_available = |message: String| {
        tracing::debug!(%message, "no coordinator yet");
        Encoded::new(&FindCoordinatorResponse {
            error_code: ErrorCode::COORDINATOR_NOT_AVAILABLE,
            node_id: -1,
            host: String::new(),
            port: 0,
        })
    };
    if !cluster.state().topics.contains_key(OFFSETS_TOPIC) {
        let live = cluster.state().live_brokers().len().clamp(1, 3) as u16;
        let partitions = context.config.offsets_topic_partitions;
        match registry.create_topic(OFFSETS_TOPIC, partitions, live, offsets::topic_configs(), false).await {
            Ok(()) => {}
            Err(error) if error.code == ErrorCode::TOPIC_ALREADY_EXISTS => {}
            Err(error) => return Ok(not_available(format!("creating {OFFSETS_TOPIC}: {error}"))),
        }
    }
    let state = cluster.state();
    let Some(topic) = state.topics.get(OFFSETS_TOPIC) else {
        return Ok(not_available(format!("{OFFSETS_TOPIC} is not in the metadata yet")));
    };
    let partition = offsets::partition_for(&request.group_id, topic.partitions.len() as u32);
    let leader = topic.partitions[partition as usize].leader;
    let Some(broker) = state.brokers.get(&leader).filter(|broker| !broker.fenced) else {
        return Ok(not_available(format!("{OFFSETS_TOPIC}/{partition} has no live leader")));
    };
    let (host, port) = broker.address(context.external);
    Ok(Encoded::new(&FindCoordinatorResponse { error_code: ErrorCode::NONE, node_id: leader, host, port }))
}

pub async fn join(request: JoinGroupRequest, client_id: String, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let outcome = match Strategy::parse(&request.strategy) {
        Some(strategy) => scope
            .context
            .coordinator
            .send(group::Join {
                group_id: request.group_id,
                member_id: request.member_id,
                instance_id: request.group_instance_id,
                client_id,
                topics: request.topics,
                strategy,
                session_timeout_ms: request.session_timeout_ms,
            })
            .await
            .map_err(unavailable)?,
        None => Err(CodedError::new(
            ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
            format!("unknown strategy '{}'", request.strategy),
        )),
    };
    Ok(Encoded::new(&match outcome {
        Ok(joined) => JoinGroupResponse {
            error_code: ErrorCode::NONE,
            error_message: None,
            member_id: joined.member_id,
            generation_id: joined.generation,
            heartbeat_interval_ms: joined.heartbeat_interval_ms,
        },
        Err(error) => JoinGroupResponse {
            error_code: error.code,
            error_message: Some(error.message),
            member_id: String::new(),
            generation_id: -1,
            heartbeat_interval_ms: 0,
        },
    }))
}

pub async fn sync(request: SyncGroupRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let owned = TopicPartitions::flatten(&request.owned);
    let outcome = scope
        .context
        .coordinator
        .send(group::Sync { group_id: request.group_id, member_id: request.member_id, owned })
        .await
        .map_err(unavailable)?;
    Ok(Encoded::new(&match outcome {
        Ok(synced) => SyncGroupResponse {
            error_code: ErrorCode::NONE,
            error_message: None,
            generation_id: synced.generation,
            assignment: TopicPartitions::group(synced.assignment),
        },
        Err(error) => SyncGroupResponse {
            error_code: error.code,
            error_message: Some(error.message),
            generation_id: -1,
            assignment: vec![],
        },
    }))
}

pub async fn heartbeat(request: HeartbeatRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let outcome = scope
        .context
        .coordinator
        .send(group::Heartbeat { group_id: request.group_id, member_id: request.member_id })
        .await
        .map_err(unavailable)?;
    let error_code = match outcome {
        Ok(false) => ErrorCode::NONE,
        Ok(true) => ErrorCode::REBALANCE_IN_PROGRESS,
        Err(error) => error.code,
    };
    Ok(Encoded::new(&HeartbeatResponse { error_code }))
}

pub async fn leave(request: LeaveGroupRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let outcome = scope
        .context
        .coordinator
        .send(group::Leave { group_id: request.group_id, member_id: request.member_id })
        .await
        .map_err(unavailable)?;
    Ok(Encoded::new(&LeaveGroupResponse { error_code: outcome.err().map_or(ErrorCode::NONE, |e: CodedError| e.code) }))
}

pub async fn commit(request: OffsetCommitRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let offsets = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| {
                ((topic.name.clone(), p.partition), Committed { offset: p.offset, metadata: p.metadata.clone() })
            })
        })
        .collect();
    let outcome = scope
        .context
        .coordinator
        .send(group::Commit {
            group_id: request.group_id,
            member_id: request.member_id,
            generation: request.generation_id,
            offsets,
        })
        .await
        .map_err(unavailable)?;
    let response = match outcome {
        Ok(results) => {
            let mut topics: Vec<OffsetCommitTopicResponse> = Vec::new();
            for ((topic, partition), error_code) in results {
                let result = OffsetCommitPartitionResponse { partition, error_code };
                match topics.iter_mut().find(|t| t.name == topic) {
                    Some(entry) => entry.partitions.push(result),
                    None => topics.push(OffsetCommitTopicResponse { name: topic, partitions: vec![result] }),
                }
            }
            OffsetCommitResponse { error_code: ErrorCode::NONE, error_message: None, topics }
        }
        Err(error) => {
            OffsetCommitResponse { error_code: error.code, error_message: Some(error.message), topics: vec![] }
        }
    };
    Ok(Encoded::new(&response))
}

pub async fn fetch_offsets(request: OffsetFetchRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let partitions = request.topics.map(|topics| TopicPartitions::flatten(&topics));
    let fetched = scope
        .context
        .coordinator
        .send(group::FetchOffsets { group_id: request.group_id, partitions })
        .await
        .map_err(unavailable)?;
    let fetched = match fetched {
        Ok(fetched) => fetched,
        Err(error) => return Ok(Encoded::new(&OffsetFetchResponse { error_code: error.code, offsets: vec![] })),
    };
    let offsets = fetched
        .into_iter()
        .map(|((topic, partition), committed)| CommittedOffset {
            topic,
            partition,
            offset: committed.as_ref().map_or(-1, |c| c.offset as i64),
            metadata: committed.and_then(|c| c.metadata),
        })
        .collect();
    Ok(Encoded::new(&OffsetFetchResponse { error_code: ErrorCode::NONE, offsets }))
}

/// Only the groups the principal may describe.
pub async fn list(_request: ListGroupsRequest, scope: &RequestScope, access: &Access) -> Result<Encoded, CodedError> {
    let groups = scope.context.coordinator.send(group::ListGroups).await.map_err(unavailable)?;
    let groups = groups
        .into_iter()
        .filter(|(group_id, _, _)| {
            access.may(
                oxbow::protocol::api::acls::ResourceType::Group,
                group_id,
                oxbow::protocol::api::acls::Operation::Describe,
            )
        })
        .map(|(group_id, state, n_members)| GroupListing { group_id, state: state.to_string(), n_members })
        .collect();
    Ok(Encoded::new(&ListGroupsResponse { groups }))
}

pub async fn describe(request: DescribeGroupsRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let context = &scope.context;
    let mut groups = Vec::with_capacity(request.group_ids.len());
    for group_id in request.group_ids {
        let described =
            context.coordinator.send(group::DescribeGroup { group_id: group_id.clone() }).await.map_err(unavailable)?;
        let info = match described {
            Ok(Some(info)) => info,
            Ok(None) => {
                groups.push(undescribed(group_id, ErrorCode::UNKNOWN_MEMBER_ID, "Dead"));
                continue;
            }
            // Not the coordinator (or not yet, or its lease lapsed): a view from here could be stale.
            Err(error) => {
                groups.push(undescribed(group_id, error.code, "Unknown"));
                continue;
            }
        };
        // Every partition that is committed or assigned, with its lag against the high watermark.
        let mut places: std::collections::BTreeSet<(String, u32)> =
            info.committed.iter().map(|(tp, _)| tp.clone()).collect();
        places.extend(info.members.iter().flat_map(|m| m.owned.iter().cloned()));
        let offsets = places
            .into_iter()
            .map(|(topic, partition)| {
                let committed =
                    info.committed.iter().find(|(tp, _)| tp.0 == topic && tp.1 == partition).map(|(_, c)| c.offset);
                let log_end_offset = context
                    .registry
                    .partition(&topic, partition)
                    .map_or(0, |handle| handle.offsets.borrow().high_watermark);
                let owner = info.members.iter().find(|m| m.owned.iter().any(|tp| tp.0 == topic && tp.1 == partition));
                PartitionLag {
                    lag: log_end_offset.saturating_sub(committed.unwrap_or(0)),
                    committed_offset: committed.map_or(-1, |offset| offset as i64),
                    log_end_offset,
                    member_id: owner.map(|m| m.member_id.clone()),
                    client_id: owner.map(|m| m.client_id.clone()),
                    topic,
                    partition,
                }
            })
            .collect();
        groups.push(GroupDescription {
            group_id,
            error_code: ErrorCode::NONE,
            state: info.state.name().to_string(),
            strategy: info.strategy,
            generation_id: info.generation,
            members: info
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id,
                    group_instance_id: m.instance_id,
                    client_id: m.client_id,
                    assignment: TopicPartitions::group(m.owned),
                })
                .collect(),
            offsets,
        });
    }
    Ok(Encoded::new(&DescribeGroupsResponse { groups }))
}

/// A group described by its error alone.
fn undescribed(group_id: String, error_code: ErrorCode, state: &str) -> GroupDescription {
    GroupDescription {
        group_id,
        error_code,
        state: state.into(),
        strategy: String::new(),
        generation_id: -1,
        members: vec![],
        offsets: vec![],
    }
}

fn unavailable(_error: actix::MailboxError) -> CodedError {
    CodedError::new(ErrorCode::COORDINATOR_NOT_AVAILABLE, "the group coordinator is not running")
}
