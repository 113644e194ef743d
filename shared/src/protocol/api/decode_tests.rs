//! Every request and response body against hostile bytes: arbitrary input decodes to a value or an error,
//! never a panic (property tests on stable Rust, a bounded case count each), and the bodies not covered
//! beside their own types round-trip with every truncation refused.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::tests::round_trip;
use super::*;
use crate::protocol::frame;
use crate::protocol::ErrorCode;

/// A property test per body type: arbitrary bytes, and arbitrary MessagePack maps and arrays (the shapes a
/// body has, so decoding gets past the first byte), never panic the decoder.
macro_rules! never_panics {
    ($($name:ident: $type:ty),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            $(
                #[test]
                fn $name(bytes in proptest::collection::vec(any::<u8>(), 0..200), fields in proptest::collection::vec((any::<u8>(), any::<u32>()), 0..12)) {
                    let _ = frame::decode_body::<$type>(&bytes);
                    let mut map = vec![0xdf];
                    map.extend_from_slice(&(fields.len() as u32).to_be_bytes());
                    for (tag, value) in &fields {
                        map.push(0xa0 | (tag & 0x0f));
                        map.extend(std::iter::repeat_n(b'a', usize::from(tag & 0x0f)));
                        map.push(0xce);
                        map.extend_from_slice(&value.to_be_bytes());
                    }
                    let _ = frame::decode_body::<$type>(&map);
                    map[0] = 0xdd;
                    let _ = frame::decode_body::<$type>(&map);
                }
            )*
        }
    };
}

never_panics! {
    api_versions_request: api_versions::ApiVersionsRequest,
    api_versions_response: api_versions::ApiVersionsResponse,
    metadata_request: metadata::MetadataRequest,
    metadata_response: metadata::MetadataResponse,
    produce_request: produce::ProduceRequest<'_>,
    produce_response: produce::ProduceResponse,
    fetch_request: fetch::FetchRequest,
    fetch_response: fetch::FetchResponse<'_>,
    list_offsets_request: list_offsets::ListOffsetsRequest,
    list_offsets_response: list_offsets::ListOffsetsResponse,
    create_topics_request: create_topics::CreateTopicsRequest,
    create_topics_response: create_topics::CreateTopicsResponse,
    delete_topics_request: delete_topics::DeleteTopicsRequest,
    delete_topics_response: delete_topics::DeleteTopicsResponse,
    describe_topics_request: describe_topics::DescribeTopicsRequest,
    describe_topics_response: describe_topics::DescribeTopicsResponse,
    alter_configs_request: alter_configs::AlterConfigsRequest,
    alter_configs_response: alter_configs::AlterConfigsResponse,
    find_coordinator_request: find_coordinator::FindCoordinatorRequest,
    find_coordinator_response: find_coordinator::FindCoordinatorResponse,
    join_group_request: join_group::JoinGroupRequest,
    join_group_response: join_group::JoinGroupResponse,
    sync_group_request: sync_group::SyncGroupRequest,
    sync_group_response: sync_group::SyncGroupResponse,
    heartbeat_request: heartbeat::HeartbeatRequest,
    heartbeat_response: heartbeat::HeartbeatResponse,
    leave_group_request: leave_group::LeaveGroupRequest,
    leave_group_response: leave_group::LeaveGroupResponse,
    offset_commit_request: offset_commit::OffsetCommitRequest,
    offset_commit_response: offset_commit::OffsetCommitResponse,
    offset_fetch_request: offset_fetch::OffsetFetchRequest,
    offset_fetch_response: offset_fetch::OffsetFetchResponse,
    list_groups_request: list_groups::ListGroupsRequest,
    list_groups_response: list_groups::ListGroupsResponse,
    describe_groups_request: describe_groups::DescribeGroupsRequest,
    describe_groups_response: describe_groups::DescribeGroupsResponse,
    describe_cluster_request: describe_cluster::DescribeClusterRequest,
    describe_cluster_response: describe_cluster::DescribeClusterResponse,
    init_producer_id_request: init_producer_id::InitProducerIdRequest,
    init_producer_id_response: init_producer_id::InitProducerIdResponse,
    authenticate_request: authenticate::AuthenticateRequest,
    authenticate_response: authenticate::AuthenticateResponse,
    alter_users_request: users::AlterUsersRequest,
    alter_users_response: users::AlterUsersResponse,
    describe_users_request: users::DescribeUsersRequest,
    describe_users_response: users::DescribeUsersResponse,
    create_acls_request: acls::CreateAclsRequest,
    delete_acls_request: acls::DeleteAclsRequest,
    describe_acls_request: acls::DescribeAclsRequest,
    describe_acls_response: acls::DescribeAclsResponse,
    acls_response: acls::AclsResponse,
    raft_request: internal::RaftRequest,
    controller_request: internal::ControllerRequest,
    internal_response: internal::InternalResponse,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A request frame of any bytes decodes to a header and body, or to an error.
    #[test]
    fn request_frames_of_any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = frame::decode_request(&bytes::Bytes::from(bytes));
    }
}

