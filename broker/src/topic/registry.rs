//! The topic registry: the local replicas of the cluster's partitions. The cluster metadata says which
//! topics exist and which brokers hold each partition; `reconcile` makes this broker match it (starting and
//! stopping partition actors, telling each its role) every time the metadata changes. Creates, alters and
//! deletes go to the controller and return once this broker has applied them.
//!
//! On disk: `<data_dir>/<topic>/topic.meta` (name and topic id) and `<data_dir>/<topic>/<partition>/` with
//! the segments. A deleted topic is renamed to `.deleted-<topic>-<ms>` before removal; leftovers are removed
//! on start.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use oxbow::protocol::{CodedError, ErrorCode, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::config::{validate_topic_name, TopicConfig};
use crate::cluster::metadata::{ClusterState, TopicState};
use crate::cluster::{Cluster, ControllerCall, ControllerReply};
use crate::config::BrokerConfig;
use crate::durable::{sync_dir, write_atomic};
use crate::metrics::BrokerMetrics;
use crate::partition::log::Log;
use crate::partition::recovery;
use crate::partition::{
    GetRecoveryPoint, LogOffsets, PartitionActor, PartitionRole, PartitionTimers, SetRole, Shutdown, UpdateConfig,
};
use oxbow::protocol::api::describe_topics::DescribeTopicsRequest;

const META_FILE: &str = "topic.meta";
const DELETED_PREFIX: &str = ".deleted-";
/// How long an admin request waits for the controller.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Topics whose names start with `__` belong to the broker (for example `__consumer_offsets`): clients may
/// read them but not write or delete them.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

#[derive(Clone)]
pub struct PartitionHandle {
    pub addr: Addr<PartitionActor>,
    pub offsets: watch::Receiver<LogOffsets>,
}

/// A topic as this broker holds it.
pub struct Topic {
    pub name: String,
    pub id: u64,
    pub config: TopicConfig,
    /// The partitions' metadata (replicas, leader, in-sync set).
    pub metadata: TopicState,
    /// This broker's replicas: `None` where it holds no replica.
    pub local: Vec<Option<PartitionHandle>>,
}

