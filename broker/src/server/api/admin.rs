//! CreateTopics, DeleteTopics, DescribeTopics, AlterConfigs, DescribeCluster, InitProducerId and the users
//! APIs.

use oxbow::protocol::api::alter_configs::{AlterConfigsRequest, AlterConfigsResponse};
use oxbow::protocol::api::create_topics::{CreateTopicsRequest, CreateTopicsResponse, TopicResult};
use oxbow::protocol::api::delete_topics::{DeleteTopicsRequest, DeleteTopicsResponse};
use oxbow::protocol::api::describe_topics::{
    ConfigEntry, DescribeTopicsRequest, DescribeTopicsResponse, PartitionDescription, TopicDescription,
};
use oxbow::protocol::{CodedError, ErrorCode};

use oxbow::protocol::api::describe_cluster::{ClusterBroker, DescribeClusterRequest, DescribeClusterResponse};
use oxbow::protocol::api::init_producer_id::{InitProducerIdRequest, InitProducerIdResponse};

use oxbow::auth::scram;
use oxbow::protocol::api::users::{
    AlterUsersRequest, AlterUsersResponse, DescribeUsersRequest, DescribeUsersResponse, UserDescription, UserResult,
};

use oxbow::protocol::api::acls::{
    AclResult, AclsResponse, CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest, DescribeAclsResponse,
    Operation, ResourceType,
};

use super::RequestScope;
use super::{Access, Encoded};
use crate::cluster::{ControllerCall, ControllerReply};

pub async fn create_topics(
    request: CreateTopicsRequest,
    scope: &RequestScope,
    access: &Access,
) -> Result<Encoded, CodedError> {
    let registry = &scope.context.registry;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let permitted = if access.may_create_topic(&topic.name) {
            Ok(())
        } else {
            access.require(ResourceType::Topic, &topic.name, Operation::Create)
        };
        let result = match permitted.and_then(|()| refuse_internal(&topic.name, "created")) {
            Err(error) => Err(error),
            Ok(()) => {
                registry
                    .create_topic(
                        &topic.name,
                        topic.partitions,
                        topic.replication_factor,
                        topic.configs,
                        request.validate_only,
                    )
                    .await
            }
        };
        topics.push(topic_result(topic.name, result));
    }
    Ok(Encoded::new(&CreateTopicsResponse { topics }))
}

pub async fn delete_topics(
    request: DeleteTopicsRequest,
    scope: &RequestScope,
    access: &Access,
) -> Result<Encoded, CodedError> {
    let registry = &scope.context.registry;
    let mut topics = Vec::with_capacity(request.names.len());
    for name in request.names {
        let result = match access.require(ResourceType::Topic, &name, Operation::Delete) {
            Ok(()) => registry.delete_topic(&name).await,
            Err(error) => Err(error),
        };
        topics.push(topic_result(name, result));
    }
    Ok(Encoded::new(&DeleteTopicsResponse { topics }))
}

