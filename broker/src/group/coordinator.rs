//! The group coordinator actor: serves the groups whose `__consumer_offsets` partition this broker leads.
//! Each group's membership is a `GroupState` (the state machine in `state.rs`); the actor validates requests,
//! passes the time in, stores committed offsets through the offsets partition and answers.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use oxbow::protocol::{CodedError, ErrorCode};
use tokio::sync::oneshot;

use super::assignor::{Strategy, TopicPartition};
use super::offsets::{self, Committed, OffsetCache};
use super::state::{CommitSplit, GroupPhase, GroupState, JoinRequest};
use crate::partition::{Append, ClusterLink, PartitionActor};
use crate::topic::Registry;

const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How long a group change or commit may wait for the offsets partition's in-sync replicas.
const STORE_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Mailbox size: every group request of the broker's connections queues here.
pub const MAILBOX_CAPACITY: usize = 1024;

pub struct GroupCoordinator {
    groups: HashMap<String, GroupState>,
    offsets: OffsetCache,
    registry: Arc<Registry>,
    /// Partitions of `__consumer_offsets` in the cluster (0 until the topic exists).
    n_offsets_partitions: u32,
    /// The offsets partitions this broker leads: their groups are coordinated here.
    owned: HashMap<u32, OwnedPartition>,
    session_timeout_range_ms: (u32, u32),
    next_member_idx: u64,
}

struct OwnedPartition {
    leader_epoch: i32,
    addr: Addr<PartitionActor>,
    /// Committed offsets read back from the partition; until then its groups wait.
    loaded: bool,
}

/// The offsets partitions this broker leads now, with their leader epochs (sent after metadata changes).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct OffsetsLeadership {
    pub n_partitions: u32,
    pub led: Vec<(u32, i32, Addr<PartitionActor>)>,
}

impl GroupCoordinator {
    pub fn new(registry: Arc<Registry>, session_timeout_range_ms: (u32, u32)) -> GroupCoordinator {
        GroupCoordinator {
            groups: HashMap::new(),
            offsets: OffsetCache::new(),
            registry,
            n_offsets_partitions: 0,
            owned: HashMap::new(),
            session_timeout_range_ms,
            next_member_idx: 0,
        }
    }

    fn offsets_partition(&self, group_id: &str) -> u32 {
        offsets::partition_for(group_id, self.n_offsets_partitions.max(1))
    }

    /// Groups are served by the leader of their offsets partition, once it loaded the partition, and only
    /// while its lease holds (a restarted broker's metadata may still name it leader until it registers).
    fn check_owner(&self, group_id: &str) -> Result<&Addr<PartitionActor>, CodedError> {
        if !self.registry.cluster().lease_valid() {
            return Err(CodedError::new(
                ErrorCode::COORDINATOR_NOT_AVAILABLE,
                "this broker is not registered with the controller yet",
            ));
        }
        match self.owned.get(&self.offsets_partition(group_id)) {
            Some(owned) if owned.loaded => Ok(&owned.addr),
            Some(_) => {
                Err(CodedError::new(ErrorCode::COORDINATOR_NOT_AVAILABLE, "loading the group's committed offsets"))
            }
            None => {
                // The metadata may already say this broker leads it while the partition is still starting.
                let cluster = self.registry.cluster();
                let state = cluster.state();
                let leads = state.topics.get(offsets::OFFSETS_TOPIC).is_some_and(|topic| {
                    let partition = offsets::partition_for(group_id, topic.partitions.len() as u32);
                    topic.partitions[partition as usize].leader == cluster.node_id
                });
                if leads {
                    Err(CodedError::new(
                        ErrorCode::COORDINATOR_NOT_AVAILABLE,
                        "the group's offsets partition is starting",
                    ))
                } else {
                    Err(CodedError::new(
                        ErrorCode::NOT_COORDINATOR,
                        format!("this broker does not coordinate group '{group_id}'"),
                    ))
                }
            }
        }
    }

