//! CreateAcls, DeleteAcls and DescribeAcls: access control entries kept in the cluster metadata. An entry
//! allows (or denies) one principal one operation on topics, groups or the cluster, named literally or by
//! prefix. Deny wins over allow; with authorization on, what no entry allows is refused.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Topic,
    Group,
    /// The cluster itself (name `kafka-cluster`, as Kafka's): user and ACL management, topic creation.
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternType {
    /// The name as given; `*` matches every name.
    Literal,
    /// Every name starting with the given text.
    Prefixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    /// Implied by Read, Write, Delete and Alter.
    Describe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Allow,
    Deny,
}

/// The cluster resource's one name.
pub const CLUSTER_NAME: &str = "kafka-cluster";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// `User:<name>`, or `User:*` for every authenticated user.
    pub principal: String,
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub resource_name: String,
    pub operation: Operation,
    pub permission: Permission,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAclsRequest {
    pub creations: Vec<AclBinding>,
}

/// One result per binding, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclsResponse {
    pub results: Vec<AclResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclResult {
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
}

/// Deletes exactly these bindings (deleting one that does not exist is not an error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAclsRequest {
    pub deletions: Vec<AclBinding>,
}

/// Lists bindings, optionally only a principal's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeAclsRequest {
    pub principal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeAclsResponse {
    pub acls: Vec<AclBinding>,
}

impl Request for CreateAclsRequest {
    const API_KEY: ApiKey = ApiKey::CreateAcls;
    type Response = AclsResponse;
}

impl Request for DeleteAclsRequest {
    const API_KEY: ApiKey = ApiKey::DeleteAcls;
    type Response = AclsResponse;
}

impl Request for DescribeAclsRequest {
    const API_KEY: ApiKey = ApiKey::DescribeAcls;
    type Response = DescribeAclsResponse;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::api::tests::round_trip;

    #[test]
    fn round_trips() {
        let binding = AclBinding {
            principal: "User:alice".into(),
            resource_type: ResourceType::Topic,
            pattern_type: PatternType::Prefixed,
            resource_name: "book".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        };
        round_trip(&CreateAclsRequest { creations: vec![binding.clone()] });
        round_trip(&DescribeAclsResponse { acls: vec![binding] });
        round_trip(&AclsResponse { results: vec![AclResult { error_code: ErrorCode::NONE, error_message: None }] });
    }
}
