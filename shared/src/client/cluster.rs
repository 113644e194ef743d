//! Cluster metadata and connections: bootstrap from any listed broker, learn brokers and partition
//! leaders from Metadata, keep one connection per broker, refresh on demand.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{ClientError, Connection, TlsSettings};
use crate::auth::Credentials;
use crate::protocol::api::metadata::{MetadataRequest, MetadataResponse, TopicMetadata};
use crate::protocol::{ErrorCode, NodeId};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    pub client_id: String,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// The largest response frame accepted; a larger one closes its connection.
    pub frame_bytes_max: usize,
    /// SCRAM-SHA-256 credentials; every connection authenticates with them before its first request.
    pub credentials: Option<Credentials>,
    /// Connect over TLS (and, with a client certificate, authenticate by it).
    pub tls: Option<TlsSettings>,
}

impl ClientConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> ClientConfig {
        ClientConfig {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: "oxbow-rust".to_string(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            frame_bytes_max: super::connection::RESPONSE_FRAME_BYTES_MAX_DEFAULT,
            credentials: None,
            tls: None,
        }
    }
}

/// Shared by producers, consumers and admins built from the same config.
pub struct Cluster {
    config: ClientConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    brokers: HashMap<NodeId, String>,
    topics: HashMap<String, TopicMetadata>,
    connections: HashMap<String, Connection>,
}

impl Cluster {
    /// Connects to the first reachable bootstrap server.
    pub async fn connect(config: ClientConfig) -> Result<Cluster, ClientError> {
        if config.bootstrap_servers.split(',').all(|s| s.trim().is_empty()) {
            return Err(ClientError::Config("bootstrap servers are empty".into()));
        }
        let cluster = Cluster { config, state: Mutex::default() };
        cluster.any_connection().await?;
        Ok(cluster)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A live connection to a known broker, else to a bootstrap server.
    pub async fn any_connection(&self) -> Result<Connection, ClientError> {
        let mut candidates: Vec<String> = {
            let state = self.state.lock().expect("cluster lock");
            state.brokers.values().cloned().collect()
        };
        candidates
            .extend(self.config.bootstrap_servers.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
        let mut last_error = None;
        for addr in candidates {
            match self.connection_to(&addr).await {
                Ok(connection) => return Ok(connection),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::Config("no broker address".into())))
    }

    /// The pooled connection to `addr`, reconnecting if it was lost.
    pub async fn connection_to(&self, addr: &str) -> Result<Connection, ClientError> {
        if let Some(connection) = self.state.lock().expect("cluster lock").connections.get(addr) {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
        }
        let connection = Connection::connect_with(
            addr,
            &self.config.client_id,
            self.config.connect_timeout,
            self.config.frame_bytes_max,
            self.config.tls.as_ref(),
        )
        .await?;
        if let Some(credentials) = &self.config.credentials {
            connection.authenticate(credentials, self.config.request_timeout.min(self.config.connect_timeout)).await?;
        }
        self.state.lock().expect("cluster lock").connections.insert(addr.to_string(), connection.clone());
        Ok(connection)
    }

    pub async fn connection_to_node(&self, node_id: NodeId) -> Result<Connection, ClientError> {
        let addr = self.state.lock().expect("cluster lock").brokers.get(&node_id).cloned();
        match addr {
            Some(addr) => self.connection_to(&addr).await,
            None => {
                self.refresh(None).await?;
                let addr = self.state.lock().expect("cluster lock").brokers.get(&node_id).cloned();
                let addr = addr.ok_or_else(|| {
                    ClientError::broker(ErrorCode::NOT_LEADER_OR_FOLLOWER, Some(format!("unknown broker {node_id}")))
                })?;
                self.connection_to(&addr).await
            }
        }
    }

    /// Fetches metadata (all topics when `topics` is `None`) and caches it. Asks the known brokers in turn
    /// until one answers: a broker out of touch with the cluster refuses (BROKER_NOT_AVAILABLE).
    pub async fn refresh(&self, topics: Option<Vec<String>>) -> Result<MetadataResponse, ClientError> {
        let request = MetadataRequest { topics };
        let mut candidates: Vec<String> = self.state.lock().expect("cluster lock").brokers.values().cloned().collect();
        candidates
            .extend(self.config.bootstrap_servers.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
        candidates.dedup();
        let mut last_error = None;
        let mut answer = None;
        for addr in candidates {
            let result = match self.connection_to(&addr).await {
                Ok(connection) => connection.call(&request, self.config.request_timeout).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(response) => {
                    answer = Some(response);
                    break;
                }
                Err(error) if error.is_retriable() => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        let response = match answer {
            Some(response) => response,
            None => return Err(last_error.unwrap_or_else(|| ClientError::Config("no broker address".into()))),
        };
        let mut state = self.state.lock().expect("cluster lock");
        for broker in &response.brokers {
            state.brokers.insert(broker.node_id, format!("{}:{}", broker.host, broker.port));
        }
        for topic in &response.topics {
            if topic.error_code == ErrorCode::NONE {
                state.topics.insert(topic.name.clone(), topic.clone());
            } else {
                state.topics.remove(&topic.name);
            }
        }
        Ok(response)
    }

    /// The cached metadata of a topic, fetched if unknown. Unknown topics are an error.
    pub async fn topic(&self, name: &str) -> Result<TopicMetadata, ClientError> {
        if let Some(topic) = self.state.lock().expect("cluster lock").topics.get(name) {
            return Ok(topic.clone());
        }
        let response = self.refresh(Some(vec![name.to_string()])).await?;
        let topic = response.topics.into_iter().find(|topic| topic.name == name);
        match topic {
            Some(topic) if topic.error_code == ErrorCode::NONE => Ok(topic),
            Some(topic) => Err(ClientError::broker(
                topic.error_code,
                Some(format!("topic '{name}': {}", topic.error_code.description())),
            )),
            None => Err(ClientError::broker(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                Some(format!("topic '{name}' does not exist")),
            )),
        }
    }

    /// Forgets a topic's cached metadata (after NOT_LEADER and similar errors).
    pub fn invalidate(&self, name: &str) {
        self.state.lock().expect("cluster lock").topics.remove(name);
    }

    /// The leader of a partition.
    pub async fn leader(&self, topic: &str, partition: u32) -> Result<NodeId, ClientError> {
        let metadata = self.topic(topic).await?;
        let partition_metadata = metadata.partitions.iter().find(|p| p.partition == partition).ok_or_else(|| {
            ClientError::broker(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                Some(format!("topic '{topic}' has no partition {partition}")),
            )
        })?;
        if partition_metadata.leader < 0 {
            return Err(ClientError::broker(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                Some(format!("{topic}/{partition} has no leader")),
            ));
        }
        Ok(partition_metadata.leader)
    }
}
