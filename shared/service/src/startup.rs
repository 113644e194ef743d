//! Start-up steps every service shares: its topics (and their dead-letter topics) created when missing, a
//! client cluster handle, and announcing the bound HTTP address; plus publishing with acknowledgement.

use std::sync::Arc;

use oxbow::client::{Admin, ClientConfig, ClientError, Cluster, Producer, ProducerRecord, RecordMetadata};
use oxbow::protocol::ErrorCode;

use crate::config::CommonConfig;
use crate::subscription::dead_letter_topic;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The start of every service: metrics, then `topics` and the dead-letter topics of `consumed` (one
/// partition each) created when missing, then a cluster handle for the service's clients.
pub async fn connect(common: &CommonConfig, topics: &[&str], consumed: &[&str]) -> anyhow::Result<Arc<Cluster>> {
    crate::telemetry::init_metrics();
    let broker = &common.broker;
    let client = broker.client_config()?;
    ensure_topics(&client, topics, broker.partitions, broker.replication_factor).await?;
    let dead_letters: Vec<String> = consumed.iter().map(|topic| dead_letter_topic(topic)).collect();
    let dead_letters: Vec<&str> = dead_letters.iter().map(String::as_str).collect();
    ensure_topics(&client, &dead_letters, 1, broker.replication_factor).await?;
    Ok(Arc::new(Cluster::connect(client).await?))
}

/// Reports the bound address to the caller and the log.
pub fn announce(service: &str, addr: std::net::SocketAddr, on_listening: impl FnOnce(std::net::SocketAddr)) {
    on_listening(addr);
    tracing::info!(%addr, service, "listening");
}

/// Creates topics that are missing (an existing topic is fine, and is not created again: a service with
/// least privilege may see its topics without the right to create them).
pub async fn ensure_topics(
    client: &ClientConfig,
    topics: &[&str],
    partitions: u32,
    replication_factor: u16,
) -> anyhow::Result<()> {
    let admin = Admin::connect(client.clone()).await?;
    for topic in topics {
        if admin.describe_topic(topic).await.is_ok() {
            continue;
        }
        match admin.create_topic(topic, partitions, replication_factor, Default::default()).await {
            Ok(()) => tracing::info!(topic, "created topic"),
            Err(error) if error.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => {}
            Err(error) => return Err(anyhow::anyhow!("creating topic {topic}: {error}")),
        }
    }
    Ok(())
}

/// Sends a record and waits for its acknowledgement, counting it in `oxbow_records_out_total`.
pub async fn publish(producer: &Producer, record: ProducerRecord) -> Result<RecordMetadata, ClientError> {
    let topic = record.topic.clone();
    let metadata = producer.send_and_wait(record).await?;
    metrics::counter!("oxbow_records_out_total", "topic" => topic).increment(1);
    Ok(metadata)
}
