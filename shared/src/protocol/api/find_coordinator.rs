//! FindCoordinator: which broker coordinates a consumer group.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::{ErrorCode, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindCoordinatorRequest {
    pub group_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindCoordinatorResponse {
    pub error_code: ErrorCode,
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
}

impl Request for FindCoordinatorRequest {
    const API_KEY: ApiKey = ApiKey::FindCoordinator;
    type Response = FindCoordinatorResponse;
}
