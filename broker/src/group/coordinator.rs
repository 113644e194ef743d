//! The group coordinator actor: membership (join, sync, heartbeat, leave, session expiry), target
//! assignments, and committed offsets.
//!
//! Partitions move incrementally: a member's sync returns the partitions it may hold now, which never
//! include one another member still holds. A member told to give a partition up commits it and syncs again;
//! only then does the partition's new owner receive it. So no partition ever has two owners, and members
//! that keep their partitions are never interrupted.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use oxbow::protocol::ErrorCode;
use tokio::sync::oneshot;

use super::assignor::{self, MemberSpec, Strategy, TopicPartition};
use super::offsets::{self, Committed, OffsetCache};
use crate::partition::{Append, PartitionActor};
use crate::topic::Registry;

const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Old member ids of replaced static members remembered per group, to answer them FENCED_INSTANCE_ID.
const FENCED_IDS_MAX: usize = 256;

#[derive(Debug, Clone)]
pub struct GroupError {
    pub code: ErrorCode,
    pub message: String,
}

impl GroupError {
    fn new(code: ErrorCode, message: impl Into<String>) -> GroupError {
        GroupError { code, message: message.into() }
    }
}

pub struct GroupCoordinator {
    groups: HashMap<String, Group>,
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
#[derive(Message)]
#[rtype(result = "()")]
pub struct OffsetsLeadership {
    pub n_partitions: u32,
    pub led: Vec<(u32, i32, Addr<PartitionActor>)>,
}

struct Group {
    strategy: Option<Strategy>,
    generation: i32,
    members: BTreeMap<String, Member>,
    fenced_ids: VecDeque<String>,
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    topics: BTreeSet<String>,
    session_timeout: Duration,
    deadline: Instant,
    /// What the coordinator counts as held by this member (including partitions it was told to release).
    owned: BTreeSet<TopicPartition>,
    target: BTreeSet<TopicPartition>,
    /// The group generation of the member's last sync.
    generation: i32,
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

    /// Groups are served by the leader of their offsets partition, once it loaded the partition.
    fn check_owner(&self, group_id: &str) -> Result<&Addr<PartitionActor>, GroupError> {
        match self.owned.get(&self.offsets_partition(group_id)) {
            Some(owned) if owned.loaded => Ok(&owned.addr),
            Some(_) => {
                Err(GroupError::new(ErrorCode::COORDINATOR_NOT_AVAILABLE, "loading the group's committed offsets"))
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
                    Err(GroupError::new(
                        ErrorCode::COORDINATOR_NOT_AVAILABLE,
                        "the group's offsets partition is starting",
                    ))
                } else {
                    Err(GroupError::new(
                        ErrorCode::NOT_COORDINATOR,
                        format!("this broker does not coordinate group '{group_id}'"),
                    ))
                }
            }
        }
    }

    fn member_mut(&mut self, group_id: &str, member_id: &str) -> Result<(&mut Group, Instant), GroupError> {
        let group = self.groups.get_mut(group_id).ok_or_else(|| {
            GroupError::new(ErrorCode::UNKNOWN_MEMBER_ID, format!("group '{group_id}' has no members"))
        })?;
        if group.fenced_ids.iter().any(|id| id == member_id) {
            return Err(GroupError::new(
                ErrorCode::FENCED_INSTANCE_ID,
                format!("member '{member_id}' was replaced by a newer instance"),
            ));
        }
        if !group.members.contains_key(member_id) {
            return Err(GroupError::new(
                ErrorCode::UNKNOWN_MEMBER_ID,
                format!("member '{member_id}' is not in group '{group_id}'"),
            ));
        }
        Ok((group, Instant::now()))
    }

    /// Recomputes every member's target and starts a new generation.
    fn rebalance(&mut self, group_id: &str) {
        let Some(group) = self.groups.get_mut(group_id) else { return };
        group.generation += 1;
        let Some(strategy) = group.strategy else { return };
        let topics: BTreeSet<&String> = group.members.values().flat_map(|m| m.topics.iter()).collect();
        let counts: BTreeMap<String, u32> = topics
            .into_iter()
            .filter_map(|topic| self.registry.topic(topic).map(|t| (topic.clone(), t.n_partitions())))
            .collect();
        let specs: Vec<MemberSpec<'_>> =
            group.members.iter().map(|(id, m)| MemberSpec { id, topics: &m.topics, owned: &m.owned }).collect();
        let mut targets = assignor::assign(strategy, &specs, &counts);
        for (id, member) in group.members.iter_mut() {
            member.target = targets.remove(id).unwrap_or_default();
        }
        tracing::info!(group = group_id, generation = group.generation, members = group.members.len(), "rebalanced");
    }

