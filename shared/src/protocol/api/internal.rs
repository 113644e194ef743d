//! Broker-to-broker APIs. Their payloads are MessagePack documents owned by the broker (the consensus
//! library's messages and controller requests); clients never send them.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};

/// A Raft message for the controller quorum (AppendEntries, Vote, InstallSnapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftRequest {
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A request to the active controller (broker heartbeats, in-sync set changes, topic changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRequest {
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternalResponse {
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl Request for RaftRequest {
    const API_KEY: ApiKey = ApiKey::Raft;
    type Response = InternalResponse;
}

impl Request for ControllerRequest {
    const API_KEY: ApiKey = ApiKey::Controller;
    type Response = InternalResponse;
}