    /// Counts a topic's partitions (for the assignors).
    fn partition_counter(registry: &Registry) -> impl Fn(&str) -> Option<u32> + '_ {
        move |topic: &str| registry.topic(topic).map(|t| t.n_partitions())
    }

    fn group_mut(&mut self, group_id: &str) -> Result<&mut GroupState, CodedError> {
        self.groups
            .get_mut(group_id)
            .ok_or_else(|| CodedError::new(ErrorCode::UNKNOWN_MEMBER_ID, format!("group '{group_id}' has no members")))
    }

    fn expire_sessions(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let partitions = Self::partition_counter(&self.registry);
        let mut changed = Vec::new();
        for (group_id, group) in self.groups.iter_mut() {
            for member in group.expire(now, &partitions) {
                tracing::info!(group = %group_id, %member, generation = group.generation(), "member removed: session timed out");
                changed.push(group_id.clone());
            }
        }
        changed.dedup();
        for group_id in changed {
            // Stored before the coordinator serves anything else, so snapshots land in order.
            if let Ok(store) = self.store_group(&group_id) {
                ctx.wait(store.into_actor(self).map(move |stored, _, _| {
                    if let Err(error) = stored {
                        tracing::warn!(group = %group_id, %error, "storing the group after an expiry failed");
                    }
                }));
            }
        }
    }

    /// Stores a group's membership in its offsets partition (acks=all). Every change is stored before the
    /// request that made it is answered, so the next coordinator continues from what members were told.
    fn store_group(
        &self,
        group_id: &str,
    ) -> Result<impl std::future::Future<Output = Result<(), CodedError>> + 'static, CodedError> {
        let target = self.check_owner(group_id)?.clone();
        let snapshot =
            self.groups.get(group_id).map(GroupState::snapshot).unwrap_or_else(|| GroupState::default().snapshot());
        let batch = offsets::encode_group(group_id, &snapshot, crate::now_ms());
        Ok(async move {
            // Bounded: the coordinator serves nothing else meanwhile (an in-sync replica that died holds the
            // write until it is fenced); the member retries, and the change counts as made in any case.
            match tokio::time::timeout(STORE_TIMEOUT, append_all(target, batch)).await {
                Ok(stored) => stored.map_err(|message| CodedError::new(ErrorCode::COORDINATOR_NOT_AVAILABLE, message)),
                Err(_) => Err(CodedError::new(
                    ErrorCode::COORDINATOR_NOT_AVAILABLE,
                    format!("storing the group took over {STORE_TIMEOUT:?}"),
                )),
            }
        })
    }

    /// Answers with `result` once the group is stored (or with why it could not be).
    fn answer_after_storing<T: 'static>(
        &mut self,
        group_id: &str,
        result: Result<T, CodedError>,
    ) -> AtomicResponse<Self, Result<T, CodedError>> {
        let value = match result {
            Ok(value) => value,
            Err(error) => return AtomicResponse::new(Box::pin(fut::ready(Err(error)))),
        };
        let store = match self.store_group(group_id) {
            Ok(store) => store,
            Err(error) => return AtomicResponse::new(Box::pin(fut::ready(Err(error)))),
        };
        AtomicResponse::new(Box::pin(store.into_actor(self).map(move |stored, _, _| stored.map(|()| value))))
    }
}

/// Appends one batch to an offsets partition with acks=all.
async fn append_all(
    target: Addr<PartitionActor>,
    batch: (oxbow::protocol::batch::BatchHeader, bytes::Bytes),
) -> Result<(), String> {
    let (reply, written) = oneshot::channel();
    target
        .send(Append { batches: vec![batch], acks_all: true, reply })
        .await
        .map_err(|_| "the offsets partition stopped".to_string())?;
    match written.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the offsets partition stopped".to_string()),
    }
}

impl Actor for GroupCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(EXPIRY_CHECK_INTERVAL, |coordinator, ctx| coordinator.expire_sessions(ctx));
    }
}

#[derive(Message)]
#[rtype(result = "Result<JoinOutcome, CodedError>")]
pub struct Join {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: Vec<String>,
    pub strategy: Strategy,
    pub session_timeout_ms: u32,
}

#[derive(Debug)]
pub struct JoinOutcome {
    pub member_id: String,
    pub generation: i32,
    pub heartbeat_interval_ms: u32,
}

impl Handler<Join> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<JoinOutcome, CodedError>>;

    fn handle(&mut self, join: Join, _ctx: &mut Self::Context) -> Self::Result {
        let group_id = join.group_id.clone();
        let joined = self.join(join);
        self.answer_after_storing(&group_id, joined)
    }
}

