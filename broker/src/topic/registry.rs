//! The topic registry: creates, loads and deletes topics, and hands out partition actors.
//!
//! On disk: `<data_dir>/<topic>/topic.meta` (MessagePack) and `<data_dir>/<topic>/<partition>/` with the
//! segments. A topic is created in `.creating-<topic>` and renamed into place; a deleted topic is renamed to
//! `.deleted-<topic>-<ms>` before removal. Leftovers of either are removed on start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use oxbow::protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::config::{validate_topic_name, TopicConfig};
use crate::config::BrokerConfig;
use crate::partition::log::{sync_dir, Log};
use crate::partition::{LogOffsets, PartitionActor, PartitionTimers, Shutdown, UpdateConfig};

const META_FILE: &str = "topic.meta";

/// Topics whose names start with `__` belong to the broker (for example `__consumer_offsets`): clients may
/// read them but not write or delete them.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}
const CREATING_PREFIX: &str = ".creating-";
const DELETED_PREFIX: &str = ".deleted-";

#[derive(Clone)]
pub struct PartitionHandle {
    pub addr: Addr<PartitionActor>,
    pub offsets: watch::Receiver<LogOffsets>,
}

pub struct Topic {
    pub name: String,
    pub replication_factor: u16,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionHandle>,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TopicError {
    pub code: ErrorCode,
    pub message: String,
}

impl TopicError {
    fn new(code: ErrorCode, message: impl Into<String>) -> TopicError {
        TopicError { code, message: message.into() }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicMeta {
    name: String,
    partitions: u32,
    replication_factor: u16,
    configs: BTreeMap<String, String>,
}

pub struct Registry {
    config: Arc<BrokerConfig>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    /// Serializes creates, alters and deletes.
    admin: tokio::sync::Mutex<()>,
    timers: PartitionTimers,
}

impl Registry {
    /// Loads every topic under the data directory, recovering each partition's log.
    pub fn open(config: Arc<BrokerConfig>, arbiters: Vec<ArbiterHandle>) -> anyhow::Result<Registry> {
        use anyhow::Context as _;
        assert!(!arbiters.is_empty());
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
        let registry = Registry {
            config: config.clone(),
            topics: RwLock::new(HashMap::new()),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            admin: tokio::sync::Mutex::new(()),
            timers: PartitionTimers {
                retention_check_interval: Duration::from_millis(config.log.retention_check_interval_ms.max(1)),
                cleaner_interval: Duration::from_millis(config.log.cleaner_interval_ms.max(1)),
                fault: std::env::var("OXBOW_FAULT").ok(),
            },
        };
        for entry in std::fs::read_dir(&config.data_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(CREATING_PREFIX) || name.starts_with(DELETED_PREFIX) {
                tracing::info!(path = %path.display(), "removing the leftover of an interrupted create or delete");
                std::fs::remove_dir_all(&path)?;
                continue;
            }
            if !path.join(META_FILE).exists() {
                continue;
            }
            let meta: TopicMeta = rmp_serde::from_slice(&std::fs::read(path.join(META_FILE))?)
                .with_context(|| format!("reading {}", path.join(META_FILE).display()))?;
            let topic_config = TopicConfig::resolve(&config.log, meta.configs.clone(), config.frame_bytes_max)
                .map_err(|error| anyhow::anyhow!("topic {}: {error}", meta.name))?;
            let topic = registry.start_topic(&path, &meta, topic_config)?;
            tracing::info!(topic = %meta.name, partitions = meta.partitions, "loaded topic");
            registry.topics.write().expect("registry lock").insert(meta.name.clone(), Arc::new(topic));
        }
        sync_dir(&config.data_dir)?;
        Ok(registry)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().expect("registry lock").get(name).cloned()
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<PartitionHandle> {
        self.topic(topic)?.partitions.get(partition as usize).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<_> = self.topics.read().expect("registry lock").values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    pub fn broker_config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Validates a new topic; with `validate_only` nothing is created.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        validate_topic_name(name).map_err(|message| TopicError::new(ErrorCode::INVALID_TOPIC_NAME, message))?;
        if partitions == 0 || partitions > self.config.partitions_max {
            return Err(TopicError::new(
                ErrorCode::INVALID_PARTITIONS,
                format!("partitions must be in 1..={}, got {partitions}", self.config.partitions_max),
            ));
        }
        if replication_factor != 1 {
            return Err(TopicError::new(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!("replication factor {replication_factor} is larger than the 1 live broker"),
            ));
        }
        let topic_config = TopicConfig::resolve(&self.config.log, configs.clone(), self.config.frame_bytes_max)
            .map_err(|message| TopicError::new(ErrorCode::INVALID_CONFIG, message))?;
        let _admin = self.admin.lock().await;
        if self.topic(name).is_some() {
            return Err(TopicError::new(ErrorCode::TOPIC_ALREADY_EXISTS, format!("topic '{name}' already exists")));
        }
        if validate_only {
            return Ok(());
        }
        let meta = TopicMeta { name: name.to_string(), partitions, replication_factor, configs };
        let topic = self.write_and_start(&meta, topic_config).map_err(|error| {
            tracing::error!(topic = name, %error, "creating topic failed");
            TopicError::new(ErrorCode::STORAGE_ERROR, format!("creating topic '{name}' failed: {error}"))
        })?;
        self.topics.write().expect("registry lock").insert(name.to_string(), Arc::new(topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(())
    }

    /// Changes a topic's configs at runtime: `set` overrides keys, `delete` returns keys to the broker
    /// default. Validated like at creation, persisted, then handed to every partition actor.
    pub async fn alter_topic(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<TopicConfig, TopicError> {
        let _admin = self.admin.lock().await;
        let topic = self.topic(name).ok_or_else(|| {
            TopicError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, format!("topic '{name}' does not exist"))
        })?;
        let mut overrides = topic.config.overrides.clone();
        for key in delete {
            overrides.remove(&key);
        }
        overrides.extend(set);
        let config = TopicConfig::resolve(&self.config.log, overrides.clone(), self.config.frame_bytes_max)
            .map_err(|message| TopicError::new(ErrorCode::INVALID_CONFIG, message))?;
        let meta = TopicMeta {
            name: name.to_string(),
            partitions: topic.partitions.len() as u32,
            replication_factor: topic.replication_factor,
            configs: overrides,
        };
        let path = self.config.data_dir.join(name);
        write_meta(&path, &meta).map_err(|error| {
            TopicError::new(ErrorCode::STORAGE_ERROR, format!("saving configs of '{name}' failed: {error}"))
        })?;
        for partition in &topic.partitions {
            let _ = partition.addr.send(UpdateConfig(config.clone())).await;
        }
        let updated = Topic {
            name: topic.name.clone(),
            replication_factor: topic.replication_factor,
            config: config.clone(),
            partitions: topic.partitions.clone(),
        };
        self.topics.write().expect("registry lock").insert(name.to_string(), Arc::new(updated));
        tracing::info!(topic = name, "altered topic configs");
        Ok(config)
    }

    /// Stops the topic's partition actors and removes its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        if is_internal(name) {
            return Err(TopicError::new(
                ErrorCode::INVALID_REQUEST,
                format!("'{name}' is an internal topic and cannot be deleted"),
            ));
        }
        let _admin = self.admin.lock().await;
        let topic = self.topics.write().expect("registry lock").remove(name).ok_or_else(|| {
            TopicError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, format!("topic '{name}' does not exist"))
        })?;
        for partition in &topic.partitions {
            // An actor that already stopped has nothing left to flush.
            let _ = partition.addr.send(Shutdown).await;
        }
        let storage_error = |error: std::io::Error| {
            TopicError::new(ErrorCode::STORAGE_ERROR, format!("deleting topic '{name}' failed: {error}"))
        };
        let path = self.config.data_dir.join(name);
        let doomed = self.config.data_dir.join(format!("{DELETED_PREFIX}{name}-{}", crate::now_ms()));
        std::fs::rename(&path, &doomed).map_err(storage_error)?;
        sync_dir(&self.config.data_dir).map_err(storage_error)?;
        std::fs::remove_dir_all(&doomed).map_err(storage_error)?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// fsyncs and stops every partition actor.
    pub async fn shutdown(&self) {
        let topics: Vec<_> = self.topics.write().expect("registry lock").drain().map(|(_, topic)| topic).collect();
        for topic in topics {
            for (partition_idx, partition) in topic.partitions.iter().enumerate() {
                match partition.addr.send(Shutdown).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::error!(topic = %topic.name, partition = partition_idx, %error, "final fsync failed")
                    }
                    Err(_) => {}
                }
            }
        }
    }

    fn write_and_start(&self, meta: &TopicMeta, topic_config: TopicConfig) -> std::io::Result<Topic> {
        let staging = self.config.data_dir.join(format!("{CREATING_PREFIX}{}", meta.name));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir_all(&staging)?;
        write_meta(&staging, meta)?;
        for partition in 0..meta.partitions {
            std::fs::create_dir(staging.join(partition.to_string()))?;
        }
        sync_dir(&staging)?;
        let path = self.config.data_dir.join(&meta.name);
        std::fs::rename(&staging, &path)?;
        sync_dir(&self.config.data_dir)?;
        self.start_topic(&path, meta, topic_config).map_err(std::io::Error::other)
    }

    fn start_topic(&self, path: &Path, meta: &TopicMeta, topic_config: TopicConfig) -> anyhow::Result<Topic> {
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for partition in 0..meta.partitions {
            let dir: PathBuf = path.join(partition.to_string());
            let log = Log::open(&dir, topic_config.log_config())
                .map_err(|error| anyhow::anyhow!("opening {}: {error}", dir.display()))?;
            let (actor, offsets) =
                PartitionActor::new(meta.name.clone(), partition, log, topic_config.clone(), self.timers.clone());
            let arbiter = &self.arbiters[self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len()];
            let addr = PartitionActor::start_in_arbiter(arbiter, move |_| actor);
            partitions.push(PartitionHandle { addr, offsets });
        }
        Ok(Topic {
            name: meta.name.clone(),
            replication_factor: meta.replication_factor,
            config: topic_config,
            partitions,
        })
    }
}

/// Writes `topic.meta` atomically: a temporary file, fsync, rename, fsync the directory.
fn write_meta(topic_dir: &Path, meta: &TopicMeta) -> std::io::Result<()> {
    let bytes = rmp_serde::to_vec_named(meta).map_err(std::io::Error::other)?;
    let temporary = topic_dir.join(format!("{META_FILE}.tmp"));
    std::fs::write(&temporary, bytes)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, topic_dir.join(META_FILE))?;
    sync_dir(topic_dir)
}
