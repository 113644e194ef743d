//! AlterUsers and DescribeUsers: SCRAM credentials kept in the cluster metadata. The client derives the
//! salted keys (`oxbow user create` does), so a password never reaches the broker.

use serde::{Deserialize, Serialize};

use super::{ApiKey, Request};
use crate::auth::scram::ScramCredential;
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterUsersRequest {
    /// Users to create or whose credential to replace.
    pub upsert: Vec<UserUpsert>,
    /// Users to delete.
    pub delete: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpsert {
    pub name: String,
    /// `SCRAM-SHA-256`.
    pub mechanism: String,
    pub credential: ScramCredential,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterUsersResponse {
    /// One per user named in the request, upserts first.
    pub results: Vec<UserResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserResult {
    pub name: String,
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeUsersRequest {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeUsersResponse {
    pub users: Vec<UserDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDescription {
    pub name: String,
    pub mechanism: String,
    pub iterations: u32,
}

impl Request for AlterUsersRequest {
    const API_KEY: ApiKey = ApiKey::AlterUsers;
    type Response = AlterUsersResponse;
}

impl Request for DescribeUsersRequest {
    const API_KEY: ApiKey = ApiKey::DescribeUsers;
    type Response = DescribeUsersResponse;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::api::tests::round_trip;

    #[test]
    fn round_trips() {
        let credential = ScramCredential::from_salted(&[1; 32], b"salt", 4096);
        round_trip(&AlterUsersRequest {
            upsert: vec![UserUpsert { name: "a".into(), mechanism: "SCRAM-SHA-256".into(), credential }],
            delete: vec!["b".into()],
        });
        round_trip(&DescribeUsersResponse {
            users: vec![UserDescription { name: "a".into(), mechanism: "SCRAM-SHA-256".into(), iterations: 4096 }],
        });
    }
}
