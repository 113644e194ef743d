//! AlterConfigs: change a topic's configs at runtime.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterConfigsRequest {
    pub topic: String,
    /// Keys to override.
    pub set: BTreeMap<String, String>,
    /// Keys to return to the broker default.
    pub delete: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterConfigsResponse {
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
}

impl Request for AlterConfigsRequest {
    const API_KEY: ApiKey = ApiKey::AlterConfigs;
    type Response = AlterConfigsResponse;
}
