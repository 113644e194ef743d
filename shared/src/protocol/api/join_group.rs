//! JoinGroup: become a member of a consumer group (or come back as a static member).

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroupRequest {
    pub group_id: String,
    /// Empty on the first join.
    pub member_id: String,
    /// Static membership: a restarted member with the same id gets its partitions back without a rebalance.
    pub group_instance_id: Option<String>,
    pub topics: Vec<String>,
    /// `range`, `roundrobin` or `cooperative-sticky`; all members of a group must agree.
    pub strategy: String,
    pub session_timeout_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroupResponse {
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
    pub member_id: String,
    pub generation_id: i32,
    pub heartbeat_interval_ms: u32,
}

impl Request for JoinGroupRequest {
    const API_KEY: ApiKey = ApiKey::JoinGroup;
    type Response = JoinGroupResponse;
}

/// Partitions of one topic, as used by the group APIs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<u32>,
}

impl TopicPartitions {
    /// Groups (topic, partition) pairs by topic, sorted.
    pub fn group(pairs: impl IntoIterator<Item = (String, u32)>) -> Vec<TopicPartitions> {
        let mut by_topic: std::collections::BTreeMap<String, Vec<u32>> = std::collections::BTreeMap::new();
        for (topic, partition) in pairs {
            by_topic.entry(topic).or_default().push(partition);
        }
        by_topic
            .into_iter()
            .map(|(topic, mut partitions)| {
                partitions.sort_unstable();
                partitions.dedup();
                TopicPartitions { topic, partitions }
            })
            .collect()
    }

    /// Flattens back into (topic, partition) pairs.
    pub fn flatten(list: &[TopicPartitions]) -> Vec<(String, u32)> {
        list.iter().flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p))).collect()
    }
}