    fn remove_member(&mut self, group_id: &str, member_id: &str, reason: &str) {
        let Some(group) = self.groups.get_mut(group_id) else { return };
        if group.members.remove(member_id).is_some() {
            tracing::info!(group = group_id, member = member_id, reason, "member removed");
            if group.members.is_empty() {
                group.strategy = None;
                group.generation += 1;
            } else {
                self.rebalance(group_id);
            }
        }
    }

    fn expire_sessions(&mut self) {
        let now = Instant::now();
        let expired: Vec<(String, String)> = self
            .groups
            .iter()
            .flat_map(|(group_id, group)| {
                group
                    .members
                    .iter()
                    .filter(|(_, m)| m.deadline <= now)
                    .map(move |(id, _)| (group_id.clone(), id.clone()))
            })
            .collect();
        for (group_id, member_id) in expired {
            self.remove_member(&group_id, &member_id, "session timed out");
        }
    }

    fn state(group: &Group) -> &'static str {
        if group.members.is_empty() {
            "Empty"
        } else if group.members.values().any(|m| m.owned != m.target) {
            "Reconciling"
        } else {
            "Stable"
        }
    }
}

impl Actor for GroupCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(EXPIRY_CHECK_INTERVAL, |coordinator, _| coordinator.expire_sessions());
    }
}

#[derive(Message)]
#[rtype(result = "Result<JoinOutcome, GroupError>")]
pub struct Join {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: Vec<String>,
    pub strategy: String,
    pub session_timeout_ms: u32,
}

#[derive(Debug)]
pub struct JoinOutcome {
    pub member_id: String,
    pub generation: i32,
    pub heartbeat_interval_ms: u32,
}

impl Handler<Join> for GroupCoordinator {
    type Result = Result<JoinOutcome, GroupError>;

    fn handle(&mut self, join: Join, _ctx: &mut Self::Context) -> Self::Result {
        validate_group_id(&join.group_id)?;
        self.check_owner(&join.group_id)?;
        let (min, max) = self.session_timeout_range_ms;
        if !(min..=max).contains(&join.session_timeout_ms) {
            return Err(GroupError::new(
                ErrorCode::INVALID_SESSION_TIMEOUT,
                format!("session timeout {} ms is outside {min}..={max}", join.session_timeout_ms),
            ));
        }
        let strategy = Strategy::parse(&join.strategy).ok_or_else(|| {
            GroupError::new(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, format!("unknown strategy '{}'", join.strategy))
        })?;
        let session_timeout = Duration::from_millis(u64::from(join.session_timeout_ms));
        let topics: BTreeSet<String> = join.topics.iter().cloned().collect();
        let group = self.groups.entry(join.group_id.clone()).or_insert_with(|| Group {
            strategy: None,
            generation: 0,
            members: BTreeMap::new(),
            fenced_ids: VecDeque::new(),
        });
        if let Some(existing) = group.strategy {
            if existing != strategy && !group.members.is_empty() {
                return Err(GroupError::new(
                    ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                    format!("group '{}' uses '{}', not '{}'", join.group_id, existing.name(), strategy.name()),
                ));
            }
        }
        group.strategy = Some(strategy);
        let heartbeat_interval_ms = (join.session_timeout_ms / 3).max(1);
        let deadline = Instant::now() + session_timeout;

        // A known member re-joining (for example with new topics).
        if !join.member_id.is_empty() {
            if group.fenced_ids.contains(&join.member_id) {
                return Err(GroupError::new(
                    ErrorCode::FENCED_INSTANCE_ID,
                    "this member was replaced by a newer instance",
                ));
            }
            let Some(member) = group.members.get_mut(&join.member_id) else {
                return Err(GroupError::new(
                    ErrorCode::UNKNOWN_MEMBER_ID,
                    format!("member '{}' is not in the group", join.member_id),
                ));
            };
            member.deadline = deadline;
            member.session_timeout = session_timeout;
            let changed = member.topics != topics;
            member.topics = topics;
            let generation = group.generation;
            if changed {
                self.rebalance(&join.group_id);
            }
            let generation = self.groups.get(&join.group_id).map_or(generation, |g| g.generation);
            return Ok(JoinOutcome { member_id: join.member_id, generation, heartbeat_interval_ms });
        }

        self.next_member_idx += 1;
        let member_id = format!("{}-{}-{:x}", join.client_id, self.next_member_idx, crate::now_ms());
        // A static member coming back takes over its predecessor's partitions without a rebalance.
        let replaced = join.instance_id.as_ref().and_then(|instance| {
            group.members.iter().find(|(_, m)| m.instance_id.as_ref() == Some(instance)).map(|(id, _)| id.clone())
        });
        if let Some(old_id) = replaced {
            let old = group.members.remove(&old_id).expect("found above");
            group.fenced_ids.push_back(old_id.clone());
            if group.fenced_ids.len() > FENCED_IDS_MAX {
                group.fenced_ids.pop_front();
            }
            let changed = old.topics != topics;
            group.members.insert(
                member_id.clone(),
                Member {
                    client_id: join.client_id,
                    topics,
                    session_timeout,
                    deadline,
                    generation: group.generation,
                    ..old
                },
            );
            tracing::info!(group = %join.group_id, old = %old_id, new = %member_id, "static member rejoined");
            if changed {
                self.rebalance(&join.group_id);
            }
        } else {
            group.members.insert(
                member_id.clone(),
                Member {
                    instance_id: join.instance_id,
                    client_id: join.client_id,
                    topics,
                    session_timeout,
                    deadline,
                    owned: BTreeSet::new(),
                    target: BTreeSet::new(),
                    generation: group.generation,
                },
            );
            tracing::info!(group = %join.group_id, member = %member_id, "member joined");
            self.rebalance(&join.group_id);
        }
        let generation = self.groups[&join.group_id].generation;
        Ok(JoinOutcome { member_id, generation, heartbeat_interval_ms })
    }
}