impl GroupCoordinator {
    fn join(&mut self, join: Join) -> Result<JoinOutcome, CodedError> {
        validate_group_id(&join.group_id)?;
        self.check_owner(&join.group_id)?;
        let (min, max) = self.session_timeout_range_ms;
        if !(min..=max).contains(&join.session_timeout_ms) {
            return Err(CodedError::new(
                ErrorCode::INVALID_SESSION_TIMEOUT,
                format!("session timeout {} ms is outside {min}..={max}", join.session_timeout_ms),
            ));
        }
        let request = JoinRequest {
            member_id: join.member_id,
            instance_id: join.instance_id,
            client_id: join.client_id.clone(),
            topics: join.topics.into_iter().collect(),
            strategy: join.strategy,
            session_timeout: Duration::from_millis(u64::from(join.session_timeout_ms)),
        };
        let next_member_idx = &mut self.next_member_idx;
        let new_member_id = || {
            *next_member_idx += 1;
            format!("{}-{}-{:x}", join.client_id, next_member_idx, crate::now_ms())
        };
        let partitions = Self::partition_counter(&self.registry);
        let group = self.groups.entry(join.group_id.clone()).or_default();
        let generation = group.generation();
        let joined = group.join(request, Instant::now(), new_member_id, &partitions)?;
        if joined.generation != generation {
            tracing::info!(group = %join.group_id, member = %joined.member_id, generation = joined.generation, members = group.members().len(), "rebalanced");
        }
        Ok(JoinOutcome {
            member_id: joined.member_id,
            generation: joined.generation,
            heartbeat_interval_ms: (join.session_timeout_ms / 3).max(1),
        })
    }
}

#[derive(Message)]
#[rtype(result = "Result<SyncOutcome, CodedError>")]
pub struct Sync {
    pub group_id: String,
    pub member_id: String,
    pub owned: Vec<TopicPartition>,
}

#[derive(Debug)]
pub struct SyncOutcome {
    pub generation: i32,
    pub assignment: Vec<TopicPartition>,
}

impl Handler<Sync> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<SyncOutcome, CodedError>>;

    fn handle(&mut self, sync: Sync, _ctx: &mut Self::Context) -> Self::Result {
        let synced = self.check_owner(&sync.group_id).map(|_| ()).and_then(|()| {
            let group = self.group_mut(&sync.group_id)?;
            let synced = group.sync(&sync.member_id, sync.owned, Instant::now())?;
            Ok(SyncOutcome { generation: synced.generation, assignment: synced.assignment })
        });
        // Stored before the member learns its partitions: the next coordinator knows who holds what.
        self.answer_after_storing(&sync.group_id, synced)
    }
}

/// `Ok(true)`: the member should sync (its assignment can change).
#[derive(Message)]
#[rtype(result = "Result<bool, CodedError>")]
pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
}

impl Handler<Heartbeat> for GroupCoordinator {
    type Result = Result<bool, CodedError>;

    fn handle(&mut self, heartbeat: Heartbeat, _ctx: &mut Self::Context) -> Self::Result {
        self.check_owner(&heartbeat.group_id)?;
        self.group_mut(&heartbeat.group_id)?.heartbeat(&heartbeat.member_id, Instant::now())
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), CodedError>")]
pub struct Leave {
    pub group_id: String,
    pub member_id: String,
}

impl Handler<Leave> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<(), CodedError>>;

    fn handle(&mut self, leave: Leave, _ctx: &mut Self::Context) -> Self::Result {
        let left = self.check_owner(&leave.group_id).map(|_| ()).and_then(|()| {
            let partitions = Self::partition_counter(&self.registry);
            let group = self.groups.get_mut(&leave.group_id).ok_or_else(|| {
                CodedError::new(ErrorCode::UNKNOWN_MEMBER_ID, format!("group '{}' has no members", leave.group_id))
            })?;
            group.leave(&leave.member_id, &partitions)?;
            tracing::info!(group = %leave.group_id, member = %leave.member_id, generation = group.generation(), "member left");
            Ok(())
        });
        self.answer_after_storing(&leave.group_id, left)
    }
}

/// Commits offsets. Members may commit only partitions they hold, in their current generation; an admin
/// (empty member id, generation -1) only while the group has no members.
#[derive(Message)]
#[rtype(result = "Result<Vec<(TopicPartition, ErrorCode)>, CodedError>")]
pub struct Commit {
    pub group_id: String,
    pub member_id: String,
    pub generation: i32,
    pub offsets: Vec<(TopicPartition, Committed)>,
}

