//! Consumer-group membership for `Consumer::subscribe`: find the coordinator, join, heartbeat in the
//! background (so a busy application keeps its session), sync assignments when told, commit offsets.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ClientError, Cluster, Connection};
use crate::protocol::api::find_coordinator::FindCoordinatorRequest;
use crate::protocol::api::heartbeat::HeartbeatRequest;
use crate::protocol::api::join_group::{JoinGroupRequest, TopicPartitions};
use crate::protocol::api::leave_group::LeaveGroupRequest;
use crate::protocol::api::offset_commit::{OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic};
use crate::protocol::api::offset_fetch::OffsetFetchRequest;
use crate::protocol::api::sync_group::SyncGroupRequest;
use crate::protocol::ErrorCode;

pub type TopicPartition = (String, u32);

/// Settings of a consumer that joins a group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group_id: String,
    /// Static membership: restart with the same id within the session timeout to keep the partitions
    /// without a rebalance. A static member does not leave the group on `close`.
    pub instance_id: Option<String>,
    /// `cooperative-sticky` (default), `range` or `roundrobin`.
    pub strategy: String,
    /// A member that sends no heartbeat for this long is removed and its partitions move.
    pub session_timeout: Duration,
    /// If the application does not call `poll` for this long, the consumer leaves the group so that its
    /// partitions move to members that make progress; it rejoins on the next `poll`.
    pub max_poll_interval: Duration,
    /// Commit the positions of records already returned by `poll`, at most every `auto_commit_interval`,
    /// at the start of `poll` (so a record is committed only after the application was handed it and asked
    /// for more), before partitions are revoked, and on `close`.
    pub auto_commit: bool,
    pub auto_commit_interval: Duration,
}

impl GroupConfig {
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            instance_id: None,
            strategy: "cooperative-sticky".into(),
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
        }
    }
}

/// Told about partitions as they are assigned and revoked; called from inside `poll`.
pub trait RebalanceListener: Send + Sync {
    fn on_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// Called after the revoked partitions' positions were committed (with auto-commit) and before they are
    /// released to another member.
    fn on_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// Partitions lost without a chance to commit (this member was removed from the group).
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_revoked(partitions);
    }
}

/// State shared with the heartbeat task.
#[derive(Debug)]
pub(crate) struct Membership {
    pub member_id: String,
    pub needs_sync: bool,
    pub needs_rejoin: bool,
    pub fatal: Option<ClientError>,
    pub last_poll: Instant,
    pub heartbeat_interval: Duration,
    /// When the last request the coordinator answered for this member (join, sync, heartbeat) was sent. The
    /// coordinator removes a member no sooner than a session after it received that request, so until a
    /// session after this instant the member's partitions are still its own.
    pub confirmed_at: Instant,
}

pub(crate) struct Group {
    pub config: GroupConfig,
    pub topics: Vec<String>,
    pub shared: Arc<Mutex<Membership>>,
    coordinator: Connection,
    cluster: Arc<Cluster>,
    pub generation: i32,
    pub owned: BTreeSet<TopicPartition>,
    pub last_commit: Instant,
    heartbeat_task: tokio::task::JoinHandle<()>,
    request_timeout: Duration,
}

impl Group {
    /// Finds the coordinator, joins and starts heartbeating.
    pub async fn join(cluster: &Arc<Cluster>, config: GroupConfig, topics: Vec<String>) -> Result<Group, ClientError> {
        let request_timeout = cluster.config().request_timeout;
        let coordinator = find_coordinator(cluster, &config.group_id).await?;
        let shared = Arc::new(Mutex::new(Membership {
            member_id: String::new(),
            needs_sync: true,
            needs_rejoin: false,
            fatal: None,
            last_poll: Instant::now(),
            heartbeat_interval: config.session_timeout / 3,
            confirmed_at: Instant::now(),
        }));
        let heartbeat_task =
            tokio::spawn(heartbeat_loop(cluster.clone(), coordinator.clone(), config.clone(), shared.clone()));
        let mut group = Group {
            config,
            topics,
            shared,
            coordinator,
            cluster: cluster.clone(),
            generation: -1,
            owned: BTreeSet::new(),
            last_commit: Instant::now(),
            heartbeat_task,
            request_timeout,
        };
        group.send_join().await?;
        Ok(group)
    }