impl Topic {
    pub fn n_partitions(&self) -> u32 {
        self.local.len() as u32
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicMeta {
    name: String,
    id: u64,
}

/// A partition this broker follows: where to fetch from, at which leader epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    pub topic: String,
    pub partition: u32,
    pub leader: NodeId,
    pub leader_epoch: i32,
}

pub struct Registry {
    config: Arc<BrokerConfig>,
    cluster: Arc<Cluster>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    timers: PartitionTimers,
    /// The last role sent to each local partition actor.
    roles: Mutex<HashMap<(String, u32), SetRole>>,
    metrics: Arc<BrokerMetrics>,
    /// Recovery points read at start and not yet used by a partition (kept in the file until they are).
    recovery_points: Mutex<recovery::Points>,
    /// What the recovery points file holds now (an unchanged set is not written again).
    points_written: tokio::sync::Mutex<recovery::Points>,
}

impl Registry {
    pub fn open(
        config: Arc<BrokerConfig>,
        arbiters: Vec<ArbiterHandle>,
        cluster: Arc<Cluster>,
        metrics: Arc<BrokerMetrics>,
    ) -> anyhow::Result<Registry> {
        use anyhow::Context as _;
        assert!(!arbiters.is_empty());
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
        for entry in std::fs::read_dir(&config.data_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(DELETED_PREFIX) || name.starts_with(".creating-") {
                tracing::info!(path = %entry.path().display(), "removing the leftover of an interrupted delete");
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        sync_dir(&config.data_dir)?;
        let recovery_points = recovery::load(&config.data_dir);
        Ok(Registry {
            timers: PartitionTimers {
                retention_check_interval: Duration::from_millis(config.log.retention_check_interval_ms.max(1)),
                cleaner_interval: Duration::from_millis(config.log.cleaner_interval_ms.max(1)),
                fault: std::env::var("OXBOW_FAULT").ok(),
                fsync_seconds: metrics.fsync_seconds.clone(),
            },
            metrics,
            config,
            cluster,
            topics: RwLock::new(HashMap::new()),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            roles: Mutex::default(),
            points_written: tokio::sync::Mutex::new(recovery_points.clone()),
            recovery_points: Mutex::new(recovery_points),
        })
    }

    /// Rewrites the recovery points file from every local partition's latest point (and the points of
    /// partitions not started yet).
    pub async fn checkpoint_recovery_points(&self) -> std::io::Result<()> {
        let mut points = self.recovery_points.lock().expect("points lock").clone();
        let partitions: Vec<((String, u32), PartitionHandle)> =
            self.topics
                .read()
                .expect("registry lock")
                .values()
                .flat_map(|topic| {
                    topic.local.iter().enumerate().filter_map(|(idx, handle)| {
                        handle.clone().map(|handle| ((topic.name.clone(), idx as u32), handle))
                    })
                })
                .collect();
        for (key, handle) in partitions {
            if let Ok(Some(point)) = handle.addr.send(GetRecoveryPoint).await {
                points.insert(key, point);
            }
        }
        let mut written = self.points_written.lock().await;
        if *written == points {
            return Ok(());
        }
        let data_dir = self.config.data_dir.clone();
        let points = tokio::task::spawn_blocking(move || recovery::write(&data_dir, &points).map(|()| points))
            .await
            .map_err(std::io::Error::other)??;
        *written = points;
        Ok(())
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().expect("registry lock").get(name).cloned()
    }

    /// This broker's replica of a partition.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<PartitionHandle> {
        self.topic(topic)?.local.get(partition as usize)?.clone()
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

    /// The error for a partition this broker has no replica of: unknown topic, or ask the leader.
    pub fn missing_partition_error(&self, topic: &str, partition: u32) -> CodedError {
        let state = self.cluster.state();
        match state.partition(topic, partition) {
            Some(p) => CodedError::new(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                format!(
                    "broker {} holds no replica of {topic}/{partition}; its leader is {}",
                    self.cluster.node_id, p.leader
                ),
            ),
            None => CodedError::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic '{topic}' partition {partition} does not exist"),
            ),
        }
    }

    /// Sends a call to the active controller and waits until its change is applied here.
    pub async fn controller(&self, call: ControllerCall) -> Result<ControllerReply, CodedError> {
        let reply = self.cluster.call_controller(call, ADMIN_TIMEOUT).await?;
        match reply {
            ControllerReply::Done { index } => {
                self.cluster.wait_applied(index, ADMIN_TIMEOUT).await;
                Ok(reply)
            }
            ControllerReply::Error(error) => Err(error),
            other => Ok(other),
        }
    }

    /// Validates a new topic; with `validate_only` nothing is created. A replication factor of -1 (0xFFFF)
    /// means the broker default.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), CodedError> {
        validate_topic_name(name).map_err(|message| CodedError::new(ErrorCode::INVALID_TOPIC_NAME, message))?;
        if partitions == 0 || partitions > self.config.partitions_max {
            return Err(CodedError::new(
                ErrorCode::INVALID_PARTITIONS,
                format!("partitions must be in 1..={}, got {partitions}", self.config.partitions_max),
            ));
        }
        let replication_factor = if replication_factor == u16::MAX {
            self.config.cluster.default_replication_factor
        } else {
            replication_factor
        };
        let live = self.cluster.state().live_brokers().len().max(1);
        if replication_factor == 0 || usize::from(replication_factor) > live {
            return Err(CodedError::new(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {replication_factor} is larger than the {live} live broker{}",
                    if live == 1 { "" } else { "s" }
                ),
            ));
        }
        TopicConfig::resolve(&self.config.log, configs.clone(), self.config.frame_bytes_max)
            .map_err(|message| CodedError::new(ErrorCode::INVALID_CONFIG, message))?;
        if self.cluster.state().topics.contains_key(name) {
            return Err(CodedError::new(ErrorCode::TOPIC_ALREADY_EXISTS, format!("topic '{name}' already exists")));
        }
        if validate_only {
            return Ok(());
        }
        let call = ControllerCall::CreateTopic { name: name.to_string(), partitions, replication_factor, configs };
        self.controller(call).await?;
        self.wait_reconciled(name, true).await;
        tracing::info!(topic = name, partitions, replication_factor, "created topic");
        Ok(())
    }

