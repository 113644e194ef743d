//! Metadata: this broker, and every requested topic with its partitions (all led by this broker).

use oxbow::protocol::api::metadata::{
    BrokerMetadata, MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata,
};
use oxbow::protocol::{CodedError, ErrorCode};

use oxbow::protocol::api::acls::{Operation, ResourceType};

use super::RequestScope;
use super::{Access, Encoded};
use crate::cluster::metadata::TopicState;

/// Topics the principal may not describe are left out of a full listing, and answer
/// TOPIC_AUTHORIZATION_FAILED when named; auto-creation needs the right to create.
pub async fn handle(request: MetadataRequest, scope: &RequestScope, access: &Access) -> Result<Encoded, CodedError> {
    let context = &scope.context;
    let registry = &context.registry;
    let cluster = registry.cluster();
    if !cluster.lease.is_valid() {
        // Out of touch with the controller (starting, paused, or cut off): this broker's view may be stale,
        // so send the client to another broker instead of to leaders that may have been replaced.
        return Err(CodedError::new(
            ErrorCode::BROKER_NOT_AVAILABLE,
            format!("broker {} is not in contact with the controller; ask another broker", cluster.node_id),
        ));
    }
    if let Some(names) = &request.topics {
        if context.config.auto_create_topics {
            for name in names {
                if !cluster.state().topics.contains_key(name)
                    && !crate::topic::is_internal(name)
                    && access.may_create_topic(name)
                {
                    let partitions = context.config.default_partitions;
                    if let Err(error) =
                        registry.create_topic(name, partitions, u16::MAX, Default::default(), false).await
                    {
                        tracing::debug!(topic = %name, %error, "auto-create failed");
                    }
                }
            }
        }
    }
    let state = cluster.state();
    let topics = match request.topics {
        None => state
            .topics
            .iter()
            .filter(|(name, _)| access.may(ResourceType::Topic, name, Operation::Describe))
            .map(|(name, topic)| describe(name, topic))
            .collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match state.topics.get(&name) {
                _ if !access.may(ResourceType::Topic, &name, Operation::Describe) => {
                    TopicMetadata { name, error_code: ErrorCode::TOPIC_AUTHORIZATION_FAILED, partitions: vec![] }
                }
                Some(topic) => describe(&name, topic),
                None => TopicMetadata { name, error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, partitions: vec![] },
            })
            .collect(),
    };
    let mut brokers: Vec<BrokerMetadata> = state
        .brokers
        .iter()
        .filter(|(_, broker)| !broker.fenced)
        .map(|(node_id, broker)| {
            let (host, port) = broker.address(context.external);
            BrokerMetadata { node_id: *node_id, host, port }
        })
        .collect();
    if !brokers.iter().any(|broker| broker.node_id == context.config.node_id) {
        brokers.push(BrokerMetadata {
            node_id: context.config.node_id,
            host: context.advertised_host.clone(),
            port: context.advertised_port,
        });
    }
    Ok(Encoded::new(&MetadataResponse { brokers, controller_id: cluster.controller_leader().unwrap_or(-1), topics }))
}

fn describe(name: &str, topic: &TopicState) -> TopicMetadata {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(partition, p)| PartitionMetadata {
            partition: partition as u32,
            error_code: if p.leader < 0 { ErrorCode::NOT_LEADER_OR_FOLLOWER } else { ErrorCode::NONE },
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
        })
        .collect();
    TopicMetadata { name: name.to_string(), error_code: ErrorCode::NONE, partitions }
}
