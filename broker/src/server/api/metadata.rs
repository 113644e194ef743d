//! Metadata: this broker, and every requested topic with its partitions (all led by this broker).

use oxbow::protocol::api::metadata::{
    BrokerMetadata, MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata,
};
use oxbow::protocol::ErrorCode;

use super::{ApiError, Encoded};
use crate::server::connection::RequestScope;
use crate::topic::Topic;

pub async fn handle(request: MetadataRequest, scope: &RequestScope) -> Result<Encoded, ApiError> {
    let context = &scope.context;
    let node_id = context.config.node_id;
    let registry = &context.registry;
    let topics = match request.topics {
        None => registry.topics().iter().map(|topic| describe(topic, node_id)).collect(),
        Some(names) => {
            let mut topics = Vec::with_capacity(names.len());
            for name in names {
                if registry.topic(&name).is_none() && context.config.auto_create_topics {
                    let partitions = context.config.default_partitions;
                    if let Err(error) = registry.create_topic(&name, partitions, 1, Default::default(), false).await {
                        if error.code != ErrorCode::TOPIC_ALREADY_EXISTS {
                            topics.push(TopicMetadata { name, error_code: error.code, partitions: vec![] });
                            continue;
                        }
                    }
                }
                match registry.topic(&name) {
                    Some(topic) => topics.push(describe(&topic, node_id)),
                    None => topics.push(TopicMetadata {
                        name,
                        error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        partitions: vec![],
                    }),
                }
            }
            topics
        }
    };
    Ok(Encoded::new(&MetadataResponse {
        brokers: vec![BrokerMetadata { node_id, host: context.advertised_host.clone(), port: context.advertised_port }],
        controller_id: node_id,
        topics,
    }))
}

fn describe(topic: &Topic, node_id: i32) -> TopicMetadata {
    let partitions = (0..topic.partitions.len() as u32)
        .map(|partition| PartitionMetadata {
            partition,
            error_code: ErrorCode::NONE,
            leader: node_id,
            leader_epoch: 0,
            replicas: vec![node_id],
            isr: vec![node_id],
        })
        .collect();
    TopicMetadata { name: topic.name.clone(), error_code: ErrorCode::NONE, partitions }
}
