//! `Consumer` with explicit assignment: assign partitions, poll records, seek. Positions start at the
//! earliest or latest offset (`OffsetReset`) and are reset the same way after OFFSET_OUT_OF_RANGE.
//! Every batch's CRC-32C is verified before its records are handed out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::group::{Group, GroupConfig, RebalanceListener, TopicPartition};
use super::{ClientConfig, ClientError, Cluster};
use crate::protocol::api::fetch::{FetchPartition, FetchRequest, FetchResponse, FetchTopic};
use crate::protocol::api::list_offsets::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
use crate::protocol::batch;
use crate::protocol::{frame, offset_spec, ApiKey, ErrorCode, NodeId};

/// Where a partition without a valid position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail with OFFSET_OUT_OF_RANGE instead.
    Error,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub client: ClientConfig,
    pub auto_offset_reset: OffsetReset,
    /// How long the broker may hold a fetch waiting for `fetch_min_bytes`.
    pub fetch_max_wait: Duration,
    pub fetch_min_bytes: u32,
    pub fetch_max_bytes: u32,
    pub partition_max_bytes: u32,
    /// Set to join a consumer group with `subscribe`.
    pub group: Option<GroupConfig>,
}

impl ConsumerConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> ConsumerConfig {
        ConsumerConfig {
            client: ClientConfig::new(bootstrap_servers),
            auto_offset_reset: OffsetReset::Latest,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            group: None,
        }
    }
}

/// A consumed record with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Shared by the records of one fetch: no allocation per record.
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    At(u64),
    Reset(OffsetReset),
}

pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    positions: BTreeMap<(String, u32), Position>,
    /// The high watermark each partition's last fetch reported.
    high_watermarks: HashMap<(String, u32), u64>,
    group: Option<Group>,
    listener: Option<Box<dyn RebalanceListener>>,
}

impl Consumer {
    pub async fn connect(config: ConsumerConfig) -> Result<Consumer, ClientError> {
        let cluster = Arc::new(Cluster::connect(config.client.clone()).await?);
        Ok(Consumer::with_cluster(cluster, config))
    }

    pub fn with_cluster(cluster: Arc<Cluster>, config: ConsumerConfig) -> Consumer {
        Consumer {
            cluster,
            config,
            positions: BTreeMap::new(),
            high_watermarks: HashMap::new(),
            group: None,
            listener: None,
        }
    }

