//! `Admin`: create, delete, list and describe topics.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::{self, scram, scram::ScramCredential};
use crate::protocol::api::acls::{AclBinding, AclsResponse, CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use crate::protocol::api::users::{AlterUsersRequest, DescribeUsersRequest, UserDescription, UserUpsert};

use super::{ClientConfig, ClientError, Cluster};
use crate::protocol::api::alter_configs::AlterConfigsRequest;
use crate::protocol::api::create_topics::{CreateTopicsRequest, NewTopic, TopicResult};
use crate::protocol::api::delete_topics::DeleteTopicsRequest;
use crate::protocol::api::describe_groups::{DescribeGroupsRequest, GroupDescription};
use crate::protocol::api::describe_topics::{DescribeTopicsRequest, TopicDescription};
use crate::protocol::api::list_groups::{GroupListing, ListGroupsRequest};
use crate::protocol::ErrorCode;

pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    pub async fn connect(config: ClientConfig) -> Result<Admin, ClientError> {
        Ok(Admin { cluster: Arc::new(Cluster::connect(config).await?) })
    }

    pub fn from_cluster(cluster: Arc<Cluster>) -> Admin {
        Admin { cluster }
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        let request = CreateTopicsRequest {
            topics: vec![NewTopic { name: name.to_string(), partitions, replication_factor, configs }],
            validate_only: false,
        };
        let connection = self.cluster.any_connection().await?;
        let response = connection.call(&request, self.cluster.config().request_timeout).await?;
        self.cluster.invalidate(name);
        single_result(response.topics)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let connection = self.cluster.any_connection().await?;
        let request = DeleteTopicsRequest { names: vec![name.to_string()] };
        let response = connection.call(&request, self.cluster.config().request_timeout).await?;
        self.cluster.invalidate(name);
        single_result(response.topics)
    }

    /// Topic names, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>, ClientError> {
        let metadata = self.cluster.refresh(None).await?;
        let mut names: Vec<String> = metadata.topics.into_iter().map(|topic| topic.name).collect();
        names.sort();
        Ok(names)
    }

    /// Descriptions of the named topics (all when `None`); unknown topics carry their error code. Each
    /// partition's offsets are its leader's (a follower's high watermark lags): the leaders are asked too.
    pub async fn describe_topics(&self, names: Option<Vec<String>>) -> Result<Vec<TopicDescription>, ClientError> {
        let timeout = self.cluster.config().request_timeout;
        let connection = self.cluster.any_connection().await?;
        let mut topics = connection.call(&DescribeTopicsRequest { names }, timeout).await?.topics;
        let found: Vec<String> =
            topics.iter().filter(|t| t.error_code == ErrorCode::NONE).map(|t| t.name.clone()).collect();
        let leaders: std::collections::BTreeSet<crate::protocol::NodeId> =
            topics.iter().flat_map(|t| &t.partitions).map(|p| p.leader).filter(|leader| *leader >= 0).collect();
        for leader in leaders {
            let answer = match self.cluster.connection_to_node(leader).await {
                Ok(connection) => connection.call(&DescribeTopicsRequest { names: Some(found.clone()) }, timeout).await,
                Err(error) => Err(error),
            };
            let Ok(answer) = answer else { continue };
            for theirs in answer.topics {
                let Some(ours) = topics.iter_mut().find(|t| t.name == theirs.name) else { continue };
                for p in theirs.partitions.into_iter().filter(|p| p.leader == leader) {
                    if let Some(mine) =
                        ours.partitions.iter_mut().find(|m| m.partition == p.partition && m.leader == leader)
                    {
                        mine.log_start_offset = p.log_start_offset;
                        mine.high_watermark = p.high_watermark;
                        mine.log_end_offset = p.log_end_offset;
                        mine.size_bytes = p.size_bytes;
                    }
                }
            }
        }
        Ok(topics)
    }

    /// One topic's description, or its error.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let topic = self.describe_topics(Some(vec![name.to_string()])).await?.into_iter().next();
        match topic {
            Some(topic) if topic.error_code == ErrorCode::NONE => Ok(topic),
            Some(topic) => Err(ClientError::broker(topic.error_code, topic.error_message)),
            None => Err(ClientError::Protocol("empty DescribeTopics response".into())),
        }
    }
}

impl Admin {
    /// Every group of the cluster: each broker coordinates some, so every live broker is asked (a broker
    /// that does not answer fails the listing rather than leaving its groups out silently).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let metadata = self.cluster.refresh(Some(vec![])).await?;
        let timeout = self.cluster.config().request_timeout;
        let mut groups: Vec<GroupListing> = Vec::new();
        for broker in metadata.brokers {
            let connection = self.cluster.connection_to_node(broker.node_id).await?;
            groups.extend(connection.call(&ListGroupsRequest {}, timeout).await?.groups);
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(groups)
    }