pub async fn describe_topics(
    request: DescribeTopicsRequest,
    scope: &RequestScope,
    access: &Access,
) -> Result<Encoded, CodedError> {
    let context = &scope.context;
    let registry = &context.registry;
    let names = request.names.unwrap_or_else(|| {
        registry
            .topics()
            .iter()
            .map(|topic| topic.name.clone())
            .filter(|name| access.may(ResourceType::Topic, name, Operation::Describe))
            .collect()
    });
    let topics = names
        .into_iter()
        .map(|name| match registry.topic(&name) {
            _ if !access.may(ResourceType::Topic, &name, Operation::Describe) => TopicDescription {
                error_message: Some(format!("{} may not describe topic '{name}'", access.principal)),
                name,
                error_code: ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                internal: false,
                configs: vec![],
                partitions: vec![],
            },
            None => TopicDescription {
                error_message: Some(format!("topic '{name}' does not exist")),
                name,
                error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                internal: false,
                configs: vec![],
                partitions: vec![],
            },
            Some(topic) => TopicDescription {
                internal: crate::topic::is_internal(&name),
                name,
                error_code: ErrorCode::NONE,
                error_message: None,
                configs: topic
                    .config
                    .entries()
                    .into_iter()
                    .map(|(name, value, is_default)| ConfigEntry { name, value, is_default })
                    .collect(),
                partitions: topic
                    .metadata
                    .partitions
                    .iter()
                    .zip(&topic.local)
                    .enumerate()
                    .map(|(partition_idx, (p, handle))| {
                        // Offsets as this broker's replica knows them (the leader's are the ones that count).
                        let offsets = handle.as_ref().map(|handle| *handle.offsets.borrow()).unwrap_or_default();
                        PartitionDescription {
                            partition: partition_idx as u32,
                            leader: p.leader,
                            replicas: p.replicas.clone(),
                            isr: p.isr.clone(),
                            log_start_offset: offsets.log_start_offset,
                            high_watermark: offsets.high_watermark,
                            log_end_offset: offsets.log_end_offset,
                            size_bytes: offsets.size_bytes,
                        }
                    })
                    .collect(),
            },
        })
        .collect();
    Ok(Encoded::new(&DescribeTopicsResponse { topics }))
}

pub async fn alter_configs(
    request: AlterConfigsRequest,
    scope: &RequestScope,
    access: &Access,
) -> Result<Encoded, CodedError> {
    let permitted = access.require(ResourceType::Topic, &request.topic, Operation::Alter);
    let result = match permitted.and_then(|()| refuse_internal(&request.topic, "altered")) {
        Err(error) => Err(error),
        Ok(()) => scope.context.registry.alter_topic(&request.topic, request.set, request.delete).await,
    };
    Ok(Encoded::new(&match result {
        Ok(_) => AlterConfigsResponse { error_code: ErrorCode::NONE, error_message: None },
        Err(error) => AlterConfigsResponse { error_code: error.code, error_message: Some(error.message) },
    }))
}

/// Internal topics (`__` names) belong to the brokers: clients neither create, alter nor delete them (their
/// settings, such as `__consumer_offsets` being compacted, are what the brokers rely on).
fn refuse_internal(name: &str, what: &str) -> Result<(), CodedError> {
    if crate::topic::is_internal(name) {
        return Err(CodedError::new(
            ErrorCode::INVALID_REQUEST,
            format!("'{name}': topics whose names start with '__' are internal and cannot be {what} by clients"),
        ));
    }
    Ok(())
}

fn topic_result(name: String, result: Result<(), CodedError>) -> TopicResult {
    match result {
        Ok(()) => TopicResult { name, error_code: ErrorCode::NONE, error_message: None },
        Err(error) => TopicResult { name, error_code: error.code, error_message: Some(error.message) },
    }
}

pub async fn describe_cluster(_request: DescribeClusterRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let cluster = scope.context.registry.cluster();
    let state = cluster.state();
    let brokers = state
        .brokers
        .iter()
        .map(|(node_id, broker)| ClusterBroker {
            node_id: *node_id,
            host: broker.host.clone(),
            port: broker.port,
            fenced: broker.fenced,
            leaders: state.topics.values().flat_map(|t| &t.partitions).filter(|p| p.leader == *node_id).count() as u32,
        })
        .collect();
    Ok(Encoded::new(&DescribeClusterResponse {
        controller_id: cluster.controller_leader().unwrap_or(-1),
        voters: cluster.voters().to_vec(),
        brokers,
    }))
}