    /// JoinGroup with the current member id (empty the first time and after the member was removed).
    pub async fn send_join(&mut self) -> Result<(), ClientError> {
        let member_id = self.shared.lock().expect("membership lock").member_id.clone();
        let request = JoinGroupRequest {
            group_id: self.config.group_id.clone(),
            member_id,
            group_instance_id: self.config.instance_id.clone(),
            topics: self.topics.clone(),
            strategy: self.config.strategy.clone(),
            session_timeout_ms: self.config.session_timeout.as_millis() as u32,
        };
        let sent = Instant::now();
        let response = self.call(&request).await?;
        if response.error_code != ErrorCode::NONE {
            return Err(ClientError::broker(response.error_code, response.error_message));
        }
        self.generation = response.generation_id;
        let mut shared = self.shared.lock().expect("membership lock");
        shared.member_id = response.member_id;
        shared.heartbeat_interval = Duration::from_millis(u64::from(response.heartbeat_interval_ms.max(10)));
        shared.needs_sync = true;
        shared.needs_rejoin = false;
        shared.confirmed_at = sent;
        Ok(())
    }

    /// SyncGroup: reports what this member holds; returns what it may hold now.
    pub async fn send_sync(&mut self) -> Result<BTreeSet<TopicPartition>, ClientError> {
        let member_id = self.member_id();
        let request = SyncGroupRequest {
            group_id: self.config.group_id.clone(),
            member_id,
            owned: TopicPartitions::group(self.owned.iter().cloned()),
        };
        let sent = Instant::now();
        let response = self.call(&request).await?;
        if response.error_code != ErrorCode::NONE {
            return Err(ClientError::broker(response.error_code, response.error_message));
        }
        self.generation = response.generation_id;
        let mut shared = self.shared.lock().expect("membership lock");
        shared.confirmed_at = shared.confirmed_at.max(sent);
        Ok(TopicPartitions::flatten(&response.assignment).into_iter().collect())
    }

    pub async fn commit(&mut self, offsets: Vec<(TopicPartition, u64)>) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let request = commit_request(&self.config.group_id, &self.member_id(), self.generation, offsets);
        let response = self.call(&request).await?;
        if matches!(response.error_code, ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::ILLEGAL_GENERATION) {
            // The coordinator lost this member (it moved, or the session expired): rejoin on the next poll.
            self.shared.lock().expect("membership lock").needs_rejoin = true;
        }
        if response.error_code != ErrorCode::NONE {
            return Err(ClientError::broker(response.error_code, response.error_message));
        }
        for topic in response.topics {
            for partition in topic.partitions {
                if partition.error_code != ErrorCode::NONE {
                    return Err(ClientError::broker(
                        partition.error_code,
                        Some(format!("committing {}/{}", topic.name, partition.partition)),
                    ));
                }
            }
        }
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Committed offsets of these partitions (`None`: nothing committed).
    pub async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<u64>)>, ClientError> {
        let request = OffsetFetchRequest {
            group_id: self.config.group_id.clone(),
            topics: Some(TopicPartitions::group(partitions.iter().cloned())),
        };
        let response = self.call(&request).await?;
        Ok(response
            .offsets
            .into_iter()
            .map(|c| ((c.topic, c.partition), (c.offset >= 0).then_some(c.offset as u64)))
            .collect())
    }

    /// Calls the coordinator; when the connection is lost or the coordinator moved (a broker failed and
    /// another now leads the group's offsets partition), finds it again and retries until the request timeout.
    async fn call<R>(&mut self, request: &R) -> Result<R::Response, ClientError>
    where
        R: crate::protocol::api::Request,
        R::Response: serde::de::DeserializeOwned + CoordinatorResponse,
    {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let error = match self.coordinator.call(request, self.request_timeout).await {
                Err(error @ (ClientError::ConnectionLost { .. } | ClientError::Connect { .. })) => error,
                Ok(response) if coordinator_moved(response.error_code()) => {
                    ClientError::broker(response.error_code(), Some(format!("group '{}'", self.config.group_id)))
                }
                result => return result,
            };
            if Instant::now() >= deadline {
                return Err(error);
            }
            tracing::debug!(group = %self.config.group_id, %error, "finding the group coordinator again");
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(found) = find_coordinator(&self.cluster, &self.config.group_id).await {
                self.coordinator = found;
            }
        }
    }

    pub fn member_id(&self) -> String {
        self.shared.lock().expect("membership lock").member_id.clone()
    }

    /// Leaves (dynamic members only) and stops heartbeating.
    pub async fn leave(&mut self) {
        self.heartbeat_task.abort();
        if self.config.instance_id.is_none() {
            let request = LeaveGroupRequest { group_id: self.config.group_id.clone(), member_id: self.member_id() };
            if let Err(error) = self.call(&request).await {
                tracing::warn!(%error, "leaving the group failed; the session will time out instead");
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.heartbeat_task.abort();
    }
}

pub(crate) fn commit_request(
    group_id: &str,
    member_id: &str,
    generation: i32,
    offsets: Vec<(TopicPartition, u64)>,
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitTopic> = Vec::new();
    for ((topic, partition), offset) in offsets {
        let entry = OffsetCommitPartition { partition, offset, metadata: None };
        match topics.iter_mut().find(|t| t.name == topic) {
            Some(t) => t.partitions.push(entry),
            None => topics.push(OffsetCommitTopic { name: topic, partitions: vec![entry] }),
        }
    }
    OffsetCommitRequest {
        group_id: group_id.to_string(),
        member_id: member_id.to_string(),
        generation_id: generation,
        topics,
    }
}

/// Whether the group's coordinator moved or is still loading: find it again and retry.
fn coordinator_moved(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE)
}