impl Handler<Commit> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<Vec<(TopicPartition, ErrorCode)>, CodedError>>;

    fn handle(&mut self, commit: Commit, _ctx: &mut Self::Context) -> Self::Result {
        let checked = self.check_commit(&commit);
        let (accepted, mut results) = match checked {
            Ok(split) => split,
            Err(error) => return AtomicResponse::new(Box::pin(fut::ready(Err(error)))),
        };
        if accepted.is_empty() {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(results))));
        }
        let target = match self.check_owner(&commit.group_id) {
            Ok(addr) => addr.clone(),
            Err(error) => return AtomicResponse::new(Box::pin(fut::ready(Err(error)))),
        };
        let records: Vec<_> = accepted.iter().map(|(tp, c)| (tp.clone(), Some(c.clone()))).collect();
        let batch = offsets::encode_commits(&commit.group_id, &records, crate::now_ms());
        let group_id = commit.group_id;
        let write = async move {
            match tokio::time::timeout(STORE_TIMEOUT, append_all(target, batch)).await {
                Ok(written) => written,
                Err(_) => Err(format!("storing the commit took over {STORE_TIMEOUT:?}")),
            }
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(move |written, coordinator, _| {
            match written {
                Ok(()) => {
                    let cache = coordinator.offsets.entry(group_id).or_default();
                    for (tp, committed) in accepted {
                        cache.insert(tp.clone(), committed);
                        results.push((tp, ErrorCode::NONE));
                    }
                }
                Err(message) => {
                    tracing::warn!(%message, "storing committed offsets failed");
                    for (tp, _) in accepted {
                        results.push((tp, ErrorCode::COORDINATOR_NOT_AVAILABLE));
                    }
                }
            }
            Ok(results)
        })))
    }
}

impl GroupCoordinator {
    /// Splits a commit into the partitions it may commit and the refused ones with their errors.
    fn check_commit(&mut self, commit: &Commit) -> Result<CommitSplit, CodedError> {
        validate_group_id(&commit.group_id)?;
        if commit.member_id.is_empty() && commit.generation < 0 {
            let active = self.groups.get(&commit.group_id).is_some_and(|g| !g.members().is_empty());
            if active {
                return Err(CodedError::new(
                    ErrorCode::GROUP_NOT_EMPTY,
                    format!("group '{}' has active members", commit.group_id),
                ));
            }
            return Ok((commit.offsets.clone(), Vec::new()));
        }
        self.group_mut(&commit.group_id)?.check_commit(&commit.member_id, commit.generation, &commit.offsets)
    }
}

#[derive(Message)]
#[rtype(result = "Result<Vec<(TopicPartition, Option<Committed>)>, CodedError>")]
pub struct FetchOffsets {
    pub group_id: String,
    /// `None`: every committed partition.
    pub partitions: Option<Vec<TopicPartition>>,
}

impl Handler<FetchOffsets> for GroupCoordinator {
    type Result = Result<Vec<(TopicPartition, Option<Committed>)>, CodedError>;

    fn handle(&mut self, fetch: FetchOffsets, _ctx: &mut Self::Context) -> Self::Result {
        self.check_owner(&fetch.group_id)?;
        let cache = self.offsets.get(&fetch.group_id);
        let result = match fetch.partitions {
            Some(partitions) => partitions
                .into_iter()
                .map(|tp| {
                    let committed = cache.and_then(|c| c.get(&tp).cloned());
                    (tp, committed)
                })
                .collect(),
            None => {
                let mut all: Vec<_> =
                    cache.into_iter().flatten().map(|(tp, c)| (tp.clone(), Some(c.clone()))).collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            }
        };
        Ok(result)
    }
}

impl Handler<OffsetsLeadership> for GroupCoordinator {
    type Result = ();