#[derive(Message)]
#[rtype(result = "Result<SyncOutcome, GroupError>")]
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
    type Result = Result<SyncOutcome, GroupError>;

    fn handle(&mut self, sync: Sync, _ctx: &mut Self::Context) -> Self::Result {
        self.check_owner(&sync.group_id)?;
        let (group, now) = self.member_mut(&sync.group_id, &sync.member_id)?;
        let held_by_others: BTreeSet<TopicPartition> = group
            .members
            .iter()
            .filter(|(id, _)| **id != sync.member_id)
            .flat_map(|(_, m)| m.owned.iter().cloned())
            .collect();
        let generation = group.generation;
        let member = group.members.get_mut(&sync.member_id).expect("checked");
        member.deadline = now + member.session_timeout;
        // What the member no longer reports, it has released.
        let reported: BTreeSet<TopicPartition> = sync.owned.into_iter().collect();
        member.owned = member.owned.intersection(&reported).cloned().collect();
        let free: BTreeSet<TopicPartition> = member.target.difference(&held_by_others).cloned().collect();
        let assignment: Vec<TopicPartition> = member
            .owned
            .intersection(&member.target)
            .chain(free.iter())
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Until the member syncs again without them, partitions it must give up still count as its own.
        member.owned.extend(free);
        member.generation = generation;
        Ok(SyncOutcome { generation, assignment })
    }
}

/// `Ok(true)`: the member should sync (its assignment can change).
#[derive(Message)]
#[rtype(result = "Result<bool, GroupError>")]
pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
}

impl Handler<Heartbeat> for GroupCoordinator {
    type Result = Result<bool, GroupError>;

    fn handle(&mut self, heartbeat: Heartbeat, _ctx: &mut Self::Context) -> Self::Result {
        self.check_owner(&heartbeat.group_id)?;
        let (group, now) = self.member_mut(&heartbeat.group_id, &heartbeat.member_id)?;
        let held_by_others: BTreeSet<&TopicPartition> = group
            .members
            .iter()
            .filter(|(id, _)| **id != heartbeat.member_id)
            .flat_map(|(_, m)| m.owned.iter())
            .collect();
        let member = &group.members[&heartbeat.member_id];
        let must_release = member.owned.iter().any(|tp| !member.target.contains(tp));
        let may_gain = member.target.iter().any(|tp| !member.owned.contains(tp) && !held_by_others.contains(tp));
        let needs_sync = must_release || may_gain;
        let member = group.members.get_mut(&heartbeat.member_id).expect("checked");
        member.deadline = now + member.session_timeout;
        Ok(needs_sync)
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), GroupError>")]
pub struct Leave {
    pub group_id: String,
    pub member_id: String,
}

impl Handler<Leave> for GroupCoordinator {
    type Result = Result<(), GroupError>;