    /// Replaces the assignment. New partitions start by the reset policy; kept ones keep their position.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = (String, u32)>) {
        let reset = Position::Reset(self.config.auto_offset_reset);
        let mut positions = BTreeMap::new();
        for topic_partition in partitions {
            let position = self.positions.get(&topic_partition).copied().unwrap_or(reset);
            positions.insert(topic_partition, position);
        }
        self.positions = positions;
    }

    /// Assigns every partition of a topic.
    pub async fn assign_topic(&mut self, topic: &str) -> Result<(), ClientError> {
        let metadata = self.cluster.topic(topic).await?;
        let partitions: Vec<_> = metadata.partitions.iter().map(|p| (topic.to_string(), p.partition)).collect();
        let mut all: Vec<_> = self.positions.keys().filter(|(t, _)| t != topic).cloned().collect();
        all.extend(partitions);
        self.assign(all);
        Ok(())
    }

    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.positions.keys().cloned().collect()
    }

    /// The next offset to read, once known.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        match self.positions.get(&(topic.to_string(), partition)) {
            Some(Position::At(offset)) => Some(*offset),
            _ => None,
        }
    }

    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) {
        self.set_position(topic, partition, Position::At(offset));
    }

    pub fn seek_to_beginning(&mut self, topic: &str, partition: u32) {
        self.set_position(topic, partition, Position::Reset(OffsetReset::Earliest));
    }

    pub fn seek_to_end(&mut self, topic: &str, partition: u32) {
        self.set_position(topic, partition, Position::Reset(OffsetReset::Latest));
    }

    /// Joins the configured group (`ConsumerConfig::group`) for these topics; the group's coordinator
    /// decides which partitions this consumer reads. Replaces any explicit assignment.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<(), ClientError> {
        let config = self
            .config
            .group
            .clone()
            .ok_or_else(|| ClientError::Config("subscribe needs ConsumerConfig::group".into()))?;
        if let Some(mut old) = self.group.take() {
            old.leave().await;
        }
        self.positions.clear();
        let topics = topics.iter().map(|t| t.to_string()).collect();
        self.group = Some(Group::join(&self.cluster, config, topics).await?);
        Ok(())
    }

    /// Called from `poll` when partitions are assigned or revoked.
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// Records between each assigned partition's position and its high watermark, as of the last fetches.
    pub fn lag(&self) -> u64 {
        self.positions
            .iter()
            .filter_map(|(tp, position)| match position {
                Position::At(offset) => self.high_watermarks.get(tp).map(|hw| hw.saturating_sub(*offset)),
                Position::Reset(_) => None,
            })
            .sum()
    }

    /// The member id in the group, once joined.
    pub fn member_id(&self) -> Option<String> {
        self.group.as_ref().map(Group::member_id)
    }

    /// The group generation of this member's last sync.
    pub fn generation(&self) -> Option<i32> {
        self.group.as_ref().map(|g| g.generation)
    }

    /// Commits the position of every partition this member holds (the offsets after the records `poll`
    /// returned so far) and waits for the coordinator.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let offsets = self.commit_positions(None);
        match self.group.as_mut() {
            Some(group) => group.commit(offsets).await,
            None => Err(ClientError::Config("commit needs a group (ConsumerConfig::group and subscribe)".into())),
        }
    }

    /// Commits in the background; await the handle to learn the outcome.
    pub fn commit_async(&mut self) -> tokio::task::JoinHandle<Result<(), ClientError>> {
        let offsets = self.commit_positions(None);
        let Some(group) = self.group.as_ref() else {
            return tokio::spawn(async { Err(ClientError::Config("commit needs a group".into())) });
        };
        let request =
            super::group::commit_request(&group.config.group_id, &group.member_id(), group.generation, offsets);
        let cluster = self.cluster.clone();
        let group_id = group.config.group_id.clone();
        tokio::spawn(async move {
            let coordinator = super::group::find_coordinator(&cluster, &group_id).await?;
            let response = coordinator.call(&request, cluster.config().request_timeout).await?;
            match response.error_code {
                ErrorCode::NONE => Ok(()),
                code => Err(ClientError::broker(code, response.error_message)),
            }
        })
    }

    /// Commits (with auto-commit), leaves the group (dynamic members) and stops heartbeating.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let mut result = Ok(());
        if let Some(mut group) = self.group.take() {
            if group.config.auto_commit {
                let offsets = self.commit_positions(None);
                result = group.commit(offsets).await;
            }
            group.leave().await;
        }
        result
    }

    /// Positions to commit: of `only` when given, else of every partition with a known position.
    fn commit_positions(&self, only: Option<&BTreeSet<TopicPartition>>) -> Vec<(TopicPartition, u64)> {
        self.positions
            .iter()
            .filter(|(tp, _)| only.is_none_or(|set| set.contains(*tp)))
            .filter_map(|(tp, position)| match position {
                Position::At(offset) => Some((tp.clone(), *offset)),
                Position::Reset(_) => None,
            })
            .collect()
    }

    /// Rejoins, auto-commits and syncs as the heartbeat task asked.
    async fn maintain_group(&mut self) -> Result<(), ClientError> {
        let Some(group) = self.group.as_mut() else { return Ok(()) };
        let (rejoin, fatal) = {
            let mut shared = group.shared.lock().expect("membership lock");
            shared.last_poll = std::time::Instant::now();
            (shared.needs_rejoin, shared.fatal.clone())
        };
        if let Some(error) = fatal {
            return Err(error);
        }
        if rejoin {
            let lost: Vec<TopicPartition> = std::mem::take(&mut group.owned).into_iter().collect();
            for tp in &lost {
                self.positions.remove(tp);
            }
            if !lost.is_empty() {
                tracing::warn!(
                    partitions = lost.len(),
                    "this member was removed from the group; its partitions are lost"
                );
                if let Some(listener) = self.listener.as_mut() {
                    listener.on_lost(&lost);
                }
            }
            group.shared.lock().expect("membership lock").member_id = String::new();
            group.send_join().await?;
        }
        if group.config.auto_commit && group.last_commit.elapsed() >= group.config.auto_commit_interval {
            let offsets = self.commit_positions(None);
            let group = self.group.as_mut().expect("checked above");
            if let Err(error) = group.commit(offsets).await {
                tracing::warn!(%error, "auto-commit failed");
            }
        }
        let group = self.group.as_mut().expect("checked above");
        let needs_sync = std::mem::replace(&mut group.shared.lock().expect("membership lock").needs_sync, false);
        if !needs_sync {
            return Ok(());
        }
        loop {
            let group = self.group.as_mut().expect("checked above");
            let assignment = match group.send_sync().await {
                Ok(assignment) => assignment,
                Err(error) => {
                    let mut shared = group.shared.lock().expect("membership lock");
                    match error.code() {
                        Some(ErrorCode::UNKNOWN_MEMBER_ID) | Some(ErrorCode::ILLEGAL_GENERATION) => {
                            shared.needs_rejoin = true
                        }
                        Some(ErrorCode::FENCED_INSTANCE_ID) => return Err(error),
                        _ => shared.needs_sync = true,
                    }
                    drop(shared);
                    if error.is_retriable() || error.code().is_some() {
                        tracing::warn!(%error, "sync failed; retrying on the next poll");
                        return Ok(());
                    }
                    return Err(error);
                }
            };
            let revoked: BTreeSet<TopicPartition> = group.owned.difference(&assignment).cloned().collect();
            if !revoked.is_empty() {
                let auto_commit = group.config.auto_commit;
                if auto_commit {
                    let offsets = self.commit_positions(Some(&revoked));
                    let group = self.group.as_mut().expect("checked above");
                    if let Err(error) = group.commit(offsets).await {
                        tracing::warn!(%error, "committing revoked partitions failed");
                    }
                }
                let revoked_list: Vec<TopicPartition> = revoked.iter().cloned().collect();
                if let Some(listener) = self.listener.as_mut() {
                    listener.on_revoked(&revoked_list);
                }
                let group = self.group.as_mut().expect("checked above");
                for tp in &revoked {
                    group.owned.remove(tp);
                    self.positions.remove(tp);
                }
                // Sync again to release them.
                continue;
            }
            let added: Vec<TopicPartition> = assignment.difference(&group.owned).cloned().collect();
            group.owned = assignment;
            if !added.is_empty() {
                let committed = group.committed(&added).await?;
                let reset = self.config.auto_offset_reset;
                for (tp, offset) in committed {
                    let position = offset.map_or(Position::Reset(reset), Position::At);
                    self.positions.insert(tp, position);
                }
                if let Some(listener) = self.listener.as_mut() {
                    listener.on_assigned(&added);
                }
            }
            return Ok(());
        }
    }

    /// Returns the records available within `timeout` (possibly none).
    /// A leader change (a broker failed, or leadership moved) is not an error: the next poll finds the new
    /// leader.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        match self.poll_once(timeout).await {
            Err(error) if error.is_retriable() => {
                tracing::debug!(%error, "poll: retrying after a retriable error");
                let topics: Vec<String> = self.positions.keys().map(|(topic, _)| topic.clone()).collect();
                for topic in topics {
                    self.cluster.invalidate(&topic);
                }
                tokio::time::sleep(timeout.min(Duration::from_millis(100))).await;
                Ok(Vec::new())
            }
            result => result,
        }
    }

    async fn poll_once(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        self.maintain_group().await?;
        if let Some(group) = &self.group {
            // Cut off from the coordinator for a whole session: it may have removed this member and handed
            // its partitions to another, so nothing is read until the coordinator answers again.
            let unconfirmed = group.shared.lock().expect("membership lock").confirmed_at.elapsed();
            if unconfirmed > group.config.session_timeout {
                tracing::warn!(
                    ?unconfirmed,
                    "the coordinator has not confirmed this member for a session: not reading"
                );
                tokio::time::sleep(timeout.min(Duration::from_millis(100))).await;
                return Ok(Vec::new());
            }
        }
        if self.positions.is_empty() {
            // A group member without partitions yet checks back soon for its assignment.
            let wait = if self.group.is_some() { timeout.min(Duration::from_millis(100)) } else { timeout };
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        self.resolve_positions().await?;
        let wait = timeout.min(self.config.fetch_max_wait);
        let mut by_leader: HashMap<NodeId, Vec<(String, u32, u64)>> = HashMap::new();
        for ((topic, partition), position) in &self.positions {
            if let Position::At(offset) = position {
                let leader = self.cluster.leader(topic, *partition).await?;
                by_leader.entry(leader).or_default().push((topic.clone(), *partition, *offset));
            }
        }
        let fetches = by_leader.into_iter().map(|(leader, partitions)| self.fetch_from(leader, partitions, wait));
        let results = futures_util::future::join_all(fetches).await;
        let mut records = Vec::new();
        for result in results {
            for outcome in result? {
                match outcome {
                    FetchOutcome::Records { topic, partition, next_offset, high_watermark, records: batch_records } => {
                        let place = (topic, partition);
                        if let Some(position) = self.positions.get_mut(&place) {
                            *position = Position::At(next_offset);
                            self.high_watermarks.insert(place, high_watermark);
                        }
                        if records.is_empty() {
                            records = batch_records; // one partition's records: no second copy
                        } else {
                            records.extend(batch_records);
                        }
                    }
                    FetchOutcome::OutOfRange { topic, partition, offset } => {
                        let policy = self.config.auto_offset_reset;
                        if policy == OffsetReset::Error {
                            return Err(ClientError::broker(
                                ErrorCode::OFFSET_OUT_OF_RANGE,
                                Some(format!("offset {offset} of {topic}/{partition} is out of range")),
                            ));
                        }
                        tracing::info!(%topic, partition, offset, ?policy, "offset out of range; resetting by auto.offset.reset");
                        self.set_position(&topic, partition, Position::Reset(policy));
                    }
                    FetchOutcome::Retry { topic } => self.cluster.invalidate(&topic),
                }
            }
        }
        Ok(records)
    }

    fn set_position(&mut self, topic: &str, partition: u32, position: Position) {
        self.positions.insert((topic.to_string(), partition), position);
    }

    /// Turns `Reset` positions into offsets with ListOffsets.
    async fn resolve_positions(&mut self) -> Result<(), ClientError> {
        let pending: Vec<((String, u32), OffsetReset)> = self
            .positions
            .iter()
            .filter_map(|(tp, position)| match position {
                Position::Reset(policy) => Some((tp.clone(), *policy)),
                Position::At(_) => None,
            })
            .collect();
        for ((topic, partition), policy) in pending {
            let timestamp = match policy {
                OffsetReset::Earliest => offset_spec::EARLIEST,
                OffsetReset::Latest => offset_spec::LATEST,
                OffsetReset::Error => {
                    return Err(ClientError::broker(
                        ErrorCode::OFFSET_OUT_OF_RANGE,
                        Some(format!("{topic}/{partition} has no position")),
                    ))
                }
            };
            let offset = self.list_offset(&topic, partition, timestamp).await?;
            self.positions.insert((topic, partition), Position::At(offset));
        }
        Ok(())
    }

    /// ListOffsets for one partition: -2 earliest, -1 latest, else the first offset at or after a timestamp.
    /// Retriable errors (a leader change, a leader that was just elected and does not know its high watermark
    /// yet) are retried, with fresh metadata, for up to the request timeout.
    pub async fn list_offset(&self, topic: &str, partition: u32, timestamp: i64) -> Result<u64, ClientError> {
        let deadline = tokio::time::Instant::now() + self.config.client.request_timeout;
        loop {
            match self.list_offset_once(topic, partition, timestamp).await {
                Err(error) if error.is_retriable() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%error, topic, partition, "list offsets: retrying");
                    self.cluster.invalidate(topic);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                result => return result,
            }
        }
    }

    async fn list_offset_once(&self, topic: &str, partition: u32, timestamp: i64) -> Result<u64, ClientError> {
        let leader = self.cluster.leader(topic, partition).await?;
        let connection = self.cluster.connection_to_node(leader).await?;
        let request = ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: topic.to_string(),
                partitions: vec![ListOffsetsPartition { partition, timestamp }],
            }],
        };
        let response = connection.call(&request, self.config.client.request_timeout).await?;
        let result = response
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition == partition)
            .ok_or_else(|| ClientError::Protocol("ListOffsets response without the partition".into()))?;
        if result.error_code != ErrorCode::NONE {
            return Err(ClientError::broker(result.error_code, None));
        }
        Ok(result.offset)
    }

    async fn fetch_from(
        &self,
        leader: NodeId,
        partitions: Vec<(String, u32, u64)>,
        wait: Duration,
    ) -> Result<Vec<FetchOutcome>, ClientError> {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (topic, partition, offset) in &partitions {
            let data = FetchPartition {
                partition: *partition,
                fetch_offset: *offset,
                partition_max_bytes: self.config.partition_max_bytes,
                current_leader_epoch: None,
                last_fetched_epoch: None,
                replica_log_end_offset: None,
            };
            match topics.iter_mut().find(|t| &t.name == topic) {
                Some(entry) => entry.partitions.push(data),
                None => topics.push(FetchTopic { name: topic.clone(), partitions: vec![data] }),
            }
        }
        let request = FetchRequest {
            max_wait_ms: wait.as_millis() as u32,
            min_bytes: self.config.fetch_min_bytes,
            max_bytes: self.config.fetch_max_bytes,
            topics,
            replica_id: None,
            replica_incarnation: None,
        };
        let connection = match self.cluster.connection_to_node(leader).await {
            Ok(connection) => connection,
            Err(error) if error.is_retriable() => {
                return Ok(partitions.into_iter().map(|(topic, _, _)| FetchOutcome::Retry { topic }).collect());
            }
            Err(error) => return Err(error),
        };
        let body = match connection.call_raw(ApiKey::Fetch, &request, self.config.client.request_timeout + wait).await {
            Ok(body) => body,
            Err(error) if error.is_retriable() => {
                return Ok(partitions.into_iter().map(|(topic, _, _)| FetchOutcome::Retry { topic }).collect());
            }
            Err(error) => return Err(error),
        };
        let response: FetchResponse<'_> =
            frame::decode_body(&body).map_err(|error| ClientError::Protocol(error.to_string()))?;
        let mut outcomes = Vec::new();
        for topic in response.topics {
            for data in topic.partitions {
                let offset = partitions
                    .iter()
                    .find(|(t, p, _)| t == &topic.name && *p == data.partition)
                    .map(|(_, _, offset)| *offset)
                    .ok_or_else(|| ClientError::Protocol("fetch response for a partition not asked for".into()))?;
                match data.error_code {
                    ErrorCode::NONE => {}
                    ErrorCode::OFFSET_OUT_OF_RANGE => {
                        outcomes.push(FetchOutcome::OutOfRange {
                            topic: topic.name.clone(),
                            partition: data.partition,
                            offset,
                        });
                        continue;
                    }
                    code if code.is_retriable() => {
                        outcomes.push(FetchOutcome::Retry { topic: topic.name.clone() });
                        continue;
                    }
                    code => {
                        return Err(ClientError::broker(
                            code,
                            Some(format!("fetching {}/{}", topic.name, data.partition)),
                        ))
                    }
                }
                let records = body.slice_ref(data.records);
                let corrupt = |reason: String| ClientError::Corrupt {
                    topic: topic.name.clone(),
                    partition: data.partition,
                    reason,
                };
                let topic_name: Arc<str> = Arc::from(&*topic.name);
                let partition = data.partition;
                let mut decoded = Vec::new();
                let last = batch::decode_records_into(&records, offset, &mut decoded, |record| ConsumerRecord {
                    topic: topic_name.clone(),
                    partition,
                    offset: record.offset,
                    timestamp: record.timestamp,
                    key: record.key,
                    value: record.value,
                    headers: record.headers,
                })
                .map_err(|error| corrupt(error.to_string()))?;
                let next_offset = last.map_or(offset, |next| next.max(offset));
                outcomes.push(FetchOutcome::Records {
                    topic: topic.name.clone(),
                    partition: data.partition,
                    next_offset,
                    high_watermark: data.high_watermark,
                    records: decoded,
                });
            }
        }
        Ok(outcomes)
    }
}

enum FetchOutcome {
    Records { topic: String, partition: u32, next_offset: u64, high_watermark: u64, records: Vec<ConsumerRecord> },
    OutOfRange { topic: String, partition: u32, offset: u64 },
    Retry { topic: String },
}