pub async fn init_producer_id(_request: InitProducerIdRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let cluster = scope.context.registry.cluster();
    let reply = cluster.call_controller(ControllerCall::AllocateProducerId, std::time::Duration::from_secs(10)).await;
    let response = match reply {
        Ok(ControllerReply::ProducerId(producer_id)) => {
            InitProducerIdResponse { error_code: ErrorCode::NONE, error_message: None, producer_id, producer_epoch: 0 }
        }
        Ok(ControllerReply::Error(error)) => InitProducerIdResponse {
            error_code: error.code,
            error_message: Some(error.message),
            producer_id: -1,
            producer_epoch: -1,
        },
        other => InitProducerIdResponse {
            error_code: ErrorCode::NOT_CONTROLLER,
            error_message: Some(format!("no producer id from the controller: {other:?}")),
            producer_id: -1,
            producer_epoch: -1,
        },
    };
    Ok(Encoded::new(&response))
}

/// Creates, replaces or deletes SCRAM users, one metadata command each; answers once each change is applied
/// on this broker.
pub async fn alter_users(request: AlterUsersRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let registry = &scope.context.registry;
    let mut results = Vec::with_capacity(request.upsert.len() + request.delete.len());
    let calls = request
        .upsert
        .into_iter()
        .map(|user| {
            let check = if user.mechanism == scram::MECHANISM {
                Ok(())
            } else {
                Err(CodedError::new(
                    ErrorCode::UNSUPPORTED_SASL_MECHANISM,
                    format!("mechanism '{}' is not offered", user.mechanism),
                ))
            };
            (user.name, Some(user.credential), check)
        })
        .chain(request.delete.into_iter().map(|name| (name, None, Ok(()))));
    for (name, credential, check) in calls {
        let result = match check {
            Ok(()) => registry.controller(ControllerCall::AlterUser { name: name.clone(), credential }).await.map(drop),
            Err(error) => Err(error),
        };
        results.push(match result {
            Ok(()) => UserResult { name, error_code: ErrorCode::NONE, error_message: None },
            Err(error) => UserResult { name, error_code: error.code, error_message: Some(error.message) },
        });
    }
    Ok(Encoded::new(&AlterUsersResponse { results }))
}

/// User names and how their credentials are kept (never the keys).
pub async fn describe_users(_request: DescribeUsersRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let state = scope.context.registry.cluster().state();
    let users = state
        .users
        .iter()
        .map(|(name, user)| UserDescription {
            name: name.clone(),
            mechanism: user.mechanism.clone(),
            iterations: user.credential.iterations,
        })
        .collect();
    Ok(Encoded::new(&DescribeUsersResponse { users }))
}

pub async fn create_acls(request: CreateAclsRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    alter_acls(request.creations, true, scope).await
}

pub async fn delete_acls(request: DeleteAclsRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    alter_acls(request.deletions, false, scope).await
}

/// One metadata command per binding; each answered once applied on this broker.
async fn alter_acls(
    bindings: Vec<oxbow::protocol::api::acls::AclBinding>,
    create: bool,
    scope: &RequestScope,
) -> Result<Encoded, CodedError> {
    let mut results = Vec::with_capacity(bindings.len());
    for binding in bindings {
        let checked = if create {
            crate::security::acl::validate(&binding)
                .map_err(|message| CodedError::new(ErrorCode::INVALID_REQUEST, message))
        } else {
            Ok(())
        };
        let result = match checked {
            Ok(()) => scope.context.registry.controller(ControllerCall::AlterAcl { binding, create }).await.map(drop),
            Err(error) => Err(error),
        };
        results.push(match result {
            Ok(()) => AclResult { error_code: ErrorCode::NONE, error_message: None },
            Err(error) => AclResult { error_code: error.code, error_message: Some(error.message) },
        });
    }
    Ok(Encoded::new(&AclsResponse { results }))
}

pub async fn describe_acls(request: DescribeAclsRequest, scope: &RequestScope) -> Result<Encoded, CodedError> {
    let state = scope.context.registry.cluster().state();
    let acls = state
        .acls
        .iter()
        .filter(|acl| request.principal.as_ref().is_none_or(|principal| acl.principal == *principal))
        .cloned()
        .collect();
    Ok(Encoded::new(&DescribeAclsResponse { acls }))
}