fn partitions(topic: &str, partitions: &[u32]) -> join_group::TopicPartitions {
    join_group::TopicPartitions { topic: topic.into(), partitions: partitions.to_vec() }
}

#[test]
fn alter_configs_round_trips() {
    round_trip(&alter_configs::AlterConfigsRequest {
        topic: "clicks".into(),
        set: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        delete: vec!["flush.ms".into()],
    });
    round_trip(&alter_configs::AlterConfigsResponse {
        error_code: ErrorCode::INVALID_CONFIG,
        error_message: Some("no".into()),
    });
}

#[test]
fn group_membership_bodies_round_trip() {
    round_trip(&join_group::JoinGroupRequest {
        group_id: "g".into(),
        member_id: String::new(),
        group_instance_id: Some("pod-1".into()),
        topics: vec!["a".into()],
        strategy: "cooperative-sticky".into(),
        session_timeout_ms: 6000,
    });
    round_trip(&join_group::JoinGroupResponse {
        error_code: ErrorCode::NONE,
        error_message: None,
        member_id: "m-1".into(),
        generation_id: 3,
        heartbeat_interval_ms: 2000,
    });
    round_trip(&sync_group::SyncGroupRequest {
        group_id: "g".into(),
        member_id: "m-1".into(),
        owned: vec![partitions("a", &[0, 2])],
    });
    round_trip(&sync_group::SyncGroupResponse {
        error_code: ErrorCode::NONE,
        error_message: None,
        generation_id: 3,
        assignment: vec![partitions("a", &[1])],
    });
    round_trip(&heartbeat::HeartbeatRequest { group_id: "g".into(), member_id: "m-1".into() });
    round_trip(&heartbeat::HeartbeatResponse { error_code: ErrorCode::REBALANCE_IN_PROGRESS });
    round_trip(&leave_group::LeaveGroupRequest { group_id: "g".into(), member_id: "m-1".into() });
    round_trip(&leave_group::LeaveGroupResponse { error_code: ErrorCode::UNKNOWN_MEMBER_ID });
    round_trip(&find_coordinator::FindCoordinatorRequest { group_id: "g".into() });
    round_trip(&find_coordinator::FindCoordinatorResponse {
        error_code: ErrorCode::NONE,
        node_id: 2,
        host: "127.0.0.1".into(),
        port: 9093,
    });
}

#[test]
fn offset_bodies_round_trip() {
    round_trip(&offset_commit::OffsetCommitRequest {
        group_id: "g".into(),
        member_id: "m-1".into(),
        generation_id: 3,
        topics: vec![offset_commit::OffsetCommitTopic {
            name: "a".into(),
            partitions: vec![offset_commit::OffsetCommitPartition { partition: 0, offset: 42, metadata: None }],
        }],
    });
    round_trip(&offset_commit::OffsetCommitResponse {
        error_code: ErrorCode::NONE,
        error_message: None,
        topics: vec![offset_commit::OffsetCommitTopicResponse {
            name: "a".into(),
            partitions: vec![offset_commit::OffsetCommitPartitionResponse {
                partition: 0,
                error_code: ErrorCode::NONE,
            }],
        }],
    });
    round_trip(&offset_fetch::OffsetFetchRequest { group_id: "g".into(), topics: Some(vec![partitions("a", &[0])]) });
    round_trip(&offset_fetch::OffsetFetchResponse {
        error_code: ErrorCode::NONE,
        offsets: vec![offset_fetch::CommittedOffset { topic: "a".into(), partition: 0, offset: -1, metadata: None }],
    });
}

#[test]
fn group_listing_bodies_round_trip() {
    round_trip(&list_groups::ListGroupsRequest {});
    round_trip(&list_groups::ListGroupsResponse {
        groups: vec![list_groups::GroupListing { group_id: "g".into(), state: "Stable".into(), n_members: 2 }],
    });
    round_trip(&describe_groups::DescribeGroupsRequest { group_ids: vec!["g".into()] });
}

#[test]
fn internal_bodies_round_trip() {
    round_trip(&internal::RaftRequest { payload: vec![1, 2, 3] });
    round_trip(&internal::ControllerRequest { payload: vec![] });
    round_trip(&internal::InternalResponse { payload: vec![0xff; 40] });
}

#[test]
fn produce_responses_round_trip() {
    round_trip(&produce::ProduceResponse {
        topics: vec![produce::ProduceTopicResponse {
            name: "a".into(),
            partitions: vec![produce::ProducePartitionResponse {
                partition: 1,
                error_code: ErrorCode::NONE,
                error_message: None,
                base_offset: 7,
                log_start_offset: 0,
            }],
        }],
        throttle_time_ms: 0,
    });
}