    fn handle(&mut self, leave: Leave, _ctx: &mut Self::Context) -> Self::Result {
        self.check_owner(&leave.group_id)?;
        self.member_mut(&leave.group_id, &leave.member_id)?;
        self.remove_member(&leave.group_id, &leave.member_id, "left");
        Ok(())
    }
}

/// Commits offsets. Members may commit only partitions they hold, in their current generation; an admin
/// (empty member id, generation -1) only while the group has no members.
#[derive(Message)]
#[rtype(result = "Result<Vec<(TopicPartition, ErrorCode)>, GroupError>")]
pub struct Commit {
    pub group_id: String,
    pub member_id: String,
    pub generation: i32,
    pub offsets: Vec<(TopicPartition, Committed)>,
}

impl Handler<Commit> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<Vec<(TopicPartition, ErrorCode)>, GroupError>>;

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

type CommitSplit = (Vec<(TopicPartition, Committed)>, Vec<(TopicPartition, ErrorCode)>);

impl GroupCoordinator {
    /// Splits a commit into the partitions it may commit and the refused ones with their errors.
    fn check_commit(&mut self, commit: &Commit) -> Result<CommitSplit, GroupError> {
        validate_group_id(&commit.group_id)?;
        if commit.member_id.is_empty() && commit.generation < 0 {
            let active = self.groups.get(&commit.group_id).is_some_and(|g| !g.members.is_empty());
            if active {
                return Err(GroupError::new(
                    ErrorCode::GROUP_NOT_EMPTY,
                    format!("group '{}' has active members", commit.group_id),
                ));
            }
            return Ok((commit.offsets.clone(), Vec::new()));
        }
        // A commit does not extend the session: only heartbeats, joins and syncs do.
        let (group, _) = self.member_mut(&commit.group_id, &commit.member_id)?;
        let member = group.members.get_mut(&commit.member_id).expect("checked");
        if commit.generation != member.generation {
            return Err(GroupError::new(
                ErrorCode::ILLEGAL_GENERATION,
                format!("generation {} is stale; the member is at generation {}", commit.generation, member.generation),
            ));
        }
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for (tp, committed) in &commit.offsets {
            if member.owned.contains(tp) {
                accepted.push((tp.clone(), committed.clone()));
            } else {
                refused.push((tp.clone(), ErrorCode::ILLEGAL_GENERATION));
            }
        }
        Ok((accepted, refused))
    }
}

#[derive(Message)]
#[rtype(result = "Result<Vec<(TopicPartition, Option<Committed>)>, GroupError>")]
pub struct FetchOffsets {
    pub group_id: String,
    /// `None`: every committed partition.
    pub partitions: Option<Vec<TopicPartition>>,
}

impl Handler<FetchOffsets> for GroupCoordinator {
    type Result = Result<Vec<(TopicPartition, Option<Committed>)>, GroupError>;

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
                    Ok(cache) => {
                        let n_groups = cache.len();
                        coordinator.offsets.extend(cache);
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
                Some(group) => (id.clone(), Self::state(group), group.members.len() as u32),
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
    pub state: &'static str,
    pub strategy: String,
    pub generation: i32,
    pub members: Vec<MemberInfo>,
    pub committed: Vec<(TopicPartition, Committed)>,
}

/// `None` for a group with neither members nor committed offsets.
#[derive(Message)]
#[rtype(result = "Option<GroupInfo>")]
pub struct DescribeGroup {
    pub group_id: String,
}

impl Handler<DescribeGroup> for GroupCoordinator {
    type Result = MessageResult<DescribeGroup>;

    fn handle(&mut self, describe: DescribeGroup, _ctx: &mut Self::Context) -> Self::Result {
        let group = self.groups.get(&describe.group_id);
        let mut committed: Vec<_> =
            self.offsets.get(&describe.group_id).into_iter().flatten().map(|(tp, c)| (tp.clone(), c.clone())).collect();
        committed.sort_by(|a, b| a.0.cmp(&b.0));
        if group.is_none_or(|g| g.members.is_empty()) && committed.is_empty() {
            return MessageResult(None);
        }
        let info = GroupInfo {
            state: group.map_or("Empty", Self::state),
            strategy: group.and_then(|g| g.strategy).map_or(String::new(), |s| s.name().to_string()),
            generation: group.map_or(0, |g| g.generation),
            members: group
                .into_iter()
                .flat_map(|g| g.members.iter())
                .map(|(id, m)| MemberInfo {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    owned: m.owned.iter().cloned().collect(),
                })
                .collect(),
            committed,
        };
        MessageResult(Some(info))
    }
}

fn validate_group_id(group_id: &str) -> Result<(), GroupError> {
    let valid = !group_id.is_empty()
        && group_id.len() <= 249
        && group_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(GroupError::new(ErrorCode::INVALID_GROUP_ID, format!("invalid group id '{}'", group_id.escape_debug())))
    }
}