    fn handle(&mut self, message: OffsetsLeadership, ctx: &mut Self::Context) {
        self.n_offsets_partitions = message.n_partitions;
        let led: HashMap<u32, (i32, Addr<PartitionActor>)> =
            message.led.into_iter().map(|(partition, epoch, addr)| (partition, (epoch, addr))).collect();
        let lost: Vec<u32> = self
            .owned
            .iter()
            .filter(|(partition, owned)| led.get(partition).is_none_or(|(epoch, _)| *epoch != owned.leader_epoch))
            .map(|(partition, _)| *partition)
            .collect();
        for partition in lost {
            self.owned.remove(&partition);
            let n = self.n_offsets_partitions.max(1);
            self.groups.retain(|group_id, _| offsets::partition_for(group_id, n) != partition);
            self.offsets.retain(|group_id, _| offsets::partition_for(group_id, n) != partition);
            tracing::info!(partition, "no longer coordinating the groups of this offsets partition");
        }
        for (partition, (epoch, addr)) in led {
            if self.owned.contains_key(&partition) {
                continue;
            }
            self.owned.insert(partition, OwnedPartition { leader_epoch: epoch, addr: addr.clone(), loaded: false });
            let load = async move { super::load_offsets(&addr).await };
            ctx.spawn(load.into_actor(self).map(move |loaded, coordinator, _| {
                let Some(owned) = coordinator.owned.get_mut(&partition) else { return };
                if owned.leader_epoch != epoch {
                    return;
                }
                match loaded {
                    Ok(loaded) => {
                        let n_groups = loaded.offsets.len().max(loaded.groups.len());
                        coordinator.offsets.extend(loaded.offsets);
                        let now = Instant::now();
                        for (group_id, snapshot) in loaded.groups {
                            coordinator.groups.insert(group_id, GroupState::restore(snapshot, now));
                        }
                        owned.loaded = true;
                        tracing::info!(partition, groups = n_groups, "coordinating the groups of this offsets partition");
                    }
                    Err(error) => {
                        tracing::warn!(partition, %error, "loading committed offsets failed; will retry on the next metadata change");
                        coordinator.owned.remove(&partition);
                    }
                }
            }));
        }
    }
}

#[derive(Message)]
#[rtype(result = "Vec<(String, &'static str, u32)>")]
pub struct ListGroups;

impl Handler<ListGroups> for GroupCoordinator {
    type Result = MessageResult<ListGroups>;

    fn handle(&mut self, _message: ListGroups, _ctx: &mut Self::Context) -> Self::Result {
        let mut ids: BTreeSet<&String> = self.groups.keys().collect();
        ids.extend(self.offsets.iter().filter(|(_, c)| !c.is_empty()).map(|(id, _)| id));
        let listed = ids
            .into_iter()
            .map(|id| match self.groups.get(id) {
                Some(group) => (id.clone(), group.phase().name(), group.members().len() as u32),
                None => (id.clone(), "Empty", 0),
            })
            .collect();
        MessageResult(listed)
    }
}

#[derive(Debug)]
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub owned: Vec<TopicPartition>,
}

#[derive(Debug)]
pub struct GroupInfo {
    pub state: GroupPhase,
    pub strategy: String,
    pub generation: i32,
    pub members: Vec<MemberInfo>,
    pub committed: Vec<(TopicPartition, Committed)>,
}

/// `None` for a group with neither members nor committed offsets. Answered only by the group's coordinator
/// (as OffsetFetch): a broker that does not own the group's offsets partition, has not loaded it, or whose
/// lease lapsed (a restarted broker whose metadata still names it leader) may hold a stale view.
#[derive(Message)]
#[rtype(result = "Result<Option<GroupInfo>, CodedError>")]
pub struct DescribeGroup {
    pub group_id: String,
}

impl Handler<DescribeGroup> for GroupCoordinator {
    type Result = Result<Option<GroupInfo>, CodedError>;

    fn handle(&mut self, describe: DescribeGroup, _ctx: &mut Self::Context) -> Self::Result {
        self.check_owner(&describe.group_id)?;
        let group = self.groups.get(&describe.group_id);
        let mut committed: Vec<_> =
            self.offsets.get(&describe.group_id).into_iter().flatten().map(|(tp, c)| (tp.clone(), c.clone())).collect();
        committed.sort_by(|a, b| a.0.cmp(&b.0));
        if group.is_none_or(|g| g.members().is_empty()) && committed.is_empty() {
            return Ok(None);
        }
        let info = GroupInfo {
            state: group.map_or(GroupPhase::Empty, GroupState::phase),
            strategy: group.and_then(GroupState::strategy).map_or(String::new(), |s| s.name().to_string()),
            generation: group.map_or(0, GroupState::generation),
            members: group
                .into_iter()
                .flat_map(|g| g.members().iter())
                .map(|(id, m)| MemberInfo {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    owned: m.owned.iter().cloned().collect(),
                })
                .collect(),
            committed,
        };
        Ok(Some(info))
    }
}

fn validate_group_id(group_id: &str) -> Result<(), CodedError> {
    let valid = !group_id.is_empty()
        && group_id.len() <= 249
        && group_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(CodedError::new(ErrorCode::INVALID_GROUP_ID, format!("invalid group id '{}'", group_id.escape_debug())))
    }
}