/// Responses of the coordinator's APIs, for retrying when the coordinator moved.
pub(crate) trait CoordinatorResponse {
    fn error_code(&self) -> ErrorCode;
}

macro_rules! coordinator_responses {
    ($($response:ty),*) => {
        $(impl CoordinatorResponse for $response {
            fn error_code(&self) -> ErrorCode {
                self.error_code
            }
        })*
    };
}

coordinator_responses!(
    crate::protocol::api::join_group::JoinGroupResponse,
    crate::protocol::api::sync_group::SyncGroupResponse,
    crate::protocol::api::heartbeat::HeartbeatResponse,
    crate::protocol::api::leave_group::LeaveGroupResponse,
    crate::protocol::api::offset_commit::OffsetCommitResponse,
    crate::protocol::api::offset_fetch::OffsetFetchResponse
);

/// Asks any broker for the group's coordinator, retrying while none is available (the offsets topic is
/// being created, or its partition is electing a leader) up to the request timeout.
pub(crate) async fn find_coordinator(cluster: &Cluster, group_id: &str) -> Result<Connection, ClientError> {
    let deadline = Instant::now() + cluster.config().request_timeout;
    let request = FindCoordinatorRequest { group_id: group_id.to_string() };
    loop {
        let found = async {
            let connection = cluster.any_connection().await?;
            let response = connection.call(&request, cluster.config().request_timeout).await?;
            if response.error_code != ErrorCode::NONE {
                return Err(ClientError::broker(
                    response.error_code,
                    Some(format!("coordinator of group '{group_id}'")),
                ));
            }
            cluster.connection_to(&format!("{}:{}", response.host, response.port)).await
        }
        .await;
        match found {
            Err(error) if error.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return result,
        }
    }
}

async fn heartbeat_loop(
    cluster: Arc<Cluster>,
    mut coordinator: Connection,
    config: GroupConfig,
    shared: Arc<Mutex<Membership>>,
) {
    let timeout = cluster.config().request_timeout;
    let mut left_for_slow_poll = false;
    loop {
        let interval = shared.lock().expect("membership lock").heartbeat_interval;
        tokio::time::sleep(interval).await;
        let (member_id, idle) = {
            let state = shared.lock().expect("membership lock");
            if state.needs_rejoin || state.fatal.is_some() || state.member_id.is_empty() {
                continue;
            }
            (state.member_id.clone(), state.last_poll.elapsed())
        };
        left_for_slow_poll &= idle > config.max_poll_interval;
        if idle > config.max_poll_interval {
            if !left_for_slow_poll {
                tracing::warn!(group = %config.group_id, ?idle, "poll was not called within max_poll_interval; leaving the group");
                let request = LeaveGroupRequest { group_id: config.group_id.clone(), member_id };
                let _ = coordinator.call(&request, timeout).await;
                let mut state = shared.lock().expect("membership lock");
                state.needs_rejoin = true;
                state.member_id = String::new();
                left_for_slow_poll = true;
            }
            continue;
        }
        let request = HeartbeatRequest { group_id: config.group_id.clone(), member_id };
        let sent = Instant::now();
        match coordinator.call(&request, timeout).await {
            Ok(response) if coordinator_moved(response.error_code) => {
                // The group moved with its membership (the coordinator stores it): keep the partitions and
                // heartbeat the new coordinator; it answers UNKNOWN_MEMBER_ID if it does not know this member.
                if let Ok(found) = find_coordinator(&cluster, &config.group_id).await {
                    coordinator = found;
                }
            }
            Ok(response) => {
                let mut state = shared.lock().expect("membership lock");
                match response.error_code {
                    ErrorCode::NONE => state.confirmed_at = state.confirmed_at.max(sent),
                    ErrorCode::REBALANCE_IN_PROGRESS => {
                        state.confirmed_at = state.confirmed_at.max(sent);
                        state.needs_sync = true
                    }
                    ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::ILLEGAL_GENERATION => state.needs_rejoin = true,
                    code => state.fatal = Some(ClientError::broker(code, Some(format!("group '{}'", config.group_id)))),
                }
            }
            Err(error) => {
                tracing::warn!(group = %config.group_id, %error, "heartbeat failed");
                if let Ok(found) = find_coordinator(&cluster, &config.group_id).await {
                    coordinator = found;
                }
            }
        }
    }
}
