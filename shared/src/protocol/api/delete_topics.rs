//! DeleteTopics: delete topics and all their data.

use serde::{Deserialize, Serialize};

use super::create_topics::TopicResult;
use super::{ApiKey, Request};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicsRequest {
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicsResponse {
    pub topics: Vec<TopicResult>,
}

impl Request for DeleteTopicsRequest {
    const API_KEY: ApiKey = ApiKey::DeleteTopics;
    type Response = DeleteTopicsResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(&DeleteTopicsRequest { names: vec!["t".into()] });
    }
}