    /// Changes a topic's configs: `set` overrides keys, `delete` returns keys to the broker default.
    pub async fn alter_topic(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<TopicConfig, CodedError> {
        let state = self.cluster.state();
        let topic = state.topics.get(name).ok_or_else(|| {
            CodedError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, format!("topic '{name}' does not exist"))
        })?;
        let mut overrides = topic.configs.clone();
        for key in delete {
            overrides.remove(&key);
        }
        overrides.extend(set);
        let config = TopicConfig::resolve(&self.config.log, overrides.clone(), self.config.frame_bytes_max)
            .map_err(|message| CodedError::new(ErrorCode::INVALID_CONFIG, message))?;
        self.controller(ControllerCall::AlterConfigs { name: name.to_string(), configs: overrides }).await?;
        self.wait_config_visible(name, &config).await?;
        tracing::info!(topic = name, "altered topic configs");
        Ok(config)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), CodedError> {
        if is_internal(name) {
            return Err(CodedError::new(
                ErrorCode::INVALID_REQUEST,
                format!("'{name}' is an internal topic and cannot be deleted"),
            ));
        }
        if !self.cluster.state().topics.contains_key(name) {
            return Err(CodedError::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic '{name}' does not exist"),
            ));
        }
        self.controller(ControllerCall::DeleteTopic { name: name.to_string() }).await?;
        self.wait_reconciled(name, false).await;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Waits (briefly) until the reconciler started or removed this broker's replicas of a topic, so that a
    /// client that created a topic here can use it here at once.
    /// Waits until the new config is in force on this broker's partitions (reconciled, every partition actor
    /// told) and on every other live broker holding a replica of the topic that can be reached (it describes
    /// the topic with it), so the next produce or describe anywhere sees it. An unreachable broker is not
    /// waited for: it applies the change from the metadata log when it is back.
    async fn wait_config_visible(&self, name: &str, config: &TopicConfig) -> Result<(), CodedError> {
        let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
        while self.topic(name).is_some_and(|topic| topic.config != *config) {
            if std::time::Instant::now() >= deadline {
                return Err(not_visible(self.cluster.node_id));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Overrides only: brokers may differ in their defaults.
        let expected: Vec<(String, String)> = config
            .entries()
            .into_iter()
            .filter(|(_, _, is_default)| !is_default)
            .map(|(key, value, _)| (key, value))
            .collect();
        let state = self.cluster.state();
        let Some(topic) = state.topics.get(name) else { return Ok(()) };
        let mut holders: Vec<NodeId> = topic.partitions.iter().flat_map(|p| p.replicas.iter().copied()).collect();
        holders.sort_unstable();
        holders.dedup();
        for node in holders {
            let live = state.brokers.get(&node).is_some_and(|broker| !broker.fenced);
            if node == self.cluster.node_id || !live {
                continue;
            }
            let Some(addr) = self.cluster.peers.address(node) else { continue };
            loop {
                let request = DescribeTopicsRequest { names: Some(vec![name.to_string()]) };
                let answer = match self.cluster.peers.call(&addr, &request, Duration::from_secs(1)).await {
                    // A broker that cannot be reached (it just died, not fenced yet) reads the change from the
                    // metadata log when it returns; waiting for it would only delay the answer.
                    Err(error) if error.is_retriable() => break,
                    answer => answer,
                };
                let seen = answer.ok().and_then(|response| response.topics.into_iter().next()).map(|topic| {
                    topic
                        .configs
                        .into_iter()
                        .filter(|entry| !entry.is_default)
                        .map(|entry| (entry.name, entry.value))
                        .collect::<Vec<_>>()
                });
                if seen.as_ref() == Some(&expected) {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    return Err(not_visible(node));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    async fn wait_reconciled(&self, name: &str, present: bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let done = match (self.topic(name), self.cluster.state().topics.get(name)) {
                (Some(topic), Some(state)) if present => {
                    let roles = self.roles.lock().expect("roles lock");
                    (0..state.partitions.len() as u32).all(|p| {
                        !state.partitions[p as usize].replicas.contains(&self.cluster.node_id)
                            || (topic.local[p as usize].is_some() && roles.contains_key(&(name.to_string(), p)))
                    })
                }
                (None, _) => !present,
                _ => false,
            };
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether every topic of `state` is loaded into this registry (reconciled at least once).
    pub fn has_every_topic_of(&self, state: &ClusterState) -> bool {
        state.topics.keys().all(|name| self.topic(name).is_some())
    }

    /// Makes the local replicas match the metadata; returns the partitions this broker follows.
    pub async fn reconcile(&self, state: &ClusterState) -> Vec<Followed> {
        let node_id = self.cluster.node_id;
        let mut followed = Vec::new();
        // Topics gone from the metadata (or replaced by a new topic of the same name).
        let known: Vec<Arc<Topic>> = self.topics();
        for topic in known {
            let current = state.topics.get(&topic.name);
            if current.is_none_or(|t| t.id != topic.id) {
                self.topics.write().expect("registry lock").remove(&topic.name);
                self.remove_topic_data(&topic).await;
            }
        }
        for (name, topic_state) in &state.topics {
            let existing = self.topic(name);
            let config = match TopicConfig::resolve(
                &self.config.log,
                topic_state.configs.clone(),
                self.config.frame_bytes_max,
            ) {
                Ok(config) => config,
                Err(error) => {
                    tracing::error!(topic = %name, %error, "invalid topic configs in the metadata");
                    continue;
                }
            };
            let mut local: Vec<Option<PartitionHandle>> =
                existing.as_ref().map_or_else(|| vec![None; topic_state.partitions.len()], |t| t.local.clone());
            let dir = self.config.data_dir.join(name);
            if existing.is_none() {
                if let Err(error) = self.prepare_topic_dir(&dir, name, topic_state.id) {
                    tracing::error!(topic = %name, %error, "cannot prepare the topic's directory");
                    continue;
                }
            }
            for (partition, p) in topic_state.partitions.iter().enumerate() {
                let replica = p.replicas.contains(&node_id);
                if replica && local[partition].is_none() {
                    match self.start_partition(&dir, name, partition as u32, &config) {
                        Ok(handle) => local[partition] = Some(handle),
                        Err(error) => {
                            tracing::error!(topic = %name, partition, %error, "cannot open the partition");
                            continue;
                        }
                    }
                }
                let Some(handle) = &local[partition] else { continue };
                let role = SetRole(PartitionRole {
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    partition_epoch: p.partition_epoch,
                });
                let key = (name.clone(), partition as u32);
                let previous = self.roles.lock().expect("roles lock").get(&key).cloned();
                let changed = previous.as_ref() != Some(&role);
                if changed {
                    self.count_role_change(previous.as_ref().map(|previous| &previous.0), &role.0);
                    let _ = handle.addr.send(role.clone()).await;
                    self.roles.lock().expect("roles lock").insert(key, role);
                }
                if p.leader != node_id && p.leader >= 0 {
                    followed.push(Followed {
                        topic: name.clone(),
                        partition: partition as u32,
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                    });
                }
            }
            if let Some(existing) = &existing {
                if existing.config != config {
                    for handle in local.iter().flatten() {
                        let _ = handle.addr.send(UpdateConfig(config.partition_config())).await;
                    }
                }
            }
            let topic = Topic { name: name.clone(), id: topic_state.id, config, metadata: topic_state.clone(), local };
            self.topics.write().expect("registry lock").insert(name.clone(), Arc::new(topic));
        }
        followed
    }

    /// Leader elections won by this broker, and in-sync set changes of the partitions it leads.
    fn count_role_change(&self, previous: Option<&PartitionRole>, role: &PartitionRole) {
        if role.leader != self.cluster.node_id {
            return;
        }
        match previous {
            Some(previous) if previous.leader_epoch == role.leader_epoch => {
                if role.isr.len() < previous.isr.len() {
                    self.metrics.isr_shrinks.inc();
                } else if role.isr.len() > previous.isr.len() {
                    self.metrics.isr_expands.inc();
                }
            }
            _ => {
                self.metrics.leader_elections.inc();
            }
        }
    }

    pub fn metrics(&self) -> &Arc<BrokerMetrics> {
        &self.metrics
    }

    /// Creates (or checks) `<data_dir>/<topic>/topic.meta`; data of an older topic of the same name goes.
    fn prepare_topic_dir(&self, dir: &Path, name: &str, id: u64) -> std::io::Result<()> {
        if let Ok(bytes) = std::fs::read(dir.join(META_FILE)) {
            match rmp_serde::from_slice::<TopicMeta>(&bytes) {
                Ok(meta) if meta.id == id => return Ok(()),
                _ => {
                    tracing::info!(topic = name, "removing the data of an earlier topic of the same name");
                    self.remove_dir(dir)?;
                }
            }
        }
        std::fs::create_dir_all(dir)?;
        write_meta(dir, &TopicMeta { name: name.to_string(), id })?;
        sync_dir(&self.config.data_dir)
    }

    fn remove_dir(&self, dir: &Path) -> std::io::Result<()> {
        // Not the topic's name: a 249-character name with a prefix and a time would pass the file system's
        // limit of 255 bytes per name, and the topic could never be deleted.
        let doomed = self.config.data_dir.join(format!(
            "{DELETED_PREFIX}{:x}-{:x}",
            crate::now_ms(),
            crate::cluster::rand_u64()
        ));
        std::fs::rename(dir, &doomed)?;
        sync_dir(&self.config.data_dir)?;
        std::fs::remove_dir_all(&doomed)
    }

    /// Removes topic directories whose topic the metadata no longer has (deleted while this broker was
    /// down). Only ids the metadata has already passed count, so a lagging metadata view deletes nothing.
    pub fn remove_orphans(&self, state: &ClusterState) {
        let Ok(entries) = std::fs::read_dir(&self.config.data_dir) else { return };
        for entry in entries.flatten() {
            let Ok(bytes) = std::fs::read(entry.path().join(META_FILE)) else { continue };
            let Ok(meta) = rmp_serde::from_slice::<TopicMeta>(&bytes) else { continue };
            let live = state.topics.get(&meta.name).is_some_and(|t| t.id == meta.id);
            if !live && meta.id <= state.next_topic_id {
                tracing::info!(topic = %meta.name, "removing the data of a topic deleted while this broker was away");
                if let Err(error) = self.remove_dir(&entry.path()) {
                    tracing::warn!(topic = %meta.name, %error, "cannot remove a deleted topic's data");
                }
            }
        }
    }

    async fn remove_topic_data(&self, topic: &Topic) {
        for partition in topic.local.iter().flatten() {
            let _ = partition.addr.send(Shutdown).await;
        }
        self.roles.lock().expect("roles lock").retain(|(name, _), _| name != &topic.name);
        let dir = self.config.data_dir.join(&topic.name);
        match self.remove_dir(&dir) {
            Ok(()) => tracing::info!(topic = %topic.name, "removed the data of a deleted topic"),
            Err(error) => tracing::warn!(topic = %topic.name, %error, "cannot remove a deleted topic's data"),
        }
    }

    /// fsyncs and stops every partition actor, then writes recovery points that cover every log whole (the
    /// next start checks nothing).
    pub async fn shutdown(&self) {
        let topics: Vec<_> = self.topics.write().expect("registry lock").drain().map(|(_, topic)| topic).collect();
        let mut points = std::mem::take(&mut *self.recovery_points.lock().expect("points lock"));
        for topic in topics {
            for (partition_idx, partition) in topic.local.iter().enumerate() {
                let Some(partition) = partition else { continue };
                match partition.addr.send(Shutdown).await {
                    Ok(Ok(point)) => {
                        points.insert((topic.name.clone(), partition_idx as u32), point);
                    }
                    Ok(Err(error)) => {
                        tracing::error!(topic = %topic.name, partition = partition_idx, %error, "final fsync failed")
                    }
                    Err(_) => {}
                }
            }
        }
        if let Err(error) = recovery::write(&self.config.data_dir, &points) {
            tracing::warn!(%error, "cannot write the recovery points; the next start checks every segment");
        }
    }

    fn start_partition(
        &self,
        dir: &Path,
        name: &str,
        partition: u32,
        config: &TopicConfig,
    ) -> anyhow::Result<PartitionHandle> {
        let dir = dir.join(partition.to_string());
        let point = self.recovery_points.lock().expect("points lock").remove(&(name.to_string(), partition));
        let (mut log, replay) = Log::open_at(&dir, config.log_config(), point.as_ref())
            .map_err(|error| anyhow::anyhow!("opening {}: {error}", dir.display()))?;
        if log.recovery_checked_bytes() > 0 {
            // What recovery kept past the point may not be on disk yet (a kill -9 leaves it in the page cache):
            // fsync it, so the log as opened is the partition's first recovery point.
            log.sync_all().map_err(|error| anyhow::anyhow!("syncing {}: {error}", dir.display()))?;
        }
        let (actor, offsets) = PartitionActor::new(
            name.to_string(),
            partition,
            log,
            replay,
            config.partition_config(),
            self.timers.clone(),
            self.cluster.clone(),
        )?;
        let arbiter = &self.arbiters[self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len()];
        let addr = PartitionActor::start_in_arbiter(arbiter, move |_| actor);
        Ok(PartitionHandle { addr, offsets })
    }
}

/// Writes `topic.meta` atomically.
fn write_meta(topic_dir: &Path, meta: &TopicMeta) -> std::io::Result<()> {
    let bytes = rmp_serde::to_vec_named(meta).map_err(std::io::Error::other)?;
    write_atomic(topic_dir, META_FILE, &bytes)
}

fn not_visible(node: NodeId) -> CodedError {
    CodedError::new(
        ErrorCode::REQUEST_TIMED_OUT,
        format!("the change is committed but broker {node} has not applied it yet; it will"),
    )
}
