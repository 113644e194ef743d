//! DescribeCluster: every registered broker with its liveness, and the controller quorum's leader.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::NodeId;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeClusterRequest {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeClusterResponse {
    /// The controller quorum's leader, -1 while an election runs.
    pub controller_id: NodeId,
    /// Node ids of the controller quorum's voters.
    pub voters: Vec<NodeId>,
    pub brokers: Vec<ClusterBroker>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterBroker {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
    /// A fenced broker missed its heartbeats (or never registered): it leads nothing.
    pub fenced: bool,
    /// Partitions this broker leads.
    pub leaders: u32,
}

impl Request for DescribeClusterRequest {
    const API_KEY: ApiKey = ApiKey::DescribeCluster;
    type Response = DescribeClusterResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(&DescribeClusterResponse {
            controller_id: 2,
            voters: vec![1, 2, 3],
            brokers: vec![ClusterBroker { node_id: 1, host: "h".into(), port: 9092, fenced: false, leaders: 3 }],
        });
    }
}