    /// Members, assignments, committed offsets and lag of a group.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription, ClientError> {
        let coordinator = super::group::find_coordinator(&self.cluster, group_id).await?;
        let request = DescribeGroupsRequest { group_ids: vec![group_id.to_string()] };
        let response = coordinator.call(&request, self.cluster.config().request_timeout).await?;
        let group = response
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty DescribeGroups response".into()))?;
        if group.error_code == ErrorCode::UNKNOWN_MEMBER_ID {
            return Err(ClientError::broker(group.error_code, Some(format!("group '{group_id}' does not exist"))));
        }
        if group.error_code != ErrorCode::NONE {
            let message = format!("group '{group_id}': the broker asked is not its coordinator (yet); retry");
            return Err(ClientError::broker(group.error_code, Some(message)));
        }
        Ok(group)
    }

    /// Sets a group's committed offsets; refused with GROUP_NOT_EMPTY while the group has members.
    pub async fn commit_group_offsets(
        &self,
        group_id: &str,
        offsets: Vec<((String, u32), u64)>,
    ) -> Result<(), ClientError> {
        let coordinator = super::group::find_coordinator(&self.cluster, group_id).await?;
        let request = super::group::commit_request(group_id, "", -1, offsets);
        let response = coordinator.call(&request, self.cluster.config().request_timeout).await?;
        if response.error_code != ErrorCode::NONE {
            return Err(ClientError::broker(response.error_code, response.error_message));
        }
        Ok(())
    }

    /// Changes a topic's configs: `set` overrides keys, `delete` returns keys to the broker default.
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<(), ClientError> {
        let connection = self.cluster.any_connection().await?;
        let request = AlterConfigsRequest { topic: topic.to_string(), set, delete };
        let response = connection.call(&request, self.cluster.config().request_timeout).await?;
        if response.error_code != ErrorCode::NONE {
            return Err(ClientError::broker(response.error_code, response.error_message));
        }
        Ok(())
    }

    /// Creates a SCRAM-SHA-256 user, or replaces its password. The salted keys are derived here: the
    /// password never leaves this process.
    pub async fn upsert_user(&self, name: &str, password: &str) -> Result<(), ClientError> {
        let credential = ScramCredential::new(password, &auth::random_bytes(16), scram::ITERATIONS_MIN)
            .map_err(|error| ClientError::Config(error.to_string()))?;
        let upsert = vec![UserUpsert { name: name.to_string(), mechanism: scram::MECHANISM.to_string(), credential }];
        self.alter_users(AlterUsersRequest { upsert, delete: vec![] }).await
    }

    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        self.alter_users(AlterUsersRequest { upsert: vec![], delete: vec![name.to_string()] }).await
    }

    pub async fn list_users(&self) -> Result<Vec<UserDescription>, ClientError> {
        let connection = self.cluster.any_connection().await?;
        Ok(connection.call(&DescribeUsersRequest {}, self.cluster.config().request_timeout).await?.users)
    }

    async fn alter_users(&self, request: AlterUsersRequest) -> Result<(), ClientError> {
        let connection = self.cluster.any_connection().await?;
        let response = connection.call(&request, self.cluster.config().request_timeout).await?;
        match response.results.into_iter().find(|result| result.error_code != ErrorCode::NONE) {
            Some(failed) => Err(ClientError::broker(failed.error_code, failed.error_message)),
            None => Ok(()),
        }
    }

    /// Adds access control entries (authorization must be on for them to matter).
    pub async fn create_acls(&self, bindings: Vec<AclBinding>) -> Result<(), ClientError> {
        let connection = self.cluster.any_connection().await?;
        let response =
            connection.call(&CreateAclsRequest { creations: bindings }, self.cluster.config().request_timeout).await?;
        acl_results(response)
    }

    /// Removes exactly these entries.
    pub async fn delete_acls(&self, bindings: Vec<AclBinding>) -> Result<(), ClientError> {
        let connection = self.cluster.any_connection().await?;
        let response =
            connection.call(&DeleteAclsRequest { deletions: bindings }, self.cluster.config().request_timeout).await?;
        acl_results(response)
    }

    /// Every entry, or one principal's (`User:alice`).
    pub async fn list_acls(&self, principal: Option<String>) -> Result<Vec<AclBinding>, ClientError> {
        let connection = self.cluster.any_connection().await?;
        Ok(connection.call(&DescribeAclsRequest { principal }, self.cluster.config().request_timeout).await?.acls)
    }

    /// The cluster this admin talks to.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}

fn acl_results(response: AclsResponse) -> Result<(), ClientError> {
    match response.results.into_iter().find(|result| result.error_code != ErrorCode::NONE) {
        Some(failed) => Err(ClientError::broker(failed.error_code, failed.error_message)),
        None => Ok(()),
    }
}

fn single_result(results: Vec<TopicResult>) -> Result<(), ClientError> {
    let result = results.into_iter().next().ok_or_else(|| ClientError::Protocol("empty response".into()))?;
    if result.error_code == ErrorCode::NONE {
        Ok(())
    } else {
        Err(ClientError::broker(result.error_code, result.error_message))
    }
}
